"""Validation verdicts against the real ComfyUI server's recorded answers (0.3.64 and 0.8.0).

Data-driven: every validation/<name>.prompt.json (and <name>.body.json) in the golden folder runs against both
recorded servers, so new case files need no code. The server walks its output nodes in Python set order (random
per process), which decides the order of errors and, when several outputs fail, which outputs a node's
dependent_outputs lists; a verdict matches when it equals the recording for some order of the output nodes.
"""
import glob
import itertools
import json
import os

import pytest

from comfyui_opensora.harness import pack as pack_mod
from comfyui_opensora.harness.validate import format_report, validate_prompt, validate_request_body
from conftest import golden_root

VERSIONS = {"0.3.64": ("response.json", "history.json"), "0.8.0": ("response.0.8.0.json", "history.0.8.0.json")}
CASES = sorted({os.path.basename(p).split(".")[0]
                for pattern in ("*.prompt.json", "*.body.json")
                for p in glob.glob(os.path.join(golden_root(), "comfy_frontend", "validation", pattern))})
_object_info = {}


def object_info(comfy_frontend_dir, version):
    if version not in _object_info:
        with open(os.path.join(comfy_frontend_dir, f"object_info_{version}.json"), encoding="utf-8") as f:
            _object_info[version] = json.load(f)
    return _object_info[version]


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def normalized(response):
    """The body as a comparable value: no run-specific prompt_id/number, no tracebacks (checkout paths), errors
    as sorted lists (set order on the server), details as sorted lines."""
    def error(e):
        return json.dumps({**e, "extra_info": {k: v for k, v in e["extra_info"].items() if k != "traceback"}},
                          sort_keys=True)

    body = {"node_errors": {nid: {"class_type": v["class_type"], "dependent_outputs": sorted(v["dependent_outputs"]),
                                  "errors": sorted(error(e) for e in v["errors"])}
                            for nid, v in response["node_errors"].items()}}
    if "error" in response:
        body["error"] = {**response["error"], "details": sorted(response["error"]["details"].split("\n"))}
    return body


def output_orders(prompt, node_defs):
    """The prompt with its output nodes first, in every order (the validator walks outputs in prompt order)."""
    if not isinstance(prompt, dict):
        yield prompt
        return
    outputs = [k for k, n in prompt.items() if isinstance(n, dict)
               and node_defs.get(n.get("class_type"), {}).get("output_node") is True]
    for order in itertools.islice(itertools.permutations(outputs), 720):
        yield {**{k: prompt[k] for k in order}, **{k: v for k, v in prompt.items() if k not in order}}


def verdict_as_recorded(request, node_defs, recorded):
    """Our verdict for the output order that reproduces the recording (or for prompt order when none does)."""
    if "prompt" not in request:
        return validate_request_body(request, node_defs)
    verdicts = [validate_prompt(p, node_defs) for p in output_orders(request["prompt"], node_defs)]
    return next((v for v in verdicts if normalized(v["response"]) == normalized(recorded)), verdicts[0])


@pytest.mark.parametrize("version", sorted(VERSIONS))
@pytest.mark.parametrize("name", CASES)
def test_server_verdict(name, version, comfy_frontend_dir):
    vdir = os.path.join(comfy_frontend_dir, "validation")
    response_file, history_file = VERSIONS[version]
    recorded = load(os.path.join(vdir, f"{name}.{response_file}"))
    body = os.path.join(vdir, f"{name}.body.json")
    request = load(body) if os.path.exists(body) else {"prompt": load(os.path.join(vdir, f"{name}.prompt.json")),
                                                       "client_id": "golden-comfy"}
    node_defs = object_info(comfy_frontend_dir, version)
    result = verdict_as_recorded(request, node_defs, recorded["response"])

    assert result["http_status"] == recorded["http_status"]
    assert normalized(result["response"]) == normalized(recorded["response"])
    assert set(result["response"]) == set(recorded["response"]) - {"prompt_id", "number"}
    history = os.path.join(vdir, f"{name}.{history_file}")
    if os.path.exists(history):
        stored = load(history)
        assert result["validated_prompt"] == stored["validated_prompt"]
        assert sorted(result["outputs_to_execute"]) == sorted(stored["outputs_to_execute"])
    report = format_report(result)
    for nid, entry in recorded["response"]["node_errors"].items():
        for err in entry["errors"]:  # every error has its line, naming the node and the input
            # (an exception's input_name is the downstream node's input: the report names the node's own link)
            named = "input_name" in err["extra_info"] and not err["type"].startswith("exception")
            name_part = f"'{err['extra_info']['input_name']}'" if named else ""
            assert any(line.startswith(f"  node {nid} ({entry['class_type']}):") and name_part in line
                       for line in report.splitlines()), report
    if recorded["http_status"] == 400:
        assert report.startswith("error:")


# --------------------------------------------------------------------------------------------
# Reports: a fix for each recorded error
# --------------------------------------------------------------------------------------------
def report_for(comfy_frontend_dir, name, version="0.8.0"):
    prompt = load(os.path.join(comfy_frontend_dir, "validation", f"{name}.prompt.json"))
    return format_report(validate_prompt(prompt, object_info(comfy_frontend_dir, version)))


@pytest.mark.parametrize("name, sentence", [
    ("int_below_min", "node 1 (EmptyImage): 'width' = 0 is below the minimum 1: set it to at least 1"),
    ("float_above_max", "is above the maximum"),
    ("missing_required_link_input",
     "node 3 (PreviewImage): required input 'images' is not connected: link an IMAGE output to it"),
    ("missing_required_widget_input", "node 1 (EmptyImage): required input 'width' has no value: give it a whole "
                                      "number (default 512)"),
    ("combo_not_in_list", "node 4 (ImageScaleBy): 'upscale_method' = 'cubic' is not one of the choices. Choices: "
                          "nearest-exact, bilinear, area, bicubic, lanczos"),
    ("combo_model_file_missing", "'ckpt_name' = 'sd15.safetensors' is not available"),
    ("link_wrong_output_type", "node 3 (PreviewImage): 'images' is linked to output 0 of node 4, which gives LATENT, "
                               "but it takes IMAGE: link an IMAGE output instead"),
    ("link_to_nonexistent_node_inner", "node 2 (ImageInvert): input 'image' links to node '99', which is not in "
                                       "the prompt"),
    ("link_node_id_as_int", "node ids must be strings"),
    ("int_given_as_non_numeric_string", "cannot be read as INT: give it a whole number"),
    ("unknown_class_type", "install the node pack that provides this node"),
    ("no_output_node", "add an output node"),
])
def test_report_says_how_to_fix(comfy_frontend_dir, name, sentence):
    assert sentence in report_for(comfy_frontend_dir, name)


def test_report_names_a_missing_output_slot(comfy_frontend_dir):
    prompt = load(os.path.join(comfy_frontend_dir, "validation", "ok_baseline.prompt.json"))
    prompt["3"]["inputs"]["images"] = ["2", 5]
    result = validate_prompt(prompt, object_info(comfy_frontend_dir, "0.8.0"))
    assert result["response"]["node_errors"]["3"]["errors"][0]["details"] == "tuple index out of range"
    assert "node 3 (PreviewImage): input 'images' links to output 5 of node '2', which has 1 output(s)" in \
        format_report(result)


def test_report_lists_at_most_ten_choices(comfy_frontend_dir):
    prompt = load(os.path.join(comfy_frontend_dir, "validation", "ok_baseline.prompt.json"))
    prompt["9"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "nope"}}
    prompt["10"] = {"class_type": "PreviewAny", "inputs": {"source": ["9", 0]}}
    result = validate_prompt(prompt, object_info(comfy_frontend_dir, "0.8.0"))
    assert result["http_status"] == 200  # the other output still runs
    (line,) = [x for x in format_report(result).splitlines() if "sampler_name" in x]
    choices = object_info(comfy_frontend_dir, "0.8.0")["KSamplerSelect"]["input"]["required"]["sampler_name"][1]
    assert line.endswith(", ".join(choices["options"][:10]) + f", ... ({len(choices['options']) - 10} more)")


# --------------------------------------------------------------------------------------------
# Rules of the README (server rules observed) on prompts assembled from recorded cases
# --------------------------------------------------------------------------------------------
def shifted(prompt, offset):
    """The prompt with every node id, and every link, moved by `offset` (to put two cases side by side)."""
    def move(v):
        return [str(int(v[0]) + offset), v[1]] if isinstance(v, list) and len(v) == 2 else v

    return {str(int(k) + offset): {**n, "inputs": {name: move(v) for name, v in n["inputs"].items()}}
            for k, n in prompt.items()}


def recorded_case(comfy_frontend_dir, name, offset=0):
    vdir = os.path.join(comfy_frontend_dir, "validation")
    response = load(os.path.join(vdir, f"{name}.response.0.8.0.json"))["response"]
    errors = {str(int(k) + offset): {**v, "dependent_outputs": [str(int(o) + offset) for o in v["dependent_outputs"]]}
              for k, v in response["node_errors"].items()}
    return shifted(load(os.path.join(vdir, f"{name}.prompt.json")), offset), errors, response


def test_partial_success_runs_the_valid_output(comfy_frontend_dir):
    good, _, _ = recorded_case(comfy_frontend_dir, "ok_baseline")
    bad, bad_errors, _ = recorded_case(comfy_frontend_dir, "int_below_min", offset=10)
    result = validate_prompt({**good, **bad}, object_info(comfy_frontend_dir, "0.8.0"))
    assert result["http_status"] == 200
    assert result["outputs_to_execute"] == ["3"]
    assert normalized(result["response"]) == normalized({"node_errors": {"11": {**bad_errors["11"],
                                                                             "dependent_outputs": ["13"]}}})


def test_errors_in_two_outputs(comfy_frontend_dir):
    a, a_errors, a_response = recorded_case(comfy_frontend_dir, "int_below_min")
    b, b_errors, b_response = recorded_case(comfy_frontend_dir, "missing_required_link_input", offset=10)
    result = validate_prompt({**a, **b}, object_info(comfy_frontend_dir, "0.8.0"))
    assert result["http_status"] == 400
    got = normalized(result["response"])
    assert got["error"]["details"] == sorted(filter(None, [a_response["error"]["details"],
                                                           b_response["error"]["details"]]))
    want = normalized({"node_errors": {**a_errors, **b_errors}})["node_errors"]
    assert {k: v["errors"] for k, v in got["node_errors"].items()} == {k: v["errors"] for k, v in want.items()}
    for nid, entry in want.items():  # each output at least; the server adds earlier failures to later outputs
        assert set(entry["dependent_outputs"]) <= set(got["node_errors"][nid]["dependent_outputs"])


def test_dependency_cycle_reports_nothing_like_the_server(comfy_frontend_dir):
    prompt, _, _ = recorded_case(comfy_frontend_dir, "ok_baseline")
    prompt["2"]["inputs"]["image"] = ["4", 0]
    prompt["4"] = {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}}
    result = validate_prompt(prompt, object_info(comfy_frontend_dir, "0.8.0"))
    assert (result["http_status"], result["response"]["error"]["details"], result["response"]["node_errors"]) == \
        (400, "", {})  # README: dependency_cycle
    assert "nodes 2 -> 4 -> 2 form a dependency cycle" in format_report(result)


def test_partial_execution_targets(comfy_frontend_dir):
    good, _, _ = recorded_case(comfy_frontend_dir, "ok_baseline")
    bad, _, _ = recorded_case(comfy_frontend_dir, "int_below_min", offset=10)
    body = {"prompt": {**good, **bad}, "partial_execution_targets": ["13"]}
    result = validate_request_body(body, object_info(comfy_frontend_dir, "0.8.0"))
    assert result["http_status"] == 400 and list(result["response"]["node_errors"]) == ["11"]


def test_caller_prompt_is_not_modified(comfy_frontend_dir):
    prompt = load(os.path.join(comfy_frontend_dir, "validation", "int_given_as_string.prompt.json"))
    before = json.dumps(prompt)
    result = validate_prompt(prompt, object_info(comfy_frontend_dir, "0.8.0"))
    assert json.dumps(prompt) == before and result["validated_prompt"] != prompt


# --------------------------------------------------------------------------------------------
# VALIDATE_INPUTS of the pack's classes
# --------------------------------------------------------------------------------------------
class Frames:
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "count": ("INT", {"default": 1, "min": 1, "max": 4}),
                             "mode": (["a", "b"],)}}

    @classmethod
    def VALIDATE_INPUTS(cls, count, image):
        return True if count != 7 else "count 7 is unlucky. Fix: use another count"


class AnyImage(Frames):
    @classmethod
    def VALIDATE_INPUTS(cls, input_types):
        return True


def with_pack_classes(comfy_frontend_dir, *classes):
    defs = dict(object_info(comfy_frontend_dir, "0.8.0"))
    defs.update({c.__name__: pack_mod.node_info(c.__name__, c) for c in classes})
    return defs, {c.__name__: c for c in classes}


def test_validate_inputs_takes_over_range_checks(comfy_frontend_dir):
    defs, classes = with_pack_classes(comfy_frontend_dir, Frames)
    prompt, _, _ = recorded_case(comfy_frontend_dir, "ok_baseline")
    prompt["3"]["inputs"]["images"] = ["4", 0]
    prompt["4"] = {"class_type": "Frames", "inputs": {"image": ["2", 0], "count": 99, "mode": "a"}}
    assert validate_prompt(prompt, defs, classes)["http_status"] == 200  # count is the node's own business
    prompt["4"]["inputs"].update(count=7, mode="c")
    result = validate_prompt(prompt, defs, classes)
    errors = result["response"]["node_errors"]["4"]["errors"]
    assert [e["type"] for e in errors] == ["value_not_in_list", "custom_validation_failed",
                                          "custom_validation_failed"]
    # one error per input VALIDATE_INPUTS takes; a linked input reaches it as None
    assert [e["details"] for e in errors[1:]] == ["image - count 7 is unlucky. Fix: use another count",
                                                 "count - count 7 is unlucky. Fix: use another count"]
    assert "node 4 (Frames): count 7 is unlucky. Fix: use another count" in format_report(result)


def test_validate_inputs_with_input_types_skips_link_types(comfy_frontend_dir):
    defs, classes = with_pack_classes(comfy_frontend_dir, AnyImage)
    prompt, _, _ = recorded_case(comfy_frontend_dir, "link_wrong_output_type")
    prompt["3"]["inputs"]["images"] = ["5", 0]
    prompt["5"] = {"class_type": "AnyImage", "inputs": {"image": ["4", 0], "count": 1, "mode": "a"}}
    assert validate_prompt(prompt, defs, classes)["http_status"] == 200  # LATENT into IMAGE allowed
    assert validate_prompt(prompt, defs)["response"]["node_errors"]["5"]["errors"][0]["type"] == \
        "return_type_mismatch"  # without the class, the server's type check applies


def test_pack_nodes_validate_with_their_own_definitions():
    pack = pack_mod.load_pack()
    node_defs = pack_mod.node_definitions(pack)
    result = validate_prompt({"1": {"class_type": "OpenSoraSaveVideo", "inputs": {}}}, node_defs, pack.classes)
    assert result["http_status"] == 400
    assert "node 1 (OpenSoraSaveVideo): required input 'images' is not connected: link an IMAGE output to it" in \
        format_report(result)
