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
from comfyui_opensora.models.tiny import write_tiny_cogvideox, write_tiny_models
from conftest import REPO_ROOT
from workflow_overrides import COGVIDEOX_VARIANTS, expected_frames, expected_size, prepare

# The demo workflows run on the bundled demo model itself, with their behaviour checked (tests/test_demo.py).
WORKFLOWS = sorted(p for p in glob.glob(os.path.join(REPO_ROOT, "workflows", "*.json"))
                   if not os.path.basename(p).startswith("demo_"))
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


@pytest.mark.parametrize("path,variant", CASES, ids=[os.path.basename(p) + (f"-{v}" if v else "") for p, v in CASES])
def test_shipped_workflow_runs(path, variant, env):
    pack = pack_mod.load_pack()
    defs = pack_mod.node_definitions(pack)
    workflow = json.load(open(path))
    assert workflow.get("version") == 0.4 and workflow["nodes"], "shipped workflows are UI format"
    prompt, ui = load_prompt(workflow, defs)
    name = os.path.basename(path)
    prompt = prepare(prompt, env, name, variant)
    result = validate_prompt(prompt, defs, pack.classes)
    assert result["http_status"] == 200 and not result["response"]["node_errors"], format_report(result)
    out = Executor(pack.classes).run(result["validated_prompt"], extra_data={"extra_pnginfo": {"workflow": ui}})
    saved = [os.path.join(comfy_adapter.output_directory(), i["subfolder"], i["filename"])
             for ui_out in out["outputs"].values() for i in ui_out.get("images", [])]
    assert len(saved) == 1 and os.path.exists(saved[0])
    video = video_io.read_video(saved[0])
    assert video.frames.shape[0] == expected_frames(name)
    if expected_size(name, variant):
        assert video.frames.shape[1:3] == expected_size(name, variant)
    assert video_io.read_metadata(saved[0])["workflow"]["nodes"], "the UI workflow is embedded"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO_ROOT, "workflows", "*.json"))),
                         ids=lambda p: os.path.basename(p))
def test_shipped_inputs_exist_without_any_user_file(path, tmp_path):
    """A workflow opened as shipped finds its input video or image: the pack's example inputs (or, for the demo
    workflows, a path inside the pack), even with an empty input folder."""
    from comfyui_opensora.nodes.video import OpenSoraLoadVideo

    comfy_adapter.configure(input_dir=str(tmp_path))
    try:
        pack = pack_mod.load_pack()
        prompt, _ = load_prompt(json.load(open(path)), pack_mod.node_definitions(pack))
        loads = [n["inputs"] for n in prompt.values() if n["class_type"] == "OpenSoraLoadVideo"]
        for inputs in loads:
            assert inputs["video"] in OpenSoraLoadVideo.INPUT_TYPES()["required"]["video"][0]
            assert OpenSoraLoadVideo.VALIDATE_INPUTS(inputs["video"], inputs.get("path", "")) is True
            frames = OpenSoraLoadVideo().load(**inputs)[0]
            assert frames.shape[0] >= 1 and frames.shape[-1] == 3
    finally:
        comfy_adapter._settings.update(input_dir=None)
