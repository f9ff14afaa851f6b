"""Small helpers shared by the node classes: model lists, input validation messages, tensor layout."""
from __future__ import annotations

import math

import torch

from .. import comfy_adapter

CATEGORY = "OpenSora"
DTYPE_CHOICES = ["auto", "bf16", "fp16", "fp32"]


class NodeInputError(ValueError):
    """Bad input to a node: the message names the node, the input and the fix."""

    def __init__(self, node: str, input_name: str, problem: str, fix: str):
        super().__init__(f"{node}: input '{input_name}': {problem}. Fix: {fix}")


def check_floats(node: str, cls, **values) -> bool | str:
    """VALIDATE_INPUTS for FLOAT inputs: True, or the message of the first bad one. ComfyUI lets NaN and inf through
    its min / max check (every comparison with NaN is false), and cfg=NaN would run the whole workflow into a
    black video. Naming an input in VALIDATE_INPUTS makes ComfyUI skip its own range check, so this does both.
    A linked input arrives as None: it is known only when the workflow runs."""
    spec = cls.INPUT_TYPES()
    spec = {**spec.get("required", {}), **spec.get("optional", {})}
    for name, value in values.items():
        if value is None:
            continue
        opts = spec[name][1]
        lo, hi = opts.get("min"), opts.get("max")
        problem = None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            problem = f"{value} is not a finite number"
        elif lo is not None and value < lo:
            problem = f"{value} is below the minimum {lo}"
        elif hi is not None and value > hi:
            problem = f"{value} is above the maximum {hi}"
        if problem:
            return str(NodeInputError(node, name, problem, f"set a number from {lo} to {hi} (default "
                                                           f"{opts.get('default')})"))
    return True


def model_choices(kind: str, with_dirs: bool = True) -> list[str]:
    """Files of a ComfyUI model folder, plus diffusers-style folders in the pack folder."""
    files = comfy_adapter.list_models(kind)
    dirs = comfy_adapter.list_models(comfy_adapter.PACK_FOLDER, dirs=True) if with_dirs else []
    return files + [d for d in dirs if d not in files]


def resolve_model_path(node: str, input_name: str, kind: str, name: str) -> str:
    path = comfy_adapter.model_path(kind, name) or comfy_adapter.model_path(comfy_adapter.PACK_FOLDER, name)
    if path is None:
        raise NodeInputError(node, input_name, f"'{name}' was not found",
                             f"put the file in models/{comfy_adapter.MODEL_FOLDERS[kind][0]}/ "
                             f"(headless: under --models-dir) and pick it again")
    return path


def images_to_video(images: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE [T,H,W,C] in 0..1 -> video [1,C,T,H,W] in -1..1."""
    return (images[..., :3].movedim(-1, 0).unsqueeze(0) * 2 - 1).contiguous()


def video_to_images(video: torch.Tensor) -> torch.Tensor:
    """Video [B,C,T,H,W] in -1..1 -> ComfyUI IMAGE [B*T,H,W,C] in 0..1 (frames are the batch, as core does)."""
    frames = video.float().clamp(-1, 1).add(1).div(2)
    return frames.permute(0, 2, 3, 4, 1).reshape(-1, *frames.shape[3:], frames.shape[1]).contiguous()
