"""Cancel inside a VAE decode / encode stops within a layer, not after a chunk that takes seconds."""
import pytest
import torch

from comfyui_opensora import comfy_adapter
from comfyui_opensora.models import pipeline, tiny


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    paths = tiny.write_tiny_models(str(tmp_path_factory.mktemp("cancel")))
    return {k: pipeline.load_vae(paths[k], "fp32") for k in ("vae", "vae_sd", "vae_hunyuan", "vae_dc_ae")}


@pytest.mark.parametrize("kind", ["vae", "vae_sd", "vae_hunyuan", "vae_dc_ae"])
@pytest.mark.parametrize("direction", ["decode", "encode"])
def test_cancel_stops_within_a_layer(vaes, kind, direction):
    vae = vaes[kind]
    frames = 17 if kind != "vae_dc_ae" else 16
    latent = pipeline.empty_latent(vae, "custom", "1:1", 64, 64, frames, 1)
    convs = [m for m in vae.net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    ran = []
    handles = [m.register_forward_hook(lambda *_: ran.append(1)) for m in convs]
    cancel_at = 3

    def cancel(*_):
        if len(ran) == cancel_at:
            comfy_adapter.request_cancel()

    handles += [m.register_forward_hook(cancel) for m in convs]
    try:
        with pytest.raises(comfy_adapter.Interrupted):
            if direction == "decode":
                pipeline.decode(vae, latent)
            else:
                pipeline.encode(vae, torch.rand(1, 3, frames, 64, 64) * 2 - 1)
        assert len(ran) == cancel_at, "no convolution ran after the cancel"
    finally:
        comfy_adapter.clear_cancel()
        for h in handles:
            h.remove()
