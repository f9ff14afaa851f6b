"""v2.0/mmdit and v2.0/mmdit_flux_t2i: MMDiTModel.forward on the case's packed inputs.

The model is built from the folder's config.json `tiny` entry (its head count and RoPE pairing are not stored
in the weights) and loaded from weights.safetensors in the released key layout (split q/k/v for the video
model, FLUX.1's fused qkv / linear1 for the t2i one).
"""
import torch
from safetensors.torch import load_file

from comfyui_opensora.models.opensora.mmdit import load_mmdit
from golden import assert_close


def load(case):
    tiny = case.config["tiny"]
    return load_mmdit(load_file(case.weights_path), num_heads=tiny["num_heads"], axes_dim=tuple(tiny["axes_dim"]),
                      theta=tiny["theta"], rope_half_split=tiny["use_liger_rope"])


def run(case):
    model, t, spec = load(case), case.tensors, case.spec
    assert "MMDiTModel.forward" in spec["call"]["method"], f"{case.name}: no runner for {spec['call']['method']}"
    inputs = {name: t[name] for name in spec["input_tensors"] if name in t}
    with torch.inference_mode():
        out = model(inputs["img"], inputs["img_ids"], inputs["txt"], inputs["txt_ids"], inputs["timesteps"],
                    inputs["y_vec"], cond=inputs.get("cond") if model.cond_in is not None else None,
                    guidance=inputs.get("guidance") if model.guidance_in is not None else None)
    for name in spec["output_tensors"]:
        assert_close(f"{case.name}:{name}", out, t[name], **case.tolerance)


RUNNERS = {"v2.0/mmdit": run, "v2.0/mmdit_flux_t2i": run}
