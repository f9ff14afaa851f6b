"""STDiT3: the Open-Sora 1.2 spatial-temporal diffusion transformer (released STDiT3-XL/2, 1.1B).

Spatial blocks attend within a frame, temporal blocks across frames (with rotary positions after
RMS qk-norm); each block also cross-attends to the T5 caption. Conditioned frames (x_mask False) are
modulated with the embedding of timestep 0 ("t0 path"). State-dict keys are exactly the released ones.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..checkpoint import build_strict
from ..layers import (Mlp, PatchEmbed3D, RMSNorm, SizeEmbedder, TimestepEmbedder, attention, modulate,
                      rope_interleaved, sincos_pos_embed_2d)

RELEASED = dict(hidden_size=1152, depth=28, num_heads=16, patch_size=(1, 2, 2), in_channels=4,
                caption_channels=4096, model_max_length=300, qk_norm=True, pred_sigma=True, mlp_ratio=4.0,
                input_sq_size=512)


def t_mask_select(x_mask, x, x_zero, T: int, S: int):
    """Per frame: x where x_mask is True, x_zero (the t0 version) where it is False. x: [B, T*S, C]."""
    x = rearrange(x, "b (t s) c -> b t s c", t=T, s=S)
    x_zero = rearrange(x_zero, "b (t s) c -> b t s c", t=T, s=S)
    return rearrange(torch.where(x_mask[:, :, None, None], x, x_zero), "b t s c -> b (t s) c")


class SelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qk_norm: bool, rope: nn.Module | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.q_norm = RMSNorm(dim // num_heads) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(dim // num_heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.rope = [rope] if rope is not None else None  # shared module, not a child (keys stay 'rope.freqs')

    def forward(self, x):
        q, k, v = rearrange(self.qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = rope_interleaved(q, self.rope[0].freqs), rope_interleaved(k, self.rope[0].freqs)
        return self.proj(rearrange(attention(q, k, v), "b h n d -> b n (h d)"))


class CrossAttention(nn.Module):
    """Queries of sample b attend only to the valid caption tokens of sample b."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, y, y_mask):
        """x [B, N, C]; y [B, L, C]; y_mask [B, L] bool or None."""
        b = x.shape[0]
        q = rearrange(self.q_linear(x), "b n (h d) -> b h n d", h=self.num_heads)
        k, v = rearrange(self.kv_linear(y), "b l (two h d) -> two b h l d", two=2, h=self.num_heads)
        if y_mask is None:
            # Quirk of v1.2.0 (golden README quirk 1): without a mask, every query attends to the captions of
            # the whole batch (q/k flattened over the batch, no bias). Identical to the per-sample case at B=1.
            q = rearrange(q, "b h n d -> 1 h (b n) d")
            k, v = (rearrange(t, "b h l d -> 1 h (b l) d") for t in (k, v))
            out = rearrange(attention(q, k, v), "1 h (b n) d -> b n (h d)", b=b)
        else:
            out = rearrange(attention(q, k, v, y_mask[:, None, None, :]), "b h n d -> b n (h d)")
        return self.proj(out)


class STDiT3Block(nn.Module):
    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, qk_norm: bool, temporal: bool,
                 rope: nn.Module | None):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.attn = SelfAttention(hidden, num_heads, qk_norm, rope if temporal else None)
        self.cross_attn = CrossAttention(hidden, num_heads)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden) / hidden ** 0.5)

    def forward(self, x, y, y_mask, t_mlp, T: int, S: int, x_mask=None, t0_mlp=None):
        b = x.shape[0]
        mod = (self.scale_shift_table[None] + t_mlp.reshape(b, 6, -1)).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        if x_mask is not None:
            mod0 = (self.scale_shift_table[None] + t0_mlp.reshape(b, 6, -1)).chunk(6, dim=1)
            shift_msa0, scale_msa0, gate_msa0, shift_mlp0, scale_mlp0, gate_mlp0 = mod0

        def select(a, a0):
            return a if x_mask is None else t_mask_select(x_mask, a, a0, T, S)

        h = self.norm1(x)
        x_m = select(modulate(h, shift_msa, scale_msa), modulate(h, shift_msa0, scale_msa0) if x_mask is not None
                     else None)
        if self.temporal:
            x_m = rearrange(self.attn(rearrange(x_m, "b (t s) c -> (b s) t c", t=T, s=S)),
                            "(b s) t c -> b (t s) c", b=b, s=S)
        else:
            x_m = rearrange(self.attn(rearrange(x_m, "b (t s) c -> (b t) s c", t=T, s=S)),
                            "(b t) s c -> b (t s) c", b=b, t=T)
        x = x + select(gate_msa * x_m, gate_msa0 * x_m if x_mask is not None else None)

        x = x + self.cross_attn(x, y, y_mask)

        h = self.norm2(x)
        x_m = select(modulate(h, shift_mlp, scale_mlp), modulate(h, shift_mlp0, scale_mlp0) if x_mask is not None
                     else None)
        x_m = self.mlp(x_m)
        return x + select(gate_mlp * x_m, gate_mlp0 * x_m if x_mask is not None else None)


class CaptionEmbedder(nn.Module):
    """y_proj MLP plus the learned null caption `y_embedding` (a persistent buffer, used for CFG)."""

    def __init__(self, caption_channels: int, hidden: int, max_length: int):
        super().__init__()
        self.y_proj = Mlp(caption_channels, hidden, hidden)
        self.register_buffer("y_embedding", torch.randn(max_length, caption_channels) / caption_channels ** 0.5)

    def forward(self, y):
        return self.y_proj(y)


class RotaryFreqs(nn.Module):
    """Holds `rope.freqs` (rotary_embedding_torch's frequencies, a frozen Parameter in the checkpoint)."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        self.freqs = nn.Parameter(1.0 / theta ** (torch.arange(0, dim, 2).float() / dim), requires_grad=False)


class FinalLayer(nn.Module):
    """T2IFinalLayer: LN, modulate with the timestep *embedding* (not the 6C vector), linear."""

    def __init__(self, hidden: int, patch_volume: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.linear = nn.Linear(hidden, patch_volume * out_channels)
        self.scale_shift_table = nn.Parameter(torch.randn(2, hidden) / hidden ** 0.5)

    def forward(self, x, t, T: int, S: int, x_mask=None, t0=None):
        shift, scale = (self.scale_shift_table[None] + t[:, None]).chunk(2, dim=1)
        x = modulate(self.norm_final(x), shift, scale)
        if x_mask is not None:
            shift0, scale0 = (self.scale_shift_table[None] + t0[:, None]).chunk(2, dim=1)
            # Quirk of the original: the t0 branch normalises the *already modulated* x, not the block output.
            x = t_mask_select(x_mask, x, modulate(self.norm_final(x), shift0, scale0), T, S)
        return self.linear(x)


class STDiT3(nn.Module):
    def __init__(self, hidden_size=1152, depth=28, num_heads=16, patch_size=(1, 2, 2), in_channels=4,
                 caption_channels=4096, model_max_length=300, qk_norm=True, pred_sigma=True, mlp_ratio=4.0,
                 input_sq_size=512, **_ignored):
        super().__init__()
        self.hidden_size, self.num_heads = hidden_size, num_heads
        self.patch_size = tuple(patch_size)
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.input_sq_size = input_sq_size
        self.config = dict(hidden_size=hidden_size, depth=depth, num_heads=num_heads, patch_size=self.patch_size,
                           in_channels=in_channels, caption_channels=caption_channels,
                           model_max_length=model_max_length, qk_norm=qk_norm, pred_sigma=pred_sigma,
                           mlp_ratio=mlp_ratio, input_sq_size=input_sq_size)

        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.fps_embedder = SizeEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, model_max_length)
        self.rope = RotaryFreqs(hidden_size // num_heads)
        self.spatial_blocks = nn.ModuleList(
            [STDiT3Block(hidden_size, num_heads, mlp_ratio, qk_norm, False, None) for _ in range(depth)])
        self.temporal_blocks = nn.ModuleList(
            [STDiT3Block(hidden_size, num_heads, mlp_ratio, qk_norm, True, self.rope) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, self.patch_size[0] * self.patch_size[1] * self.patch_size[2],
                                      self.out_channels)

    @property
    def null_caption(self) -> torch.Tensor:
        """The learned unconditional caption [L, caption_channels]."""
        return self.y_embedder.y_embedding

    def forward(self, x, timestep, y, mask=None, x_mask=None, fps=None, height=None, width=None, **_):
        """x [B,C,T,h,w]; timestep [B] (0..1000); y [B,1,L,Cc]; mask [1 or B, L] (1 = token);
        x_mask [B,T] (False = conditioned frame); fps [B]; height/width [B] in pixels (only [0] is used)."""
        dtype = self.x_embedder.proj.weight.dtype
        b, _, t_in, h_in, w_in = x.shape
        x, y = x.to(dtype), y.to(dtype)
        timestep = timestep.to(dtype)  # in a bf16 model the timestep is rounded to bf16, as the original
        pt, ph, pw = self.patch_size
        T, H, W = -(-t_in // pt), -(-h_in // ph), -(-w_in // pw)
        S = H * W
        base_size = round(S ** 0.5)
        scale = (float(height[0]) * float(width[0])) ** 0.5 / self.input_sq_size
        pos = sincos_pos_embed_2d(H, W, self.hidden_size, scale, base_size, device=x.device).to(dtype)

        fps = torch.full((b,), 24.0, device=x.device) if fps is None else fps
        fps_emb = self.fps_embedder(fps.to(x.device).unsqueeze(1), b, dtype)
        t = self.t_embedder(timestep, dtype) + fps_emb
        t_mlp = self.t_block(t)
        t0 = t0_mlp = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep), dtype) + fps_emb
            t0_mlp = self.t_block(t0)
            x_mask = x_mask.to(x.device).bool()

        y = self.y_embedder(y).squeeze(1)  # [B, L, C]
        y_mask = None
        if mask is not None:
            if mask.shape[0] != b:  # the CFG batch reuses the prompt mask: null rows see as many tokens
                mask = mask.repeat(b // mask.shape[0], 1)
            y_mask = mask.to(x.device) != 0

        x = self.x_embedder(x)
        x = rearrange(rearrange(x, "b (t s) c -> b t s c", t=T, s=S) + pos, "b t s c -> b (t s) c")
        for spatial, temporal in zip(self.spatial_blocks, self.temporal_blocks):
            x = spatial(x, y, y_mask, t_mlp, T, S, x_mask, t0_mlp)
            x = temporal(x, y, y_mask, t_mlp, T, S, x_mask, t0_mlp)
        x = self.final_layer(x, t, T, S, x_mask, t0)
        x = rearrange(x, "b (nt nh nw) (pt ph pw c) -> b c (nt pt) (nh ph) (nw pw)", nt=T, nh=H, nw=W,
                      pt=pt, ph=ph, pw=pw)
        return x[:, :, :t_in, :h_in, :w_in].float()


def config_from_state_dict(sd: dict) -> dict:
    """STDiT3 constructor arguments read off a state dict's shapes."""
    hidden = sd["x_embedder.proj.weight"].shape[0]
    patch = tuple(sd["x_embedder.proj.weight"].shape[2:])
    in_ch = sd["x_embedder.proj.weight"].shape[1]
    head_dim = sd["spatial_blocks.0.attn.q_norm.weight"].shape[0] if "spatial_blocks.0.attn.q_norm.weight" in sd \
        else 2 * sd["rope.freqs"].shape[0]
    out = sd["final_layer.linear.weight"].shape[0] // (patch[0] * patch[1] * patch[2])
    return dict(hidden_size=hidden, depth=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("spatial_blocks.")),
                num_heads=hidden // head_dim, patch_size=patch, in_channels=in_ch,
                caption_channels=sd["y_embedder.y_embedding"].shape[1],
                model_max_length=sd["y_embedder.y_embedding"].shape[0],
                qk_norm="spatial_blocks.0.attn.q_norm.weight" in sd, pred_sigma=out == 2 * in_ch,
                mlp_ratio=sd["spatial_blocks.0.mlp.fc1.weight"].shape[0] / hidden)


def reparameter_null_caption(sd: dict, length: int) -> dict:
    """Fit y_embedding to `length` tokens as the original's checkpoint loading does (ckpt_utils.reparameter):
    repeat the last row, or truncate. PixArt-initialised files carry 120 rows; released v1.2 files 300."""
    y = sd["y_embedding"] if "y_embedding" in sd else sd["y_embedder.y_embedding"]
    if y.shape[0] < length:
        y = torch.cat([y, y[-1:].repeat(length - y.shape[0], 1)])
    sd = dict(sd)
    sd["y_embedder.y_embedding"] = y[:length]
    sd.pop("y_embedding", None)
    return sd


def load_stdit3(sd: dict, model_max_length: int | None = None) -> STDiT3:
    """Build from the state dict's shapes and load it strictly (every key, both ways). With
    model_max_length, the null caption is first fitted to that many tokens (PixArt-initialised files)."""
    if model_max_length is not None:
        sd = reparameter_null_caption(sd, model_max_length)
    return build_strict(lambda: STDiT3(**config_from_state_dict(sd)), sd, "STDiT3")
