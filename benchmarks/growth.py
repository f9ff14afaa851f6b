"""How a transformer step's cost grows: seconds per step against frames (fixed size) and against pixels (fixed
frames), for STDiT3 (Open-Sora 1.2: attention split into spatial and temporal), CogVideoX (full 3D attention
with the text) and the MMDiT (Open-Sora 2.0: full attention), at CPU-sized widths with random weights.

    python benchmarks/growth.py [--config tiny|mid] [--device cpu|cuda] [--repeats N] [--out FILE]

Writes benchmarks/results/growth_<config>_<device>.json and one PNG per family beside it (the two curves, each
normalised to its first point, against the relative token count, with the linear and quadratic references).
"""
import argparse
import json
import os

import torch

from common import RESULTS, environment, import_pack, timed, write_result

# latent (frames, height, width) per point: first against frames, then against pixels
POINTS = {
    "mid": {"frames": [(3, 32, 32), (6, 32, 32), (12, 32, 32), (24, 32, 32)],
            "pixels": [(6, 16, 16), (6, 32, 32), (6, 48, 48), (6, 64, 64)]},
    "tiny": {"frames": [(1, 8, 8), (2, 8, 8)], "pixels": [(1, 8, 8), (1, 16, 16)]},
}
WIDTHS = {"mid": dict(hidden=256, heads=4, depth=2), "tiny": dict(hidden=64, heads=2, depth=1)}


def stdit3(config, device, dtype):
    from comfyui_opensora.models.opensora.stdit3 import STDiT3

    w = WIDTHS[config]
    net = STDiT3(hidden_size=w["hidden"], depth=w["depth"], num_heads=w["heads"], caption_channels=64)
    net = net.to(device, dtype).eval()

    def step(t, h, ww):
        x = torch.randn(2, 4, t, h, ww, device=device, dtype=dtype)
        kw = dict(timestep=torch.tensor([900.0, 900.0], device=device),
                  y=torch.randn(2, 1, 300, 64, device=device, dtype=dtype),
                  mask=torch.ones(1, 300, dtype=torch.long, device=device),
                  fps=torch.tensor([24.0, 24.0], device=device), height=torch.tensor([h * 8.0]),
                  width=torch.tensor([ww * 8.0]))
        return lambda: net(x, **kw)
    return step


def cogvideox(config, device, dtype):
    from comfyui_opensora.models.cogvideox.loading import VARIANTS
    from comfyui_opensora.models.cogvideox.transformer import CogVideoXTransformer3D, rope_for_video

    w = WIDTHS[config]
    cfg = dict(VARIANTS["5b"], num_attention_heads=w["heads"], attention_head_dim=w["hidden"] // w["heads"],
               num_layers=w["depth"], text_embed_dim=64, time_embed_dim=64)
    net = CogVideoXTransformer3D(**cfg).to(device, dtype).eval()

    def step(t, h, ww):
        x = torch.randn(2, t, 16, h, ww, device=device, dtype=dtype)
        text = torch.randn(2, 226, 64, device=device, dtype=dtype)
        rope = tuple(r.to(device) for r in rope_for_video(net.config, h * 8, ww * 8, t))
        return lambda: net(x, text, torch.tensor([500, 500], device=device), image_rotary_emb=rope)
    return step


def mmdit(config, device, dtype):
    from comfyui_opensora.models.opensora.mmdit import MMDiT, image_ids

    w = WIDTHS[config]
    head = w["hidden"] // w["heads"]
    net = MMDiT(in_channels=64, vec_in_dim=64, context_in_dim=64, hidden_size=w["hidden"], num_heads=w["heads"],
                depth=w["depth"], depth_single_blocks=w["depth"], axes_dim=(head // 4, 3 * head // 8, 3 * head // 8),
                cond_embed=False).to(device, dtype).eval()

    def step(t, h, ww):
        n = t * (h // 2) * (ww // 2)
        img = torch.randn(3, n, 64, device=device, dtype=dtype)
        txt = torch.randn(3, 64, 64, device=device, dtype=dtype)
        ids, txt_ids = image_ids(3, t, h, ww, 2, device).to(dtype), torch.zeros(3, 64, 3, device=device, dtype=dtype)
        vec, ts = torch.randn(3, 64, device=device, dtype=dtype), torch.full((3,), 0.9, device=device, dtype=dtype)
        return lambda: net(img, ids, txt, txt_ids, ts, vec)
    return step


def plot(path: str, family: str, rows: dict):
    """The two curves (cost / first cost against tokens / first tokens) with y = x and y = x^2 for reference."""
    from PIL import Image, ImageDraw

    size, pad = (560, 400), 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    series = {axis: [(r["tokens"] / rs[0]["tokens"], r["seconds_per_step"] / rs[0]["seconds_per_step"]) for r in rs]
              for axis, rs in rows.items()}
    xmax = max(x for s in series.values() for x, _ in s)
    ymax = max(max(y for s in series.values() for _, y in s), xmax)
    to_px = lambda x, y: (pad + (x - 1) / max(xmax - 1, 1e-9) * (size[0] - 2 * pad),  # noqa: E731
                          size[1] - pad - (y - 1) / max(ymax - 1, 1e-9) * (size[1] - 2 * pad))
    d.line([to_px(1, 1), to_px(xmax, 1)], fill="black")
    d.line([to_px(1, 1), to_px(1, ymax)], fill="black")
    steps = [1 + i * (xmax - 1) / 40 for i in range(41)]
    for name, f, colour in (("linear", lambda x: x, "#999999"), ("quadratic", lambda x: x * x, "#cccccc")):
        d.line([to_px(x, min(f(x), ymax)) for x in steps if f(x) <= ymax * 1.0001], fill=colour, width=1)
    for (axis, pts), colour in zip(series.items(), ("#d62728", "#1f77b4")):
        d.line([to_px(x, y) for x, y in pts], fill=colour, width=3)
        d.text((size[0] - 250, 30 + 14 * list(series).index(axis)), f"against {axis}", fill=colour)
    d.text((size[0] - 250, 58), "grey: linear, light grey: quadratic", fill="#777777")
    d.text((size[0] // 2 - 60, size[1] - 30), f"tokens (x {xmax:.0f} at the right)", fill="black")
    d.text((5, 8), f"{family}: step time (x {ymax:.1f} at the top)", fill="black")
    img.save(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=list(POINTS), default="mid")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    import_pack()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    result = {"benchmark": "growth", "config": args.config, **environment(args.device), "families": {}}
    out = args.out or os.path.join(RESULTS, f"growth_{args.config}_{args.device}.json")
    for family, build in (("stdit3", stdit3), ("cogvideox", cogvideox), ("mmdit", mmdit)):
        torch.manual_seed(0)
        step = build(args.config, args.device, dtype)
        rows = {}
        for axis, points in POINTS[args.config].items():
            rows[axis] = [{"latent": list(p), "tokens": p[0] * (p[1] // 2) * (p[2] // 2),
                           "seconds_per_step": timed(step(*p), args.device, args.repeats)} for p in points]
            first, last = rows[axis][0], rows[axis][-1]
            print(family, axis, f"tokens x{last['tokens'] / first['tokens']:.0f} -> time "
                                f"x{last['seconds_per_step'] / first['seconds_per_step']:.2f}", flush=True)
        result["families"][family] = rows
        plot(os.path.splitext(out)[0] + f"_{family}.png", family, rows)
    write_result(result, f"growth_{args.config}_{args.device}", out)
    print(json.dumps({f: {a: round(r[-1]["seconds_per_step"] / r[0]["seconds_per_step"], 2) for a, r in rows.items()}
                      for f, rows in result["families"].items()}))


if __name__ == "__main__":
    main()
