"""Open-Sora 2.0's Video DC-AE (`dc-ae-f32t4c128`): a deterministic video autoencoder, 32x in space, 4x in
time, 128 latent channels (`opensora/models/dc_ae/`, weights `F32T4C128_AE.safetensors`, keys as released).

Layout (widths [128,256,512,512,1024,1024]):
* Encoder: conv in, six stages (ResBlock x3 stages, then EfficientViT blocks with multi-scale linear attention
  and a GLU MBConv), each but the last ending in a stride-2 conv (also stride 2 in time after stages 3 and 4),
  conv out to the latent. Depths [2,2,2,3,3,3].
* Decoder: the mirror image, depths [3,3,3,3,3,3]; each stage but the deepest starts with a nearest 2x
  upsample + conv; then RMSNorm, ReLU, conv out.
* Every resampling step and both ends have a parameter-free shortcut that moves values between space and
  channels (pixel-unshuffle then channel averaging going down, channel repeat then pixel-shuffle going up), so
  the convolutions learn residuals around a fixed space-to-depth path.
* Convolutions are 3x3x3 with zero padding on every side, time included: the AE is not causal. A single frame
  (T = 1) is an image: resampling then leaves time alone, so 1 frame <-> 1 latent, 4k frames <-> k latents.
* No posterior: encode is deterministic.

Tiling follows the original's inference path (configs/vae/inference/video_dc_ae.py, used by
configs/diffusion/inference/high_compression.py): windows of 32 frames / 256 px at a stride of (1 - overlap)
of a window, each encoded alone, then every window cross-fades its first overlap * window outputs from its
predecessor's last ones (in time; in space from the tile above, then the tile to the left) and keeps its first
(1 - overlap) * window outputs. Decoding mirrors it in latent windows of 8. Windows are also batch-split: the
original runs the network one sample at a time, and so does this (peak memory is one sample's window).
The latent window sizes follow the pixel ones (tile // 32, tile // 4); the original computes them once from its
config (256, 32) and keeps them when DC_AE() changes the pixel sizes, which only matters for non-default
sizes; the golden data confirms that windows consistent with the pixel sizes are what it was generated with.

Latent scaling (open question in the spec, section 2.5), decision: **no scaling by default**
(`scaling_factor=None`: encode returns the raw encoder output and decode takes it). Evidence:
* the released inference configs (configs/diffusion/inference/high_compression.py and
  configs/vae/inference/video_dc_ae.py) pass no scaling_factor to DC_AE(), so the released DiT
  (Open_Sora_v2_Video_DC_AE.safetensors) is sampled and decoded on raw latents; the golden config records
  `"scaling_factor": null` for both the tiny model and the released DC_AE kwargs;
* the released AE file carries no scale tensor (the key list has none), so nothing in the weights decides it;
* only configs/diffusion/train/high_compression.py sets 0.493 (= std(z); encode divides by it, decode multiplies,
  confirmed in Open-Sora issue #838).
To reproduce training-time latents pass `scaling_factor=TRAIN_SCALING_FACTOR` (to load_dc_ae or the
constructor) or set the attribute; `None` and `1.0` are both no-ops.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from torch import nn

from ..checkpoint import build_strict
from ..tiling import check_window_inputs, decode_windowed, original_windows

TRAIN_SCALING_FACTOR = 0.493  # configs/diffusion/train/high_compression.py; see the module docstring

# dc_ae_f32("dc-ae-f32t4c128"): what config_from_state_dict falls back to for what shapes cannot tell.
RELEASED = dict(
    in_channels=3, latent_channels=128,
    encoder_widths=(128, 256, 512, 512, 1024, 1024), encoder_depths=(2, 2, 2, 3, 3, 3),
    decoder_widths=(128, 256, 512, 512, 1024, 1024), decoder_depths=(3, 3, 3, 3, 3, 3),
    encoder_blocks=("ResBlock",) * 3 + ("EViTS5_GLU",) * 3, decoder_blocks=("ResBlock",) * 3 + ("EViTS5_GLU",) * 3,
    temporal_downsample=(False, False, False, True, True, False),
    temporal_upsample=(False, False, False, True, True, False),
)
# configs/vae/inference/video_dc_ae.py (also the diffusion inference config's `ae`).
INFERENCE_TILING = dict(use_spatial_tiling=True, use_temporal_tiling=True, spatial_tile_size=256,
                        temporal_tile_size=32, tile_overlap_factor=0.25)
ATTENTION_HEAD_DIM = 32  # LiteMLA dim: heads = width // 32
MBCONV_EXPAND = 4
BLOCK_SCALES = {"ResBlock": None, "EViT_GLU": (), "EViTS5_GLU": (5,)}  # EViT*: LiteMLA aggregation kernels


# ------------------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------------------
class RMSNorm3d(nn.Module):
    """RMS over channels with a weight and a bias; statistics in float32 whatever the activations' dtype."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        x = (x / torch.sqrt(x.float().square().mean(dim=1, keepdim=True) + self.eps)).to(x.dtype)
        return x * self.weight.view(-1, 1, 1, 1) + self.bias.view(-1, 1, 1, 1)


class Conv(nn.Module):
    """The original ConvLayer: conv ('same' zero padding, time included), then optional RMSNorm and activation."""

    def __init__(self, cin, cout, kernel=1, stride=1, groups=1, bias=False, norm=False, act=None):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=bias)
        self.norm = RMSNorm3d(cout) if norm else None
        self.act = act

    def forward(self, x):
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return x if self.act is None else self.act(x)


class OpSequential(nn.Module):
    """nn.Sequential under the original's key name (`op_list.N`)."""

    def __init__(self, ops):
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x):
        for op in self.op_list:
            x = op(x)
        return x


class Residual(nn.Module):
    """main(x) + shortcut(x); the identity when no shortcut is given."""

    def __init__(self, main: nn.Module, shortcut: nn.Module | None = None):
        super().__init__()
        self.main = main
        self.shortcut = shortcut

    def forward(self, x):
        return self.main(x) + (x if self.shortcut is None else self.shortcut(x))


def _uses_time(temporal: bool, x) -> bool:
    # A single frame is an image: the temporal resampling steps (and their shortcuts) leave it alone.
    return temporal and x.shape[2] != 1


class SpaceToChannelAverage(nn.Module):
    """Parameter-free downsampling shortcut: pixel-unshuffle (factor in space, and in time when temporal), then
    average consecutive groups of the resulting channels down to cout."""

    def __init__(self, cin, cout, factor=2, temporal=False):
        super().__init__()
        self.cin, self.cout, self.factor, self.temporal = cin, cout, factor, temporal

    def forward(self, x):
        ft = self.factor if _uses_time(self.temporal, x) else 1
        x = rearrange(x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w", ft=ft, fh=self.factor, fw=self.factor)
        return reduce(x, "b (c g) t h w -> b c t h w", "mean", c=self.cout)


class ChannelToSpaceDuplicate(nn.Module):
    """Parameter-free upsampling shortcut: repeat every channel, then pixel-shuffle (in time too when temporal)
    to cout channels."""

    def __init__(self, cin, cout, factor=2, temporal=False):
        super().__init__()
        self.cin, self.cout, self.factor, self.temporal = cin, cout, factor, temporal

    def forward(self, x):
        ft = self.factor if _uses_time(self.temporal, x) else 1
        x = repeat(x, "b c t h w -> b (c k) t h w", k=self.cout * ft * self.factor ** 2 // self.cin)
        return rearrange(x, "b (c ft fh fw) t h w -> b c (t ft) (h fh) (w fw)", ft=ft, fh=self.factor, fw=self.factor)


class InterpolateConv(nn.Module):
    """Nearest 2x upsampling (time too when temporal and T > 1), then a 3x3x3 conv."""

    def __init__(self, cin, cout, temporal=False):
        super().__init__()
        self.temporal = temporal
        self.conv = Conv(cin, cout, 3, bias=True)

    def forward(self, x):
        ft = 2 if _uses_time(self.temporal, x) else 1
        return self.conv(repeat(x, "b c t h w -> b c (t ft) (h fh) (w fw)", ft=ft, fh=2, fw=2))


def downsample(cin, cout, temporal) -> Residual:
    stride = (2 if temporal else 1, 2, 2)
    return Residual(Conv(cin, cout, 3, stride=stride, bias=True), SpaceToChannelAverage(cin, cout, 2, temporal))


def upsample(cin, cout, temporal) -> Residual:
    return Residual(InterpolateConv(cin, cout, temporal), ChannelToSpaceDuplicate(cin, cout, 2, temporal))


# ------------------------------------------------------------------------------------------------------------
# Blocks
# ------------------------------------------------------------------------------------------------------------
class ResBlock(nn.Module):
    """conv (bias) -> SiLU -> conv (no bias) -> RMSNorm; the residual is added by the enclosing Residual."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = Conv(channels, channels, 3, bias=True, act=nn.SiLU())
        self.conv2 = Conv(channels, channels, 3, norm=True)

    def forward(self, x):
        return self.conv2(self.conv1(x))


class LiteMLA(nn.Module):
    """Multi-scale ReLU linear attention over all T*H*W positions of a window.

    q, k, v come from a 1x1x1 conv; each extra scale mixes them over a k^3 neighbourhood (depthwise conv, then a
    1x1x1 conv within each head's 32 q|k|v channels) and adds as many heads again. Attention is
    relu(q) . (sum_n v_n relu(k_n)^T) / (relu(q) . sum_n relu(k_n)): linear in the number of positions."""

    def __init__(self, channels, head_dim=ATTENTION_HEAD_DIM, scales=(5,), eps=1e-15):
        super().__init__()
        heads = channels // head_dim
        inner = heads * head_dim
        self.head_dim, self.eps = head_dim, eps
        self.qkv = Conv(channels, 3 * inner, 1)
        self.aggreg = nn.ModuleList([
            nn.Sequential(
                nn.Conv3d(3 * inner, 3 * inner, s, padding=s // 2, groups=3 * inner, bias=False),
                nn.Conv3d(3 * inner, 3 * inner, 1, groups=3 * heads, bias=False),
            ) for s in scales])
        self.proj = Conv(inner * (1 + len(scales)), channels, 1, norm=True)

    def forward(self, x):
        qkv = self.qkv(x)
        qkv = torch.cat([qkv] + [agg(qkv) for agg in self.aggreg], dim=1)
        t, h, w = qkv.shape[-3:]
        # The sums run over every position of the window: accumulate them in float32 (the original does so for
        # fp16 only; in bf16 this differs from it by rounding alone).
        qkv = rearrange(qkv.float(), "b (g d) t h w -> b g d (t h w)", d=3 * self.head_dim)
        q, k, v = qkv.split(self.head_dim, dim=2)
        q, k = F.relu(q), F.relu(k)
        # A row of ones under v makes the same two products also give the normaliser relu(k)-sum . relu(q).
        v = F.pad(v, (0, 0, 0, 1), value=1.0)
        out = (v @ k.transpose(-1, -2)) @ q
        out = out[:, :, :-1] / (out[:, :, -1:] + self.eps)
        out = rearrange(out, "b g d (t h w) -> b (g d) t h w", t=t, h=h, w=w).to(x.dtype)
        return self.proj(out)


class GLUMBConv(nn.Module):
    """1x1x1 expand (x2 for the gate) -> SiLU -> depthwise 3x3x3 -> half * SiLU(other half) -> 1x1x1 -> RMSNorm."""

    def __init__(self, channels, expand=MBCONV_EXPAND):
        super().__init__()
        mid = round(channels * expand)
        self.inverted_conv = Conv(channels, 2 * mid, 1, bias=True, act=nn.SiLU())
        self.depth_conv = Conv(2 * mid, 2 * mid, 3, groups=2 * mid, bias=True)
        self.point_conv = Conv(mid, channels, 1, norm=True)

    def forward(self, x):
        x, gate = self.depth_conv(self.inverted_conv(x)).chunk(2, dim=1)
        return self.point_conv(x * F.silu(gate))


class EfficientViTBlock(nn.Module):
    """Global context (linear attention) then local mixing (GLU MBConv), each residual."""

    def __init__(self, channels, scales=(5,)):
        super().__init__()
        self.context_module = Residual(LiteMLA(channels, scales=scales))
        self.local_module = Residual(GLUMBConv(channels))

    def forward(self, x):
        return self.local_module(self.context_module(x))


def make_block(kind: str, channels: int) -> nn.Module:
    if kind not in BLOCK_SCALES:
        raise ValueError(f"unknown DC-AE block type '{kind}' (known: {', '.join(BLOCK_SCALES)})")
    if kind == "ResBlock":
        return Residual(ResBlock(channels))
    return EfficientViTBlock(channels, BLOCK_SCALES[kind])


# ------------------------------------------------------------------------------------------------------------
# Encoder / decoder
# ------------------------------------------------------------------------------------------------------------
class Encoder(nn.Module):
    def __init__(self, in_channels, latent_channels, widths, depths, blocks, temporal_downsample):
        super().__init__()
        if depths[0] == 0:
            raise ValueError("a video DC-AE needs blocks in its first encoder stage (the original has no video "
                             "path for a downsampling project_in)")
        self.project_in = Conv(in_channels, widths[0], 3, bias=True)
        stages = []
        for i, (width, depth, kind) in enumerate(zip(widths, depths, blocks)):
            ops = [make_block(kind, width) for _ in range(depth)]
            if i < len(widths) - 1 and depth > 0:
                ops.append(downsample(width, widths[i + 1], temporal_downsample[i]))
            stages.append(OpSequential(ops))
        self.stages = nn.ModuleList(stages)
        self.project_out = Residual(OpSequential([Conv(widths[-1], latent_channels, 3, bias=True)]),
                                    SpaceToChannelAverage(widths[-1], latent_channels, factor=1))

    def forward(self, x):
        x = self.project_in(x)
        for stage in self.stages:
            x = stage(x)
        return self.project_out(x)


class Decoder(nn.Module):
    """stages[i] mirrors encoder stage i (same key index) and they run deepest first."""

    def __init__(self, out_channels, latent_channels, widths, depths, blocks, temporal_upsample):
        super().__init__()
        if depths[0] == 0:
            raise ValueError("a video DC-AE needs blocks in its first decoder stage")
        self.project_in = Residual(Conv(latent_channels, widths[-1], 3, bias=True),
                                   ChannelToSpaceDuplicate(latent_channels, widths[-1], factor=1))
        stages = []
        for i, (width, depth, kind) in enumerate(zip(widths, depths, blocks)):
            ops = [upsample(widths[i + 1], width, temporal_upsample[i])] if i < len(widths) - 1 and depth > 0 else []
            stages.append(OpSequential(ops + [make_block(kind, width) for _ in range(depth)]))
        self.stages = nn.ModuleList(stages)
        self.project_out = OpSequential([RMSNorm3d(widths[0]), nn.ReLU(), Conv(widths[0], out_channels, 3, bias=True)])

    def forward(self, z):
        x = self.project_in(z)
        for stage in reversed(self.stages):
            x = stage(x)
        return self.project_out(x)


# ------------------------------------------------------------------------------------------------------------
# Tiling (the original's order and blend, generic over the tiled axes)
# ------------------------------------------------------------------------------------------------------------
def blend(prev: torch.Tensor, cur: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """cur with its first `extent` samples along dim faded in from prev's last ones: weight i/extent for cur's
    sample i. extent shrinks to what both have (the original's blend_t / blend_v / blend_h)."""
    extent = min(prev.shape[dim], cur.shape[dim], extent)
    if extent <= 0:
        return cur
    shape = [1] * cur.ndim
    shape[dim] = extent
    w = (torch.arange(extent, device=cur.device, dtype=torch.float32) / extent).view(shape)
    head = prev.narrow(dim, prev.shape[dim] - extent, extent).float() * (1 - w) + cur.narrow(dim, 0, extent).float() * w
    return torch.cat([head.to(cur.dtype), cur.narrow(dim, extent, cur.shape[dim] - extent)], dim=dim)


def run_tiled(fn, x: torch.Tensor, dims: tuple[int, ...], window: int, stride: int, extent: int, keep: int):
    """fn on windows of `window` samples every `stride` along each of dims (the last ones may be shorter), then
    stitched: windows are visited in row-major order and each blends, along each dim in the order given, with
    its already blended predecessor on that dim; each then keeps its first `keep` outputs per dim."""
    grids = [range(0, x.shape[d], stride) for d in dims]
    out = {}
    for index in itertools.product(*[range(len(g)) for g in grids]):
        piece = x
        for d, g, i in zip(dims, grids, index):
            piece = piece.narrow(d, g[i], min(window, x.shape[d] - g[i]))
        y = fn(piece)
        for k, d in enumerate(dims):
            if index[k] > 0:
                y = blend(out[index[:k] + (index[k] - 1,) + index[k + 1:]], y, extent, d)
        out[index] = y

    def stitch(prefix: tuple, k: int) -> torch.Tensor:
        if k == len(dims):
            y = out[prefix]
            for d in dims:
                y = y.narrow(d, 0, min(keep, y.shape[d]))
            return y
        return torch.cat([stitch(prefix + (i,), k + 1) for i in range(len(grids[k]))], dim=dims[k])

    return stitch((), 0)


# ------------------------------------------------------------------------------------------------------------
# The model
# ------------------------------------------------------------------------------------------------------------
class VideoDCAE(nn.Module):
    """DCAE with keys encoder.* / decoder.* as released. encode: x [B,3,T,H,W] in -1..1 -> z [B,C,T/4,H/32,W/32]
    (T = 1 or a multiple of 4; H, W multiples of 32); decode: the reverse (a 1-latent video decodes to 1 frame).

    Tiling attributes use the original DC_AE() names and default to its inference config (INFERENCE_TILING)."""

    def __init__(self, in_channels=3, latent_channels=128, encoder_widths=RELEASED["encoder_widths"],
                 encoder_depths=RELEASED["encoder_depths"], encoder_blocks=RELEASED["encoder_blocks"],
                 decoder_widths=RELEASED["decoder_widths"], decoder_depths=RELEASED["decoder_depths"],
                 decoder_blocks=RELEASED["decoder_blocks"], temporal_downsample=RELEASED["temporal_downsample"],
                 temporal_upsample=RELEASED["temporal_upsample"], scaling_factor: float | None = None,
                 use_spatial_tiling: bool = True, use_temporal_tiling: bool = True, spatial_tile_size: int = 256,
                 temporal_tile_size: int = 32, tile_overlap_factor: float = 0.25):
        super().__init__()
        for name, lists in (("encoder", (encoder_widths, encoder_depths, encoder_blocks, temporal_downsample)),
                            ("decoder", (decoder_widths, decoder_depths, decoder_blocks, temporal_upsample))):
            if len({len(v) for v in lists}) != 1:
                raise ValueError(f"{name} widths / depths / block types / temporal flags differ in length: "
                                 f"{[len(v) for v in lists]}")
        self.encoder = Encoder(in_channels, latent_channels, encoder_widths, encoder_depths, encoder_blocks,
                               temporal_downsample)
        self.decoder = Decoder(in_channels, latent_channels, decoder_widths, decoder_depths, decoder_blocks,
                               temporal_upsample)
        self.in_channels, self.latent_channels = in_channels, latent_channels
        # Resampling stages are the ones with blocks (the original skips empty stages entirely).
        down = [i for i, d in enumerate(encoder_depths[:-1]) if d > 0]
        self.spatial_ratio = 2 ** len(down)
        self.time_ratio = 2 ** sum(bool(temporal_downsample[i]) for i in down)
        self._time_steps = [bool(temporal_downsample[i]) for i in down]
        self.scaling_factor = scaling_factor
        self.use_spatial_tiling, self.use_temporal_tiling = use_spatial_tiling, use_temporal_tiling
        self.spatial_tile_size, self.temporal_tile_size = spatial_tile_size, temporal_tile_size
        self.tile_overlap_factor = tile_overlap_factor

    # -- sizes ------------------------------------------------------------------------------------------------
    @property
    def spatial_tile_latent_size(self) -> int:
        return self.spatial_tile_size // self.spatial_ratio

    @property
    def temporal_tile_latent_size(self) -> int:
        return self.temporal_tile_size // self.time_ratio

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for a valid frame count (1 -> 1, 128 -> 32); see check_num_frames."""
        t = num_frames
        for temporal in self._time_steps:
            t = t // 2 if temporal and t != 1 else t
        return t

    def check_num_frames(self, num_frames: int):
        """(problem, fix) when a window of num_frames cannot be encoded in one pass, else None: every temporal
        downsampling halves time exactly (a single frame stays one), as the shortcut's unshuffle requires."""
        t = num_frames
        for temporal in self._time_steps:
            if temporal and t != 1:
                if t % 2:
                    return (f"{num_frames} frames cannot be encoded: the time axis must halve exactly at every "
                            f"temporal downsampling", f"use 1 frame or a multiple of {self.time_ratio}")
                t //= 2
        return None

    # -- one window -------------------------------------------------------------------------------------------
    def _run_per_sample(self, net, x):
        # One sample at a time, as the original (and with one sample's activations in memory).
        return torch.cat([net(x[i:i + 1]) for i in range(x.shape[0])], dim=0)

    def _encode_window(self, x):
        problem = self.check_num_frames(x.shape[2])
        if problem is None and (x.shape[3] % self.spatial_ratio or x.shape[4] % self.spatial_ratio):
            problem = (f"a {x.shape[3]}x{x.shape[4]} px window cannot be encoded", f"use heights and widths that "
                       f"are multiples of {self.spatial_ratio} (tiles of spatial_tile_size must be too)")
        if problem:
            raise ValueError(f"{problem[0]}. Fix: {problem[1]}")
        return self._run_per_sample(self.encoder, x)

    def _encode_frames(self, x):
        s = self.spatial_tile_size
        if self.use_spatial_tiling and (x.shape[-2] > s or x.shape[-1] > s):
            o = self.tile_overlap_factor
            latent = self.spatial_tile_latent_size
            extent = int(latent * o)
            return run_tiled(self._encode_window, x, (-2, -1), s, self._stride(s), extent, latent - extent)
        return self._encode_window(x)

    def _decode_frames(self, z):
        s = self.spatial_tile_latent_size
        if self.use_spatial_tiling and (z.shape[-2] > s or z.shape[-1] > s):
            extent = int(self.spatial_tile_size * self.tile_overlap_factor)
            return run_tiled(self._decode_window, z, (-2, -1), s, self._stride(s), extent,
                             self.spatial_tile_size - extent)
        return self._decode_window(z)

    def _decode_window(self, z):
        return self._run_per_sample(self.decoder, z)

    def _stride(self, window: int) -> int:
        stride = int(window * (1 - self.tile_overlap_factor))
        if stride < 1:
            raise ValueError(f"tile_overlap_factor {self.tile_overlap_factor} leaves no stride for a window of "
                             f"{window}. Fix: use a smaller overlap or a larger tile")
        return stride

    def encoder_runs(self, shape) -> tuple[nn.Module, int]:
        """The encoder and how many times an encode of a [B, 3, T, H, W] video runs it (progress)."""
        return self.encoder, self.calls(shape, decode=False)

    def calls(self, shape, decode: bool) -> int:
        """How many times encode / decode of a [B, C, T, H, W] input runs the encoder / decoder (one per sample,
        tile and time window): the length of their progress bars."""
        tile = self.spatial_tile_latent_size if decode else self.spatial_tile_size
        tsize = self.temporal_tile_latent_size if decode else self.temporal_tile_size
        return shape[0] * original_windows(shape[2:], tile, tsize, self._stride, self.use_spatial_tiling,
                                           self.use_temporal_tiling)

    def _param(self):
        return self.encoder.project_in.conv.weight

    # -- public -----------------------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,T,H,W] in -1..1 -> z [B,C,t,h,w] (divided by scaling_factor when one is set), in the
        weights' dtype. Tiled in time when T > temporal_tile_size, in space when H or W > spatial_tile_size."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"the DC-AE encodes videos [B, {self.in_channels}, T, H, W], got {tuple(x.shape)}")
        p = self._param()
        x = x.to(device=p.device, dtype=p.dtype)
        s = self.temporal_tile_size
        if self.use_temporal_tiling and x.shape[2] > s:
            latent = self.temporal_tile_latent_size
            extent = int(latent * self.tile_overlap_factor)
            z = run_tiled(self._encode_frames, x, (2,), s, self._stride(s), extent, latent - extent)
        else:
            z = self._encode_frames(x)
        return z if self.scaling_factor is None else z / self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B,C,t,h,w] (as encode returns it) -> x [B,3,T,32h,32w] in about -1..1, in the weights' dtype.
        Tiled in time when t > temporal_tile_size / 4, in space when h or w > spatial_tile_size / 32."""
        if z.ndim != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(f"the DC-AE decodes latents [B, {self.latent_channels}, t, h, w], got {tuple(z.shape)}")
        p = self._param()
        z = z.to(device=p.device, dtype=p.dtype)
        if self.scaling_factor is not None:
            z = z * self.scaling_factor
        s = self.temporal_tile_latent_size
        if self.use_temporal_tiling and z.shape[2] > s:
            extent = int(self.temporal_tile_size * self.tile_overlap_factor)
            return run_tiled(self._decode_frames, z, (2,), s, self._stride(s), extent, self.temporal_tile_size - extent)
        return self._decode_frames(z)

    # -- the pack's VAE interface (pipeline.VideoVAE) ------------------------------------------
    def encode_video(self, x):
        return self.encode(x)

    def window_settings(self, temporal_chunk: int, spatial_tile: int, spatial_overlap: int) -> dict:
        """The tiling attributes OpenSora VAE Decode's inputs stand for (tiling.check_window_inputs). 0 keeps
        the released tiles: 256 px, a quarter blended; in time windows of 8 latents."""
        check_window_inputs(self.spatial_ratio, temporal_chunk, spatial_tile, spatial_overlap)
        tiles = {"use_temporal_tiling": True}
        if temporal_chunk:
            tiles["temporal_tile_size"] = temporal_chunk * self.time_ratio
        if spatial_tile:
            tiles.update(spatial_tile_size=spatial_tile, tile_overlap_factor=spatial_overlap / spatial_tile)
        return tiles

    def decode_video(self, z, num_frames: int, temporal_chunk: int = 0, temporal_overlap: int = 0,
                     spatial_tile: int = 0, spatial_overlap: int = 64):
        return decode_windowed(self, z, num_frames, self.window_settings(temporal_chunk, spatial_tile, spatial_overlap))


# ------------------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------------------
def _indices(sd: dict, prefix: str) -> list[int]:
    return sorted({int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix)})


def _block_kind(sd: dict, p: str) -> str | None:
    """The block type at key prefix p, None for a resampling op."""
    if p + "main.conv1.conv.weight" in sd:
        return "ResBlock"
    if p + "context_module.main.qkv.conv.weight" in sd:
        scales = tuple(sd[f"{p}context_module.main.aggreg.{j}.0.weight"].shape[-1]
                       for j in _indices(sd, p + "context_module.main.aggreg."))
        kinds = [k for k, v in BLOCK_SCALES.items() if v == scales]
        if not kinds:
            raise ValueError(f"{p}: linear attention with aggregation kernels {scales} is not a known block type")
        return kinds[0]
    return None


def _stages(sd: dict, prefix: str) -> tuple[list[int], list[int], list[str]]:
    widths, depths, kinds = [], [], []
    stages = _indices(sd, prefix)
    if stages != list(range(len(stages))) or not stages:
        raise ValueError(f"the checkpoint's {prefix}N stages are not 0..N-1 ({stages})")
    for i in stages:
        p = f"{prefix}{i}.op_list."
        ops = [_block_kind(sd, f"{p}{j}.") for j in _indices(sd, p)]
        blocks = [k for k in ops if k is not None]
        if not blocks or len(set(blocks)) > 1:
            raise ValueError(f"{prefix}{i}: expected one or more blocks of one type, found {blocks}")
        j = ops.index(blocks[0])
        w = sd.get(f"{p}{j}.main.conv1.conv.weight", sd.get(f"{p}{j}.context_module.main.qkv.conv.weight"))
        widths.append(w.shape[1])
        depths.append(len(blocks))
        kinds.append(blocks[0])
    return widths, depths, kinds


def config_from_state_dict(sd: dict) -> dict:
    """VideoDCAE arguments from key shapes (widths, depths, block types, latent channels). The temporal
    resampling flags are strides, which shapes do not show: they take the released values (time at the
    resamplings after stages 3 and 4), which needs the released 6 stages. Scaling and tiling are not stored:
    the constructor defaults (no scaling, the inference tiling) apply."""
    enc_w, enc_d, enc_k = _stages(sd, "encoder.stages.")
    dec_w, dec_d, dec_k = _stages(sd, "decoder.stages.")
    cfg = dict(in_channels=sd["encoder.project_in.conv.weight"].shape[1],
               latent_channels=sd["encoder.project_out.main.op_list.0.conv.weight"].shape[0],
               encoder_widths=tuple(enc_w), encoder_depths=tuple(enc_d), encoder_blocks=tuple(enc_k),
               decoder_widths=tuple(dec_w), decoder_depths=tuple(dec_d), decoder_blocks=tuple(dec_k))
    if len(enc_w) == len(RELEASED["temporal_downsample"]):
        cfg["temporal_downsample"] = RELEASED["temporal_downsample"]
    if len(dec_w) == len(RELEASED["temporal_upsample"]):
        cfg["temporal_upsample"] = RELEASED["temporal_upsample"]
    return cfg


def load_dc_ae(sd: dict, **overrides) -> VideoDCAE:
    """Strict load (every encoder./decoder. key and shape) of a released-layout state dict, eval mode, in the
    state dict's dtype. overrides: any VideoDCAE argument (temporal_downsample / temporal_upsample for a
    non-6-stage model, scaling_factor, the tiling attributes). Keys outside encoder./decoder. are ignored,
    as the original's strict=False load ignores them."""
    sd = {k: v for k, v in sd.items() if k.startswith(("encoder.", "decoder."))}
    cfg = {**config_from_state_dict(sd), **overrides}
    for flags in ("temporal_downsample", "temporal_upsample"):
        if flags not in cfg:
            raise ValueError(f"the checkpoint does not have the released 6 stages: pass {flags}=(one bool per "
                             f"stage) to load it")
    return build_strict(lambda: VideoDCAE(**cfg), sd, "an Open-Sora 2.0 Video DC-AE").eval()
