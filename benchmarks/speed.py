"""Transformer step time by attention backend and with torch.compile, as ratios within one run.

    python benchmarks/speed.py [--config tiny|mid] [--device cpu|cuda] [--repeats N] [--no-compile] [--out FILE]

For STDiT3 (Open-Sora 1.2) and the MMDiT (2.0) at CPU-sized configs (mid: 240p 17 frames / 256px 33 frames
with narrow, shallow networks; random weights), one CFG-batch forward pass with each backend present (math is
the original's reference path), and sdpa with the blocks compiled (models/compilation.py; the warm-up call
compiles). Writes benchmarks/results/speed_<config>_<device>.json.
"""
import argparse
import json

import torch

from common import environment, import_pack, timed, write_result

CONFIGS = {
    "tiny": {"stdit3": dict(hidden_size=64, depth=2, num_heads=4, caption_channels=32), "stdit3_latent": (5, 16, 16),
             "mmdit": dict(hidden_size=64, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=(8, 12, 12)),
             "mmdit_latent": (3, 8, 8)},
    "mid": {"stdit3": dict(hidden_size=384, depth=4, num_heads=6, caption_channels=64), "stdit3_latent": (5, 30, 53),
            "mmdit": dict(hidden_size=384, num_heads=6, depth=2, depth_single_blocks=4, axes_dim=(16, 24, 24)),
            "mmdit_latent": (9, 16, 16)},
}


def _stdit3(config, device, dtype):
    from comfyui_opensora.models.opensora.stdit3 import STDiT3

    cfg = CONFIGS[config]["stdit3"]
    model = STDiT3(**cfg).to(device, dtype).eval()
    t, h, w = CONFIGS[config]["stdit3_latent"]
    x = torch.randn(2, 4, t, h, w, device=device, dtype=dtype)
    kw = dict(timestep=torch.tensor([900.0, 900.0], device=device),
              y=torch.randn(2, 1, 300, cfg["caption_channels"], device=device, dtype=dtype),
              mask=torch.ones(1, 300, dtype=torch.long, device=device), fps=torch.tensor([24.0, 24.0], device=device),
              height=torch.tensor([h * 8.0]), width=torch.tensor([w * 8.0]))
    return model, lambda: model(x, **kw), list(x.shape)


def _mmdit(config, device, dtype):
    from comfyui_opensora.models.opensora.mmdit import MMDiT, image_ids

    cfg = dict(in_channels=64, vec_in_dim=64, context_in_dim=64, cond_embed=False, **CONFIGS[config]["mmdit"])
    model = MMDiT(**cfg).to(device, dtype).eval()
    t, h, w = CONFIGS[config]["mmdit_latent"]
    img = torch.randn(3, t * (h // 2) * (w // 2), 64, device=device, dtype=dtype)  # 2.0 runs 3 guidance passes
    txt = torch.randn(3, 64, 64, device=device, dtype=dtype)
    ids, txt_ids = image_ids(3, t, h, w, 2, device).to(dtype), torch.zeros(3, 64, 3, device=device, dtype=dtype)
    vec, ts = torch.randn(3, 64, device=device, dtype=dtype), torch.full((3,), 0.9, device=device, dtype=dtype)
    return model, lambda: model(img, ids, txt, txt_ids, ts, vec), [3, t, h, w]


def bench(build, config, device, repeats, compile_too):
    from comfyui_opensora.models import attention, compilation

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, step, shape = build(config, device, dtype)
    present = [b for b in ("sdpa", "math", "flash", "sage")
               if b not in attention.PACKAGES or attention._importable(attention.PACKAGES[b][0])]
    row = {"latent": shape, "seconds_per_step": {}}
    for backend in present:
        with attention.use(backend):
            row["seconds_per_step"][backend] = timed(step, device, repeats)
    if compile_too:
        compilation.apply(model, {"mode": "default", "dynamic": False})
        with attention.use("sdpa"):
            row["seconds_per_step"]["sdpa_compiled"] = timed(step, device, repeats)
        compilation.apply(model, None)
    s = row["seconds_per_step"]
    row["speedup_sdpa_over_math"] = s["math"] / s["sdpa"]
    if compile_too:
        row["speedup_compiled_over_sdpa"] = s["sdpa"] / s["sdpa_compiled"]
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=list(CONFIGS), default="mid")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--out")
    args = parser.parse_args()
    import_pack()
    result = {"benchmark": "speed", "config": args.config, **environment(args.device),
              "stdit3": bench(_stdit3, args.config, args.device, args.repeats, not args.no_compile),
              "mmdit": bench(_mmdit, args.config, args.device, args.repeats, not args.no_compile)}
    write_result(result, f"speed_{args.config}_{args.device}", args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
