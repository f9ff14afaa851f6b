"""UI workflow -> API prompt, against what ComfyUI's frontend did in a real browser (1.27.10 / 1.35.9).

Everything is driven by the files in golden/comfy_frontend/cases: every <name>.ui.json (and its .input.json /
.ui.resaved.0.8.0.json variants) runs for every version that has an api or error file, and every
<name>.queue.<ver>.json replays its queue steps; a new case file needs no code change here.
"""
import glob
import json
import os
import random
from datetime import datetime

import pytest

from comfyui_opensora.harness.convert import (ConversionError, apply_widget_controls, default_title,
                                              frontend_widgets, input_slots, load_prompt, node_widgets,
                                              set_widget_value, ui_to_api)
from conftest import golden_root

FRONTENDS = {"0.3.64": "1.27.10", "0.8.0": "1.35.9"}   # ComfyUI version -> its frontend package
RECORDED_ON = datetime(2026, 11, 22)                     # README: recorded on 2026-11-22 (%date:...%)
JS_SAFE_MAX = 2 ** 50
FRONTEND_DIR = os.path.join(golden_root(), "comfy_frontend")
CASES = os.path.join(FRONTEND_DIR, "cases")
NAMES = sorted(os.path.basename(p)[: -len(".ui.json")] for p in glob.glob(os.path.join(CASES, "*.ui.json")))
_cache: dict = {}


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def object_info(version):
    if version not in _cache:
        _cache[version] = load(os.path.join(FRONTEND_DIR, f"object_info_{version}.json"))
    return _cache[version]


def case_file(name, suffix):
    path = os.path.join(CASES, f"{name}.{suffix}")
    return path if os.path.exists(path) else None


def sources(name):
    """The recorded UI JSON, plus the hand-edited input and the other version's re-save when present."""
    out = [("ui", case_file(name, "ui.json"))]
    for kind, suffix in (("input", "input.json"), ("resaved", "ui.resaved.0.8.0.json")):
        if case_file(name, suffix):
            out.append((kind, case_file(name, suffix)))
    return out


def variants(name, version):
    path = case_file(name, f"variants.{version}.json")
    return [v["output"] for v in load(path)["variants"]] if path else None


PARAMS = [(name, version, kind, path) for name in NAMES for version in FRONTENDS for kind, path in sources(name)
          if case_file(name, f"api.{version}.json") or case_file(name, f"error.{version}.json")]


def convert(workflow, version, seed=0):
    return ui_to_api(workflow, object_info(version), FRONTENDS[version], rng=random.Random(seed), now=RECORDED_ON)


@pytest.mark.parametrize("name,version,kind,path", PARAMS, ids=[f"{n}-{v}-{k}" for n, v, k, _ in PARAMS])
def test_conversion(name, version, kind, path):
    """graphToPrompt's output as recorded (compared as dicts), or its error where it threw."""
    workflow = load(path)
    error = case_file(name, f"error.{version}.json")
    if error:
        with pytest.raises(ConversionError) as e:
            convert(workflow, version)
        assert str(e.value) == load(error)["error"]
        return
    expected = load(case_file(name, f"api.{version}.json"))
    got = convert(workflow, version)
    assert workflow == load(path), "the conversion changed its input"
    recorded = variants(name, version)
    if recorded is None:
        assert got == expected
        return
    # Random choices (R12): a node that is the same in every recorded conversion must match exactly, the
    # others must be one of the recorded outputs.
    assert set(got) == set(expected)
    for node_id in got:
        seen = [v[node_id] for v in recorded]
        if all(s == seen[0] for s in seen):
            assert got[node_id] == expected[node_id], node_id
        else:
            assert got[node_id] in seen, node_id


SCHEMA_1 = [(n, v) for n, v, kind, _ in PARAMS if kind == "ui" and case_file(n, f"api.{v}.json")
            and not variants(n, v)]


@pytest.mark.parametrize("name,version", SCHEMA_1, ids=[f"{n}-{v}" for n, v in SCHEMA_1])
def test_schema_1_links(name, version):
    """The same graph in the schema 1.0 form (links as objects; LGraph.configure reads both) converts to
    the recorded prompt."""
    workflow = load(case_file(name, "ui.json"))
    keys = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    workflow["version"] = 1
    workflow["links"] = [dict(zip(keys, link)) for link in workflow.get("links") or []]
    assert convert(workflow, version) == load(case_file(name, f"api.{version}.json"))


@pytest.mark.parametrize("version", sorted(FRONTENDS))
def test_dynamic_prompt_variants(version):
    """Over 200 seeded conversions the choices give exactly the recorded variants (uniform at every level)."""
    for name in NAMES:
        recorded = variants(name, version)
        if recorded is None:
            continue
        workflow = load(case_file(name, "ui.json"))
        seen = []
        for seed in range(200):
            got = convert(workflow, version, seed)
            assert got in recorded
            if got not in seen:
                seen.append(got)
        assert len(seen) == len(recorded), name


@pytest.mark.parametrize("version", sorted(FRONTENDS))
def test_node_types_match_frontend(version):
    """For every node type, from its object_info entry alone: the widget list (names, widget types, whether
    each goes into the prompt and takes a widgets_values slot), the input slots and the default title."""
    info = object_info(version)
    recorded = load(os.path.join(FRONTEND_DIR, f"frontend_nodes_{version}.json"))["nodes"]
    fv = FRONTENDS[version]
    checked, bad = 0, []
    for name, node in recorded.items():
        if node["virtual"]:
            assert default_title(name, None, fv) == node["title"]
            continue
        want = [(w["name"], w["type"], w["serialize_to_prompt"], w.get("serialize_to_workflow", True))
                for w in node["widgets"]]
        got = [(w["name"], w["type"], w["serialize"], w["workflow"]) for w in frontend_widgets(info[name], fv)]
        want_slots = [(s["name"], s["type"], s.get("widget")) for s in node["inputs"]]
        got_slots = [(s["name"], s["type"], s["widget"]) for s in input_slots(info[name], fv)]
        if (want, want_slots, node["title"]) != (got, got_slots, default_title(name, info[name], fv)):
            bad.append(name)
        checked += 1
    assert checked == len(info) and not bad, bad[:10]


def test_load_prompt_forms():
    info = object_info("0.3.64")
    ui = load(case_file("basic_txt2img", "ui.json"))
    api = load(case_file("basic_txt2img", "api.0.3.64.json"))
    assert load_prompt(api, info) == (api, None)
    posted = {"prompt": api, "client_id": "x", "extra_data": {"extra_pnginfo": {"workflow": ui}}}
    assert load_prompt(posted, info) == (api, ui)
    assert load_prompt({"prompt": api}, info) == (api, None)
    assert load_prompt(ui, info, frontend_version="1.27.10") == (api, ui)
    with pytest.raises(ConversionError, match="not a ComfyUI workflow"):
        load_prompt({"foo": 1}, info)


def test_unknown_node_type_names_node_and_fix():
    ui = load(case_file("basic_txt2img", "ui.json"))
    ui["nodes"][2]["type"] = "NoSuchNode"
    node_id = ui["nodes"][2]["id"]
    with pytest.raises(ConversionError, match=rf"node {node_id} has type 'NoSuchNode'.*--object-info"):
        ui_to_api(ui, object_info("0.3.64"))


# --------------------------------------------------------------------------------------------------------
# Queueing (R16): replay the recorded app.queuePrompt steps
# --------------------------------------------------------------------------------------------------------
QUEUES = sorted(glob.glob(os.path.join(CASES, "*.queue.*.json")))


def widget_dicts(workflow, version):
    """{node id: {widget name: value}} as the recorder read node.widgets (a repeated name keeps the last;
    nodes without widgets are not listed)."""
    return {nid: {w["name"]: v for w, v in ws} for nid, ws in
            node_widgets(workflow, object_info(version), FRONTENDS[version]).items() if ws}


def randomized(workflow, version):
    """(node id, widget name) of every value a 'randomize' control drives: the control's own target, and
    for a PrimitiveNode also the widgets it feeds."""
    out = set()
    loaded = node_widgets(workflow, object_info(version), FRONTENDS[version])
    links = {link[0]: link for link in workflow.get("links") or []}
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for nid, ws in loaded.items():
        for w, v in ws:
            if w["role"] != "control" or v != "randomize":
                continue
            out.add((nid, ws[w["target"]][0]["name"]))
            if nodes[nid]["type"] == "PrimitiveNode":
                for lid in nodes[nid]["outputs"][0].get("links") or []:
                    target = nodes[links[lid][3]]
                    slot = next(i for i in target["inputs"] if i.get("link") == lid)
                    out.add((target["id"], slot["widget"]["name"]))
    return out


def check_random_range(workflow, version, drawn):
    """A randomized number lies in [min, min(max, 2**50)] on its step grid."""
    loaded = node_widgets(workflow, object_info(version), FRONTENDS[version])
    for nid, name in drawn:
        w, v = next((w, v) for w, v in loaded[nid] if w["name"] == name)
        lo, hi = max(-JS_SAFE_MAX, w["options"]["min"]), min(JS_SAFE_MAX, w["options"]["max"])
        assert lo <= v <= hi and (v - lo) % w["options"]["step2"] == 0, (nid, name, v)


@pytest.mark.parametrize("path", QUEUES, ids=os.path.basename)
def test_queue_controls(path):
    """Each recorded step: the widgets after a fresh load, the prompt sent and the widget values afterwards,
    in 'after' and 'before' modes. Randomized values are checked for range and step, then set to the recorded
    draw so that the following steps compare exactly."""
    name, _, version = os.path.basename(path)[: -len(".json")].partition(".queue.")
    info, fv = object_info(version), FRONTENDS[version]
    workflow, mode, queued, drawn = None, "after", 0, set()
    for step in load(path)["steps"]:
        if step["step"].startswith("fresh load"):
            workflow = load(case_file(name, "ui.json"))
            mode, queued = ("before" if "=before" in step["step"] else "after"), 0
            drawn = randomized(workflow, version)
            assert widget_dicts(workflow, version) == {w["id"]: w["widgets"] for w in step["widgets"]}
            continue
        recorded_after = {w["id"]: w["widgets"] for w in step["widgets_after"]}

        def controls(queue_mode):
            apply_widget_controls(workflow, info, fv, mode=queue_mode, rng=random.Random(queued),
                                  first_queue=queued == 0)
            if queue_mode == "after" or queued > 0:
                check_random_range(workflow, version, drawn)
            for nid, widget in drawn:
                set_widget_value(workflow, info, fv, nid, widget, recorded_after[nid][widget])

        if mode == "before":
            controls("before")
        assert convert(workflow, version) == step["sent_prompt"]
        if mode == "after":
            controls("after")
        assert widget_dicts(workflow, version) == recorded_after
        queued += 1
