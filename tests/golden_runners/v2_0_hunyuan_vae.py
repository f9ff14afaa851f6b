"""v2.0/hunyuan_vae: AutoencoderKLCausal3D encode (mode and recorded posterior draw) and decode.

Generic over the folder's cases: the model is built from the weights and every constructor argument of
config.json's `tiny` that HunyuanVAE takes; the tiling / slicing flags of `call.flags` (or `scalars.flags`) are
set as attributes before the call, as the original's cases did; the call (encode / decode) comes from
`call.method`, which also says which output each `sample_posterior` value produced
("encode(x, sample_posterior=False) -> z_mode ; ..."); inputs come from `input_tensors` (noise_### are the
recorded randn draws, fed in order) and every tensor in `output_tensors` is checked.
"""
import re

import torch
from safetensors.torch import load_file

from comfyui_opensora.models.opensora.hunyuan_vae import CONSTRUCTOR_ARGS, load_hunyuan_vae
from golden import assert_close

from .v1_2_vae import Recorded


def load(case):
    tiny = case.config["tiny"]
    vae = load_hunyuan_vae(load_file(case.weights_path), **{k: v for k, v in tiny.items() if k in CONSTRUCTOR_ARGS})
    flags = case.spec["call"].get("flags") or case.spec.get("scalars", {}).get("flags", {})
    for name, value in flags.items():
        assert hasattr(vae, name), f"{case.name}: the model has no option {name}"
        setattr(vae, name, value)
    return vae


def posterior_outputs(method: str, outputs) -> dict:
    """{output name: sample_posterior} from the call text; an output it does not name is a sample when its
    name says so, else the mode."""
    said = {out: flag == "True" for flag, out in re.findall(r"sample_posterior=(True|False)\)\s*->\s*(\w+)", method)}
    return {name: said.get(name, "sample" in name) for name in outputs}


def run(case):
    vae, t, spec = load(case), case.tensors, case.spec
    inputs = {name: t[name] for name in spec["input_tensors"]}
    draws = [inputs[name] for name in sorted(inputs) if name.startswith("noise_")]
    method = spec["call"]["method"]
    with torch.inference_mode():
        if ".encode(" in method:
            for name, sample in posterior_outputs(method, spec["output_tensors"]).items():
                noise_fn = Recorded(draws) if sample else None
                actual = vae.encode(inputs["x"], sample_posterior=sample, noise_fn=noise_fn)
                if noise_fn is not None:
                    assert not noise_fn.draws, f"{case.name}: {len(noise_fn.draws)} recorded draws left unused"
                assert_close(f"{case.name}:{name}", actual, t[name], **case.tolerance)
        elif ".decode(" in method:
            for name in spec["output_tensors"]:
                assert_close(f"{case.name}:{name}", vae.decode(inputs["z"]), t[name], **case.tolerance)
        else:
            raise AssertionError(f"{case.name}: no runner for the call {method}")


RUNNERS = {"v2.0/hunyuan_vae": run}
