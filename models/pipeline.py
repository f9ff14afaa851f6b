"""What the nodes call: load models, make latents, place conditions, sample, decode.

Objects passed between nodes:
- OPENSORA_MODEL  -> DiffusionModel (family, the network, its precision and devices)
- OPENSORA_VAE    -> VideoVAE
- OPENSORA_TEXT_ENCODER -> text_encoders.T5Encoder
- OPENSORA_COND   -> dict(family, y [B,1,L,C], mask [B,L], prompts)
- LATENT          -> ComfyUI's dict: "samples" [B,C,T,H,W] (the VAE's normalised latent) plus an "opensora"
                     dict with the decoded video size and the reference conditions (mask_strategy entries).
The family is read off the checkpoint, never the file name.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

import torch

from .. import comfy_adapter
from . import checkpoint, devices, iddpm, mask_strategy, noise as noise_mod, offload, rflow, sd_vae, tiling
from .cogvideox import loading as cogvideox_loading, run as cogvideox_run, sat as cogvideox_sat
from .opensora import buckets, stdit, stdit2, stdit3, vae_v1_2
from .text_encoders import T5_MAX_LENGTH, TextEncoderError, clean_caption, load_t5, t5_encode

# Combo lists of the nodes: new entries go at the end (saved workflows store the values, not positions, but
# the defaults are the first entries).
TEXT_FAMILIES = ["opensora-v1.2", "cogvideox", "opensora-v1.0", "opensora-v1.1"]
SCHEDULERS = ["rflow", "dpm", "ddim", "iddpm"]
FAMILY_SCHEDULERS = {"opensora-v1.2": ["rflow"], "cogvideox": cogvideox_run.SCHEDULERS,
                     "opensora-v1.0": ["iddpm"], "opensora-v1.1": ["iddpm"]}
TEXT_LENGTH = {"opensora-v1.0": T5_MAX_LENGTH["v1.0"], "opensora-v1.1": T5_MAX_LENGTH["v1.1"],
               "opensora-v1.2": T5_MAX_LENGTH["v1.2"]}
RESOLUTIONS = ["144p", "240p", "360p", "480p", "720p", "1080p", "custom"]
# Width:height, as users read aspect ratios; Open-Sora 1.2 keys its tables height:width (see bucket_size).
ASPECT_RATIOS = ["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2", "17:9", "9:17", "21:9", "8:3",
                 "25:12", "50:27", "27:50", "8:5"]

MODEL_FAMILIES = {"stdit3": "opensora-v1.2", "cogvideox": "cogvideox", "cogvideox_sat": "cogvideox",
                  "stdit": "opensora-v1.0", "stdit2": "opensora-v1.1"}
VAE_FAMILIES = {"opensora_vae_v1_2": "opensora-v1.2", "cogvideox_vae": "cogvideox", "cogvideox_vae_sat": "cogvideox",
                "sd_vae": "sd-vae"}
# The VAE family whose latents each model family denoises (Open-Sora 1.0 and 1.1 share the SD VAE).
MODEL_VAE = {"opensora-v1.2": "opensora-v1.2", "cogvideox": "cogvideox", "opensora-v1.0": "sd-vae",
             "opensora-v1.1": "sd-vae"}


class ModelLoadError(ValueError):
    pass


class InputError(ValueError):
    """A bad node input, raised from model code: which input, what is wrong, how to fix it."""

    def __init__(self, input_name: str, problem: str, fix: str):
        super().__init__(f"input '{input_name}': {problem}. Fix: {fix}")
        self.input_name, self.problem, self.fix = input_name, problem, fix


@dataclass
class DiffusionModel:
    family: str
    net: torch.nn.Module
    dtype: torch.dtype
    device: torch.device
    offload_device: torch.device
    config: dict = field(default_factory=dict)
    offload: str = "model"


@dataclass
class VideoVAE:
    family: str
    net: torch.nn.Module
    dtype: torch.dtype
    device: torch.device
    offload_device: torch.device

    @property
    def spatial_ratio(self) -> int:
        return self.net.spatial_ratio

    @property
    def latent_channels(self) -> int:
        return self.net.latent_channels

    @property
    def align(self):
        """Reference starts snap to the temporal chunk (Open-Sora 1.2's align=5); None for CogVideoX."""
        return getattr(self.net, "micro_z_frame_size", None)

    def latent_frames(self, num_frames: int) -> int:
        if self.family == "cogvideox":
            return (num_frames - 1) // 4 + 1
        return self.net.latent_frames(num_frames)

    def check_num_frames(self, num_frames: int):
        if self.family == "cogvideox":
            return cogvideox_run.check_frames(num_frames)
        return self.net.check_num_frames(num_frames)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _kind_hint(kind: str) -> str:
    if kind in MODEL_FAMILIES:
        return f"a diffusion transformer ({kind}): load it with OpenSora Model Loader"
    if kind in VAE_FAMILIES or "vae" in kind or kind == "dc_ae":
        return f"a VAE ({kind}): load it with OpenSora VAE Loader"
    if kind == "t5":
        return "a T5 text encoder: load it with OpenSora Text Encoder Loader"
    return f"a '{kind}' checkpoint, which this pack does not support yet"


def _read(path: str, sub: str) -> tuple[dict, str, str]:
    """(state dict, family, path read); a diffusers pipeline folder is read from its `sub` folder."""
    if os.path.isdir(os.path.join(path, sub)):
        path = os.path.join(path, sub)
    try:
        sd = checkpoint.load_state_dict_file(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ModelLoadError(f"cannot read '{path}' as a checkpoint ({e})") from e
    return sd, checkpoint.detect_family(sd), path


def load_diffusion_model(path: str, dtype_name: str = "auto", offload_mode: str = "model") -> DiffusionModel:
    sd, kind, path = _read(path, "transformer")
    if kind not in MODEL_FAMILIES:
        raise ModelLoadError(f"'{path}' is {_kind_hint(kind)}, not a diffusion transformer this loader can take "
                             f"(supported: Open-Sora 1.0 STDiT, 1.1 STDiT2, 1.2 STDiT3, CogVideoX "
                             f"2B/5B/5B-I2V/1.5/1.5-I2V)")
    device = devices.get_device()
    if offload_mode not in offload.OFFLOAD_MODES:
        raise ModelLoadError(f"unknown offload mode '{offload_mode}' (choose one of {offload.OFFLOAD_MODES})")
    try:
        net, config = _build_model(kind, sd, path)
    except (ValueError, KeyError, IndexError, RuntimeError) as e:
        raise ModelLoadError(f"'{path}' looks like a {kind} checkpoint but its tensors do not fit that model "
                             f"({type(e).__name__}: {e}); the file may be truncated or converted wrongly") from e
    dtype = _model_dtype(dtype_name, device, config.get("variant"))
    net.to(dtype=dtype).eval().requires_grad_(False)
    return DiffusionModel(MODEL_FAMILIES[kind], net, dtype, device, devices.offload_device(), config, offload_mode)


def _model_dtype(dtype_name: str, device: torch.device, variant: str | None) -> torch.dtype:
    """auto: the precision each model was trained in where the device has it (CogVideoX-2B fp16, the others
    bf16), fp32 on CPU. CogVideoX 1.5 overflows in fp16."""
    if variant and variant.startswith("1.5") and dtype_name == "fp16":
        raise ModelLoadError("CogVideoX 1.5 does not run in fp16 (its activations overflow): choose bf16 or fp32")
    if dtype_name == "auto" and variant == "2b" and device.type == "cuda":
        return torch.float16
    return devices.resolve_dtype(dtype_name, device)


def _build_model(kind: str, sd: dict, path: str):
    config = {}
    if kind == "cogvideox_sat":  # original SAT checkpoint: renamed to diffusers keys first
        sd, kind = cogvideox_sat.transformer_to_diffusers(sd), "cogvideox"
    if kind == "cogvideox":
        config = cogvideox_loading.config_from_state_dict(sd)
        if os.path.isdir(path) and os.path.exists(os.path.join(path, "config.json")):
            with open(os.path.join(path, "config.json")) as f:
                config.update({k: v for k, v in json.load(f).items() if k in config})
        net = cogvideox_loading.build_transformer(sd, config)
        config = {"variant": cogvideox_loading.variant_of(config)}
    elif kind == "stdit2":
        net = stdit2.load_stdit2(checkpoint.fit_null_caption(sd, TEXT_LENGTH["opensora-v1.1"]))
    elif kind == "stdit":
        net, config = stdit.load_released(sd, TEXT_LENGTH["opensora-v1.0"])
    else:
        net = stdit3.load_stdit3(sd, model_max_length=T5_MAX_LENGTH["v1.2"])
    return net, config


def load_vae(path: str, dtype_name: str = "auto") -> VideoVAE:
    sd, kind, path = _read(path, "vae")
    if kind not in VAE_FAMILIES:
        raise ModelLoadError(f"'{path}' is {_kind_hint(kind)}, not a video VAE this loader can take "
                             f"(supported: Open-Sora VAE v1.2, the CogVideoX VAE, the SD VAE of Open-Sora 1.0/1.1)")
    device = devices.get_device()
    dtype = devices.resolve_dtype(dtype_name, device)
    try:
        if kind == "cogvideox_vae_sat":
            sd = cogvideox_sat.vae_to_diffusers(sd)
            config = cogvideox_loading.vae_config(sd)
            net = cogvideox_loading.build_vae(sd, config)
        elif kind == "cogvideox_vae":
            _, config = cogvideox_loading.read_vae(path)
            net = cogvideox_loading.build_vae(sd, config)
        elif kind == "sd_vae":
            net = sd_vae.load_video_vae(sd)
        else:
            net = vae_v1_2.load_vae_v1_2(sd)
    except (ValueError, KeyError, IndexError, RuntimeError) as e:
        raise ModelLoadError(f"'{path}' looks like a {kind} checkpoint but its tensors do not fit that model "
                             f"({type(e).__name__}: {e})") from e
    net.to(dtype=dtype).eval().requires_grad_(False)
    return VideoVAE(VAE_FAMILIES[kind], net, dtype, device, devices.offload_device())


def load_text_encoder(path: str, tokenizer_dir: str | None, dtype_name: str = "auto", device_name: str = "auto"):
    device = devices.get_device() if device_name == "auto" else torch.device("cpu")
    # Open-Sora 1.x ran T5 in fp32; on GPU bf16 halves the 19 GB of T5-XXL at a negligible cost.
    dtype = (torch.float32 if device.type == "cpu" else torch.bfloat16) if dtype_name == "auto" else \
        devices.check_dtype(dtype_name, device)
    from .text_encoders import find_tokenizer

    if tokenizer_dir is None:
        tokenizer_dir = find_tokenizer(path, extra_dirs=[comfy_adapter.model_path(comfy_adapter.PACK_FOLDER,
                                                                                  "t5_tokenizer") or "",
                                                         *comfy_adapter.bundled_tokenizer_dirs()])
    try:
        return load_t5(path, tokenizer_dir, dtype=dtype, device=device)
    except TextEncoderError as e:
        raise ModelLoadError(str(e)) from e


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------
def opensora_v1_2_prompt(prompt: str, aesthetic_score=None, motion_score=None, camera_motion=None) -> str:
    """Score suffixes as the original appends them (each only if absent), then caption cleaning."""
    if aesthetic_score is not None and "aesthetic score:" not in prompt:
        prompt = f"{prompt} aesthetic score: {aesthetic_score:.1f}."
    if motion_score is not None and "motion score:" not in prompt:
        prompt = f"{prompt} motion score: {motion_score:.1f}."
    if camera_motion is not None and "camera motion:" not in prompt:
        prompt = f"{prompt} camera motion: {camera_motion}."
    return clean_caption(prompt)


def encode_text(encoder, prompt: str, family: str, aesthetic_score=None, motion_score=None, camera_motion=None,
                offload: bool = True) -> dict:
    if family not in TEXT_FAMILIES:
        raise InputError("family", f"unknown model family '{family}'", f"choose one of {TEXT_FAMILIES}")
    if family in ("opensora-v1.0", "opensora-v1.1"):
        # the caption cleaning of v1.x, no score suffixes (those came with 1.2); 120 / 200 tokens
        text = clean_caption(prompt)
        y, mask = t5_encode(encoder, [text], max_length=TEXT_LENGTH[family])
        cond = {"family": family, "y": y, "mask": mask, "prompts": [text]}
    elif family == "cogvideox":
        # 226 tokens, raw text, T5 run without the attention mask; the reference's default negative prompt is ""
        y, mask = t5_encode(encoder, [prompt, ""], max_length=cogvideox_run.TEXT_LENGTH, use_mask=False)
        cond = {"family": family, "y": y[:1], "mask": mask[:1], "null_y": y[1:], "prompts": [prompt]}
    else:
        text = opensora_v1_2_prompt(prompt, aesthetic_score, motion_score, camera_motion)
        y, mask = t5_encode(encoder, [text], max_length=T5_MAX_LENGTH["v1.2"])
        cond = {"family": family, "y": y, "mask": mask, "prompts": [text]}
    if offload:
        encoder.to(devices.offload_device())
        comfy_adapter.soft_empty_cache()
    return cond


# --------------------------------------------------------------------------------------------
# Latents and conditions
# --------------------------------------------------------------------------------------------
def bucket_size(resolution: str, aspect_ratio: str) -> tuple[int, int]:
    """(height, width) of an Open-Sora 1.2 bucket, the aspect ratio given as width:height."""
    w, h = aspect_ratio.split(":")
    return buckets.get_image_size(resolution, f"{h}:{w}")


def empty_latent(vae: VideoVAE, resolution: str, aspect_ratio: str, width: int, height: int, num_frames: int,
                 batch_size: int) -> dict:
    if resolution != "custom":
        if aspect_ratio not in ASPECT_RATIOS:
            raise InputError("aspect_ratio", f"'{aspect_ratio}' is not a known aspect ratio",
                             f"choose one of {ASPECT_RATIOS}")
        height, width = bucket_size(resolution, aspect_ratio)
    ratio = vae.spatial_ratio
    # Presets follow the original: 240x426 gives 53 latent columns and decodes to 424 px, while the model is
    # still told 426 (position-embedding scale, timestep transform). Custom sizes must be exact.
    if resolution == "custom" and (height % ratio or width % ratio):
        name = "height" if height % ratio else "width"
        raise InputError(name, f"{height if name == 'height' else width} is not divisible by {ratio} (the VAE's "
                         f"spatial compression)", f"use a multiple of {ratio}")
    problem = vae.check_num_frames(num_frames)
    if problem:
        raise InputError("num_frames", problem[0], problem[1])
    shape = (batch_size, vae.latent_channels, vae.latent_frames(num_frames), height // ratio, width // ratio)
    return {"samples": torch.zeros(shape), "opensora": _new_info(vae, num_frames, height, width)}


def _latent_info(latent: dict, input_name: str = "latent") -> dict:
    info = latent.get("opensora")
    if info is None:
        raise InputError(input_name, "this latent was not made by an OpenSora node (it lacks the video size)",
                         "start from OpenSora Empty Latent or OpenSora VAE Encode")
    return info


def _fit_frames(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize to fill (height, width) and center-crop, as the original reads references ('resize_crop')."""
    import torch.nn.functional as F

    _, _, t, h, w = video.shape
    if (h, w) == (height, width):
        return video
    s = max(height / h, width / w)
    nh, nw = max(height, round(h * s)), max(width, round(w * s))
    frames = video[0].movedim(1, 0)  # [T, C, H, W]
    frames = F.interpolate(frames.float(), size=(nh, nw), mode="bicubic", align_corners=False).clamp(-1, 1)
    top, left = (nh - height) // 2, (nw - width) // 2
    return frames[:, :, top:top + height, left:left + width].movedim(0, 1)[None]


def encode_reference(vae: VideoVAE, video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reference frames [1,3,T,H,W] in -1..1 -> latent [C, T', h, w] (posterior mean: deterministic)."""
    return encode(vae, _fit_frames(video, height, width))["samples"][0]


def add_reference(latent: dict, vae: VideoVAE, video: torch.Tensor, reference_start: int, target_start: int,
                  length: int, edit_ratio: float, loop_index: int = 0) -> dict:
    info = _latent_info(latent)
    ref = encode_reference(vae, video, info["height"], info["width"])
    video_frames = latent["samples"].shape[2]
    ref_frames = ref.shape[1]
    ts = target_start + video_frames if target_start < 0 else target_start
    rs = reference_start + ref_frames if reference_start < 0 else reference_start
    if not 0 <= ts < video_frames:
        raise InputError("target_start", f"{target_start} is outside the video's {video_frames} latent frames",
                         f"use 0..{video_frames - 1} (or -1..-{video_frames} from the end)")
    if not 0 <= rs < ref_frames:
        raise InputError("reference_start", f"{reference_start} is outside the reference's {ref_frames} latent "
                         f"frames", f"use 0..{ref_frames - 1} (or negative values from the end)")
    if length > video_frames - ts:
        raise InputError("length", f"the reference is longer than the video: {length} latent frames from frame "
                         f"{ts} do not fit in {video_frames}", f"set length to at most {video_frames - ts}, or "
                         f"generate more frames")
    if length > ref_frames - rs:
        raise InputError("length", f"{length} latent frames from reference frame {rs} run past the reference's "
                         f"{ref_frames}", f"set length to at most {ref_frames - rs}")
    entry = mask_strategy.MaskEntry(loop_id=loop_index, ref_id=0, ref_start=reference_start,
                                    target_start=target_start, length=length, edit_ratio=edit_ratio)
    return _with_conditions(latent, [(entry, ref)])


def add_mask_strategy(latent: dict, vae: VideoVAE, strategy: str, references: list, loop_index: int = 0) -> dict:
    info = _latent_info(latent)
    try:
        entries = mask_strategy.parse_mask_strategy(strategy)
    except ValueError as e:
        raise InputError("mask_strategy", str(e), "write ';'-separated groups of "
                         "'loop,ref,ref_start,target_start,length,edit_ratio', e.g. '0' or '0;0,1,0,-1,1'") from e
    refs = [encode_reference(vae, r, info["height"], info["width"]) for r in references]
    conds = []
    for e in entries:
        if e.loop_id != loop_index:
            continue  # as the original: a group applies only in its own loop
        if e.ref_id >= len(refs):
            raise InputError(f"reference_{e.ref_id + 1}", f"the strategy uses reference {e.ref_id} but it is not "
                             f"connected", f"connect an image or video to reference_{e.ref_id + 1}")
        conds.append((dataclasses.replace(e, ref_id=0), refs[e.ref_id]))
    return _with_conditions(latent, conds)


def _with_conditions(latent: dict, conds: list) -> dict:
    out = dict(latent)
    info = dict(_latent_info(latent))
    info["conditions"] = list(info.get("conditions", [])) + conds
    out["opensora"] = info
    return out


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------
def _check_family(model: DiffusionModel, cond: dict, latent_info: dict):
    if cond.get("family") != model.family:
        raise InputError("positive", f"the conditioning was encoded for '{cond.get('family')}' but the model is "
                         f"'{model.family}'", f"set family to {model.family} in OpenSora Text Encode")
    if latent_info.get("family") not in (None, MODEL_VAE[model.family]):
        raise InputError("latent", f"the latent belongs to a '{latent_info.get('family')}' VAE but the model is "
                         f"'{model.family}'", "make the latent with the VAE that matches the model")


def sample(model: DiffusionModel, positive: dict, latent: dict, seed: int, steps: int, cfg: float,
           scheduler: str, denoise: float, fps: int, negative: dict | None = None, dynamic_cfg: bool = False) -> dict:
    info = _latent_info(latent)
    _check_family(model, positive, info)
    if scheduler not in FAMILY_SCHEDULERS[model.family]:
        raise InputError("scheduler", f"'{scheduler}' is not a scheduler of {model.family}",
                         f"choose one of {FAMILY_SCHEDULERS[model.family]}")
    if model.family == "cogvideox":
        return _sample_cogvideox(model, positive, negative, latent, info, seed, steps, cfg, scheduler, denoise,
                                 dynamic_cfg)
    net = model.net
    if positive["y"].shape[2] != net.null_caption.shape[0]:
        raise InputError("positive", f"the prompt has {positive['y'].shape[2]} tokens but the model's null "
                         f"caption has {net.null_caption.shape[0]}", "encode the prompt for this model's family")
    if model.family in ("opensora-v1.0", "opensora-v1.1"):
        return _sample_iddpm(model, positive, latent, info, seed, steps, cfg, denoise, fps)
    x0 = latent["samples"].float()
    b = x0.shape[0]
    gen = noise_mod.generator(seed)
    z = noise_mod.seeded_noise(seed, x0.shape, gen)
    y = positive["y"].repeat(b, 1, 1, 1)  # every batch row gets the prompt
    y_mask = positive["mask"].repeat(b, 1)

    z, mask = _conditions_mask(z, info, denoise, x0)
    device = model.device
    timesteps = rflow.get_timesteps(steps, b, info["height"], info["width"], info["num_frames"], device=device)
    kwargs = {"height": torch.full((b,), float(info["height"]), device=device),
              "width": torch.full((b,), float(info["width"]), device=device),
              "fps": torch.full((b,), float(fps if info["num_frames"] > 1 else buckets.IMAGE_FPS), device=device)}
    with offload.on_device(net, model.offload, device, model.offload_device):
        y_null = net.null_caption[None].repeat(b, 1, 1)[:, None].to(device)
        out = rflow.sample(net, z.to(device), y.to(device), y_mask.to(device), y_null, timesteps, cfg,
                           None if mask is None else mask.to(device), kwargs,
                           noise_fn=lambda shape: noise_mod.seeded_noise(seed, shape, gen, device=device))
    comfy_adapter.soft_empty_cache()
    result = dict(latent)
    result["samples"] = out.float().cpu()
    result["opensora"] = {**info, "conditions": []}
    return result


def _conditions_mask(z, info, denoise, x0):
    """(z, mask) for the mask-strategy samplers: references placed by the condition nodes, and denoise < 1 as
    video-to-video (free frames start from the input latent, re-noised at t = denoise, exactly how an edit
    ratio works)."""
    mask = None
    if info.get("conditions"):
        z, mask = mask_strategy.apply_conditions(z, info["conditions"], align=info.get("align"))
    if denoise < 1.0:
        mask = torch.ones(z.shape[0], z.shape[2]) if mask is None else mask
        free = mask >= 1
        z = torch.where(free[:, None, :, None, None], x0, z)
        mask = torch.where(free, torch.full_like(mask, denoise), mask)
    return z, mask


def _sample_iddpm(model, positive, latent, info, seed, steps, cfg, denoise, fps):
    """Open-Sora 1.0 / 1.1: IDDPM with respaced steps and guidance on 3 of the 4 channels."""
    net, v11 = model.net, model.family == "opensora-v1.1"
    x0 = latent["samples"].float()
    b, _, t, h, w = x0.shape
    if not v11:
        want = tuple(g * p for g, p in zip(net.grid, net.patch_size))
        if (t, h, w) != want:
            r = 8
            raise InputError("latent", f"Open-Sora 1.0 generates one fixed size, and this checkpoint's is {want[0]} "
                             f"frames at {want[2] * r}x{want[1] * r} (the latent is {t} frames at {w * r}x{h * r})",
                             f"set OpenSora Empty Latent to custom {want[2] * r}x{want[1] * r}, {want[0]} frames")
        if info.get("conditions"):
            raise InputError("latent", "Open-Sora 1.0 takes no reference frames",
                             "remove the reference / mask-strategy nodes, or use an Open-Sora 1.1 or 1.2 model")
    gen = noise_mod.generator(seed)
    z, mask = _conditions_mask(noise_mod.seeded_noise(seed, x0.shape, gen), info, denoise, x0)
    y = positive["y"].repeat(b, 1, 1, 1)
    y_mask = positive["mask"].repeat(b, 1)
    device = model.device
    kwargs = {}
    if v11:
        full = lambda v: torch.full((b,), float(v), device=device)  # noqa: E731
        kwargs = {"height": full(info["height"]), "width": full(info["width"]),
                  "ar": full(info["height"] / info["width"]), "num_frames": full(info["num_frames"]),
                  "fps": full(fps if info["num_frames"] > 1 else buckets.IMAGE_FPS)}
    with offload.on_device(net, model.offload, device, model.offload_device):
        y_null = net.null_caption[None].repeat(b, 1, 1)[:, None].to(device)
        out = iddpm.sample(net, z.to(device), y.to(device), y_null, steps, cfg, 3, y_mask.to(device), kwargs,
                           noise_fn=lambda shape: noise_mod.seeded_noise(seed, shape, gen, device=device),
                           float32_betas=v11, mask=None if mask is None else mask.to(device))
    comfy_adapter.soft_empty_cache()
    return {**latent, "samples": out.float().cpu(), "opensora": {**info, "conditions": []}}


def _sample_cogvideox(model, positive, negative, latent, info, seed, steps, cfg, scheduler, denoise, dynamic_cfg):
    variant = model.config["variant"]
    for problem in (cogvideox_run.check_frames(info["num_frames"], variant),
                    cogvideox_run.check_size(info["height"], info["width"], variant, model.net.config)):
        if problem:
            raise InputError("latent", problem[0], problem[1] + " in OpenSora Empty Latent")
    expected = cogvideox_loading.SCALE[variant]
    if info.get("vae_scaling") is not None and abs(info["vae_scaling"] - expected) > 1e-6:
        raise InputError("latent", f"the VAE's config says scaling factor {info['vae_scaling']}, but CogVideoX "
                         f"{variant} uses {expected}", f"load the VAE from the {variant} repository (the vae/ "
                         f"folder beside its transformer), or the single-file VAE")
    image = None
    conditions = info.get("conditions") or []
    if variant.endswith("i2v"):
        if not conditions:
            raise InputError("latent", f"CogVideoX {variant} is an image-to-video model and no image was given",
                             "connect OpenSora Reference Condition (target_start 0) with the image")
        entry, ref = conditions[0]
        if len(conditions) > 1 or entry.target_start != 0 or entry.length != 1:
            raise InputError("latent", "CogVideoX I2V takes one image as the first frame", "keep one Reference "
                             "Condition with target_start 0 and length 1")
        rs = entry.ref_start + ref.shape[1] if entry.ref_start < 0 else entry.ref_start
        image = ref[:, rs:rs + 1]
    elif conditions:
        raise InputError("latent", f"CogVideoX {variant} takes no reference frames",
                         "remove the reference / mask-strategy nodes, or load an I2V model")
    b = latent["samples"].shape[0]
    y = positive["y"][:, 0].repeat(b, 1, 1)
    y_neg = (negative or positive)["y" if negative else "null_y"][:, 0].repeat(b, 1, 1)
    with offload.on_device(model.net, model.offload, model.device, model.offload_device) as net:
        raw = cogvideox_run.sample(net, variant, y, y_neg, latent["samples"].float(), info, seed, steps, cfg,
                                   scheduler, denoise, dynamic_cfg, image, model.device, model.dtype)
    comfy_adapter.soft_empty_cache()
    return {**latent, "samples": raw, "opensora": {**info, "conditions": []}}


# --------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------
def decode(vae: VideoVAE, latent: dict, temporal_chunk: int = 0, temporal_overlap: int = 0, spatial_tile: int = 0,
           spatial_overlap: int = 64) -> torch.Tensor:
    info = _latent_info(latent)
    if info.get("family") not in (None, vae.family):
        raise InputError("latent", f"the latent belongs to a '{info['family']}' VAE but this VAE is '{vae.family}'",
                         "decode with the VAE the latent was made with")
    net = vae.net.to(vae.device)
    if vae.family == "cogvideox":
        # Temporal chunks carry the conv cache, so they need no overlap; the chunk size (2 latents in the
        # reference) sets GroupNorm's statistics, so 0 keeps the reference's. Spatial tiles are blended.
        batch = temporal_chunk or 2
        try:
            z = latent["samples"].to(vae.device, vae.dtype)
            if spatial_tile:
                r = vae.spatial_ratio
                tiles = tiling.tiled_2d(lambda t: torch.cat(list(net.decode_chunks(t, batch)), dim=2),
                                        spatial_tile // r, max(0, spatial_overlap // r), r)
                return tiles(z).float().cpu()
            bar = comfy_adapter.Progress(len(net.chunks(z.shape[2], batch)), desc="decoding")
            frames = []
            for i, chunk in enumerate(net.decode_chunks(z, batch)):
                frames.append(chunk.float().cpu())
                bar.update_absolute(i + 1)
            return torch.cat(frames, dim=2)
        finally:
            if vae.offload_device != vae.device:
                net.to(vae.offload_device)
    if vae.family == "sd-vae":  # frames are independent images: decode in bounded slices of frames
        try:
            z = latent["samples"].to(vae.device, vae.dtype)
            r = vae.spatial_ratio
            tile, overlap = (spatial_tile // r, max(0, spatial_overlap) // r) if spatial_tile >= r else (0, 0)
            step = temporal_chunk or 16
            bar = comfy_adapter.Progress(-(-z.shape[2] // step), desc="decoding")
            frames = []
            for i in range(0, z.shape[2], step):
                frames.append(net.decode(z[:, :, i:i + step], tile=tile, overlap=overlap).float().cpu())
                bar.update()
            return torch.cat(frames, dim=2)
        finally:
            if vae.offload_device != vae.device:
                net.to(vae.offload_device)
    try:
        z = latent["samples"].to(vae.device, vae.dtype)
        bar = comfy_adapter.Progress(-(-z.shape[2] // net.micro_z_frame_size), desc="decoding")
        video = vae_v1_2.decode_tiled(net, z, info["num_frames"], temporal_chunk=temporal_chunk,
                                      temporal_overlap=temporal_overlap, spatial_tile=spatial_tile,
                                      spatial_overlap=spatial_overlap, progress=bar.update_absolute)
    finally:
        if vae.offload_device != vae.device:
            net.to(vae.offload_device)
    return video.float().cpu()


def encode(vae: VideoVAE, video: torch.Tensor) -> dict:
    _, _, t, h, w = video.shape
    ratio = vae.spatial_ratio
    if h % ratio or w % ratio:
        raise InputError("images", f"frames of {w}x{h} are not divisible by {ratio}",
                         f"resize or crop them to multiples of {ratio} first")
    if vae.family == "cogvideox" and (t - 1) % 4:
        raise InputError("images", f"{t} frames is not 4k+1, which the CogVideoX VAE needs",
                         "trim the frames (OpenSora Load Video's frame_cap) to 4k+1")
    net = vae.net.to(vae.device)
    try:
        if vae.family == "cogvideox":
            z = net.encode_moments(video.to(vae.device, vae.dtype))[0]  # posterior mean: deterministic
        else:
            z = net.encode(video.to(vae.device, vae.dtype), sample_posterior=False)
    finally:
        if vae.offload_device != vae.device:
            net.to(vae.offload_device)
    return {"samples": z.float().cpu(), "opensora": _new_info(vae, t, h, w)}


def _new_info(vae: VideoVAE, num_frames: int, height: int, width: int) -> dict:
    # align: reference starts snap to the temporal VAE's latent chunk, as Open-Sora 1.2's inference (align=5)
    return {"family": vae.family, "num_frames": num_frames, "height": height, "width": width,
            "align": vae.align, "vae_scaling": getattr(vae.net, "scaling_factor", None), "conditions": []}


