"""The viewer's web page: HTTP for the page and lists, a WebSocket for play.

WebSocket protocol (``/ws?env=<id>&mode=watch|play&seed=<n>``): the server
sends a ``hello`` JSON message (key map, action names), then for every step a
``frame`` JSON message followed by one binary message holding the encoded
image. The client sends ``{"type": "key", "key": <KeyboardEvent.key>,
"down": true|false}``. Problems arrive as ``{"type": "error", "message": ...}``
(the socket then closes when the problem ends the session: a refused start, an
error in the game's step loop, a player idle past ``play_idle_seconds``) or
``warning`` (an unmapped key: ignored, the game goes on).

Frames are handed to the sender through a one-frame mailbox: a slow client
gets fewer frames, never a growing queue, and the game keeps its rate.

The page is a web app exposed to browsers, so every request is checked first:
its Host must be one the viewer answers to (``allowed_hosts``: no DNS
rebinding), a WebSocket's Origin must be the page's own or an allowed one (no
other site's script can play or record through a visitor's browser), and with
tokens configured (``auth.tokens_file``) the visitor presents one, as
``?token=`` once (kept in an HttpOnly, SameSite=Strict cookie), a cookie or an
``Authorization: Bearer`` header; watching needs the ``read`` scope, playing
(which records demonstrations) ``control``, as over gRPC. GIFs are rendered
one at a time on a thread of their own and kept for the policy version they
show, so many requests cost one rendering. One client (its token, or its
address without tokens) holds at most ``max_sessions_per_client`` sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

from aiohttp import WSMsgType, web

from rlrings.core.errors import InvalidArgumentError, RlringsError
from rlrings.core.video import record_episodes, write_video
from rlrings.rpc.security import Admission
from rlrings.services.viewer.viewer import Frame, Viewer

log = logging.getLogger(__name__)
_PAGE = Path(__file__).with_name("static") / "index.html"


class LatestFrame:
    """A mailbox that keeps only the newest frame."""

    def __init__(self):
        self._frame: Frame | None = None
        self._ready = asyncio.Event()

    def put(self, frame: Frame) -> None:
        self._frame = frame
        self._ready.set()

    async def get(self) -> Frame:
        await self._ready.wait()
        self._ready.clear()
        return self._frame


_COOKIE = "rlrings_token"


def build_app(viewer: Viewer, admission: Admission | None = None) -> web.Application:
    app = web.Application(middlewares=[guard])
    app["viewer"] = viewer
    app["admission"] = admission if admission is not None and admission.clients else None
    app["gif_lock"] = asyncio.Lock()
    app["gif_cache"] = {}
    app["gif_executor"] = ThreadPoolExecutor(1, thread_name_prefix="viewer-gif")
    app.router.add_get("/", page)
    app.router.add_get("/api/environments", environments)
    app.router.add_get("/api/demonstrations", demonstrations)
    app.router.add_get("/api/video.gif", video)
    app.router.add_get("/ws", play_socket)
    return app


def _host_allowed(request: web.Request, allowed: list[str]) -> bool:
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    return "*" in allowed or host.lower() in {h.lower() for h in allowed}


@web.middleware
async def guard(request: web.Request, handler):
    """Host, Origin and token checks before any handler runs (see the module docstring)."""
    viewer: Viewer = request.app["viewer"]
    config = viewer.config
    if not _host_allowed(request, config.allowed_hosts):
        raise web.HTTPMisdirectedRequest(text=f"host {request.host[:100]!r} is not served here; see allowed_hosts")
    origin = request.headers.get("Origin")
    if origin is not None and request.path == "/ws":
        own = f"{request.scheme}://{request.host}"
        if origin != own and origin not in config.allowed_origins:
            raise web.HTTPForbidden(text=f"origin {origin[:100]!r} may not open the viewer's socket")
    admission: Admission | None = request.app["admission"]
    request["client"] = request.remote or ""  # who asks, for the per-client limits: the address, or the token
    if admission is None:
        return await handler(request)
    presented = request.query.get("token") or request.cookies.get(_COOKIE)
    header = request.headers.get("Authorization") or (f"Bearer {presented}" if presented else None)
    wanted = "control" if request.path == "/ws" and request.query.get("mode") == "play" else "read"
    try:
        client = admission.identify(header, f"viewer{request.path}")
    except RlringsError as error:
        raise web.HTTPUnauthorized(text=f"{error}; open the page with ?token=<token>") from None
    if wanted not in client.token.scopes:
        raise web.HTTPForbidden(text=f"token {client.token.name!r} may not {wanted}; this needs scope {wanted!r}")
    request["client"] = client.token.name
    response = await handler(request)
    if "token" in request.query and isinstance(response, web.StreamResponse) and not response.prepared:
        response.set_cookie(_COOKIE, request.query["token"], httponly=True, samesite="Strict",
                            secure=request.scheme == "https")  # fmt: skip
    return response


async def page(request: web.Request) -> web.Response:
    return web.FileResponse(_PAGE)


async def environments(request: web.Request) -> web.Response:
    return web.json_response(request.app["viewer"].environments())


async def demonstrations(request: web.Request) -> web.Response:
    return web.json_response([asdict(d) for d in request.app["viewer"].demonstrations])


async def video(request: web.Request) -> web.Response:
    """A GIF of the current policy playing ``episodes`` episodes (at most 3)."""
    viewer: Viewer = request.app["viewer"]
    try:
        episodes = int(request.query.get("episodes", "1"))
    except ValueError:
        raise web.HTTPBadRequest(text="episodes: not an integer") from None
    if not 1 <= episodes <= 3:
        raise web.HTTPBadRequest(text=f"episodes: {episodes} is not in [1, 3]")

    def render() -> bytes:
        frames = record_episodes(viewer.policy(), viewer.spec.env_id, episodes, max_steps=500,
                                 max_width=viewer.config.max_frame_width // 2, every=2)  # fmt: skip
        return write_video(frames, None, fps=viewer.config.fps / 2, fmt="gif")

    app = request.app
    async with app["gif_lock"]:  # one rendering at a time; the others wait for it and share it
        policy = await asyncio.get_running_loop().run_in_executor(app["gif_executor"], viewer.policy)
        key = (policy.version if policy is not None else 0, episodes)
        data = app["gif_cache"].get(key)
        if data is None:
            data = await asyncio.get_running_loop().run_in_executor(app["gif_executor"], render)
            app["gif_cache"] = {key: data}  # only the newest
    return web.Response(
        body=data,
        content_type="image/gif",
        headers={"Content-Disposition": f'attachment; filename="{viewer.spec.env_id}-agent.gif"'},
    )


async def play_socket(request: web.Request) -> web.WebSocketResponse:
    viewer: Viewer = request.app["viewer"]
    ws = web.WebSocketResponse(heartbeat=20)
    await ws.prepare(request)
    loop = asyncio.get_running_loop()
    try:
        session = await loop.run_in_executor(
            None,
            viewer.open,
            request.query.get("env", viewer.spec.env_id),
            request.query.get("mode", "watch"),
            int(request.query.get("seed", "0") or 0),
            request["client"],
        )
    except (RlringsError, ValueError) as error:
        await ws.send_json({"type": "error", "message": str(error)})
        await ws.close(code=1013 if "limit" in str(error) else 1008)
        return ws
    await ws.send_json({"type": "hello", "mode": session.mode, **viewer.environments()[0]})
    mailbox = LatestFrame()
    mailbox.put(await loop.run_in_executor(None, session.first_frame))
    stop = asyncio.Event()

    async def step_loop() -> None:
        """Steps at the configured rate; a failure of the game, or a player gone idle, ends the
        session with a message to the page (not a picture that silently stops)."""
        period = 1.0 / viewer.config.fps
        try:
            while not stop.is_set():
                if session.idle:
                    await _end(ws, f"no key pressed for {viewer.config.play_idle_seconds:.0f} s; the session ended "
                                   "(the episode so far is stored as truncated)", code=1000)  # fmt: skip
                    return
                started = loop.time()
                mailbox.put(await loop.run_in_executor(None, session.tick))
                await asyncio.sleep(max(0.0, period - (loop.time() - started)))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("viewer session stopped by an error in its game loop", exc_info=error)
            await _end(ws, f"the game stopped: {type(error).__name__}: {str(error)[:200]}", code=1011)

    async def send_loop() -> None:
        while not stop.is_set():
            frame = await mailbox.get()
            meta = {k: v for k, v in asdict(frame).items() if k != "image"}
            await ws.send_json({"type": "frame", **meta})
            await ws.send_bytes(frame.image)

    tasks = [asyncio.create_task(step_loop()), asyncio.create_task(send_loop())]
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                event = json.loads(message.data)
                if event.get("type") == "key":
                    session.key(str(event.get("key", "")), bool(event.get("down", True)))
            except InvalidArgumentError as error:
                await ws.send_json({"type": "warning", "message": str(error)})
            except (ValueError, AttributeError):
                await ws.send_json({"type": "warning", "message": "messages must be JSON objects"})
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.run_in_executor(None, session.close)  # stores a cut-short episode as truncated
    return ws


async def _end(ws: web.WebSocketResponse, message: str, code: int) -> None:
    """Tells the page why its session ends, then closes the socket (which ends the receive loop)."""
    if not ws.closed:
        try:
            await ws.send_json({"type": "error", "message": message})
        except (ConnectionResetError, RuntimeError):  # (the page went away first)
            pass
        await ws.close(code=code, message=message[:120].encode())


class WebServer:
    """The aiohttp app on its own thread and event loop, beside the gRPC server."""

    def __init__(self, viewer: Viewer, host: str, port: int, admission: Admission | None = None, tls=None):
        self.viewer, self.host, self.port, self.admission = viewer, host, port, admission
        self.ssl = None
        if tls is not None and tls.serving:  # the page over HTTPS with the service's certificate
            self.ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.ssl.load_cert_chain(tls.cert_file, tls.key_file)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="viewer-http", daemon=True)

    def start(self) -> WebServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(30)
        scheme = "https" if self.ssl is not None else "http"
        log.info("viewer page at %s://%s:%d/", scheme, self.host, self.port)
        print(f"viewer page at {scheme}://{self.host}:{self.port}/", flush=True)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(build_app(self.viewer, self.admission), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()  # now, not in a destructor at interpreter exit when its pipe is gone
