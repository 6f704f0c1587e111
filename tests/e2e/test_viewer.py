"""The viewer in a real headless browser, over its WebSocket and gRPC, and videos."""

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import pytest

from rlrings.clients.parameter import ParameterClient
from rlrings.clients.replay import ReplayClient
from rlrings.core import experience
from rlrings.core.models import ModelSpec, build_model, weights_to_bytes
from rlrings.envs import env_spec
from rlrings.ops.processes import free_port
from rlrings.rpc import wire
from rlrings.rpc.config import load_config
from rlrings.services.parameter.config import ParameterConfig
from rlrings.services.parameter.server import ParameterServer
from rlrings.v1 import viewer_pb2, viewer_pb2_grpc

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
CHROMIUM = "/usr/bin/chromium"


def services_for_a_viewer(start_replay, tmp_path, env_id="CartPole-v1", algorithm="impala"):
    """Replay with a demonstrations table and a parameter service holding a model for ``env_id``."""
    spec = env_spec(env_id)
    replay = start_replay([experience.demonstrations_table(spec)])
    parameter = ParameterServer(
        load_config(ParameterConfig, [], port=0, metrics_port=0, directory=tmp_path / "weights")
    ).start()
    model_spec = ModelSpec.for_env(spec, algorithm)
    with ParameterClient(parameter.address) as client:
        client.publish(weights_to_bytes(build_model(model_spec)), wire.model_spec_to_proto(model_spec))
    return replay, parameter


def start_viewer(replay, parameter, *settings: str) -> dict:
    """The viewer as its own process, once its page answers: its addresses and the process."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rlrings.services.viewer", "--replay-address", replay.address,
         "--parameter-address", parameter.address, "--http-port", str(http_port), "--port", str(grpc_port),
         "--metrics-port", str(metrics_port), *settings],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{http_port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            asyncio.run(_get_json(url + "api/environments"))
            break
        except OSError:
            assert process.poll() is None, process.communicate()[0]
            time.sleep(0.3)
    return {
        "url": url,
        "grpc": f"127.0.0.1:{grpc_port}",
        "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
        "replay": replay,
        "process": process,
    }


@pytest.fixture
def stack(start_replay, tmp_path):
    """Replay with a demonstrations table, a parameter service holding a CartPole
    model, and the viewer as its own process."""
    replay, parameter = services_for_a_viewer(start_replay, tmp_path)
    viewer = start_viewer(replay, parameter, "--max-viewers", "2", "--max-sessions-per-client", "3", "--fps", "30")
    yield viewer
    viewer["process"].terminate()
    viewer["process"].communicate(timeout=30)
    parameter.stop(grace=0)


def viewer_with_tokens(tmp_path, replay, parameter, tokens: list[dict], **settings):
    """The viewer as a process with a tokens file, presenting the first token; (process, http port)."""
    path = tmp_path / "tokens.yaml"
    path.write_text(json.dumps(tokens))
    http_port = free_port()
    config = tmp_path / "viewer.yaml"
    config.write_text(json.dumps({
        "replay_address": replay.address, "parameter_address": parameter.address, "http_port": http_port,
        "port": free_port(), "metrics_port": free_port(), **settings,
        "auth": {"tokens_file": str(path), "token": tokens[0]["token"]},
    }))  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "rlrings.services.viewer", "--config", str(config)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    return process, http_port


def run_then_stop(attempts, process, parameter) -> tuple[dict, str]:
    """Runs the coroutine against the viewer, then stops it; (its results, the viewer's output).
    A failure carries the viewer's output (and its exit status, had it died first)."""
    failure = died = None
    try:
        results = asyncio.run(attempts)
    except BaseException as error:
        failure, died = error, process.poll()
        raise
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
        parameter.stop(grace=0)
        if failure is not None:
            state = f"it had exited with {died}" if died is not None else "it was still running"
            failure.add_note(f"viewer output ({state}):\n{output[-6000:]}")
    return results, output


async def _get_json(url):
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.json()


def demonstrations_in_replay(replay) -> int:
    with ReplayClient(replay.address) as client:
        return client.info(["demonstrations"])["demonstrations"].size


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (make test installs it)")
def test_watch_and_play_in_a_real_browser(stack):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )  # fmt: skip
        page = browser.new_page()
        page.goto(stack["url"])
        assert page.inner_text("#env") == "CartPole-v1"

        page.click("#watch")  # frames advance, played by the published policy
        page.wait_for_function("Number(document.getElementById('frames').textContent) > 10", timeout=30_000)
        assert page.inner_text("#mode") == "watch" and page.inner_text("#version") == "1"
        assert "push right" in page.inner_text("#keys")
        page.screenshot(path=str(ARTIFACTS / "viewer-watch.png"))

        page.click("#play")  # the keys drive the cart; the episode ends and is recorded
        page.wait_for_function("document.getElementById('mode').textContent === 'play'", timeout=10_000)
        page.keyboard.down("ArrowRight")
        page.wait_for_function("document.getElementById('action').textContent === 'push right'", timeout=10_000)
        page.wait_for_function("document.querySelectorAll('#demos tr.demo').length >= 1", timeout=30_000)
        page.keyboard.up("ArrowRight")
        page.screenshot(path=str(ARTIFACTS / "viewer-play.png"))
        page.click("#stop")
        browser.close()
    demos = asyncio.run(_get_json(stack["url"] + "api/demonstrations"))
    assert demos and demos[0]["steps"] > 0
    time.sleep(1.0)  # the stop stores the episode in progress, marked truncated
    demos = asyncio.run(_get_json(stack["url"] + "api/demonstrations"))
    assert demonstrations_in_replay(stack["replay"]) == sum(d["steps"] for d in demos)
    finished = [d for d in demos if not d["truncated"]]
    assert finished and all(d["steps"] < 100 for d in finished), "always pushing right ends CartPole quickly"


async def _socket_messages(url, keys=(), frames=5, close_after=True):
    """Opens a socket, sends keys, collects JSON messages until ``frames`` frames arrived."""
    messages = []
    async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
        for key in keys:
            await ws.send_json({"type": "key", "key": key, "down": True})
        seen = 0
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                messages.append(json.loads(message.data))
                if messages[-1]["type"] == "error":
                    break
            elif message.type == aiohttp.WSMsgType.BINARY:
                seen += 1
                if seen >= frames:
                    break
    return messages


def test_bad_input_gets_clear_messages_and_breaks_nothing(stack):
    ws = stack["url"].replace("http", "ws") + "ws"
    unknown = asyncio.run(_socket_messages(ws + "?env=NoSuchGame-v0&mode=watch"))
    assert unknown[-1]["type"] == "error" and "env_id: 'NoSuchGame-v0' is not served here" in unknown[-1]["message"]
    bad_mode = asyncio.run(_socket_messages(ws + "?mode=fly"))
    assert "mode: 'fly'" in bad_mode[-1]["message"]

    played = asyncio.run(_socket_messages(ws + "?mode=play", keys=["q", "ArrowLeft"], frames=8))
    warnings = [m for m in played if m["type"] == "warning"]
    assert warnings and "key 'q' is not mapped" in warnings[0]["message"]
    assert [m for m in played if m["type"] == "frame"][-1]["step"] > 0, "the game went on"

    async def over_the_limit():
        async def admitted(session):
            # a slot is taken after the handshake, and the sockets above free theirs as their handlers end
            for _ in range(100):
                socket = await session.ws_connect(ws + "?mode=watch")
                if json.loads((await socket.receive()).data)["type"] == "hello":
                    return socket
                await socket.close()
                await asyncio.sleep(0.1)
            raise AssertionError("no viewer slot came free")

        async with aiohttp.ClientSession() as session:
            first = await admitted(session)
            second = await admitted(session)
            third = await session.ws_connect(ws + "?mode=watch")
            refusal = json.loads((await third.receive()).data)
            # the two admitted viewers still get frames
            kinds = {(await first.receive()).type for _ in range(4)}
            for socket in (first, second, third):
                await socket.close()
            return refusal, kinds

    refusal, kinds = asyncio.run(over_the_limit())
    assert refusal["type"] == "error" and "viewer limit of 2 reached" in refusal["message"]
    assert aiohttp.WSMsgType.BINARY in kinds
    time.sleep(1.0)
    demos = asyncio.run(_get_json(stack["url"] + "api/demonstrations"))
    assert any(d["truncated"] for d in demos), "a socket closed mid-episode stores what was played, marked truncated"


def test_grpc_play_and_environments(stack):
    with grpc.insecure_channel(stack["grpc"]) as channel:
        stub = viewer_pb2_grpc.ViewerServiceStub(channel)
        (env,) = stub.ListEnvironments(viewer_pb2.ListEnvironmentsRequest(), timeout=10).environments
        assert env.env_id == "CartPole-v1" and dict(env.key_map) == {"ArrowLeft": 0, "ArrowRight": 1}
        requests = [viewer_pb2.PlayRequest(start=viewer_pb2.StartEpisode(env_id="CartPole-v1"))]
        requests += [viewer_pb2.PlayRequest(action=1) for _ in range(5)]
        frames = list(stub.Play(iter(requests), timeout=30))
        assert [f.step for f in frames] == [0, 1, 2, 3, 4, 5] and frames[-1].image[:2] == b"\xff\xd8"
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Play(iter([requests[0], viewer_pb2.PlayRequest(action=7)]), timeout=30))
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "action: 7" in raised.value.details()
    time.sleep(0.5)
    metrics = urllib.request.urlopen(stack["metrics"], timeout=10).read().decode()
    # the first Play call ended after 5 steps; the second played none, so stored nothing
    assert 'rlrings_viewer_demonstrations_total{ended="cut_short"} 1.0' in metrics
    assert "rlrings_viewer_demonstration_steps_total 5.0" in metrics
    assert 'rlrings_viewer_sessions{mode="play"} 0.0' in metrics
    assert 'rlrings_grpc_server_handling_seconds_count{code="INVALID_ARGUMENT",method="Play"' in metrics


def test_continuous_play_from_keys_and_grpc_records_float_demonstrations(start_replay, tmp_path):
    replay, parameter = services_for_a_viewer(start_replay, tmp_path, "Pendulum-v1", "ppo")
    viewer = start_viewer(replay, parameter, "--env", "Pendulum-v1", "--fps", "30")
    try:
        (info,) = asyncio.run(_get_json(viewer["url"] + "api/environments"))
        assert info["env_id"] == "Pendulum-v1" and not info["discrete"] and "ArrowRight" in info["keys"]
        ws = viewer["url"].replace("http", "ws") + "ws?mode=play"
        played = asyncio.run(_socket_messages(ws, keys=["ArrowRight"], frames=12))
        assert played[0]["type"] == "hello" and played[0]["keys"] == info["keys"]
        socket_frames = [m for m in played if m["type"] == "frame"]
        torques = [m["action_values"][0] for m in socket_frames[1:]]  # the first frame is the reset's
        assert torques[-1] == 2.0 and torques == sorted(torques), "holding a key ramps the torque up to its bound"

        with grpc.insecure_channel(viewer["grpc"]) as channel:
            stub = viewer_pb2_grpc.ViewerServiceStub(channel)
            (env,) = stub.ListEnvironments(viewer_pb2.ListEnvironmentsRequest(), timeout=10).environments
            assert env.env_id == "Pendulum-v1" and not env.key_map and env.continuous_keys
            start = viewer_pb2.PlayRequest(start=viewer_pb2.StartEpisode(env_id="Pendulum-v1"))

            def torque(*values):
                return viewer_pb2.PlayRequest(continuous_action=viewer_pb2.ContinuousAction(values=values))

            frames = list(stub.Play(iter([start, *(torque(-1.5) for _ in range(5))]), timeout=30))
            assert [f.step for f in frames] == [0, 1, 2, 3, 4, 5]
            for bad, message in (((5.0,), "continuous_action.values[0]: 5 is outside [-2, 2]"),
                                 ((1.0, 1.0), "continuous_action.values: 2 values, the env takes 1"),
                                 ((float("nan"),), "non-finite value"),
                                 ((), "continuous_action.values: 0 values")):  # fmt: skip
                with pytest.raises(grpc.RpcError) as raised:
                    list(stub.Play(iter([start, torque(*bad)]), timeout=30))
                assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
                assert message in raised.value.details(), (bad, raised.value.details())
    finally:
        viewer["process"].terminate()
        viewer["process"].communicate(timeout=30)
        parameter.stop(grace=0)
    with ReplayClient(replay.address) as client:
        stored = client.info(["demonstrations"])["demonstrations"].size
        assert stored >= socket_frames[-1]["step"] + 5, "the socket's and the gRPC call's steps are in replay"
        (batch,) = client.sample("demonstrations", batch_size=stored, num_batches=1, timeout=10)
    actions = batch.columns["action"]
    assert actions.dtype == np.float32 and actions.shape[-1] == 1
    assert {2.0, -1.5} <= set(np.round(actions.ravel(), 4).tolist()), "both players' torques, as floats"


def test_videos_from_the_page_and_the_command_line(stack, tmp_path):
    async def gif():
        async with aiohttp.ClientSession() as session, session.get(stack["url"] + "api/video.gif") as response:
            return response.status, await response.read()

    status, data = asyncio.run(gif())
    assert status == 200 and data[:4] == b"GIF8"
    address = stack["process"].args[stack["process"].args.index("--parameter-address") + 1]
    for name in ("agent.gif", "agent.mp4"):
        result = subprocess.run(
            [sys.executable, "-m", "rlrings.ops.cli", "render", "--model", "latest", "--address", address,
             "--episodes", "2", "--out", str(tmp_path / name)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / name).stat().st_size > 1000 and "of CartPole-v1 (model version 1)" in result.stdout


def test_the_page_refuses_other_hosts_other_origins_and_missing_tokens(start_replay, tmp_path):
    """Tried as an attacker would: DNS rebinding (a foreign Host), a foreign site's script (a foreign
    Origin on the socket), no token, a token without the scope to play; and many GIF requests at once."""
    replay, parameter = services_for_a_viewer(start_replay, tmp_path)
    process, http_port = viewer_with_tokens(tmp_path, replay, parameter, [
        {"name": "player", "token": "play-0123456789abcdef", "scopes": ["read", "control"]},
        {"name": "watcher", "token": "watch-0123456789abcdef", "scopes": ["read"]},
    ])  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"

    async def attempts() -> dict:
        results = {}
        # (aiohttp keeps cookies of IP hosts only when told to; browsers keep them)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    async with session.get(base + "/api/environments") as response:
                        results["no token"] = response.status
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.3)
            async with session.get(base + "/?token=watch-0123456789abcdef", headers={"Host": "evil.example"}) as r:
                results["foreign host"] = r.status
            async with session.get(base + "/api/environments?token=watch-0123456789abcdef") as response:
                results["token"] = response.status
                results["cookie"] = response.cookies["rlrings_token"]["httponly"]
            async with session.get(base + "/api/environments") as response:  # the cookie alone now
                results["cookie alone"] = response.status
            for name, query, origin in [
                ("foreign origin", "mode=play&token=play-0123456789abcdef", "https://evil.example"),
                ("play without control", "mode=play&token=watch-0123456789abcdef", base),
            ]:
                try:
                    async with session.ws_connect(f"{base}/ws?{query}", origin=origin):
                        results[name] = 101
                except aiohttp.WSServerHandshakeError as error:
                    results[name] = error.status
            async with session.ws_connect(f"{base}/ws?mode=play&token=play-0123456789abcdef", origin=base) as ws:
                results["player"] = (await ws.receive_json())["type"]
            gifs = await asyncio.gather(*[
                session.get(base + "/api/video.gif?episodes=1&token=watch-0123456789abcdef") for _ in range(6)
            ])  # fmt: skip
            results["gifs"] = {(r.status, await r.read()).__hash__() for r in gifs}
            results["gif status"] = {r.status for r in gifs}
        return results

    results, output = run_then_stop(attempts(), process, parameter)
    assert results["no token"] == 401, output
    assert results["foreign host"] == 421
    assert results["token"] == 200 and results["cookie"] is True and results["cookie alone"] == 200
    assert results["foreign origin"] == 403 and results["play without control"] == 403
    assert results["player"] == "hello"
    assert results["gif status"] == {200} and len(results["gifs"]) == 1, "six requests, one rendering shared"
    assert "Traceback" not in output, output[max(0, output.find("Traceback") - 400) :]  # the whole traceback


def test_one_client_cannot_take_every_slot_and_an_idle_player_is_let_go(start_replay, tmp_path):
    """Sessions are counted per token: a client at max_sessions_per_client is refused while another
    client still gets in; a player who presses nothing for play_idle_seconds is told so and let go,
    and the slot comes back."""
    replay, parameter = services_for_a_viewer(start_replay, tmp_path)
    process, http_port = viewer_with_tokens(tmp_path, replay, parameter, [
        {"name": "alice", "token": "alice-0123456789abcdef", "scopes": ["read", "control"]},
        {"name": "bob", "token": "bob-0123456789abcdef", "scopes": ["read", "control"]},
    ], max_viewers=4, max_sessions_per_client=1, play_idle_seconds=2)  # fmt: skip
    base = f"ws://127.0.0.1:{http_port}/ws"

    async def sessions() -> dict:
        results = {}
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 60
            while True:
                try:
                    first = await session.ws_connect(f"{base}?mode=play&token=alice-0123456789abcdef")
                    break
                except aiohttp.ClientConnectionError:
                    assert time.monotonic() < deadline, "the viewer did not start"
                    await asyncio.sleep(0.3)
            results["alice"] = (await first.receive_json())["type"]
            second = await session.ws_connect(f"{base}?mode=watch&token=alice-0123456789abcdef")
            results["alice again"] = await second.receive_json()
            bob = await session.ws_connect(f"{base}?mode=watch&token=bob-0123456789abcdef")
            results["bob"] = (await bob.receive_json())["type"]
            started = time.monotonic()
            while True:  # alice plays nothing: frames, then the reason her session ended
                message = await first.receive(timeout=30)
                if message.type == aiohttp.WSMsgType.TEXT and json.loads(message.data)["type"] == "error":
                    results["idle"] = (json.loads(message.data)["message"], time.monotonic() - started)
                    break
                assert message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY), message
            await asyncio.sleep(0.5)
            again = await session.ws_connect(f"{base}?mode=watch&token=alice-0123456789abcdef")
            results["alice after"] = (await again.receive_json())["type"]
            for socket in (first, second, bob, again):
                await socket.close()
        return results

    results, output = run_then_stop(sessions(), process, parameter)
    assert results["alice"] == "hello", output
    assert results["alice again"]["type"] == "error"
    assert "1 sessions per client reached ('alice' has 1 open)" in results["alice again"]["message"]
    assert results["bob"] == "hello", "another client is not held back by alice's limit"
    message, seconds = results["idle"]
    assert "no key pressed for 2 s; the session ended" in message and seconds < 10
    assert results["alice after"] == "hello", "the idle session's slot came back"
    assert "Traceback" not in output, output[max(0, output.find("Traceback") - 400) :]  # the whole traceback
