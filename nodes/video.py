"""Video save / load nodes (the file work is in video_io, the folders and progress in comfy_adapter)."""
from __future__ import annotations

import os

from .. import comfy_adapter, video_io
from .common import CATEGORY, NodeInputError, check_floats

NO_FILE = "none"
_PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class OpenSoraSaveVideo:
    DESCRIPTION = ("Saves frames as MP4 (H.264/H.265), WebM (VP9), GIF, animated WebP or a folder of PNG frames "
                   "under the output folder, with the prompt and workflow embedded the way ComfyUI's own savers "
                   "do: drop the file on ComfyUI to get the workflow back. Written under a temporary name and "
                   "renamed at the end, so a failure or a cancel never leaves a broken file.")
    CATEGORY = f"{CATEGORY}/video"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("paths",)
    OUTPUT_TOOLTIPS = ("Where it was saved: the video file, or the folder of PNG frames.",)
    OUTPUT_NODE = True
    FUNCTION = "save"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "Frames [T, H, W, 3] in 0..1, e.g. from OpenSora VAE Decode."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 0.01, "max": 1000.0, "step": 0.01,
                                  "tooltip": "Frames per second. GIF stores delays in 1/100 s: its rate is "
                                             "rounded (24 plays at 25) and at most 50."}),
                "filename_prefix": ("STRING", {"default": "OpenSora/video",
                                               "tooltip": "Name under the output folder; may hold subfolders. "
                                                          "A counter is appended: <prefix>_00001_.mp4."}),
                "format": (list(video_io.FORMATS), {"default": "mp4 (h264)",
                                                    "tooltip": "Container and codec. mp4 (h264) plays everywhere; "
                                                               "png (frames) is lossless, one file per frame."}),
                "crf": ("INT", {"default": 19, "min": 0, "max": 63, "step": 1,
                                "tooltip": "Constant quality for mp4/webm: lower is better and bigger (h264/h265 "
                                           "0-51, vp9 0-63). Ignored by gif/webp/png."}),
                "pixel_format": (video_io.PIXEL_FORMATS, {
                    "default": "yuv420p",
                    "tooltip": "yuv420p plays everywhere (odd sizes gain one repeated edge pixel). yuv444p keeps "
                               "full colour and any size; yuv420p10le is 10-bit (h264/h265): both are better "
                               "quality, but most browsers cannot play them. Ignored by gif/webp/png."}),
            },
            "optional": {
                "quality": ("INT", {"default": 90, "min": 0, "max": 100, "step": 1,
                                    "tooltip": "Animated WebP quality when not lossless (higher is better)."}),
                "lossless": ("BOOLEAN", {"default": False, "tooltip": "Lossless animated WebP (exact pixels)."}),
                "loop_count": ("INT", {"default": 0, "min": 0, "max": 100, "step": 1,
                                       "tooltip": "GIF/WebP: how many times to play; 0 loops forever."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, format=None, pixel_format=None, fps=None, filename_prefix=None):
        """Refuse an impossible format / pixel format pair before the workflow runs, not after sampling.
        (Naming them here makes ComfyUI skip its own list check for both: check_save_options does it. crf keeps
        ComfyUI's 0-63 check; its 51 limit for mp4 is checked when saving. A linked input arrives as None.)"""
        floats = check_floats("OpenSoraSaveVideo", cls, fps=fps)
        if floats is not True:
            return floats
        problem = None if filename_prefix is None else comfy_adapter.check_save_folder(filename_prefix)
        if problem:  # found now, not after sampling and decoding
            return str(NodeInputError("OpenSoraSaveVideo", "filename_prefix", *problem))
        if format is None or pixel_format is None:
            return True
        try:
            video_io.check_save_options(format, pixel_format)
        except video_io.VideoIOError as e:
            return str(NodeInputError("OpenSoraSaveVideo", e.input_name, str(e), e.fix))
        return True

    def save(self, images, fps, filename_prefix, format, crf, pixel_format, quality=90, lossless=False,
             loop_count=0, prompt=None, extra_pnginfo=None):
        node = "OpenSoraSaveVideo"
        try:
            video_io.check_frames(images)
            video_io.check_save_options(format, pixel_format, crf, tuple(images.shape[1:3]))
        except video_io.VideoIOError as e:
            raise NodeInputError(node, e.input_name, str(e), e.fix) from e
        problem = comfy_adapter.check_save_folder(filename_prefix)
        if problem:
            raise NodeInputError(node, "filename_prefix", *problem)
        try:
            folder, name, counter, subfolder = comfy_adapter.get_save_path(filename_prefix)
        except ValueError as e:
            raise NodeInputError(node, "filename_prefix", str(e), "use a name inside the output folder") from e
        except OSError as e:
            raise NodeInputError(node, "filename_prefix", f"cannot make the folder {e.filename} ({e.strerror})",
                                 "choose another output folder or filename_prefix") from e
        ext = video_io.FORMATS[format][2]
        filename = f"{name}_{counter:05}_{ext}"
        path = os.path.join(folder, filename)
        metadata = {"prompt": prompt, **(extra_pnginfo or {})}  # as SaveImage: prompt, then workflow & co.
        bar = comfy_adapter.Progress(images.shape[0], desc="saving")
        try:
            files = video_io.write_video(path, images, fps, format, crf, pixel_format, metadata, quality=quality,
                                         lossless=lossless, loop=loop_count, progress=bar.update_absolute)
        except video_io.VideoIOError as e:
            raise NodeInputError(node, e.input_name or "images", str(e), e.fix or "check the inputs") from e
        except OSError as e:
            raise NodeInputError(node, "filename_prefix", f"cannot write {path} ({e.strerror})",
                                 "check the output folder's space and permissions") from e
        finally:
            bar.close()
        subfolder = subfolder.replace(os.sep, "/")
        if format == "png (frames)":
            frames_dir = f"{subfolder}/{filename}" if subfolder else filename
            ui = {"images": [{"filename": os.path.basename(f), "subfolder": frames_dir, "type": "output"}
                             for f in files]}
        else:
            ui = {"images": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}
            # `animated` makes the frontend show a <video>, except for .webp/.png names (animated images);
            # a GIF needs an <img>, so it goes without the flag, like a still image.
            if format != "gif":
                ui["animated"] = [True]
        return {"ui": ui, "result": (path,)}


def _input_videos() -> list[str]:
    """The input folder's videos and images, plus the pack's example inputs (which the shipped workflows name)."""
    root = comfy_adapter.input_directory()
    found = set(comfy_adapter.EXAMPLE_INPUTS)
    if os.path.isdir(root):
        found |= {f for f in os.listdir(root)
                  if os.path.splitext(f)[1].lower() in video_io.VIDEO_EXTENSIONS | video_io.IMAGE_EXTENSIONS
                  and os.path.isfile(os.path.join(root, f))}
    return sorted(found)


def _source(video, path) -> tuple[str, str]:
    """(input name, file): `path` when set, else the `video` file of the input folder."""
    if path and path.strip():
        path = os.path.expanduser(path.strip())
        # A relative path is tried from the working directory, then from the pack folder, where the demo
        # workflows' example inputs live (demo/examples/...), so they run from ComfyUI as from the CLI.
        in_pack = os.path.join(_PACK_ROOT, path)
        if not os.path.isabs(path) and not os.path.exists(path) and os.path.exists(in_pack):
            return "path", in_pack
        return "path", os.path.abspath(path)
    target = os.path.join(comfy_adapter.input_directory(), video or "")
    example = comfy_adapter.example_input(video)
    return "video", example if example and not os.path.exists(target) else target


def _check_source(video, path) -> tuple[str, str]:
    name, target = _source(video, path)
    if name == "video" and video == NO_FILE:
        raise NodeInputError("OpenSoraLoadVideo", "video", "no file chosen",
                             "pick a video (or upload one), or set 'path'")
    if not os.path.exists(target):
        raise NodeInputError("OpenSoraLoadVideo", name, f"file not found: {target}",
                             "put the file in ComfyUI's input folder and pick it, or give an existing 'path'"
                             if name == "video" else "give the path of an existing video file or PNG-frame folder")
    return name, target


class OpenSoraLoadVideo:
    DESCRIPTION = ("Loads a video (mp4, webm, mkv, mov, gif, webp, or a folder of PNG frames such as OpenSora Save "
                   "Video writes) or a single image (png, jpg: one frame, e.g. an image-to-video reference) as "
                   "IMAGE frames. Decodes as it goes, so memory holds only the frames kept.")
    CATEGORY = f"{CATEGORY}/video"
    RETURN_TYPES = ("IMAGE", "FLOAT", "INT")
    RETURN_NAMES = ("images", "fps", "frame_count")
    OUTPUT_TOOLTIPS = ("Frames [T, H, W, 3] in 0..1.",
                       "Frame rate of the returned frames (the file's, or force_fps, divided by select_every_nth).",
                       "Number of frames returned.")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "video": ([NO_FILE] + _input_videos(), {"video_upload": True,
                                                        "tooltip": "A video in ComfyUI's input folder (upload "
                                                                   "one here). Ignored when 'path' is set."}),
                "frame_cap": ("INT", {"default": 0, "min": 0, "max": 100000, "step": 1,
                                      "tooltip": "Most frames returned; 0 = all. Decoding stops there."}),
                "skip_first": ("INT", {"default": 0, "min": 0, "max": 100000, "step": 1,
                                       "tooltip": "Frames skipped at the start (counted after force_fps)."}),
                "select_every_nth": ("INT", {"default": 1, "min": 1, "max": 1000, "step": 1,
                                             "tooltip": "Keep one frame in n (stride); the fps output is "
                                                        "divided by n."}),
                "resize": (video_io.RESIZE_MODES, {
                    "default": "none",
                    "tooltip": "crop to size: fill width x height and cut the overflow from the centre; stretch "
                               "to size: exactly width x height; shorter side: scale so the shorter side is "
                               "'height' (aspect kept)."}),
                "width": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                  "tooltip": "Target width for 'crop to size' / 'stretch to size'."}),
                "height": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8,
                                   "tooltip": "Target height, or the shorter side for 'shorter side'."}),
            },
            "optional": {
                "path": ("STRING", {"default": "",
                                    "tooltip": "A video file or PNG-frame folder anywhere (absolute, or relative "
                                               "to the working directory); overrides 'video' when set."}),
                "force_fps": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 240.0, "step": 0.01,
                                        "tooltip": "Resample to this frame rate by dropping or repeating frames "
                                                   "by their timestamps; 0 keeps the file's frames."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, video=None, path="", force_fps=None):
        floats = check_floats("OpenSoraLoadVideo", cls, force_fps=force_fps)
        if floats is not True or video is None or path is None:  # a linked input: known only when the workflow runs
            return floats
        try:
            _check_source(video, path)
        except NodeInputError as e:
            return str(e)
        return True

    @classmethod
    def IS_CHANGED(cls, video=None, path="", **_):
        """Re-run when the file changes (mtime, size); a linked path is followed by its upstream node."""
        if video is None or path is None:
            return ""
        _, target = _source(video, path)
        try:
            st = os.stat(target)
        except OSError:
            return float("nan")
        return f"{target}:{st.st_mtime_ns}:{st.st_size}"

    def load(self, video, frame_cap, skip_first, select_every_nth, resize, width, height, path="", force_fps=0.0):
        node = "OpenSoraLoadVideo"
        try:
            video_io.check_load_options(frame_cap, skip_first, select_every_nth, resize, width, height, force_fps)
        except video_io.VideoIOError as e:
            raise NodeInputError(node, e.input_name, str(e), e.fix) from e
        source, target = _check_source(video, path)
        try:
            loaded = video_io.read_video(target, frame_cap, skip_first, select_every_nth, resize, width, height,
                                         force_fps, progress=lambda kept: comfy_adapter.check_interrupt())
        except video_io.VideoIOError as e:
            raise NodeInputError(node, e.input_name or source, str(e),
                                 e.fix or "choose a video file ffmpeg can read, or a folder of PNG frames") from e
        return (loaded.frames, loaded.fps, int(loaded.frames.shape[0]))


NODE_CLASS_MAPPINGS = {"OpenSoraSaveVideo": OpenSoraSaveVideo, "OpenSoraLoadVideo": OpenSoraLoadVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"OpenSoraSaveVideo": "OpenSora Save Video", "OpenSoraLoadVideo": "OpenSora Load Video"}
