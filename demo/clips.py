"""Procedural training clips for the demo model: one coloured shape moving on a plain background.

A scene is (colour, shape, motion, background) plus a start position and size drawn from a seeded RNG.
Its caption comes from one grammar: "a red circle moving left on a black background". Rendering is
anti-aliased (4x4 supersampling), so sub-pixel motion is smooth and the VAE sees no aliasing.

Clips are 34 frames at 64x64: Open-Sora 1.2's VAE encodes 17-frame chunks independently, so the first 17
frames are a text-to-video / image-to-video sample and the whole clip an extension sample (second chunk
conditioned on the first). Loop clips (`loop=True`) go out and back along the motion so that frame 17
equals frame 0: the shape a looping video takes when first and last frame are the same image.
"""
from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import torch

SIZE = 64
CHUNK = 17  # frames per VAE chunk
COLOURS = {"red": (0.90, 0.12, 0.10), "green": (0.10, 0.75, 0.20), "blue": (0.12, 0.30, 0.95),
           "yellow": (0.95, 0.85, 0.10), "purple": (0.60, 0.15, 0.80)}
BACKGROUNDS = {"black": (0.05, 0.05, 0.05), "gray": (0.50, 0.50, 0.50), "white": (0.95, 0.95, 0.95)}
SHAPES = ("circle", "square", "triangle")
MOTIONS = ("left", "right", "up", "down", "still", "growing", "shrinking")
SPEED = 1.2          # pixels per frame for the four directions
GROWTH = 1.028       # size factor per frame for growing / shrinking
MIN_HALF, MAX_HALF = 5.0, 14.0  # half-extent of the shape in pixels over a whole clip

# Held-out (colour, shape, motion) triples, never rendered for training. Every pair they contain is seen in
# training, so they test composition, not unseen words.
HELD_OUT = (("red", "triangle", "up"), ("green", "circle", "right"), ("blue", "square", "shrinking"),
            ("yellow", "triangle", "left"), ("purple", "circle", "down"), ("red", "square", "growing"),
            ("green", "triangle", "still"), ("blue", "circle", "left"), ("yellow", "square", "up"),
            ("purple", "triangle", "growing"), ("red", "circle", "shrinking"), ("yellow", "circle", "down"))

WORDS = ("a red green blue yellow purple circle square triangle moving left right up down staying still growing "
         "shrinking on black gray white background aesthetic score motion camera pan tilt zoom in out static none "
         "0 1 2 3 4 5 6 7 8 9 . :").split()


@dataclass(frozen=True)
class Scene:
    colour: str
    shape: str
    motion: str
    background: str
    x: float = 32.0      # centre at frame 0, pixels
    y: float = 32.0
    half: float = 9.0    # half-extent at frame 0, pixels
    loop: bool = False

    @property
    def caption(self) -> str:
        return caption(self.colour, self.shape, self.motion, self.background)


def caption(colour: str, shape: str, motion: str, background: str) -> str:
    verb = {"still": "staying still", "growing": "growing", "shrinking": "shrinking"}.get(motion, f"moving {motion}")
    return f"a {colour} {shape} {verb} on a {background} background"


def training_triples():
    held = set(HELD_OUT)
    return [t for t in itertools.product(COLOURS, SHAPES, MOTIONS) if t not in held]


def _offsets(motion: str, num_frames: int, loop: bool):
    """Per-frame (dx, dy, size factor) relative to frame 0. A loop clip goes out and back over CHUNK frames."""
    k = torch.arange(num_frames, dtype=torch.float64)
    if loop:  # 0 at frames 0 and CHUNK, the farthest point halfway: the motion's displacement over half a chunk
        k = (CHUNK / 2) * torch.sin(math.pi * k / CHUNK)
    dx = {"left": -SPEED, "right": SPEED}.get(motion, 0.0) * k
    dy = {"up": -SPEED, "down": SPEED}.get(motion, 0.0) * k
    s = GROWTH ** ({"growing": 1.0, "shrinking": -1.0}.get(motion, 0.0) * k)
    return dx, dy, s


def random_scene(rng: random.Random, colour, shape, motion, background, num_frames: int = 2 * CHUNK,
                 loop: bool = False, placement: str = "anywhere") -> Scene:
    """A start position and size that keep the whole clip inside the frame.

    placement "anywhere": position and size uniform over everything that fits (the VAE's data: it must encode
    any image a user gives). "centred": the path's midpoint within JITTER px of the frame centre and the size in
    a narrower band (the diffusion model's data and the evaluation's scenes). A prompt fixes colour, shape and
    motion, not where the object is, so a tiny text-to-video model spends its capacity on averaging positions;
    a canonical layout (the object crosses the middle of the frame, as a "moving right" shot would be framed)
    leaves it the composition. A clip shorter than 34 frames is placed as the start of a 34-frame one, so a
    17-frame "moving right" begins where the training clips' first chunk does."""
    if placement == "centred":
        return _centred_scene(rng, colour, shape, motion, background, num_frames, loop)
    dx, dy, s = _offsets(motion, num_frames, loop)
    lo, hi = MIN_HALF / float(s.min()), MAX_HALF / float(s.max())
    half = rng.uniform(max(lo, 6.0), min(hi, 11.0)) if lo < hi else (lo + hi) / 2
    reach = half * float(s.max()) + 1.0
    xs = (reach - float(dx.min()), SIZE - reach - float(dx.max()))
    ys = (reach - float(dy.min()), SIZE - reach - float(dy.max()))
    x = rng.uniform(*xs) if xs[0] < xs[1] else SIZE / 2
    y = rng.uniform(*ys) if ys[0] < ys[1] else SIZE / 2
    return Scene(colour, shape, motion, background, x, y, half, loop)


JITTER = 4.0  # px: how far a centred path's midpoint may sit from the frame centre


def _centred_scene(rng: random.Random, colour, shape, motion, background, num_frames: int, loop: bool) -> Scene:
    dx, dy, s = _offsets(motion, num_frames if loop else max(num_frames, 2 * CHUNK), loop)
    lo, hi = MIN_HALF / float(s.min()), MAX_HALF / float(s.max())
    a, b = max(lo, 7.0), min(hi, 10.0)
    if a >= b:  # growing / shrinking over 34 frames leaves a narrow band of their own
        a, b = (lo, hi) if lo < hi else ((lo + hi) / 2,) * 2
    half = rng.uniform(a, b)
    reach = half * float(s.max()) + 1.0

    def start(d):  # the path's midpoint near the centre, clamped so the whole path stays inside the frame
        low, high = reach - float(d.min()), SIZE - reach - float(d.max())
        mid = SIZE / 2 + rng.uniform(-JITTER, JITTER) - (float(d.min()) + float(d.max())) / 2
        return min(max(mid, low), high) if low <= high else SIZE / 2

    x, y = start(dx), start(dy)
    return Scene(colour, shape, motion, background, x, y, half, loop)


def _coverage(shape: str, cx, cy, half, px, py):
    """Inside-test of the shape at sub-pixel sample points px, py (broadcast against per-frame cx, cy, half)."""
    u, v = (px - cx) / half, (py - cy) / half
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (u.abs() <= 1.0) & (v.abs() <= 1.0)
    # upright isosceles triangle filling the box: apex at the top centre, base at the bottom
    return (v <= 1.0) & (u.abs() <= (v + 1.0) / 2.0)


def render(scene: Scene, num_frames: int = 2 * CHUNK, supersample: int = 4) -> torch.Tensor:
    """The clip as a video [3, T, H, W] in -1..1 (Open-Sora's pixel range)."""
    dx, dy, s = _offsets(scene.motion, num_frames, scene.loop)
    cx = (scene.x + dx).float()[:, None, None]
    cy = (scene.y + dy).float()[:, None, None]
    half = (scene.half * s).float()[:, None, None]
    n = SIZE * supersample
    grid = (torch.arange(n, dtype=torch.float32) + 0.5) / supersample
    py, px = grid[:, None], grid[None, :]
    inside = _coverage(scene.shape, cx, cy, half, px, py).float()  # [T, n, n]
    alpha = torch.nn.functional.avg_pool2d(inside[:, None], supersample)[:, 0]  # [T, H, W]
    fg = torch.tensor(COLOURS[scene.colour])[:, None, None, None]
    bg = torch.tensor(BACKGROUNDS[scene.background])[:, None, None, None]
    video = bg + (fg - bg) * alpha[None]
    return video * 2 - 1


def dataset_scenes(seed: int, clips: int, loops: int, placement: str = "anywhere"):
    """The training set: `clips` 34-frame scenes and `loops` loop scenes, cycling through every training
    (colour, shape, motion) triple and background so all appear about equally often."""
    rng = random.Random(seed)
    combos = [(*t, b) for t in training_triples() for b in BACKGROUNDS]
    out = []
    for n, loop in ((clips, False), (loops, True)):
        order = []
        while len(order) < n:
            batch = combos[:]
            rng.shuffle(batch)
            order += batch
        out += [random_scene(rng, *c, num_frames=(CHUNK + 1) if loop else 2 * CHUNK, loop=loop, placement=placement)
                for c in order[:n]]
    return out


def eval_scenes(seed: int, triples, per_triple: int = 1, num_frames: int = 2 * CHUNK, placement: str = "centred",
                loop: bool = False):
    """Fixed evaluation scenes (positions and backgrounds from `seed`), placed as the diffusion model's data
    (loop=True: as its loop clips, whose out-and-back path is centred)."""
    rng = random.Random(seed)
    return [random_scene(rng, *t, rng.choice(list(BACKGROUNDS)), num_frames=num_frames, loop=loop,
                         placement=placement)
            for t in triples for _ in range(per_triple)]
