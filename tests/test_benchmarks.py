"""The benchmark scripts keep running: the tiny Open-Sora 1.2 benchmark end to end (its numbers are not
asserted), and result files are written whole or not at all."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")


def test_tiny_benchmark_writes_its_result(tmp_path):
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, os.path.join(BENCH, "opensora_v1_2.py"), "--config", "tiny", "--device", "cpu",
                    "--repeats", "1", "--lengths", "5", "--out", str(out)], check=True, capture_output=True,
                   timeout=300)
    result = json.loads(out.read_text())
    assert result["benchmark"] == "opensora_v1_2" and result["device"] == "cpu"
    assert result["transformer"]["speed_ratio_reference_over_ours"] > 0
    assert [row["mode"] for row in result["vae_decode"]] == ["chunked", "reference"]
    assert all(row["frames"] == 17 and row["peak_bytes"] > 0 for row in result["vae_decode"])


def test_result_files_are_never_half_written(tmp_path):
    sys.path.insert(0, BENCH)
    try:
        from common import write_result
    finally:
        sys.path.remove(BENCH)
    out = tmp_path / "r.json"
    write_result({"a": 1}, "unused", str(out))
    with pytest.raises(TypeError):
        write_result({"a": object()}, "unused", str(out))  # fails while serialising
    assert json.loads(out.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["r.json"]


def test_speed_benchmark_writes_its_ratios(tmp_path):
    """benchmarks/speed.py end to end at the tiny config (compile left to the full run: it takes minutes)."""
    out = tmp_path / "speed.json"
    subprocess.run([sys.executable, os.path.join(BENCH, "speed.py"), "--config", "tiny", "--device", "cpu",
                    "--repeats", "1", "--no-compile", "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    for family in ("stdit3", "mmdit"):
        assert {"sdpa", "math"} <= set(result[family]["seconds_per_step"])
        assert result[family]["speedup_sdpa_over_math"] > 0


def test_gpu_benchmark_dry_run(tmp_path):
    """benchmarks/gpu/run.sh --dry-run: the GPU script's code paths at tiny sizes on the CPU, every case."""
    out = tmp_path / "gpu.json"
    subprocess.run(["bash", os.path.join(BENCH, "gpu", "run.sh"), "--dry-run", "--out", str(out)], check=True,
                   capture_output=True, timeout=300, env={**os.environ, "PYTHON": sys.executable})
    result = json.loads(out.read_text())
    assert result["dry_run"] and set(result["cases"]) == {"cogvideox_2b", "cogvideox_5b", "stdit3_xl2",
                                                         "mmdit_11b_fp8_streamed"}
    for name, row in result["cases"].items():
        assert "error" not in row and row["seconds_per_step"] > 0 and row["tflops_per_step"] > 0, (name, row)
    assert result["cases"]["cogvideox_5b"]["speed_ratio_diffusers_over_ours"] > 0


def test_growth_benchmark_writes_curves(tmp_path):
    """benchmarks/growth.py at the tiny config: both axes for the three transformers, and a PNG per family."""
    out = tmp_path / "growth.json"
    subprocess.run([sys.executable, os.path.join(BENCH, "growth.py"), "--config", "tiny", "--device", "cpu",
                    "--repeats", "1", "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    for family in ("stdit3", "cogvideox", "mmdit"):
        rows = result["families"][family]
        assert set(rows) == {"frames", "pixels"} and all(r["seconds_per_step"] > 0 for r in rows["frames"])
        assert (tmp_path / f"growth_{family}.png").stat().st_size > 0
