"""Reading checkpoints and telling what they are from their tensors (never from the file name).

Layouts handled:
* `.safetensors` / `.sft`; pickled `.pt` / `.pth` / `.bin` / `.ckpt` read with torch.load(weights_only=True), so
  no code in the file runs; a folder of weight files (diffusers style).
* Training wrappers: {"ema": sd} (Open-Sora's ema.pt saves the EMA weights flat, but other trainers nest them),
  {"model": sd}, {"state_dict": sd} (PixArt .pth), {"module": sd} (DeepSpeed), DDP's "module." and
  torch.compile's "_orig_mod." key prefixes. When several are present the EMA weights are taken: they are the
  ones released for inference.
* Open-Sora 1.2 STDiT3 specifics (`normalize_stdit3`, `fit_null_caption`), as the original's
  `ckpt_utils.reparameter` applies them on load: PixArt-initialised files name the spatial blocks `blocks.N`
  and carry a 2D patch-embedding kernel and a `pos_embed` table; a null caption of another length is extended
  by repeating its last row or truncated.
"""
from __future__ import annotations

import json
import os
import zipfile

import torch

from .errors import DamagedFileError

# Preferred first: EMA weights are what the trainers release for inference.
WRAPPERS = ("ema", "model_ema", "state_dict", "model", "module")
KEY_PREFIXES = ("module.", "_orig_mod.")
SAFETENSORS = (".safetensors", ".sft")
PICKLES = (".pt", ".pth", ".bin", ".ckpt")

FAMILY_NAMES = {
    "stdit3": "an Open-Sora 1.2 STDiT3 diffusion transformer", "stdit2": "an Open-Sora 1.1 STDiT2 transformer",
    "stdit": "an Open-Sora 1.0 STDiT transformer", "pixart": "a PixArt image transformer",
    "mmdit": "an Open-Sora 2.0 MMDiT transformer", "cogvideox": "a CogVideoX transformer (diffusers)",
    "cogvideox_sat": "a CogVideoX transformer (SAT)", "opensora_vae_v1_2": "the Open-Sora 1.2 VAE",
    "opensora_vae_v1_3": "the Open-Sora 1.3 VAE", "hunyuan_vae": "the HunyuanVideo VAE", "dc_ae": "a Video DC-AE",
    "cogvideox_vae": "the CogVideoX VAE (diffusers)", "cogvideox_vae_sat": "the CogVideoX VAE (SAT)",
    "sd_vae": "an image (SD) VAE", "flux_ae": "the FLUX.1 image autoencoder", "t5": "a T5 text encoder",
    "unknown": "no checkpoint family this pack knows",
}


# --------------------------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------------------------
def damaged(path: str, detail: str) -> DamagedFileError:
    return DamagedFileError(os.path.basename(path), detail)


def check_safetensors(path: str):
    """A ValueError saying the file is incomplete or damaged (and how much of it is there) unless its header
    is readable and the file holds every byte the header promises. Reads the header only: milliseconds for
    a 20 GB file that safetensors would otherwise fail on with 'incomplete metadata'."""
    size = os.path.getsize(path)
    if size < 8:
        raise damaged(path, f"{size} bytes, less than a safetensors header")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8:
            raise damaged(path, f"{size:,} bytes, but its header alone says {8 + n:,}" if n < 2 ** 32 else
                          "it does not start with a safetensors header")
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise damaged(path, "its safetensors header is unreadable") from None
    if size < 8 + n + end:
        raise damaged(path, f"{size:,} of {8 + n + end:,} bytes")


def load_state_dict_file(path: str) -> dict:
    """A flat {key: tensor} from a weight file or a folder of them; wrappers and key prefixes removed."""
    if os.path.isdir(path):
        return _load_folder(path)
    ext = os.path.splitext(path)[1].lower()
    if ext in SAFETENSORS:
        from safetensors.torch import load_file

        check_safetensors(path)
        try:
            return load_file(path)
        except Exception as e:  # noqa: BLE001 - safetensors raises several types for a bad header
            raise ValueError(f"'{path}' is not a readable safetensors file ({e}); it may be truncated or "
                             f"not a checkpoint") from e
    if ext not in PICKLES:
        raise ValueError(f"'{path}': unsupported checkpoint format '{ext}' (use {', '.join(SAFETENSORS + PICKLES)})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            zipped = f.read(2) == b"PK"  # torch.save's archive format: cut, it loses its central directory
        if size == 0 or (zipped and not zipfile.is_zipfile(path)):
            raise damaged(path, f"{size:,} bytes, the end of the archive missing" if size else "0 bytes") from e
        raise ValueError(f"'{path}' is not a readable PyTorch checkpoint ({e}); only files holding plain tensors "
                         f"are read (weights_only), convert others to .safetensors") from e
    return unwrap_state_dict(obj, path)


def _load_folder(path: str) -> dict:
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(SAFETENSORS + PICKLES))
    # Hugging Face folders often hold the same weights twice (.safetensors and .bin): read the safetensors only.
    if any(f.lower().endswith(SAFETENSORS) for f in files):
        files = [f for f in files if f.lower().endswith(SAFETENSORS)]
    if not files:
        raise ValueError(f"'{path}' is a folder without weight files ({', '.join(SAFETENSORS + PICKLES)})")
    sd = {}
    for f in files:
        sd.update(load_state_dict_file(os.path.join(path, f)))
    return sd


def unwrap_state_dict(obj, where: str = "checkpoint") -> dict:
    """Descend through training wrappers to the tensors, then strip DDP / torch.compile key prefixes."""
    # A wrapper key holding a dict is never a weight (weights are tensors), even next to tensors like `step`.
    while isinstance(obj, dict) and (key := next((k for k in WRAPPERS if isinstance(obj.get(k), dict)), None)):
        obj = obj[key]
    if not isinstance(obj, dict) or not any(torch.is_tensor(v) for v in obj.values()):
        raise ValueError(f"'{where}' does not hold a state dict (no tensors under {', '.join(WRAPPERS)})")
    sd = {k: v for k, v in obj.items() if torch.is_tensor(v)}
    for prefix in KEY_PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


# --------------------------------------------------------------------------------------------------------------
# What a state dict is
# --------------------------------------------------------------------------------------------------------------
def detect_family(sd: dict) -> str:
    """What a state dict is, from its key names (see shared/specs/opensora_keys and the CogVideoX key lists):
    one of FAMILY_NAMES' keys, 'unknown' when nothing fits."""
    keys = set(sd)

    def has(*names):
        return all(n in keys for n in names)

    def prefix(p):
        return any(k.startswith(p) for k in keys)

    if prefix("spatial_blocks.") and prefix("temporal_blocks."):
        return "stdit3"  # v1.2 and v1.3 (the latter adds x_embedder_cond*; load_stdit3 says it is not supported)
    if prefix("blocks.") and prefix("blocks.0.attn_temp"):
        return "stdit2" if prefix("fps_embedder.") or has("rope.freqs") else "stdit"
    if prefix("blocks.") and has("y_embedder.y_embedding", "x_embedder.proj.weight"):
        return "pixart"  # the image model STDiT3 training starts from (its spatial blocks)
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
    if prefix("encoder.") and prefix("decoder.") and has("encoder.conv_in.weight"):
        # the FLUX.1 autoencoder is the SD VAE without its quant convs
        return "sd_vae" if prefix("quant_conv") else "flux_ae"
    if has("shared.weight") or has("encoder.embed_tokens.weight"):
        return "t5"
    return "unknown"


def check_family(sd: dict, expected: tuple[str, ...], what: str) -> str:
    """The detected family, or a ValueError that names what was expected and what the keys look like."""
    found = detect_family(sd)
    if found not in expected:
        raise ValueError(f"expected {what} checkpoint (family '{expected[0]}'), but its keys look like "
                         f"{FAMILY_NAMES.get(found, found)} ('{found}')")
    return found


# --------------------------------------------------------------------------------------------------------------
# Open-Sora 1.2 STDiT3
# --------------------------------------------------------------------------------------------------------------
def normalize_stdit3(sd: dict) -> dict:
    """A new dict in the released STDiT3 key layout (tensors shared, not copied).

    What ckpt_utils.reparameter does for STDiT3: drop the fixed `pos_embed` / `pos_embed_temporal` tables that
    PixArt / STDiT files carry (STDiT3 computes its position embedding per call); rename a PixArt-initialised
    file's `blocks.N` to `spatial_blocks.N`; give a PixArt 2D patch kernel [C, in, 2, 2] its time axis.
    Released files (model.safetensors) and training ema.pt files already have the released layout.
    """
    sd = {k: v for k, v in sd.items() if k not in ("pos_embed", "pos_embed_temporal")}
    if not any(k.startswith("spatial_blocks.") for k in sd):
        sd = {("spatial_" + k if k.startswith("blocks.") else k): v for k, v in sd.items()}
    w = sd.get("x_embedder.proj.weight")
    if w is not None and w.ndim == 4:
        sd["x_embedder.proj.weight"] = w.unsqueeze(2)
    return sd


def fit_null_caption(sd: dict, length: int) -> dict:
    """Fit y_embedder.y_embedding to `length` tokens as the original's loading does: repeat the last row, or
    truncate. PixArt-alpha-initialised files carry 120 rows, the released v1.2 model 300."""
    y = sd.get("y_embedder.y_embedding")
    if y is None or y.shape[0] == length:
        return sd
    if y.shape[0] < length:
        y = torch.cat([y, y[-1:].expand(length - y.shape[0], -1)])
    return {**sd, "y_embedder.y_embedding": y[:length]}


def config_from_state_dict(sd: dict) -> dict:
    """STDiT3 constructor arguments read off a (released-layout) state dict's shapes.

    The head count is not stored: the head dim is read from the qk-norm weight, else from rope.freqs (half the
    head dim), else the released 72 is assumed.
    """
    try:
        patch_w = sd["x_embedder.proj.weight"]
        hidden, in_ch, patch = patch_w.shape[0], patch_w.shape[1], tuple(patch_w.shape[2:])
        qk_norm = "spatial_blocks.0.attn.q_norm.weight" in sd
        if qk_norm:
            head_dim = sd["spatial_blocks.0.attn.q_norm.weight"].shape[0]
        elif "rope.freqs" in sd:
            head_dim = 2 * sd["rope.freqs"].shape[0]
        else:
            head_dim = 72
        out_ch = sd["final_layer.linear.weight"].shape[0] // (patch[0] * patch[1] * patch[2])
        y_embedding = sd["y_embedder.y_embedding"]
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("spatial_blocks."))
        mlp_hidden = sd["spatial_blocks.0.mlp.fc1.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"not an STDiT3 state dict: it has no {e} tensor") from e
    return dict(hidden_size=hidden, depth=depth, num_heads=hidden // head_dim, patch_size=patch, in_channels=in_ch,
                caption_channels=y_embedding.shape[1], model_max_length=y_embedding.shape[0], qk_norm=qk_norm,
                pred_sigma=out_ch == 2 * in_ch, mlp_ratio=mlp_hidden / hidden)


# --------------------------------------------------------------------------------------------------------------
# Strict loading
# --------------------------------------------------------------------------------------------------------------
def _key_list(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def build_strict(make, sd: dict, what: str):
    """Construct a model on the meta device with `make()` and load `sd` into it strictly: every key both ways,
    every shape; the tensors are adopted without a copy (no second model-sized allocation). The ValueError
    names `what` the checkpoint failed to be and lists the missing / unexpected / mis-shaped keys."""
    with torch.device("meta"):
        model = make()
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = [f"{name} keys: {_key_list(keys)}" for name, keys in
                 (("missing", missing), ("unexpected", unexpected), ("mis-shaped", wrong)) if keys]
        raise ValueError(f"the checkpoint does not match {what}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True, assign=True)
    return model
