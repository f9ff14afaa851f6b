"""The command line: run / convert / validate / nodes, as a user calls them."""
import json
import os
import subprocess
import sys

import pytest
import torch

from comfyui_opensora import comfy_adapter, video_io
from comfyui_opensora.harness.cli import main
from conftest import REPO_ROOT, golden_root

WORKFLOWS = os.path.join(REPO_ROOT, "workflows")


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "in.mp4"
    video_io.write_video(str(path), torch.rand(6, 32, 48, 3), 12.0)
    yield str(path)
    comfy_adapter._settings.update(output_dir=None, input_dir=None, models_dir=None)


def test_run_prints_saved_files(clip, tmp_path, capsys):
    out_dir = tmp_path / "out"
    rc = main(["run", os.path.join(WORKFLOWS, "video_convert.json"), "--set", f"path={clip}", "--set", "2.crf=30",
               "--output-dir", str(out_dir)])
    printed = capsys.readouterr().out.strip().splitlines()
    assert rc == 0
    assert printed == [str(out_dir / "OpenSora" / "converted_00001_.webm")]
    meta = video_io.read_metadata(printed[0])
    assert meta["prompt"]["2"]["inputs"]["crf"] == 30          # the prompt that ran, as ComfyUI embeds it
    assert meta["workflow"]["nodes"][0]["type"] == "OpenSoraLoadVideo"  # and the UI workflow
    assert video_io.read_video(printed[0]).frames.shape[0] == 6


def test_bad_workflow_report(tmp_path, capsys):
    rc = main(["run", os.path.join(WORKFLOWS, "video_convert.json"), "--set", "crf=99", "--set", "video=none",
               "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "node 1 (OpenSoraLoadVideo): OpenSoraLoadVideo: input 'video': no file chosen. Fix: pick a video" in err
    assert "node 2 (OpenSoraSaveVideo): 'crf' = 99 is above the maximum 63: set it to at most 63" in err
    assert not os.listdir(tmp_path)


def test_set_errors(capsys):
    assert main(["run", os.path.join(WORKFLOWS, "video_convert.json"), "--set", "nope=1"]) == 2
    assert "no node has an input 'nope'" in capsys.readouterr().err
    assert main(["run", os.path.join(WORKFLOWS, "video_convert.json"), "--set", "9.crf=1"]) == 2
    assert "no node with id or title '9'" in capsys.readouterr().err


def test_convert_and_validate_with_object_info(tmp_path, capsys):
    case = os.path.join(golden_root(), "comfy_frontend", "cases", "basic_txt2img")
    info = os.path.join(golden_root(), "comfy_frontend", "object_info_0.3.64.json")
    assert main(["convert", case + ".ui.json", "--object-info", info]) == 0
    assert json.loads(capsys.readouterr().out) == json.load(open(case + ".api.0.3.64.json"))
    bad = os.path.join(golden_root(), "comfy_frontend", "cases", "link_deleted_nodes_both.ui.json")
    with pytest.raises(SystemExit, match="InvalidLinkError"):
        main(["convert", bad, "--object-info", info])
    vdir = os.path.join(golden_root(), "comfy_frontend", "validation")
    assert main(["validate", os.path.join(vdir, "ok_baseline.prompt.json"), "--object-info", info]) == 0
    assert main(["validate", os.path.join(vdir, "int_below_min.prompt.json"), "--object-info", info]) == 1
    assert "node 1 (EmptyImage): 'width' = 0 is below the minimum 1" in capsys.readouterr().out


def test_module_entry_point_and_nodes_reference():
    out = subprocess.run([sys.executable, "-m", "comfyui_opensora", "nodes"], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "OpenSora Save Video (`OpenSoraSaveVideo`)" in out.stdout
    assert "`filename_prefix` STRING" in out.stdout


def test_repeat_advances_seed_controls(tmp_path, capsys):
    """--repeat queues again like the Run button: an 'increment' seed gives a new seed per run, and the
    loaders run once (the executor cache is kept for the session)."""
    from comfyui_opensora.models.tiny import write_tiny_models

    models = tmp_path / "models"
    write_tiny_models(str(models))
    wf = json.load(open(os.path.join(WORKFLOWS, "opensora_v1.2_t2v.json")))
    for node in wf["nodes"]:
        if node["type"] == "OpenSoraSampler":
            node["widgets_values"][0:2] = [5, "increment"]
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf))
    rc = main(["run", str(path), "--repeat", "2", "--models-dir", str(models), "--output-dir", str(tmp_path / "o"),
               "--set", "model_name=opensora_v1.2_tiny.safetensors", "--set", "vae_name=opensora_vae_v1.2_tiny.safetensors",
               "--set", "text_encoder_name=t5_tiny.safetensors", "--set", "resolution=custom", "--set", "width=32",
               "--set", "height=32", "--set", "num_frames=17", "--set", "steps=1"])
    files = capsys.readouterr().out.split()
    assert rc == 0 and len(files) == 2
    seeds = [video_io.read_metadata(f)["prompt"]["6"]["inputs"]["seed"] for f in files]
    assert seeds == [5, 6]


def test_set_parses_integers_exactly():
    """--set INT values are read as integers, not through float: the sampler's maximum seed (2**64 - 1) and
    seeds past 2**53 stay what was typed; 1e3 and 7.0 are integers, 7.5 and nan are not."""
    from comfyui_opensora.harness.cli import _coerce

    spec = ("INT", {"min": 0, "max": 0xFFFFFFFFFFFFFFFF})
    assert _coerce("18446744073709551615", spec) == 2 ** 64 - 1
    assert _coerce("9007199254740993", spec) == 2 ** 53 + 1
    assert _coerce(" 0x10 ", spec) == 16 and _coerce("1_000", spec) == 1000
    assert _coerce("007", spec) == 7 and _coerce("1e3", spec) == 1000 and _coerce("7.0", spec) == 7
    for bad in ("7.5", "nan", "inf", "seven"):
        with pytest.raises(ValueError):
            _coerce(bad, spec)


def test_non_finite_floats_are_refused_at_validation(tmp_path, capsys):
    """cfg=NaN got through ComfyUI's min / max check (comparisons with NaN are false) and saved a black video;
    now the prompt is refused before anything runs, inside ComfyUI (VALIDATE_INPUTS) and headless alike."""
    rc = main(["run", os.path.join(WORKFLOWS, "demo_t2v.json"), "--set", "cfg=nan", "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "OpenSoraSampler: input 'cfg': nan is not a finite number" in err
    assert not os.listdir(tmp_path)


def test_float_checks_keep_the_range_checks_they_replace():
    from comfyui_opensora.nodes.sampling import OpenSoraReferenceCondition, OpenSoraSampler
    from comfyui_opensora.nodes.video import OpenSoraLoadVideo, OpenSoraSaveVideo

    assert OpenSoraSampler.VALIDATE_INPUTS(cfg=7.0, denoise=1.0, guidance_img=3.0, flow_shift=0.0) is True
    assert OpenSoraSampler.VALIDATE_INPUTS(cfg=None, denoise=float("nan")).startswith(
        "OpenSoraSampler: input 'denoise': nan is not a finite number")
    assert "input 'cfg': 31.0 is above the maximum 30.0" in OpenSoraSampler.VALIDATE_INPUTS(cfg=31.0)
    assert "input 'guidance_img': 0.5 is below the minimum 1.0" in OpenSoraSampler.VALIDATE_INPUTS(guidance_img=0.5)
    assert "input 'edit_ratio': inf" in OpenSoraReferenceCondition.VALIDATE_INPUTS(edit_ratio=float("inf"))
    assert "input 'fps': nan" in OpenSoraSaveVideo.VALIDATE_INPUTS(format="mp4", pixel_format="yuv420p",
                                                                     fps=float("nan"))
    assert "input 'force_fps': -1.0 is below" in OpenSoraLoadVideo.VALIDATE_INPUTS(video="x.mp4", force_fps=-1.0)


def test_second_ctrl_c_quits_now():
    from comfyui_opensora.harness.cli import _on_ctrl_c

    comfy_adapter.clear_cancel()
    try:
        _on_ctrl_c()  # the first asks for a clean cancel at the next check
        assert comfy_adapter._cancel.is_set()
        with pytest.raises(KeyboardInterrupt):
            _on_ctrl_c()
    finally:
        comfy_adapter.clear_cancel()


def test_sigterm_stops_the_run_and_leaves_no_file(tmp_path):
    """SIGTERM used to kill the run where it stood, leaving a hidden .partial file; now it unwinds (the writers
    clean up) and exits 143."""
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "comfyui_opensora", "run", os.path.join(WORKFLOWS, "demo_t2v.json"),
                             "--set", "steps=1000", "--output-dir", str(out)], cwd=os.path.dirname(REPO_ROOT),
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": _pack_path(tmp_path)})
    deadline = time.time() + 120
    seen = ""
    while "Sampler" not in seen and time.time() < deadline:  # the node's line: it is about to sample
        seen += proc.stderr.read(1)
    time.sleep(2)
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143, seen + rest
    assert "terminated: stopped, no partial files were written" in rest
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def _pack_path(tmp_path) -> str:
    """A folder where `comfyui_opensora` is this checkout, whatever the checkout's folder is called."""
    link = tmp_path / "pkg"
    link.mkdir()
    os.symlink(REPO_ROOT, link / "comfyui_opensora")
    return str(link)


@pytest.mark.parametrize("case", ["file_as_output_dir", "prefix_outside", "read_only"])
def test_output_folder_problems_are_found_at_validation(tmp_path, capsys, clip, case, monkeypatch):
    """Found when the prompt is validated, before anything runs, naming the node, the input and the fix (they
    used to surface after sampling and decoding as raw OS errors)."""
    out, sets = tmp_path / "out", ["--set", f"path={clip}"]
    if case == "file_as_output_dir":
        out.write_text("not a folder")
    elif case == "prefix_outside":
        out.mkdir()
        sets += ["--set", "filename_prefix=../../elsewhere/clip"]
    else:
        out.mkdir()
        out.chmod(0o500)
        if os.geteuid() == 0:  # root may write anyway: ask the check as a user would be answered
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode: real(p, mode) and not str(p).startswith(str(out)))
    try:
        rc = main(["run", os.path.join(WORKFLOWS, "video_convert.json"), *sets, "--output-dir", str(out)])
    finally:
        if out.is_dir():
            out.chmod(0o700)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "OpenSoraSaveVideo: input 'filename_prefix'" in err, err
    assert {"file_as_output_dir": "is a file", "prefix_outside": "points outside the output folder",
            "read_only": "is not writable"}[case] in err, err


def test_tiny_models_recipes_run(tmp_path, capsys):
    """`tiny-models` writes every family (CogVideoX folders too) and prints commands that run as printed."""
    import shlex

    models = tmp_path / "models"
    assert main(["tiny-models", "--models-dir", str(models)]) == 0
    printed = capsys.readouterr().out
    assert (models / "opensora" / "cog_5b" / "transformer").is_dir() and "cogvideox 1.5_i2v" in printed
    commands = [line.strip() for line in printed.splitlines() if line.strip().startswith("python -m")]
    assert len(commands) == 2
    old = os.getcwd()
    os.chdir(REPO_ROOT)  # the commands name workflows/ relative to the checkout
    try:
        for command in commands:
            args = shlex.split(command)[3:] + ["--output-dir", str(tmp_path / "out")]
            assert main(args) == 0, (command, capsys.readouterr().err)
    finally:
        os.chdir(old)
        comfy_adapter._settings.update(output_dir=None, input_dir=None, models_dir=None)
    assert len([p for p in (tmp_path / "out").rglob("*.mp4")]) == 2
