"""CogVideoX's expert-adaLN 3D full-attention transformer (2B, 5B, 5B-I2V, 1.5, 1.5-I2V), diffusers key names.

Text and video tokens share one LayerNorm but get separate adaLN modulation ("experts"), then attend jointly.
Positions by variant (all read off the config, which loading.config_from_state_dict reads off tensor shapes):
  2B      3D sincos table added to the video tokens;
  5B      3D RoPE on q, k of the video tokens, grid fitted into the sample grid ('linspace');
  5B-I2V  RoPE plus a learned table over [text; video] (a sincos table when the frame count differs);
  1.5     linear patch embedding over 2 frames x 2 x 2, RoPE on plain integer positions ('slice');
  1.5-I2V as 1.5 plus an `ofs` embedding added to the timestep embedding.
Numerics follow diffusers 0.42.1 (CogVideoXTransformer3DModel), the reference of the golden vectors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from ..layers import apply_rope_interleaved, attention, modulate, sincos_pos_embed_1d, timestep_embedding

CONFIG_DEFAULTS = dict(num_attention_heads=30, attention_head_dim=64, in_channels=16, out_channels=16,
                       time_embed_dim=512, text_embed_dim=4096, num_layers=30, sample_width=90, sample_height=60,
                       sample_frames=49, patch_size=2, patch_size_t=None, temporal_compression_ratio=4,
                       max_text_seq_length=226, spatial_interpolation_scale=1.875, temporal_interpolation_scale=1.0,
                       use_rotary_positional_embeddings=False, use_learned_positional_embeddings=False,
                       ofs_embed_dim=None, patch_bias=True, norm_eps=1e-5)
OFS_DEFAULT = 2.0  # the value the I2V pipelines (diffusers and SAT) always pass to 1.5-I2V


# --------------------------------------------------------------------------------------------
# Positions (pure functions)
# --------------------------------------------------------------------------------------------
def sincos_pos_embed_3d(dim: int, gh: int, gw: int, t: int, spatial_scale: float, temporal_scale: float,
                        device=None) -> torch.Tensor:
    """[t*gh*gw, dim], rows ordered (t, y, x): [S_{dim/4}(t) | S_{3dim/8}(x) | S_{3dim/8}(y)].
    The x (width) part comes first: diffusers builds the grid with meshgrid(w, h, indexing='xy')."""
    # The 1D tables are tiny and built in float64 (which MPS lacks): on the CPU, then moved.
    along_t = sincos_pos_embed_1d(t, dim // 4, temporal_scale).to(device)
    along_x = sincos_pos_embed_1d(gw, 3 * dim // 8, spatial_scale).to(device)
    along_y = sincos_pos_embed_1d(gh, 3 * dim // 8, spatial_scale).to(device)
    table = torch.cat([repeat(along_t, "t d -> t y x d", y=gh, x=gw),
                       repeat(along_x, "x d -> t y x d", t=t, y=gh),
                       repeat(along_y, "y d -> t y x d", t=t, x=gw)], dim=-1)
    return rearrange(table, "t y x d -> (t y x) d")


def resize_crop_region(gh: int, gw: int, base_w: int, base_h: int):
    """diffusers' get_resize_crop_region_for_grid: the grid's aspect fitted into the base grid, centred.
    Python's round() (banker's rounding) on purpose: it decides the crop at .5."""
    if gh / gw > base_h / base_w:
        rh, rw = base_h, int(round(base_h / gh * gw))
    else:
        rw, rh = base_w, int(round(base_w / gw * gh))
    top, left = int(round((base_h - rh) / 2.0)), int(round((base_w - rw) / 2.0))
    return (top, left), (top + rh, left + rw)


def _rope_1d(dim: int, pos: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Angles [n, dim]: pos * theta^(-2j/dim), each repeated for the pair (2j, 2j+1) it rotates."""
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32)[: dim // 2] / dim)
    return torch.outer(pos.float(), freqs).repeat_interleave(2, dim=1)


def rope_3d(head_dim: int, gh: int, gw: int, t: int, grid: str = "linspace", base_h: int = 30, base_w: int = 45):
    """(cos, sin) [t*gh*gw, head_dim] for tokens (t, y, x); the head splits [t: d/4 | y: 3d/8 | x: 3d/8].
    'linspace' (1.0): positions of the grid stretched over its crop of the base grid, so every resolution
    spans the positions seen in training; 'slice' (1.5): plain integers."""
    if grid == "linspace":
        (top, left), (bottom, right) = resize_crop_region(gh, gw, base_w, base_h)
        pos_y = torch.linspace(top, bottom * (gh - 1) / gh, gh, dtype=torch.float32)
        pos_x = torch.linspace(left, right * (gw - 1) / gw, gw, dtype=torch.float32)
        pos_t = torch.linspace(0, t * (t - 1) / t, t, dtype=torch.float32)
    else:
        pos_y, pos_x, pos_t = (torch.arange(n, dtype=torch.float32) for n in (gh, gw, t))
    d_t, d_s = head_dim // 4, head_dim // 8 * 3
    angles = torch.cat([repeat(_rope_1d(d_t, pos_t), "t d -> t y x d", y=gh, x=gw),
                        repeat(_rope_1d(d_s, pos_y), "y d -> t y x d", t=t, x=gw),
                        repeat(_rope_1d(d_s, pos_x), "x d -> t y x d", t=t, y=gh)], dim=-1)
    angles = rearrange(angles, "t y x d -> (t y x) d")
    return angles.cos(), angles.sin()


def rope_for_video(config: dict, height_px: int, width_px: int, latent_frames: int, vae_scale: int = 8):
    """The pipelines' _prepare_rotary_positional_embeddings: (cos, sin) for a video of this size."""
    p, pt = config["patch_size"], config.get("patch_size_t")
    gh, gw = height_px // (vae_scale * p), width_px // (vae_scale * p)
    if pt is None:
        base_h, base_w = config["sample_height"] // p, config["sample_width"] // p
        return rope_3d(config["attention_head_dim"], gh, gw, latent_frames, "linspace", base_h, base_w)
    return rope_3d(config["attention_head_dim"], gh, gw, (latent_frames + pt - 1) // pt, "slice")


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [..., N, D] rotated pairwise in fp32 (as diffusers' apply_rotary_emb), cast back to x's dtype."""
    return apply_rope_interleaved(x.float(), cos, sin).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Layers (attribute names = diffusers' state-dict keys)
# --------------------------------------------------------------------------------------------
class TimestepEmbedding(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.linear_1, self.linear_2 = nn.Linear(cin, cout), nn.Linear(cout, cout)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class AdaNorm(nn.Module):
    """LayerNorm plus `chunks` modulation vectors linear(silu(temb)) (CogVideoXLayerNormZero / AdaLayerNorm)."""

    def __init__(self, temb_dim: int, dim: int, chunks: int, eps: float):
        super().__init__()
        self.linear = nn.Linear(temb_dim, chunks * dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.chunks = chunks

    def modulation(self, temb):
        return [c[:, None] for c in self.linear(F.silu(temb)).chunk(self.chunks, dim=1)]


class Attention(nn.Module):
    """Joint self-attention over [text; video] with per-head LayerNorm on q, k; RoPE on video tokens only."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, heads * head_dim) for _ in range(3))
        self.norm_q, self.norm_k = nn.LayerNorm(head_dim, eps=1e-6), nn.LayerNorm(head_dim, eps=1e-6)
        self.to_out = nn.ModuleList([nn.Linear(heads * head_dim, dim)])

    def forward(self, x, text_len: int, rope=None):
        q, k, v = (rearrange(f(x), "b s (h d) -> b h s d", h=self.heads) for f in (self.to_q, self.to_k, self.to_v))
        q, k = self.norm_q(q), self.norm_k(k)
        if rope is not None:
            q = torch.cat([q[:, :, :text_len], apply_rope(q[:, :, text_len:], *rope)], dim=2)
            k = torch.cat([k[:, :, :text_len], apply_rope(k[:, :, text_len:], *rope)], dim=2)
        return self.to_out[0](rearrange(attention(q, k, v), "b h s d -> b s (h d)"))


class FeedForward(nn.Module):
    """D -> 4D -> D with tanh GELU; the Dropout slot keeps diffusers' index 2 for the output layer."""

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

    @staticmethod
    def _expert_residual(norm: AdaNorm, layer, hid, enc, temb):
        """One shared LayerNorm, separate (shift, scale, gate) for video and text, `layer` over both jointly."""
        shift, scale, gate, e_shift, e_scale, e_gate = norm.modulation(temb)
        text_len = enc.shape[1]
        out = layer(torch.cat([modulate(norm.norm(enc), e_shift, e_scale),
                               modulate(norm.norm(hid), shift, scale)], dim=1))
        return hid + gate * out[:, text_len:], enc + e_gate * out[:, :text_len]

    def forward(self, hid, enc, temb, rope=None):
        text_len = enc.shape[1]
        hid, enc = self._expert_residual(self.norm1, lambda s: self.attn1(s, text_len, rope), hid, enc, temb)
        return self._expert_residual(self.norm2, self.ff, hid, enc, temb)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: dict, dim: int):
        super().__init__()
        p, pt = cfg["patch_size"], cfg["patch_size_t"]
        if pt is None:  # 1.0: a Conv2d per frame
            self.proj = nn.Conv2d(cfg["in_channels"], dim, p, stride=p, bias=cfg["patch_bias"])
        else:  # 1.5: a Linear over (c, pt, py, px) features; patch_bias only ever applied to the Conv2d
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


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
class CogVideoXTransformer3D(nn.Module):
    """Constructor arguments: diffusers' config names (unknown names are ignored)."""

    def __init__(self, **config):
        super().__init__()
        cfg = {**CONFIG_DEFAULTS, **{k: v for k, v in config.items() if k in CONFIG_DEFAULTS}}
        self.config = cfg
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        self.inner_dim = dim
        self.patch_embed = PatchEmbed(cfg, dim)
        if cfg["use_learned_positional_embeddings"]:  # 5B-I2V: rows for the text and the sample-size video
            p, tc = cfg["patch_size"], cfg["temporal_compression_ratio"]
            video = (cfg["sample_height"] // p) * (cfg["sample_width"] // p) * ((cfg["sample_frames"] - 1) // tc + 1)
            self.patch_embed.pos_embedding = nn.Parameter(torch.zeros(1, cfg["max_text_seq_length"] + video, dim))
        self.time_embedding = TimestepEmbedding(dim, cfg["time_embed_dim"])
        self.ofs_embedding = TimestepEmbedding(cfg["ofs_embed_dim"], cfg["ofs_embed_dim"]) \
            if cfg["ofs_embed_dim"] else None
        self.transformer_blocks = nn.ModuleList(
            [CogVideoXBlock(dim, cfg["num_attention_heads"], cfg["attention_head_dim"], cfg["time_embed_dim"],
                            cfg["norm_eps"]) for _ in range(cfg["num_layers"])])
        self.norm_final = nn.LayerNorm(dim, eps=cfg["norm_eps"])
        self.norm_out = AdaNorm(cfg["time_embed_dim"], dim, 2, cfg["norm_eps"])
        self.proj_out = nn.Linear(dim, cfg["patch_size"] ** 2 * (cfg["patch_size_t"] or 1) * cfg["out_channels"])

    def _add_positions(self, enc, hid, h: int, w: int, frames: int):
        """Absolute positions: 2B sincos on the video tokens; 5B-I2V its learned table over [text; video]."""
        cfg = self.config
        learned = cfg["use_learned_positional_embeddings"]
        if cfg["use_rotary_positional_embeddings"] and not learned:
            return enc, hid
        pixel_frames = (frames - 1) * cfg["temporal_compression_ratio"] + 1
        if learned:
            if (h, w) != (cfg["sample_height"], cfg["sample_width"]):
                raise ValueError(f"CogVideoX-5B-I2V's learned positions only fit {cfg['sample_width'] * 8}x"
                                 f"{cfg['sample_height'] * 8} pixels; got {w * 8}x{h * 8}")
            if pixel_frames == cfg["sample_frames"]:
                table = self.patch_embed.pos_embedding
                if table.shape[1] != enc.shape[1] + hid.shape[1]:
                    raise ValueError(f"CogVideoX-5B-I2V's learned positions expect {cfg['max_text_seq_length']} "
                                     f"text tokens; got {enc.shape[1]}")
                seq = torch.cat([enc, hid], dim=1) + table.to(hid.dtype)
                return seq[:, : enc.shape[1]], seq[:, enc.shape[1]:]
            # Quirk (golden README 11): any other frame count silently gets the sincos table instead.
        p = cfg["patch_size"]
        table = sincos_pos_embed_3d(self.inner_dim, h // p, w // p, frames, cfg["spatial_interpolation_scale"],
                                    cfg["temporal_interpolation_scale"], device=hid.device)
        return enc, hid + table.to(hid.dtype)  # the text rows of the table are zero

    def forward(self, hidden_states, encoder_hidden_states, timestep, image_rotary_emb=None, ofs=None):
        """hidden_states [B,F,C,h,w] latent (frames before channels); encoder_hidden_states [B,L,text_dim];
        timestep [B] (or a scalar); image_rotary_emb (cos, sin) [N_video, head_dim], computed here when None
        for the RoPE variants; ofs [1] for 1.5-I2V (2.0 when None). Returns [B,F,out_channels,h,w]."""
        cfg = self.config
        b, f, _, h, w = hidden_states.shape
        p, pt = cfg["patch_size"], cfg["patch_size_t"]
        if pt and f % pt:
            raise ValueError(f"CogVideoX 1.5 patches {pt} latent frames at once; got {f} latent frames: pad the "
                             f"latent to a multiple of {pt} (the pipelines repeat noise in front)")
        dtype, device = hidden_states.dtype, hidden_states.device
        timestep = torch.as_tensor(timestep, device=device).reshape(-1).expand(b)
        temb = self.time_embedding(timestep_embedding(timestep, self.inner_dim).to(dtype))
        if self.ofs_embedding is not None:
            ofs = torch.full((1,), OFS_DEFAULT, device=device) if ofs is None else torch.as_tensor(ofs, device=device)
            temb = temb + self.ofs_embedding(timestep_embedding(ofs.reshape(-1), cfg["ofs_embed_dim"]).to(dtype))

        enc = self.patch_embed.text_proj(encoder_hidden_states)
        hid = self.patch_embed(hidden_states)
        enc, hid = self._add_positions(enc, hid, h, w, f)
        rope = image_rotary_emb
        if rope is None and cfg["use_rotary_positional_embeddings"]:
            rope = rope_for_video(cfg, h * 8, w * 8, f)
        if rope is not None:
            rope = tuple(r.to(device) for r in rope)

        for block in self.transformer_blocks:
            hid, enc = block(hid, enc, temb, rope)
        hid = self.norm_final(hid)  # per token, so normalising the video tokens alone equals SAT's all-token norm
        shift, scale = self.norm_out.modulation(temb)
        hid = self.proj_out(modulate(self.norm_out.norm(hid), shift, scale))
        return rearrange(hid, "b (f y x) (c pt py px) -> b (f pt) c (y py) (x px)", f=f // (pt or 1), y=h // p,
                         x=w // p, pt=pt or 1, py=p, px=p)
