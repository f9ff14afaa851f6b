"""v1.2/stdit3: STDiT3.forward on the case's tensors, every output within the case tolerance."""
from safetensors.torch import load_file

from comfyui_opensora.models.opensora.stdit3 import load_stdit3
from golden import assert_close

ARGS = ("x", "timestep", "y", "mask", "x_mask", "fps", "height", "width")


def run(case):
    model = load_stdit3(load_file(case.weights_path)).eval()
    t = case.tensors
    kwargs = {k: t.get(k) for k in ARGS}  # absent tensors (e.g. no x_mask) are None, as the call passed them
    out = model(**kwargs)
    for name in case.spec["output_tensors"]:
        assert_close(f"{case.component}/{case.name}:{name}", out, t[name], **case.tolerance)


RUNNERS = {"v1.2/stdit3": run}
