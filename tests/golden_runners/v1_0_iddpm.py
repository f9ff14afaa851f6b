"""v1.0/iddpm: respacing and a full CFG sampling loop with the tiny STDiT (recorded noise)."""
import json
import os

import torch
from safetensors.torch import load_file

from comfyui_opensora.models import iddpm
from comfyui_opensora.models.opensora.stdit import load_stdit
from golden import assert_close


def run(case):
    if "cases" in case.spec:
        for c in case.spec["cases"]:
            s = iddpm.respaced_schedule(c["num_sampling_steps"])
            assert s["timestep_map"] == c["timestep_map"]
            assert_close(f"{case.name}:{c['num_sampling_steps']}", s["betas"], torch.tensor(c["betas"],
                         dtype=torch.float64), atol=1e-12, rtol=0)
        return
    folder = os.path.join(case.component_dir, "..", "stdit")
    cfg = json.load(open(os.path.join(folder, "config.json")))["tiny"]
    sd = load_file(os.path.join(folder, "weights.safetensors"))
    model = load_stdit(sd, **cfg).eval()
    t, sc = case.tensors, case.spec["scalars"]
    noises = [t[n] for n in case.spec["input_tensors"] if n.startswith("noise_")]
    z = noises[0]
    it = iter(noises[1:])
    seen = []
    n = z.shape[0]
    y_null = model.null_caption[None].repeat(n, 1, 1)[:, None]
    with torch.no_grad():
        out = iddpm.sample(model, z, t["y_cond"], y_null, sc["num_sampling_steps"], sc["cfg_scale"], 3,
                           y_mask=t["y_mask"], noise_fn=lambda shape: next(it),
                           callback=lambda i, ts, x: seen.append(ts[0].item()))
    assert seen == t["model_timesteps"].tolist()  # the original (not respaced) step the model sees
    assert_close(f"{case.name}:z_out", out, t["z_out"], **case.tolerance)


RUNNERS = {"v1.0/iddpm": run}
