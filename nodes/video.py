"""Video save / load nodes."""
from __future__ import annotations

import os

from .. import comfy_adapter, video_io
from .common import CATEGORY, NodeInputError

NO_FILE = "none"


class OpenSoraSaveVideo:
    DESCRIPTION = ("Saves frames as MP4 (H.264/H.265), WebM (VP9), GIF, animated WebP or PNG frames under the "
                   "output folder, with the prompt and workflow embedded the way ComfyUI's own savers do (drop "
                   "the file on ComfyUI to get the workflow back). Written to a temporary name first, so a "
                   "failure or a cancel never leaves a broken file.")
    CATEGORY = f"{CATEGORY}/video"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("paths",)
    OUTPUT_TOOLTIPS = ("The saved file path(s), one per line.",)
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames [T, H, W, 3] in 0..1, e.g. from OpenSora VAE Decode."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 0.01, "max": 1000.0, "step": 0.01,
                                  "tooltip": "Frames per second of the file."}),
                "filename_prefix": ("STRING", {"default": "OpenSora/video",
                                               "tooltip": "Name under the output folder; may include subfolders. "
                                                          "A counter is appended (_00001_)."}),
                "format": (list(video_io.FORMATS), {"default": "mp4 (h264)", "tooltip": "Container and codec."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 63,
                                "tooltip": "Constant quality for mp4/webm: lower is better and bigger (h264/h265 "
                                           "take 0-51, vp9 0-63)."}),
                "pixel_format": (video_io.PIXEL_FORMATS, {
                    "default": "yuv420p",
                    "tooltip": "yuv420p plays everywhere; yuv444p keeps full colour; yuv420p10le is 10-bit "
                               "(h264/h265). Odd sizes are padded by one edge pixel for 4:2:0. Ignored by "
                               "gif/webp/png."}),
            },
            "optional": {
                "quality": ("INT", {"default": 90, "min": 0, "max": 100, "tooltip": "WebP quality (lossy)."}),
                "lossless": ("BOOLEAN", {"default": False, "tooltip": "Lossless WebP."}),
                "loop_count": ("INT", {"default": 0, "min": 0, "max": 100,
                                       "tooltip": "GIF/WebP repetitions; 0 loops forever."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    def save(self, images, fps, filename_prefix, format, crf, pixel_format, quality=90, lossless=False,
             loop_count=0, prompt=None, extra_pnginfo=None):
        node = "OpenSoraSaveVideo"
        problem = video_io.check_options(format, pixel_format)
        if problem:
            raise NodeInputError(node, "pixel_format", problem, "pick a pixel format the format supports")
        if format.startswith("mp4") and crf > 51:
            raise NodeInputError(node, "crf", f"{crf} is above 51, the most h264/h265 take", "use 0-51")
        if images.shape[0] == 0:
            raise NodeInputError(node, "images", "no frames", "connect a node that outputs at least one frame")
        try:
            folder, name, counter, subfolder = comfy_adapter.get_save_path(filename_prefix)
        except ValueError as e:
            raise NodeInputError(node, "filename_prefix", str(e), "use a name inside the output folder") from e
        ext = video_io.FORMATS[format][2]
        filename = f"{name}_{counter:05}_{ext}"
        metadata = {}
        if prompt is not None:
            metadata["prompt"] = prompt
        for key, value in (extra_pnginfo or {}).items():
            metadata[key] = value
        bar = comfy_adapter.Progress(images.shape[0], desc="saving")
        paths = video_io.write_video(os.path.join(folder, filename), images, fps, format, crf, pixel_format,
                                     metadata, quality=quality, lossless=lossless, loop=loop_count,
                                     progress=bar.update_absolute)
        if format == "png (frames)":
            sub = os.path.join(subfolder, filename).replace(os.sep, "/")
            previews = [{"filename": os.path.basename(p), "subfolder": sub, "type": "output"} for p in paths]
            ui = {"images": previews}
        else:
            ui = {"images": [{"filename": filename, "subfolder": subfolder.replace(os.sep, "/"), "type": "output"}],
                  "animated": [True]}
        return {"ui": ui, "result": ("\n".join(paths),)}


def _input_videos() -> list[str]:
    root = comfy_adapter.input_directory()
    if not os.path.isdir(root):
        return []
    return sorted(f for f in os.listdir(root)
                  if os.path.splitext(f)[1].lower() in video_io.VIDEO_EXTENSIONS | video_io.IMAGE_EXTENSIONS
                  and os.path.isfile(os.path.join(root, f)))


def _resolve(video: str, path: str) -> str:
    if path and path.strip():
        return os.path.abspath(os.path.expanduser(path.strip()))
    return os.path.join(comfy_adapter.input_directory(), video)


class OpenSoraLoadVideo:
    DESCRIPTION = ("Loads a video (mp4, webm, mkv, mov, gif, webp, or a folder of PNG frames) or a single image "
                   "(png, jpg: one frame, e.g. an image-to-video reference) as IMAGE frames, "
                   "decoding as it goes so memory holds only the frames kept.")
    CATEGORY = f"{CATEGORY}/video"
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("Frames [T, H, W, 3] in 0..1.", "Frame rate of the returned frames.",
                       "Number of frames returned.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": ([NO_FILE] + _input_videos(), {"video_upload": True,
                                                        "tooltip": "A video in ComfyUI's input folder."}),
                "frame_cap": ("INT", {"default": 0, "min": 0, "max": 100000,
                                      "tooltip": "Most frames returned; 0 = all."}),
                "skip_first": ("INT", {"default": 0, "min": 0, "max": 100000,
                                       "tooltip": "Frames skipped at the start."}),
                "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 1000,
                                             "tooltip": "Keep one frame in n (stride)."}),
                "resize": (["none", "crop to size", "stretch to size", "shorter side"], {
                    "default": "none",
                    "tooltip": "crop to size: fill width x height and center-crop; stretch to size: exact "
                               "size; shorter side: scale so the shorter side is `height`."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                  "tooltip": "Target width for the crop/stretch resize."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                   "tooltip": "Target height (or shorter side) for the resize."}),
            },
            "optional": {
                "path": ("STRING", {"default": "",
                                    "tooltip": "A file or PNG-frame folder anywhere; overrides `video` when set."}),
                "force_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.01,
                                        "tooltip": "Resample to this frame rate by dropping frames; 0 = keep."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, video, path=""):
        target = _resolve(video, path)
        if (not path or not path.strip()) and video == NO_FILE:
            return "OpenSoraLoadVideo: input 'video': no file chosen. Fix: pick a video or set 'path'"
        if not os.path.exists(target):
            return f"OpenSoraLoadVideo: input 'video': file not found: {target}. Fix: put it in the input folder " \
                   f"or give an existing 'path'"
        return True

    @classmethod
    def IS_CHANGED(cls, video, path="", **_):
        target = _resolve(video, path)
        try:
            st = os.stat(target)
            return f"{target}:{st.st_mtime_ns}:{st.st_size}"
        except OSError:
            return float("nan")

    def load(self, video, frame_cap, skip_first, select_every_nth, resize, width, height, path="", force_fps=0.0):
        target = _resolve(video, path)
        try:
            loaded = video_io.read_video(target, frame_cap, skip_first, select_every_nth, resize, width, height,
                                         force_fps)
        except video_io.VideoIOError as e:
            raise NodeInputError("OpenSoraLoadVideo", "path" if path else "video", str(e),
                                 "check the file and the frame options") from e
        return (loaded.frames, loaded.fps, int(loaded.frames.shape[0]))


NODE_CLASS_MAPPINGS = {"OpenSoraSaveVideo": OpenSoraSaveVideo, "OpenSoraLoadVideo": OpenSoraLoadVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"OpenSoraSaveVideo": "OpenSora Save Video", "OpenSoraLoadVideo": "OpenSora Load Video"}
