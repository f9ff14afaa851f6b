"""Save / load round trips on real encoded files, metadata read back, atomic writes, load options."""
import os

import pytest
import torch

from comfyui_opensora import comfy_adapter, video_io
from comfyui_opensora.nodes.common import NodeInputError
from comfyui_opensora.nodes.video import OpenSoraLoadVideo, OpenSoraSaveVideo

PROMPT = {"1": {"class_type": "OpenSoraSaveVideo", "inputs": {"fps": 8.0}}}
WORKFLOW = {"nodes": [{"id": 1, "type": "OpenSoraSaveVideo"}], "links": [], "version": 0.4}


def moving_square(t=9, h=48, w=64):
    """A bright square moving right over a colour gradient: easy to check after lossy coding."""
    frames = torch.zeros(t, h, w, 3)
    frames[..., 0] = torch.linspace(0, 1, w)
    frames[..., 2] = torch.linspace(0, 1, h)[:, None]
    for i in range(t):
        x = 4 + 4 * i
        frames[i, 16:32, x:x + 12] = 1.0
    return frames


@pytest.fixture
def dirs(tmp_path):
    comfy_adapter.configure(output_dir=str(tmp_path / "out"), input_dir=str(tmp_path / "in"))
    (tmp_path / "in").mkdir()
    yield tmp_path
    comfy_adapter._settings.update(output_dir=None, input_dir=None)


# (format, pixel format, max mean abs error after decode)
CASES = [("mp4 (h264)", "yuv420p", 0.03), ("mp4 (h264)", "yuv444p", 0.02), ("mp4 (h264)", "yuv420p10le", 0.03),
         ("mp4 (h265)", "yuv420p", 0.04), ("webm (vp9)", "yuv420p", 0.04), ("gif", "yuv420p", 0.08),
         ("webp (animated)", "yuv420p", 0.05), ("png (frames)", "yuv420p", 0.5 / 255)]


@pytest.mark.parametrize("fmt,pix,tol", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_round_trip(dirs, fmt, pix, tol):
    frames = moving_square()
    out = OpenSoraSaveVideo().save(frames, 8.0, "clips/test", fmt, 18, pix, prompt=PROMPT,
                                   extra_pnginfo={"workflow": WORKFLOW})
    path = out["result"][0].split("\n")[0]
    target = os.path.dirname(path) if fmt == "png (frames)" else path
    assert os.path.exists(target)
    ui = out["ui"]["images"][0]
    assert ui["type"] == "output" and ui["subfolder"].startswith("clips")
    meta = video_io.read_metadata(target)
    assert meta["prompt"] == PROMPT and meta["workflow"] == WORKFLOW
    images, fps, count = OpenSoraLoadVideo().load("none", 0, 0, 1, "none", 0, 0, path=target)
    assert count == 9 and images.shape == (9, 48, 64, 3)
    # GIF stores frame delays in 1/100 s, so 8 fps (125 ms) comes back as 120 ms.
    assert fps == pytest.approx(8.0, rel=0.05 if fmt == "gif" else 1e-3)
    err = (images - frames).abs().mean().item()
    assert err <= tol, f"{fmt}: mean abs error {err}"
    if fmt == "png (frames)":
        assert torch.equal((images * 255).round(), (frames * 255).round())


def test_odd_size_is_padded_for_420(dirs):
    frames = moving_square(5, 33, 47)
    path = OpenSoraSaveVideo().save(frames, 12.0, "odd", "mp4 (h264)", 18, "yuv420p")["result"][0]
    images, _, _ = OpenSoraLoadVideo().load("none", 0, 0, 1, "none", 0, 0, path=path)
    assert images.shape == (5, 34, 48, 3)
    assert (images[:, :33, :47] - frames).abs().mean() < 0.03


def test_counter_increments(dirs):
    frames = moving_square(3)
    a = OpenSoraSaveVideo().save(frames, 8.0, "run", "gif", 18, "yuv420p")["result"][0]
    b = OpenSoraSaveVideo().save(frames, 8.0, "run", "gif", 18, "yuv420p")["result"][0]
    assert a.endswith("run_00001_.gif") and b.endswith("run_00002_.gif")


def test_failure_leaves_no_file(dirs):
    frames = moving_square()

    def cancel(i):
        if i == 4:
            raise comfy_adapter.Interrupted("cancelled by the user")

    for fmt in ("mp4 (h264)", "png (frames)", "webp (animated)"):
        path = str(dirs / f"fail{video_io.FORMATS[fmt][2]}")
        with pytest.raises(comfy_adapter.Interrupted):
            video_io.write_video(path, frames, 8.0, fmt, progress=cancel)
        assert os.listdir(dirs) == ["in"] or sorted(os.listdir(dirs)) == ["in", "out"], os.listdir(dirs)


def test_load_options(dirs):
    frames = moving_square(12)
    path = OpenSoraSaveVideo().save(frames, 12.0, "opts", "png (frames)", 18, "yuv420p")["result"][0].split("\n")[0]
    folder = os.path.dirname(path)
    node = OpenSoraLoadVideo()
    imgs, fps, n = node.load("none", 3, 2, 2, "none", 0, 0, path=folder)
    assert n == 3 and fps == pytest.approx(6.0)
    torch.testing.assert_close(imgs, (frames[[2, 4, 6]] * 255).round() / 255)
    imgs, _, _ = node.load("none", 0, 0, 1, "crop to size", 32, 32, path=folder)
    assert imgs.shape == (12, 32, 32, 3)
    imgs, _, _ = node.load("none", 0, 0, 1, "stretch to size", 40, 16, path=folder)
    assert imgs.shape == (12, 16, 40, 3)
    imgs, _, _ = node.load("none", 0, 0, 1, "shorter side", 0, 24, path=folder)
    assert imgs.shape == (12, 24, 32, 3)
    imgs, fps, n = node.load("none", 0, 0, 1, "none", 0, 0, path=folder, force_fps=4.0)
    assert (n, fps) == (4, 4.0)


def test_load_from_input_folder_and_errors(dirs):
    frames = moving_square(4)
    src = OpenSoraSaveVideo().save(frames, 8.0, "x", "webm (vp9)", 30, "yuv420p")["result"][0]
    os.replace(src, dirs / "in" / "clip.webm")
    assert "clip.webm" in OpenSoraLoadVideo.INPUT_TYPES()["required"]["video"][0]
    assert OpenSoraLoadVideo.VALIDATE_INPUTS("clip.webm") is True
    assert "no file chosen" in OpenSoraLoadVideo.VALIDATE_INPUTS("none")
    assert "file not found" in OpenSoraLoadVideo.VALIDATE_INPUTS("none", path=str(dirs / "nope.mp4"))
    imgs, _, n = OpenSoraLoadVideo().load("clip.webm", 0, 0, 1, "none", 0, 0)
    assert n == 4
    with pytest.raises(NodeInputError, match="OpenSoraLoadVideo: input 'video'.*no frames selected"):
        OpenSoraLoadVideo().load("clip.webm", 0, 10, 1, "none", 0, 0)
    with pytest.raises(NodeInputError, match="input 'pixel_format'.*vp9"):
        OpenSoraSaveVideo().save(frames, 8.0, "x", "webm (vp9)", 30, "yuv420p10le")
