"""v1.2/vae: VideoAutoencoderPipeline encode (with its recorded posterior draws) and decode.

Generic over the folder's cases: the call (encode / decode) comes from `call.method`, inputs from
`input_tensors` (noise_### are the recorded randn draws, fed in order), scalars (num_frames) from `scalars`,
and every tensor in `output_tensors` is checked. An output named *zero_noise* was recorded with every draw
replaced by zeros, which is also the deterministic encode (posterior means).
"""
import torch
from safetensors.torch import load_file

from comfyui_opensora.models.opensora.vae_v1_2 import load_vae_v1_2
from golden import assert_close


def load(case):
    pipeline = case.config["tiny"]["pipeline"]
    return load_vae_v1_2(load_file(case.weights_path), micro_frame_size=pipeline["micro_frame_size"],
                         micro_batch_size=pipeline["vae_2d"]["micro_batch_size"]).eval()


class Recorded:
    """A noise_fn handing out recorded draws in order, checking each requested shape."""

    def __init__(self, draws: list):
        self.draws = list(draws)

    def __call__(self, shape):
        assert self.draws, "more draws requested than were recorded"
        draw = self.draws.pop(0)
        assert tuple(draw.shape) == tuple(shape), f"draw of shape {tuple(draw.shape)} requested as {tuple(shape)}"
        return draw


def run(case):
    vae, t, spec = load(case), case.tensors, case.spec
    inputs = {name: t[name] for name in spec["input_tensors"]}
    draws = [inputs[name] for name in sorted(inputs) if name.startswith("noise_")]
    method = spec["call"]["method"]
    with torch.inference_mode():
        for name in spec["output_tensors"]:
            if ".encode(" in method:
                zero = "zero_noise" in name
                noise_fn = Recorded([torch.zeros_like(d) for d in draws] if zero else draws)
                actual = vae.encode(inputs["x"], noise_fn=noise_fn)
                assert not noise_fn.draws, f"{case.name}: {len(noise_fn.draws)} recorded draws left unused"
                if zero:
                    assert_close(f"{case.name}:{name} (deterministic encode)", vae.encode(inputs["x"]), t[name],
                                 **case.tolerance)
            elif ".decode(" in method:
                actual = vae.decode(inputs["z"], **spec["scalars"])
            else:
                raise AssertionError(f"{case.name}: no runner for the call {method}")
            assert_close(f"{case.name}:{name}", actual, t[name], **case.tolerance)


RUNNERS = {"v1.2/vae": run}
