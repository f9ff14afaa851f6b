"""The demo model's data, its model-free detector and its training script (every stage, a few steps).

The trained weights are not shipped yet (the first full training run does not follow prompts: see
benchmarks/demo_eval.py), so the behaviour tests on them come with the weights.
"""
import itertools
import json

import torch
from safetensors.torch import load_file

from comfyui_opensora.demo import clips, detector, evaluate, train


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
