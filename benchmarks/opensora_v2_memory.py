"""Open-Sora 2.0 memory: per-step time and peak memory of the MMDiT sampler step under the offload modes and
with fp32 / bf16 / fp8 weight storage.

    python benchmarks/opensora_v2_memory.py [--config mid|realistic] [--device cpu|cuda] [--steps 2] [--out FILE]

Each run is one rflow_v2.sample call (text-to-video, CFG batch 3) after a one-step warm-up, in a fresh
subprocess. Figures are reported against the run of the same script without offload and with fp32 weights.

- CPU (`mid` config, hidden 512, 4 + 8 blocks, ~70M parameters): the checkpoints are written once (fp32, and a
  ComfyUI-style scaled_fp8 file made with store_fp8) and loaded in the child, so that an fp8 run never holds the
  fp32 weights. Memory is the process's resident set: `resident_bytes` after loading, and `peak_bytes`, the
  highest resident set while sampling (the kernel's high-water mark, reset after loading through
  /proc/self/clear_refs; where that is refused, ru_maxrss, which then includes loading), both over the resident
  set before loading. A CPU has nothing to offload to, so every offload mode runs with the model on "cpu" and
  the offload device named "cpu:0": the hooks run and the copies stay in host memory. Those rows measure the
  hooks' overhead, not a memory saving: "sequential" still copies each block once per pass (its leave hook's
  .to("cpu:0") is a real memcpy, and the freed copies may stay in the heap, raising the resident set), while
  "sequential_prefetch" only swaps tensors (its copies go to "cpu", where the weights already are).
- CUDA (`realistic` config: the released widths, hidden 3072 / 24 heads / T5 4096 / CLIP 768, with 2 + 4 blocks
  instead of 19 + 38, 512 text tokens, 256px 16:9 with 33 frames): models are built in memory, the offload device
  is the CPU, and memory is torch.cuda.max_memory_allocated over what was allocated before the model came.
Results go to benchmarks/results/opensora_v2_memory_<device>.json.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch

from common import environment, import_pack, report, run_child, write_result

CONFIGS = {
    # small but not tiny: the released head dim (128) and RoPE split, the released T5 / CLIP widths
    "mid": dict(model=dict(in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=512, num_heads=4,
                           depth=4, depth_single_blocks=8, axes_dim=(16, 56, 56)),
                latent=(1, 16, 3, 16, 16), text_tokens=64),
    # the released widths with fewer blocks: 256px 16:9 (latent 24 x 42), 33 frames (9 latent frames)
    "realistic": dict(model=dict(in_channels=64, vec_in_dim=768, context_in_dim=4096, hidden_size=3072,
                                 num_heads=24, depth=2, depth_single_blocks=4, axes_dim=(16, 56, 56)),
                      latent=(1, 16, 9, 24, 42), text_tokens=512),
}
MODES = ("none", "sequential", "sequential_prefetch")


def _build(config, seed=0):
    from comfyui_opensora.models import tiny
    from comfyui_opensora.models.opensora.mmdit import MMDiT

    torch.manual_seed(seed)
    net = MMDiT(**CONFIGS[config]["model"]).eval().requires_grad_(False)
    tiny._perturb(net)  # zero-initialised layers (the modulations' biases ...) made non-zero
    return net


def write_checkpoints(config, folder):
    """fp32 and scaled-fp8 checkpoints of the same random model."""
    from safetensors.torch import save_file

    from comfyui_opensora.models import fp8

    net = _build(config)
    paths = {"fp32": os.path.join(folder, "fp32.safetensors"), "fp8": os.path.join(folder, "fp8.safetensors")}
    save_file(net.state_dict(), paths["fp32"])
    save_file(fp8.scaled_fp8_state_dict(fp8.store_fp8(net)), paths["fp8"])
    return paths


def _rss():
    """(current, high-water) resident set in bytes, from /proc; ru_maxrss as the high-water mark elsewhere."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return peak, peak


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (and ru_maxrss) to the current resident set
        return True
    except OSError:
        return False


def _child(config, device, storage, mode, steps, ckpt):
    """One run in this (fresh) process; reports its row."""
    import gc

    from safetensors.torch import load

    from comfyui_opensora.models import fp8, offload, rflow_v2
    from comfyui_opensora.models.opensora.mmdit import load_mmdit

    cfg = CONFIGS[config]
    dev = torch.device(device)
    compute = torch.float32 if storage == "fp32" else (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    B, C, T, H, W = cfg["latent"]
    g = torch.Generator().manual_seed(0)
    z = torch.randn(B, C, T, H, W, generator=g).to(dev, compute)
    txt = torch.randn(B, cfg["text_tokens"], cfg["model"]["context_in_dim"], generator=g).to(dev, compute)
    vec = torch.randn(B, cfg["model"]["vec_in_dim"], generator=g).to(dev, compute)
    ts_warm = rflow_v2.get_schedule(1, H * W // 4, T)
    ts = rflow_v2.get_schedule(steps, H * W // 4, T)

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        net = _build(config).to(dtype=compute)
        if storage == "fp8":
            fp8.store_fp8(net)
        offload_device = torch.device("cpu")
        resident = fp8.parameter_bytes(net)  # the weights, wherever the mode keeps them
        torch.cuda.reset_peak_memory_stats()
        reset = True
    else:
        base = _rss()[0]
        # Read the bytes, not load_file: its tensors may map the file lazily, and the resident set would then
        # count only the pages touched so far.
        with open(ckpt[storage], "rb") as f:
            sd = load(f.read())
        sd, scales = fp8.split_scaled_fp8(sd)
        net = load_mmdit(sd, num_heads=cfg["model"]["num_heads"])
        fp8.adopt_fp8_linears(net, scales)
        net.to(dtype=compute).requires_grad_(False)
        del sd
        gc.collect()
        offload_device = torch.device("cpu", 0) if mode != "none" else dev  # hooks run, copies are no-ops
        resident = _rss()[0] - base
        reset = _reset_peak_rss()

    def run(timesteps):
        with torch.inference_mode():
            out = rflow_v2.sample(net, z, txt, vec, torch.zeros_like(txt), torch.zeros_like(vec), timesteps)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    with offload.on_device(net, mode, dev, offload_device):
        run(ts_warm)
        start = time.perf_counter()
        out = run(ts)
        seconds = (time.perf_counter() - start) / steps
        # read inside: on CPU, leaving moves the model to "cpu:0", a real copy that is an artefact of the setup
        if dev.type == "cuda":
            peak = torch.cuda.max_memory_allocated() - base
            extra = {"peak_reserved_bytes": torch.cuda.max_memory_reserved(), "gpu": torch.cuda.get_device_name()}
        else:
            peak = _rss()[1] - base
            extra = {"peak_includes_loading": not reset}
    report({"storage": storage, "compute_dtype": str(compute).replace("torch.", ""), "offload": mode,
            "seconds_per_step": seconds, "peak_bytes": peak, "resident_bytes": resident,
            "parameter_bytes": fp8.parameter_bytes(net), "output_checksum": float(out.float().abs().mean()), **extra})


def bench(config, device, storages, steps, timeout):
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        ckpt = write_checkpoints(config, folder) if device == "cpu" else {}
        for storage in storages:
            for mode in MODES:
                rows.append(run_child(__file__, "--child", config, device, storage, mode, steps, json.dumps(ckpt),
                                      timeout=timeout))
                print(f"{storage:5s} {mode:20s} {rows[-1]['seconds_per_step']:.3f} s/step  "
                      f"peak {rows[-1]['peak_bytes'] / 2 ** 20:.1f} MiB", file=sys.stderr)
    ref = next(r for r in rows if r["storage"] == "fp32" and r["offload"] == "none")
    for r in rows:
        r["time_ratio_vs_none_fp32"] = r["seconds_per_step"] / ref["seconds_per_step"]
        r["peak_ratio_vs_none_fp32"] = r["peak_bytes"] / ref["peak_bytes"]
        r["resident_ratio_vs_none_fp32"] = r["resident_bytes"] / ref["resident_bytes"]
        r["parameter_ratio_vs_fp32"] = r["parameter_bytes"] / ref["parameter_bytes"]
    return rows


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        import_pack()
        config, device, storage, mode, steps, ckpt = sys.argv[2:8]
        _child(config, device, storage, mode, int(steps), json.loads(ckpt))
        return
    p = argparse.ArgumentParser()
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--config", choices=list(CONFIGS))
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--timeout", type=int, default=600, help="seconds per run")
    p.add_argument("--out")
    args = p.parse_args()
    import_pack()
    config = args.config or ("realistic" if args.device == "cuda" else "mid")
    storages = ("fp32", "bf16", "fp8") if args.device == "cuda" else ("fp32", "fp8")
    cfg = CONFIGS[config]
    result = {"benchmark": "opensora_v2_memory", "config": config, "model": cfg["model"],
              "latent": list(cfg["latent"]), "text_tokens": cfg["text_tokens"], "cfg_batch": 3 * cfg["latent"][0],
              "steps_timed": args.steps, **environment(args.device),
              "note": ("CPU: offload modes run with the offload device named 'cpu:0' (the hooks run; sequential "
                       "memcpys each block once per pass, prefetch swaps tensors only): their rows measure hook "
                       "overhead, not a saving; fp8 storage is the CPU memory saving" if args.device == "cpu" else
                       "CUDA: offload device is the CPU; peak is torch.cuda.max_memory_allocated"),
              "runs": bench(config, args.device, storages, args.steps, args.timeout)}
    write_result(result, f"opensora_v2_memory_{args.device}", args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
