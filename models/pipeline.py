"""What the nodes call: load models, make latents, place conditions, sample, decode. Family-free: what differs
between families is in the table (models/families.py) and in the VAE networks.

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
import re
from dataclasses import dataclass, field

import torch

from .. import comfy_adapter
from . import (attention as attention_backends, checkpoint, compilation, devices, fp8, mask_strategy, offload, preview,
               step_cache)
from .errors import DamagedFileError, InputError, ModelLoadError  # noqa: F401  (the nodes catch them here)
from .families import FAMILIES, SCHEDULERS, TEXT_FAMILIES, VAES, BY_CHECKPOINT, BY_TEXT_FAMILY  # noqa: F401
from .family import Presets, Sampling
from .text_encoders import TextEncoderError, is_clip, load_clip, load_t5

# Combo lists of the nodes: new entries go at the end (saved workflows store the values, not positions, but
# the defaults are the first entries). TEXT_FAMILIES and SCHEDULERS come from the table.
RESOLUTIONS = ["144p", "240p", "360p", "480p", "720p", "1080p", "custom", "256px", "768px"]  # the last two: 2.0
# Width:height, as users read aspect ratios; each VAE's presets say which of them it has.
ASPECT_RATIOS = ["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "2:1", "1:2", "17:9", "9:17", "21:9", "8:3",
                 "25:12", "50:27", "27:50", "8:5", "2.39:1", "1:2.39", "1.85:1", "1:1.85", "5:8"]

ATTENTION_BACKENDS = attention_backends.BACKENDS
COMPILE_MODES = compilation.MODES

# Storage-only precisions of the model loader: block weights in fp8, compute in the device's default precision.
FP8_STORAGE = fp8.FP8_DTYPES


@dataclass
class DiffusionModel:
    family: str
    net: torch.nn.Module
    dtype: torch.dtype
    device: torch.device
    offload_device: torch.device
    config: dict = field(default_factory=dict)
    offload: str = "model"
    attention: str = "sdpa"  # the backend its sampler runs on (models/attention.py)
    compile: dict | None = None  # torch.compile of its blocks (models/compilation.py); None: eager
    step_cache: dict | None = None  # skipping of near-repeat steps (models/step_cache.py); None: off


@dataclass
class VideoVAE:
    """A loaded VAE: its name in the table (the latent's family), the network, which answers the video questions
    itself (spatial_ratio, latent_channels, latent_frames, check_num_frames, encoder_runs, encode_video,
    decode_video), and what its model family adds: the token grid and the resolution presets."""
    family: str
    net: torch.nn.Module
    dtype: torch.dtype
    device: torch.device
    offload_device: torch.device
    grid: int = 0  # pixels per latent token side: sizes must be multiples of it; 0: the spatial ratio
    presets: Presets | None = None
    preview_fit: tuple | None = field(default=None, repr=False)  # latent -> RGB, fitted on first use

    def __post_init__(self):
        self.grid = self.grid or self.spatial_ratio

    @property
    def spatial_ratio(self) -> int:
        return self.net.spatial_ratio

    @property
    def latent_channels(self) -> int:
        return self.net.latent_channels

    @property
    def align(self):
        """Reference starts snap to the temporal chunk (Open-Sora 1.2's align=5); None for the others."""
        return getattr(self.net, "micro_z_frame_size", None)

    def latent_frames(self, num_frames: int) -> int:
        return self.net.latent_frames(num_frames)

    def check_num_frames(self, num_frames: int):
        return self.net.check_num_frames(num_frames)

    @property
    def preview_frames(self) -> int:
        """Frames of the still clip previews are fitted on: one temporal chunk, since video latents are what
        samplers make; one image for VAEs that encode frame by frame."""
        if self.latent_frames(17) == 17:
            return 1
        return next(n for n in (17, 9, 8, 1) if not self.check_num_frames(n))


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _kind_hint(kind: str) -> str:
    if kind in BY_CHECKPOINT:
        return f"a diffusion transformer ({kind}): load it with OpenSora Model Loader"
    if kind in VAES or "vae" in kind:
        return f"a VAE ({kind}): load it with OpenSora VAE Loader"
    if kind == "t5":
        return "a T5 text encoder: load it with OpenSora Text Encoder Loader"
    return f"a '{kind}' checkpoint, which this pack does not support yet"


def _read(path: str, sub: str) -> tuple[dict, str, str]:
    """(state dict, checkpoint kind, path read); a diffusers pipeline folder is read from its `sub` folder."""
    if os.path.isdir(os.path.join(path, sub)):
        path = os.path.join(path, sub)
    try:
        sd = checkpoint.load_state_dict_file(path)
    except DamagedFileError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise ModelLoadError(f"cannot read '{path}' as a checkpoint ({e})") from e
    return sd, checkpoint.detect_family(sd), path


def load_diffusion_model(path: str, dtype_name: str = "auto", offload_mode: str = "model",
                         attention: str = "sdpa") -> DiffusionModel:
    device = devices.get_device()
    backend = attention_backends.resolve(attention, device)  # before reading gigabytes
    sd, kind, path = _read(path, "transformer")
    if kind not in BY_CHECKPOINT:
        supported = ", ".join(f.label for f in FAMILIES.values())
        raise ModelLoadError(f"'{path}' is {_kind_hint(kind)}, not a diffusion transformer this loader can take "
                             f"(supported: {supported})")
    family = BY_CHECKPOINT[kind]
    if offload_mode not in offload.OFFLOAD_MODES:
        raise ModelLoadError(f"unknown offload mode '{offload_mode}' (choose one of {offload.OFFLOAD_MODES})")
    try:
        net, config = family.load(kind, sd, path)
    except (ValueError, KeyError, IndexError, RuntimeError) as e:
        raise ModelLoadError(f"'{path}' looks like a {kind} checkpoint but its tensors do not fit that model "
                             f"({type(e).__name__}: {e}); the file may be truncated or converted wrongly") from e
    compute = "auto" if dtype_name in FP8_STORAGE else dtype_name
    dtype = family.dtype(compute, device, config)
    net.to(dtype=dtype).eval().requires_grad_(False)
    if dtype_name in FP8_STORAGE:
        fp8.store_fp8(net, FP8_STORAGE[dtype_name])
    return DiffusionModel(family.name, net, dtype, device, devices.offload_device(), config, offload_mode, backend)


def load_vae(path: str, dtype_name: str = "auto") -> VideoVAE:
    sd, kind, path = _read(path, "vae")
    if kind not in VAES:
        supported = ", ".join(dict.fromkeys(v.label for v in VAES.values()))
        raise ModelLoadError(f"'{path}' is {_kind_hint(kind)}, not a video VAE this loader can take "
                             f"(supported: {supported})")
    spec = VAES[kind]
    device = devices.get_device()
    dtype = devices.resolve_dtype(dtype_name, device)
    try:
        net = spec.load(sd, path)
    except (ValueError, KeyError, IndexError, RuntimeError) as e:
        raise ModelLoadError(f"'{path}' looks like a {kind} checkpoint but its tensors do not fit that model "
                             f"({type(e).__name__}: {e})") from e
    net.to(dtype=dtype).eval().requires_grad_(False)
    return VideoVAE(spec.name, net, dtype, device, devices.offload_device(), spec.grid or 0, spec.presets)


# --------------------------------------------------------------------------------------------
# Model settings (nodes that take a model and give it back, weights shared)
# --------------------------------------------------------------------------------------------
def compiled(model: DiffusionModel, mode: str, dynamic: bool) -> DiffusionModel:
    """The same model (weights shared) with its blocks compiled when it samples."""
    if mode not in COMPILE_MODES:
        raise InputError("mode", f"unknown torch.compile mode '{mode}'", f"choose one of {COMPILE_MODES}")
    return dataclasses.replace(model, compile={"mode": mode, "dynamic": bool(dynamic)})


def step_cached(model: DiffusionModel, threshold: float, start: float, end: float) -> DiffusionModel:
    """The same model (weights shared) skipping near-repeat transformer calls when it samples."""
    if not 0 <= start <= end <= 1:
        raise InputError("start", f"start {start} and end {end} are not 0 <= start <= end <= 1",
                         "give the part of the run that may skip as fractions of the steps, e.g. 0.1 and 0.9")
    return dataclasses.replace(model, step_cache={"threshold": threshold, "start": start, "end": end})


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

    checkpoint.check_safetensors(path)
    with safe_open(path, "pt") as f:
        return is_clip(dict.fromkeys(f.keys()))


def out_of_memory(e: BaseException) -> str | None:
    """What an allocator failure says, in a sentence (None when e is not one)."""
    text = str(e)
    if isinstance(e, torch.OutOfMemoryError) or "CUDA out of memory" in text:
        return "the GPU ran out of memory" + (f" ({text.split('.')[0].split(':')[-1].strip()})" if text else "")
    if "can't allocate memory" in text or "DefaultCPUAllocator" in text:
        wanted = re.search(r"allocate (\d+) bytes", text)
        size = f" for {int(wanted.group(1)) / 2 ** 30:.1f} GB" if wanted else ""
        return f"the computer ran out of memory{size}"
    return None


def free_memory():
    import gc

    gc.collect()
    comfy_adapter.soft_empty_cache()


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------
def encode_text(encoder, prompt: str, family: str, aesthetic_score=None, motion_score=None, camera_motion=None,
                offload: bool = True, clip=None) -> dict:
    if family not in BY_TEXT_FAMILY:
        raise InputError("family", f"unknown model family '{family}'", f"choose one of {TEXT_FAMILIES}")
    if getattr(encoder, "kind", "t5") != "t5":
        raise InputError("text_encoder", "this is a CLIP encoder, not T5", "connect the T5 encoder here (and "
                         "CLIP, for Open-Sora 2.0, to the clip input)")
    cond = BY_TEXT_FAMILY[family].encode_text(family, encoder, clip, prompt, aesthetic_score, motion_score,
                                              camera_motion)
    if offload:
        if "vec" in cond:  # the family used CLIP too
            clip.to(devices.offload_device())
        encoder.to(devices.offload_device())
        comfy_adapter.soft_empty_cache()
    return cond


# --------------------------------------------------------------------------------------------
# Latents and conditions
# --------------------------------------------------------------------------------------------
def empty_latent(vae: VideoVAE, resolution: str, aspect_ratio: str, width: int, height: int, num_frames: int,
                 batch_size: int) -> dict:
    presets = vae.presets
    if resolution != "custom":
        if resolution not in presets.pixels:
            raise InputError("resolution", f"'{resolution}' is not a preset of this VAE's model family",
                             f"choose one of {list(presets.pixels)} or custom")
        if aspect_ratio not in presets.aspect_ratios:
            raise InputError("aspect_ratio", f"'{aspect_ratio}' is not an aspect ratio of this VAE's model family",
                             f"choose one of {presets.aspect_ratios}")
        height, width = presets.size(resolution, aspect_ratio, vae.grid)
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
    for e in entries:
        if e.loop_id == loop_index and e.ref_id >= len(references):
            raise InputError(f"reference_{e.ref_id + 1}", f"the strategy uses reference {e.ref_id} but it is not "
                             f"connected", f"connect an image or video to reference_{e.ref_id + 1}")
    refs = [encode_reference(vae, r, info["height"], info["width"]) for r in references]
    groups = strategy.split(";")
    conds = []
    for i, e in enumerate(entries):
        if e.loop_id != loop_index:
            continue  # as the original: a group applies only in its own loop
        # A length running past either end is cut to what fits, as the original; a start outside is a mistake.
        for field_name, start, frames, what in (("target_start", e.target_start, latent["samples"].shape[2], "video"),
                                                ("ref_start", e.ref_start, refs[e.ref_id].shape[1],
                                                 f"reference {e.ref_id}")):
            if not -frames <= start < frames:
                raise InputError("mask_strategy", f"group {i + 1} '{groups[i].strip()}': {field_name} {start} is "
                                 f"outside the {what}'s {frames} latent frames",
                                 f"use 0..{frames - 1}, or -1..-{frames} to count from the end")
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
    if latent_info.get("family") not in (None, *FAMILIES[model.family].vaes):
        raise InputError("latent", f"the latent belongs to a '{latent_info.get('family')}' VAE but the model is "
                         f"'{model.family}'", "make the latent with the VAE that matches the model")


def sample(model: DiffusionModel, positive: dict, latent: dict, seed: int, steps: int, cfg: float,
           scheduler: str, denoise: float, fps: int, negative: dict | None = None, dynamic_cfg: bool = False,
           guidance_img: float = 3.0, guidance_oscillation: bool = True, temporal_image_guidance: bool = True,
           flow_shift: float = 0.0) -> dict:
    info = _latent_info(latent)
    _check_family(model, positive, info)
    family = FAMILIES[model.family]
    if scheduler not in family.schedulers:
        raise InputError("scheduler", f"'{scheduler}' is not a scheduler of {model.family}",
                         f"choose one of {list(family.schedulers)}")
    settings = Sampling(seed, steps, cfg, scheduler, denoise, fps, dynamic_cfg, guidance_img, guidance_oscillation,
                        temporal_image_guidance, flow_shift)
    compilation.apply(model.net, model.compile)
    # the latent carries its VAE's preview fit; the model its attention backend
    with preview.active(info.get("preview")), attention_backends.use(model.attention), \
            step_cache.caching(model.net, model.step_cache, steps):
        return family.sample(model, positive, negative, latent, info, settings)


# --------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------
def decode(vae: VideoVAE, latent: dict, temporal_chunk: int = 0, temporal_overlap: int = 0, spatial_tile: int = 0,
           spatial_overlap: int = 64) -> torch.Tensor:
    """latent -> float32 video [B, 3, T, H, W] on the CPU, with the node's tiling (each VAE's decode_video says
    what its inputs mean there)."""
    info = _latent_info(latent)
    if info.get("family") not in (None, vae.family):
        raise InputError("latent", f"the latent belongs to a '{info['family']}' VAE but this VAE is '{vae.family}'",
                         "decode with the VAE the latent was made with")
    net = vae.net.to(vae.device)
    try:
        z = latent["samples"].to(vae.device, vae.dtype)
        with comfy_adapter.interruptible(net):
            return net.decode_video(z, info["num_frames"], temporal_chunk, temporal_overlap, spatial_tile,
                                    spatial_overlap)
    finally:
        if vae.offload_device != vae.device:
            net.to(vae.offload_device)


def encode(vae: VideoVAE, video: torch.Tensor, input_name: str = "images") -> dict:
    _, _, t, h, w = video.shape
    ratio = vae.spatial_ratio
    if h % ratio or w % ratio:
        raise InputError(input_name, f"frames of {w}x{h} are not divisible by {ratio}",
                         f"resize or crop them to multiples of {ratio} first")
    problem = vae.check_num_frames(t)
    if problem:
        raise InputError(input_name, problem[0], problem[1] + " (OpenSora Load Video's frame_cap trims frames)")
    return {"samples": _encode_latents(vae, video), "opensora": _new_info(vae, t, h, w)}


def _encode_latents(vae: VideoVAE, video: torch.Tensor, progress: bool = True) -> torch.Tensor:
    """[B, 3, T, H, W] in -1..1 -> float32 latents on the CPU (posterior means: deterministic). The bar follows
    the encoder's runs (tiles, micro-batches, frame chunks)."""
    net = vae.net.to(vae.device)
    try:
        video = video.to(vae.device, vae.dtype)
        encoder, runs = net.encoder_runs(video.shape)
        with comfy_adapter.progress_per_call(encoder, runs if progress else 0, "encoding"), \
                comfy_adapter.interruptible(net):
            z = net.encode_video(video)
    finally:
        if vae.offload_device != vae.device:
            net.to(vae.offload_device)
    return z.float().cpu()


def latent_preview(vae: VideoVAE):
    """(factors, bias) turning this VAE's latents into preview colours, or None when nobody shows previews.
    Fitted on first use (models/preview.py) and kept with the VAE. A fit that fails costs the previews only."""
    if not comfy_adapter.previews_enabled():
        return None
    if vae.preview_fit is None:
        try:
            with torch.no_grad():
                encode = lambda v: _encode_latents(vae, v, progress=False)  # noqa: E731
                vae.preview_fit = preview.fit(encode, vae.latent_channels, vae.preview_frames)
        except Exception as e:  # noqa: BLE001 - previews are cosmetic; sampling must not fail for them
            print(f"[OpenSora] latent previews are off for this VAE: fitting them failed ({e})")
            vae.preview_fit = ()
    return vae.preview_fit or None


def _new_info(vae: VideoVAE, num_frames: int, height: int, width: int) -> dict:
    # align: reference starts snap to the temporal VAE's latent chunk, as Open-Sora 1.2's inference (align=5)
    return {"family": vae.family, "num_frames": num_frames, "height": height, "width": width,
            "align": vae.align, "vae_scaling": getattr(vae.net, "scaling_factor", None), "conditions": [],
            "preview": latent_preview(vae)}
