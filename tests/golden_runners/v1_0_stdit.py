"""v1.0/stdit: STDiT.forward (fixed input size) on the case's tensors."""
from safetensors.torch import load_file

from comfyui_opensora.models.opensora.stdit import load_stdit
from golden import assert_close


def run(case):
    sd = load_file(case.weights_path)
    computed = load_stdit({k: v for k, v in sd.items() if not k.startswith("pos_embed")}, **case.config["tiny"])
    # the fixed tables we compute equal the ones stored in the file
    assert_close(f"{case.name}:pos_embed", computed.pos_embed, sd["pos_embed"], atol=1e-6, rtol=1e-6)
    assert_close(f"{case.name}:pos_embed_temporal", computed.pos_embed_temporal, sd["pos_embed_temporal"],
                 atol=1e-6, rtol=1e-6)
    t = case.tensors
    out = computed.eval()(t["x"], t["timestep"], t["y"], mask=t.get("mask"))
    assert_close(f"{case.name}:out", out, t["out"], **case.tolerance)


RUNNERS = {"v1.0/stdit": run}
