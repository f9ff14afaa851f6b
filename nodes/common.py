"""Small helpers shared by the node classes: model lists, input validation messages, tensor layout."""
from __future__ import annotations

import torch

from .. import comfy_adapter

CATEGORY = "OpenSora"
DTYPE_CHOICES = ["auto", "bf16", "fp16", "fp32"]


class NodeInputError(ValueError):
    """Bad input to a node: the message names the node, the input and the fix."""

    def __init__(self, node: str, input_name: str, problem: str, fix: str):
        super().__init__(f"{node}: input '{input_name}': {problem}. Fix: {fix}")


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
