"""Validation verdicts against the real ComfyUI server's recorded answers (0.3.64 and 0.8.0).

Data-driven: every validation/<name>.prompt.json (and <name>.body.json) runs, so new cases need no code.
"""
import glob
import json
import os

import pytest

from comfyui_opensora.harness import pack as pack_mod
from comfyui_opensora.harness.validate import format_report, validate_prompt, validate_request_body
from conftest import golden_root

VERSIONS = {"0.3.64": "response.json", "0.8.0": "response.0.8.0.json"}
HISTORY = {"0.3.64": "history.json", "0.8.0": "history.0.8.0.json"}
VDIR = os.path.join(golden_root(), "comfy_frontend", "validation")
NAMES = sorted({os.path.basename(p).split(".")[0] for p in glob.glob(os.path.join(VDIR, "*.prompt.json"))} |
               {os.path.basename(p).split(".")[0] for p in glob.glob(os.path.join(VDIR, "*.body.json"))})
_defs = {}


def defs(version):
    if version not in _defs:
        with open(os.path.join(golden_root(), "comfy_frontend", f"object_info_{version}.json")) as f:
            _defs[version] = json.load(f)
    return _defs[version]


def _norm_error(e):
    extra = {k: v for k, v in e.get("extra_info", {}).items() if k != "traceback"}
    return json.dumps({**e, "extra_info": extra}, sort_keys=True)


def _norm_node_errors(node_errors):
    return {nid: {"class_type": v["class_type"], "dependent_outputs": sorted(v["dependent_outputs"]),
                  "errors": sorted(_norm_error(e) for e in v["errors"])} for nid, v in node_errors.items()}


@pytest.mark.parametrize("version", sorted(VERSIONS))
@pytest.mark.parametrize("name", NAMES)
def test_server_verdict(name, version):
    expected_path = os.path.join(VDIR, f"{name}.{VERSIONS[version]}")
    if not os.path.exists(expected_path):
        pytest.fail(f"no recorded {version} answer for {name}")
    expected = json.load(open(expected_path))
    body_path = os.path.join(VDIR, f"{name}.body.json")
    if os.path.exists(body_path):
        result = validate_request_body(json.load(open(body_path)), defs(version))
    else:
        result = validate_prompt(json.load(open(os.path.join(VDIR, f"{name}.prompt.json"))), defs(version))
    assert result["http_status"] == expected["http_status"]
    got, want = result["response"], expected["response"]
    if "error" in want:
        ge, we = got["error"], want["error"]
        assert (ge["type"], ge["message"]) == (we["type"], we["message"])
        # details join several errors in an order the server does not fix: compare the lines as a set.
        assert sorted(ge["details"].split("\n")) == sorted(we["details"].split("\n"))
    assert _norm_node_errors(got["node_errors"]) == _norm_node_errors(want["node_errors"])
    history_path = os.path.join(VDIR, f"{name}.{HISTORY[version]}")
    if os.path.exists(history_path):
        history = json.load(open(history_path))
        assert result["validated_prompt"] == history["validated_prompt"]
        assert sorted(result["outputs_to_execute"]) == sorted(history["outputs_to_execute"])
    if result["http_status"] != 200:
        assert format_report(result).strip()


def test_report_names_node_input_and_fix():
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 64, "batch_size": 1, "color": 0}},
              "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x"}},
              "3": {"class_type": "ImageScaleBy", "inputs": {"image": ["1", 0], "upscale_method": "cubic",
                                                              "scale_by": 1.0}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
    result = validate_prompt(prompt, defs("0.8.0"))
    report = format_report(result)
    assert result["http_status"] == 400
    assert "node 1 (EmptyImage): 'width' = 0 is below the minimum 1: set it to at least 1" in report
    assert "node 2 (SaveImage): required input 'images' is missing" in report
    assert "node 3 (ImageScaleBy): 'upscale_method' = 'cubic' is not one of the choices. Choices: nearest-exact" \
        in report


def test_pack_nodes_validate_with_their_own_definitions():
    """The pack's nodes are known without --object-info; their combos and ranges are checked like core ones."""
    pack = pack_mod.load_pack()
    node_defs = pack_mod.node_definitions(pack)
    save = next(n for n in pack.classes if n == "OpenSoraSaveVideo")
    result = validate_prompt({"1": {"class_type": save, "inputs": {}}}, node_defs, pack.classes)
    assert result["http_status"] == 400
    assert any(e["type"] == "required_input_missing" for e in result["response"]["node_errors"]["1"]["errors"])
