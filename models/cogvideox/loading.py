"""CogVideoX checkpoints: diffusers folders (config.json + weights) and single files, variant read off shapes."""
from __future__ import annotations

import json
import os


from ..checkpoint import build_strict, load_state_dict_file
from .transformer import CogVideoXTransformer3D
from .schedulers import SNR_SHIFT  # noqa: F401  (re-exported for run.py)
from .vae import CogVideoXVAE, SCALING

# Released configurations (diffusers names), keyed by variant.
BASE = dict(num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16, time_embed_dim=512,
            text_embed_dim=4096, num_layers=42, sample_width=90, sample_height=60, sample_frames=49, patch_size=2,
            patch_size_t=None, max_text_seq_length=226, use_rotary_positional_embeddings=True,
            use_learned_positional_embeddings=False, ofs_embed_dim=None, patch_bias=True)
VARIANTS = {
    "2b": {**BASE, "num_attention_heads": 30, "num_layers": 30, "use_rotary_positional_embeddings": False},
    "5b": BASE,
    "5b_i2v": {**BASE, "in_channels": 32, "use_learned_positional_embeddings": True},
    "1.5": {**BASE, "patch_size_t": 2, "patch_bias": False, "sample_width": 300, "sample_height": 300,
            "sample_frames": 81},
    "1.5_i2v": {**BASE, "in_channels": 32, "patch_size_t": 2, "patch_bias": False, "sample_width": 300,
                "sample_height": 300, "sample_frames": 81, "ofs_embed_dim": 512},
}
# Per variant: VAE scaling factor, whether I2V divides by it (1.5), scheduler SNR shift.
SCALE = SCALING  # one table per fact: the VAE module owns scaling, the schedulers own the SNR shift


def variant_of(config: dict) -> str:
    i2v = config["in_channels"] == 32
    if config.get("patch_size_t"):
        return "1.5_i2v" if i2v else "1.5"
    if i2v:
        return "5b_i2v"
    return "5b" if config.get("use_rotary_positional_embeddings") else "2b"


def config_from_state_dict(sd: dict) -> dict:
    """Released rule (patch_embed.proj.weight shape): (1920,16,2,2) 2B, (3072,16,2,2) 5B, (3072,32,2,2) 5B-I2V,
    (3072,128) 1.5, (3072,256) 1.5-I2V; dims of smaller models are read off the tensors too."""
    w = sd["patch_embed.proj.weight"]
    dim = w.shape[0]
    head_dim = sd["transformer_blocks.0.attn1.norm_q.weight"].shape[0]
    linear = w.ndim == 2
    in_ch = w.shape[1] // 8 if linear else w.shape[1]
    if linear:
        variant = "1.5_i2v" if in_ch == 32 else "1.5"
    elif in_ch == 32:
        variant = "5b_i2v"
    else:
        variant = "2b" if dim == 1920 else "5b"
    cfg = dict(VARIANTS[variant])
    cfg.update(num_attention_heads=dim // head_dim, attention_head_dim=head_dim, in_channels=in_ch,
               num_layers=1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")),
               text_embed_dim=sd["patch_embed.text_proj.weight"].shape[1],
               time_embed_dim=sd["time_embedding.linear_1.weight"].shape[0],
               out_channels=sd["proj_out.weight"].shape[0] // (4 * (2 if linear else 1)))
    if "ofs_embedding.linear_1.weight" in sd:
        cfg["ofs_embed_dim"] = sd["ofs_embedding.linear_1.weight"].shape[0]
    return cfg


def _folder(path: str, sub: str) -> str | None:
    """A diffusers model folder: the path itself or its `sub` folder (a whole pipeline repo)."""
    for d in (os.path.join(path, sub), path):
        if os.path.isdir(d) and os.path.exists(os.path.join(d, "config.json")):
            return d
    return None


def read_transformer(path: str):
    """(state dict, config) from a diffusers folder (config.json wins) or a single file."""
    folder = _folder(path, "transformer") if os.path.isdir(path) else None
    sd = load_state_dict_file(folder or path)
    config = config_from_state_dict(sd)
    if folder:
        with open(os.path.join(folder, "config.json")) as f:
            config.update({k: v for k, v in json.load(f).items() if k in config})
    return sd, config


def build_transformer(sd: dict, config: dict) -> CogVideoXTransformer3D:
    if not config.get("use_learned_positional_embeddings"):
        sd = {k: v for k, v in sd.items() if k != "patch_embed.pos_embedding"}  # 2B's table is recomputed
    return build_strict(lambda: CogVideoXTransformer3D(**config), sd, f"CogVideoX {variant_of(config)}")


def read_vae(path: str):
    """(state dict, config or {}) from a diffusers folder or a single file. A single file does not say its
    scaling factor (the same VAE serves every variant): it then comes from the transformer's variant."""
    folder = _folder(path, "vae") if os.path.isdir(path) else None
    sd = load_state_dict_file(folder or path)
    config = {}
    if folder:
        with open(os.path.join(folder, "config.json")) as f:
            config = json.load(f)
    return sd, {**vae_config(sd), **config}


def vae_config(sd: dict) -> dict:
    """VAE constructor arguments read off a (diffusers-named) state dict."""
    chans = tuple(sd[f"encoder.down_blocks.{i}.resnets.0.conv2.conv.weight"].shape[0]
                  for i in range(1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down_blocks."))))
    return dict(block_out_channels=chans, latent_channels=sd["decoder.conv_in.conv.weight"].shape[1],
                layers_per_block=1 + max(int(k.split(".")[4]) for k in sd
                                         if k.startswith("encoder.down_blocks.0.resnets.")),
                norm_num_groups=min(32, max(1, chans[0] // 2)))


def build_vae(sd: dict, config: dict) -> CogVideoXVAE:
    model = build_strict(lambda: CogVideoXVAE(**config), sd, "the CogVideoX VAE")
    model.scaling_factor = config.get("scaling_factor")
    model.invert_scale_latents = bool(config.get("invert_scale_latents", False))
    return model
