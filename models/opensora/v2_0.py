"""Open-Sora 2.0: the MMDiT sampled on the shifted flow schedule with text and image guidance, T5-XXL + CLIP-L
text, the HunyuanVideo VAE or the Video DC-AE; and t2i2v's first step, FLUX.1-dev making the first image in the
FLUX.1 autoencoder's latent space (same network code, guidance-distilled)."""
from __future__ import annotations

import torch

from ... import comfy_adapter
from .. import fp8, noise as noise_mod, offload, rflow_v2, sd_vae
from ..errors import InputError
from ..family import PRESETS_V2, VAE, Family
from ..text_encoders import T5_MAX_LENGTH, clip_pooled, t5_encode
from . import dc_ae, hunyuan_vae, mmdit

TEXT_LENGTH = T5_MAX_LENGTH["v2.0"]


def load(kind: str, sd: dict, path: str):
    sd, scales = fp8.split_scaled_fp8(sd)  # ComfyUI-style fp8 files keep their fp8 weights and scales
    net = mmdit.load_mmdit(sd)
    fp8.adopt_fp8_linears(net, scales)
    variant = "flux-t2i" if net.guidance_in is not None else ("dc-ae" if net.in_channels == 128 else "hunyuan-vae")
    return net, {"variant": variant}


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------
def prompt_text(prompt: str, motion_score=None, fps: int = 24) -> str:
    """'<prompt>. 24 FPS. 4 motion score.' as 2.0's inference appends it (no caption cleaning)."""
    prompt = prompt.rstrip()
    if prompt and not prompt.endswith("."):
        prompt += "."
    return f"{prompt} {fps} FPS. {motion_score if motion_score is not None else 4:g} motion score."


def encode_text(text_family, t5, clip, prompt, aesthetic_score=None, motion_score=None, camera_motion=None):
    """T5 at 512 tokens run without the attention mask, CLIP pooled; the unconditional pair is T5("") / CLIP("").
    t2i2v's Flux image (opensora-v2.0-t2i) takes the prompt as written: the FPS / motion suffix is for the video
    model."""
    if clip is None or getattr(clip, "kind", None) != "clip":
        raise InputError("clip", "Open-Sora 2.0 also needs CLIP-L's pooled text vector", "load clip_l.safetensors "
                         "with OpenSora Text Encoder Loader and connect it to the clip input")
    text = prompt if text_family == "opensora-v2.0-t2i" else prompt_text(prompt, motion_score)
    y, mask = t5_encode(t5, [text, ""], max_length=TEXT_LENGTH, use_mask=False)
    vec = clip_pooled(clip, [text, ""])
    return {"family": FAMILY.name, "y": y[:1], "mask": mask[:1], "vec": vec[:1], "null_y": y[1:],
            "null_vec": vec[1:], "prompts": [text]}


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
def reference_conditions(z: torch.Tensor, conditions: list):
    """masks / masked_ref (2.0's i2v condition) from the reference conditions placed on the latent, and whether
    they are image conditions (single frames: i2v head / tail / loop) rather than video ones."""
    T = z.shape[2]
    placements = []
    for entry, ref in conditions:
        if entry.edit_ratio:
            raise InputError("latent", "Open-Sora 2.0 keeps reference frames fixed (it has no edit ratio)",
                             "set edit_ratio to 0 in the reference condition")
        rs = entry.ref_start % ref.shape[1]
        placements.append((None, entry.target_start % T, ref[:, rs:rs + entry.length]))
    masks, masked_ref = rflow_v2.reference_mask(z.shape, placements)
    single = bool(conditions) and all(entry.length == 1 for entry, _ in conditions)
    return masks, masked_ref, single


def start(x0: torch.Tensor, seed: int, steps: int, denoise: float, flow_shift: float, p: int):
    """Seeded noise and the shifted schedule; denoise < 1 starts part-way down a longer schedule, from x0."""
    T, H, W = x0.shape[2:]
    noise = noise_mod.seeded_noise(seed, x0.shape, noise_mod.generator(seed))
    total = steps if denoise >= 1.0 else max(steps, int(round(steps / max(denoise, 1e-3))))
    timesteps = rflow_v2.get_schedule(total, H * W // (p * p), T, alpha=flow_shift or None)[-(steps + 1):]
    return (1 - timesteps[0]) * x0 + timesteps[0] * noise, timesteps


def _check_inputs(net, positive, x0, info):
    B, C, T, H, W = x0.shape
    p = net.patch_size
    if C * p * p != net.in_channels:
        raise InputError("latent", f"the latent has {C} channels but this MMDiT takes {net.in_channels // (p * p)} "
                         f"(16: HunyuanVideo VAE; 128: Video DC-AE)", "make the latent with the VAE released "
                         "with this model")
    if H % p or W % p:
        raise InputError("latent", f"the latent's {H}x{W} grid is not divisible by the {p}x{p} patches",
                         f"use a size that is a multiple of {p * 8} px")
    flux = net.guidance_in is not None
    if flux and info.get("family") != FLUX_AE.name:
        raise InputError("latent", "this is FLUX.1, the text-to-image model of Open-Sora 2.0's t2i2v mode, and it "
                         "makes images in the FLUX.1 autoencoder's latent space", "make a 1-frame latent with OpenSora "
                         "Empty Latent from the FLUX.1 autoencoder (flux1-dev-ae.safetensors / ae.safetensors)")
    if not flux and info.get("family") == FLUX_AE.name:
        raise InputError("latent", "a FLUX.1 autoencoder latent is the Flux model's image, not a video latent",
                         "load flux1-dev.safetensors for the image; for t2i2v decode it and connect the image to "
                         "OpenSora Reference Condition on a HunyuanVideo VAE latent")
    if positive["y"].shape[-1] != net.txt_in.in_features or positive["vec"].shape[-1] != net.vector_in.in_layer.in_features:
        raise InputError("positive", "the T5 / CLIP widths do not match this model's text inputs",
                         "encode with T5-XXL and CLIP-L")


def sample(model, positive, negative, latent, info, s):
    """Shifted flow schedule, text + image guidance, image conditions through cond_in."""
    net = model.net
    x0 = latent["samples"].float()
    B = x0.shape[0]
    _check_inputs(net, positive, x0, info)
    if net.guidance_in is not None:
        return _sample_flux(model, positive, latent, info, s)
    masks, masked_ref, image_cond = reference_conditions(x0, info.get("conditions") or [])
    z, timesteps = start(x0, s.seed, s.steps, s.denoise, s.flow_shift, net.patch_size)
    txt, vec = positive["y"][:, 0].repeat(B, 1, 1), positive["vec"].repeat(B, 1)
    if negative is not None and negative.get("family") != model.family:
        raise InputError("negative", f"the negative prompt was encoded for '{negative.get('family')}'",
                         f"encode it with family {model.family} (or leave negative unconnected: the empty prompt)")
    txt_neg = (negative or positive)["y" if negative else "null_y"][:, 0]
    vec_neg = (negative or positive)["vec" if negative else "null_vec"]
    device, dtype = model.device, model.dtype
    with offload.on_device(net, model.offload, device, model.offload_device):
        out = rflow_v2.sample(net, z.to(device, dtype), txt.to(device, dtype), vec.to(device, dtype),
                              txt_neg.to(device, dtype), vec_neg.to(device, dtype), timesteps, s.cfg, s.guidance_img,
                              masks.to(device, dtype), masked_ref.to(device, dtype), s.guidance_oscillation,
                              s.guidance_oscillation, s.temporal_image_guidance and image_cond)
    if image_cond:
        out = rflow_v2.paste(out, masks.to(out.device), masked_ref.to(out.device))
    comfy_adapter.soft_empty_cache()
    return {**latent, "samples": out.float().cpu(), "opensora": {**info, "conditions": []}}


def _sample_flux(model, positive, latent, info, s):
    """t2i2v's first step: FLUX.1-dev makes the image (cfg is its distilled guidance, 4.0 in the original)."""
    x0 = latent["samples"].float()
    B, C, T, H, W = x0.shape
    if T != 1:
        raise InputError("latent", f"FLUX.1 makes single images and this latent has {T} frames",
                         "set num_frames to 1 in OpenSora Empty Latent")
    if info.get("conditions"):
        raise InputError("latent", "the FLUX.1 text-to-image model takes no reference frames",
                         "remove the reference nodes (the Flux image becomes the video model's reference)")
    z, timesteps = start(x0, s.seed, s.steps, s.denoise, s.flow_shift, model.net.patch_size)
    txt, vec = positive["y"][:, 0].repeat(B, 1, 1), positive["vec"].repeat(B, 1)
    device, dtype = model.device, model.dtype
    with offload.on_device(model.net, model.offload, device, model.offload_device) as net:
        out = rflow_v2.sample_distilled(net, z.to(device, dtype), txt, vec, timesteps, s.cfg)
    comfy_adapter.soft_empty_cache()
    return {**latent, "samples": out.float().cpu(), "opensora": {**info, "conditions": []}}


FAMILY = Family(name="opensora-v2.0", checkpoints=("mmdit",), label="Open-Sora 2.0 MMDiT (and FLUX.1 for t2i2v)",
                load=load, vaes=("hunyuan-vae", "dc-ae", "flux-ae"), schedulers=("rflow-v2",),
                text_families=("opensora-v2.0", "opensora-v2.0-t2i"), encode_text=encode_text, sample=sample)
# Sizes are multiples of a transformer token: the MMDiT patches HunyuanVideo latents 2x2 (16 px), uses the
# DC-AE's 32x latents unpatched, and patches Flux's 2x2.
HUNYUAN_VAE = VAE("hunyuan-vae", "Open-Sora 2.0's HunyuanVideo VAE",
                  # spatial tiling on, as 2.0's inference configs: it only engages above 256 px (32 latents)
                  lambda sd, path: hunyuan_vae.load_hunyuan_vae(sd, use_spatial_tiling=True), grid=16,
                  presets=PRESETS_V2)
DC_AE = VAE("dc-ae", "Open-Sora 2.0's Video DC-AE", lambda sd, path: dc_ae.load_dc_ae(sd), grid=32,
            presets=PRESETS_V2)
FLUX_AE = VAE("flux-ae", "the FLUX.1 autoencoder", lambda sd, path: sd_vae.load_video_vae(sd), grid=16,
              presets=PRESETS_V2)
VAES = {"hunyuan_vae": HUNYUAN_VAE, "dc_ae": DC_AE, "flux_ae": FLUX_AE}
