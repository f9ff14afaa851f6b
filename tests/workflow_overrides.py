"""How the shipped workflows are shrunk to the tiny checkpoints (tests/test_workflows.py runs them through the
harness, tests/test_real_comfyui.py through the frontend and a ComfyUI server): the same overrides for both."""
import os

from comfyui_opensora.models.tiny import TINY_FILES, TINY_FILES_V1, TINY_FILES_V2

# Tiny sizes: 64x48 pixels, 17 frames (one temporal-VAE chunk = 5 latents), 2 steps.
OVERRIDES = {"model_name": os.path.basename(TINY_FILES["model"]), "vae_name": os.path.basename(TINY_FILES["vae"]),
             "text_encoder_name": os.path.basename(TINY_FILES["text_encoder"]), "resolution": "custom",
             "width": 64, "height": 48, "num_frames": 17, "steps": 2}


# CogVideoX workflows run once per variant they serve, on tiny diffusers-layout folders.
COGVIDEOX_VARIANTS = {"cogvideox_t2v.json": ["2b", "5b", "1.5"], "cogvideox_i2v.json": ["5b_i2v", "1.5_i2v"],
                      "cogvideox_v2v.json": ["5b"]}


# Open-Sora 1.0 / 1.1 workflows: their tiny STDiT / STDiT2 and the tiny SD VAE (v1.0's size is fixed: 17x64x64)
V1X = {"opensora_v1.0": {"model_name": os.path.basename(TINY_FILES_V1["model_v1.0"]), "height": 64},
       "opensora_v1.1": {"model_name": os.path.basename(TINY_FILES_V1["model_v1.1"])}}


# Open-Sora 2.0 workflows: the tiny MMDiT, Hunyuan VAE and CLIP; 9 frames (4k+1) at 64x48 (multiples of 16)
V2 = {"model_name": os.path.basename(TINY_FILES_V2["model_v2.0"]),
      "vae_name": os.path.basename(TINY_FILES_V2["vae_hunyuan"]), "num_frames": 9}


def prepare(prompt, env, name, variant=None):
    """Tiny models and sizes in an API prompt (changed in place and returned). With env None the video inputs
    stay as shipped (the pack's example inputs); otherwise they read env's clip / image by path."""
    # extension workflows carry 5 latents (17 frames) over: their clips need two chunks (34 frames)
    overrides = {**OVERRIDES, "num_frames": 34} if ("extend" in name or "long" in name) else OVERRIDES
    for prefix, extra in V1X.items():
        if name.startswith(prefix):
            overrides = {**OVERRIDES, **extra, "vae_name": os.path.basename(TINY_FILES_V1["vae_sd"])}
    if name.startswith("opensora_v2.0"):
        overrides = {**OVERRIDES, **V2}
    if variant:  # CogVideoX: 64x64 (multiple of 16), 17 frames (8k+1 for 1.5), its pipeline folder
        overrides = {**OVERRIDES, "model_name": f"cog_{variant}", "vae_name": f"cog_{variant}", "width": 64,
                     "height": 64}
    for node in prompt.values():
        inputs = node["inputs"]
        if inputs.get("text_encoder_name") == "clip_l.safetensors":  # 2.0's second text encoder
            inputs["text_encoder_name"] = os.path.basename(TINY_FILES_V2["clip"])
            continue
        if inputs.get("model_name") == "flux1-dev.safetensors":  # 2.0's t2i2v image model and its autoencoder
            inputs["model_name"] = os.path.basename(TINY_FILES_V2["model_flux"])
            continue
        if inputs.get("vae_name") == "flux1-dev-ae.safetensors":
            inputs["vae_name"] = os.path.basename(TINY_FILES_V2["vae_flux"])
            continue
        for k, v in overrides.items():
            if k == "num_frames" and inputs.get(k) == 1:  # an image latent stays an image
                continue
            if k in inputs and not isinstance(inputs[k], list):
                # the video converter keeps its own size: only model nodes get the tiny latent size
                if k in ("width", "height") and node["class_type"] == "OpenSoraLoadVideo":
                    continue
                inputs[k] = v
        if node["class_type"] == "OpenSoraLoadVideo":
            images = "i2v" in name or name.startswith(("opensora_v2.0_first_last", "opensora_v2.0_loop"))
            if env is not None:
                inputs["path"] = env["image"] if images else env["clip"]
                if "i2v" in name and variant:
                    inputs["path"] = env["image64"]
            if "opensora" in name:
                inputs.update(resize="crop to size", width=64, height=48)
            if variant:
                inputs.update(resize="crop to size", width=64, height=64, frame_cap=17)
    return prompt




def expected_frames(name, input_frames=34):
    """Frames of the tiny run's video, for an input video of input_frames (video_convert passes it through, the
    extension joins 17 new frames to it)."""
    if name.startswith("opensora_v2.0"):
        return 9
    return {"video_convert.json": input_frames, "opensora_v1.2_extend.json": input_frames + (34 - 17),
            "opensora_v1.2_long_video.json": 34 + 2 * (34 - 17)}.get(name, 17)


def expected_size(name, variant=None):
    """(height, width) of the tiny run's video, or None where the workflow keeps its input's size."""
    if variant:
        return (64, 64)
    if name.startswith("opensora"):
        return (64, 64) if name.startswith("opensora_v1.0") else (48, 64)
    return None
