"""Step caching (TeaCache's idea at the model's boundary): skip a transformer call when its input has moved
little since the last call that ran, and reuse that call's prediction.

Every sampler of the pack calls the transformer once per step with the whole guidance batch, so a call is a
step. Between steps the noisy latent moves by dt * v; the relative L1 change of the model's input, summed over
the steps since the last computed call, says how stale a reused prediction would be. While the sum stays below
`threshold` the call is skipped; once it passes, the call runs and the sum restarts. The first `start` and the
steps from `end` on (fractions of the run) always run: early steps set the layout, late ones the detail.

Off (no settings) nothing is touched: bit-identical to uncached. On, the skipped share and the error against
the uncached run are measured in benchmarks/demo_eval.py --cache-threshold and tests/test_step_cache.py.
"""
from __future__ import annotations

import contextlib
import math

import torch


@contextlib.contextmanager
def caching(net: torch.nn.Module, settings: dict | None, steps: int):
    """Within: net's calls are cached per `settings` {"threshold", "start", "end"} over a run of `steps` calls.
    Yields the run's stats {"calls", "skipped"} (None when off)."""
    if not settings or settings["threshold"] <= 0:
        yield None
        return
    first, last = int(settings["start"] * steps), math.ceil(settings["end"] * steps)
    stats = {"calls": 0, "skipped": 0}
    state = {"previous": None, "output": None, "moved": 0.0}
    run = net.forward

    def forward(x, *args, **kwargs):
        step = stats["calls"]
        stats["calls"] += 1
        previous, state["previous"] = state["previous"], x
        if previous is not None and previous.shape == x.shape and state["output"] is not None:
            state["moved"] += ((x - previous).abs().mean() / previous.abs().mean().clamp_min(1e-8)).item()
            if first <= step < last and state["moved"] < settings["threshold"]:
                stats["skipped"] += 1
                return state["output"]
        state["moved"] = 0.0
        state["output"] = run(x, *args, **kwargs)
        return state["output"]

    net.forward = forward
    try:
        yield stats
    finally:
        del net.forward  # the class's forward again
        if stats["calls"]:
            print(f"[OpenSora] step cache: {stats['skipped']} of {stats['calls']} transformer calls skipped")
