"""Released-size transformer steps on one GPU: seconds per step, peak memory and achieved fraction of the bf16
peak FLOPs, and CogVideoX against diffusers on the same weights. Run by benchmarks/gpu/run.sh.

Cases (random weights in the released configurations, bf16, one guidance batch per step):
- CogVideoX-2B and -5B at 720x480, 49 frames (latent 13 x 60 x 90, CFG batch 2), ours and diffusers';
- STDiT3-XL/2 at 480p, 51 frames (latent 15 x 60 x 106, CFG batch 2);
- the 11B MMDiT at 256px, 129 frames (latent 33 x 12 x 21 tokens of 2x2 patches, 3 guidance passes) with fp8 block
  storage and block streaming (offload sequential_prefetch), as on a 24 GB card.
FLOPs are counted from the shapes: 2 per multiply-add of every Linear (parameters x tokens) plus attention's
4 x tokens^2 x width per layer. --dry-run: tiny configurations on the CPU, the same code paths.
"""
import argparse
import os
import sys
import time
import xml.etree.ElementTree as ET

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import environment, import_pack, write_result  # noqa: E402

BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, SXM


def linear_flops(net: torch.nn.Module, tokens: int) -> float:
    return 2.0 * tokens * sum(m.in_features * m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear))


def timed_step(fn, device, repeats: int) -> tuple[float, float]:
    """(seconds per call after one warm-up, peak GB during the timed calls)."""
    with torch.inference_mode():
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else 0.0
    return (time.perf_counter() - start) / repeats, peak


def random_(net: torch.nn.Module, device, dtype) -> torch.nn.Module:
    """Weights drawn on the device (an 11B model in seconds, not minutes on the CPU)."""
    net = net.to_empty(device=device)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.02)
        for b in net.buffers():
            if b.is_floating_point():
                b.normal_(0, 0.02)
    return net.to(dtype).eval()


def cogvideox(variant, device, dtype, dry, repeats):
    import diffusers
    from comfyui_opensora.models.cogvideox.loading import VARIANTS
    from comfyui_opensora.models.cogvideox.transformer import CogVideoXTransformer3D, rope_for_video

    cfg = dict(VARIANTS[variant])
    frames, h, w = (13, 60, 90) if not dry else (3, 8, 8)
    if dry:
        cfg.update(num_attention_heads=2, attention_head_dim=16, num_layers=2, text_embed_dim=32, time_embed_dim=32,
                   sample_height=8, sample_width=8)
    with torch.device("meta"):
        ours = CogVideoXTransformer3D(**cfg)
    ours = random_(ours, device, dtype)
    with torch.device(device):  # initialised where it runs: seconds for 5B parameters
        ref = diffusers.CogVideoXTransformer3DModel(**cfg)
    ref = ref.to(dtype).eval()
    ref.load_state_dict(ours.state_dict(), strict=False)
    x = torch.randn(2, frames, cfg["in_channels"], h, w, device=device, dtype=dtype)
    text = torch.randn(2, 226, cfg["text_embed_dim"], device=device, dtype=dtype)
    t = torch.tensor([500, 500], device=device)
    rope = None
    if cfg["use_rotary_positional_embeddings"]:
        rope = tuple(r.to(device) for r in rope_for_video(ours.config, h * 8, w * 8, frames))
    tokens = frames * h * w // 4 + 226
    width = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    flops = linear_flops(ours, 2 * tokens) + cfg["num_layers"] * 4.0 * 2 * tokens ** 2 * width
    s, peak = timed_step(lambda: ours(x, text, t, image_rotary_emb=rope), device, repeats)
    s_ref, peak_ref = timed_step(lambda: ref(x, text, t, image_rotary_emb=rope, return_dict=False), device, repeats)
    del ref
    return {"latent": [2, frames, h, w], "tokens": tokens, "seconds_per_step": s, "peak_gb": peak,
            "tflops_per_step": flops / 1e12, "diffusers_seconds_per_step": s_ref, "diffusers_peak_gb": peak_ref,
            "speed_ratio_diffusers_over_ours": s_ref / s}, flops / s


def stdit3(device, dtype, dry, repeats):
    from comfyui_opensora.models.opensora.stdit3 import RELEASED, STDiT3

    cfg = RELEASED if not dry else dict(hidden_size=64, depth=2, num_heads=4, caption_channels=32)
    t, h, w = (15, 60, 106) if not dry else (3, 8, 8)
    with torch.device("meta"):
        net = STDiT3(**cfg)
    net = random_(net, device, dtype)
    x = torch.randn(2, 4, t, h, w, device=device, dtype=dtype)
    kw = dict(timestep=torch.tensor([900.0, 900.0], device=device),
              y=torch.randn(2, 1, 300, cfg["caption_channels"], device=device, dtype=dtype),
              mask=torch.ones(1, 300, dtype=torch.long, device=device), fps=torch.tensor([24.0, 24.0], device=device),
              height=torch.tensor([h * 8.0]), width=torch.tensor([w * 8.0]))
    s_tokens = (h // 2) * (w // 2)
    width, depth = cfg["hidden_size"], cfg["depth"]
    # spatial attention over S tokens per frame, temporal over T per position, cross-attention to 300 tokens
    attn = depth * 4.0 * 2 * width * (t * s_tokens ** 2 + s_tokens * t ** 2 + 2 * t * s_tokens * 300)
    flops = linear_flops(net, 2 * t * s_tokens) + attn
    s, peak = timed_step(lambda: net(x, **kw), device, repeats)
    return {"latent": list(x.shape), "seconds_per_step": s, "peak_gb": peak, "tflops_per_step": flops / 1e12}, \
        flops / s


def mmdit(device, dtype, dry, repeats):
    from comfyui_opensora.models import fp8, offload
    from comfyui_opensora.models.opensora.mmdit import RELEASED, MMDiT, image_ids

    cfg = dict(RELEASED) if not dry else dict(RELEASED, hidden_size=64, num_heads=2, depth=1,
                                                     depth_single_blocks=1, axes_dim=(8, 12, 12), context_in_dim=32,
                                                     vec_in_dim=32)
    t, h, w = (33, 24, 42) if not dry else (3, 8, 8)  # latent of 129 frames at 192x336
    with torch.device("meta"):
        net = MMDiT(**cfg)
    net = random_(net, device, dtype)
    fp8.store_fp8(net, torch.float8_e4m3fn)
    net.to("cpu")  # block streaming: the blocks live in host RAM, two at a time on the GPU
    n = t * (h // 2) * (w // 2)
    img = torch.randn(3, n, cfg["in_channels"], device=device, dtype=dtype)
    cond = torch.zeros(3, n, cfg["in_channels"] + 4, device=device, dtype=dtype)
    txt = torch.randn(3, 512, cfg["context_in_dim"], device=device, dtype=dtype)
    ids, txt_ids = image_ids(3, t, h, w, 2, device).to(dtype), torch.zeros(3, 512, 3, device=device, dtype=dtype)
    vec, ts = torch.randn(3, cfg["vec_in_dim"], device=device, dtype=dtype), torch.full((3,), 0.9, device=device,
                                                                                      dtype=dtype)
    tokens = n + 512
    width = cfg["hidden_size"]
    flops = linear_flops(net, 3 * tokens) + (cfg["depth"] + cfg["depth_single_blocks"]) * 4.0 * 3 * tokens ** 2 * width
    mode = "sequential_prefetch" if device.type == "cuda" else "model"
    with offload.on_device(net, mode, device, torch.device("cpu")) as running:
        rope = running.rope(ids, txt_ids)
        s, peak = timed_step(lambda: running(img, ids, txt, txt_ids, ts, vec, cond=cond, rope=rope), device, repeats)
    return {"latent": [3, t, h, w], "tokens": tokens, "storage": "fp8_e4m3fn", "offload": mode,
            "seconds_per_step": s, "peak_gb": peak, "tflops_per_step": flops / 1e12}, flops / s


def junit_summary(path: str | None) -> dict | None:
    if not path or not os.path.exists(path) or not os.path.getsize(path):
        return None
    suite = ET.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dry-run", action="store_true", help="tiny configurations on the CPU")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--tests-junit", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import_pack()
    device = torch.device("cpu" if args.dry_run else "cuda")
    dtype = torch.float32 if args.dry_run else torch.bfloat16
    repeats = args.repeats or (1 if args.dry_run else 3)
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if device.type == "cuda" and k in torch.cuda.get_device_name()),
                None)
    result = {"benchmark": "gpu", "dry_run": args.dry_run, **environment(device), "bf16_peak_tflops": peak,
              "cuda_tests": junit_summary(args.tests_junit), "cases": {}}
    cases = {"cogvideox_2b": lambda: cogvideox("2b", device, dtype, args.dry_run, repeats),
             "cogvideox_5b": lambda: cogvideox("5b", device, dtype, args.dry_run, repeats),
             "stdit3_xl2": lambda: stdit3(device, dtype, args.dry_run, repeats),
             "mmdit_11b_fp8_streamed": lambda: mmdit(device, dtype, args.dry_run, repeats)}
    for name, run in cases.items():
        start = time.time()
        try:
            row, achieved = run()
            row["achieved_fraction_of_bf16_peak"] = achieved / (peak * 1e12) if peak else None
        except Exception as e:  # noqa: BLE001 - one failing case must not lose the others' figures
            row = {"error": f"{type(e).__name__}: {e}"}
        row["wall_seconds"] = round(time.time() - start, 1)
        result["cases"][name] = row
        print(name, {k: v for k, v in row.items() if not isinstance(v, list)}, flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    name = "gpu_dry_run" if args.dry_run else "gpu_" + torch.cuda.get_device_name().split()[-1].lower()
    print(write_result(result, name, args.out))


if __name__ == "__main__":
    main()
