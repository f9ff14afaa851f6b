"""CogVideoX (2B, 5B, 5B-I2V, 1.5, 1.5-I2V) behind the pack's generic nodes: loading, text, sampling with
the DPM / DDIM schedulers, image-to-video, video-to-video.

LATENT["samples"] holds the raw VAE latent [B,16,F,h,w] (ComfyUI's convention); the variant's scaling factor
is applied around the transformer only, so one VAE file serves 2B (1.15258426) and 5B / 1.5 (0.7).
"""
from __future__ import annotations

import json
import os

import torch

from ... import comfy_adapter
from .. import devices, noise as noise_mod, offload
from ..errors import InputError, ModelLoadError
from ..family import VAE, Family
from ..text_encoders import t5_encode
from . import loading, sat, schedulers
from .loading import SCALE, SNR_SHIFT
from .transformer import rope_for_video

SCHEDULERS = ("dpm", "ddim")
TEXT_LENGTH = 226


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def load(kind: str, sd: dict, path: str):
    if kind == "cogvideox_sat":  # the original SAT checkpoint: renamed to diffusers keys first
        sd = sat.transformer_to_diffusers(sd)
    config = loading.config_from_state_dict(sd)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
        with open(os.path.join(path, "config.json")) as f:
            config.update({k: v for k, v in json.load(f).items() if k in config})
    return loading.build_transformer(sd, config), {"variant": loading.variant_of(config)}


def dtype(dtype_name: str, device: torch.device, config: dict) -> torch.dtype:
    """auto: the precision each variant was trained in where the device has it (2B fp16, the others bf16), fp32
    on CPU. 1.5 overflows in fp16."""
    variant = config["variant"]
    if variant.startswith("1.5") and dtype_name == "fp16":
        raise ModelLoadError("CogVideoX 1.5 does not run in fp16 (its activations overflow): choose bf16 or fp32")
    if dtype_name == "auto" and variant == "2b" and device.type == "cuda":
        return torch.float16
    return devices.resolve_dtype(dtype_name, device)


def load_vae(sd: dict, path: str):
    _, config = loading.read_vae(path)
    return loading.build_vae(sd, config)


def load_sat_vae(sd: dict, path: str):
    sd = sat.vae_to_diffusers(sd)
    return loading.build_vae(sd, loading.vae_config(sd))


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------
def encode_text(text_family, t5, clip, prompt, aesthetic_score=None, motion_score=None, camera_motion=None):
    # 226 tokens, raw text, T5 run without the attention mask; the reference's default negative prompt is ""
    y, mask = t5_encode(t5, [prompt, ""], max_length=TEXT_LENGTH, use_mask=False)
    return {"family": text_family, "y": y[:1], "mask": mask[:1], "null_y": y[1:], "prompts": [prompt]}


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
def check_frames(num_frames: int, variant: str):
    """(problem, fix) or None: the causal VAE takes 4k+1 frames; 1.5 was trained on 8k+1 (81, 161)."""
    if variant.startswith("1.5") and (num_frames - 1) % 8:
        return (f"{num_frames} frames is not 8k+1, which CogVideoX 1.5 needs", "use 81 or 161 frames (8k+1)")
    if (num_frames - 1) % 4:
        return (f"{num_frames} frames is not 4k+1, which the CogVideoX VAE needs",
                f"use {4 * ((num_frames - 1) // 4) + 1} or {4 * ((num_frames - 1) // 4 + 1) + 1}")
    return None


def check_size(height: int, width: int, variant: str, config: dict):
    if height % 16 or width % 16:
        return (f"{width}x{height} is not a multiple of 16 (VAE 8x times patch 2)", "use multiples of 16")
    if variant == "5b_i2v" and (height, width) != (config["sample_height"] * 8, config["sample_width"] * 8):
        return (f"CogVideoX-5B-I2V's learned positions only fit {config['sample_width'] * 8}x"
                f"{config['sample_height'] * 8}, not {width}x{height}", "use 720x480")
    if variant.startswith("1.5") and max(height, width) > config["sample_height"] * 8:
        return (f"{width}x{height} is larger than CogVideoX 1.5 can take", "keep the long side at most 1360 and the "
                "short side 768, multiples of 16")
    return None


def _first_frame(conditions: list, variant: str):
    """The I2V image latent [16, 1, h, w] from the reference conditions, which must be one first frame."""
    if not variant.endswith("i2v"):
        if conditions:
            raise InputError("latent", f"CogVideoX {variant} takes no reference frames",
                             "remove the reference / mask-strategy nodes, or load an I2V model")
        return None
    if not conditions:
        raise InputError("latent", f"CogVideoX {variant} is an image-to-video model and no image was given",
                         "connect OpenSora Reference Condition (target_start 0) with the image")
    entry, ref = conditions[0]
    if len(conditions) > 1 or entry.target_start != 0 or entry.length != 1:
        raise InputError("latent", "CogVideoX I2V takes one image as the first frame", "keep one Reference "
                         "Condition with target_start 0 and length 1")
    rs = entry.ref_start + ref.shape[1] if entry.ref_start < 0 else entry.ref_start
    return ref[:, rs:rs + 1]


def sample(model, positive, negative, latent, info, s):
    variant = model.config["variant"]
    for problem in (check_frames(info["num_frames"], variant),
                    check_size(info["height"], info["width"], variant, model.net.config)):
        if problem:
            raise InputError("latent", problem[0], problem[1] + " in OpenSora Empty Latent")
    expected = SCALE[variant]
    if info.get("vae_scaling") is not None and abs(info["vae_scaling"] - expected) > 1e-6:
        raise InputError("latent", f"the VAE's config says scaling factor {info['vae_scaling']}, but CogVideoX "
                         f"{variant} uses {expected}", f"load the VAE from the {variant} repository (the vae/ "
                         f"folder beside its transformer), or the single-file VAE")
    image = _first_frame(info.get("conditions") or [], variant)
    b = latent["samples"].shape[0]
    y = positive["y"][:, 0].repeat(b, 1, 1)
    y_neg = (negative or positive)["y" if negative else "null_y"][:, 0].repeat(b, 1, 1)
    with offload.on_device(model.net, model.offload, model.device, model.offload_device) as net:
        raw = denoise(net, variant, y, y_neg, latent["samples"].float(), s.seed, s.steps, s.cfg, s.scheduler,
                      s.denoise, s.dynamic_cfg, image, model.device, model.dtype)
    comfy_adapter.soft_empty_cache()
    return {**latent, "samples": raw, "opensora": {**info, "conditions": []}}


def denoise(net, variant: str, y, y_neg, raw, seed: int, steps: int, cfg: float, scheduler: str, denoise: float,
            dynamic_cfg: bool, image_raw=None, device="cpu", dtype=torch.float32, callback=None):
    """raw [B,16,F,h,w] -> raw sampled latents. y / y_neg [B,226,4096]. image_raw [16,1,h,w] for I2V."""
    config = net.config
    sf = SCALE[variant]
    b, c, f, h, w = raw.shape
    pad = 1 if config.get("patch_size_t") and f % config["patch_size_t"] else 0  # 1.5: even latent count
    gen = noise_mod.generator(seed)
    z = noise_mod.seeded_noise(seed, (b, f + pad, c, h, w), gen, device=device, dtype=dtype)
    start = 0
    if denoise < 1.0:  # video-to-video: start part-way with the input latent noised to that timestep
        start = steps - min(int(steps * denoise), steps)
        if start >= steps:
            return raw.clone()
        x0 = (raw * sf).permute(0, 2, 1, 3, 4).to(device, dtype)
        x0 = torch.cat([x0[:, :1]] * pad + [x0], dim=1)
        ac = schedulers.alphas_cumprod(SNR_SHIFT[variant])
        z = schedulers.add_noise(x0, z, schedulers.get_timesteps(steps)[start], ac).to(dtype)
    image_latents = None
    if image_raw is not None:
        lat = image_raw[None].to(device, dtype).permute(0, 2, 1, 3, 4)  # [1,1,16,h,w]
        lat = lat / sf if variant.startswith("1.5") else lat * sf      # 1.5 divides (invert_scale_latents)
        image_latents = torch.cat([lat, lat.new_zeros(1, f + pad - 1, c, h, w)], dim=1).repeat(b, 1, 1, 1, 1)
    rope = None
    if config["use_rotary_positional_embeddings"]:
        rope = tuple(r.to(device) for r in rope_for_video(config, h * 8, w * 8, f + pad))
    ofs = torch.full((1,), 2.0, device=device) if config.get("ofs_embed_dim") else None
    out = schedulers.sample(net, z, y.to(device, dtype), y_neg.to(device, dtype), steps, cfg, dynamic_cfg, scheduler,
                            SNR_SHIFT[variant], rope, image_latents, ofs,
                            noise_fn=lambda shape: noise_mod.seeded_noise(seed, shape, gen, device=device, dtype=dtype),
                            callback=callback, start_step=start)
    out = out[:, pad:]  # 1.5 drops the padding latent at the front, as the reference
    return (out.float() / sf).permute(0, 2, 1, 3, 4).cpu()


FAMILY = Family(name="cogvideox", checkpoints=("cogvideox", "cogvideox_sat"),
                label="CogVideoX 2B/5B/5B-I2V/1.5/1.5-I2V", load=load, vaes=("cogvideox",), schedulers=SCHEDULERS,
                text_families=("cogvideox",), encode_text=encode_text, sample=sample, dtype=dtype)
VAES = {"cogvideox_vae": VAE("cogvideox", "the CogVideoX VAE", load_vae),
        "cogvideox_vae_sat": VAE("cogvideox", "the CogVideoX VAE (SAT)", load_sat_vae)}
