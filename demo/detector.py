"""A model-free detector that scores demo videos: what colour and shape the object is and how it moves.

Per frame: the background is the median colour of the border pixels; foreground pixels differ from it by more
than a threshold. From the foreground come the area, centroid, bounding box and mean colour. Over the clip:
colour = nearest palette colour of the mean foreground colour; shape = from the box features below; motion = centroid displacement or area change between the first and the
last frames (a least-squares line through all frames, so one noisy frame does not decide).
Shape features are chosen to survive a VAE's blur: how low the centroid sits in the bounding box (the upright
triangle's mass is near its base) and how full the box's corners are (a square's are, a circle's are not).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .clips import BACKGROUNDS, COLOURS, SPEED, GROWTH

FG_THRESHOLD = 0.25   # colour distance (0..1 RGB, Euclidean) from the background
MIN_AREA = 12         # pixels: fewer means "no object in this frame"
TRIANGLE_DROP = 0.57  # centroid depth in its box above which the shape is the triangle (2/3 vs 1/2)
SQUARE_CORNER = 0.6   # corner fill above which a symmetric shape is the square (1 vs 0.27)
STILL = 0.3           # below this fraction of the true speed / growth rate an object counts as still


@dataclass
class Track:
    """Per-frame measurements [T] (NaN where no object was found) and the clip-level decisions."""
    area: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    extent: torch.Tensor
    colour_rgb: torch.Tensor
    background: str
    drop: torch.Tensor = None
    corner: torch.Tensor = None
    colour: str = ""
    shape: str = ""
    motion: str = ""
    stats: dict = field(default_factory=dict)

    @property
    def found(self) -> float:
        return float((~self.area.isnan()).float().mean())


def _largest_blob(mask: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per frame, the 8-connected region of `mask` [T, H, W] that holds its most different pixel (the object),
    grown by repeated 3x3 dilation inside the mask; stray specks elsewhere are dropped."""
    flat = torch.where(mask, weight, torch.zeros_like(weight)).flatten(1)
    region = torch.zeros_like(flat, dtype=torch.bool)
    region[torch.arange(len(flat)), flat.argmax(1)] = True
    region = region.view_as(mask) & mask
    for _ in range(mask.shape[1] * mask.shape[2]):
        grown = torch.nn.functional.max_pool2d(region[:, None].float(), 3, 1, 1)[:, 0].bool() & mask
        if torch.equal(grown, region):
            break
        region = grown
    return region


def _corner_fill(fg: torch.Tensor, top: int, left: int, bh: int, bw: int) -> torch.Tensor:
    """Mean fill of the four corner squares (a quarter of the box's height and width) of one frame's box."""
    qh, qw = max(1, round(bh / 4)), max(1, round(bw / 4))
    box = fg[top:top + bh, left:left + bw].float()
    if box.numel() == 0:
        return torch.tensor(float("nan"))
    return torch.stack([box[:qh, :qw].mean(), box[:qh, -qw:].mean(), box[-qh:, :qw].mean(),
                        box[-qh:, -qw:].mean()]).mean()


def _nearest(rgb: torch.Tensor, palette: dict) -> str:
    names = list(palette)
    d = ((torch.tensor([palette[n] for n in names]) - rgb[None]) ** 2).sum(1)
    return names[int(d.argmin())]


def measure(video: torch.Tensor) -> Track:
    """video [T, H, W, 3] in 0..1 (ComfyUI's IMAGE layout)."""
    video = video.float().clamp(0, 1)
    t, h, w, _ = video.shape
    border = torch.cat([video[:, 0], video[:, -1], video[:, :, 0], video[:, :, -1]], dim=1)  # [T, 2H+2W, 3]
    bg = border.median(dim=1).values  # [T, 3]
    dist = (video - bg[:, None, None]).norm(dim=-1)  # [T, H, W]
    # Threshold halfway between the background and the object's colour (the median of the clearly different
    # pixels): a blurred edge then splits where a sharp one would be, and faint speckles stay background.
    rough = dist > FG_THRESHOLD
    level = torch.stack([d[r].median() if r.sum() >= MIN_AREA else d.new_tensor(2 * FG_THRESHOLD)
                         for d, r in zip(dist, rough)])
    fg = _largest_blob(dist > (level / 2).clamp(min=FG_THRESHOLD / 2)[:, None, None], dist)
    area = fg.flatten(1).sum(1).float()
    ys = torch.arange(h, dtype=torch.float32)[None, :, None]
    xs = torch.arange(w, dtype=torch.float32)[None, None, :]
    safe = area.clamp(min=1)
    cx = (fg * xs).flatten(1).sum(1) / safe + 0.5
    cy = (fg * ys).flatten(1).sum(1) / safe + 0.5
    rows, cols = fg.any(2), fg.any(1)  # [T, H], [T, W]
    idx_h, idx_w = torch.arange(h), torch.arange(w)
    box_h = (torch.where(rows, idx_h, -1).max(1).values - torch.where(rows, idx_h, h).min(1).values + 1).clamp(min=1)
    box_w = (torch.where(cols, idx_w, -1).max(1).values - torch.where(cols, idx_w, w).min(1).values + 1).clamp(min=1)
    extent = area / (box_h * box_w).float()
    top = torch.where(rows, idx_h, h).min(1).values.float()
    left = torch.where(cols, idx_w, w).min(1).values.float()
    # where the centroid sits between the top and bottom of the box: 1/2 for symmetric shapes, 2/3 for the
    # upright triangle (its mass is near the base); blur moves both edges alike, so this survives the VAE
    drop = (cy - 0.5 - top + 0.5) / box_h.float()
    # how much of the box's four corner squares (a quarter of each side) the shape fills: ~1 for a square,
    # ~0.27 for a circle; robust to the corner rounding that blur gives a square
    corner = torch.stack([_corner_fill(f, int(t), int(l), int(bh), int(bw))
                          for f, t, l, bh, bw in zip(fg, top, left, box_h, box_w)])
    rgb = (video * fg[..., None]).flatten(1, 2).sum(1) / safe[:, None]  # [T, 3]
    missing = area < MIN_AREA
    nan = torch.tensor(float("nan"))
    area, cx, cy, extent, drop, corner = (torch.where(missing, nan, v) for v in (area, cx, cy, extent, drop, corner))
    track = Track(area, cx, cy, extent, rgb[~missing].mean(0) if (~missing).any() else rgb.mean(0),
                  _nearest(bg.median(0).values, BACKGROUNDS), drop=drop, corner=corner)
    return classify(track)


def _slope(v: torch.Tensor) -> float:
    """Least-squares slope per frame over the frames where v is defined."""
    k = torch.arange(len(v), dtype=torch.float32)
    ok = ~v.isnan()
    if ok.sum() < 2:
        return 0.0
    k, v = k[ok], v[ok]
    k = k - k.mean()
    return float((k * (v - v.mean())).sum() / (k * k).sum())


def classify(track: Track) -> Track:
    ok = ~track.area.isnan()
    if ok.float().mean() < 0.5:
        track.colour = track.shape = track.motion = "none"
        return track
    track.colour = _nearest(track.colour_rgb, COLOURS)
    ext = float(track.extent[ok].median())
    drop, corner = float(track.drop[ok].median()), float(track.corner[ok].median())
    track.shape = "triangle" if drop > TRIANGLE_DROP else "square" if corner > SQUARE_CORNER else "circle"
    vx, vy = _slope(track.cx), _slope(track.cy)
    growth = _slope(track.area.log()) / 2  # log of the linear size
    track.stats = {"vx": vx, "vy": vy, "log_growth": growth, "extent": ext, "drop": drop, "corner": corner}
    # Evidence for each kind of motion as a fraction of the rate the training clips have.
    move, grow = max(abs(vx), abs(vy)) / SPEED, abs(growth) / math.log(GROWTH)
    if max(move, grow) < STILL:
        track.motion = "still"
    elif grow > move:
        track.motion = "growing" if growth > 0 else "shrinking"
    else:
        track.motion = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
    return track


def score(video: torch.Tensor, colour: str, shape: str, motion: str) -> dict:
    """Whether a generated video shows what its prompt asked for: per attribute and all three together."""
    tr = measure(video)
    out = {"colour": tr.colour == colour, "shape": tr.shape == shape, "motion": tr.motion == motion}
    out["correct"] = all(out.values())
    out["detected"] = {"colour": tr.colour, "shape": tr.shape, "motion": tr.motion, **tr.stats}
    return out


def position(video: torch.Tensor, frame: int) -> tuple[float, float, float]:
    """(cx, cy, sqrt(area)) of the object in one frame (NaN when absent)."""
    tr = measure(video[frame:frame + 1])
    return float(tr.cx[0]), float(tr.cy[0]), float(tr.area[0].sqrt())
