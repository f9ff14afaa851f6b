"""v1.2/stdit3: STDiT3.forward on any case of the folder, its output within the case's tolerance.

The case json says which forward argument takes which tensor (`call.args`: "<tensor name> [shape] ...") and which
tensors the recording holds (`input_tensors`); an argument whose tensor was not recorded was passed as None.
"""
import torch
from safetensors.torch import load_file

from comfyui_opensora.models.opensora.stdit3 import load_stdit3
from golden import assert_close


def call_kwargs(case, tensors: dict) -> dict:
    """Forward keyword arguments from the case json; extra recorded ones (num_frames, ar) pass through as the
    original forward's **kwargs."""
    recorded = set(case.spec["input_tensors"])
    kwargs = {}
    for arg, description in case.spec["call"]["args"].items():
        name = description.split()[0]
        kwargs[arg] = tensors[name] if name in recorded else None
    missing = recorded - {d.split()[0] for d in case.spec["call"]["args"].values()}
    assert not missing, f"{case.name}: recorded inputs {sorted(missing)} are not forward arguments"
    return kwargs


def run(case):
    model = load_stdit3(load_file(case.weights_path)).eval()
    tensors = case.tensors
    outputs = list(case.spec["output_tensors"])
    assert len(outputs) == 1, f"{case.name}: forward returns one tensor, the case records {outputs}"
    with torch.no_grad():
        out = model(**call_kwargs(case, tensors))
    assert_close(f"{case.component}/{case.name}:{outputs[0]}", out, tensors[outputs[0]], **case.tolerance)


RUNNERS = {"v1.2/stdit3": run}
