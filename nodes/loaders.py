"""Loader nodes: diffusion transformer, VAE, text encoder. The family comes from the checkpoint's tensors."""
from __future__ import annotations

from .. import comfy_adapter
from ..models import pipeline
from ..models.offload import OFFLOAD_MODES
from .common import CATEGORY, DTYPE_CHOICES, NodeInputError, check_floats, model_choices, resolve_model_path
from .sampling import _checked


def _load(node: str, input_name: str, fn, *args):
    try:
        return fn(*args)
    except pipeline.InputError as e:  # names its own input
        raise NodeInputError(node, e.input_name, e.problem, e.fix) from e
    except pipeline.DamagedFileError as e:
        raise NodeInputError(node, input_name, e.problem, e.fix) from e
    except (pipeline.ModelLoadError, ValueError) as e:
        raise NodeInputError(node, input_name, str(e), "choose a checkpoint of the kind this loader takes") from e


class OpenSoraModelLoader:
    DESCRIPTION = ("Loads a video diffusion transformer (Open-Sora 1.0 STDiT .pth, 1.1 STDiT2, 1.2 STDiT3, 2.0 "
                   "MMDiT and the FLUX.1-dev image model of its t2i2v mode; CogVideoX 2B, 5B, 5B-I2V, 1.5 and "
                   "1.5-I2V as single files or diffusers folders; the bundled demo model). The family is detected "
                   "from the checkpoint's tensors; a file of another kind is refused with a message that says "
                   "which loader it belongs to.")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = ("OPENSORA_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The diffusion transformer, for the sampler.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (model_choices("diffusion_models"), {
                "tooltip": "Checkpoint in models/diffusion_models (e.g. Open-Sora 1.2's model.safetensors), or a "
                           "diffusers-style folder in models/opensora."}),
            "dtype": (DTYPE_CHOICES + list(pipeline.FP8_STORAGE), {
                "default": "auto",
                "tooltip": "Weight and compute precision. auto: the model's own (bf16; fp16 for CogVideoX-2B) on "
                           "GPUs that support it, fp32 on CPU. fp8_e4m3fn / fp8_e5m2: the transformer blocks' "
                           "weights stored in fp8 (about a quarter of fp32, half of bf16) and computed in the "
                           "auto precision; fp8 checkpoints (ComfyUI's scaled_fp8) load as they are."}),
        }, "optional": {
            "offload": (OFFLOAD_MODES, {
                "default": "model",
                "tooltip": "model: on the GPU only while sampling; none: stays on the GPU; sequential: blocks "
                           "visit the GPU one at a time (CogVideoX-5B in a few GB, slower); sequential_prefetch: "
                           "the same, with the next block copied while the current one runs (about two blocks "
                           "of VRAM; block weights pinned in host RAM): Open-Sora 2.0 on a 24 GB GPU."}),
            "attention": (pipeline.ATTENTION_BACKENDS, {
                "default": "sdpa",
                "tooltip": "Attention kernel of the sampler. sdpa: torch's fused attention; math: the original's "
                           "reference path; flash / sage: flash-attn / SageAttention (pip install flash-attn or "
                           "sageattention; half precision on CUDA); comfy: ComfyUI's own attention, following "
                           "--use-sage-attention / --use-flash-attention; auto: the fastest installed. Calls a "
                           "kernel cannot take (key masks, fp32) run on sdpa."}),
        }}

    def load(self, model_name, dtype, offload="model", attention="sdpa"):
        path = resolve_model_path("OpenSoraModelLoader", "model_name", "diffusion_models", model_name)
        return (_load("OpenSoraModelLoader", "model_name", pipeline.load_diffusion_model, path, dtype, offload,
                      attention),)


class OpenSoraVAELoader:
    DESCRIPTION = ("Loads a video VAE (Open-Sora VAE v1.2, the CogVideoX VAE as a file or diffusers folder, the SD "
                   "VAE of Open-Sora 1.0/1.1 in diffusers or single-file layout, Open-Sora 2.0's HunyuanVideo VAE "
                   "and Video DC-AE, the FLUX.1 autoencoder of its t2i2v mode). The family is detected from the "
                   "checkpoint's tensors.")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = ("OPENSORA_VAE",)
    RETURN_NAMES = ("vae",)
    OUTPUT_TOOLTIPS = ("The video VAE, for empty latents, encode/decode and reference conditioning.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae_name": (model_choices("vae"), {
                "tooltip": "VAE checkpoint in models/vae (e.g. OpenSora-VAE-v1.2's model.safetensors), or a "
                           "diffusers-style folder in models/opensora."}),
            "dtype": (DTYPE_CHOICES, {
                "default": "auto",
                "tooltip": "Precision. auto: bf16 on GPUs that support it (as Open-Sora decodes), fp32 on CPU."}),
        }}

    def load(self, vae_name, dtype):
        path = resolve_model_path("OpenSoraVAELoader", "vae_name", "vae", vae_name)
        return (_load("OpenSoraVAELoader", "vae_name", pipeline.load_vae, path, dtype),)


class OpenSoraTextEncoderLoader:
    DESCRIPTION = ("Loads the T5 v1.1 XXL text encoder from ComfyUI's single file (t5xxl_fp16.safetensors, fp8 "
                   "variants too) or a Hugging Face folder, with its tokenizer from a local folder.")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = ("OPENSORA_TEXT_ENCODER",)
    RETURN_NAMES = ("text_encoder",)
    OUTPUT_TOOLTIPS = ("The text encoder, for OpenSora Text Encode.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder_name": (model_choices("text_encoders"), {
                "tooltip": "T5 encoder in models/text_encoders (t5xxl_fp16.safetensors) or an HF T5 folder in "
                           "models/opensora."}),
            "tokenizer": (["auto"] + comfy_adapter.list_models(comfy_adapter.PACK_FOLDER, dirs=True,
                                                               markers=comfy_adapter.TOKENIZER_DIR_MARKERS), {
                "default": "auto",
                "tooltip": "Tokenizer folder. auto: beside the encoder (same folder, '<name>_tokenizer', "
                           "'tokenizer'), models/opensora/t5_tokenizer, then the one ComfyUI ships."}),
            "dtype": (DTYPE_CHOICES, {
                "default": "auto",
                "tooltip": "Precision. Open-Sora 1.x ran T5 in fp32; auto uses fp32 on CPU and bf16 on GPU."}),
            "device": (["auto", "cpu"], {
                "default": "auto",
                "tooltip": "cpu keeps the 4.7B-parameter encoder in system RAM (slow but frees the GPU)."}),
        }}

    def load(self, text_encoder_name, tokenizer, dtype, device):
        path = resolve_model_path("OpenSoraTextEncoderLoader", "text_encoder_name", "text_encoders",
                                  text_encoder_name)
        tok = None if tokenizer == "auto" else (comfy_adapter.model_path(comfy_adapter.PACK_FOLDER, tokenizer)
                                                or tokenizer)
        return (_load("OpenSoraTextEncoderLoader", "text_encoder_name", pipeline.load_text_encoder, path, tok,
                      dtype, device),)


class OpenSoraCompileModel:
    DESCRIPTION = ("Compiles the diffusion transformer's blocks with torch.compile (one block at a time, so offload "
                   "and fp8 storage keep working) for faster steps. The first step at a new size compiles (tens "
                   "of seconds to minutes); later steps and runs at that size reuse it. Needs a C++ compiler on "
                   "CPU and Triton on GPU.")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = ("OPENSORA_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same model (weights shared), compiled when it samples.",)
    FUNCTION = "compile"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("OPENSORA_MODEL", {"tooltip": "From OpenSora Model Loader."}),
            "mode": (pipeline.COMPILE_MODES, {
                "default": "default", "tooltip": "torch.compile's mode: default compiles fastest; max-autotune "
                                                 "searches kernels longer for faster steps; reduce-overhead uses "
                                                 "CUDA graphs."}),
            "dynamic": ("BOOLEAN", {"default": False, "tooltip": "Compile for any size (fewer recompiles when "
                                                                 "sizes change, slower steps)."}),
        }}

    def compile(self, model, mode, dynamic):
        return (_checked("OpenSoraCompileModel", pipeline.compiled, model, mode, dynamic),)


class OpenSoraStepCache:
    DESCRIPTION = ("Skips transformer calls whose input has moved little since the last call that ran, reusing "
                   "its prediction (TeaCache's idea, for every family's sampler). Higher thresholds skip more steps "
                   "and drift further from the uncached video; the first and last steps always run. The log says "
                   "how many calls were skipped.")
    CATEGORY = f"{CATEGORY}/loaders"
    RETURN_TYPES = ("OPENSORA_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The same model (weights shared), caching steps when it samples.",)
    FUNCTION = "cache"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("OPENSORA_MODEL", {"tooltip": "From OpenSora Model Loader (or Compile Model)."}),
            "threshold": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 2.0, "step": 0.01,
                                    "tooltip": "Summed relative change of the model input below which a step reuses "
                                               "the last prediction. 0 = off (exactly the uncached result)."}),
            "start": ("FLOAT", {"default": 0.1, "min": 0.0, "max": 1.0, "step": 0.01,
                                "tooltip": "Steps before this fraction of the run always run."}),
            "end": ("FLOAT", {"default": 0.9, "min": 0.0, "max": 1.0, "step": 0.01,
                              "tooltip": "Steps from this fraction of the run on always run."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, threshold=None, start=None, end=None):
        return check_floats("OpenSoraStepCache", cls, threshold=threshold, start=start, end=end)

    def cache(self, model, threshold, start, end):
        return (_checked("OpenSoraStepCache", pipeline.step_cached, model, threshold, start, end),)


NODE_CLASS_MAPPINGS = {
    "OpenSoraModelLoader": OpenSoraModelLoader,
    "OpenSoraVAELoader": OpenSoraVAELoader,
    "OpenSoraTextEncoderLoader": OpenSoraTextEncoderLoader,
    "OpenSoraCompileModel": OpenSoraCompileModel,
    "OpenSoraStepCache": OpenSoraStepCache,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OpenSoraModelLoader": "OpenSora Model Loader",
    "OpenSoraVAELoader": "OpenSora VAE Loader",
    "OpenSoraTextEncoderLoader": "OpenSora Text Encoder Loader (T5)",
    "OpenSoraCompileModel": "OpenSora Compile Model",
    "OpenSoraStepCache": "OpenSora Step Cache",
}
