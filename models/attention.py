"""Attention: the one function every transformer and VAE block calls, and the kernel behind it.

Backends, chosen per loaded model (OpenSora Model Loader's `attention`; the sampler runs the model inside
`use(backend)`, everything else runs on the process default):
- sdpa: torch's fused scaled_dot_product_attention (flash / memory-efficient kernels where torch has them);
- math: the original's manual path (scaled q @ k^T, softmax in fp32, cast back, @ v): the reference;
- flash: flash-attn 2's kernel (pip install flash-attn); sage: SageAttention's quantised kernel
  (pip install sageattention). Both take half-precision CUDA tensors without a mask;
- comfy: ComfyUI's optimized_attention, which follows --use-sage-attention / --use-flash-attention and the rest
  of ComfyUI's settings (inside ComfyUI only);
- auto: the fastest present (sage, then flash, on CUDA; else sdpa).
A call a backend cannot take (a key mask, fp32, a CPU tensor) runs on sdpa instead, said once in the log: never
silently wrong, never an error in the middle of sampling.
"""
from __future__ import annotations

import contextlib
import contextvars
import importlib.util

import torch
import torch.nn.functional as F
from einops import rearrange

from .. import comfy_adapter
from .errors import InputError

ATTENTION_BACKEND = {"name": "sdpa"}  # the process default, outside any `use` (tests and benchmarks set it)
BACKENDS = ["sdpa", "math", "flash", "sage", "comfy", "auto"]
PACKAGES = {"flash": ("flash_attn", "flash-attn"), "sage": ("sageattention", "sageattention")}
HALF = (torch.float16, torch.bfloat16)

_active = contextvars.ContextVar("opensora_attention", default=None)
_said: set = set()


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def resolve(name: str, device: torch.device) -> str:
    """The backend a model loaded with `name` runs on; InputError (naming the pip package) when it cannot be."""
    if name not in BACKENDS:
        raise InputError("attention", f"unknown attention backend '{name}'", f"choose one of {BACKENDS}")
    if name == "auto":
        if device.type == "cuda":
            return next((b for b in ("sage", "flash") if _importable(PACKAGES[b][0])), "sdpa")
        return "sdpa"
    if name in PACKAGES and not _importable(PACKAGES[name][0]):
        pip = PACKAGES[name][1]
        raise InputError("attention", f"'{name}' needs the {pip} package, which is not installed",
                         f"pip install {pip} into ComfyUI's Python, or choose sdpa")
    if name == "comfy" and not comfy_adapter.IN_COMFY:
        raise InputError("attention", "'comfy' is ComfyUI's own attention and works inside ComfyUI only",
                         "choose sdpa (or auto) headless")
    return name


@contextlib.contextmanager
def use(name: str | None):
    """Run the enclosed model calls on backend `name` (None: the process default)."""
    token = _active.set(name)
    try:
        yield
    finally:
        _active.reset(token)


def math_attention(q, k, v, mask=None):
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.float().softmax(-1).to(q.dtype) @ v


def _kernel_refuses(name: str, q, mask) -> str | None:
    """Why the flash / sage kernels cannot take this call, or None."""
    if mask is not None:
        return "a key mask"
    if q.ndim != 4:
        return f"{q.ndim}-D tensors"
    if name == "comfy":
        return None
    if not q.is_cuda:
        return "CPU tensors"
    if q.dtype not in HALF:
        return f"{str(q.dtype).removeprefix('torch.')} tensors"
    if q.shape[-1] > 256:
        return f"head dim {q.shape[-1]}"
    return None


def _flash(q, k, v):
    from flash_attn import flash_attn_func

    out = flash_attn_func(*(rearrange(t, "b h n d -> b n h d") for t in (q, k, v)))
    return rearrange(out, "b n h d -> b h n d")


def _sage(q, k, v):
    from sageattention import sageattn

    return sageattn(q, k, v, tensor_layout="HND", is_causal=False)


def _comfy(q, k, v):
    from comfy.ldm.modules.attention import optimized_attention

    out = optimized_attention(q, k, v, q.shape[1], skip_reshape=True)  # -> [B, N, H * D]
    return rearrange(out, "b n (h d) -> b h n d", h=q.shape[1])


KERNELS = {"flash": _flash, "sage": _sage, "comfy": _comfy}


def attention(q, k, v, mask=None):
    """q [..., N, D], k/v [..., M, D] (usually [B, heads, tokens, head_dim]); mask broadcastable to
    [..., N, M], True = attend. Scale D^-0.5."""
    name = _active.get() or ATTENTION_BACKEND["name"]
    if name in KERNELS:
        reason = _kernel_refuses(name, q, mask)
        if reason is None:
            return KERNELS[name](q, k, v)
        if (name, reason) not in _said:
            _said.add((name, reason))
            print(f"[OpenSora] attention '{name}' cannot take {reason}: those calls run on sdpa")
        name = "sdpa"
    if name == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return math_attention(q, k, v, mask)
