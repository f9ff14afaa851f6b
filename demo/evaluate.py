"""Score the demo model with the detector: does the video do what the prompt says?

Five suites, each a fixed list of scenes (positions and backgrounds drawn from a fixed seed, placed as the
diffusion model's training clips are: the path centred in the frame):
  seen      text-to-video on (colour, shape, motion) triples the model was trained on
  held_out  text-to-video on the held-out triples (clips.HELD_OUT): composition, not memory
  i2v       image-to-video: the first frame is a rendered image; the object must start where the image has
            it (within POS_TOL px) and then move as the prompt says
  extend    a rendered 17-frame clip extended by 17 frames (34-frame latent, first chunk conditioned): the
            new part must show the right object and motion, and its first frame must continue the motion
            across the seam (within POS_TOL px of the extrapolated position)
  loop      18 frames with the same image first and last: the last generated frame (16) must come back to
            the first (within POS_TOL px and 20% in size), with the object kept

Generation goes through the pack's own loading and sampling code (pipeline.load_*, the T5 text path,
rflow.sample, the VAE); prompts of a suite run as one batch, each with its own seed.
"""
from __future__ import annotations

import math
import os
import time

import torch

from ..models import mask_strategy, noise as noise_mod, pipeline, rflow, step_cache
from . import clips, detector

POS_TOL = 3.5  # pixels
SIZE_TOL = 0.2
STEPS, CFG = 30, 5.0
SUITES = ("seen", "held_out", "i2v", "extend", "loop")


def demo_paths(models_dir: str | None = None) -> dict:
    from .train import DEMO_MODELS, FILES

    root = models_dir or DEMO_MODELS
    return {k: os.path.join(root, v) for k, v in FILES.items()}


def load_demo(models_dir: str | None = None):
    paths = demo_paths(models_dir)
    return (pipeline.load_diffusion_model(paths["model"], "fp32"), pipeline.load_vae(paths["vae"], "fp32"),
            pipeline.load_text_encoder(paths["text_encoder"], None, "fp32", "cpu"))


def suite_scenes(suite: str, n: int | None = None, seed: int = 1234):
    """The fixed scenes of a suite (the first n of them)."""
    seen = clips.training_triples()
    rng = torch.Generator().manual_seed(seed)
    if suite == "seen":
        triples = [seen[i] for i in torch.randperm(len(seen), generator=rng)[:42].tolist()]
    elif suite == "held_out":
        triples = list(clips.HELD_OUT) * 3
    else:  # conditioning suites mix seen and held-out triples
        triples = [seen[i] for i in torch.randperm(len(seen), generator=rng)[:20].tolist()] + list(clips.HELD_OUT)[:10]
    frames = {"extend": 2 * clips.CHUNK, "loop": clips.CHUNK + 1}.get(suite, clips.CHUNK)
    scenes = clips.eval_scenes(seed + SUITES.index(suite), triples, num_frames=frames, loop=suite == "loop")
    return scenes[:n] if n else scenes


@torch.no_grad()
def generate(models, prompts: list[str], seeds: list[int], num_frames: int, refs=None, strategy: str | None = None,
             steps: int = STEPS, cfg: float = CFG, cache: dict | None = None) -> torch.Tensor:
    """Videos [B, T, H, W, 3] in 0..1. refs: per prompt a video [1, 3, T, H, W] in -1..1 placed by `strategy`
    (Open-Sora's mask_strategy string, the same for every prompt). cache: step-cache settings (models/step_cache.py)
    plus a "counts" dict that collects the calls made and skipped."""
    model, vae, t5 = models
    conds = [pipeline.encode_text(t5, p, "opensora-v1.2", offload=False) for p in prompts]
    y = torch.cat([c["y"] for c in conds])
    y_mask = torch.cat([c["mask"] for c in conds])
    latent = pipeline.empty_latent(vae, "custom", "1:1", clips.SIZE, clips.SIZE, num_frames, 1)
    shape = (len(prompts), *latent["samples"].shape[1:])
    z = torch.cat([noise_mod.seeded_noise(s, (1, *shape[1:])) for s in seeds])
    mask = None
    if refs is not None:
        ref_latents = [[pipeline.encode_reference(vae, r, clips.SIZE, clips.SIZE)] for r in refs]
        mask = mask_strategy.apply_mask_strategy(z, ref_latents, [strategy] * len(prompts), align=vae.align)
    b = len(prompts)
    timesteps = rflow.get_timesteps(steps, b, clips.SIZE, clips.SIZE, num_frames)
    full = lambda v: torch.full((b,), float(v))  # noqa: E731
    net = model.net
    y_null = net.null_caption[None].repeat(b, 1, 1)[:, None]
    gen = noise_mod.generator(seeds[0])
    with step_cache.caching(net, cache, steps) as stats:
        out = rflow.sample(net, z, y, y_mask, y_null, timesteps, cfg, mask,
                           {"height": full(clips.SIZE), "width": full(clips.SIZE), "fps": full(24)},
                           noise_fn=lambda s: noise_mod.seeded_noise(0, s, gen))
    for k, v in (stats or {}).items():
        cache["counts"][k] = cache["counts"].get(k, 0) + v
    video = pipeline.decode(vae, {"samples": out, "opensora": latent["opensora"]})
    return ((video.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 4, 1)


def rendered(scene, frames: int) -> torch.Tensor:
    return clips.render(scene, frames)[None]  # [1, 3, T, H, W] in -1..1


def to_frames(video: torch.Tensor) -> torch.Tensor:
    """[1, 3, T, H, W] in -1..1 -> [T, H, W, 3] in 0..1"""
    return ((video[0] + 1) / 2).permute(1, 2, 3, 0)


def _ok_position(a, b, tol=POS_TOL):
    return not any(math.isnan(v) for v in (*a, *b)) and math.hypot(a[0] - b[0], a[1] - b[1]) <= tol


def run_suite(models, suite: str, n: int | None = None, steps: int = STEPS, cfg: float = CFG, batch: int = 48,
              cache: dict | None = None):
    """Per-scene results and the suite's accuracy."""
    scenes = suite_scenes(suite, n)
    results = []
    for i in range(0, len(scenes), batch):
        part = scenes[i:i + batch]
        prompts = [s.caption for s in part]
        seeds = list(range(i, i + len(part)))
        if suite in ("seen", "held_out"):
            videos = generate(models, prompts, seeds, clips.CHUNK, steps=steps, cfg=cfg, cache=cache)
            for s, v in zip(part, videos):
                results.append({"prompt": s.caption, **detector.score(v, s.colour, s.shape, s.motion)})
        elif suite == "i2v":
            refs = [rendered(s, 1) for s in part]
            videos = generate(models, prompts, seeds, clips.CHUNK, refs, "0", steps, cfg, cache)
            for s, v, ref in zip(part, videos, refs):
                r = detector.score(v, s.colour, s.shape, s.motion)
                start, image = detector.position(v, 0), detector.position(to_frames(ref), 0)
                r["starts_at_image"] = _ok_position(start, image)
                r["correct"] = r["correct"] and r["starts_at_image"]
                results.append({"prompt": s.caption, **r})
        elif suite == "extend":
            prev = [rendered(s, 2 * clips.CHUNK)[:, :, : clips.CHUNK] for s in part]
            videos = generate(models, prompts, seeds, 2 * clips.CHUNK, prev, "0,0,0,0,5", steps, cfg, cache)
            for s, v, p in zip(part, videos, prev):
                new = v[clips.CHUNK:]
                r = detector.score(new, s.colour, s.shape, s.motion)
                truth = to_frames(rendered(s, 2 * clips.CHUNK))
                expected = detector.position(truth, clips.CHUNK)  # where the motion puts it at frame 17
                got = detector.position(v, clips.CHUNK)
                r["seam"] = _ok_position(got, expected) and abs(got[2] / expected[2] - 1) <= SIZE_TOL
                r["correct"] = r["correct"] and r["seam"]
                results.append({"prompt": s.caption, **r})
        elif suite == "loop":
            refs = [rendered(s, 1) for s in part]
            videos = generate(models, prompts, seeds, clips.CHUNK + 1, refs, "0;0,0,0,-1,1", steps, cfg, cache)
            for s, v in zip(part, videos):
                tr = detector.measure(v)
                first, last = detector.position(v, 0), detector.position(v, clips.CHUNK - 1)
                kept = tr.colour == s.colour and tr.shape == s.shape
                closes = _ok_position(first, last) and abs(last[2] / first[2] - 1) <= SIZE_TOL
                results.append({"prompt": s.caption, "colour": tr.colour == s.colour, "shape": tr.shape == s.shape,
                                "closes": closes, "correct": kept and closes,
                                "detected": {"colour": tr.colour, "shape": tr.shape, "first": first, "last": last}})
        else:
            raise ValueError(f"unknown suite '{suite}' (one of {SUITES})")
    accuracy = sum(r["correct"] for r in results) / max(1, len(results))
    return {"accuracy": accuracy, "n": len(results), "results": results}


def evaluate(models_dir: str | None = None, suites=SUITES, n: int | None = None, steps: int = STEPS,
             cfg: float = CFG, cache: dict | None = None) -> dict:
    """cache: step-cache settings; the result then says per suite how many transformer calls were skipped."""
    models = load_demo(models_dir)
    out = {"steps": steps, "cfg": cfg, "suites": {}}
    for suite in suites:
        t = time.time()
        suite_cache = None if cache is None else {**cache, "counts": {}}
        res = run_suite(models, suite, n, steps, cfg, cache=suite_cache)
        if suite_cache is not None:
            res["transformer_calls"] = suite_cache["counts"]
        res["seconds"] = round(time.time() - t, 1)
        out["suites"][suite] = res
        print(f"{suite:9s} {res['accuracy']:.3f} ({res['n']} videos, {res['seconds']} s)", flush=True)
    return out
