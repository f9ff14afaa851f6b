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
