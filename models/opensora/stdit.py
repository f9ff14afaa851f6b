"""STDiT: the Open-Sora 1.0 transformer (STDiT-XL/2, fixed input size).

Each block runs spatial attention (adaLN-modulated), then a temporal attention on the *raw* tokens (no norm,
no modulation; the temporal position embedding is added in block 0 only) gated by the same gate_msa, then
cross-attention and the MLP. Position embeddings are fixed sincos tables for the configured input size.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..checkpoint import build_strict
from ..layers import Mlp, PatchEmbed3D, TimestepEmbedder, modulate, sincos_pos_embed_1d, sincos_pos_embed_2d
from .stdit3 import CaptionEmbedder, CrossAttention, FinalLayer, SelfAttention

RELEASED = dict(input_size=(16, 64, 64), hidden_size=1152, depth=28, num_heads=16, patch_size=(1, 2, 2),
                in_channels=4, caption_channels=4096, model_max_length=120, space_scale=1.0, time_scale=1.0)


class STDiTBlock(nn.Module):
    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.attn = SelfAttention(hidden, num_heads, qk_norm=False)
        self.attn_temp = SelfAttention(hidden, num_heads, qk_norm=False)
        self.cross_attn = CrossAttention(hidden, num_heads)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.scale_shift_table = nn.Parameter(torch.randn(6, hidden) / hidden ** 0.5)

    def forward(self, x, y, y_mask, t_mlp, T: int, S: int, tpe=None):
        b = x.shape[0]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = \
            (self.scale_shift_table[None] + t_mlp.reshape(b, 6, -1)).chunk(6, dim=1)
        x_s = rearrange(modulate(self.norm1(x), shift_msa, scale_msa), "b (t s) c -> (b t) s c", t=T, s=S)
        x = x + gate_msa * rearrange(self.attn(x_s), "(b t) s c -> b (t s) c", b=b, t=T)
        x_t = rearrange(x, "b (t s) c -> (b s) t c", t=T, s=S)
        if tpe is not None:
            x_t = x_t + tpe
        x = x + gate_msa * rearrange(self.attn_temp(x_t), "(b s) t c -> b (t s) c", b=b, s=S)
        x = x + self.cross_attn(x, y, y_mask)
        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class STDiT(nn.Module):
    def __init__(self, input_size=(16, 64, 64), hidden_size=1152, depth=28, num_heads=16, patch_size=(1, 2, 2),
                 in_channels=4, caption_channels=4096, model_max_length=120, space_scale=1.0, time_scale=1.0,
                 mlp_ratio=4.0, pred_sigma=True, **_ignored):
        super().__init__()
        self.patch_size = tuple(patch_size)
        self.grid = tuple(s // p for s, p in zip(input_size, self.patch_size))
        T, H, W = self.grid
        self.out_channels = in_channels * 2 if pred_sigma else in_channels
        self.x_embedder = PatchEmbed3D(self.patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, model_max_length)
        self.blocks = nn.ModuleList([STDiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, self.patch_size[0] * self.patch_size[1] * self.patch_size[2],
                                      self.out_channels)
        # Fixed tables for the configured size; released files carry them too (the original recomputes them).
        self.register_buffer("pos_embed", sincos_pos_embed_2d(H, W, hidden_size, space_scale, None)[None])
        self.register_buffer("pos_embed_temporal", sincos_pos_embed_1d(T, hidden_size, time_scale)[None])

    @property
    def null_caption(self) -> torch.Tensor:
        return self.y_embedder.y_embedding

    def forward(self, x, timestep, y, mask=None, **_):
        """x [B,C,T,H,W] of exactly the configured input size; timestep [B]; y [B,1,L,Cc]; mask [1 or B, L]."""
        dtype = self.x_embedder.proj.weight.dtype
        b = x.shape[0]
        T, H, W = self.grid
        x, y = x.to(dtype), y.to(dtype)
        x = rearrange(self.x_embedder(x), "b (t s) c -> b t s c", t=T) + self.pos_embed.to(dtype)
        x = rearrange(x, "b t s c -> b (t s) c")
        t = self.t_embedder(timestep.to(dtype), dtype)
        t_mlp = self.t_block(t)
        y = self.y_embedder(y).squeeze(1)
        y_mask = None
        if mask is not None:
            mask = mask.repeat(b // mask.shape[0], 1) if mask.shape[0] != b else mask
            y_mask = mask.to(x.device) != 0
        else:  # v1.0 always builds per-sample caption lengths: all tokens of each sample's own caption
            y_mask = torch.ones(b, y.shape[1], dtype=torch.bool, device=x.device)
        for i, block in enumerate(self.blocks):
            x = block(x, y, y_mask, t_mlp, T, H * W, self.pos_embed_temporal.to(dtype) if i == 0 else None)
        x = self.final_layer(x, t, T, H * W)
        pt, ph, pw = self.patch_size
        x = rearrange(x, "b (nt nh nw) (pt ph pw c) -> b c (nt pt) (nh ph) (nw pw)", nt=T, nh=H, nw=W,
                      pt=pt, ph=ph, pw=pw)
        return x.float()


def load_stdit(sd: dict, **config) -> STDiT:
    """Strict load; the position tables are recomputed when a file lacks them (the original always does)."""
    model = build_strict(lambda: STDiT(**config), {**_tables(config), **sd}, "STDiT (Open-Sora 1.0)")
    return model


def _tables(config: dict) -> dict:
    ref = STDiT(**{**config, "depth": 0})
    return {"pos_embed": ref.pos_embed, "pos_embed_temporal": ref.pos_embed_temporal}


def load_released(sd: dict, model_max_length: int = 120):
    """A released v1.0 checkpoint (OpenSora-v1-16x256x256.pth, OpenSora-v1-HQ-16x512x512.pth: the state dict is
    already unwrapped). The fixed input size is read off the stored position tables (the original takes it
    from its config): the 256px model has a 32x32 latent and space_scale 0.5, the 512px one 64x64 and 1.0.
    Without the tables the 512px size is assumed. The head count is not stored: STDiT-XL/2's 16 is used.
    Returns (model, config)."""
    from ..checkpoint import fit_null_caption

    w = sd["x_embedder.proj.weight"]
    hidden, patch = w.shape[0], tuple(w.shape[2:])
    frames, side = RELEASED["input_size"][0], RELEASED["input_size"][1]
    if "pos_embed_temporal" in sd:
        frames = sd["pos_embed_temporal"].shape[1] * patch[0]
    if "pos_embed" in sd:
        side = round(sd["pos_embed"].shape[1] ** 0.5) * patch[1]
    config = dict(input_size=(frames, side, side), hidden_size=hidden,
                  depth=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks.")),
                  num_heads=16, patch_size=patch, in_channels=w.shape[1],
                  caption_channels=sd["y_embedder.y_proj.fc1.weight"].shape[1], model_max_length=model_max_length,
                  space_scale=side / 64, time_scale=1.0, mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
                  pred_sigma=sd["final_layer.linear.weight"].shape[0] == 2 * w.shape[1] * patch[0] * patch[1] * patch[2])
    sd = fit_null_caption({k: v for k, v in sd.items() if not k.startswith("pos_embed")}, model_max_length)
    return load_stdit(sd, **config), {"input_size": config["input_size"]}
