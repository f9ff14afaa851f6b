"""What the benchmarks share: importing the pack from this checkout, timing, peak memory measured in a fresh
process, and writing the result JSON (whole or not at all)."""
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def import_pack():
    """Make `comfyui_opensora` importable as this checkout, without putting the repository root on sys.path."""
    root = os.path.dirname(HERE)
    sys.path.insert(0, root)
    import _import_pack

    sys.path.remove(root)
    _import_pack.ensure()


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device, repeats: int) -> float:
    """Seconds per call of fn, after one warm-up call."""
    with torch.inference_mode():
        fn()
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync(device)
    return (time.perf_counter() - start) / repeats


def memory_mark(device) -> int:
    """Where peak memory is counted from: CUDA's allocated bytes (peak stats reset), else the process's max RSS.
    A CPU peak is only meaningful in a fresh process (run_child), since max RSS never goes down."""
    if str(device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_since(device, mark: int) -> int:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - mark
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - mark


def report(row: dict):
    """A child run's result: one JSON line, the last thing it prints."""
    print(json.dumps(row), flush=True)


def run_child(script: str, *args, timeout: float | None = None) -> dict:
    """Run `python script args...` in a fresh process and return the row it reported."""
    res = subprocess.run([sys.executable, script, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{os.path.basename(script)} {' '.join(map(str, args))} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def environment(device) -> dict:
    return {"device": str(device), "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "machine": platform.machine(),
            **({"gpu": torch.cuda.get_device_name()} if str(device).startswith("cuda") else {})}


def write_result(result: dict, name: str, out: str | None = None, indent: int = 2) -> str:
    """Write results/<name>.json (or `out`) through a temporary file, so a crash never leaves half a file."""
    out = out or os.path.join(RESULTS, f"{name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
        with open(out + ".tmp", "w") as f:
            json.dump(result, f, indent=indent)
        os.replace(out + ".tmp", out)
    finally:
        if os.path.exists(out + ".tmp"):
            os.remove(out + ".tmp")
    return out
