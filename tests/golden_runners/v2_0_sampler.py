"""v2.0/sampler: the schedule cases (get_schedule over listed resolutions) and full sampling cases
(api_fn with T5 / CLIP / references replaced by recorded tensors and an identity decode).

Sampling cases run the tiny MMDiT of ../mmdit through rflow_v2: condition() -> sample() -> paste_references(),
and check the recorded masks, masked_ref, the timesteps fed to the model, the first step's cond and img_ids,
and the final latent.
"""
import os

import torch
from safetensors.torch import load_file

from comfyui_opensora.models import rflow_v2
from comfyui_opensora.models.opensora.mmdit import MMDiT
from golden import Case, assert_close


def run_schedule(case):
    for entry in case.spec["cases"]:
        steps = rflow_v2.get_schedule(entry["num_steps"], entry["image_seq_len"], entry["latent_frames"],
                                      shift=entry["shift"], alpha=entry.get("shift_alpha"))
        assert_close(f"{case.name}:{entry.get('resolution', entry.get('note'))}", torch.tensor(steps),
                     torch.tensor(entry["timesteps"]), atol=1e-6, rtol=1e-6)


def load_model(case):
    model_dir = os.path.normpath(os.path.join(case.component_dir, os.path.dirname(case.spec["call"]["model"].split()[0])))
    tiny = Case(model_dir, "", "", {}).config["tiny"]
    from comfyui_opensora.models.opensora.mmdit import load_mmdit
    return load_mmdit(load_file(os.path.join(model_dir, "weights.safetensors")), num_heads=tiny["num_heads"],
                      axes_dim=tuple(tiny["axes_dim"]), theta=tiny["theta"], rope_half_split=tiny["use_liger_rope"])


def references(t, cond_type, batch):
    """Per batch item the recorded reference latents: ref_i, or ref_i_0, ref_i_1 ... in order."""
    if cond_type == "t2v":
        return None
    refs = []
    for i in range(batch):
        if f"ref_{i}" in t:
            refs.append([t[f"ref_{i}"]])
        else:
            refs.append([t[k] for k in sorted(k for k in t if k.startswith(f"ref_{i}_"))] or None)
    return refs


def run_sampling(case):
    t, sc = case.tensors, case.spec["scalars"]
    opt, cond_type, batch = sc["sampling_option"], sc["cond_type"], sc["batch"]
    assert opt["method"] == "i2v", f"{case.name}: only the I2V denoiser is reproduced here"
    model = load_model(case)
    z = t["z_init"]
    T, H, W = z.shape[2:]
    refs = references(t, cond_type, batch)
    masks, masked_ref = rflow_v2.condition(z, cond_type, refs, causal=opt["is_causal_vae"])
    assert_close(f"{case.name}:masks", masks, t["masks"], atol=0, rtol=0)
    assert_close(f"{case.name}:masked_ref", masked_ref, t["masked_ref"], atol=0, rtol=0)
    p = sc["patch_size"]
    timesteps = rflow_v2.get_schedule(opt["num_steps"], H * W // p ** 2, T, shift=opt["shift"],
                                      alpha=opt["flow_shift"])
    assert_close(f"{case.name}:model_timesteps", torch.tensor(timesteps[:-1]), t["model_timesteps"], 1e-6, 1e-6)

    seen = {}
    forward = model.forward

    def record(img, img_ids, txt, txt_ids, timesteps, y_vec, cond=None, guidance=None, rope=None):
        seen.setdefault("cond", cond)
        seen.setdefault("img_ids", img_ids)
        return forward(img, img_ids, txt, txt_ids, timesteps, y_vec, cond=cond, guidance=guidance, rope=rope)

    model.forward = record
    txt = torch.cat([t[f"txt_pos_{i}"] for i in range(batch)])
    vec = torch.cat([t[f"vec_pos_{i}"] for i in range(batch)])
    with torch.inference_mode():
        x = rflow_v2.sample(model, z, txt, vec, t["txt_neg"], t["vec_neg"], timesteps, opt["guidance"],
                            opt["guidance_img"], masks, masked_ref, opt["text_osci"], opt["image_osci"],
                            opt["scale_temporal_osci"] and "i2v" in cond_type)
        if "i2v" in cond_type:
            x = rflow_v2.paste(x, masks, masked_ref)
    assert_close(f"{case.name}:step0_cond", seen["cond"], t["step0_cond"], **case.tolerance)
    assert_close(f"{case.name}:step0_img_ids", seen["img_ids"], t["step0_img_ids"], atol=0, rtol=0)
    assert_close(f"{case.name}:x_out", x, t["x_out"], **case.tolerance)


def run(case):
    if "get_schedule" in str(case.spec.get("call", "")) and "cases" in case.spec:
        run_schedule(case)
    else:
        run_sampling(case)


RUNNERS = {"v2.0/sampler": run}
