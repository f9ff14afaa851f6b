"""Every shipped workflow runs through the harness (UI JSON -> convert -> validate -> execute) on tiny
checkpoints written in the released key layouts, and produces a readable video of the expected length."""
import glob
import json
import os

import pytest
import torch

from comfyui_opensora import comfy_adapter, video_io
from comfyui_opensora.harness import pack as pack_mod
from comfyui_opensora.harness.convert import load_prompt
from comfyui_opensora.harness.execute import Executor
from comfyui_opensora.harness.validate import format_report, validate_prompt
from comfyui_opensora.models.tiny import (TINY_FILES, TINY_FILES_V1, TINY_FILES_V2, write_tiny_cogvideox,
                                          write_tiny_models)
from conftest import REPO_ROOT

# The demo workflows run on the bundled demo model itself, with their behaviour checked (tests/test_demo.py).
WORKFLOWS = sorted(p for p in glob.glob(os.path.join(REPO_ROOT, "workflows", "*.json"))
                   if not os.path.basename(p).startswith("demo_"))
# Tiny sizes: 64x48 pixels, 17 frames (one temporal-VAE chunk = 5 latents), 2 steps.
OVERRIDES = {"model_name": os.path.basename(TINY_FILES["model"]), "vae_name": os.path.basename(TINY_FILES["vae"]),
             "text_encoder_name": os.path.basename(TINY_FILES["text_encoder"]), "resolution": "custom",
             "width": 64, "height": 48, "num_frames": 17, "steps": 2}


# CogVideoX workflows run once per variant they serve, on tiny diffusers-layout folders.
COGVIDEOX_VARIANTS = {"cogvideox_t2v.json": ["2b", "5b", "1.5"], "cogvideox_i2v.json": ["5b_i2v", "1.5_i2v"],
                      "cogvideox_v2v.json": ["5b"]}
CASES = [(p, v) for p in WORKFLOWS for v in COGVIDEOX_VARIANTS.get(os.path.basename(p), [None])]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("wf")
    write_tiny_models(str(root / "models"))
    for variants in COGVIDEOX_VARIANTS.values():
        for v in variants:
            write_tiny_cogvideox(str(root / "models" / "opensora" / f"cog_{v}"), v)
    clip = root / "clip.mp4"
    frames = torch.rand(34, 48, 64, 3)
    video_io.write_video(str(clip), frames, 24.0)
    image = root / "image.png"
    video_io.write_video(str(root / "img_dir"), frames[:1], 24.0, "png (frames)")
    os.replace(root / "img_dir" / "frame_00000.png", image)
    video_io.write_video(str(root / "img64_dir"), torch.rand(1, 64, 64, 3), 24.0, "png (frames)")
    os.replace(root / "img64_dir" / "frame_00000.png", root / "image64.png")
    comfy_adapter.configure(models_dir=str(root / "models"), output_dir=str(root / "out"), input_dir=str(root))
    yield {"root": root, "clip": str(clip), "image": str(image), "image64": str(root / "image64.png")}
    comfy_adapter._settings.update(models_dir=None, output_dir=None, input_dir=None)


# Open-Sora 1.0 / 1.1 workflows: their tiny STDiT / STDiT2 and the tiny SD VAE (v1.0's size is fixed: 17x64x64)
V1X = {"opensora_v1.0": {"model_name": os.path.basename(TINY_FILES_V1["model_v1.0"]), "height": 64},
       "opensora_v1.1": {"model_name": os.path.basename(TINY_FILES_V1["model_v1.1"])}}


# Open-Sora 2.0 workflows: the tiny MMDiT, Hunyuan VAE and CLIP; 9 frames (4k+1) at 64x48 (multiples of 16)
V2 = {"model_name": os.path.basename(TINY_FILES_V2["model_v2.0"]),
      "vae_name": os.path.basename(TINY_FILES_V2["vae_hunyuan"]), "num_frames": 9}


def _prepare(prompt, env, name, variant=None):
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
            inputs["path"] = env["image"] if images else env["clip"]
            if "i2v" in name and variant:
                inputs["path"] = env["image64"]
            if "opensora" in name:
                inputs.update(resize="crop to size", width=64, height=48)
            if variant:
                inputs.update(resize="crop to size", width=64, height=64, frame_cap=17)
    return prompt


@pytest.mark.parametrize("path,variant", CASES, ids=[os.path.basename(p) + (f"-{v}" if v else "") for p, v in CASES])
def test_shipped_workflow_runs(path, variant, env):
    pack = pack_mod.load_pack()
    defs = pack_mod.node_definitions(pack)
    workflow = json.load(open(path))
    assert workflow.get("version") == 0.4 and workflow["nodes"], "shipped workflows are UI format"
    prompt, ui = load_prompt(workflow, defs)
    name = os.path.basename(path)
    prompt = _prepare(prompt, env, name, variant)
    result = validate_prompt(prompt, defs, pack.classes)
    assert result["http_status"] == 200 and not result["response"]["node_errors"], format_report(result)
    out = Executor(pack.classes).run(result["validated_prompt"], extra_data={"extra_pnginfo": {"workflow": ui}})
    saved = [os.path.join(comfy_adapter.output_directory(), i["subfolder"], i["filename"])
             for ui_out in out["outputs"].values() for i in ui_out.get("images", [])]
    assert len(saved) == 1 and os.path.exists(saved[0])
    video = video_io.read_video(saved[0])
    expected = {"video_convert.json": 34, "opensora_v1.2_extend.json": 34 + (34 - 17),
                "opensora_v1.2_long_video.json": 34 + 2 * (34 - 17)}.get(name, 17)
    if name.startswith("opensora_v2.0"):
        expected = 9
    assert video.frames.shape[0] == expected
    if name.startswith("opensora"):
        assert video.frames.shape[1:3] == ((64, 64) if name.startswith("opensora_v1.0") else (48, 64))
    if variant:
        assert video.frames.shape[1:3] == (64, 64)
    assert video_io.read_metadata(saved[0])["workflow"]["nodes"], "the UI workflow is embedded"
