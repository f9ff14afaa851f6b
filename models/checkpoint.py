"""Reading checkpoints and telling what they are from their tensors (never from the file name)."""
from __future__ import annotations

import os

import torch

WRAPPERS = ("state_dict", "model", "module", "ema", "model_ema")


def load_state_dict_file(path: str) -> dict:
    """A flat {key: tensor} from .safetensors / .pt / .pth / .bin / .ckpt, or a diffusers-style folder.

    Pickled files are read with weights_only=True (no code runs). Training wrappers ('state_dict', 'model',
    'ema', DDP's 'module.' prefix) are unwrapped.
    """
    if os.path.isdir(path):
        files = sorted(f for f in os.listdir(path) if f.endswith((".safetensors", ".bin", ".pth", ".pt")))
        if not files:
            raise ValueError(f"{path} is a folder without weight files")
        sd = {}
        for f in files:
            sd.update(load_state_dict_file(os.path.join(path, f)))
        return sd
    if path.endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file

        return load_file(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    while isinstance(obj, dict) and not any(torch.is_tensor(v) for v in obj.values()):
        key = next((k for k in WRAPPERS if k in obj), None)
        if key is None:
            break
        obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def detect_family(sd: dict) -> str:
    """What a state dict is, from its keys: 'stdit3', 'stdit2', 'stdit', 'mmdit', 'cogvideox',
    'opensora_vae_v1_2', 'opensora_vae_v1_3', 'hunyuan_vae', 'dc_ae', 'cogvideox_vae', 'sd_vae', 't5',
    or 'unknown'."""
    keys = set(sd)

    def has(*names):
        return all(n in keys for n in names)

    def prefix(p):
        return any(k.startswith(p) for k in keys)

    if has("y_embedder.y_embedding") and prefix("spatial_blocks.") and prefix("temporal_blocks."):
        return "stdit3"
    if prefix("blocks.") and has("y_embedder.y_embedding") and prefix("blocks.0.attn_temp"):
        return "stdit2" if prefix("fps_embedder.") or has("rope.freqs") else "stdit"
    if prefix("double_blocks.") and prefix("single_blocks."):
        return "mmdit"
    if prefix("transformer_blocks.") and prefix("patch_embed.") and prefix("norm_final"):
        return "cogvideox"
    if prefix("model.diffusion_model.mixins.patch_embed."):
        return "cogvideox_sat"
    if prefix("decoder.up.") and any(".conv_y." in k for k in keys):
        return "cogvideox_vae_sat"
    if prefix("spatial_vae.") and prefix("temporal_vae."):
        return "opensora_vae_v1_2"
    if prefix("encoder.project_in.") and prefix("encoder.stages."):
        return "dc_ae"
    if prefix("encoder.down.") and prefix("decoder.up.") and prefix("encoder.conv_in.conv"):
        return "opensora_vae_v1_3"
    if prefix("encoder.down_blocks.") and prefix("decoder.up_blocks.") and prefix("encoder.conv_in.conv"):
        return "cogvideox_vae" if any(".conv_cache" in k or "norm_layer" in k or ".conv_y" in k for k in keys) \
            else "hunyuan_vae"
    if prefix("encoder.") and prefix("decoder.") and has("encoder.conv_in.weight") and prefix("quant_conv"):
        return "sd_vae"
    if has("shared.weight") or has("encoder.embed_tokens.weight"):
        return "t5"
    return "unknown"


def build_strict(make, sd: dict, what: str):
    """Construct a model on the meta device with `make()` and load `sd` into it strictly (every key both ways,
    tensors adopted without a copy). The error names `what` the checkpoint failed to be."""
    import torch

    with torch.device("meta"):
        model = make()
    missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
    if missing or unexpected:
        raise ValueError(f"the checkpoint does not match {what}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
