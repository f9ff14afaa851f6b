"""Device and dtype policy, in one place.

CUDA when available, else CPU (ComfyUI's choice inside ComfyUI). A dtype is asked for by name;
a device that cannot run it gives an error that says which dtype to pick instead.
"""
from __future__ import annotations

import torch

from .. import comfy_adapter

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DTYPE_NAMES = list(DTYPES)


class DeviceError(ValueError):
    pass


def get_device(name: str = "auto") -> torch.device:
    """'auto' follows ComfyUI (or --device headless); 'cuda' fails clearly when there is no GPU."""
    if name in (None, "auto"):
        return comfy_adapter.torch_device()
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError("device 'cuda' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'")
    return dev


def offload_device() -> torch.device:
    return comfy_adapter.offload_device()


def check_dtype(dtype_name: str, device: torch.device) -> torch.dtype:
    """The torch dtype for a name, after checking that `device` can compute in it."""
    if dtype_name not in DTYPES:
        raise DeviceError(f"unknown dtype '{dtype_name}'; choose one of {DTYPE_NAMES}")
    dtype = DTYPES[dtype_name]
    if device.type == "cpu" and dtype == torch.float16:
        # Half-precision convolutions and attention are missing or very slow on CPU.
        raise DeviceError("fp16 does not run on the CPU; choose bf16 or fp32 (or run on a GPU)")
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"this GPU ({torch.cuda.get_device_name(device)}) cannot compute in bf16; choose fp16 or fp32")
    return dtype


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_dtype(dtype_name: str, device: torch.device) -> torch.dtype:
    """'auto' -> default_dtype(device); a name -> check_dtype."""
    if dtype_name in (None, "auto", "default"):
        return default_dtype(device)
    return check_dtype(dtype_name, device)
