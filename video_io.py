"""Video files in and out with PyAV (and Pillow for GIF / animated WebP / PNG), no ffmpeg binary.

Writing. Every writer embeds the ComfyUI prompt and workflow the way ComfyUI's own savers do, so a saved
file dropped on ComfyUI restores its workflow:
  * MP4: container tags `prompt` / `workflow` with movflags use_metadata_tags (moov/udta/meta keys+ilst,
    where the frontend looks); `faststart` puts moov before the media so the frontend, which reads only the
    first 64 MiB, and a browser streaming the file both find it at once.
  * WebM: container tags (the muxer upper-cases them to PROMPT / WORKFLOW, which the frontend expects),
    written in the header.
  * animated WebP: EXIF 0x0110 "prompt:<json>", then 0x010F, 0x010E, ... "<key>:<json>" (SaveAnimatedWEBP).
  * PNG frames: tEXt chunks in every frame (SaveImage).
  * GIF: one comment extension holding a JSON object (the frontend does not read GIFs; read_metadata does).
GIF, WebP and PNG frames also record `fps`. Output goes to a temporary name in the same folder and is
renamed at the end, so a failure or a cancel never leaves a broken file under the final name.

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
    """A file or option problem. `input_name` / `fix` name the node input at fault and the remedy, when known."""

    def __init__(self, message: str, input_name: str | None = None, fix: str | None = None):
        super().__init__(message)
        self.input_name, self.fix = input_name, fix


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def check_save_options(fmt: str, pixel_format: str, crf: int | None = None, size: tuple | None = None):
    """Raise VideoIOError (naming the save node's input) unless this format / pixel format / crf /
    frame size (height, width) can be written."""
    if fmt not in FORMATS:
        raise VideoIOError(f"unknown format '{fmt}'", "format", f"choose one of {', '.join(FORMATS)}")
    _, codec, _, allowed = FORMATS[fmt]
    if pixel_format not in PIXEL_FORMATS or (allowed and pixel_format not in allowed):
        raise VideoIOError(f"{fmt} cannot store pixel format '{pixel_format}'", "pixel_format",
                           f"choose {' or '.join(allowed or PIXEL_FORMATS)}, or another format")
    if codec and crf is not None and not 0 <= crf <= MAX_CRF[codec]:
        raise VideoIOError(f"{crf} is out of range for {fmt}", "crf", f"use 0-{MAX_CRF[codec]}")
    if codec == "libx265" and size is not None and (size[1] < 64 or size[0] < 16):
        # the x265 in PyAV's wheels corrupts its heap (and kills the process) on some narrower frames
        raise VideoIOError(f"{fmt} needs frames at least 64 wide and 16 high, got {size[1]}x{size[0]}",
                           "images", "use mp4 (h264) or webm (vp9), or upscale the frames")


def check_frames(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.shape[0] == 0:
        raise VideoIOError(f"expected frames [T,H,W,C] with T >= 1 and C 1, 3 or 4, got {tuple(images.shape)}",
                           "images", "connect an IMAGE output holding at least one frame")


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
    check_frames(images)
    check_save_options(fmt, pixel_format, crf, tuple(images.shape[1:3]))
    if not fps > 0:
        raise VideoIOError(f"{fps} is not above 0", "fps", "set a positive frame rate")
    metadata = {k: as_tag(v) for k, v in (metadata or {}).items() if v is not None}
    container, codec, _, _ = FORMATS[fmt]
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.partial")
    try:
        if container in ("mp4", "webm"):
            _write_av(tmp, container, codec, images, fps, crf, pixel_format, metadata, progress)
        elif container in ("gif", "webp"):
            # Pillow merges repeated frames into one longer frame: the tagged rate lets the reader undo it
            frame_ms = gif_frame_ms(fps) if container == "gif" else round(1000 / fps)
            metadata = {**metadata, "fps": repr(1000 / frame_ms)}
            if container == "gif":
                _write_pil(tmp, "GIF", images, frame_ms, loop, progress, comment=json.dumps(metadata).encode())
            else:
                _write_pil(tmp, "WEBP", images, frame_ms, loop, progress, exif=_webp_exif(metadata),
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
    # bitexact: no random segment UID / muxing date in the file, so the same frames give the same bytes
    options["fflags"] = "+bitexact"
    deep = pixel_format.endswith("10le")
    chroma_420 = pixel_format.startswith("yuv420")
    with av.open(tmp, "w", format=container, options=options) as out:
        for k, v in metadata.items():
            out.metadata[k] = v
        rate = Fraction(round(fps * 1000), 1000)
        stream = out.add_stream(codec, rate=rate)
        h, w = images.shape[1:3]
        stream.width, stream.height = (w + w % 2, h + h % 2) if chroma_420 else (w, h)
        stream.pix_fmt = pixel_format
        cc = stream.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = BT709, BT709, BT709, LIMITED_RANGE
        stream.options = {"crf": str(crf)}
        if codec == "libx264":
            # x264's macroblock-tree rate control made the same frames encode differently from run to run (pixels
            # up to 38/255 apart in the report, 28/255 at 424x240 here); without it the file is reproducible, at a
            # few percent more bits for the same quality
            stream.options["x264-params"] = "mbtree=0"
        if codec == "libvpx-vp9":
            stream.options.update({"b": "0", "row-mt": "1"})  # b=0: constant quality, crf alone decides
        if codec == "libx265":
            stream.options["x265-params"] = "log-level=error"
            cc.codec_tag = "hvc1"  # the H.265 tag Safari / QuickTime play (ffmpeg's default hev1 they refuse)
        for i, rgb in enumerate(frames_as_ints(images, 16 if deep else 8)):
            frame = av.VideoFrame.from_ndarray(pad_to_even(rgb) if chroma_420 else rgb,
                                               format="rgb48le" if deep else "rgb24")
            frame = frame.reformat(format=pixel_format, dst_colorspace=BT709, dst_color_range=LIMITED_RANGE)
            frame.pts, frame.time_base = i, 1 / rate
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
    source_frames: int     # frames looked at (after a force_fps resample), kept or skipped


def png_files(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(".png"))


def open_frames(path: str) -> tuple[float, Iterator[tuple[float, float | None, np.ndarray]]]:
    """(fps, iterator of (start s, duration s or None, RGB frame [H,W,3] uint8, or uint16 for >8-bit video)),
    decoded lazily."""
    if os.path.isdir(path):
        files = png_files(path)
        if not files:
            raise VideoIOError(f"{path} is a folder without PNG frames")
        fps = _tagged_fps(path) or DEFAULT_FPS
        return fps, ((i / fps, None, _pil_rgb(os.path.join(path, f))) for i, f in enumerate(files))
    ext = os.path.splitext(path)[1].lower()
    if ext in (".gif", ".webp") or ext in IMAGE_EXTENSIONS:
        fps, frames = _open_pil(path)
        tagged = _tagged_fps(path) if ext in (".gif", ".webp") else None
        if tagged:  # written by write_video: repeat the frames Pillow merged, back to the rate it was saved at
            return tagged, resample(frames, fps, tagged)
        return fps, frames
    return _open_av(path)


def _tagged_fps(path: str) -> float | None:
    fps = read_metadata(path).get("fps")
    return float(fps) if isinstance(fps, (int, float)) and fps > 0 else None


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
                rgb = np.asarray(frame.convert("RGB"))  # loads the frame, which sets a WebP's duration
                duration = (frame.info.get("duration") or DEFAULT_FRAME_MS) / 1000
                yield t, duration, rgb
                t += duration
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
                    yield t - start, None, rgb
            except av.FFmpegError as e:
                raise VideoIOError(f"cannot decode {path}: {e}") from e
    return fps, frames()


def resample(timed_frames, source_fps: float, fps: float):
    """Frames at a constant `fps`, as (start, duration, frame): output frame k is the source frame on screen at
    time k / fps, so frames are dropped when the rate goes down and repeated when it goes up (variable-rate
    sources too). A frame lasts until the next one starts; the last one its duration, else 1 / source_fps."""
    k, shown, eps = 0, None, 1e-6
    for start, duration, frame in timed_frames:
        while shown is not None and k / fps < start - eps:
            yield k / fps, 1 / fps, shown
            k += 1
        shown, end = frame, start + (duration or 1 / source_fps)
    while shown is not None and k / fps < end - eps:
        yield k / fps, 1 / fps, shown
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
    else:  # crop to size (check_load_options has checked the mode)
        s = max(height / h, width / w)
        size = (max(height, round(h * s)), max(width, round(w * s)))
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
                       force_fps=0.0):
    """Raise VideoIOError (naming the load node's input) unless the options make sense."""
    for name, value, low in (("frame_cap", frame_cap, 0), ("skip_first", skip_first, 0),
                             ("select_every_nth", select_every_nth, 1), ("force_fps", force_fps, 0)):
        if value < low:
            raise VideoIOError(f"{value} is below {low}", name, f"set it to {low} or more")
    if resize not in RESIZE_MODES:
        raise VideoIOError(f"unknown mode '{resize}'", "resize", f"choose one of {', '.join(RESIZE_MODES)}")
    if resize in ("crop to size", "stretch to size") and width < 1:
        raise VideoIOError(f"resize '{resize}' needs a target width", "width", "set width above 0")
    if resize != "none" and height < 1:
        raise VideoIOError(f"resize '{resize}' needs a target height", "height", "set height above 0")


def read_video(path: str, frame_cap: int = 0, skip_first: int = 0, select_every_nth: int = 1,
               resize: str = "none", width: int = 0, height: int = 0, force_fps: float = 0.0,
               progress=None) -> LoadedVideo:
    """Decode frames, keeping only the selected ones.

    Order: resample to `force_fps` (when > 0), then skip the first `skip_first`, keep one in
    `select_every_nth`, stop after `frame_cap` kept (0 = all; decoding stops there too).
    `progress(kept)` is called after every frame looked at, with the number kept (it may raise to cancel).
    """
    check_load_options(frame_cap, skip_first, select_every_nth, resize, width, height, force_fps)
    if not os.path.exists(path):
        raise VideoIOError(f"file not found: {path}")
    fps, timed = open_frames(path)
    frames = (f for _, _, f in (resample(timed, fps, force_fps) if force_fps > 0 else timed))
    kept, seen = [], 0
    try:
        for i, frame in enumerate(frames):
            seen = i + 1
            if i >= skip_first and (i - skip_first) % select_every_nth == 0:
                kept.append(resize_frame(frame, resize, width, height))
            if progress is not None:
                progress(len(kept))
            if frame_cap and len(kept) >= frame_cap:
                break
    finally:
        timed.close()  # stopped early, failed or cancelled: release the decoder / file now
    if seen == 0:
        raise VideoIOError(f"{path} holds no frames")
    if not kept:
        raise VideoIOError(f"{skip_first} skips all {seen} frames of {path}", "skip_first",
                           f"skip fewer than {seen} frames")
    if any(f.shape != kept[0].shape for f in kept):
        raise VideoIOError(f"the frame size changes inside {path}", "resize",
                           "choose 'crop to size' or 'stretch to size' to give every frame one size")
    # fill the float tensor frame by frame, dropping each integer frame: peak memory ~ output + one frame
    top = float(np.iinfo(kept[0].dtype).max)
    out = torch.empty((len(kept), *kept[0].shape), dtype=torch.float32)
    for i in range(len(kept)):
        out[i] = torch.from_numpy(kept[i].astype(np.float32)).div_(top)
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
            if ext == ".gif":  # ours: a JSON object of JSON texts; anything else comes back as `comment`
                comment = decode(img.info.get("comment", b"{}").decode("utf-8", "replace"))
                return {k: decode(v) for k, v in comment.items()} if isinstance(comment, dict) else {"comment": comment}
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
