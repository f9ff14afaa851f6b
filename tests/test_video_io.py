"""Save / load on real encoded files: round trips per format, embedded workflow read back (with read_metadata and
with readers that follow the ComfyUI frontend's own parsers), atomic writes, load options, errors.

The frontend parsers mirrored here (ComfyUI_frontend src/scripts/metadata/isobmff.ts, ebml.ts,
src/scripts/pnginfo.ts getWebpMetadata, metadata/png.ts): MP4 moov/udta/meta `keys` + `ilst` `data` boxes with
keys prompt/workflow; WebM SimpleTag TagName PROMPT/WORKFLOW within the first 2 MiB; WebP the EXIF chunk's
IFD0 ASCII entries "key:value"; PNG tEXt chunks.
"""
import json
import os
import struct

import av
import pytest
import torch

from comfyui_opensora import comfy_adapter, video_io
from comfyui_opensora.nodes.common import NodeInputError
from comfyui_opensora.nodes.video import OpenSoraLoadVideo, OpenSoraSaveVideo

PROMPT = {"1": {"class_type": "OpenSoraSaveVideo", "inputs": {"fps": 8.0, "text": "ünïcode: {braces}"}}}
WORKFLOW = {"nodes": [{"id": 1, "type": "OpenSoraSaveVideo"}], "links": [], "version": 0.4}


def moving_square(t=9, h=48, w=64):
    """A white square moving right over a red/blue gradient: smooth areas plus sharp edges."""
    frames = torch.zeros(t, h, w, 3)
    frames[..., 0] = torch.linspace(0, 1, w)
    frames[..., 2] = torch.linspace(0, 1, h)[:, None]
    for i in range(t):
        frames[i, h // 3:h // 3 + 16, 4 + 4 * i:16 + 4 * i] = 1.0
    return frames


def as_8bit(frames):
    return (frames * 255).round() / 255


@pytest.fixture
def dirs(tmp_path):
    comfy_adapter.configure(output_dir=str(tmp_path / "out"), input_dir=str(tmp_path / "in"))
    (tmp_path / "in").mkdir()
    yield tmp_path
    comfy_adapter._settings.update(output_dir=None, input_dir=None)
    comfy_adapter.clear_cancel()


def save(frames, fmt="mp4 (h264)", pix="yuv420p", crf=18, prefix="clips/test", fps=8.0, **kw):
    return OpenSoraSaveVideo().save(frames, fps, prefix, fmt, crf, pix, prompt=PROMPT,
                                    extra_pnginfo={"workflow": WORKFLOW}, **kw)


def load(path, frame_cap=0, skip_first=0, nth=1, resize="none", width=0, height=0, **kw):
    return OpenSoraLoadVideo().load("none", frame_cap, skip_first, nth, resize, width, height, path=path, **kw)


# --------------------------------------------------------------------------------------------
# Readers that follow the frontend's parsers
# --------------------------------------------------------------------------------------------
def _boxes(data, start, end):
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        yield kind, start + 8, start + size
        start += size


def frontend_mp4(data):
    """{prompt, workflow} from moov/udta/meta, and whether moov comes before mdat."""
    top = {k: (s, e) for k, s, e in _boxes(data, 0, len(data))}
    udta = {k: (s, e) for k, s, e in _boxes(data, *top[b"moov"])}[b"udta"]
    meta = {k: (s, e) for k, s, e in _boxes(data, *udta)}[b"meta"]
    inner = {k: (s, e) for k, s, e in _boxes(data, meta[0] + 4, meta[1])}  # meta is a full box
    ks, _ = inner[b"keys"]
    names, pos = {}, ks + 8  # version/flags, entry count
    for i in range(1, struct.unpack(">I", data[ks + 4:ks + 8])[0] + 1):
        size = struct.unpack(">I", data[pos:pos + 4])[0]
        names[i] = data[pos + 8:pos + size].decode()  # after size and the 'mdta' namespace
        pos += size
    out = {}
    for index, s, e in _boxes(data, *inner[b"ilst"]):
        name = names[struct.unpack(">I", index)[0]]
        (kind, ds, de), = _boxes(data, s, e)
        if name.lower() in ("prompt", "workflow"):
            out[name.lower()] = json.loads(data[ds + 8:de])  # after type and locale
    return out, list(top).index(b"moov") < list(top).index(b"mdat")


def _vint(data, pos, keep_marker):
    length = 9 - data[pos].bit_length()
    value = int.from_bytes(data[pos:pos + length], "big")
    return (value if keep_marker else value & ((1 << (7 * length)) - 1)), pos + length


def frontend_webm(data):
    """SimpleTag name -> (value, offset), and the offset of the first Cluster (the media)."""
    out, first_cluster = {}, None

    def walk(start, end):
        nonlocal first_cluster
        while start < end:
            eid, pos = _vint(data, start, True)
            size, pos = _vint(data, pos, False)
            if eid in (0x18538067, 0x1254C367, 0x7373):  # Segment, Tags, Tag: descend
                walk(pos, min(end, pos + size))
            elif eid == 0x67C8:  # SimpleTag
                fields, p = {}, pos
                while p < pos + size:
                    fid, q = _vint(data, p, True)
                    fsize, q = _vint(data, q, False)
                    fields[fid], p = data[q:q + fsize], q + fsize
                out[fields[0x45A3].decode()] = (fields[0x4487].decode(), start)
            elif eid == 0x1F43B675 and first_cluster is None:
                first_cluster = start
            start = pos + size

    _, pos = _vint(data, 0, True)
    size, pos = _vint(data, pos, False)
    walk(pos + size, len(data))  # after the EBML header
    return out, first_cluster


def frontend_webp(data):
    pos = 12
    while pos < len(data):
        kind, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if kind == b"EXIF":
            tiff = data[pos + 8:pos + 8 + size]
            tiff = tiff[6:] if tiff.startswith(b"Exif\0\0") else tiff
            e = "<" if tiff[:2] == b"II" else ">"
            ifd = struct.unpack(e + "I", tiff[4:8])[0]
            out = {}
            for i in range(struct.unpack(e + "H", tiff[ifd:ifd + 2])[0]):
                tag, typ, count, offset = struct.unpack(e + "HHII", tiff[ifd + 2 + 12 * i:ifd + 14 + 12 * i])
                if typ == 2:
                    key, _, value = tiff[offset:offset + count - 1].decode().partition(":")
                    out[key] = json.loads(value)
            return out
        pos += 8 + size + size % 2
    return {}


def frontend_png(data):
    pos, out = 8, {}
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"tEXt":
            key, _, value = data[pos + 8:pos + 8 + size].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + size
    return {k: json.loads(out[k]) for k in ("prompt", "workflow")}


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------
# (format, pixel format, crf, extra settings, max mean abs error against the 8-bit source; measured errors
# are about half of these)
CASES = [("mp4 (h264)", "yuv420p", 18, {}, 0.012), ("mp4 (h264)", "yuv444p", 0, {}, 0.003),
         ("mp4 (h264)", "yuv420p10le", 18, {}, 0.01), ("mp4 (h265)", "yuv420p", 18, {}, 0.012),
         ("mp4 (h265)", "yuv420p10le", 18, {}, 0.01), ("webm (vp9)", "yuv420p", 18, {}, 0.012),
         ("webm (vp9)", "yuv444p", 18, {}, 0.006), ("gif", "yuv420p", 18, {}, 0.02),
         ("webp (animated)", "yuv420p", 18, {"quality": 90}, 0.012),
         ("webp (animated)", "yuv420p", 18, {"lossless": True}, 0.0), ("png (frames)", "yuv420p", 18, {}, 0.0)]


@pytest.mark.parametrize("fmt,pix,crf,extra,tol", CASES, ids=[f"{c[0]}-{c[1]}-{c[3]}" for c in CASES])
def test_round_trip(dirs, fmt, pix, crf, extra, tol):
    frames = moving_square()
    out = save(frames, fmt, pix, crf, **extra)
    path = out["result"][0]
    name = os.path.basename(path)
    assert name == "test_00001_" + video_io.FORMATS[fmt][2]
    assert os.path.dirname(path) == str(dirs / "out" / "clips")
    # the ui dict core savers return: a <video> for mp4/webm, an animated image for webp, plain images otherwise
    images = out["ui"]["images"]
    if fmt == "png (frames)":
        assert [i["filename"] for i in images] == [f"frame_{i:05d}.png" for i in range(9)]
        assert {i["subfolder"] for i in images} == {"clips/test_00001_"} and "animated" not in out["ui"]
    else:
        assert images == [{"filename": name, "subfolder": "clips", "type": "output"}]
        assert out["ui"].get("animated") == (None if fmt == "gif" else [True])
    assert sorted(os.listdir(os.path.dirname(path))) == [name], "no temporary file left"

    meta = video_io.read_metadata(path)
    assert (meta["prompt"], meta["workflow"]) == (PROMPT, WORKFLOW)
    first = os.path.join(path, "frame_00000.png") if fmt == "png (frames)" else path
    data = open(first, "rb").read()
    if fmt.startswith("mp4"):
        meta, moov_first = frontend_mp4(data)
        assert meta == {"prompt": PROMPT, "workflow": WORKFLOW} and moov_first
    elif fmt.startswith("webm"):
        tags, first_cluster = frontend_webm(data)
        assert json.loads(tags["PROMPT"][0]) == PROMPT and json.loads(tags["WORKFLOW"][0]) == WORKFLOW
        # in the header, before the media: the frontend reads only the first 2 MiB of a WebM
        assert tags["PROMPT"][1] < first_cluster and tags["WORKFLOW"][1] < first_cluster
    elif fmt.startswith("webp"):
        assert frontend_webp(data) == {"prompt": PROMPT, "workflow": WORKFLOW, "fps": 8.0}  # + the saved rate
    elif fmt.startswith("png"):
        assert frontend_png(data) == {"prompt": PROMPT, "workflow": WORKFLOW}

    decoded, fps, count = load(path)
    assert count == 9 and decoded.shape == (9, 48, 64, 3)
    assert fps == pytest.approx(1000 / video_io.gif_frame_ms(8.0) if fmt == "gif" else 8.0)
    err = (decoded - as_8bit(frames)).abs().mean().item()
    assert err <= tol, f"{fmt} {pix}: mean abs error {err}"
    if tol == 0.0:
        assert torch.equal(decoded, as_8bit(frames))


def test_yuv_is_bt709_tagged_and_10bit_keeps_its_precision(dirs):
    """The stream is tagged BT.709 limited range and decodes with the same matrix (a 601/709 mix-up would cost
    several levels on saturated colours); 10-bit input and output stay 16-bit end to end."""
    frames = moving_square(3)
    path = save(frames, "mp4 (h264)", "yuv444p", crf=0)["result"][0]
    with av.open(path) as c:
        cc = c.streams.video[0].codec_context  # as the decoder read them from the stream: 1 = BT.709 / limited
        assert (cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range) == (1, 1, 1, 1)
    decoded = load(path)[0]
    assert (decoded - as_8bit(frames)).abs().max() <= 3 / 255
    # a gray ramp with steps finer than 1/255: 8-bit cannot hold it, 10-bit (limited range: 876 levels) can
    ramp = torch.linspace(0.3, 0.4, 64)[None, None, :, None].expand(2, 48, 64, 3).contiguous()
    errors = {}
    for pix in ("yuv420p", "yuv420p10le"):
        decoded = load(save(ramp, "mp4 (h264)", pix, crf=0, prefix=pix)["result"][0])[0]
        errors[pix] = (decoded - ramp).abs().mean().item()
    assert errors["yuv420p"] > 1 / (4 * 255) * 0.8            # about a quarter level of 8-bit quantisation
    assert errors["yuv420p10le"] < errors["yuv420p"] / 4


@pytest.mark.parametrize("fmt,pix", [("mp4 (h264)", "yuv420p"), ("mp4 (h265)", "yuv420p10le"),
                                     ("webm (vp9)", "yuv420p"), ("mp4 (h264)", "yuv444p"),
                                     ("webp (animated)", "yuv420p")])
def test_odd_sizes(dirs, fmt, pix):
    """4:2:0 video pads an odd size by repeating the last row / column; 4:4:4 and images keep it."""
    frames = moving_square(3, 47, 65)
    decoded = load(save(frames, fmt, pix, crf=10, lossless=True)["result"][0])[0]
    if pix.startswith("yuv420") and not fmt.startswith("webp"):  # webp ignores the pixel format
        assert decoded.shape == (3, 48, 66, 3)
        torch.testing.assert_close(decoded[:, 47], decoded[:, 46], atol=0.05, rtol=0)
        torch.testing.assert_close(decoded[:, :, 65], decoded[:, :, 64], atol=0.05, rtol=0)
        decoded = decoded[:, :47, :65]
    assert decoded.shape == (3, 47, 65, 3)
    assert (decoded - frames).abs().mean() < 0.015


def test_gif_and_webp_keep_repeated_frames(dirs):
    """Pillow stores repeated frames as one longer frame; the loader repeats them back at the saved rate."""
    frames = as_8bit(moving_square(6))[[0, 0, 0, 1, 2, 2]]
    for fmt in ("gif", "webp (animated)"):
        decoded, fps, n = load(save(frames, fmt, lossless=True, prefix=fmt[:4])["result"][0])
        assert n == 6 and fps == pytest.approx(1000 / video_io.gif_frame_ms(8.0) if fmt == "gif" else 8.0)
        if fmt != "gif":
            assert torch.equal(decoded, frames)


def test_gif_and_webp_loop_count(dirs):
    from PIL import Image

    for fmt in ("gif", "webp (animated)"):
        for loop in (0, 3):
            with Image.open(save(moving_square(2), fmt, loop_count=loop, prefix=f"l{loop}")["result"][0]) as img:
                assert img.info["loop"] == loop


# --------------------------------------------------------------------------------------------
# Atomic writes, cancel, counter
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", list(video_io.FORMATS))
def test_failure_mid_encode_leaves_nothing(tmp_path, monkeypatch, fmt):
    """A failure once the partial output exists (frame 50: past the encoders' lookahead, so packets were
    written; for GIF/WebP, which Pillow writes in one go, a failing Pillow write) removes it."""
    from PIL import Image

    partial_seen = []

    def fail(i):
        partial_seen.append(any(f.endswith(".partial") for f in os.listdir(tmp_path)))
        if i == 50:
            raise RuntimeError("disk full")

    def failing_pillow_save(self, fp, *args, **kwargs):
        with open(fp, "wb") as f:
            f.write(b"RIFF")
        partial_seen.append(True)
        raise RuntimeError("disk full")

    pillow = fmt in ("gif", "webp (animated)")
    if pillow:
        monkeypatch.setattr(Image.Image, "save", failing_pillow_save)
    path = str(tmp_path / f"clip{video_io.FORMATS[fmt][2]}")
    with pytest.raises(RuntimeError, match="disk full"):
        video_io.write_video(path, moving_square(60), 8.0, fmt, progress=None if pillow else fail)
    assert partial_seen[-1], "the failure came while the partial output existed"
    assert os.listdir(tmp_path) == []


def test_cancel_in_the_nodes(dirs):
    clip = save(moving_square(3), "png (frames)", prefix="src")["result"][0]
    comfy_adapter.request_cancel()  # as the Cancel button: the next progress update raises
    with pytest.raises(comfy_adapter.Interrupted):
        save(moving_square(), "webm (vp9)")
    assert os.listdir(dirs / "out" / "clips") == [], "nothing left behind"
    with pytest.raises(comfy_adapter.Interrupted):  # loading checks after every decoded frame
        load(clip)
    comfy_adapter.clear_cancel()
    assert save(moving_square(2), "webm (vp9)")["result"][0].endswith("test_00001_.webm")


def test_counter_increments_across_formats(dirs):
    paths = [save(moving_square(2), fmt, prefix="run")["result"][0] for fmt in ("gif", "mp4 (h264)", "png (frames)")]
    assert [os.path.basename(p) for p in paths] == ["run_00001_.gif", "run_00002_.mp4", "run_00003_"]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def test_load_options(dirs):
    frames = as_8bit(moving_square(12))
    folder = save(frames, "png (frames)", fps=12.0)["result"][0]
    imgs, fps, n = load(folder, frame_cap=3, skip_first=2, nth=2)
    assert (n, fps) == (3, 6.0)
    assert torch.equal(imgs, frames[[2, 4, 6]])
    assert video_io.read_video(folder, frame_cap=2).source_frames == 2, "decoding stops at the cap"
    assert torch.equal(load(folder, resize="crop to size", width=64, height=24)[0], frames[:, 12:36])  # centre
    assert load(folder, resize="crop to size", width=32, height=32)[0].shape == (12, 32, 32, 3)
    assert load(folder, resize="stretch to size", width=40, height=16)[0].shape == (12, 16, 40, 3)
    assert load(folder, resize="shorter side", height=24)[0].shape == (12, 24, 32, 3)
    # force_fps resamples by time: 12 -> 4 fps keeps every third frame, 12 -> 24 shows each frame twice
    imgs, fps, n = load(folder, force_fps=4.0)
    assert (n, fps) == (4, 4.0) and torch.equal(imgs, frames[[0, 3, 6, 9]])
    imgs, fps, n = load(folder, force_fps=24.0)
    assert (n, fps) == (24, 24.0) and torch.equal(imgs, frames.repeat_interleave(2, 0))
    imgs, fps, n = load(folder, force_fps=24.0, skip_first=1, nth=4)  # skip and stride count resampled frames
    assert (n, fps) == (6, 6.0) and torch.equal(imgs, frames[[0, 2, 4, 6, 8, 10]])


def test_load_single_image_and_input_folder(dirs):
    from PIL import Image

    frames = as_8bit(moving_square(4))
    Image.fromarray((frames[1] * 255).byte().numpy()).save(dirs / "in" / "ref.png")
    assert torch.equal(OpenSoraLoadVideo().load("ref.png", 0, 0, 1, "none", 0, 0)[0], frames[1:2])
    src = save(frames, "webm (vp9)", crf=30)["result"][0]
    os.replace(src, dirs / "in" / "clip.webm")
    choices = OpenSoraLoadVideo.INPUT_TYPES()["required"]["video"][0]
    assert choices[0] == "none" and {"clip.webm", "ref.png"} <= set(choices)
    assert OpenSoraLoadVideo.VALIDATE_INPUTS("clip.webm") is True
    imgs, fps, n = OpenSoraLoadVideo().load("clip.webm", 0, 0, 1, "none", 0, 0)
    assert n == 4 and fps == pytest.approx(8.0)
    # IS_CHANGED follows the file: same file same key, rewritten file new key
    key = OpenSoraLoadVideo.IS_CHANGED("clip.webm")
    assert OpenSoraLoadVideo.IS_CHANGED("clip.webm") == key
    os.replace(save(frames[:2], "webm (vp9)")["result"][0], dirs / "in" / "clip.webm")
    assert OpenSoraLoadVideo.IS_CHANGED("clip.webm") != key


# --------------------------------------------------------------------------------------------
# Errors name the node, the input and the fix
# --------------------------------------------------------------------------------------------
def test_load_errors(dirs):
    v = OpenSoraLoadVideo
    assert v.VALIDATE_INPUTS("none") == ("OpenSoraLoadVideo: input 'video': no file chosen. Fix: pick a video "
                                         "(or upload one), or set 'path'")
    missing = str(dirs / "nope.mp4")
    assert v.VALIDATE_INPUTS("none", path=missing).startswith(f"OpenSoraLoadVideo: input 'path': file not found: "
                                                              f"{missing}. Fix: ")
    assert v.VALIDATE_INPUTS("gone.mp4").startswith("OpenSoraLoadVideo: input 'video': file not found")
    assert v.VALIDATE_INPUTS("none", path=None) is True  # a linked path is checked when it runs
    with pytest.raises(NodeInputError, match="input 'path': file not found"):
        load(missing)
    (dirs / "notes.mp4").write_text("not a video")
    with pytest.raises(NodeInputError, match=r"input 'path': cannot read .*notes.mp4 as a video.*Fix: "):
        load(str(dirs / "notes.mp4"))
    folder = save(moving_square(3), "png (frames)")["result"][0]
    with pytest.raises(NodeInputError, match=r"input 'skip_first': 5 skips all 3 frames.*Fix: skip fewer than 3"):
        load(folder, skip_first=5)
    with pytest.raises(NodeInputError, match=r"input 'width': resize 'crop to size' needs a target width\. Fix: "):
        load(folder, resize="crop to size", height=32)
    with pytest.raises(NodeInputError, match=r"input 'select_every_nth': 0 is below 1"):
        load(folder, nth=0)


def test_save_errors(dirs):
    s = OpenSoraSaveVideo
    assert s.VALIDATE_INPUTS(format="webm (vp9)", pixel_format="yuv420p") is True
    assert s.VALIDATE_INPUTS(format="webm (vp9)", pixel_format="yuv420p10le") == (
        "OpenSoraSaveVideo: input 'pixel_format': webm (vp9) cannot store pixel format 'yuv420p10le'. "
        "Fix: choose yuv420p or yuv444p, or another format")
    assert "input 'format': unknown format 'avi'" in s.VALIDATE_INPUTS(format="avi", pixel_format="yuv420p")
    assert s.VALIDATE_INPUTS(format=None, pixel_format="yuv420p") is True  # linked
    frames = moving_square(2)
    with pytest.raises(NodeInputError, match=r"input 'pixel_format'.*Fix: choose yuv420p or yuv444p"):
        save(frames, "webm (vp9)", "yuv420p10le")
    with pytest.raises(NodeInputError, match=r"input 'crf': 60 is out of range for mp4 \(h264\)\. Fix: use 0-51"):
        save(frames, "mp4 (h264)", crf=60)
    with pytest.raises(NodeInputError, match=r"input 'images': mp4 \(h265\) needs frames at least 64 wide"):
        save(moving_square(2, 48, 32), "mp4 (h265)")
    with pytest.raises(NodeInputError, match=r"input 'images': .*Fix: connect an IMAGE"):
        save(frames[:0])
    with pytest.raises(NodeInputError, match=r"input 'filename_prefix': .*outside the output folder"):
        save(frames, prefix="../escape")
    assert not os.path.exists(dirs / "out" / "clips"), "refused before anything was written"


def test_node_definitions_are_complete():
    """Every input has a tooltip; numbers declare default/min/max/step (the frontend's own defaults differ)."""
    for cls in (OpenSoraSaveVideo, OpenSoraLoadVideo):
        types = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, (kind, opts) in types[section].items():
                assert opts.get("tooltip"), f"{cls.__name__}.{name}"
                if kind in ("INT", "FLOAT"):
                    assert {"default", "min", "max", "step"} <= set(opts), f"{cls.__name__}.{name}"
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES) == len(cls.OUTPUT_TOOLTIPS)
        assert cls.CATEGORY == "OpenSora/video" and cls.DESCRIPTION
    assert OpenSoraSaveVideo.OUTPUT_NODE is True
    assert OpenSoraSaveVideo.INPUT_TYPES()["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}


REPRODUCIBLE_SCRIPT = """
import hashlib, sys, torch
from comfyui_opensora import video_io
t = torch.linspace(0, 1, 25)[:, None, None, None]
y = torch.linspace(0, 1, 240)[None, :, None, None]
x = torch.linspace(0, 1, 424)[None, None, :, None]
g = torch.Generator().manual_seed(0)
images = (0.5 + 0.5 * torch.sin(20 * x + 10 * y + 6 * t + torch.tensor([0, 2, 4.0]))).expand(25, 240, 424, 3)
images = (images + 0.05 * torch.rand(images.shape, generator=g)).clamp(0, 1)
for fmt in sys.argv[2:]:
    path = sys.argv[1] + "." + video_io.FORMATS[fmt][2]
    video_io.write_video(path, images, 24.0, fmt, 23, "yuv420p", {"prompt": "{}"})
    print(fmt, hashlib.md5(open(path, "rb").read()).hexdigest())
"""


def test_the_same_frames_give_the_same_file(tmp_path):
    """Run after run and process after process, byte for byte: x264's mbtree made pixels differ by up to 38/255,
    and the WebM muxer wrote a random segment UID and the date."""
    import subprocess
    import sys

    from conftest import REPO_ROOT

    script = tmp_path / "write.py"
    script.write_text(REPRODUCIBLE_SCRIPT)
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    os.symlink(REPO_ROOT, pkg / "comfyui_opensora")
    formats = ["mp4 (h264)", "mp4 (h265)", "webm (vp9)"]
    runs = [subprocess.run([sys.executable, str(script), str(tmp_path / f"run{i}"), *formats], check=True,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(pkg)}).stdout
            for i in range(3)]
    assert runs[0].count("\n") == 3 and runs[0] == runs[1] == runs[2], runs
