"""UI -> API conversion against conversions recorded in a real browser (ComfyUI 0.3.64 / 0.8.0 frontends).

Data-driven: every cases/<name>.ui.json runs for every version that has an api or error file, and so do the
.input.json and .ui.resaved.0.8.0.json variants; new case files need no code change.
"""
import glob
import json
import os
import random
from datetime import datetime

import pytest

from comfyui_opensora.harness.convert import ConversionError, frontend_widgets, load_prompt, ui_to_api
from conftest import golden_root

FRONTENDS = {"0.3.64": "1.27.10", "0.8.0": "1.35.9"}
CDIR = os.path.join(golden_root(), "comfy_frontend", "cases")
RECORDED_ON = datetime(2026, 11, 22, 12, 0, 0)  # README: recorded on 2026-11-22 (for %date:...%)
NAMES = sorted(os.path.basename(p)[: -len(".ui.json")] for p in glob.glob(os.path.join(CDIR, "*.ui.json")))
_cache = {}


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def defs(version):
    if version not in _cache:
        _cache[version] = load(os.path.join(golden_root(), "comfy_frontend", f"object_info_{version}.json"))
    return _cache[version]


def variants(name, version):
    path = os.path.join(CDIR, f"{name}.variants.{version}.json")
    return [v["output"] for v in load(path)["variants"]] if os.path.exists(path) else None


def sources(name):
    out = [("ui", os.path.join(CDIR, f"{name}.ui.json"))]
    for kind, suffix in (("input", "input.json"), ("resaved", "ui.resaved.0.8.0.json")):
        p = os.path.join(CDIR, f"{name}.{suffix}")
        if os.path.exists(p):
            out.append((kind, p))
    return out


PARAMS = [(n, v, kind, p) for n in NAMES for v in FRONTENDS for kind, p in sources(n)
          if os.path.exists(os.path.join(CDIR, f"{n}.api.{v}.json")) or os.path.exists(os.path.join(CDIR, f"{n}.error.{v}.json"))]


@pytest.mark.parametrize("name,version,kind,path", PARAMS, ids=[f"{n}-{v}-{k}" for n, v, k, _ in PARAMS])
def test_conversion(name, version, kind, path):
    workflow = load(path)
    error_path = os.path.join(CDIR, f"{name}.error.{version}.json")
    if os.path.exists(error_path):
        with pytest.raises(ConversionError):
            ui_to_api(workflow, defs(version), FRONTENDS[version], now=RECORDED_ON)
        return
    expected = load(os.path.join(CDIR, f"{name}.api.{version}.json"))
    got = ui_to_api(workflow, defs(version), FRONTENDS[version], rng=random.Random(0), now=RECORDED_ON)
    options = variants(name, version)
    if options is None:
        assert got == expected
    else:  # random choices: the conversion must be one of the recorded outputs
        assert got in options, json.dumps(got, indent=1)


@pytest.mark.parametrize("version", sorted(FRONTENDS))
def test_dynamic_prompt_distribution(version):
    """Every recorded variant appears over many seeded conversions (uniform choice at each level)."""
    for name in NAMES:
        options = variants(name, version)
        if options is None:
            continue
        workflow = load(os.path.join(CDIR, f"{name}.ui.json"))
        seen = []
        for seed in range(200):
            got = ui_to_api(workflow, defs(version), FRONTENDS[version], rng=random.Random(seed), now=RECORDED_ON)
            assert got in options
            if got not in seen:
                seen.append(got)
        assert len(seen) == len(options)


@pytest.mark.parametrize("version", sorted(FRONTENDS))
def test_widget_order_matches_frontend(version):
    """Widget lists derived from object_info alone equal what the real frontend builds, for every core type."""
    info = defs(version)
    nodes = load(os.path.join(golden_root(), "comfy_frontend", f"frontend_nodes_{version}.json"))["nodes"]
    bad = []
    for name, fe in nodes.items():
        if name not in info:
            continue
        want = [(w["name"], w["serialize_to_prompt"]) for w in fe["widgets"]]
        got = [(w["name"], w["serialize"]) for w in frontend_widgets(info[name], FRONTENDS[version])]
        if want != got:
            bad.append((name, want, got))
    assert not bad, bad[:5]


def test_load_prompt_forms():
    info = defs("0.8.0")
    api = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8}}}
    assert load_prompt(api, info) == (api, None)
    wrapped = {"prompt": api, "extra_data": {"extra_pnginfo": {"workflow": {"nodes": []}}}}
    assert load_prompt(wrapped, info) == (api, {"nodes": []})
    with pytest.raises(ConversionError, match="not a ComfyUI workflow"):
        load_prompt({"foo": 1}, info)
    ui = {"nodes": [{"id": 3, "type": "NoSuchNode", "mode": 0, "widgets_values": []}], "links": [], "version": 0.4}
    with pytest.raises(ConversionError, match="NoSuchNode.*--object-info"):
        load_prompt(ui, info)


QUEUES = sorted(glob.glob(os.path.join(CDIR, "*.queue.*.json")))


@pytest.mark.parametrize("path", QUEUES, ids=os.path.basename)
def test_queue_controls(path):
    """Queueing twice in 'after' and 'before' modes: sent prompts and widget values as recorded; randomised
    values are checked for range only (they are random in the recording too)."""
    from comfyui_opensora.harness.convert import apply_widget_controls

    name, _, version = os.path.basename(path)[: -len(".json")].partition(".queue.")
    info = defs(version)
    steps = load(path)["steps"]
    randomized = set()
    workflow = None
    mode, queued = "after", 0
    for step in steps:
        if step["step"].startswith("fresh load"):
            workflow = load(os.path.join(CDIR, f"{name}.ui.json"))
            mode, queued = ("before" if "before" in step["step"] else "after"), 0
            randomized = {(w["id"], k) for w in step["widgets"] for k, v in w["widgets"].items() if v == "randomize"}
            continue
        if mode == "before" and queued > 0:
            apply_widget_controls(workflow, info, FRONTENDS[version], rng=random.Random(queued))
        sent = ui_to_api(workflow, info, FRONTENDS[version], rng=random.Random(0), now=RECORDED_ON)
        if mode == "after":
            apply_widget_controls(workflow, info, FRONTENDS[version], rng=random.Random(queued))
        queued += 1
        random_ids = {str(i) for i, _ in randomized}
        for nid, node in step["sent_prompt"].items():
            if nid not in random_ids or queued == 1:
                assert sent[nid] == node, nid
        for w in step["widgets_after"]:
            node = next(n for n in workflow["nodes"] if n["id"] == w["id"])
            names = [x["name"] for x in frontend_widgets(info[node["type"]], FRONTENDS[version])] \
                if node["type"] in info else list(w["widgets"])
            got = dict(zip(names, node["widgets_values"]))
            for k, v in w["widgets"].items():
                if (w["id"], "control_after_generate") in randomized and k in ("seed", "noise_seed", "value") \
                        and got.get("control_after_generate") == "randomize":
                    assert 0 <= got[k] <= 1125899906842624
                else:
                    assert got[k] == v, (w["id"], k)
