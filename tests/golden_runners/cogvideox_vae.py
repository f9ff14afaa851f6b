"""cogvideox/vae: chunked encode (posterior mean / logvar) and decode against diffusers 0.42.1 recordings."""
from safetensors.torch import load_file

from comfyui_opensora.models.cogvideox.vae import CogVideoXVAE
from golden import assert_close


def run(case):
    vae = CogVideoXVAE(**case.config["tiny"])
    missing, unexpected = vae.load_state_dict(load_file(case.weights_path), strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    vae.eval()
    t, method = case.tensors, case.spec["call"]["method"]
    if ".encode(" in method:
        mean, logvar = vae.encode_moments(t["x"])
        assert_close(f"{case.name}:mean", mean, t["mean"], **case.tolerance)
        assert_close(f"{case.name}:logvar", logvar, t["logvar"], **case.tolerance)
    elif ".decode(" in method:
        assert_close(f"{case.name}:x", vae.decode(t["z"]), t["x"], **case.tolerance)
    else:
        raise AssertionError(f"unknown call {method}")


RUNNERS = {"cogvideox/vae": run}
