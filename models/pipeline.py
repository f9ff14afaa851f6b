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

import contextlib
import dataclasses
import json
import os
from dataclasses import dataclass, field

import torch

from .. import comfy_adapter
from . import (checkpoint, devices, fp8, iddpm, mask_strategy, noise as noise_mod, offload, preview, rflow,
               rflow_v2, sd_vae)
from .cogvideox import (loading as cogvideox_loading, run as cogvideox_run, sat as cogvideox_sat,
                        vae as cogvideox_vae)
from .opensora import buckets, dc_ae, hunyuan_vae, mmdit, stdit, stdit2, stdit3, vae_v1_2
from .text_encoders import (T5_MAX_LENGTH, TextEncoderError, clean_caption, clip_pooled, is_clip, load_clip, load_t5,
                            t5_encode)

# Combo lists of the nodes: new entries go at the end (saved workflows store the values, not positions, but
# the defaults are the first entries).
TEXT_FAMILIES = ["opensora-v1.2", "cogvideox", "opensora-v1.0", "opensora-v1.1", "opensora-v2.0",
                 "opensora-v2.0-t2i"]
SCHEDULERS = ["rflow", "dpm", "ddim", "iddpm", "rflow-v2"]
FAMILY_SCHEDULERS = {"opensora-v1.2": ["rflow"], "cogvideox": cogvideox_run.SCHEDULERS,
                     "opensora-v1.0": ["iddpm"], "opensora-v1.1": ["iddpm"], "opensora-v2.0": ["rflow-v2"]}
TEXT_LENGTH = {"opensora-v1.0": T5_MAX_LENGTH["v1.0"], "opensora-v1.1": T5_MAX_LENGTH["v1.1"],
               "opensora-v1.2": T5_MAX_LENGTH["v1.2"]}
RESOLUTIONS = ["144p", "240p", "360p", "480p", "720p", "1080p", "custom", "256px", "768px"]  # the last two: 2.0
# Width:height, as users read aspect ratios; Open-Sora 1.2 keys its tables height:width (see bucket_size).
ASPECT_RATIOS = ["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2", "17:9", "9:17", "21:9", "8:3",
                 "25:12", "50:27", "27:50", "8:5", "2.39:1", "1:2.39", "1.85:1", "1:1.85", "5:8"]

MODEL_FAMILIES = {"stdit3": "opensora-v1.2", "cogvideox": "cogvideox", "cogvideox_sat": "cogvideox",
                  "stdit": "opensora-v1.0", "stdit2": "opensora-v1.1", "mmdit": "opensora-v2.0"}
VAE_FAMILIES = {"opensora_vae_v1_2": "opensora-v1.2", "cogvideox_vae": "cogvideox", "cogvideox_vae_sat": "cogvideox",
                "sd_vae": "sd-vae", "hunyuan_vae": "hunyuan-vae", "dc_ae": "dc-ae", "flux_ae": "flux-ae"}
# The VAE family whose latents each model family denoises (Open-Sora 1.0 and 1.1 share the SD VAE; 2.0's
# t2i2v makes its first frame with FLUX.1 and its autoencoder).
V2_VAES = ("hunyuan-vae", "dc-ae")  # Open-Sora 2.0's video VAEs
V2_PRESET_VAES = (*V2_VAES, "flux-ae")  # 256px / 768px presets
IMAGE_VAES = ("sd-vae", "flux-ae")  # frame by frame
MODEL_VAE = {"opensora-v1.2": ("opensora-v1.2",), "cogvideox": ("cogvideox",), "opensora-v1.0": ("sd-vae",),
             "opensora-v1.1": ("sd-vae",), "opensora-v2.0": V2_PRESET_VAES}


# Storage-only precisions of the model loader: block weights in fp8, compute in the device's default precision.
FP8_STORAGE = fp8.FP8_DTYPES


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
    preview_fit: tuple | None = field(default=None, repr=False)  # latent -> RGB, fitted on first use

    @property
    def spatial_ratio(self) -> int:
        return self.net.spatial_ratio

    @property
    def grid(self) -> int:
        """Pixels per latent token side: sizes must be multiples of it (2.0's MMDiT patches HunyuanVideo
        latents 2x2; the DC-AE's 32x latents are used unpatched)."""
        return {"hunyuan-vae": 16, "dc-ae": 32, "flux-ae": 16}.get(self.family, self.spatial_ratio)

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
    dtype = _model_dtype("auto" if dtype_name in FP8_STORAGE else dtype_name, device, config.get("variant"))
    net.to(dtype=dtype).eval().requires_grad_(False)
    if dtype_name in FP8_STORAGE:
        fp8.store_fp8(net, FP8_STORAGE[dtype_name])
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
    elif kind == "mmdit":
        sd, scales = fp8.split_scaled_fp8(sd)  # ComfyUI-style fp8 files keep their fp8 weights and scales
        net = mmdit.load_mmdit(sd)
        fp8.adopt_fp8_linears(net, scales)
        config = {"variant": "flux-t2i" if net.guidance_in is not None else
                  ("dc-ae" if net.in_channels == 128 else "hunyuan-vae")}
    else:
        net = stdit3.load_stdit3(sd, model_max_length=T5_MAX_LENGTH["v1.2"])
    return net, config


def load_vae(path: str, dtype_name: str = "auto") -> VideoVAE:
    sd, kind, path = _read(path, "vae")
    if kind not in VAE_FAMILIES:
        raise ModelLoadError(f"'{path}' is {_kind_hint(kind)}, not a video VAE this loader can take "
                             f"(supported: Open-Sora VAE v1.2, the CogVideoX VAE, the SD VAE of Open-Sora 1.0/1.1, "
                             f"Open-Sora 2.0's HunyuanVideo VAE and Video DC-AE, the FLUX.1 autoencoder)")
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
        elif kind in ("sd_vae", "flux_ae"):
            net = sd_vae.load_video_vae(sd)
        elif kind == "dc_ae":
            net = dc_ae.load_dc_ae(sd)
        elif kind == "hunyuan_vae":
            # spatial tiling on, as 2.0's inference configs: it only engages above 256 px (32 latents)
            net = hunyuan_vae.load_hunyuan_vae(sd, use_spatial_tiling=True)
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
    from .text_encoders import CLIP_TOKENIZER_FILES, find_tokenizer

    if _is_clip_file(path):  # CLIP-L, the pooled-vector encoder of Open-Sora 2.0
        if tokenizer_dir is None:
            tokenizer_dir = find_tokenizer(path, files=CLIP_TOKENIZER_FILES, extra_dirs=[
                comfy_adapter.model_path(comfy_adapter.PACK_FOLDER, "clip_tokenizer") or "",
                *comfy_adapter.bundled_tokenizer_dirs("sd1_tokenizer")])
        try:
            return load_clip(path, tokenizer_dir, dtype=dtype, device=device)
        except TextEncoderError as e:
            raise ModelLoadError(str(e)) from e
    if tokenizer_dir is None:
        tokenizer_dir = find_tokenizer(path, extra_dirs=[comfy_adapter.model_path(comfy_adapter.PACK_FOLDER,
                                                                                  "t5_tokenizer") or "",
                                                         *comfy_adapter.bundled_tokenizer_dirs()])
    try:
        return load_t5(path, tokenizer_dir, dtype=dtype, device=device)
    except TextEncoderError as e:
        raise ModelLoadError(str(e)) from e


def _is_clip_file(path: str) -> bool:
    if os.path.isdir(path):
        cfg = os.path.join(path, "config.json")
        if not os.path.exists(cfg):
            return False
        with open(cfg) as f:
            return "clip" in json.load(f).get("model_type", "")
    if not path.endswith(".safetensors"):
        return False
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        return is_clip(dict.fromkeys(f.keys()))


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


def opensora_v2_prompt(prompt: str, motion_score=None, fps: int = 24) -> str:
    """'<prompt>. 24 FPS. 4 motion score.' as 2.0's inference appends it (no caption cleaning)."""
    prompt = prompt.rstrip()
    if prompt and not prompt.endswith("."):
        prompt += "."
    return f"{prompt} {fps} FPS. {motion_score if motion_score is not None else 4:g} motion score."


def encode_text(encoder, prompt: str, family: str, aesthetic_score=None, motion_score=None, camera_motion=None,
                offload: bool = True, clip=None) -> dict:
    if family not in TEXT_FAMILIES:
        raise InputError("family", f"unknown model family '{family}'", f"choose one of {TEXT_FAMILIES}")
    if getattr(encoder, "kind", "t5") != "t5":
        raise InputError("text_encoder", "this is a CLIP encoder, not T5", "connect the T5 encoder here (and "
                         "CLIP, for Open-Sora 2.0, to the clip input)")
    if family in ("opensora-v2.0", "opensora-v2.0-t2i"):
        if clip is None or getattr(clip, "kind", None) != "clip":
            raise InputError("clip", "Open-Sora 2.0 also needs CLIP-L's pooled text vector", "load clip_l.safetensors "
                             "with OpenSora Text Encoder Loader and connect it to the clip input")
        # T5 at 512 tokens run without the attention mask, CLIP pooled; the unconditional pair is T5("") / CLIP("").
        # t2i2v's Flux image takes the prompt as written: the FPS / motion suffix is for the video model.
        text = prompt if family == "opensora-v2.0-t2i" else opensora_v2_prompt(prompt, motion_score)
        y, mask = t5_encode(encoder, [text, ""], max_length=T5_MAX_LENGTH["v2.0"], use_mask=False)
        vec = clip_pooled(clip, [text, ""])
        cond = {"family": "opensora-v2.0", "y": y[:1], "mask": mask[:1], "vec": vec[:1], "null_y": y[1:],
                "null_vec": vec[1:], "prompts": [text]}
        if offload:
            clip.to(devices.offload_device())
    elif family in ("opensora-v1.0", "opensora-v1.1"):
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
    v2_preset = resolution in buckets.PIXELS_V2
    if resolution != "custom" and v2_preset != (vae.family in V2_PRESET_VAES):
        presets = list(buckets.PIXELS_V2) if vae.family in V2_PRESET_VAES else list(buckets.PIXELS)
        raise InputError("resolution", f"'{resolution}' is not a preset of this VAE's model family",
                         f"choose one of {presets} or custom")
    if v2_preset:
        if aspect_ratio not in buckets.ASPECT_RATIOS_V2:
            raise InputError("aspect_ratio", f"'{aspect_ratio}' is not an Open-Sora 2.0 aspect ratio",
                             f"choose one of {buckets.ASPECT_RATIOS_V2}")
        height, width = buckets.get_image_size_v2(resolution, aspect_ratio, vae.grid)
    elif resolution != "custom":
        if aspect_ratio not in ASPECT_RATIOS:
            raise InputError("aspect_ratio", f"'{aspect_ratio}' is not a known aspect ratio",
                             f"choose one of {ASPECT_RATIOS}")
        height, width = bucket_size(resolution, aspect_ratio)
    ratio, grid = vae.spatial_ratio, vae.grid
    # Presets follow the original: 240x426 gives 53 latent columns and decodes to 424 px, while the model is
    # still told 426 (position-embedding scale, timestep transform). Custom sizes must be exact.
    if resolution == "custom" and (height % grid or width % grid):
        name = "height" if height % grid else "width"
        raise InputError(name, f"{height if name == 'height' else width} is not divisible by {grid} (the latent "
                         f"grid of this VAE and model)", f"use a multiple of {grid}")
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
    return encode(vae, _fit_frames(video, height, width), "reference")["samples"][0]


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
    if latent_info.get("family") not in (None, *MODEL_VAE[model.family]):
        raise InputError("latent", f"the latent belongs to a '{latent_info.get('family')}' VAE but the model is "
                         f"'{model.family}'", "make the latent with the VAE that matches the model")


def sample(model: DiffusionModel, positive: dict, latent: dict, seed: int, steps: int, cfg: float,
           scheduler: str, denoise: float, fps: int, negative: dict | None = None, dynamic_cfg: bool = False,
           guidance_img: float = 3.0, guidance_oscillation: bool = True, temporal_image_guidance: bool = True,
           flow_shift: float = 0.0) -> dict:
    with preview.active(_latent_info(latent).get("preview")):  # the latent carries its VAE's preview fit
        return _sample(model, positive, latent, seed, steps, cfg, scheduler, denoise, fps, negative, dynamic_cfg,
                       guidance_img, guidance_oscillation, temporal_image_guidance, flow_shift)


def _sample(model, positive, latent, seed, steps, cfg, scheduler, denoise, fps, negative, dynamic_cfg, guidance_img,
            guidance_oscillation, temporal_image_guidance, flow_shift) -> dict:
    info = _latent_info(latent)
    _check_family(model, positive, info)
    if scheduler not in FAMILY_SCHEDULERS[model.family]:
        raise InputError("scheduler", f"'{scheduler}' is not a scheduler of {model.family}",
                         f"choose one of {FAMILY_SCHEDULERS[model.family]}")
    if model.family == "opensora-v2.0":
        return _sample_v2(model, positive, negative, latent, info, seed, steps, cfg, denoise, guidance_img,
                          guidance_oscillation, temporal_image_guidance, flow_shift)
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


def _v2_conditions(z: torch.Tensor, conditions: list):
    """masks / masked_ref (Open-Sora 2.0's i2v condition) from the reference conditions placed on the latent,
    and whether they are image conditions (single frames: i2v head / tail / loop) rather than video ones."""
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


def _sample_v2(model, positive, negative, latent, info, seed, steps, cfg, denoise, guidance_img, oscillation,
               temporal_image_guidance, flow_shift):
    """Open-Sora 2.0: shifted flow schedule, text + image guidance, image conditions through cond_in."""
    net = model.net
    x0 = latent["samples"].float()
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
    if flux and info.get("family") != "flux-ae":
        raise InputError("latent", "this is FLUX.1, the text-to-image model of Open-Sora 2.0's t2i2v mode, and it "
                         "makes images in the FLUX.1 autoencoder's latent space", "make a 1-frame latent with OpenSora "
                         "Empty Latent from the FLUX.1 autoencoder (flux1-dev-ae.safetensors / ae.safetensors)")
    if not flux and info.get("family") == "flux-ae":
        raise InputError("latent", "a FLUX.1 autoencoder latent is the Flux model's image, not a video latent",
                         "load flux1-dev.safetensors for the image; for t2i2v decode it and connect the image to "
                         "OpenSora Reference Condition on a HunyuanVideo VAE latent")
    if positive["y"].shape[-1] != net.txt_in.in_features or positive["vec"].shape[-1] != net.vector_in.in_layer.in_features:
        raise InputError("positive", "the T5 / CLIP widths do not match this model's text inputs",
                         "encode with T5-XXL and CLIP-L")
    if flux:
        return _sample_flux(model, positive, latent, info, seed, steps, cfg, denoise, flow_shift)
    masks, masked_ref, image_cond = _v2_conditions(x0, info.get("conditions") or [])
    z, timesteps = _v2_start(x0, seed, steps, denoise, flow_shift, p)
    txt, vec = positive["y"][:, 0].repeat(B, 1, 1), positive["vec"].repeat(B, 1)
    if negative is not None and negative.get("family") != model.family:
        raise InputError("negative", f"the negative prompt was encoded for '{negative.get('family')}'",
                         f"encode it with family {model.family} (or leave negative unconnected: the empty prompt)")
    txt_neg = (negative or positive)["y" if negative else "null_y"][:, 0]
    vec_neg = (negative or positive)["vec" if negative else "null_vec"]
    device, dtype = model.device, model.dtype
    with offload.on_device(net, model.offload, device, model.offload_device):
        out = rflow_v2.sample(net, z.to(device, dtype), txt.to(device, dtype), vec.to(device, dtype),
                              txt_neg.to(device, dtype), vec_neg.to(device, dtype), timesteps, cfg, guidance_img,
                              masks.to(device, dtype), masked_ref.to(device, dtype), oscillation, oscillation,
                              temporal_image_guidance and image_cond)
    if image_cond:
        out = rflow_v2.paste(out, masks.to(out.device), masked_ref.to(out.device))
    comfy_adapter.soft_empty_cache()
    return {**latent, "samples": out.float().cpu(), "opensora": {**info, "conditions": []}}


def _v2_start(x0: torch.Tensor, seed: int, steps: int, denoise: float, flow_shift: float, p: int):
    """Seeded noise and the shifted schedule; denoise < 1 starts part-way down a longer schedule, from x0."""
    T, H, W = x0.shape[2:]
    noise = noise_mod.seeded_noise(seed, x0.shape, noise_mod.generator(seed))
    total = steps if denoise >= 1.0 else max(steps, int(round(steps / max(denoise, 1e-3))))
    timesteps = rflow_v2.get_schedule(total, H * W // (p * p), T, alpha=flow_shift or None)[-(steps + 1):]
    return (1 - timesteps[0]) * x0 + timesteps[0] * noise, timesteps


def _sample_flux(model, positive, latent, info, seed, steps, guidance, denoise, flow_shift):
    """t2i2v's first step: FLUX.1-dev makes the image (cfg is its distilled guidance, 4.0 in the original)."""
    x0 = latent["samples"].float()
    B, C, T, H, W = x0.shape
    if T != 1:
        raise InputError("latent", f"FLUX.1 makes single images and this latent has {T} frames",
                         "set num_frames to 1 in OpenSora Empty Latent")
    if info.get("conditions"):
        raise InputError("latent", "the FLUX.1 text-to-image model takes no reference frames",
                         "remove the reference nodes (the Flux image becomes the video model's reference)")
    z, timesteps = _v2_start(x0, seed, steps, denoise, flow_shift, model.net.patch_size)
    txt, vec = positive["y"][:, 0].repeat(B, 1, 1), positive["vec"].repeat(B, 1)
    device, dtype = model.device, model.dtype
    with offload.on_device(model.net, model.offload, device, model.offload_device) as net:
        out = rflow_v2.sample_distilled(net, z.to(device, dtype), txt, vec, timesteps, guidance)
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
        # reference) sets GroupNorm's statistics, so 0 keeps the reference's. Spatial tiles are diffusers' own
        # (enable_tiling with this tile size and overlap): each tile keeps its conv cache, seams blend as there.
        batch = temporal_chunk or 2
        grid = None
        if spatial_tile:
            r = vae.spatial_ratio
            if spatial_tile % r or spatial_overlap % r or spatial_overlap >= spatial_tile:
                raise InputError("spatial_overlap", f"CogVideoX tiles need a tile ({spatial_tile}) and overlap "
                                 f"({spatial_overlap}) in multiples of {r} px, the overlap below the tile",
                                 f"use multiples of {r}, e.g. 256 and 64")
            grid = cogvideox_vae.Tiling.from_pixels(spatial_tile, spatial_overlap, r)
        try:
            z = latent["samples"].to(vae.device, vae.dtype)
            bar = comfy_adapter.Progress(len(net.chunks(z.shape[2], batch)), desc="decoding")
            frames = []
            for i, chunk in enumerate(net.decode_chunks(z, batch, tiling=grid)):
                frames.append(chunk.float().cpu())
                bar.update_absolute(i + 1)
            return torch.cat(frames, dim=2)
        finally:
            if vae.offload_device != vae.device:
                net.to(vae.offload_device)
    if vae.family in IMAGE_VAES:  # frames are independent images: decode in bounded slices of frames
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
    if vae.family in V2_VAES:
        try:
            z = latent["samples"].to(vae.device, vae.dtype)
            with _v2_tiles(vae, temporal_chunk, spatial_tile, spatial_overlap), \
                    _progress_per_call(net.decoder, net.calls(z.shape, decode=True), "decoding"):
                video = net.decode(z)
        finally:
            if vae.offload_device != vae.device:
                net.to(vae.offload_device)
        return video[:, :, : info["num_frames"]].float().cpu()
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


def encode(vae: VideoVAE, video: torch.Tensor, input_name: str = "images") -> dict:
    _, _, t, h, w = video.shape
    ratio = vae.spatial_ratio
    if h % ratio or w % ratio:
        raise InputError(input_name, f"frames of {w}x{h} are not divisible by {ratio}",
                         f"resize or crop them to multiples of {ratio} first")
    if vae.family == "cogvideox" and (t - 1) % 4:
        raise InputError(input_name, f"{t} frames is not 4k+1, which the CogVideoX VAE needs",
                         "trim the frames (OpenSora Load Video's frame_cap) to 4k+1")
    if vae.family in V2_VAES:
        problem = vae.check_num_frames(t)
        if problem:
            raise InputError(input_name, problem[0], problem[1] + " (OpenSora Load Video's frame_cap trims frames)")
    return {"samples": _encode_latents(vae, video), "opensora": _new_info(vae, t, h, w)}


def _encode_latents(vae: VideoVAE, video: torch.Tensor, progress: bool = True) -> torch.Tensor:
    """[B, 3, T, H, W] in -1..1 -> float32 latents on the CPU (posterior means: deterministic)."""
    net = vae.net.to(vae.device)
    try:
        video = video.to(vae.device, vae.dtype)
        if vae.family == "cogvideox":
            z = net.encode_moments(video)[0]
        else:  # long videos: the bar follows the encoder's tiles / micro-batches
            encoder, runs = net.encoder_runs(video.shape)
            with _progress_per_call(encoder, runs if progress else 0, "encoding"):
                z = net.encode(video) if vae.family == "dc-ae" else net.encode(video, sample_posterior=False)
    finally:
        if vae.offload_device != vae.device:
            net.to(vae.offload_device)
    return z.float().cpu()


@contextlib.contextmanager
def _v2_tiles(vae: VideoVAE, temporal_chunk: int, spatial_tile: int, spatial_overlap: int):
    """Open-Sora 2.0's VAEs tile with their own code, blending windows as the original does. The node's inputs set
    the window sizes, spatial_tile px and temporal_chunk latent frames, and spatial_overlap / spatial_tile is the
    original's tile_overlap_factor, shared by space and time. spatial_tile 0 keeps the released tiles: 256 px,
    a quarter blended; in time the whole video for the HunyuanVideo VAE, 8 latents for the DC-AE."""
    net, r = vae.net, vae.spatial_ratio
    if spatial_tile % r:
        raise InputError("spatial_tile", f"{spatial_tile} px is not a multiple of this VAE's {r} px latent cells",
                         f"use a multiple of {r}, or 0 for the released 256 px tiles")
    if spatial_tile and (spatial_overlap % r or not 0 <= spatial_overlap < spatial_tile):
        raise InputError("spatial_overlap", f"{spatial_overlap} px does not fit tiles of {spatial_tile} px in "
                         f"{r} px latent cells", f"use a multiple of {r} below spatial_tile (a quarter of it, "
                         f"{spatial_tile // 4 // r * r}, as released)")
    if temporal_chunk == 1:
        raise InputError("temporal_chunk", "Open-Sora 2.0's VAEs blend neighbouring time windows, so a window "
                         "needs at least 2 latent frames", "use 0 (the VAE's default) or 2 and more")
    if vae.family == "hunyuan-vae":
        tiles = {"use_temporal_tiling": bool(temporal_chunk)}
        if temporal_chunk:
            tiles.update(tile_latent_min_tsize=temporal_chunk,
                         tile_sample_min_tsize=temporal_chunk * net.time_compression_ratio)
        if spatial_tile:
            tiles.update(tile_sample_min_size=spatial_tile, tile_latent_min_size=spatial_tile // r,
                         tile_overlap_factor=spatial_overlap / spatial_tile)
    else:
        tiles = {"use_temporal_tiling": True}
        if temporal_chunk:
            tiles["temporal_tile_size"] = temporal_chunk * net.time_ratio
        if spatial_tile:
            tiles.update(spatial_tile_size=spatial_tile, tile_overlap_factor=spatial_overlap / spatial_tile)
    saved = {k: getattr(net, k) for k in tiles}
    for k, v in tiles.items():
        setattr(net, k, v)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(net, k, v)


@contextlib.contextmanager
def _progress_per_call(module: torch.nn.Module, total: int, desc: str):
    """A progress bar (and cancellation check) that advances each time `module` runs; total 0: none. For VAEs
    whose tiling loops live inside the model: the model stays free of progress plumbing."""
    if not total:
        yield
        return
    bar = comfy_adapter.Progress(total, desc=desc)
    handle = module.register_forward_hook(lambda *_: bar.update())
    try:
        yield
    finally:
        handle.remove()
        bar.close()


def latent_preview(vae: VideoVAE):
    """(factors, bias) turning this VAE's latents into preview colours, or None when nobody shows previews.
    Fitted on first use (models/preview.py) and kept with the VAE. A fit that fails costs the previews only."""
    if not comfy_adapter.previews_enabled():
        return None
    if vae.preview_fit is None:
        # video latents are what samplers make, so temporal VAEs see a still clip of one chunk (images in
        # Open-Sora 1.2's VAE take another path); the SD VAE encodes frames one by one
        frames = 1 if vae.family in IMAGE_VAES else next(n for n in (17, 9, 8, 1) if not vae.check_num_frames(n))
        try:
            with torch.no_grad():
                encode = lambda v: _encode_latents(vae, v, progress=False)  # noqa: E731
                vae.preview_fit = preview.fit(encode, vae.latent_channels, frames)
        except Exception as e:  # noqa: BLE001 - previews are cosmetic; sampling must not fail for them
            print(f"[OpenSora] latent previews are off for this VAE: fitting them failed ({e})")
            vae.preview_fit = ()
    return vae.preview_fit or None


def _new_info(vae: VideoVAE, num_frames: int, height: int, width: int) -> dict:
    # align: reference starts snap to the temporal VAE's latent chunk, as Open-Sora 1.2's inference (align=5)
    return {"family": vae.family, "num_frames": num_frames, "height": height, "width": width,
            "align": vae.align, "vae_scaling": getattr(vae.net, "scaling_factor", None), "conditions": [],
            "preview": latent_preview(vae)}


