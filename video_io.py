"""Video files in and out with PyAV (and Pillow for GIF / animated WebP / PNG), no ffmpeg binary.

Writing. Every writer embeds the ComfyUI prompt and workflow the way ComfyUI's own savers do, so a saved
file dropped on ComfyUI restores its workflow:
  * MP4: container tags `prompt` / `workflow` with movflags use_metadata_tags (moov/udta/meta keys+ilst,
    where the frontend looks); `faststart` puts moov before the media so the frontend, which reads only the
    first 64 MiB, and a browser streaming the file both find it at once.
  * WebM: container tags (the muxer upper-cases them to PROMPT / WORKFLOW, which the frontend expects),
    written in the header.
  * animated WebP: EXIF 0x0110 "prompt:<json>", then 0x010F, 0x010E, ... "<key>:<json>" (SaveAnimatedWEBP).
  * PNG frames: tEXt chunks in every frame (SaveImage); the folder also records `fps`.
  * GIF: one comment extension holding a JSON object (the frontend does not read GIFs; read_metadata does).
Output goes to a temporary name in the same folder and is renamed at the end, so a failure or a cancel never
leaves a broken file under the final name.

4:2:0 pixel formats need even sizes: an odd width or height is padded by repeating the last column / row
(no picture is lost; the file is one pixel larger). yuv444p keeps any size. YUV video is converted and tagged
as BT.709 limited range, so players show the colours the frames had. 10-bit formats are fed 16-bit RGB, so
the extra precision is real, and 10-bit files decode to 16-bit RGB.

Reading decodes frame by frame and keeps only the selected frames: memory is bounded by the frames kept.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import numpy as np
import torch

# widget value -> (container, codec, extension, pixel formats the codec takes)
FORMATS = {
    "mp4 (h264)": ("mp4", "libx264", ".mp4", ("yuv420p", "yuv444p", "yuv420p10le")),
    "mp4 (h265)": ("mp4", "libx265", ".mp4", ("yuv420p", "yuv444p", "yuv420p10le")),
    "webm (vp9)": ("webm", "libvpx-vp9", ".webm", ("yuv420p", "yuv444p")),
    "gif": ("gif", None, ".gif", ()),
    "webp (animated)": ("webp", None, ".webp", ()),
    "png (frames)": ("png", None, "", ()),
}
PIXEL_FORMATS = ["yuv420p", "yuv444p", "yuv420p10le"]
MAX_CRF = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63}
VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif", ".webp", ".m4v"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp"}  # single images load as one-frame videos (references)
RESIZE_MODES = ["none", "crop to size", "stretch to size", "shorter side"]
DEFAULT_FPS = 24.0        # a PNG folder without an `fps` tag
DEFAULT_FRAME_MS = 100    # a GIF / WebP frame without a duration: what browsers assume

# BT.709, limited range: the tags players expect of HD video (ints as in libavutil/pixfmt.h)
BT709, LIMITED_RANGE = 1, 1


class VideoIOError(ValueError):
    pass


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def check_options(fmt: str, pixel_format: str, crf: int | None = None) -> str | None:
    """None, or why this format / pixel format / crf cannot be written."""
    if fmt not in FORMATS:
        return f"unknown format '{fmt}' (choose one of {', '.join(FORMATS)})"
    _, codec, _, allowed = FORMATS[fmt]
    if allowed and pixel_format not in allowed:
        return f"{fmt} cannot store pixel format {pixel_format} (it takes {', '.join(allowed)})"
    if codec and crf is not None and not 0 <= crf <= MAX_CRF[codec]:
        return f"crf {crf} is out of range for {fmt} (0-{MAX_CRF[codec]})"
    return None


def check_frames(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.shape[0] == 0:
        raise VideoIOError(f"expected frames [T,H,W,C] with T >= 1 and C 1, 3 or 4, got {tuple(images.shape)}")


def frames_as_ints(images: torch.Tensor, bits: int = 8) -> Iterator[np.ndarray]:
    """IMAGE [T,H,W,C] float 0..1 -> one RGB frame [H,W,3] at a time, uint8 (bits 8) or uint16 (bits 16).
    Frame by frame, so a long clip is never copied whole (it may sit on the GPU)."""
    top, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    for frame in images:
        rgb = frame[..., :3] if frame.shape[-1] != 1 else frame.expand(*frame.shape[:2], 3)
        yield (rgb.float().clamp(0, 1) * top).round().cpu().numpy().astype(dtype)


def pad_to_even(frame: np.ndarray) -> np.ndarray:
    """Repeat the last row / column so 4:2:0 chroma (one sample per 2x2 block) fits: nothing is cropped."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else frame


def as_tag(value) -> str:
    """A metadata value as ComfyUI stores it: JSON text."""
    return value if isinstance(value, str) else json.dumps(value)


def write_video(path: str, images: torch.Tensor, fps: float, fmt: str = "mp4 (h264)", crf: int = 19,
                pixel_format: str = "yuv420p", metadata: dict | None = None, quality: int = 90,
                lossless: bool = False, loop: int = 0, progress=None) -> list[str]:
    """Write frames to `path` (for png frames: a folder) atomically; returns the written file paths.

    `progress(i)` is called after each frame; it may raise (a cancel) and then nothing is left behind.
    """
    problem = check_options(fmt, pixel_format, crf)
    if problem:
        raise VideoIOError(problem)
    check_frames(images)
    if not fps > 0:
        raise VideoIOError(f"fps must be above 0, got {fps}")
    metadata = {k: as_tag(v) for k, v in (metadata or {}).items() if v is not None}
    container, codec, _, _ = FORMATS[fmt]
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.partial")
    try:
        if container in ("mp4", "webm"):
            _write_av(tmp, container, codec, images, fps, crf, pixel_format, metadata, progress)
        elif container == "gif":
            comment = json.dumps(metadata).encode() if metadata else None
            _write_pil(tmp, "GIF", images, gif_frame_ms(fps), loop, progress, comment=comment)
        elif container == "webp":
            _write_pil(tmp, "WEBP", images, round(1000 / fps), loop, progress, exif=_webp_exif(metadata),
                       quality=quality, lossless=lossless)
        else:
            _write_png_frames(tmp, images, {**metadata, "fps": repr(float(fps))}, progress)
        os.replace(tmp, path)
    except BaseException:  # a cancel (Interrupted, KeyboardInterrupt) too: never leave the partial output
        _remove(tmp)
        raise
    if container == "png":
        return [os.path.join(path, f) for f in png_files(path)]
    return [path]


def _remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def _write_av(tmp, container, codec, images, fps, crf, pixel_format, metadata, progress):
    import av

    # faststart: moov (with the metadata) before mdat, see the module docstring
    options = {"movflags": "use_metadata_tags+faststart"} if container == "mp4" else {}
    deep = pixel_format.endswith("10le")
    chroma_420 = pixel_format.startswith("yuv420")
    with av.open(tmp, "w", format=container, options=options) as out:
        for k, v in metadata.items():
            out.metadata[k] = v
        stream = out.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        h, w = images.shape[1:3]
        stream.width, stream.height = (w + w % 2, h + h % 2) if chroma_420 else (w, h)
        stream.pix_fmt = pixel_format
        cc = stream.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = BT709, BT709, BT709, LIMITED_RANGE
        stream.options = {"crf": str(crf)}
        if codec == "libvpx-vp9":
            stream.options.update({"b": "0", "row-mt": "1"})  # b=0: constant quality, crf alone decides
        if codec == "libx265":
            stream.options["x265-params"] = "log-level=error"
            cc.codec_tag = "hvc1"  # the H.265 tag Safari / QuickTime play (ffmpeg's default hev1 they refuse)
        for i, rgb in enumerate(frames_as_ints(images, 16 if deep else 8)):
            frame = av.VideoFrame.from_ndarray(pad_to_even(rgb) if chroma_420 else rgb,
                                               format="rgb48le" if deep else "rgb24")
            frame = frame.reformat(format=pixel_format, dst_colorspace=BT709, dst_color_range=LIMITED_RANGE)
            for packet in stream.encode(frame):
                out.mux(packet)
            if progress is not None:
                progress(i + 1)
        for packet in stream.encode():
            out.mux(packet)


def gif_frame_ms(fps: float) -> int:
    """GIF delays are whole 1/100 s and browsers slow anything under 2/100 s: 24 fps plays at 25, at most 50."""
    return 10 * max(2, round(100 / fps))


def _webp_exif(metadata: dict):
    from PIL import Image

    exif = Image.Exif()
    if "prompt" in metadata:
        exif[0x0110] = "prompt:" + metadata["prompt"]
    tag = 0x010F
    for k, v in metadata.items():  # ComfyUI counts down from 0x010F, one tag per extra_pnginfo entry
        if k != "prompt":
            exif[tag] = f"{k}:{v}"
            tag -= 1
    return exif


def _write_pil(tmp, pil_format, images, frame_ms, loop, progress, **extra):
    from PIL import Image

    pics = []
    for i, rgb in enumerate(frames_as_ints(images)):
        pics.append(Image.fromarray(rgb))
        if progress is not None:
            progress(i + 1)
    extra = {k: v for k, v in extra.items() if v is not None}
    pics[0].save(tmp, format=pil_format, save_all=True, append_images=pics[1:], duration=frame_ms, loop=loop,
                 **extra)


def _write_png_frames(tmp, images, metadata, progress):
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for k, v in metadata.items():
        info.add_text(k, v)
    os.makedirs(tmp)
    for i, rgb in enumerate(frames_as_ints(images)):
        Image.fromarray(rgb).save(os.path.join(tmp, f"frame_{i:05d}.png"), pnginfo=info, compress_level=4)
        if progress is not None:
            progress(i + 1)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
@dataclass
class LoadedVideo:
    frames: torch.Tensor   # [T,H,W,3] float 0..1
    fps: float             # rate of the returned frames
    source_frames: int     # frames of the source looked at (decoded or skipped)


def png_files(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(".png"))


def open_frames(path: str) -> tuple[float, Iterator[tuple[float, np.ndarray]]]:
    """(fps, iterator of (time in s, RGB frame [H,W,3] uint8, or uint16 for >8-bit video)), decoded lazily."""
    if os.path.isdir(path):
        files = png_files(path)
        if not files:
            raise VideoIOError(f"{path} is a folder without PNG frames")
        tagged = read_metadata(path).get("fps")
        fps = float(tagged) if isinstance(tagged, (int, float)) and tagged > 0 else DEFAULT_FPS
        return fps, ((i / fps, _pil_rgb(os.path.join(path, f))) for i, f in enumerate(files))
    ext = os.path.splitext(path)[1].lower()
    if ext in (".gif", ".webp") or ext in IMAGE_EXTENSIONS:
        return _open_pil(path)
    return _open_av(path)


def _pil_rgb(file: str) -> np.ndarray:
    from PIL import Image

    with Image.open(file) as img:
        return np.asarray(img.convert("RGB"))


def _open_pil(path):
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        img = Image.open(path)
        img.load()  # WebP reports the frame duration only once a frame is loaded
    except (UnidentifiedImageError, OSError) as e:
        raise VideoIOError(f"cannot read {path} as an image: {e}") from e
    fps = 1000.0 / (img.info.get("duration") or DEFAULT_FRAME_MS)

    def frames():
        t = 0.0
        with img:
            for frame in ImageSequence.Iterator(img):
                yield t, np.asarray(frame.convert("RGB"))
                t += (frame.info.get("duration") or DEFAULT_FRAME_MS) / 1000
    return fps, frames()


def _open_av(path):
    import av

    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise VideoIOError(f"cannot read {path} as a video: {e}") from e
    if not container.streams.video:
        container.close()
        raise VideoIOError(f"{path} has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    fps = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)

    def frames():
        start = None
        with container:
            try:
                for i, frame in enumerate(container.decode(stream)):
                    t = frame.time if frame.time is not None else i / fps
                    start = t if start is None else start
                    deep = frame.format.components[0].bits > 8
                    # src_color_range: full-range (JPEG) sources convert as such; ours are tagged limited
                    rgb = frame.to_ndarray(format="rgb48le" if deep else "rgb24", src_color_range=frame.color_range)
                    yield t - start, rgb
            except av.FFmpegError as e:
                raise VideoIOError(f"cannot decode {path}: {e}") from e
    return fps, frames()


def resample(timed_frames, source_fps: float, fps: float):
    """Frames at a constant `fps`: output frame k is the source frame on screen at time k / fps, so
    frames are dropped when the rate goes down and repeated when it goes up (variable-rate sources too)."""
    k, shown, eps = 0, None, 1e-6
    for t, frame in timed_frames:
        while shown is not None and k / fps < t - eps:
            yield shown
            k += 1
        shown, end = frame, t + 1 / source_fps
    while shown is not None and k / fps < end - eps:  # the last frame lasts one source frame
        yield shown
        k += 1


def resize_frame(frame: np.ndarray, mode: str, width: int, height: int) -> np.ndarray:
    """Frame [H,W,3] uint8/uint16 -> resized, same dtype. crop to size: scale to fill width x height and
    center-crop; stretch to size: exactly width x height; shorter side: scale so the shorter side is `height`."""
    import torch.nn.functional as F

    if mode == "none":
        return frame
    h, w = frame.shape[:2]
    if mode == "shorter side":
        s = height / min(h, w)
        size = (max(1, round(h * s)), max(1, round(w * s)))
    elif mode == "stretch to size":
        size = (height, width)
    elif mode == "crop to size":
        s = max(height / h, width / w)
        size = (max(height, round(h * s)), max(width, round(w * s)))
    else:
        raise VideoIOError(f"unknown resize mode '{mode}' (choose one of {', '.join(RESIZE_MODES)})")
    if size == (h, w):
        resized = torch.from_numpy(frame.astype(np.float32))
    else:
        x = torch.from_numpy(frame.astype(np.float32)).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        resized = x[0].permute(1, 2, 0)
    if mode == "crop to size":
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
        resized = resized[top:top + height, left:left + width]
    top_value = np.iinfo(frame.dtype).max
    return resized.round().clamp(0, top_value).numpy().astype(frame.dtype)


def check_load_options(frame_cap=0, skip_first=0, select_every_nth=1, resize="none", width=0, height=0,
                       force_fps=0.0) -> tuple[str, str] | None:
    """None, or (input name, what is wrong with it)."""
    for name, value, low in (("frame_cap", frame_cap, 0), ("skip_first", skip_first, 0),
                             ("select_every_nth", select_every_nth, 1), ("force_fps", force_fps, 0)):
        if value < low:
            return name, f"{value} is below {low}"
    if resize not in RESIZE_MODES:
        return "resize", f"unknown mode '{resize}' (choose one of {', '.join(RESIZE_MODES)})"
    if resize in ("crop to size", "stretch to size") and width < 1:
        return "width", f"resize '{resize}' needs a width above 0"
    if resize != "none" and height < 1:
        return "height", f"resize '{resize}' needs a height above 0"
    return None


def read_video(path: str, frame_cap: int = 0, skip_first: int = 0, select_every_nth: int = 1,
               resize: str = "none", width: int = 0, height: int = 0, force_fps: float = 0.0,
               progress=None) -> LoadedVideo:
    """Decode frames, keeping only the selected ones.

    Order: resample to `force_fps` (when > 0), then skip the first `skip_first`, keep one in
    `select_every_nth`, stop after `frame_cap` kept (0 = all; decoding stops there too).
    `progress(kept)` is called per kept frame (it may raise to cancel).
    """
    problem = check_load_options(frame_cap, skip_first, select_every_nth, resize, width, height, force_fps)
    if problem:
        raise VideoIOError(f"{problem[0]}: {problem[1]}")
    if not os.path.exists(path):
        raise VideoIOError(f"file not found: {path}")
    fps, timed = open_frames(path)
    seen = 0

    def counted():
        nonlocal seen
        for item in timed:
            seen += 1
            yield item
    frames = resample(counted(), fps, force_fps) if force_fps > 0 else (f for _, f in counted())
    kept = []
    for i, frame in enumerate(frames):
        if i < skip_first or (i - skip_first) % select_every_nth:
            continue
        kept.append(resize_frame(frame, resize, width, height))
        if progress is not None:
            progress(len(kept))
        if frame_cap and len(kept) >= frame_cap:
            break
    if hasattr(timed, "close"):
        timed.close()  # stopping early: release the decoder now
    if not kept:
        raise VideoIOError(f"no frames selected from {path} ({seen} frames; skip_first={skip_first})")
    if any(f.shape != kept[0].shape for f in kept):
        raise VideoIOError(f"the frame size changes inside {path}: set a resize mode to load it")
    # fill the float tensor frame by frame, dropping each integer frame: peak memory ~ output + one frame
    scale = 1.0 / np.iinfo(kept[0].dtype).max
    out = torch.empty((len(kept), *kept[0].shape), dtype=torch.float32)
    for i in range(len(kept)):
        out[i] = torch.from_numpy(kept[i].astype(np.float32)).mul_(scale)
        kept[i] = None
    out_fps = (force_fps if force_fps > 0 else fps) / select_every_nth
    return LoadedVideo(out, float(out_fps), seen)


def read_metadata(path: str) -> dict:
    """The prompt / workflow (and any other tags) embedded by write_video, JSON-decoded where possible."""
    def decode(v):
        try:
            return json.loads(v)
        except (TypeError, ValueError):
            return v

    if not os.path.exists(path):
        raise VideoIOError(f"file not found: {path}")
    if os.path.isdir(path):
        files = png_files(path)
        if not files:
            return {}
        path = os.path.join(path, files[0])
    ext = os.path.splitext(path)[1].lower()
    from PIL import Image

    if ext in (".png", ".gif", ".webp"):
        with Image.open(path) as img:
            if ext == ".png":
                return {k: decode(v) for k, v in img.text.items()}
            if ext == ".gif":
                comment = img.info.get("comment")
                return {k: decode(v) for k, v in json.loads(comment).items()} if comment else {}
            out = {}
            for tag, value in img.getexif().items():
                if tag in range(0x0100, 0x0111) and isinstance(value, str) and ":" in value:
                    k, v = value.split(":", 1)
                    out[k] = decode(v)
            return out
    import av

    try:
        with av.open(path) as c:
            return {k.lower(): decode(v) for k, v in c.metadata.items()}  # WebM keys come back upper-case
    except av.FFmpegError as e:
        raise VideoIOError(f"cannot read {path} as a video: {e}") from e
