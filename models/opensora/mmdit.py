"""Open-Sora 2.0's MMDiT: the Flux architecture on video tokens.

Text (T5) and video tokens first run through double-stream blocks (separate weights per stream, one joint
attention over [txt; img]), then through single-stream blocks on the concatenated sequence. The timestep, the
CLIP pooled vector and (for guidance-distilled Flux) the guidance scale are summed into one vector `vec` that
modulates every block. Positions are 3D RoPE over (t, h, w) patch coordinates; text tokens sit at (0, 0, 0).

Differences from FLUX.1 that the released video model has:
- `cond_in`: the i2v condition (a 1-channel mask and the masked reference latent, packed like the image) is
  projected and added to the image tokens;
- q, k, v are separate linears (`q_proj`, `k_proj`, `v_proj`; single blocks `q_proj`, `k_proj`, `v_mlp`).
  FLUX.1's fused `qkv` / `linear1` are split at load time (`split_fused_qkv`), so one block class serves both;
- RoPE pairs channels (d, d + D/2) (Liger's rotate-half kernel, `use_liger_rope=True`), whereas FLUX.1 pairs
  (2d, 2d + 1). The same weights give different outputs, so the pairing is a config flag (`rope_half_split`).

Tokens are packed `b c t (h 2) (w 2) -> b (t h w) (c 2 2)` (channel slowest), see `pack` / `unpack`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import attention, rms_norm, timestep_embedding

RELEASED = dict(in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24,
                depth=19, depth_single_blocks=38, axes_dim=(16, 56, 56), theta=10000, qkv_bias=True,
                guidance_embed=False, cond_embed=True, patch_size=2, rope_half_split=True)


# --------------------------------------------------------------------------------------------------------------
# Packing and positions
# --------------------------------------------------------------------------------------------------------------
def pack(x: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """[B, C, T, H, W] -> [B, T*(H/p)*(W/p), C*p*p]"""
    return rearrange(x, "b c t (h ph) (w pw) -> b (t h w) (c ph pw)", ph=patch, pw=patch)


def unpack(x: torch.Tensor, t: int, h: int, w: int, patch: int = 2) -> torch.Tensor:
    """[B, T*(H/p)*(W/p), C*p*p] -> [B, C, T, H, W] (h, w in latent pixels)"""
    return rearrange(x, "b (t h w) (c ph pw) -> b c t (h ph) (w pw)", t=t, h=h // patch, w=w // patch,
                     ph=patch, pw=patch)


def image_ids(batch: int, t: int, h: int, w: int, patch: int = 2, device=None) -> torch.Tensor:
    """[B, T*(H/p)*(W/p), 3] integer (frame, row, column) patch coordinates, as floats."""
    grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h // patch), torch.arange(w // patch),
                                      indexing="ij"), dim=-1).float()
    return rearrange(grid, "t h w three -> (t h w) three")[None].repeat(batch, 1, 1).to(device)


def rope_angles(ids: torch.Tensor, axes_dim, theta: float, dtype=torch.float32) -> torch.Tensor:
    """[B, L, 3] positions -> [B, L, head_dim/2] angles pos * theta^(-2k/d_axis), axis by axis. The Liger path
    computes them in fp32; FLUX.1's reference path in fp64 (then rounds cos/sin to fp32)."""
    parts = []
    for i, d in enumerate(axes_dim):
        omega = 1.0 / theta ** (torch.arange(0, d, 2, dtype=dtype, device=ids.device) / d)
        parts.append(ids[..., i, None].to(dtype) * omega)
    return torch.cat(parts, dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, half_split: bool) -> torch.Tensor:
    """Rotate x [B, H, L, D] in fp32 by cos/sin [B, 1, L, D/2]; pairs (d, d + D/2) or (2d, 2d + 1)."""
    x32 = x.float()
    if half_split:
        x1, x2 = x32.chunk(2, dim=-1)
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    else:
        x1, x2 = x32[..., 0::2], x32[..., 1::2]
        out = torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)
    return out.to(x.dtype)


# --------------------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------------------
class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden)
        self.out_layer = nn.Linear(hidden, hidden)

    def forward(self, x):
        return self.out_layer(F.silu(self.in_layer(x)))


class ScaleRMSNorm(nn.Module):
    """RMSNorm whose weight is named `scale` (Flux's key name)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.scale, 1e-6)


class QKNorm(nn.Module):
    def __init__(self, head_dim: int):
        super().__init__()
        self.query_norm = ScaleRMSNorm(head_dim)
        self.key_norm = ScaleRMSNorm(head_dim)

    def forward(self, q, k, v):
        return self.query_norm(q).to(v), self.key_norm(k).to(v)


class Modulation(nn.Module):
    """lin(silu(vec)) split into n vectors [B, 1, C]: (shift, scale, gate) once or twice."""

    def __init__(self, dim: int, n: int):
        super().__init__()
        self.n = n
        self.lin = nn.Linear(dim, n * dim)

    def forward(self, vec):
        return self.lin(F.silu(vec))[:, None].chunk(self.n, dim=-1)


class StreamAttention(nn.Module):
    """One stream's half of a double block's joint attention: q/k/v projections, qk-norm, output proj."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(dim, dim, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def qkv(self, x):
        q, k, v = (rearrange(lin(x), "b l (h d) -> b h l d", h=self.num_heads)
                   for lin in (self.q_proj, self.k_proj, self.v_proj))
        q, k = self.norm(q, k, v)
        return q, k, v


def joint_attention(q, k, v, rope, half_split: bool):
    """Attention over the whole [txt; img] sequence with RoPE; [B, H, L, D] -> [B, L, H*D]."""
    q, k = apply_rope(q, *rope, half_split), apply_rope(k, *rope, half_split)
    return rearrange(attention(q, k, v), "b h l d -> b l (h d)")


def mlp(hidden: int, ratio: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden, int(hidden * ratio)), nn.GELU(approximate="tanh"),
                         nn.Linear(int(hidden * ratio), hidden))


def modulate(x, shift, scale):
    return (1 + scale) * F.layer_norm(x, x.shape[-1:], eps=1e-6) + shift


class DoubleStreamBlock(nn.Module):
    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, half_split: bool):
        super().__init__()
        self.half_split = half_split
        self.img_mod, self.txt_mod = Modulation(hidden, 6), Modulation(hidden, 6)
        self.img_attn = StreamAttention(hidden, num_heads, qkv_bias)
        self.txt_attn = StreamAttention(hidden, num_heads, qkv_bias)
        self.img_mlp, self.txt_mlp = mlp(hidden, mlp_ratio), mlp(hidden, mlp_ratio)

    def forward(self, img, txt, vec, rope):
        img_shift1, img_scale1, img_gate1, img_shift2, img_scale2, img_gate2 = self.img_mod(vec)
        txt_shift1, txt_scale1, txt_gate1, txt_shift2, txt_scale2, txt_gate2 = self.txt_mod(vec)
        img_q, img_k, img_v = self.img_attn.qkv(modulate(img, img_shift1, img_scale1))
        txt_q, txt_k, txt_v = self.txt_attn.qkv(modulate(txt, txt_shift1, txt_scale1))
        out = joint_attention(torch.cat([txt_q, img_q], 2), torch.cat([txt_k, img_k], 2),
                              torch.cat([txt_v, img_v], 2), rope, self.half_split)
        txt_out, img_out = out[:, : txt.shape[1]], out[:, txt.shape[1]:]

        img = img + img_gate1 * self.img_attn.proj(img_out)
        img = img + img_gate2 * self.img_mlp(modulate(img, img_shift2, img_scale2))
        txt = txt + txt_gate1 * self.txt_attn.proj(txt_out)
        txt = txt + txt_gate2 * self.txt_mlp(modulate(txt, txt_shift2, txt_scale2))
        return img, txt


class SingleStreamBlock(nn.Module):
    """Parallel attention + MLP (ViT-22B style): q, k and [v, mlp_in] from the same modulated input."""

    def __init__(self, hidden: int, num_heads: int, mlp_ratio: float, half_split: bool):
        super().__init__()
        self.num_heads, self.half_split = num_heads, half_split
        self.mlp_hidden = int(hidden * mlp_ratio)
        self.q_proj = nn.Linear(hidden, hidden)
        self.k_proj = nn.Linear(hidden, hidden)
        self.v_mlp = nn.Linear(hidden, hidden + self.mlp_hidden)
        self.linear2 = nn.Linear(hidden + self.mlp_hidden, hidden)
        self.norm = QKNorm(hidden // num_heads)
        self.modulation = Modulation(hidden, 3)

    def forward(self, x, vec, rope):
        shift, scale, gate = self.modulation(vec)
        x_mod = modulate(x, shift, scale)
        v, mlp_in = self.v_mlp(x_mod).split([x.shape[-1], self.mlp_hidden], dim=-1)
        q, k, v = (rearrange(a, "b l (h d) -> b h l d", h=self.num_heads) for a in (self.q_proj(x_mod),
                                                                                 self.k_proj(x_mod), v))
        q, k = self.norm(q, k, v)
        attn = joint_attention(q, k, v, rope, self.half_split)
        return x + gate * self.linear2(torch.cat([attn, F.gelu(mlp_in, approximate="tanh")], dim=-1))


class LastLayer(nn.Module):
    def __init__(self, hidden: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(hidden, out_features)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, vec):
        shift, scale = self.adaLN_modulation(vec)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(x, shift, scale))


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------
class MMDiT(nn.Module):
    def __init__(self, in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0,
                 num_heads=24, depth=19, depth_single_blocks=38, axes_dim=(16, 56, 56), theta=10000, qkv_bias=True,
                 guidance_embed=False, cond_embed=True, patch_size=2, rope_half_split=True):
        super().__init__()
        if sum(axes_dim) != hidden_size // num_heads:
            raise ValueError(f"axes_dim {list(axes_dim)} must sum to the head dim {hidden_size // num_heads}")
        self.config = dict(in_channels=in_channels, vec_in_dim=vec_in_dim, context_in_dim=context_in_dim,
                           hidden_size=hidden_size, mlp_ratio=mlp_ratio, num_heads=num_heads, depth=depth,
                           depth_single_blocks=depth_single_blocks, axes_dim=tuple(axes_dim), theta=theta,
                           qkv_bias=qkv_bias, guidance_embed=guidance_embed, cond_embed=cond_embed,
                           patch_size=patch_size, rope_half_split=rope_half_split)
        self.in_channels, self.patch_size = in_channels, patch_size
        self.axes_dim, self.theta, self.half_split = tuple(axes_dim), theta, rope_half_split
        self.img_in = nn.Linear(in_channels, hidden_size)
        self.time_in = MLPEmbedder(256, hidden_size)
        self.vector_in = MLPEmbedder(vec_in_dim, hidden_size)
        self.guidance_in = MLPEmbedder(256, hidden_size) if guidance_embed else None
        # the i2v condition: a mask channel per latent pixel (patch^2 per token) plus the masked reference latent
        self.cond_in = nn.Linear(in_channels + patch_size ** 2, hidden_size) if cond_embed else None
        self.txt_in = nn.Linear(context_in_dim, hidden_size)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(hidden_size, num_heads, mlp_ratio, qkv_bias,
                                                             rope_half_split) for _ in range(depth))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(hidden_size, num_heads, mlp_ratio, rope_half_split)
                                           for _ in range(depth_single_blocks))
        self.final_layer = LastLayer(hidden_size, in_channels)

    @property
    def dtype(self):
        return self.img_in.weight.dtype

    def rope(self, img_ids, txt_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) [B, 1, L + N, head_dim/2] of the joint [txt, img] sequence. They depend on the ids only,
        which stay fixed over a sampling run: samplers compute them once and pass them to every step."""
        ids = torch.cat([txt_ids, img_ids], dim=1)
        angles = rope_angles(ids, self.axes_dim, self.theta, torch.float32 if self.half_split else torch.float64)
        return angles.cos().float()[:, None], angles.sin().float()[:, None]

    def forward(self, img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None, guidance=None, rope=None):
        """img [B, N, in_channels] packed latent tokens, img_ids [B, N, 3]; txt [B, L, context_in_dim] T5
        features, txt_ids [B, L, 3]; timesteps [B] flow time in [0, 1] (1 = noise); y_vec [B, vec_in_dim] CLIP
        pooled; cond [B, N, in_channels + patch^2] (cond_embed models); guidance [B] (guidance_embed models);
        rope: self.rope(img_ids, txt_ids), computed here when None.
        Returns the velocity (noise - data) per token [B, N, in_channels]."""
        img = self.img_in(img)
        if self.cond_in is not None:
            if cond is None:
                raise ValueError("this MMDiT has cond_in (image conditioning): pass cond (zeros for text-to-video)")
            img = img + self.cond_in(cond)
        # The embedding is computed from 1000*t in t's own dtype (bf16 in the released pipeline).
        vec = self.time_in(timestep_embedding(timesteps * 1000, 256).to(timesteps.dtype))
        if self.guidance_in is not None:
            if guidance is None:
                raise ValueError("this MMDiT is guidance-distilled: pass guidance")
            vec = vec + self.guidance_in(timestep_embedding(guidance * 1000, 256).to(guidance.dtype))
        vec = vec + self.vector_in(y_vec)
        txt = self.txt_in(txt)

        if rope is None:
            rope = self.rope(img_ids, txt_ids)
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, rope)
        x = torch.cat([txt, img], dim=1)
        for block in self.single_blocks:
            x = block(x, vec, rope)
        return self.final_layer(x[:, txt.shape[1]:], vec)


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------
def split_fused_qkv(sd: dict, hidden: int) -> dict:
    """FLUX.1 naming (`*_attn.qkv`, single `linear1`) -> the split names the released video model uses."""
    out = {}
    for key, value in sd.items():
        prefix, _, kind = key.rpartition(".")
        if prefix.endswith("_attn.qkv"):
            base = prefix[: -len("qkv")]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                out[f"{base}{name}.{kind}"] = part
        elif prefix.startswith("single_blocks.") and prefix.endswith(".linear1"):
            base = prefix[: -len("linear1")]
            q, k, v_mlp = value.split([hidden, hidden, value.shape[0] - 2 * hidden], dim=0)
            out.update({f"{base}q_proj.{kind}": q, f"{base}k_proj.{kind}": k, f"{base}v_mlp.{kind}": v_mlp})
        else:
            out[key] = value
    return out


def config_from_state_dict(sd: dict, rope_half_split: bool | None = None) -> dict:
    """Widths and depths from the weight shapes. The head count is not stored: the released head dim (128) is
    assumed when it divides the width, else 32 (the golden tiny configs). RoPE pairing is not stored either:
    models with `cond_in` (Open-Sora 2.0 video) pair halves, Flux-named ones (fused `qkv`) interleave."""
    hidden, in_channels = sd["img_in.weight"].shape
    head_dim = 128 if hidden % 128 == 0 and hidden >= 128 else 32
    fused = any(k.endswith("_attn.qkv.weight") for k in sd)
    cond = "cond_in.weight" in sd
    num_heads = hidden // head_dim
    t_dim = head_dim // 8  # Open-Sora / Flux split: 1/8 of the head dim for time, the rest shared by h and w
    hw = (head_dim - t_dim) // 2
    return dict(
        in_channels=in_channels, vec_in_dim=sd["vector_in.in_layer.weight"].shape[1],
        context_in_dim=sd["txt_in.weight"].shape[1], hidden_size=hidden,
        mlp_ratio=sd["double_blocks.0.img_mlp.0.weight"].shape[0] / hidden, num_heads=num_heads,
        depth=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("double_blocks.")),
        depth_single_blocks=1 + max((int(k.split(".")[1]) for k in sd if k.startswith("single_blocks.")), default=-1),
        axes_dim=(t_dim, hw, head_dim - t_dim - hw), theta=10000, qkv_bias="double_blocks.0.img_attn.q_proj.bias" in sd
        or "double_blocks.0.img_attn.qkv.bias" in sd, guidance_embed="guidance_in.in_layer.weight" in sd,
        cond_embed=cond, patch_size=int(round((sd["cond_in.weight"].shape[1] - in_channels) ** 0.5)) if cond else 2,
        rope_half_split=(not fused) if rope_half_split is None else rope_half_split)


def is_mmdit(sd: dict) -> bool:
    return "double_blocks.0.img_mod.lin.weight" in sd and "txt_in.weight" in sd


def load_mmdit(sd: dict, **overrides) -> MMDiT:
    """An MMDiT from a released state dict (Open-Sora 2.0 split names or FLUX.1 fused names)."""
    config = {**config_from_state_dict(sd), **overrides}
    sd = split_fused_qkv(sd, config["hidden_size"])
    with torch.device("meta"):
        model = MMDiT(**config)
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"not an Open-Sora 2.0 / Flux MMDiT checkpoint: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.eval()
