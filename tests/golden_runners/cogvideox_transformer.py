"""cogvideox/transformer_*: forward passes and RoPE tables against diffusers 0.42.1 recordings."""
from safetensors.torch import load_file

from comfyui_opensora.models.cogvideox.transformer import CogVideoXTransformer3D, rope_for_video
from golden import assert_close


def run(case):
    cfg = case.config["tiny"]
    t, spec = case.tensors, case.spec
    model = CogVideoXTransformer3D(**cfg)
    missing, unexpected = model.load_state_dict(load_file(case.weights_path), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    model.eval()
    if "grids" in spec["call"]:
        for g in spec["call"]["grids"]:
            cos, sin = rope_for_video(model.config, g["height"], g["width"], g["latent_frames"])
            assert_close(f"{case.name}:{g['outputs'][0]}", cos, t[g["outputs"][0]], **case.tolerance)
            assert_close(f"{case.name}:{g['outputs'][1]}", sin, t[g["outputs"][1]], **case.tolerance)
        return
    rope = (t["rope_cos"], t["rope_sin"]) if "rope_cos" in t else None
    out = model(t["hidden_states"], t["encoder_hidden_states"], t["timestep"], image_rotary_emb=rope,
                ofs=t.get("ofs"))
    assert_close(f"{case.name}:out", out, t["out"], **case.tolerance)


RUNNERS = {"cogvideox/transformer_2b": run, "cogvideox/transformer_5b_i2v": run, "cogvideox/transformer_1.5": run}
