"""CogVideoX's expert-adaLN 3D full-attention transformer (2B, 5B, 5B-I2V, 1.5, 1.5-I2V), diffusers key names.

Text and video tokens share one LayerNorm but get separate adaLN modulation ("experts"), then attend jointly.
Positions: 2B adds a 3D sincos table, 5B / 1.5 rotate q,k of video tokens with 3D RoPE, 5B-I2V adds a learned
table (falling back to sincos when the frame count differs) on top of RoPE, 1.5 patches 2 frames at once.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..layers import attention

CONFIG_DEFAULTS = dict(num_attention_heads=30, attention_head_dim=64, in_channels=16, out_channels=16,
                       time_embed_dim=512, text_embed_dim=4096, num_layers=30, sample_width=90, sample_height=60,
                       sample_frames=49, patch_size=2, patch_size_t=None, temporal_compression_ratio=4,
                       max_text_seq_length=226, spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0,
                       use_rotary_positional_embeddings=False, use_learned_positional_embeddings=False,
                       ofs_embed_dim=None, patch_bias=True, norm_eps=1e-5)


# --------------------------------------------------------------------------------------------
# Positions
# --------------------------------------------------------------------------------------------
def timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """[cos | sin] of t * 10000^(-j/half), fp32 (diffusers Timesteps(flip_sin_to_cos=True, shift=0))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    a = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(a), torch.sin(a)], dim=-1)


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed_3d(dim: int, gh: int, gw: int, t: int, spatial_scale: float, temporal_scale: float):
    """[t*gh*gw, dim] rows (t, y, x): [S_{dim/4}(t) | S_{3dim/8}(x) | S_{3dim/8}(y)], built in float64."""
    ys, xs = np.meshgrid(np.arange(gh) / spatial_scale, np.arange(gw) / spatial_scale, indexing="ij")
    spatial = np.concatenate([_sincos_1d(3 * dim // 8, xs), _sincos_1d(3 * dim // 8, ys)], axis=1)  # x first
    temporal = _sincos_1d(dim // 4, np.arange(t) / temporal_scale)
    table = np.concatenate([np.repeat(temporal[:, None], gh * gw, axis=1),
                            np.repeat(spatial[None], t, axis=0)], axis=-1)
    return torch.from_numpy(table.reshape(t * gh * gw, dim)).float()


def _rope_1d(dim: int, pos: torch.Tensor, theta: float = 10000.0):
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim)
    angles = torch.outer(pos.float(), freqs)
    return angles.cos().repeat_interleave(2, dim=1), angles.sin().repeat_interleave(2, dim=1)


def resize_crop_region(gh: int, gw: int, base_w: int, base_h: int):
    """diffusers get_resize_crop_region_for_grid: fit the grid into the base grid, centred (banker's round)."""
    if gh / gw > base_h / base_w:
        rh, rw = base_h, int(round(base_h / gh * gw))
    else:
        rw, rh = base_w, int(round(base_w / gw * gh))
    top, left = int(round((base_h - rh) / 2.0)), int(round((base_w - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def rope_3d(head_dim: int, gh: int, gw: int, t: int, grid: str = "linspace", base_h: int = 30, base_w: int = 45):
    """(cos, sin) [t*gh*gw, head_dim] with the head split [t: d/4 | h: 3d/8 | w: 3d/8], interleaved pairs.
    'linspace' (1.0): positions from the grid fitted into the base grid; 'slice' (1.5): plain integers."""
    if grid == "linspace":
        (top, left), (bottom, right) = resize_crop_region(gh, gw, base_w, base_h)
        pos_h = torch.linspace(top, bottom * (gh - 1) / gh, gh, dtype=torch.float32)
        pos_w = torch.linspace(left, right * (gw - 1) / gw, gw, dtype=torch.float32)
        pos_t = torch.linspace(0, t * (t - 1) / t, t, dtype=torch.float32)
    else:
        pos_h, pos_w, pos_t = (torch.arange(n, dtype=torch.float32) for n in (gh, gw, t))
    dt, dh = head_dim // 4, head_dim // 8 * 3
    parts = [_rope_1d(dt, pos_t), _rope_1d(dh, pos_h), _rope_1d(dh, pos_w)]

    def combine(i):
        ft, fh, fw = (p[i] for p in parts)
        return torch.cat([ft[:, None, None].expand(-1, gh, gw, -1), fh[None, :, None].expand(t, -1, gw, -1),
                          fw[None, None].expand(t, gh, -1, -1)], dim=-1).reshape(t * gh * gw, -1)

    return combine(0), combine(1)


def rope_for_video(config: dict, height_px: int, width_px: int, latent_frames: int, vae_scale: int = 8):
    """The pipeline's _prepare_rotary_positional_embeddings for a video of this size."""
    p, pt = config["patch_size"], config.get("patch_size_t")
    gh, gw = height_px // (vae_scale * p), width_px // (vae_scale * p)
    base_h, base_w = config["sample_height"] // p, config["sample_width"] // p
    if pt is None:
        return rope_3d(config["attention_head_dim"], gh, gw, latent_frames, "linspace", base_h, base_w)
    return rope_3d(config["attention_head_dim"], gh, gw, (latent_frames + pt - 1) // pt, "slice")


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B,H,N,D]: pairs (2i, 2i+1) rotated, in fp32."""
    x1, x2 = rearrange(x.float(), "... (d r) -> r ... d", r=2)
    rotated = rearrange(torch.stack([-x2, x1]), "r ... d -> ... (d r)")
    return (x.float() * cos + rotated * sin).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------
class TimestepEmbedding(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(cin, cout), nn.Linear(cout, cout)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class AdaNorm(nn.Module):
    """LayerNorm plus `linear(silu(temb))` modulation chunks (CogVideoXLayerNormZero / AdaLayerNorm)."""

    def __init__(self, temb_dim: int, dim: int, chunks: int, eps: float):
        super().__init__()
        self.linear = nn.Linear(temb_dim, chunks * dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.chunks = chunks

    def modulation(self, temb):
        return [c[:, None] for c in self.linear(F.silu(temb)).chunk(self.chunks, dim=1)]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, heads * head_dim) for _ in range(3))
        self.norm_q, self.norm_k = nn.LayerNorm(head_dim, eps=1e-6), nn.LayerNorm(head_dim, eps=1e-6)
        self.to_out = nn.ModuleList([nn.Linear(heads * head_dim, dim)])

    def forward(self, x, text_len: int, rope=None):
        q, k, v = (rearrange(f(x), "b s (h d) -> b h s d", h=self.heads) for f in (self.to_q, self.to_k, self.to_v))
        q, k = self.norm_q(q), self.norm_k(k)
        if rope is not None:  # video tokens only
            q = torch.cat([q[:, :, :text_len], apply_rope(q[:, :, text_len:], *rope)], dim=2)
            k = torch.cat([k[:, :, :text_len], apply_rope(k[:, :, text_len:], *rope)], dim=2)
        return self.to_out[0](rearrange(attention(q, k, v), "b h s d -> b s (h d)"))


class FeedForward(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        proj = nn.Module()
        proj.proj = nn.Linear(dim, 4 * dim)
        self.net = nn.ModuleList([proj, nn.Dropout(0.0), nn.Linear(4 * dim, dim)])

    def forward(self, x):
        return self.net[2](F.gelu(self.net[0].proj(x), approximate="tanh"))


class CogVideoXBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, temb_dim: int, eps: float):
        super().__init__()
        self.norm1 = AdaNorm(temb_dim, dim, 6, eps)
        self.attn1 = Attention(dim, heads, head_dim)
        self.norm2 = AdaNorm(temb_dim, dim, 6, eps)
        self.ff = FeedForward(dim)

    def forward(self, hid, enc, temb, rope):
        text_len = enc.shape[1]
        for norm, f in ((self.norm1, lambda s: self.attn1(s, text_len, rope)), (self.norm2, self.ff)):
            shift, scale, gate, e_shift, e_scale, e_gate = norm.modulation(temb)
            n_h = norm.norm(hid) * (1 + scale) + shift
            n_e = norm.norm(enc) * (1 + e_scale) + e_shift
            out = f(torch.cat([n_e, n_h], dim=1))
            hid = hid + gate * out[:, text_len:]
            enc = enc + e_gate * out[:, :text_len]
        return hid, enc


class PatchEmbed(nn.Module):
    def __init__(self, cfg: dict, dim: int):
        super().__init__()
        p, pt = cfg["patch_size"], cfg["patch_size_t"]
        if pt is None:
            self.proj = nn.Conv2d(cfg["in_channels"], dim, p, stride=p, bias=cfg["patch_bias"])
        else:
            self.proj = nn.Linear(cfg["in_channels"] * p * p * pt, dim)
        self.text_proj = nn.Linear(cfg["text_embed_dim"], dim)
        self.p, self.pt = p, pt

    def forward(self, x):
        """x [B,F,C,h,w] -> video tokens [B, N, D] ordered (f, y, x)."""
        if self.pt is None:
            b = x.shape[0]
            tokens = self.proj(rearrange(x, "b f c h w -> (b f) c h w"))
            return rearrange(tokens, "(b f) d y x -> b (f y x) d", b=b)
        tokens = rearrange(x, "b (f pt) c (y py) (x px) -> b (f y x) (c pt py px)", pt=self.pt, py=self.p, px=self.p)
        return self.proj(tokens)


class CogVideoXTransformer3D(nn.Module):
    def __init__(self, **config):
        super().__init__()
        cfg = {**CONFIG_DEFAULTS, **{k: v for k, v in config.items() if k in CONFIG_DEFAULTS}}
        self.config = cfg
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        self.inner_dim = dim
        self.patch_embed = PatchEmbed(cfg, dim)
        if cfg["use_learned_positional_embeddings"]:
            n = cfg["max_text_seq_length"] + self._patches(cfg["sample_height"], cfg["sample_width"], cfg["sample_frames"])
            self.patch_embed.pos_embedding = nn.Parameter(torch.zeros(1, n, dim))
        self.time_embedding = TimestepEmbedding(dim, cfg["time_embed_dim"])
        self.ofs_embedding = TimestepEmbedding(cfg["ofs_embed_dim"], cfg["ofs_embed_dim"]) \
            if cfg["ofs_embed_dim"] else None
        self.transformer_blocks = nn.ModuleList(
            [CogVideoXBlock(dim, cfg["num_attention_heads"], cfg["attention_head_dim"], cfg["time_embed_dim"],
                            cfg["norm_eps"]) for _ in range(cfg["num_layers"])])
        self.norm_final = nn.LayerNorm(dim, eps=cfg["norm_eps"])
        self.norm_out = AdaNorm(cfg["time_embed_dim"], dim, 2, cfg["norm_eps"])
        pt = cfg["patch_size_t"] or 1
        self.proj_out = nn.Linear(dim, cfg["patch_size"] ** 2 * pt * cfg["out_channels"])

    def _patches(self, h, w, frames):
        c = self.config if hasattr(self, "config") else CONFIG_DEFAULTS
        t = (frames - 1) // c["temporal_compression_ratio"] + 1
        return (h // c["patch_size"]) * (w // c["patch_size"]) * t

    def _position_table(self, h: int, w: int, frames: int, device):
        """[1, L + N, D] added to [text; video] (2B sincos, 5B-I2V learned), or None (RoPE only)."""
        cfg = self.config
        learned = cfg["use_learned_positional_embeddings"]
        if cfg["use_rotary_positional_embeddings"] and not learned:
            return None
        if learned and (h != cfg["sample_height"] or w != cfg["sample_width"]):
            raise ValueError(f"CogVideoX-5B-I2V's learned positions only fit {cfg['sample_height'] * 8}x"
                             f"{cfg['sample_width'] * 8}; got {h * 8}x{w * 8}")
        pixel_frames = (frames - 1) * cfg["temporal_compression_ratio"] + 1
        if learned and pixel_frames == cfg["sample_frames"]:
            return self.patch_embed.pos_embedding
        # Quirk (golden README 11): 5B-I2V with another frame count silently uses the sincos table.
        p = cfg["patch_size"]
        t = (pixel_frames - 1) // cfg["temporal_compression_ratio"] + 1
        table = sincos_pos_embed_3d(self.inner_dim, h // p, w // p, t, cfg["spatial_interpolation_scale"],
                                    cfg["temporal_interpolation_scale"])
        return torch.cat([torch.zeros(cfg["max_text_seq_length"], self.inner_dim), table])[None].to(device)

    def forward(self, hidden_states, encoder_hidden_states, timestep, image_rotary_emb=None, ofs=None):
        """hidden_states [B,F,C,h,w]; encoder_hidden_states [B,L,text_dim]; timestep [B]; rope (cos, sin)."""
        cfg = self.config
        b, f, _, h, w = hidden_states.shape
        dtype = hidden_states.dtype
        temb = self.time_embedding(timestep_sinusoid(timestep, self.inner_dim).to(dtype))
        if self.ofs_embedding is not None:
            ofs = torch.full((1,), 2.0, device=hidden_states.device) if ofs is None else ofs
            temb = temb + self.ofs_embedding(timestep_sinusoid(ofs.reshape(-1), cfg["ofs_embed_dim"]).to(dtype))
        enc = self.patch_embed.text_proj(encoder_hidden_states)
        hid = self.patch_embed(hidden_states)
        table = self._position_table(h, w, f, hidden_states.device)
        if table is not None:
            seq = torch.cat([enc, hid], dim=1) + table[:, : enc.shape[1] + hid.shape[1]].to(dtype)
            enc, hid = seq[:, : enc.shape[1]], seq[:, enc.shape[1]:]
        rope = None
        if image_rotary_emb is not None:
            rope = tuple(r.to(hidden_states.device) for r in image_rotary_emb)
        for block in self.transformer_blocks:
            hid, enc = block(hid, enc, temb, rope)
        hid = self.norm_final(hid)  # per token, so normalising video tokens alone equals the all-token norm
        shift, scale = self.norm_out.modulation(temb)
        hid = self.proj_out(self.norm_out.norm(hid) * (1 + scale) + shift)
        p, pt = cfg["patch_size"], cfg["patch_size_t"]
        if pt is None:
            return rearrange(hid, "b (f y x) (c py px) -> b f c (y py) (x px)", f=f, y=h // p, x=w // p, py=p, px=p)
        return rearrange(hid, "b (f y x) (c pt py px) -> b (f pt) c (y py) (x px)", f=(f + pt - 1) // pt,
                         y=h // p, x=w // p, pt=pt, py=p, px=p)
