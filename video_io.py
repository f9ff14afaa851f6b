"""Video files in and out with PyAV (and Pillow for GIF / animated WebP / PNG), no ffmpeg binary.

Writers embed the ComfyUI prompt and workflow the way ComfyUI's own savers do, so a saved file dropped on
ComfyUI restores its workflow: MP4 and WebM container tags `prompt` / `workflow` (MP4 with
movflags=use_metadata_tags), WebP EXIF entries 0x0110 "prompt:..." and 0x010F "workflow:...", PNG tEXt
chunks, GIF a JSON comment. Every writer writes to a temporary name and renames at the end, so a failure or
a cancel never leaves a broken file under the final name.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

# (container, codec, extension, pixel formats the codec takes)
FORMATS = {
    "mp4 (h264)": ("mp4", "libx264", ".mp4", ("yuv420p", "yuv444p", "yuv420p10le")),
    "mp4 (h265)": ("mp4", "libx265", ".mp4", ("yuv420p", "yuv444p", "yuv420p10le")),
    "webm (vp9)": ("webm", "libvpx-vp9", ".webm", ("yuv420p", "yuv444p")),
    "gif": ("gif", None, ".gif", ()),
    "webp (animated)": ("webp", None, ".webp", ()),
    "png (frames)": ("png", None, "", ()),
}
PIXEL_FORMATS = ["yuv420p", "yuv444p", "yuv420p10le"]
VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif", ".webp", ".m4v"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp"}  # single images load as one-frame videos (references)


class VideoIOError(ValueError):
    pass


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """IMAGE [T,H,W,C] float 0..1 -> uint8 [T,H,W,3]."""
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise VideoIOError(f"expected frames [T,H,W,C] with C 1, 3 or 4, got {tuple(images.shape)}")
    x = images[..., :3] if images.shape[-1] != 1 else images.expand(*images.shape[:3], 3)
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def _even(frame: np.ndarray) -> np.ndarray:
    """4:2:0 chroma needs even sizes: repeat the last row/column rather than crop a pixel of the picture."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else frame


def _json(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def check_options(fmt: str, pixel_format: str) -> str | None:
    """None, or why the combination cannot be written."""
    if fmt not in FORMATS:
        return f"unknown format '{fmt}' (choose one of {list(FORMATS)})"
    allowed = FORMATS[fmt][3]
    if allowed and pixel_format not in allowed:
        return f"{fmt} cannot store pixel format {pixel_format} (it takes {', '.join(allowed)})"
    return None


def _frames_with_progress(frames, progress):
    for i, f in enumerate(frames):
        yield f
        if progress is not None:
            progress(i + 1)


def write_video(path: str, images: torch.Tensor, fps: float, fmt: str = "mp4 (h264)", crf: int = 19,
                pixel_format: str = "yuv420p", metadata: dict | None = None, quality: int = 90,
                lossless: bool = False, loop: int = 0, progress=None) -> list[str]:
    """Write frames to `path` (for png frames: a folder) atomically; returns the written paths.

    `progress(i)` is called after each frame; it may raise (a cancel) and the partial output is removed.
    """
    problem = check_options(fmt, pixel_format)
    if problem:
        raise VideoIOError(problem)
    frames = to_uint8(images)
    metadata = {k: _json(v) for k, v in (metadata or {}).items() if v is not None}
    container, codec, _, _ = FORMATS[fmt]
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.partial")
    try:
        if container in ("mp4", "webm"):
            _write_av(tmp, container, codec, frames, fps, crf, pixel_format, metadata, progress)
        elif container == "gif":
            _write_pil(tmp, "GIF", frames, fps, loop, progress, comment=json.dumps(metadata).encode() if metadata
                       else None)
        elif container == "webp":
            _write_pil(tmp, "WEBP", frames, fps, loop, progress, exif=_webp_exif(metadata), quality=quality,
                       lossless=lossless)
        else:
            return _write_png_frames(path, tmp, frames, {**metadata, "fps": str(fps)}, progress)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return [path]


def _write_av(tmp, container, codec, frames, fps, crf, pixel_format, metadata, progress):
    options = {"movflags": "use_metadata_tags"} if container == "mp4" else {}
    rate = Fraction(round(fps * 1000), 1000)
    with av_open(tmp, "w", format=container, options=options) as out:
        for k, v in metadata.items():
            out.metadata[k] = v
        first = _even(frames[0])
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height = first.shape[1], first.shape[0]
        stream.pix_fmt = pixel_format
        stream.options = {"crf": str(crf)}
        if codec == "libvpx-vp9":
            stream.options["b"] = "0"  # constant-quality mode: crf alone decides
        if codec == "libx265":
            stream.options["x265-params"] = "log-level=error"
        for f in _frames_with_progress(frames, progress):
            for packet in stream.encode(av_frame(_even(f))):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def av_open(*args, **kwargs):
    import av

    return av.open(*args, **kwargs)


def av_frame(rgb: np.ndarray):
    import av

    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


def _webp_exif(metadata: dict):
    from PIL import Image

    exif = Image.Exif()
    if "prompt" in metadata:
        exif[0x0110] = "prompt:" + metadata["prompt"]
    tag = 0x010F
    for k, v in metadata.items():  # ComfyUI counts down from 0x010F for each extra_pnginfo entry
        if k != "prompt":
            exif[tag] = f"{k}:{v}"
            tag -= 1
    return exif


def _write_pil(tmp, pil_format, frames, fps, loop, progress, **extra):
    from PIL import Image

    pics = [Image.fromarray(f) for f in _frames_with_progress(frames, progress)]
    extra = {k: v for k, v in extra.items() if v is not None}
    pics[0].save(tmp, format=pil_format, save_all=True, append_images=pics[1:], duration=round(1000 / fps),
                 loop=loop, **extra)


def _write_png_frames(path, tmp, frames, metadata, progress):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in metadata.items():
        info.add_text(k, v)
    os.makedirs(tmp, exist_ok=True)
    try:
        for i, f in enumerate(_frames_with_progress(frames, progress)):
            Image.fromarray(f).save(os.path.join(tmp, f"frame_{i:05d}.png"), pnginfo=info, compress_level=4)
        os.replace(tmp, path)
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [os.path.join(path, f) for f in sorted(os.listdir(path))]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
@dataclass
class LoadedVideo:
    frames: torch.Tensor   # [T,H,W,3] float 0..1
    fps: float
    source_frames: int     # frames in the file (decoded or skipped)


def _resize(frame: torch.Tensor, mode: str, width: int, height: int) -> torch.Tensor:
    """frame [H,W,3] uint8 -> resized uint8; modes: none, crop to size, stretch to size, shorter side."""
    import torch.nn.functional as F

    if mode == "none":
        return frame
    h, w = frame.shape[:2]
    if mode == "shorter side":
        s = height / min(h, w)
        size = (max(1, round(h * s)), max(1, round(w * s)))
    elif mode == "stretch to size":
        size = (height, width)
    else:  # crop to size: scale to fill, then center-crop
        s = max(height / h, width / w)
        size = (max(height, round(h * s)), max(width, round(w * s)))
    x = frame.permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    if mode == "crop to size":
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
        x = x[:, top:top + height, left:left + width]
    return x.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)


def _iter_frames(path):
    """(fps, iterator of uint8 [H,W,3] frames), streaming: one decoded frame in memory at a time."""
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(".png"))
        if not files:
            raise VideoIOError(f"{path} is a folder without PNG frames")
        from PIL import Image

        meta = read_metadata(path)
        fps = float(meta.get("fps", 24.0)) if isinstance(meta.get("fps"), (int, float, str)) else 24.0
        return fps, (np.asarray(Image.open(os.path.join(path, f)).convert("RGB")) for f in files)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".gif", ".webp") or ext in IMAGE_EXTENSIONS:
        from PIL import Image, ImageSequence

        img = Image.open(path)
        img.load()  # WebP reports the frame duration only once a frame is loaded
        duration = img.info.get("duration") or 100
        return 1000.0 / duration, (np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(img))
    container = av_open(path)
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or 24

    def gen():
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        finally:
            container.close()
    return float(rate), gen()


def read_video(path: str, frame_cap: int = 0, skip_first: int = 0, select_every_nth: int = 1,
               resize: str = "none", width: int = 0, height: int = 0, force_fps: float = 0.0,
               progress=None) -> LoadedVideo:
    """Decode frames, keeping only the selected ones (memory bounded by the frames kept)."""
    if not os.path.exists(path):
        raise VideoIOError(f"file not found: {path}")
    if select_every_nth < 1:
        raise VideoIOError("select_every_nth must be at least 1")
    if resize != "none" and (height < 1 or (resize != "shorter side" and width < 1)):
        raise VideoIOError(f"resize '{resize}' needs a target size: set width and height above 0")
    fps, frames = _iter_frames(path)
    step = select_every_nth
    if force_fps and force_fps > 0:
        step = max(1, round(select_every_nth * fps / force_fps))
    kept, n = [], 0
    for i, f in enumerate(frames):
        n = i + 1
        if i < skip_first or (i - skip_first) % step:
            continue
        kept.append(_resize(torch.from_numpy(np.array(f, copy=True)), resize, width, height))
        if progress is not None:
            progress(len(kept))
        if frame_cap and len(kept) >= frame_cap:
            break
    if not kept:
        raise VideoIOError(f"no frames selected from {path} ({n} decoded; skip_first={skip_first})")
    out_fps = force_fps if force_fps and force_fps > 0 else fps / step
    return LoadedVideo(torch.stack(kept).float().div_(255), float(out_fps), n)


def read_metadata(path: str) -> dict:
    """The prompt / workflow (and any other tags) embedded by write_video, JSON-decoded where possible."""
    def decode(v):
        try:
            return json.loads(v)
        except (TypeError, ValueError):
            return v

    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.lower().endswith(".png"))
        path = os.path.join(path, files[0]) if files else path
    ext = os.path.splitext(path)[1].lower()
    from PIL import Image

    if ext == ".png":
        return {k: decode(v) for k, v in Image.open(path).text.items()}
    if ext == ".gif":
        comment = Image.open(path).info.get("comment")
        return {k: decode(v) for k, v in json.loads(comment.decode()).items()} if comment else {}
    if ext == ".webp":
        out = {}
        for tag, value in Image.open(path).getexif().items():
            if tag in range(0x0100, 0x0111) and isinstance(value, str) and ":" in value:
                k, v = value.split(":", 1)
                out[k] = decode(v)
        return out
    with av_open(path) as c:
        return {k.lower(): decode(v) for k, v in c.metadata.items()}
