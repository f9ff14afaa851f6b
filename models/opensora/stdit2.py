"""STDiT2: the Open-Sora 1.1 transformer (STDiT2-XL/2, 768M parameters, variable size, length and aspect ratio).

Follows v1.1 `opensora/models/stdit/stdit2.py`. One block per layer runs, in order: spatial attention (adaLN
from t + size/aspect embedding), temporal attention with its own norm and 3-vector adaLN (from t + length/fps
embedding) and RoPE applied *before* the qk-norm, cross-attention to the T5 caption, and the MLP. Conditioned
frames (x_mask False) take the timestep-0 vectors (the t0 path), as in STDiT3. Keys are the released ones
(HF hpcai-tech/OpenSora-STDiT-v2-stage3, model.safetensors, no prefix).
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..checkpoint import build_strict
from ..layers import (CaptionEmbedder, CrossAttention, FinalLayer, Mlp, PatchEmbed3D, RotaryFreqs, SelfAttention,
                      SizeEmbedder, TimestepEmbedder, adaln_params, modulate, randn_init, sincos_pos_embed_2d)
from .stdit3 import _caption_tokens, _per_sample

RELEASED = dict(hidden_size=1152, depth=28, num_heads=16, patch_size=(1, 2, 2), in_channels=4,
                caption_channels=4096, model_max_length=200, qk_norm=True, pred_sigma=True, mlp_ratio=4.0,
                input_sq_size=512)


class STDiT2Block(nn.Module):
    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.attn = SelfAttention(hidden, num_heads, qk_norm)
        self.scale_shift_table = nn.Parameter(randn_init(6, hidden, divisor=hidden ** 0.5))
        self.norm_temp = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.attn_temp = SelfAttention(hidden, num_heads, qk_norm, rope_before_norm=True)
        self.scale_shift_table_temporal = nn.Parameter(randn_init(3, hidden, divisor=hidden ** 0.5))
        self.cross_attn = CrossAttention(hidden, num_heads)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))

    def forward(self, x, y, y_mask, t_spc, t_tmp, rope, x_mask=None, t0_spc=None, t0_tmp=None):
        """x [B, T, S, C]; t_spc / t0_spc [B, 6C]; t_tmp / t0_tmp [B, 3C]; rope (cos, sin) for T frames."""
        b, T = x.shape[:2]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaln_params(
            self.scale_shift_table, t_spc, x_mask, t0_spc)
        shift_tmp, scale_tmp, gate_tmp = adaln_params(self.scale_shift_table_temporal, t_tmp, x_mask, t0_tmp)

        h = modulate(self.norm1(x), shift_msa, scale_msa)
        h = rearrange(self.attn(rearrange(h, "b t s c -> (b t) s c")), "(b t) s c -> b t s c", b=b)
        x = x + gate_msa * h

        h = modulate(self.norm_temp(x), shift_tmp, scale_tmp)
        h = rearrange(self.attn_temp(rearrange(h, "b t s c -> (b s) t c"), rope), "(b s) t c -> b t s c", b=b)
        x = x + gate_tmp * h

        x = x + rearrange(self.cross_attn(rearrange(x, "b t s c -> b (t s) c"), y, y_mask),
                          "b (t s) c -> b t s c", t=T)

        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class STDiT2(nn.Module):
    """Constructor arguments are the released config's names; training-only ones are accepted and ignored."""

    def __init__(self, hidden_size=1152, depth=28, num_heads=16, patch_size=(1, 2, 2), in_channels=4,
                 caption_channels=4096, model_max_length=200, qk_norm=True, pred_sigma=True, mlp_ratio=4.0,
                 input_sq_size=512, **_ignored):
        super().__init__()
        if hidden_size % 3:
            raise ValueError(f"STDiT2: hidden_size {hidden_size} must be divisible by 3 (size/aspect embedders)")
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
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        self.t_block_temp = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * hidden_size))
        self.y_embedder = CaptionEmbedder(caption_channels, hidden_size, model_max_length)
        self.rope = RotaryFreqs(hidden_size // num_heads)
        self.blocks = nn.ModuleList([STDiT2Block(hidden_size, num_heads, mlp_ratio, qk_norm) for _ in range(depth)])
        pt, ph, pw = self.patch_size
        self.final_layer = FinalLayer(hidden_size, pt * ph * pw, self.out_channels)
        # data_info = [size (h, w) -> 2 x C/3, aspect ratio -> C/3]: added to t for the spatial branch
        self.csize_embedder = SizeEmbedder(hidden_size // 3)
        self.ar_embedder = SizeEmbedder(hidden_size // 3)
        # frame count + fps: added to t for the temporal branch
        self.fl_embedder = SizeEmbedder(hidden_size)
        self.fps_embedder = SizeEmbedder(hidden_size)

    @property
    def null_caption(self) -> torch.Tensor:
        return self.y_embedder.y_embedding

    def forward(self, x, timestep, y, mask=None, x_mask=None, num_frames=None, height=None, width=None, ar=None,
                fps=None, **_):
        """The denoiser output [B, 2*in_ch (eps + learned variance), T, h, w] in fp32.

        x [B, C, T, h, w]; timestep [B] DDPM steps; y [B, 1, L, Cc]; mask [1 or B, L]; x_mask [B, T] bool;
        num_frames / height / width (pixels) / ar (h/w) / fps: per-sample [B] (or fewer rows, tiled)."""
        dtype = self.x_embedder.proj.weight.dtype
        device = x.device
        b, _, t_in, h_in, w_in = x.shape
        pt, ph, pw = self.patch_size
        T, H, W = -(-t_in // pt), -(-h_in // ph), -(-w_in // pw)
        x, y = x.to(dtype), y.to(device, dtype)
        timestep = _per_sample(timestep, b, "timestep", device).to(dtype)
        height, width, ar, num_frames, fps = (_per_sample(v, b, n, device).to(dtype) for v, n in (
            (height, "height"), (width, "width"), (ar, "ar"), (num_frames, "num_frames"), (fps, "fps")))

        data_info = torch.cat([self.csize_embedder(torch.stack([height, width], 1), b, dtype),
                               self.ar_embedder(ar[:, None], b, dtype)], dim=1)
        fl = self.fl_embedder(num_frames[:, None], b, dtype) + self.fps_embedder(fps[:, None], b, dtype)

        scale = (height[0].item() * width[0].item()) ** 0.5 / self.input_sq_size
        pos = sincos_pos_embed_2d(H, W, self.hidden_size, scale, round((H * W) ** 0.5), device=device).to(dtype)

        t = self.t_embedder(timestep, dtype)
        t_spc, t_tmp = self.t_block(t + data_info), self.t_block_temp(t + fl)
        t0_spc = t0_spc_mlp = t0_tmp_mlp = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep), dtype)
            t0_spc = t0 + data_info
            t0_spc_mlp, t0_tmp_mlp = self.t_block(t0_spc), self.t_block_temp(t0 + fl)
            x_mask = x_mask.to(device).bool()

        if mask is None:  # v1.1 without a token mask: every sample attends to all L tokens of its own caption
            mask = torch.ones(1, y.shape[2], dtype=torch.bool, device=device)
        y, y_mask = _caption_tokens(y, mask, b)
        y = self.y_embedder(y)
        rope = self.rope.cos_sin(T, dtype)

        x = rearrange(self.x_embedder(x), "b (t s) c -> b t s c", t=T) + pos
        for block in self.blocks:
            x = block(x, y, y_mask, t_spc, t_tmp, rope, x_mask, t0_spc_mlp, t0_tmp_mlp)
        # Quirk of the original: normal frames use the plain t here, conditioned frames t0 + data_info.
        x = self.final_layer(rearrange(x, "b t s c -> b (t s) c"), t, T, H * W, x_mask, t0_spc)
        x = rearrange(x, "b (nt nh nw) (pt ph pw c) -> b c (nt pt) (nh ph) (nw pw)", nt=T, nh=H, nw=W,
                      pt=pt, ph=ph, pw=pw)
        return x[:, :, :t_in, :h_in, :w_in].float()


def config_from_state_dict(sd: dict) -> dict:
    """STDiT2 arguments from tensor shapes. num_heads is not stored: the released 1152-wide model has 16 heads
    (head dim 72) and RoPE's `freqs` holds head_dim / 2 values, which gives it for any width."""
    hidden = sd["x_embedder.proj.weight"].shape[0]
    head_dim = sd["rope.freqs"].shape[0] * 2
    patch = tuple(sd["x_embedder.proj.weight"].shape[2:])
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    out = sd["final_layer.linear.weight"].shape[0] // (patch[0] * patch[1] * patch[2])
    in_ch = sd["x_embedder.proj.weight"].shape[1]
    return dict(hidden_size=hidden, depth=depth, num_heads=hidden // head_dim, patch_size=patch, in_channels=in_ch,
                caption_channels=sd["y_embedder.y_proj.fc1.weight"].shape[1],
                model_max_length=sd["y_embedder.y_embedding"].shape[0], qk_norm="blocks.0.attn.q_norm.weight" in sd,
                pred_sigma=out == 2 * in_ch, mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden)


def load_stdit2(sd: dict) -> STDiT2:
    """Strict load of a released-layout state dict (HF model.safetensors or the .pth, already unwrapped)."""
    config = config_from_state_dict(sd)
    return build_strict(lambda: STDiT2(**config), sd, "an Open-Sora 1.1 STDiT2")
