"""Latent previews: a linear map from latent channels to RGB, fitted to the VAE itself.

ComfyUI previews a sampler's progress with a fixed per-format matrix (latent channel -> RGB). This pack's
VAEs (Open-Sora 1.2's, HunyuanVideo's, the Video DC-AE, CogVideoX's, the SD VAE under 1.0/1.1) each have their
own latent space, so the matrix is fitted, once per loaded VAE, by least squares on a fixed set of images
(flat colours, and rectangles on flat backgrounds) encoded by that VAE: latents [C] -> the image's colour at that latent
pixel. Cheap on any device (52 images of 64x64) and exact for whatever VAE is loaded,
including fine-tunes and the bundled demo.

While a sampler runs, `active(fit)` makes `image(x0)` turn the current clean-latent estimate into a small
strip of frames for ComfyUI's progress preview; with no fit active `image` returns None at no cost.
"""
from __future__ import annotations

import contextlib
import itertools

import torch

FIT_SIZE = 64
MAX_FRAMES = 4  # frames side by side in a video preview

_active = None  # (factors [C, 3], bias [3]) while a sampler with previews runs


def fit_images(size: int = FIT_SIZE, scenes: int = 40) -> torch.Tensor:
    """[N, 3, size, size] in 0..1: the 8 corners of the RGB cube and 4 greys as flat images, then `scenes`
    images of 1 to 3 flat rectangles on a flat background (colours and boxes from a fixed seed), so edges and
    objects on every kind of background are in the fit, as in what samplers make."""
    g = torch.Generator().manual_seed(0)
    corners = [torch.tensor(c, dtype=torch.float32) for c in itertools.product((0.0, 1.0), repeat=3)]
    greys = [torch.full((3,), v) for v in (0.25, 0.5, 0.75, 0.9)]
    images = [c[:, None, None].expand(3, size, size) for c in corners + greys]
    for _ in range(scenes):
        img = torch.rand(3, generator=g)[:, None, None].expand(3, size, size).clone()
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            y0, x0 = torch.randint(0, size * 3 // 4, (2,), generator=g).tolist()
            h, w = torch.randint(size // 8, size // 2, (2,), generator=g).tolist()
            img[:, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=g)
        images.append(img)
    return torch.stack(images)


def fit(encode, latent_channels: int, num_frames: int = 1, size: int = FIT_SIZE):
    """(factors [C, 3], bias [3]) from encode(video [N, 3, T, H, W] in -1..1) -> latent [N, C, T', h, w].
    num_frames: the shortest clip the VAE takes (images are repeated as a still video)."""
    images = fit_images(size)
    video = (images * 2 - 1)[:, :, None].expand(-1, -1, num_frames, -1, -1)
    z = encode(video).float()
    n, c, t, h, w = z.shape
    if c != latent_channels:
        raise ValueError(f"the VAE gave {c} latent channels, expected {latent_channels}")
    target = torch.nn.functional.adaptive_avg_pool2d(images, (h, w))  # the colour each latent pixel covers
    x = z.permute(0, 2, 3, 4, 1).reshape(-1, c)
    y = target[:, None].expand(n, t, 3, h, w).permute(0, 1, 3, 4, 2).reshape(-1, 3)
    x1 = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    # a little ridge keeps channels the fit images never excite from getting wild weights
    a = x1.T @ x1 + 1e-4 * len(x1) * torch.eye(c + 1)
    sol = torch.linalg.solve(a, x1.T @ y)
    return sol[:c].contiguous(), sol[c].contiguous()


def to_rgb(latent: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """latent [C, T, h, w] -> [T, h, w, 3] in 0..1."""
    rgb = torch.einsum("cthw,cr->thwr", latent.float(), factors.to(latent.device)) + bias.to(latent.device)
    return rgb.clamp(0, 1)


def strip(latent: torch.Tensor, factors: torch.Tensor, bias: torch.Tensor, max_frames: int = MAX_FRAMES):
    """latent [C, T, h, w] -> uint8 [h, w * k, 3]: up to max_frames frames, first to last, side by side."""
    t = latent.shape[1]
    pick = sorted({round(i * (t - 1) / max(1, max_frames - 1)) for i in range(min(t, max_frames))})
    frames = to_rgb(latent[:, pick], factors, bias)  # [k, h, w, 3]
    return (torch.cat(list(frames), dim=1) * 255).round().to(torch.uint8).cpu()


@contextlib.contextmanager
def active(fitted):
    """Previews for the samplers run inside; fitted is (factors, bias) or None (no previews)."""
    global _active
    previous, _active = _active, fitted
    try:
        yield
    finally:
        _active = previous


def image(x0):
    """The preview of batch item 0 of a clean-latent estimate [B, C, T, h, w] (or a function returning it, so
    the estimate is only assembled when a preview is wanted) as a PIL image; None when no preview is active."""
    if _active is None:
        return None
    try:
        from PIL import Image
    except ImportError:
        return None
    x0 = x0() if callable(x0) else x0
    return Image.fromarray(strip(x0[0].detach(), *_active).numpy())
