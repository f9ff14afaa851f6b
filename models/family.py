"""What the generic nodes need to know about a model family and a VAE: two plain records.

A family module (models/opensora/v1_2.py, models/cogvideox/family.py, ...) fills one `Family` with its own
functions: how it loads, encodes text and samples. models/families.py is the table of them; pipeline.py
looks a family up there and never asks which one it has.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from . import devices
from .errors import InputError
from .opensora import buckets


@dataclass(frozen=True)
class Sampling:
    """The sampler node's settings; each family reads the ones it has."""
    seed: int
    steps: int
    cfg: float
    scheduler: str
    denoise: float
    fps: int
    dynamic_cfg: bool = False            # CogVideoX
    guidance_img: float = 3.0            # Open-Sora 2.0
    guidance_oscillation: bool = True    # Open-Sora 2.0
    temporal_image_guidance: bool = True  # Open-Sora 2.0
    flow_shift: float = 0.0              # Open-Sora 2.0


def device_dtype(dtype_name: str, device: torch.device, config: dict) -> torch.dtype:
    """The device policy's precision (auto: bf16 where the GPU has it, fp32 on the CPU), for families without
    a rule of their own."""
    return devices.resolve_dtype(dtype_name, device)


@dataclass(frozen=True)
class Family:
    name: str                        # DiffusionModel.family, and the conditioning's family
    checkpoints: tuple[str, ...]     # the checkpoint kinds (checkpoint.detect_family) the model loader takes
    label: str                       # what the loader's messages call it
    load: Callable                   # (kind, state dict, path) -> (net, config)
    vaes: tuple[str, ...]            # the VAEs (VAE.name) whose latents it denoises
    schedulers: tuple[str, ...]      # the sampler's scheduler choices for it
    text_families: tuple[str, ...]   # its entries in OpenSora Text Encode's family list
    encode_text: Callable            # (text_family, t5, clip, prompt, aesthetic_score, motion_score, camera_motion)
    sample: Callable                 # (model, positive, negative, latent, info, Sampling) -> latent
    dtype: Callable = device_dtype   # (dtype_name, device, config) -> the compute dtype


@dataclass(frozen=True)
class Presets:
    """OpenSora Empty Latent's resolution presets: pixel budgets, the aspect ratios they come in (width:height)
    and size(resolution, aspect_ratio, grid) -> (height, width)."""
    pixels: dict
    aspect_ratios: list
    size: Callable


def _bucket_size(resolution: str, aspect_ratio: str, grid: int) -> tuple[int, int]:
    w, h = aspect_ratio.split(":")  # Open-Sora 1.2 keys its tables height:width
    return buckets.get_image_size(resolution, f"{h}:{w}")


PRESETS_V1 = Presets(buckets.PIXELS, [f"{w}:{h}" for h, w in (a.split(":") for a in buckets.ASPECT_RATIOS_HW)],
                     _bucket_size)
PRESETS_V2 = Presets(buckets.PIXELS_V2, buckets.ASPECT_RATIOS_V2, buckets.get_image_size_v2)


@dataclass(frozen=True)
class VAE:
    """A VAE checkpoint kind as the families use it. The network answers the rest itself (spatial_ratio,
    latent_channels, latent_frames, check_num_frames, encode_video, decode_video)."""
    name: str                        # VideoVAE.family, and the latent's family
    label: str
    load: Callable                   # (state dict, path) -> net
    grid: int | None = None          # pixels per transformer token side where it patches; None: spatial_ratio
    presets: Presets = PRESETS_V1


def check_prompt_tokens(positive: dict, net: torch.nn.Module):
    """STDiT's learned null caption fixes the token count: a prompt encoded for another family does not fit."""
    if positive["y"].shape[2] != net.null_caption.shape[0]:
        raise InputError("positive", f"the prompt has {positive['y'].shape[2]} tokens but the model's null "
                         f"caption has {net.null_caption.shape[0]}", "encode the prompt for this model's family")
