"""The demo model's data, its model-free detector, its training script (every stage, a few steps), and the
shipped model's behaviour: its videos scored by the detector, through the evaluation suites and through the
demo workflows run by the harness.
"""
import itertools
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from comfyui_opensora.demo import clips, detector, evaluate, train
from conftest import REPO_ROOT


# -- data and detector ---------------------------------------------------------------------------------------
def test_grammar_and_held_out_split():
    assert len(clips.SHAPES) >= 3 and len(clips.COLOURS) >= 5 and len(clips.BACKGROUNDS) >= 3
    assert set(clips.MOTIONS) == {"left", "right", "up", "down", "still", "growing", "shrinking"}
    assert clips.caption("red", "circle", "left", "black") == "a red circle moving left on a black background"
    seen = set(clips.training_triples())
    assert not seen & set(clips.HELD_OUT)
    # every pair inside a held-out triple is seen in training: the held-out set tests composition
    for c, s, m in clips.HELD_OUT:
        assert any(t[:2] == (c, s) for t in seen) and any(t[::2] == (c, m) for t in seen)
        assert any(t[1:] == (s, m) for t in seen)
    train_caps = {sc.caption.split(" on a ")[0] for sc in clips.dataset_scenes(0, 400, 10)}
    assert not any(clips.caption(*t, "black").split(" on a ")[0] in train_caps for t in clips.HELD_OUT)


def test_rendering_is_deterministic_and_in_frame():
    a, b = clips.dataset_scenes(3, 20, 5), clips.dataset_scenes(3, 20, 5)
    assert a == b
    for s in a:
        v = clips.render(s, clips.CHUNK + 1 if s.loop else 2 * clips.CHUNK)
        assert v.min() >= -1 and v.max() <= 1
        if s.loop:  # frame 17 is frame 0 again
            assert torch.allclose(v[:, 0], v[:, clips.CHUNK], atol=1e-5)


def test_detector_reads_the_ground_truth():
    """On rendered clips (every triple, random backgrounds) the detector must be right every time, or it
    cannot judge the model."""
    scenes = clips.eval_scenes(7, list(itertools.product(clips.COLOURS, clips.SHAPES, clips.MOTIONS)))
    for s in scenes:
        video = evaluate.to_frames(evaluate.rendered(s, 2 * clips.CHUNK))
        for part in (video[: clips.CHUNK], video[clips.CHUNK:]):
            r = detector.score(part, s.colour, s.shape, s.motion)
            assert r["correct"], (s, r["detected"])


def test_detector_rejects_wrong_videos():
    s = clips.Scene("red", "circle", "left", "black", 40.0, 32.0, 8.0)
    video = evaluate.to_frames(evaluate.rendered(s, clips.CHUNK))
    assert not detector.score(video, "blue", "circle", "left")["correct"]
    assert not detector.score(video, "red", "square", "left")["correct"]
    assert not detector.score(video, "red", "circle", "right")["correct"]
    assert not detector.score(video.flip(0), "red", "circle", "left")["correct"]  # played backwards
    assert detector.score(torch.zeros(17, 64, 64, 3), "red", "circle", "left")["detected"]["colour"] == "none"


# -- training ------------------------------------------------------------------------------------------------------
def test_training_reproduces_from_a_seed_and_resumes(tmp_path):
    """--quick runs every stage for a few steps. Two runs from the same seed export identical files; a rerun in
    the same work dir resumes from the checkpoints instead of training again."""
    outs = []
    for run in ("a", "b"):
        train.main(["--quick", "--work-dir", str(tmp_path / run), "--out", str(tmp_path / f"out_{run}")])
        outs.append({k: load_file(str(tmp_path / f"out_{run}" / v)) for k, v in train.FILES.items()})
    for kind in train.FILES:
        a, b = outs[0][kind], outs[1][kind]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), kind
    log = (tmp_path / "a" / "dit_loss.jsonl").read_text().splitlines()
    assert len(log) == train.QUICK["dit"]["steps"] and "loss" in json.loads(log[-1])
    train.main(["--quick", "--work-dir", str(tmp_path / "a"), "--out", str(tmp_path / "out_c")])
    assert len((tmp_path / "a" / "dit_loss.jsonl").read_text().splitlines()) == len(log)  # nothing retrained


# -- the shipped demo model: does the video do what the prompt says? ------------------------------------------
# Per suite, the share of the first 12 scenes (benchmarks/demo_eval.py runs them all) that get each attribute
# right, with floors below what the shipped weights measure (benchmarks/results/demo_eval.json) and well above
# chance (colour 1/5, shape 1/3, motion 1/7). A regression in text conditioning, reference placement, extension
# or loops fails here. Measured on these 12 (seen / held-out / i2v / extend / loop, whole video right): 1.00 /
# 0.83 / 1.00 / 0.83 / 0.42.
SUITE_FLOORS = {"seen": {"correct": 0.8, "colour": 0.9, "shape": 0.9, "motion": 0.9},
                "held_out": {"correct": 0.65, "colour": 0.75, "motion": 0.75},
                "i2v": {"correct": 0.8, "starts_at_image": 0.9, "motion": 0.8},
                "extend": {"correct": 0.65, "colour": 0.9, "seam": 0.75},
                "loop": {"colour": 0.9, "shape": 0.9, "closes": 0.3}}


@pytest.fixture(scope="module")
def demo_models():
    if not os.path.exists(evaluate.demo_paths()["model"]):
        pytest.fail("the demo model is not in demo_models/: it ships with the pack (python -m "
                    "comfyui_opensora.demo.train rebuilds it)")
    return evaluate.load_demo()


@pytest.mark.parametrize("suite", list(SUITE_FLOORS))
def test_demo_model_follows_prompts(demo_models, suite):
    results = evaluate.run_suite(demo_models, suite, n=12)["results"]
    for metric, floor in SUITE_FLOORS[suite].items():
        share = sum(bool(r.get(metric)) for r in results) / len(results)
        assert share >= floor, (metric, share, [(r["prompt"], r.get("detected")) for r in results])


def _run_workflow(name, tmp_path, sets=()):
    """A shipped demo workflow through the harness, as `python -m comfyui_opensora run` does; returns the frames
    [T, H, W, 3] of the one video it saves."""
    from comfyui_opensora import comfy_adapter, video_io
    from comfyui_opensora.harness import pack as pack_mod
    from comfyui_opensora.harness.cli import apply_sets
    from comfyui_opensora.harness.convert import load_prompt
    from comfyui_opensora.harness.execute import Executor
    from comfyui_opensora.harness.validate import format_report, validate_prompt

    pack = pack_mod.load_pack()
    defs = pack_mod.node_definitions(pack)
    prompt, _ = load_prompt(json.load(open(os.path.join(REPO_ROOT, "workflows", name))), defs)
    assert not apply_sets(prompt, list(sets), defs)
    comfy_adapter.configure(output_dir=str(tmp_path), input_dir=REPO_ROOT)
    try:
        result = validate_prompt(prompt, defs, pack.classes)
        assert result["http_status"] == 200, format_report(result)
        out = Executor(pack.classes).run(result["validated_prompt"])
    finally:
        comfy_adapter._settings.update(output_dir=None, input_dir=None)
    saved = [os.path.join(str(tmp_path), i["subfolder"], i["filename"]) for o in out["outputs"].values()
             for i in o.get("images", [])]
    assert len(saved) == 1
    return video_io.read_video(saved[0]).frames


def test_demo_t2v_workflow(demo_models, tmp_path):
    """The README's first command: the prompt's colour comes out (2 of 3 seeds at least), and another prompt's
    colour replaces it."""
    colours = []
    for seed in range(3):
        video = _run_workflow("demo_t2v.json", tmp_path / str(seed), [f"seed={seed}"])
        assert video.shape == (17, 64, 64, 3)
        colours.append(detector.measure(video).colour)
    assert colours.count("red") >= 2, colours
    colours = [detector.measure(_run_workflow("demo_t2v.json", tmp_path / f"green{seed}", [
        "prompt=a green square moving down on a white background", f"seed={seed}"])).colour for seed in range(3)]
    assert colours.count("green") >= 2, colours


def test_demo_i2v_extend_loop_workflows(demo_models, tmp_path):
    video = _run_workflow("demo_i2v.json", tmp_path / "i2v")
    track = detector.measure(video)
    assert track.colour == "blue" and track.motion == "right"  # the example image, moving as the prompt says
    image = detector.position(evaluate.to_frames(evaluate.rendered(
        clips.Scene("blue", "square", "right", "gray", x=20.0, y=30.0, half=9.0), 1)), 0)
    start = detector.position(video, 0)
    assert abs(start[0] - image[0]) <= evaluate.POS_TOL and abs(start[1] - image[1]) <= evaluate.POS_TOL
    video = _run_workflow("demo_extend.json", tmp_path / "extend")
    assert video.shape[0] == 2 * clips.CHUNK
    after = detector.measure(video[clips.CHUNK:])
    assert not after.area.isnan().any(), "the object is in every frame of the extension"
    seam = [detector.position(video, clips.CHUNK + i) for i in (-1, 0)]
    assert max(abs(seam[0][0] - seam[1][0]), abs(seam[0][1] - seam[1][1])) <= 2 * evaluate.POS_TOL, seam
    video = _run_workflow("demo_loop.json", tmp_path / "loop")
    a, b = detector.position(video, 0), detector.position(video, video.shape[0] - 1)
    assert abs(a[0] - b[0]) <= evaluate.POS_TOL and abs(a[1] - b[1]) <= evaluate.POS_TOL, "the loop closes"
    assert detector.measure(video).colour == "yellow"
