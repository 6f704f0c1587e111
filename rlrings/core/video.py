"""Videos of a policy playing: frames from ``env.render()``, written as MP4 or GIF."""

from __future__ import annotations

import io
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image

from rlrings.core.models import Policy
from rlrings.envs import make_env


def record_episodes(
    policy: Policy | None, env_id: str, episodes: int, max_steps: int = 1000, seed: int = 0,
    max_width: int | None = None, every: int = 1,
) -> list[np.ndarray]:  # fmt: skip
    """Frames of ``episodes`` episodes; random actions when ``policy`` is None. ``max_width``
    scales wider frames down and ``every`` keeps one frame in so many, as they come, so a
    long recording never holds its full-size frames."""
    env = make_env(env_id, render_mode="rgb_array")
    frames, step = [], 0

    def keep(frame: np.ndarray) -> None:
        nonlocal step
        if step % every == 0:
            if max_width is not None and frame.shape[1] > max_width:
                height = max(1, round(frame.shape[0] * max_width / frame.shape[1]))
                frame = np.asarray(Image.fromarray(frame).resize((max_width, height), Image.BILINEAR))
            frames.append(frame)
        step += 1

    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            keep(env.render())
            for _ in range(max_steps):
                action = policy.act(obs) if policy is not None else env.action_space.sample()
                obs, _, terminated, truncated, _ = env.step(action)
                keep(env.render())
                if terminated or truncated:
                    break
    finally:
        env.close()
    return frames


def write_video(frames: list[np.ndarray], path: str | Path | None, fps: float = 30, fmt: str | None = None) -> bytes:
    """Writes frames to ``path`` (format from its suffix: .mp4 or .gif) or,
    with ``path`` None, returns the encoded bytes."""
    fmt = fmt or Path(path).suffix.lstrip(".").lower()
    if fmt not in ("mp4", "gif"):
        raise ValueError(f"out: {path}: write .mp4 or .gif")
    frames = [np.asarray(frame, dtype=np.uint8) for frame in frames]
    if fmt == "gif":
        frames = frames[::2] if len(frames) > 600 else frames  # keep GIFs small
        # Each frame goes to its own 256-colour palette first (a byte a pixel) and Pillow writes those:
        # imageio's GIF writer held several full copies of the frames (750 frames of 240x160 grew the
        # process by 693 MiB against 63 this way, which took the viewer past its 1 GiB request)
        images = [Image.fromarray(frame).convert("P", palette=Image.Palette.ADAPTIVE) for frame in frames]
        buffer = io.BytesIO()
        images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=1000 / fps, loop=0)
        data = buffer.getvalue()
    else:
        target = Path(path) if path else Path("/tmp/rlrings-video.mp4")
        with imageio.get_writer(target, fps=fps, codec="libx264", quality=7, macro_block_size=8) as writer:
            for frame in frames:
                writer.append_data(frame)
        data = target.read_bytes()
    if path is not None and fmt == "gif":
        Path(path).write_bytes(data)
    return data
