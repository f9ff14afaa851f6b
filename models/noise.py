"""Seeded noise that is the same on every device: drawn by a CPU generator, then moved."""
from __future__ import annotations

import torch


def generator(seed: int) -> torch.Generator:
    g = torch.Generator("cpu")
    g.manual_seed(int(seed) % (1 << 64))
    return g


def seeded_noise(seed: int, shape, gen: torch.Generator | None = None, device="cpu", dtype=torch.float32):
    """randn of `shape` from `seed` (or from the running generator `gen`): identical on CPU and CUDA."""
    g = gen if gen is not None else generator(seed)
    return torch.randn(tuple(shape), generator=g, dtype=torch.float32).to(device=device, dtype=dtype)
