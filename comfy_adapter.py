"""The one module that talks to ComfyUI.

Inside ComfyUI every helper here forwards to ComfyUI's own (folder_paths, comfy.utils.ProgressBar,
comfy.model_management). Outside it (the headless harness, tests) the same calls fall back to plain
code: a models root from `--models-dir` / $OPENSORA_MODELS_DIR, tqdm progress bars, a cancel flag.
Nothing else in the pack imports ComfyUI.
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
from datetime import datetime

import torch

try:  # ComfyUI puts its root on sys.path before it imports custom nodes.
    import folder_paths  # type: ignore
    import comfy.model_management as _mm  # type: ignore
    import comfy.utils as _comfy_utils  # type: ignore

    IN_COMFY = True
except ImportError:
    folder_paths = _mm = _comfy_utils = None
    IN_COMFY = False

# The pack's own folder under models/ for diffusers-style model directories (HF folders).
PACK_FOLDER = "opensora"
# ComfyUI's standard folders plus the pack folder; values are the file extensions listed for each.
MODEL_EXTENSIONS = {".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".sft"}
MODEL_FOLDERS = {
    "diffusion_models": ["diffusion_models", "unet"],
    "vae": ["vae"],
    "text_encoders": ["text_encoders", "clip"],
    PACK_FOLDER: [PACK_FOLDER],
}

# The bundled demo model (demo/train.py) ships in the pack, laid out like a models folder; its files are
# listed next to the user's in every loader, so it needs no special code path.
DEMO_MODELS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_models")
DEMO_FOLDERS = ("diffusion_models", "vae", "text_encoders")
# Example inputs the shipped workflows name in OpenSora Load Video, so a workflow opened from the template
# browser runs as shipped: input-folder name -> the file in the pack. Inside ComfyUI they are copied into the
# input folder (the upload widget previews files from there); headless they are read from the pack.
EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo", "examples")
EXAMPLE_INPUTS = {"opensora_example_image.png": "blue_square.png",
                  "opensora_example_last_frame.png": "yellow_triangle.png",
                  "opensora_example_clip.mp4": "red_circle.mp4"}

_settings = {"models_dir": None, "output_dir": None, "input_dir": None, "temp_dir": None, "device": None}


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------
def configure(models_dir=None, output_dir=None, input_dir=None, device=None):
    """Headless settings (the CLI's --models-dir / --output-dir / --device). Ignored inside ComfyUI."""
    if models_dir is not None:
        _settings["models_dir"] = os.path.abspath(models_dir)
    if output_dir is not None:
        _settings["output_dir"] = os.path.abspath(output_dir)
    if input_dir is not None:
        _settings["input_dir"] = os.path.abspath(input_dir)
    if device is not None:
        _settings["device"] = device


def models_dir() -> str:
    if IN_COMFY:
        return folder_paths.models_dir
    return _settings["models_dir"] or os.environ.get("OPENSORA_MODELS_DIR") or os.path.abspath("models")


def output_directory() -> str:
    if IN_COMFY:
        return folder_paths.get_output_directory()
    return _settings["output_dir"] or os.environ.get("OPENSORA_OUTPUT_DIR") or os.path.abspath("output")


def input_directory() -> str:
    if IN_COMFY:
        return folder_paths.get_input_directory()
    return _settings["input_dir"] or os.environ.get("OPENSORA_INPUT_DIR") or os.path.abspath("input")


def temp_directory() -> str:
    if IN_COMFY:
        return folder_paths.get_temp_directory()
    return _settings["temp_dir"] or os.path.join(output_directory(), "..", "temp")


def register_model_folders():
    """Inside ComfyUI: make the pack folder known next to ComfyUI's standard ones."""
    if not IN_COMFY:
        return
    path = os.path.join(folder_paths.models_dir, PACK_FOLDER)
    folder_paths.add_model_folder_path(PACK_FOLDER, path, is_default=True)
    for kind in DEMO_FOLDERS:
        if kind in folder_paths.folder_names_and_paths:
            folder_paths.add_model_folder_path(kind, os.path.join(DEMO_MODELS_DIR, kind))
    # Directories (HF folders) are listed by list_models(), so no extension filter is needed here.
    install_example_inputs()


def install_example_inputs():
    """Copy the example inputs into ComfyUI's input folder, leaving any file of that name alone. A read-only or
    missing input folder only costs the examples: the pack still loads."""
    import shutil

    folder = input_directory()
    for name, source in EXAMPLE_INPUTS.items():
        target = os.path.join(folder, name)
        if os.path.exists(target):
            continue
        try:
            os.makedirs(folder, exist_ok=True)
            shutil.copyfile(os.path.join(EXAMPLES_DIR, source), target + ".part")
            os.replace(target + ".part", target)
        except OSError as e:
            print(f"[ComfyUI-OpenSora] could not copy the example input {name} into {folder}: {e}")


def example_input(name: str) -> str | None:
    """The pack's copy of an example input, for a run whose input folder does not hold it."""
    return os.path.join(EXAMPLES_DIR, EXAMPLE_INPUTS[name]) if name in EXAMPLE_INPUTS else None


def _folder_roots(kind: str) -> list[str]:
    if IN_COMFY and kind in getattr(folder_paths, "folder_names_and_paths", {}):
        return list(folder_paths.get_folder_paths(kind))
    roots = [os.path.join(models_dir(), sub) for sub in MODEL_FOLDERS[kind]]
    return roots + ([os.path.join(DEMO_MODELS_DIR, kind)] if kind in DEMO_FOLDERS else [])


MODEL_DIR_MARKERS = {"config.json", "model_index.json"}
TOKENIZER_DIR_MARKERS = {"tokenizer.json", "spiece.model", "tokenizer_config.json"}


def list_models(kind: str, dirs: bool = False, markers=MODEL_DIR_MARKERS) -> list[str]:
    """Files (or, with dirs=True, directories holding one of `markers`: HF model or tokenizer folders)
    under every root of a model folder, as relative paths with '/' separators."""
    found = set()
    for root in _folder_roots(kind):
        if not os.path.isdir(root):
            continue
        for cur, subdirs, files in os.walk(root, followlinks=True):
            rel = os.path.relpath(cur, root)
            if dirs and rel != "." and (set(markers) & set(files)):
                found.add(rel.replace(os.sep, "/"))
            if not dirs:
                for f in files:
                    if os.path.splitext(f)[1].lower() in MODEL_EXTENSIONS:
                        found.add(os.path.normpath(os.path.join(rel, f)).replace(os.sep, "/"))
    return sorted(found)


def model_path(kind: str, name: str) -> str | None:
    """Absolute path of `name` inside a model folder, or None when it is not there."""
    for root in _folder_roots(kind):
        p = os.path.join(root, name)
        if os.path.exists(p):
            return p
    return None


def check_save_folder(filename_prefix: str, output_dir: str | None = None):
    """(problem, fix) when an output with this prefix could not be written, else None; creates nothing, so a prompt
    can be refused at validation, before any model runs."""
    output_dir = os.path.abspath(output_dir or output_directory())
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        return (f"the output folder {output_dir} is a file", "give the output folder (--output-dir) a folder's path")
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    folder = os.path.abspath(os.path.join(output_dir, subfolder))
    if os.path.isabs(subfolder) or os.path.commonpath((output_dir, folder)) != output_dir:
        return (f"'{filename_prefix}' points outside the output folder {output_dir}",
                "use a name, or a subfolder/name, inside the output folder")
    existing = folder
    while not os.path.exists(existing):  # the folders to be made are made in the nearest one that exists
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return (f"{existing} is a file, so {folder} cannot be made", "choose another filename_prefix subfolder")
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"the folder {existing} is not writable", "make it writable, or choose another output folder "
                "(--output-dir headless)")
    return None


def get_save_path(filename_prefix: str, output_dir: str | None = None):
    """(folder, filename, counter, subfolder) for a new output, as ComfyUI's get_save_image_path:
    the prefix may hold a subfolder, the counter is one more than the highest `<name>_NNNNN_` present."""
    output_dir = output_dir or output_directory()
    if IN_COMFY:
        folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
        return folder, filename, counter, subfolder
    now = datetime.now()
    for key, val in {"%year%": now.year, "%month%": f"{now.month:02d}", "%day%": f"{now.day:02d}",
                     "%hour%": f"{now.hour:02d}", "%minute%": f"{now.minute:02d}",
                     "%second%": f"{now.second:02d}"}.items():
        filename_prefix = filename_prefix.replace(key, str(val))
    subfolder, filename = os.path.split(os.path.normpath(filename_prefix))
    folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((os.path.abspath(output_dir), os.path.abspath(folder))) != os.path.abspath(output_dir):
        raise ValueError(f"filename_prefix '{filename_prefix}' points outside the output folder {output_dir}")
    os.makedirs(folder, exist_ok=True)
    pattern = re.compile(re.escape(filename) + r"_(\d+)_")
    counters = [int(m.group(1)) for f in os.listdir(folder) if (m := pattern.match(f))]
    return folder, filename, max(counters, default=0) + 1, subfolder


# --------------------------------------------------------------------------------------------
# Progress and cancel
# --------------------------------------------------------------------------------------------
class Interrupted(Exception):
    """The user cancelled (Ctrl-C headless, the Cancel button in ComfyUI)."""


_cancel = threading.Event()
_progress_hook = None  # headless: fn(node_id, value, total) installed by the harness


def request_cancel():
    _cancel.set()


def clear_cancel():
    _cancel.clear()


def check_interrupt():
    """Raise if the user cancelled. Call it between steps; it is cheap."""
    if IN_COMFY:
        _mm.throw_exception_if_processing_interrupted()
    elif _cancel.is_set():
        raise Interrupted("cancelled by the user")


@contextlib.contextmanager
def interruptible(module: torch.nn.Module):
    """Cancel checks before every convolution of `module`: a VAE decode stops within one layer, not at the end of a
    chunk that takes seconds (their cost is a flag test per layer call)."""
    handles = [m.register_forward_pre_hook(lambda *_: check_interrupt()) for m in module.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def set_progress_hook(fn):
    global _progress_hook
    _progress_hook = fn


_previews_forced = None  # tests: True / False overrides ComfyUI's --preview-method


def previews_enabled() -> bool:
    """Whether samplers should send latent previews: ComfyUI's --preview-method is not 'none'. Headless runs
    have nobody to show them to."""
    if _previews_forced is not None:
        return _previews_forced
    if not IN_COMFY:
        return False
    try:
        from comfy.cli_args import args  # type: ignore

        return str(getattr(args.preview_method, "value", args.preview_method)) != "none"
    except Exception:  # noqa: BLE001 - an older / newer ComfyUI without the option: preview
        return True


def force_previews(enabled: bool | None):
    global _previews_forced
    _previews_forced = enabled


def preview_size() -> int:
    try:
        from comfy.cli_args import args  # type: ignore

        return int(getattr(args, "preview_size", 512))
    except Exception:  # noqa: BLE001
        return 512


class Progress:
    """ComfyUI's ProgressBar inside ComfyUI; a tqdm bar (plus the harness hook) outside it.
    Every update also checks for cancellation, as ComfyUI's progress hook does."""

    def __init__(self, total: int, desc: str = "", node_id=None):
        self.total, self.value, self.node_id = int(total), 0, node_id
        self._bar = None
        if IN_COMFY:
            self._comfy = _comfy_utils.ProgressBar(self.total)
        else:
            self._comfy = None
            if _progress_hook is None:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, desc=desc, leave=False)

    def update(self, n: int = 1, preview=None):
        self.update_absolute(self.value + n, preview=preview)

    def update_absolute(self, value: int, preview=None):
        """preview: a PIL image (models/preview.py), shown on the node in ComfyUI."""
        delta, self.value = value - self.value, value
        if self._comfy is not None:
            self._comfy.update_absolute(value, self.total, None if preview is None else ("JPEG", preview,
                                                                                        preview_size()))
        else:
            if self._bar is not None:
                self._bar.update(delta)
                if self.value >= self.total:
                    self._bar.close()
            if _progress_hook is not None:
                _progress_hook(self.node_id, self.value, self.total)
        check_interrupt()

    def close(self):
        if self._bar is not None:
            self._bar.close()


@contextlib.contextmanager
def progress_per_call(module: torch.nn.Module, total: int, desc: str):
    """A progress bar (and cancellation check) that advances each time `module` runs; total 0: none. For VAEs
    whose tiling loops live inside the model: the model stays free of progress plumbing."""
    if not total:
        yield
        return
    bar = Progress(total, desc=desc)
    handle = module.register_forward_hook(lambda *_: bar.update())
    try:
        yield
    finally:
        handle.remove()
        bar.close()


# --------------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------------
def torch_device() -> torch.device:
    if IN_COMFY:
        return _mm.get_torch_device()
    want = _settings["device"] or os.environ.get("OPENSORA_DEVICE") or "auto"
    if want == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(want)


def offload_device() -> torch.device:
    if IN_COMFY:
        return _mm.unet_offload_device()
    return torch.device("cpu")


def soft_empty_cache():
    if IN_COMFY:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def bundled_tokenizer_dirs(name: str = "t5_tokenizer") -> list[str]:
    """Tokenizer folders ComfyUI ships (comfy/text_encoders/<name> for T5, comfy/sd1_tokenizer for CLIP-L), a
    fallback when none sits by the model. Empty outside ComfyUI or when this ComfyUI has none."""
    if not IN_COMFY:
        return []
    import comfy  # type: ignore

    # Since 0.3.6x comfy/ has no __init__.py: a namespace package, whose __file__ is None. __path__ holds the
    # package folder(s) for a namespace and a regular package alike.
    roots = dict.fromkeys(os.path.abspath(p) for p in comfy.__path__)
    paths = [p for root in roots for p in (os.path.join(root, "text_encoders", name), os.path.join(root, name))]
    return [p for p in paths if os.path.isdir(p)]
