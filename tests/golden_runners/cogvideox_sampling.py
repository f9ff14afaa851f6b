"""cogvideox/ddim and cogvideox/dpm: schedules and full sampling trajectories (recorded noise), tiny models."""
import json
import os

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from comfyui_opensora.models.cogvideox import schedulers
from comfyui_opensora.models.cogvideox.transformer import CogVideoXTransformer3D, rope_for_video
from comfyui_opensora.models.cogvideox.vae import CogVideoXVAE
from golden import assert_close


def _load(cls, folder):
    cfg = json.load(open(os.path.join(folder, "config.json")))["tiny"]
    model = cls(**cfg)
    missing, unexpected = model.load_state_dict(load_file(os.path.join(folder, "weights.safetensors")), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model.eval(), cfg


def run_timesteps(case):
    ac = schedulers.alphas_cumprod(case.config["tiny"]["snr_shift_scale"])
    for c in case.spec["cases"]:
        n = c["num_inference_steps"]
        ts = schedulers.get_timesteps(n)
        assert ts == c["timesteps"]
        assert [schedulers.prev_timestep(t, n) for t in ts] == c["prev_timesteps"]
        assert_close(f"{case.name}:{n}", ac[ts], torch.tensor(c["alphas_cumprod_at_t"], dtype=torch.float64),
                     atol=case.spec.get("atol", 1e-9), rtol=0)


def run_sample(case):
    t, spec, sc = case.tensors, case.spec, case.spec["scalars"]
    root = os.path.join(case.component_dir, "..")
    model, mcfg = _load(CogVideoXTransformer3D, os.path.join(root, sc["transformer"]))
    scheduler = "ddim" if case.component.endswith("ddim") else "dpm"
    shift = case.config["tiny"]["snr_shift_scale"]
    z = t["z_init"]
    rope = None
    if mcfg.get("use_rotary_positional_embeddings"):
        rope = rope_for_video(model.config, sc["height"], sc["width"], z.shape[1])
        assert_close(f"{case.name}:rope_cos", rope[0], t["rope_cos"], **case.tolerance)
        assert_close(f"{case.name}:rope_sin", rope[1], t["rope_sin"], **case.tolerance)
    noises = iter(t[n] for n in spec["input_tensors"] if n.startswith("noise_"))
    image_latents = ofs = None
    if sc["i2v"]:
        vae, vcfg = _load(CogVideoXVAE, os.path.join(root, sc["vae"]))
        pil = Image.fromarray(t["image_uint8"].numpy()).resize((sc["width"], sc["height"]), Image.LANCZOS)
        image = torch.from_numpy(np.asarray(pil).astype(np.float32) / 255.0).permute(2, 0, 1)[None, :, None] * 2 - 1
        image_latents = schedulers.i2v_image_latents(vae, image, z.shape[1], vcfg["scaling_factor"],
                                                     vcfg.get("invert_scale_latents", False),
                                                     mcfg.get("patch_size_t"), noise=next(noises))
        image_latents = image_latents.repeat(z.shape[0] // image_latents.shape[0], 1, 1, 1, 1)
        assert_close(f"{case.name}:image_latents", image_latents, t["image_latents"], **case.tolerance)
        if mcfg.get("ofs_embed_dim"):
            ofs = torch.full((1,), 2.0)
    seen = []

    def record(i, ts, latents, x0, g):
        seen.append((ts, latents.clone(), g))

    with torch.no_grad():
        out = schedulers.sample(model, z, t["prompt_embeds"], t["negative_prompt_embeds"], sc["num_inference_steps"],
                                sc["guidance_scale"], sc["use_dynamic_cfg"], scheduler, shift, rope, image_latents,
                                ofs, noise_fn=lambda shape: next(noises), callback=record)
    assert [s[0] for s in seen] == spec["call"]["timesteps"]
    np.testing.assert_allclose([s[2] for s in seen], spec["call"]["guidance_scale_per_step"], rtol=1e-12)
    assert_close(f"{case.name}:step0_latents", seen[0][1], t["step0_latents"], **case.tolerance)
    assert_close(f"{case.name}:latents_out", out, t["latents_out"], **case.tolerance)


def run(case):
    if "cases" in case.spec:
        run_timesteps(case)
    else:
        run_sample(case)


RUNNERS = {"cogvideox/ddim": run, "cogvideox/dpm": run}
