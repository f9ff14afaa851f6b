"""v1.1/iddpm: respacing (float32 betas) and full CFG sampling loops with the tiny STDiT2, with and without the
mask strategy (recorded noise, in the original's draw order)."""
import json
import os

import torch
from safetensors.torch import load_file

from comfyui_opensora.models import iddpm
from comfyui_opensora.models.opensora.stdit2 import load_stdit2
from golden import assert_close


def run(case):
    if "cases" in case.spec:
        for c in case.spec["cases"]:
            s = iddpm.respaced_schedule(c["num_sampling_steps"], float32_betas=True)
            assert s["timestep_map"] == c["timestep_map"]
            assert_close(f"{case.name}:{c['num_sampling_steps']}", s["betas"].float(),
                         torch.tensor(c["betas"], dtype=torch.float32), atol=0, rtol=0)
        return
    folder = os.path.join(case.component_dir, "..", "stdit2")
    model = load_stdit2(load_file(os.path.join(folder, "weights.safetensors"))).eval()
    t, sc = case.tensors, case.spec["scalars"]
    noises = iter(t[n] for n in case.spec["input_tensors"] if n.startswith("noise_"))
    seen, x_masks = [], []

    def recording(x, timestep, y, **kw):
        x_masks.append(kw.get("x_mask"))
        return model(x, timestep, y, **kw)

    z = t["z_init"]
    y_null = model.null_caption[None].repeat(z.shape[0], 1, 1)[:, None]
    kwargs = {k: t[k] for k in ("height", "width", "num_frames", "ar", "fps")}
    with torch.no_grad():
        out = iddpm.sample(recording, z, t["y_cond"], y_null, sc["num_sampling_steps"], sc["cfg_scale"],
                           sc["cfg_channel"], y_mask=t["y_mask"], model_kwargs=kwargs, float32_betas=True,
                           noise_fn=lambda shape: next(noises), mask=t.get("mask"),
                           callback=lambda i, ts, x: seen.append(ts[0].item()))
    assert seen == t["model_timesteps"].tolist()
    for i, xm in enumerate(x_masks):
        key = f"step{i}_x_mask"
        if key in t:
            assert torch.equal(xm.cpu(), t[key].bool()), f"{case.name}: x_mask at model call {i}"
    if "mask" in t:
        assert any(f"step{i}_x_mask" in t for i in range(len(x_masks))), "the mask case records x_mask"
    assert_close(f"{case.name}:z_out", out, t["z_out"], **case.tolerance)


RUNNERS = {"v1.1/iddpm": run}
