"""STDiT3: the Open-Sora 1.2 spatial-temporal diffusion transformer (released STDiT3-XL/2, 1.1B parameters).

Follows v1.2.0 `opensora/models/stdit/stdit3.py`. Every layer is a pair of blocks: a spatial block attends within
each frame, a temporal block across the frames of each spatial position (rotary positions after RMS qk-norm);
both cross-attend to the T5 caption and have their own MLP. Conditioned frames (x_mask False) are modulated with
the embedding of timestep 0 instead of t (the "t0 path"). State-dict keys are exactly the released ones.

Tokens stay laid out [B, T, S, C] (T latent frames, S = H*W patches per frame) between blocks, so per-frame
adaLN vectors broadcast over them and spatial attention is a free reshape.
"""
from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from ..checkpoint import build_strict, check_family, config_from_state_dict, fit_null_caption, normalize_stdit3
from ..layers import (CaptionEmbedder, CrossAttention, FinalLayer, Mlp, PatchEmbed3D, RotaryFreqs, SelfAttention,
                      SizeEmbedder, TimestepEmbedder, adaln_params, modulate, randn_init, sincos_pos_embed_2d)

RELEASED = dict(hidden_size=1152, depth=28, num_heads=16, patch_size=(1, 2, 2), in_channels=4,
                caption_channels=4096, model_max_length=300, qk_norm=True, pred_sigma=True, mlp_ratio=4.0,
                input_sq_size=512)


class STDiT3Block(nn.Module):
    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, qk_norm: bool, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.attn = SelfAttention(hidden, num_heads, qk_norm)
        self.cross_attn = CrossAttention(hidden, num_heads)
        self.norm2 = nn.LayerNorm(hidden, eps=1e-6, elementwise_affine=False)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.scale_shift_table = nn.Parameter(randn_init(6, hidden, divisor=hidden ** 0.5))

    def forward(self, x, y, y_mask, t_mlp, x_mask=None, t0_mlp=None, rope=None):
        """x [B, T, S, C]; y [B, L, C]; t_mlp / t0_mlp [B, 6C]; x_mask [B, T]; rope (cos, sin) for T frames."""
        b, T = x.shape[:2]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaln_params(
            self.scale_shift_table, t_mlp, x_mask, t0_mlp)

        h = modulate(self.norm1(x), shift_msa, scale_msa)
        if self.temporal:
            h = rearrange(self.attn(rearrange(h, "b t s c -> (b s) t c"), rope), "(b s) t c -> b t s c", b=b)
        else:
            h = rearrange(self.attn(rearrange(h, "b t s c -> (b t) s c")), "(b t) s c -> b t s c", b=b)
        x = x + gate_msa * h

        x = x + rearrange(self.cross_attn(rearrange(x, "b t s c -> b (t s) c"), y, y_mask),
                          "b (t s) c -> b t s c", t=T)

        return x + gate_mlp * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class STDiT3(nn.Module):
    """Constructor arguments are the released config's names; training-only ones (class_dropout_prob, drop_path,
    kernel switches, ...) are accepted and ignored."""

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
            [STDiT3Block(hidden_size, num_heads, mlp_ratio, qk_norm, temporal=False) for _ in range(depth)])
        self.temporal_blocks = nn.ModuleList(
            [STDiT3Block(hidden_size, num_heads, mlp_ratio, qk_norm, temporal=True) for _ in range(depth)])
        pt, ph, pw = self.patch_size
        self.final_layer = FinalLayer(hidden_size, pt * ph * pw, self.out_channels)

    @property
    def null_caption(self) -> torch.Tensor:
        """The learned unconditional caption [L, caption_channels]."""
        return self.y_embedder.y_embedding

    def forward(self, x, timestep, y, mask=None, x_mask=None, fps=None, height=None, width=None, **_):
        """The denoiser output [B, 2*in_ch (pred_sigma), T, h, w] in fp32 (the sampler uses channels :in_ch).

        x [B, C, T, h, w] latents; timestep [B] in 0..1000 units; y [B, 1, L, caption_channels] T5 features
        (null rows = null_caption); mask [1 or B, L] (nonzero = token; fewer rows than B are tiled, so the
        null rows of a CFG batch reuse the prompt's mask); x_mask [B, T] bool (False = conditioned frame, t0
        path); fps [B]; height / width [B] in pixels (only [0] is used, golden quirk 4). Extra keyword arguments
        the original ignores (num_frames, ar) are ignored.
        """
        dtype = self.x_embedder.proj.weight.dtype
        device = x.device
        b, _, t_in, h_in, w_in = x.shape
        pt, ph, pw = self.patch_size
        T, H, W = -(-t_in // pt), -(-h_in // ph), -(-w_in // pw)
        # As the original: inputs are cast to the weight dtype, the timestep included (966.67 -> 968 in bf16).
        x, y = x.to(dtype), y.to(device, dtype)
        timestep = _per_sample(timestep, b, "timestep", device).to(dtype)
        fps = _per_sample(fps, b, "fps", device).to(dtype)
        height, width = (_per_sample(v, b, n, device).to(dtype) for v, n in ((height, "height"), (width, "width")))

        # Multi-resolution position embedding: the size enters through scale and base_size. The original's
        # pixel size comes from tensors in the model dtype (bf16: 854 -> 856), hence the cast above.
        scale = (height[0].item() * width[0].item()) ** 0.5 / self.input_sq_size
        pos = sincos_pos_embed_2d(H, W, self.hidden_size, scale, round((H * W) ** 0.5), device=device).to(dtype)

        fps_emb = self.fps_embedder(fps[:, None], b, dtype)
        t = self.t_embedder(timestep, dtype) + fps_emb
        t_mlp = self.t_block(t)
        t0 = t0_mlp = None
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros_like(timestep), dtype) + fps_emb
            t0_mlp = self.t_block(t0)
            x_mask = x_mask.to(device).bool()

        y, y_mask = _caption_tokens(y, mask, b)
        y = self.y_embedder(y)
        rope = self.rope.cos_sin(T, dtype)

        x = rearrange(self.x_embedder(x), "b (t s) c -> b t s c", t=T) + pos
        for spatial, temporal in zip(self.spatial_blocks, self.temporal_blocks):
            x = spatial(x, y, y_mask, t_mlp, x_mask, t0_mlp)
            x = temporal(x, y, y_mask, t_mlp, x_mask, t0_mlp, rope)
        x = self.final_layer(rearrange(x, "b t s c -> b (t s) c"), t, T, H * W, x_mask, t0)
        x = rearrange(x, "b (nt nh nw) (pt ph pw c) -> b c (nt pt) (nh ph) (nw pw)", nt=T, nh=H, nw=W,
                      pt=pt, ph=ph, pw=pw)
        return x[:, :, :t_in, :h_in, :w_in].float()


def _per_sample(v, batch: int, name: str, device) -> torch.Tensor:
    """A per-sample value (scalar, [B], or [n] with n dividing B, tiled like the original's SizeEmbedder tiles
    fps for the CFG batch) as a [B] tensor."""
    if v is None:
        raise ValueError(f"STDiT3.forward: '{name}' is required (the v1.2 sampler passes it per sample)")
    v = torch.as_tensor(v, device=device).reshape(-1)
    if v.shape[0] == 0 or batch % v.shape[0]:
        raise ValueError(f"STDiT3.forward: '{name}' has {v.shape[0]} values for a batch of {batch}")
    return v.repeat(batch // v.shape[0])


def _caption_tokens(y, mask, batch: int):
    """y [B, 1, L, Cc] -> (y [B, L', Cc], y_mask [B, L'] bool or None).

    The original drops every masked token and lets each sample attend to its own remaining tokens. Tokens that
    no sample uses are dropped here (the caption MLP is per token, so this changes nothing but the work), and
    the mask is dropped when every remaining token is valid for every sample, the usual CFG batch of one
    prompt: then cross-attention is one unmasked batched call.
    """
    if y.ndim != 4 or y.shape[0] != batch:
        raise ValueError(f"STDiT3.forward: y must be [B={batch}, 1, L, C], got {tuple(y.shape)}")
    y = y[:, 0]
    if mask is None:
        return y, None
    mask = torch.as_tensor(mask, device=y.device)
    mask = mask.reshape(mask.shape[0], -1) != 0  # [B, L] or the original's [B, 1, 1, L]
    if batch % mask.shape[0] or mask.shape[1] != y.shape[1]:
        raise ValueError(f"STDiT3.forward: the caption mask {tuple(mask.shape)} does not fit y "
                         f"{tuple(y.shape)} (rows must divide the batch, columns equal the tokens)")
    mask = mask.repeat(batch // mask.shape[0], 1)  # [m0, m1] -> [m0, m1, m0, m1]: null rows reuse their mask
    if not mask.any(1).all():
        raise ValueError("STDiT3.forward: a caption mask row has no valid token (T5 always marks at least one)")
    used = mask.any(0)
    y, mask = y[:, used], mask[:, used]
    return y, (None if mask.all() else mask)


def load_stdit3(sd: dict, model_max_length: int | None = None) -> STDiT3:
    """Build an STDiT3 from a state dict's shapes (checkpoint.config_from_state_dict) and load it strictly
    (every key both ways, tensors adopted without copies). PixArt-initialised layouts are normalised first;
    with model_max_length the null caption is fitted to that many tokens (a PixArt-alpha file carries 120)."""
    family = check_family(sd, ("stdit3", "pixart"), "an Open-Sora 1.2 STDiT3")
    if family == "pixart" and not any(k.startswith("temporal_blocks.") for k in sd):
        raise ValueError("this is a PixArt image transformer (spatial blocks only): Open-Sora trains STDiT3 from "
                         "it, it cannot generate video itself; use the STDiT3 model (hpcai-tech/OpenSora-STDiT-v3)")
    if "x_embedder_cond.proj.weight" in sd:
        raise ValueError("this is an Open-Sora 1.3 STDiT3 (x_embedder_cond, 16 latent channels, spatial RoPE), "
                         "which is not supported: use the Open-Sora 1.2 model (hpcai-tech/OpenSora-STDiT-v3)")
    sd = normalize_stdit3(sd)
    if model_max_length is not None:
        sd = fit_null_caption(sd, model_max_length)
    config = config_from_state_dict(sd)
    return build_strict(lambda: STDiT3(**config), sd, "an Open-Sora 1.2 STDiT3")
