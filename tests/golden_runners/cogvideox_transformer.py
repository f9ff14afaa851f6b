"""cogvideox/transformer_*: forward passes and RoPE tables against diffusers 0.42.1 recordings.

Generic over the case files: a case whose call lists `grids` checks rope_for_video per grid; any other case is a
forward pass on the tensors it names (rope_cos / rope_sin and ofs when present).
"""
from safetensors.torch import load_file

from comfyui_opensora.models.cogvideox.loading import build_transformer
from comfyui_opensora.models.cogvideox.transformer import rope_for_video
from golden import assert_close


def run(case):
    model = build_transformer(load_file(case.weights_path), case.config["tiny"]).eval()  # strict, both ways
    t, call, tol = case.tensors, case.spec["call"], case.tolerance
    if "grids" in call:
        for g in call["grids"]:
            cos, sin = rope_for_video(model.config, g["height"], g["width"], g["latent_frames"])
            assert_close(f"{case.name}:{g['outputs'][0]}", cos, t[g["outputs"][0]], **tol)
            assert_close(f"{case.name}:{g['outputs'][1]}", sin, t[g["outputs"][1]], **tol)
        return
    x = t["hidden_states"]
    rope = None
    if "rope_cos" in t:
        rope = (t["rope_cos"], t["rope_sin"])
        # The table the model builds for itself when none is passed is the pipeline's one.
        f, h, w = x.shape[1], x.shape[3], x.shape[4]
        for name, ours, recorded in zip(("cos", "sin"), rope_for_video(model.config, h * 8, w * 8, f), rope):
            assert_close(f"{case.name}:rope_{name}", ours, recorded, atol=1e-6, rtol=1e-6)
    out = model(x, t["encoder_hidden_states"], t["timestep"], image_rotary_emb=rope, ofs=t.get("ofs"))
    assert_close(f"{case.name}:out", out, t["out"], **tol)


RUNNERS = {"cogvideox/transformer_2b": run, "cogvideox/transformer_5b_i2v": run, "cogvideox/transformer_1.5": run}
