"""Tiled decoding with linear blending, generic over VAEs: run a decoder on overlapping windows of the latent
(spatial tiles, temporal chunks, or both) so peak memory follows the window, not the frame or video size.

The decoder must map n latent samples to n * ratio output samples along every tiled axis (a 2D VAE's 8x in
space; a per-frame or linearly upsampling VAE in time). Overlaps are cross-faded with linear ramps that sum
to one. The result is exact for decoders that only look at their own sample (tested with one) and approximate
otherwise: convolutions, normalisation statistics and attention see across window borders when untiled.

VAEs whose chunks are exact by construction (Open-Sora 1.2's temporal VAE decodes independent 17-frame
chunks; CogVideoX carries a conv cache) chunk time themselves and use only the spatial part.

HunyuanVideo's VAE and diffusers' CogVideoX stitch spatial tiles their own way, and their results depend on it:
`stitch_rows` fades each tile in place from its (already faded) upper and left neighbours, then crops. The two
differ only in the dtype `fade_in_` applies the weights in.
"""
from __future__ import annotations

import itertools

import torch

from .. import comfy_adapter
from .errors import InputError


def window_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Starts of windows of `tile` samples covering [0, size), neighbours sharing at least `overlap`;
    the last window ends at `size` (so it may share more)."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    return sorted(set(range(0, size - tile, stride)) | {size - tile})


def original_windows(thw, tile: int, tsize: int, stride, spatial: bool, temporal: bool) -> int:
    """How many windows Open-Sora 2.0's VAEs cut a (T, H, W) input into: tiles of `tile` over H and W when
    spatial and either side exceeds a tile, windows of `tsize` over T when temporal and T exceeds one, each
    starting every stride(size) from 0 (the last ones shorter). Their progress bars are this long."""
    T, H, W = thw
    count = lambda n, size: len(range(0, n, stride(size)))  # noqa: E731
    return (count(H, tile) * count(W, tile) if spatial and max(H, W) > tile else 1) * \
        (count(T, tsize) if temporal and T > tsize else 1)


def ramp(n: int, overlap: int, at_start: bool, at_end: bool, device=None) -> torch.Tensor:
    """Blend weights along one axis: rise over the first `overlap` samples and fall over the last, except at
    the edges of the whole signal. A rising and a falling ramp over the same samples sum to one."""
    w = torch.ones(n, device=device)
    if overlap > 0:
        up = (torch.arange(overlap, device=device) + 1) / (overlap + 1)
        if not at_start:
            w[:overlap] = torch.minimum(w[:overlap], up)
        if not at_end:
            w[-overlap:] = torch.minimum(w[-overlap:], up.flip(0))
    return w


def tiled(fn, windows: dict, out_device=None):
    """Wrap fn: z -> x to run on overlapping windows and blend the pieces.

    windows maps a (negative) axis to (tile, overlap, ratio) in latent samples, e.g.
    {-3: (4, 1, 1), -2: (32, 8, 8), -1: (32, 8, 8)} for [B, C, T, H, W]. Axes not listed are passed whole
    (fn may change them, e.g. channels). The blended float32 output is accumulated on `out_device` (default:
    the pieces' device): keep it on the CPU when the whole output would not fit beside one window's work.
    """
    axes = sorted(windows)
    if any(a >= 0 for a in axes):
        raise ValueError(f"tile axes are counted from the end (negative), got {axes}")
    spec = {a: (max(tile, 1), min(overlap, max(tile, 1) - 1), ratio) for a, (tile, overlap, ratio) in windows.items()}
    trailing = range(axes[0], 0)  # the output axes a weight tensor spans, tiled or not

    def run(z):
        sizes = {a: z.shape[a] for a in axes}
        out = weight = None
        for origin in itertools.product(*[window_starts(sizes[a], spec[a][0], spec[a][1]) for a in axes]):
            index = [slice(None)] * z.ndim
            for a, s in zip(axes, origin):
                index[a] = slice(s, min(s + spec[a][0], sizes[a]))
            piece = fn(z[tuple(index)])
            device = out_device or piece.device
            if out is None:
                shape = list(piece.shape)
                for a in axes:
                    shape[a] = sizes[a] * spec[a][2]
                out = torch.zeros(shape, device=device)
                weight = torch.zeros([shape[a] if a in spec else 1 for a in trailing], device=device)
            w = torch.ones([1] * len(trailing), device=device)
            out_index = [slice(None)] * len(trailing)
            for a, s in zip(axes, origin):
                n, (_, overlap, ratio) = index[a].stop - s, spec[a]
                r = ramp(n * ratio, overlap * ratio, s == 0, s + n >= sizes[a], device)
                w = w * r.reshape([-1 if b == a else 1 for b in trailing])
                out_index[a] = slice(s * ratio, (s + n) * ratio)
            out[(..., *out_index)] += piece.to(device, torch.float32) * w
            weight[tuple(out_index)] += w
        return out / weight

    return run


def tiled_2d(fn, tile: int, overlap: int, ratio: int, out_device=None):
    """Square spatial tiles over the last two axes (latent pixels), e.g. a 2D VAE decoder on [N, C, h, w]."""
    return tiled(fn, {-2: (tile, overlap, ratio), -1: (tile, overlap, ratio)}, out_device)


def tiled_time(fn, chunk: int, overlap: int, ratio: int = 1, out_device="cpu"):
    """Temporal chunks over axis -3 of [B, C, T, H, W] sharing `overlap` latent frames, cross-faded. The
    output accumulates on the CPU by default, so the device holds one chunk whatever the video length."""
    return tiled(fn, {-3: (chunk, overlap, ratio)}, out_device)


def fade_in_(prev: torch.Tensor, cur: torch.Tensor, extent: int, dim: int, weight_dtype=None) -> torch.Tensor:
    """Fade the first `extent` entries of `cur` along `dim` in from the last ones of `prev`, IN PLACE:
    prev * (1 - i/extent) + cur * i/extent for i = 0..extent-1 (extent shrinks to what both have). The weights
    are made in float64, as the originals' Python floats, and applied in `weight_dtype` (None: cur's dtype)."""
    extent = min(prev.shape[dim], cur.shape[dim], extent)
    if extent <= 0:
        return cur
    shape = [1] * cur.ndim
    shape[dim] = extent
    ramp = (torch.arange(extent, dtype=torch.float64) / extent).view(shape)
    dtype = weight_dtype or cur.dtype
    w_cur, w_prev = ramp.to(cur.device, dtype), (1 - ramp).to(cur.device, dtype)
    head = cur.narrow(dim, 0, extent)
    head.copy_(prev.narrow(dim, prev.shape[dim] - extent, extent) * w_prev + head * w_cur)
    return cur


def stitch_rows(rows: list[list[torch.Tensor]], blend: tuple[int, int], keep: tuple[int, int],
                weight_dtype=None) -> torch.Tensor:
    """One output from a row-major grid of overlapping tiles [..., h, w]: each tile is faded in from the tile
    above over blend[0] rows, then from the tile to its left over blend[1] columns, cropped to keep (h, w) and
    concatenated. In place and in row-major order, as the originals: a tile's right and lower neighbours fade
    against its blended version, not the raw one."""
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            if i:
                fade_in_(rows[i - 1][j], tile, blend[0], -2, weight_dtype)
            if j:
                fade_in_(row[j - 1], tile, blend[1], -1, weight_dtype)
    return torch.cat([torch.cat([t[..., :keep[0], :keep[1]] for t in row], dim=-1) for row in rows], dim=-2)


# --------------------------------------------------------------------------------------------------------------
# The node's tile inputs for VAEs that tile with the original's own code (Open-Sora 2.0's)
# --------------------------------------------------------------------------------------------------------------
def check_window_inputs(ratio: int, temporal_chunk: int, spatial_tile: int, spatial_overlap: int):
    """OpenSora VAE Decode's inputs as Open-Sora 2.0's VAEs take them: spatial_tile px and temporal_chunk latent
    frames set the window sizes, and spatial_overlap / spatial_tile is the original's tile_overlap_factor, shared
    by space and time. 0 keeps the released windows."""
    if spatial_tile % ratio:
        raise InputError("spatial_tile", f"{spatial_tile} px is not a multiple of this VAE's {ratio} px latent cells",
                         f"use a multiple of {ratio}, or 0 for the released 256 px tiles")
    if spatial_tile and (spatial_overlap % ratio or not 0 <= spatial_overlap < spatial_tile):
        raise InputError("spatial_overlap", f"{spatial_overlap} px does not fit tiles of {spatial_tile} px in "
                         f"{ratio} px latent cells", f"use a multiple of {ratio} below spatial_tile (a quarter of "
                         f"it, {spatial_tile // 4 // ratio * ratio}, as released)")
    if temporal_chunk == 1:
        raise InputError("temporal_chunk", "Open-Sora 2.0's VAEs blend neighbouring time windows, so a window "
                         "needs at least 2 latent frames", "use 0 (the VAE's default) or 2 and more")


def decode_windowed(net, z: torch.Tensor, num_frames: int, settings: dict) -> torch.Tensor:
    """net.decode(z) with its tiling attributes set to `settings` for this call (the released ones restored after),
    a progress step per decoder run, into a float32 CPU video of num_frames."""
    saved = {k: getattr(net, k) for k in settings}
    for k, v in settings.items():
        setattr(net, k, v)
    try:
        with comfy_adapter.progress_per_call(net.decoder, net.calls(z.shape, decode=True), "decoding"):
            return net.decode(z)[:, :, :num_frames].float().cpu()
    finally:
        for k, v in saved.items():
            setattr(net, k, v)
