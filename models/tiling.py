"""Spatial tiling with linear blending: run a 2D decoder on overlapping latent tiles, so peak memory
depends on the tile size, not the frame size. Approximate (the decoder's receptive field crosses tile
borders); the blend hides the seams."""
from __future__ import annotations

import torch


def _ramp(n: int, overlap: int, at_start: bool, at_end: bool, device) -> torch.Tensor:
    """Weights along one axis: rise over the first `overlap` samples, fall over the last, unless at an edge."""
    w = torch.ones(n, device=device)
    if overlap > 0:
        ramp = (torch.arange(overlap, device=device) + 1) / (overlap + 1)
        if not at_start:
            w[:overlap] = torch.minimum(w[:overlap], ramp)
        if not at_end:
            w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


def tiled_2d(fn, tile: int, overlap: int, ratio: int):
    """Wrap fn: z [..., h, w] -> x [..., h*ratio, w*ratio] (leading axes may change, e.g. frames) to run on
    tiles of `tile` latent pixels sharing `overlap` latent pixels, blended with linear weights."""
    tile = max(tile, 1)
    overlap = min(overlap, tile - 1) if tile > 1 else 0

    def starts(size):
        if size <= tile:
            return [0]
        stride = tile - overlap
        out = list(range(0, size - tile, stride)) + [size - tile]
        return sorted(set(out))

    def run(z):
        """z [..., h, w] (any leading axes: batch, channels, frames) -> fn's output, blended."""
        h, w = z.shape[-2:]
        out = weight = None
        for y0 in starts(h):
            for x0 in starts(w):
                th, tw = min(tile, h - y0), min(tile, w - x0)
                piece = fn(z[..., y0:y0 + th, x0:x0 + tw]).float()
                if out is None:
                    out = torch.zeros(*piece.shape[:-2], h * ratio, w * ratio, device=piece.device)
                    weight = torch.zeros(h * ratio, w * ratio, device=piece.device)
                wy = _ramp(th * ratio, overlap * ratio, y0 == 0, y0 + th >= h, piece.device)
                wx = _ramp(tw * ratio, overlap * ratio, x0 == 0, x0 + tw >= w, piece.device)
                wt = wy[:, None] * wx[None, :]
                ys, xs = slice(y0 * ratio, (y0 + th) * ratio), slice(x0 * ratio, (x0 + tw) * ratio)
                out[..., ys, xs] += piece * wt
                weight[ys, xs] += wt
        return out / weight

    return run
