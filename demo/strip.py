"""A frame strip of a video, for the README: `python -m comfyui_opensora.demo.strip VIDEO OUT.png [--every 2]`."""
from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from .. import video_io


def frame_strip(frames: np.ndarray, every: int = 2, scale: int = 2, gap: int = 2) -> Image.Image:
    """frames [T, H, W, 3] uint8 numpy -> one row of every `every`-th frame, upscaled, on a white gap."""
    picked = frames[::every]
    h, w = frames.shape[1] * scale, frames.shape[2] * scale
    strip = Image.new("RGB", (len(picked) * (w + gap) - gap, h), "white")
    for i, f in enumerate(picked):
        strip.paste(Image.fromarray(f).resize((w, h), Image.NEAREST), (i * (w + gap), 0))
    return strip


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("video")
    ap.add_argument("out")
    ap.add_argument("--every", type=int, default=2)
    args = ap.parse_args(argv)
    frames = (video_io.read_video(args.video).frames * 255).round().byte().numpy()
    frame_strip(frames, args.every).save(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
