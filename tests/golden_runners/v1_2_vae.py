"""v1.2/vae: VideoAutoencoderPipeline encode (recorded posterior draws) and decode."""
from safetensors.torch import load_file

from comfyui_opensora.models.opensora.vae_v1_2 import load_vae_v1_2
from golden import assert_close


def run(case):
    pipeline = case.config["tiny"]["pipeline"]
    vae = load_vae_v1_2(load_file(case.weights_path), micro_frame_size=pipeline["micro_frame_size"]).eval()
    t, spec = case.tensors, case.spec
    method = spec["call"]["method"]
    if ".encode(" in method:
        noises = [t[n] for n in spec["input_tensors"] if n.startswith("noise_")]
        it = iter(noises)
        z = vae.encode(t["x"], noise_fn=lambda shape: next(it))
        assert_close(f"{case.name}:z", z, t["z"], **case.tolerance)
        if "z_zero_noise" in t:
            assert_close(f"{case.name}:z_zero_noise", vae.encode(t["x"], sample_posterior=False), t["z_zero_noise"],
                         **case.tolerance)
    elif ".decode(" in method:
        x = vae.decode(t["z"], spec["scalars"]["num_frames"])
        assert_close(f"{case.name}:x", x, t["x"], **case.tolerance)
    else:
        raise AssertionError(f"unknown call {method}")


RUNNERS = {"v1.2/vae": run}
