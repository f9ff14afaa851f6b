"""Building blocks shared by the diffusion transformers (Open-Sora STDiT family; reused by later families).

Numerics follow Open-Sora v1.2.0 `opensora/models/layers/blocks.py` (PixArt-derived) and rotary_embedding_torch
0.5.3, including the dtypes each step runs in, so that a bf16 model rounds where the original rounds.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import ATTENTION_BACKEND, attention  # noqa: F401  (the blocks' one attention; see attention.py)


def randn_init(*shape: int, divisor: float = 1.0) -> torch.Tensor:
    """torch.randn(shape) / divisor, PixArt's init of adaLN tables and of the null caption. On the meta device
    (where build_strict constructs models that the checkpoint then fills) nothing is drawn: meta arithmetic
    first imports torch._dynamo, seconds at every first model load."""
    t = torch.empty(shape)
    return t if t.is_meta else torch.randn(shape) / divisor


def modulate(x, shift, scale):
    """adaLN: x * (1 + scale) + shift (PixArt's t2i_modulate)."""
    return x * (1 + scale) + shift


def adaln_params(table, t_vec, x_mask=None, t0_vec=None):
    """The adaLN vectors of a block, one [B, T or 1, 1, C] tensor per row of `table` [n, C], ready to broadcast
    over tokens laid out [B, T, S, C].

    t_vec [B, n*C] is t_block(t). With x_mask [B, T] (False = conditioned frame), frames whose mask is False take
    their vectors from t0_vec (the timestep-0 embedding) instead. Picking the vectors per frame is, element for
    element, what the original does by computing both branches on every token and selecting per frame
    (t_mask_select), without the second full-size activation.
    """
    mods = table[None] + rearrange(t_vec, "b (n c) -> b n c", n=table.shape[0])
    if x_mask is None:
        mods = mods[:, None]
    else:
        mods0 = table[None] + rearrange(t0_vec, "b (n c) -> b n c", n=table.shape[0])
        mods = torch.where(x_mask[:, :, None, None], mods[:, None], mods0[:, None])
    return rearrange(mods, "b t n c -> n b t 1 c").unbind(0)


def frame_select(x_mask, x, x0, T: int, S: int):
    """Per frame: x where x_mask [B, T] is True, x0 where it is False. x, x0: [B, T*S, C]."""
    x = rearrange(x, "b (t s) c -> b t s c", t=T, s=S)
    x0 = rearrange(x0, "b (t s) c -> b t s c", t=T, s=S)
    return rearrange(torch.where(x_mask[:, :, None, None], x, x0), "b t s c -> b (t s) c")


def rms_norm(x, weight, eps: float = 1e-6):
    """LlamaRMSNorm: normalise in fp32, cast back to the input dtype, then scale by the weight."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


# --------------------------------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos, sin] of raw timestep values, computed in fp32 (GLIDE / DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """sinusoid(256) -> Linear -> SiLU -> Linear; keys mlp.0 / mlp.2. The sinusoid is cast to `dtype` first."""

    def __init__(self, hidden: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t, dtype):
        return self.mlp(timestep_embedding(t, self.freq_dim).to(dtype))


class SizeEmbedder(TimestepEmbedder):
    """The timestep embedder applied to each column of a [B, d] condition (fps, size, ...); the d embeddings
    are concatenated to [B, d*C]. A condition with fewer rows than the batch is tiled."""

    def forward(self, s, batch: int, dtype):
        if s.ndim == 1:
            s = s[:, None]
        if s.shape[0] != batch:
            s = s.repeat(batch // s.shape[0], 1)
        emb = super().forward(rearrange(s, "b d -> (b d)"), dtype)
        return rearrange(emb, "(b d) c -> b (d c)", b=batch)


class Mlp(nn.Module):
    """timm Mlp: fc1 -> GELU(tanh) -> fc2."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int | None = None):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out or dim_in)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class PatchEmbed3D(nn.Module):
    """Conv3d patchify; T/H/W that are not multiples of the patch are zero-padded at the end first.
    Tokens come out in (t, h, w) order, [B, T*H*W, C]."""

    def __init__(self, patch_size, in_channels: int, hidden: int):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.proj = nn.Conv3d(in_channels, hidden, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x):
        pt, ph, pw = self.patch_size
        _, _, t, h, w = x.shape
        if t % pt or h % ph or w % pw:
            x = F.pad(x, (0, -w % pw, 0, -h % ph, 0, -t % pt))
        return rearrange(self.proj(x), "b c t h w -> b (t h w) c")


def _sincos(coords: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    angles = coords[:, None] * inv_freq[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def sincos_pos_embed_2d(h: int, w: int, dim: int, scale: float = 1.0, base_size: int | None = None,
                        device=None) -> torch.Tensor:
    """PositionEmbedding2D, [h*w, dim] fp32, tokens row-major. The first half of the channels encodes the
    column (W) coordinate, the second half the row; each half is [sin, cos] with omega_k = 10000^(-k/(dim/4)).
    Coordinates are i / scale, times base_size / n when a base size is given (v1.1+; v1.0 has none)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, dim // 2, 2, device=device).float() / (dim // 2)))
    rows = torch.arange(h, device=device) / scale
    cols = torch.arange(w, device=device) / scale
    if base_size:
        rows, cols = rows * (base_size / h), cols * (base_size / w)
    col = _sincos(cols, inv_freq)[None, :, :].expand(h, w, dim // 2)
    row = _sincos(rows, inv_freq)[:, None, :].expand(h, w, dim // 2)
    return rearrange(torch.cat([col, row], dim=-1), "h w c -> (h w) c")


def sincos_pos_embed_1d(n: int, dim: int, scale: float = 1.0, device=None) -> torch.Tensor:
    """1D sincos table [n, dim] of positions i / scale: [sin, cos] with omega_k = 10000^(-k/(dim/2)).
    Computed in float64 like the original's numpy version, returned as fp32."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=device) / (dim / 2))
    return _sincos(torch.arange(n, dtype=torch.float64, device=device) / scale, omega).float()


# --------------------------------------------------------------------------------------------------------------
# Rotary position embedding (rotary_embedding_torch 0.5.3, freqs_for="lang")
# --------------------------------------------------------------------------------------------------------------
class RotaryFreqs(nn.Module):
    """Holds `freqs` = 1/theta^(2k/dim), a frozen Parameter in the original (so it is in the state dict as
    `rope.freqs`, and a bf16 model has bf16 frequencies)."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        freqs = torch.empty(dim // 2)
        if not freqs.is_meta:  # on meta the checkpoint provides it (see randn_init)
            freqs = 1.0 / theta ** (torch.arange(0, dim, 2).float() / dim)
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def cos_sin(self, n: int, pos_dtype: torch.dtype):
        """cos/sin [n, dim] of positions 0..n-1. As the original: positions are made in the activation dtype,
        the angles and their cos/sin in the dtype of `freqs` (bf16 in a bf16 model), each frequency repeated
        for its pair of channels."""
        pos = torch.arange(n, device=self.freqs.device, dtype=pos_dtype).to(self.freqs.dtype)
        angles = torch.repeat_interleave(pos[:, None] * self.freqs[None], 2, dim=-1)
        return angles.cos(), angles.sin()


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2k, 2k+1) of x [..., n, dim] by the angles of cos/sin [n, dim]."""
    x1, x2 = rearrange(x, "... (d r) -> r ... d", r=2)
    rotated = rearrange(torch.stack([-x2, x1]), "r ... d -> ... (d r)")
    return (x * cos + rotated * sin).to(x.dtype)


# --------------------------------------------------------------------------------------------------------------
# Attention blocks
# --------------------------------------------------------------------------------------------------------------
class SelfAttention(nn.Module):
    """Multi-head self-attention, keys qkv / q_norm / k_norm / proj. Optional RMS qk-norm; rotary positions
    (cos, sin) are applied after the qk-norm (v1.2) or, with rope_before_norm, before it (v1.1's
    qk_norm_legacy)."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, rope_before_norm: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.rope_before_norm = rope_before_norm
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = RMSNorm(dim // num_heads) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim // num_heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope=None):
        """x [B, N, C]; rope: (cos, sin) [N, head_dim] or None."""
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        if rope is not None and self.rope_before_norm:
            q, k = apply_rope_interleaved(q, *rope), apply_rope_interleaved(k, *rope)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None and not self.rope_before_norm:
            q, k = apply_rope_interleaved(q, *rope), apply_rope_interleaved(k, *rope)
        return self.proj(rearrange(attention(q, k, v), "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Queries of sample b attend only to the caption tokens of sample b (keys q_linear / kv_linear / proj).

    The original packs every sample's valid tokens into one sequence and uses xformers' block-diagonal mask.
    Here: all tokens valid -> one batched call without a mask (fused kernels stay usable); one sample -> its
    valid tokens only; several samples with padding -> one batched call with a key mask (the same arithmetic:
    masked keys get zero weight; a per-sample loop made training steps 1.4x slower).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, y, y_mask=None):
        """x [B, N, C]; y [B, L, C]; y_mask [B, L] bool (True = token) or None (all L tokens of each sample).

        v1.2.0's MultiHeadCrossAttention called with mask=None would mix the captions of the whole batch (golden
        README quirk 1), but no v1.x model calls it so: without a token mask STDiT3.encode_text (and STDiT /
        STDiT2) pass the per-sample lengths [L] * B. This is that per-sample behaviour.
        """
        q = rearrange(self.q_linear(x), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(self.kv_linear(y), "b l (two h d) -> two b h l d", two=2, h=self.num_heads)
        if y_mask is None or bool(y_mask.all()):
            out = attention(q, k, v)
        elif len(y_mask) == 1:
            out = attention(q, k[:, :, y_mask[0]], v[:, :, y_mask[0]])
        else:
            out = attention(q, k, v, mask=y_mask[:, None, None, :])
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


class CaptionEmbedder(nn.Module):
    """y_proj MLP plus the learned null caption `y_embedding` [L, caption_channels], a persistent buffer (never
    trained; it must come from the checkpoint) used as the unconditional caption for CFG."""

    def __init__(self, caption_channels: int, hidden: int, max_length: int):
        super().__init__()
        self.y_proj = Mlp(caption_channels, hidden, hidden)
        self.register_buffer("y_embedding", randn_init(max_length, caption_channels,
                                                       divisor=caption_channels ** 0.5))

    def forward(self, y):
        return self.y_proj(y)


class FinalLayer(nn.Module):
    """T2IFinalLayer: LayerNorm, modulate with the timestep *embedding* t [B, C] (not the 6C block vector),
    linear to patch_volume * out_channels features per token."""

    def __init__(self, hidden: int, patch_volume: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(hidden, patch_volume * out_channels)
        self.scale_shift_table = nn.Parameter(randn_init(2, hidden, divisor=hidden ** 0.5))

    def forward(self, x, t, T: int, S: int, x_mask=None, t0=None):
        """x [B, T*S, C]; with x_mask [B, T], frames whose mask is False use t0 instead of t."""
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        x = modulate(self.norm_final(x), shift, scale)
        if x_mask is not None:
            shift0, scale0 = (self.scale_shift_table[None] + t0[:, None]).chunk(2, dim=1)
            # Quirk of the original (T2IFinalLayer, v1.2.0): the t0 branch normalises the *already modulated* x,
            # not the block output. Reproduced because the released model ran this way.
            x = frame_select(x_mask, x, modulate(self.norm_final(x), shift0, scale0), T, S)
        return self.linear(x)
