"""Open-Sora 1.2 resolution / aspect-ratio buckets (opensora/datasets/aspect.py).

Keys are height:width ("9:16" is landscape, 240x426 at 240p). Sizes follow the original's rule: for a
pixel budget P and ratio a = H/W, H = sqrt(P*a) and W = H/a, each rounded up when that gives an even
number, else down.
"""
from __future__ import annotations

import math

PIXELS = {"144p": 144 * 256, "240p": 240 * 426, "360p": 360 * 640, "480p": 480 * 854, "720p": 720 * 1280,
          "1080p": 1080 * 1920}
ASPECT_RATIOS_HW = ["3:8", "9:21", "12:25", "1:2", "9:17", "27:50", "9:16", "5:8", "2:3", "3:4", "1:1", "4:3",
                    "3:2", "16:9", "17:9", "2:1", "50:27"]
NUM_FRAMES_ALIASES = {"2s": 51, "1x": 51, "4s": 102, "2x": 102, "8s": 204, "4x": 204, "16s": 408, "8x": 408,
                      "32s": 816, "16x": 816}
IMAGE_FPS = 120  # the fps the model is conditioned on for single images


def _even_round(v: float, eps: float = 1e-4) -> int:
    v += eps
    return math.ceil(v) if math.ceil(v) % 2 == 0 else math.floor(v)


def get_image_size(resolution: str, aspect_ratio_hw: str) -> tuple[int, int]:
    """(height, width) of a bucket, the ratio given height:width as the original keys it."""
    if resolution not in PIXELS:
        raise ValueError(f"unknown resolution '{resolution}' (choose one of {list(PIXELS)})")
    if aspect_ratio_hw not in ASPECT_RATIOS_HW:
        raise ValueError(f"unknown aspect ratio '{aspect_ratio_hw}' (height:width, one of {ASPECT_RATIOS_HW})")
    a_h, a_w = (float(x) for x in aspect_ratio_hw.split(":"))
    a = a_h / a_w
    h = _even_round((PIXELS[resolution] * a) ** 0.5)
    return h, _even_round(h / a)


def get_num_frames(value) -> int:
    """'4s' / '2x' aliases or an integer."""
    return NUM_FRAMES_ALIASES.get(str(value), None) or int(value)


# Open-Sora 2.0: square pixel budgets, aspect ratios written width:height, sizes floored to the latent grid
# (16 px for the HunyuanVideo VAE with 2x2 patches, 32 px for the Video DC-AE).
PIXELS_V2 = {"256px": 256 * 256, "768px": 768 * 768}
ASPECT_RATIOS_V2 = ["16:9", "9:16", "1:1", "2.39:1", "1:2.39", "2:1", "1:2", "1.85:1", "1:1.85", "3:2", "2:3", "4:3",
                    "3:4", "8:5", "5:8"]


def get_image_size_v2(resolution: str, aspect_ratio_wh: str, multiple: int = 16) -> tuple[int, int]:
    """(height, width): H = sqrt(P / a), W = H * a for a = W/H, each floored to `multiple`
    (256px 16:9 -> 192x336, 768px 16:9 -> 576x1024)."""
    if resolution not in PIXELS_V2:
        raise ValueError(f"unknown resolution '{resolution}' (Open-Sora 2.0 has {list(PIXELS_V2)})")
    if aspect_ratio_wh not in ASPECT_RATIOS_V2:
        raise ValueError(f"unknown aspect ratio '{aspect_ratio_wh}' (Open-Sora 2.0 has {ASPECT_RATIOS_V2})")
    a_w, a_h = (float(x) for x in aspect_ratio_wh.split(":"))
    h = math.sqrt(PIXELS_V2[resolution] * a_h / a_w)
    w = h * a_w / a_h
    return int(h // multiple * multiple), int(w // multiple * multiple)
