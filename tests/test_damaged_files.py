"""Every loader names a cut, empty or random-bytes file: 'incomplete or damaged (N of M bytes): download it
again', with the file name and the node's input; never safetensors' 'incomplete metadata'."""
import os

import pytest

from comfyui_opensora import comfy_adapter
from comfyui_opensora.models import tiny
from comfyui_opensora.nodes.common import NodeInputError
from comfyui_opensora.nodes.loaders import OpenSoraModelLoader, OpenSoraTextEncoderLoader, OpenSoraVAELoader

# (loader, its file input, models folder, tiny writer key)
LOADERS = {
    "model": (OpenSoraModelLoader, "model_name", "diffusion_models", "model"),
    "model_pth": (OpenSoraModelLoader, "model_name", "diffusion_models", "model_v1.0"),
    "vae": (OpenSoraVAELoader, "vae_name", "vae", "vae"),
    "t5": (OpenSoraTextEncoderLoader, "text_encoder_name", "text_encoders", "text_encoder"),
    "clip": (OpenSoraTextEncoderLoader, "text_encoder_name", "text_encoders", "clip"),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("damaged")
    paths = tiny.write_tiny_models(str(root))
    comfy_adapter.configure(models_dir=str(root))
    yield root, paths
    comfy_adapter._settings["models_dir"] = None


def _load(loader, name):
    if loader is OpenSoraTextEncoderLoader:
        return loader().load(name, "auto", "fp32", "cpu")
    return loader().load(name, "fp32")


@pytest.mark.parametrize("kind", list(LOADERS))
@pytest.mark.parametrize("damage", ["cut", "empty", "random"])
def test_damaged_file_is_named_with_its_size(models, kind, damage):
    root, paths = models
    loader, input_name, folder, key = LOADERS[kind]
    good = paths[key]
    data = open(good, "rb").read()
    name = f"damaged_{damage}{os.path.splitext(good)[1]}"
    bad = root / folder / name
    bad.write_bytes({"cut": data[: len(data) * 2 // 3], "empty": b"", "random": os.urandom(4096)}[damage])
    try:
        with pytest.raises(NodeInputError) as info:
            _load(loader, name)
        message = str(info.value)
        assert f"input '{input_name}'" in message and name in message, message
        if damage == "random" and good.endswith(".pth"):  # a pickle of random bytes is just not a checkpoint
            assert "not a readable PyTorch checkpoint" in message, message
        else:
            assert "is incomplete or damaged" in message and "download it again" in message, message
        if damage == "cut" and good.endswith(".safetensors"):
            assert f"{len(data) * 2 // 3:,} of {len(data):,} bytes" in message, message
    finally:
        bad.unlink()
