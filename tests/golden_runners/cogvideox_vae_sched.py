"""cogvideox/vae, cogvideox/ddim, cogvideox/dpm against diffusers 0.42.1 recordings.

Generic over the case files: a VAE case runs the encode or decode its call names; a scheduler case with `cases`
is a schedule table (timesteps, prev timesteps, alpha_bar, final alpha_bar); any other is a pipeline loop with
the tiny transformer (and VAE, for I2V) its scalars name, replaying the recorded noise draws in order.
"""
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from comfyui_opensora.models.cogvideox import schedulers
from comfyui_opensora.models.cogvideox.loading import build_transformer, build_vae
from comfyui_opensora.models.cogvideox.transformer import rope_for_video
from golden import assert_close


def _component(folder: str, build):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)["tiny"]
    return build(load_file(os.path.join(folder, "weights.safetensors")), cfg).eval(), cfg  # strict, both ways


def run_vae(case):
    vae, _ = _component(case.component_dir, build_vae)
    t, method = case.tensors, case.spec["call"]["method"]
    with torch.no_grad():
        if ".encode(" in method:
            mean, logvar = vae.encode_moments(t["x"])
            assert_close(f"{case.name}:mean", mean, t["mean"], **case.tolerance)
            assert_close(f"{case.name}:logvar", logvar, t["logvar"], **case.tolerance)
        elif ".decode(" in method:
            assert_close(f"{case.name}:x", vae.decode(t["z"]), t["x"], **case.tolerance)
        else:
            raise AssertionError(f"{case.name}: no runner for the call {method}")


def run_schedule(case):
    ac = schedulers.alphas_cumprod(case.config["tiny"]["snr_shift_scale"])
    assert schedulers.alpha_at(ac, -1).item() == case.spec["final_alpha_cumprod"]
    for c in case.spec["cases"]:
        n = c["num_inference_steps"]
        ts = schedulers.get_timesteps(n)
        assert ts == c["timesteps"], (n, ts)
        assert [schedulers.prev_timestep(t, n) for t in ts] == c["prev_timesteps"]
        assert_close(f"{case.name}:{n}", ac[ts], torch.tensor(c["alphas_cumprod_at_t"], dtype=torch.float64),
                     atol=case.spec.get("atol", 1e-9), rtol=0)


def _pixels(image_uint8: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """diffusers' VideoProcessor.preprocess for a PIL image: Lanczos resize, /255, 2x - 1 -> [1,3,1,H,W]."""
    pil = Image.fromarray(image_uint8.numpy()).resize((width, height), Image.LANCZOS)
    x = torch.from_numpy(np.asarray(pil).astype(np.float32) / 255.0).permute(2, 0, 1)
    return (x * 2 - 1)[None, :, None]


def run_loop(case):
    t, spec, sc = case.tensors, case.spec, case.spec["scalars"]
    root, tol = os.path.dirname(case.component_dir), case.tolerance
    model, mcfg = _component(os.path.join(root, sc["transformer"]), build_transformer)
    z = t["z_init"]
    steps = sc["num_inference_steps"]
    assert schedulers.get_timesteps(steps) == t["timesteps"].tolist()
    rope = None
    if mcfg.get("use_rotary_positional_embeddings"):
        rope = rope_for_video(model.config, sc["height"], sc["width"], z.shape[1])
        assert_close(f"{case.name}:rope_cos", rope[0], t["rope_cos"], **tol)
        assert_close(f"{case.name}:rope_sin", rope[1], t["rope_sin"], **tol)
    noises = iter([t[n] for n in spec["input_tensors"] if n.startswith("noise_")])
    image_latents = ofs = None
    if sc["i2v"]:
        vae, vcfg = _component(os.path.join(root, sc["vae"]), build_vae)
        with torch.no_grad():
            image_latents = schedulers.i2v_image_latents(
                vae, _pixels(t["image_uint8"], sc["height"], sc["width"]), z.shape[1], vcfg["scaling_factor"],
                vcfg.get("invert_scale_latents", False), mcfg.get("patch_size_t"), noise_fn=lambda shape: next(noises))
        image_latents = image_latents.expand(z.shape[0], -1, -1, -1, -1)
        assert_close(f"{case.name}:image_latents", image_latents, t["image_latents"], **tol)
        if mcfg.get("ofs_embed_dim"):
            ofs = torch.full((1,), schedulers.I2V_OFS)
    fed, steps_seen = [], []

    def recording_model(x, text, timestep, **kw):
        fed.append(timestep.clone())
        return model(x, text, timestep, **kw)

    with torch.no_grad():
        out = schedulers.sample(recording_model, z, t["prompt_embeds"], t["negative_prompt_embeds"], steps,
                                sc["guidance_scale"], sc["use_dynamic_cfg"], case.component.split("/")[-1],
                                case.config["tiny"]["snr_shift_scale"], rope, image_latents, ofs,
                                noise_fn=lambda shape: next(noises),
                                callback=lambda i, ts, lat, x0, g: steps_seen.append((lat.clone(), g)))
    assert next(noises, None) is None, "recorded noise draws left over"
    for i, timestep in enumerate(fed):
        assert_close(f"{case.name}:step{i}_timestep", timestep, t[f"step{i}_timestep"], 0, 0)
    np.testing.assert_allclose([g for _, g in steps_seen], t["guidance_scale_per_step"].numpy(), rtol=1e-12)
    assert_close(f"{case.name}:step0_latents", steps_seen[0][0], t["step0_latents"], **tol)
    assert_close(f"{case.name}:latents_out", out, t["latents_out"], **tol)


def run_scheduler(case):
    (run_schedule if "cases" in case.spec else run_loop)(case)


RUNNERS = {"cogvideox/vae": run_vae, "cogvideox/ddim": run_scheduler, "cogvideox/dpm": run_scheduler}
