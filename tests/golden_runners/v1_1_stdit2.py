"""v1.1/stdit2: STDiT2.forward on the case's tensors (variable size, per-sample size/ar/fps/frame inputs)."""
from safetensors.torch import load_file

from comfyui_opensora.models.opensora.stdit2 import config_from_state_dict, load_stdit2
from golden import assert_close


def run(case):
    sd = load_file(case.weights_path)
    tiny = case.config["tiny"]
    config = config_from_state_dict(sd)
    for k in ("hidden_size", "depth", "num_heads", "caption_channels", "model_max_length", "qk_norm", "pred_sigma"):
        assert config[k] == tiny[k], f"{k}: read {config[k]} from the weights, config says {tiny[k]}"
    model = load_stdit2(sd).eval()
    t = case.tensors
    out = model(t["x"], t["timestep"], t["y"], mask=t.get("mask"), x_mask=t.get("x_mask"),
                num_frames=t["num_frames"], height=t["height"], width=t["width"], ar=t["ar"], fps=t["fps"])
    assert_close(f"{case.name}:out", out, t["out"], **case.tolerance)


RUNNERS = {"v1.1/stdit2": run}
