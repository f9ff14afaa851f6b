"""Open-Sora 1.2 speed and memory: transformer per-step time and VAE decode time / peak memory.

    python benchmarks/opensora_v1_2.py [--config tiny|released] [--device cpu|cuda] [--out FILE]

Figures are reported with a reference run in the same process: the transformer with SDPA attention
against the textbook attention, and the VAE's chunked decode (ours: one temporal chunk at a time, frames
streamed off the device) against decoding every chunk before the 2D decoder (the original's order).
Peak memory on CPU is the process's max RSS growth, measured in a fresh subprocess per run; on CUDA,
torch.cuda.max_memory_allocated. Results go to benchmarks/results/ as JSON.
"""
import argparse
import json
import sys
import time

import torch

from common import environment, import_pack, memory_mark, peak_since, report, run_child, timed, write_result


def _stdit(config, device, dtype):
    from comfyui_opensora.models.opensora.stdit3 import RELEASED, STDiT3

    cfg = RELEASED if config == "released" else dict(hidden_size=64, depth=2, num_heads=4, caption_channels=32)
    return STDiT3(**cfg).to(device, dtype).eval(), cfg


def bench_transformer(config, device, repeats):
    from comfyui_opensora.models import layers

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, cfg = _stdit(config, device, dtype)
    # 240p, 51 frames: latent 15 x 30 x 53, CFG batch 2 (tiny: 17 frames at 240p)
    t = 15 if config == "released" else 5
    x = torch.randn(2, 4, t, 30, 53, device=device)
    kw = dict(timestep=torch.tensor([900.0, 900.0], device=device),
              y=torch.randn(2, 1, 300, cfg["caption_channels"], device=device),
              mask=torch.ones(1, 300, dtype=torch.long, device=device), fps=torch.tensor([24.0, 24.0], device=device),
              height=torch.tensor([240.0]), width=torch.tensor([426.0]))
    out = {}
    for backend in ("sdpa", "math"):
        layers.ATTENTION_BACKEND["name"] = backend
        out[backend] = timed(lambda: model(x, **kw), device, repeats)
    layers.ATTENTION_BACKEND["name"] = "sdpa"
    return {"latent": list(x.shape), "seconds_per_step_sdpa": out["sdpa"], "seconds_per_step_reference": out["math"],
            "speed_ratio_reference_over_ours": out["math"] / out["sdpa"]}


def _vae_child(config, device, latent_frames, mode):
    """One decode in this (fresh) process; reports time and peak memory growth."""
    from comfyui_opensora.models.opensora import vae_v1_2

    torch.manual_seed(0)
    if config == "released":
        vae = vae_v1_2.OpenSoraVAEv12(spatial={}, temporal={})
    else:
        vae = vae_v1_2.OpenSoraVAEv12(spatial=dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1,
                                                   norm_num_groups=4), temporal=dict(filters=8, num_res=1, groups=4))
    vae = vae.to(device).eval()
    h, w = (30, 53) if config == "released" else (30, 53)
    z = torch.randn(1, 4, latent_frames, h, w, device=device)
    frames = vae.micro_frame_size * latent_frames // vae.micro_z_frame_size
    out_bytes = 3 * frames * h * 8 * w * 8 * 4
    mark = memory_mark(device)
    start = time.perf_counter()
    with torch.inference_mode():
        if mode == "chunked":
            video = vae_v1_2.decode_tiled(vae, z, frames)
        else:  # the original's order: every temporal chunk first, then the 2D decoder over all frames
            video = vae.decode(z, frames).cpu()
    peak = peak_since(device, mark)
    report({"latent_frames": latent_frames, "frames": int(video.shape[2]), "mode": mode,
            "seconds": time.perf_counter() - start, "peak_bytes": peak,
            "peak_minus_output_bytes": peak - (out_bytes if device == "cpu" else 0)})


def bench_vae(config, device, lengths):
    rows = []
    for n in lengths:
        for mode in ("chunked", "reference"):
            rows.append(run_child(__file__, "--vae-child", config, device, n, mode))
    return rows


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--vae-child":
        import_pack()
        _vae_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--config", choices=["tiny", "released"], default="tiny")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--lengths", default="5,10,20,40")
    p.add_argument("--out")
    args = p.parse_args()
    import_pack()
    torch.manual_seed(0)
    result = {"benchmark": "opensora_v1_2", "config": args.config, **environment(args.device),
              "transformer": bench_transformer(args.config, args.device, args.repeats),
              "vae_decode": bench_vae(args.config, args.device, [int(x) for x in args.lengths.split(",")])}
    write_result(result, f"opensora_v1_2_{args.config}_{args.device}", args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
