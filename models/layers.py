"""Building blocks shared by the diffusion transformers (Open-Sora STDiT family; reused by later families)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

# "sdpa": torch's fused scaled_dot_product_attention (flash / memory-efficient kernels where available);
# "math": the textbook softmax(QK^T)V, kept as the reference the golden tests can compare SDPA against.
ATTENTION_BACKEND = {"name": "sdpa"}


def attention(q, k, v, mask=None):
    """q [B,H,N,D], k/v [B,H,M,D]; mask broadcastable to [B,H,N,M], True = attend."""
    if ATTENTION_BACKEND["name"] == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.float().softmax(-1).to(q.dtype) @ v


def modulate(x, shift, scale):
    """adaLN: x * (1 + scale) + shift (PixArt's t2i_modulate)."""
    return x * (1 + scale) + shift


class RMSNorm(nn.Module):
    """LlamaRMSNorm: normalise in fp32, cast back, then scale."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos, sin] of raw timestep values (fp32)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """sinusoid(256) -> Linear -> SiLU -> Linear; keys mlp.0 / mlp.2."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t, dtype):
        return self.mlp(timestep_embedding(t, self.freq_dim).to(dtype))


class SizeEmbedder(TimestepEmbedder):
    """The timestep embedder applied to each column of a [B, d] condition (fps, size, ...), concatenated."""

    def forward(self, s, batch: int, dtype):
        if s.ndim == 1:
            s = s[:, None]
        if s.shape[0] != batch:
            s = s.repeat(batch // s.shape[0], 1)
        embs = [super(SizeEmbedder, self).forward(s[:, i], dtype) for i in range(s.shape[1])]
        return torch.cat(embs, dim=1)


class Mlp(nn.Module):
    """timm Mlp: fc1 -> GELU(tanh) -> fc2."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out or dim_in)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class PatchEmbed3D(nn.Module):
    """Conv3d patchify; odd T/H/W are zero-padded at the end first. Tokens come out in (t, h, w) order."""

    def __init__(self, patch_size, in_channels: int, hidden: int):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(in_channels, hidden, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x):
        pt, ph, pw = self.patch_size
        _, _, t, h, w = x.shape
        x = F.pad(x, (0, -w % pw, 0, -h % ph, 0, -t % pt))
        return rearrange(self.proj(x), "b c t h w -> b (t h w) c")


def sincos_pos_embed_2d(h: int, w: int, dim: int, scale: float, base_size: int | None, device=None) -> torch.Tensor:
    """PositionEmbedding2D [h*w, dim]: first half encodes the column (W) coordinate, second half the row;
    each half is [sin, cos] with omega_k = 10000^(-k/(dim/4)); coordinates are i/scale (* base_size/h when a
    base size is given, as v1.1+ do; v1.0 has none)."""
    quarter = dim // 4
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim // 2, 2, device=device).float() / (dim // 2)))
    assert inv_freq.numel() == quarter
    rows = torch.arange(h, device=device) / scale * (base_size / h if base_size else 1.0)
    cols = torch.arange(w, device=device) / scale * (base_size / w if base_size else 1.0)

    def emb(c):
        a = c[:, None] * inv_freq[None]
        return torch.cat([a.sin(), a.cos()], dim=-1)

    col = emb(cols)[None, :, :].expand(h, w, dim // 2)
    row = emb(rows)[:, None, :].expand(h, w, dim // 2)
    return torch.cat([col, row], dim=-1).reshape(h * w, dim)


def rope_interleaved(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """rotary_embedding_torch convention: pairs (2k, 2k+1) rotated by pos * freqs[k] over the sequence
    axis -2. Angles are computed in the dtype of `freqs` (bf16 in a bf16 model, as the original)."""
    n = x.shape[-2]
    pos = torch.arange(n, device=x.device, dtype=x.dtype).to(freqs.dtype)
    angles = torch.repeat_interleave(pos[:, None] * freqs[None], 2, dim=-1)
    x1, x2 = rearrange(x, "... (d r) -> r ... d", r=2)
    rotated = rearrange(torch.stack([-x2, x1]), "r ... d -> ... (d r)")
    return (x * angles.cos() + rotated * angles.sin()).to(x.dtype)


def sincos_pos_embed_1d(n: int, dim: int, scale: float = 1.0) -> torch.Tensor:
    """[n, dim] = [sin | cos] of (i/scale) * 10000^(-k/(dim/2))."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    a = (torch.arange(n, dtype=torch.float64) / scale)[:, None] * omega[None]
    return torch.cat([a.sin(), a.cos()], dim=1).float()
