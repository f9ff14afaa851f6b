"""The pack's plumbing: loading as ComfyUI does, node metadata conventions, devices, output paths."""
import importlib.util
import os
import shutil
import sys

import pytest
import torch

from conftest import REPO_ROOT

from comfyui_opensora import comfy_adapter
from comfyui_opensora.harness import pack as pack_mod
from comfyui_opensora.models import devices

# Names ComfyUI core registers (both recorded versions): a custom class of the same name would be dropped.
def _core_names(comfy_frontend_dir):
    import json

    names = set()
    for ver in ("0.3.64", "0.8.0"):
        with open(os.path.join(comfy_frontend_dir, f"object_info_{ver}.json")) as f:
            names |= set(json.load(f))
    return names


def test_pack_loads_like_comfyui(tmp_path):
    """ComfyUI imports the folder under its own name with relative imports: do exactly that on a copy."""
    dst = tmp_path / "ComfyUI-OpenSora"
    shutil.copytree(REPO_ROOT, dst, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "output",
                                                                   "models_tiny"))
    name = str(dst).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, dst / "__init__.py", submodule_search_locations=[str(dst)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        assert set(module.NODE_CLASS_MAPPINGS) == set(pack_mod.load_pack().classes)
        assert module.WEB_DIRECTORY == "./web"
        assert os.path.isdir(dst / "web")
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]


def test_node_conventions(comfy_frontend_dir):
    pack = pack_mod.load_pack()
    core = _core_names(comfy_frontend_dir)
    assert pack.classes, "the pack registers no node"
    for name, cls in pack.classes.items():
        assert name not in core, f"{name} clashes with a ComfyUI core node and would be dropped"
        assert name.startswith("OpenSora"), name
        info = pack.object_info[name]
        assert info["category"].startswith("OpenSora"), name
        assert isinstance(info["description"], str) and info["description"], f"{name} has no DESCRIPTION"
        assert hasattr(cls, cls.FUNCTION), f"{name}.{cls.FUNCTION} missing"
        for section in ("required", "optional"):
            for inp, spec in info["input"].get(section, {}).items():
                opts = spec[1] if len(spec) > 1 else {}
                assert isinstance(opts.get("tooltip"), str) and opts["tooltip"], f"{name}.{inp} has no tooltip"
                if spec[0] in ("INT", "FLOAT"):
                    for key in ("default", "min", "max"):
                        assert key in opts, f"{name}.{inp} lacks an explicit {key}"
        tips = info.get("output_tooltips", [])
        assert len(tips) == len(info["output"]) and all(isinstance(t, str) for t in tips), name
        assert len(info["output_name"]) == len(info["output"]), name
        # The frontend refuses a definition whose display fields are not plain strings.
        assert isinstance(info["display_name"], str) and isinstance(info["category"], str)


def test_device_policy():
    cpu = torch.device("cpu")
    assert devices.check_dtype("fp32", cpu) is torch.float32
    assert devices.check_dtype("bf16", cpu) is torch.bfloat16
    with pytest.raises(devices.DeviceError, match="fp16 does not run on the CPU"):
        devices.check_dtype("fp16", cpu)
    with pytest.raises(devices.DeviceError, match="unknown dtype"):
        devices.check_dtype("fp64", cpu)
    assert devices.resolve_dtype("auto", cpu) is torch.float32
    if not torch.cuda.is_available():
        with pytest.raises(devices.DeviceError, match="no CUDA GPU"):
            devices.get_device("cuda")
        assert devices.get_device("auto").type == "cpu"


def test_save_path_counter_and_subfolder(tmp_path):
    folder, name, counter, sub = comfy_adapter.get_save_path("clips/run", str(tmp_path))
    assert (folder, name, counter, sub) == (str(tmp_path / "clips"), "run", 1, "clips")
    (tmp_path / "clips" / "run_00001_.mp4").write_bytes(b"x")
    (tmp_path / "clips" / "run_00007_.png").write_bytes(b"x")
    assert comfy_adapter.get_save_path("clips/run", str(tmp_path))[2] == 8
    with pytest.raises(ValueError, match="outside the output folder"):
        comfy_adapter.get_save_path("../escape", str(tmp_path))


def test_model_folders(tmp_path):
    comfy_adapter.configure(models_dir=str(tmp_path))
    bundled = comfy_adapter.list_models("diffusion_models")  # the demo model shipped in the pack
    try:
        (tmp_path / "diffusion_models" / "sub").mkdir(parents=True)
        (tmp_path / "unet").mkdir()
        (tmp_path / "diffusion_models" / "sub" / "a.safetensors").write_bytes(b"")
        (tmp_path / "unet" / "b.pth").write_bytes(b"")
        (tmp_path / "unet" / "notes.txt").write_bytes(b"")
        (tmp_path / "opensora" / "t5").mkdir(parents=True)
        (tmp_path / "opensora" / "t5" / "config.json").write_text("{}")
        (tmp_path / "opensora" / "tok").mkdir()
        (tmp_path / "opensora" / "tok" / "spiece.model").write_bytes(b"")
        listed = comfy_adapter.list_models("diffusion_models")
        assert [m for m in listed if m not in bundled] == ["b.pth", "sub/a.safetensors"]
        assert comfy_adapter.list_models("opensora", dirs=True) == ["t5"]
        assert comfy_adapter.list_models("opensora", dirs=True, markers=comfy_adapter.TOKENIZER_DIR_MARKERS) == ["tok"]
        assert comfy_adapter.model_path("diffusion_models", "b.pth") == str(tmp_path / "unet" / "b.pth")
        assert comfy_adapter.model_path("vae", "missing.safetensors") is None
    finally:
        comfy_adapter._settings["models_dir"] = None


def test_progress_hook_and_cancel():
    seen = []
    comfy_adapter.set_progress_hook(lambda node, value, total: seen.append((node, value, total)))
    try:
        bar = comfy_adapter.Progress(3, node_id="7")
        bar.update()
        bar.update(2)
        assert seen == [("7", 1, 3), ("7", 3, 3)]
        comfy_adapter.request_cancel()
        with pytest.raises(comfy_adapter.Interrupted):
            bar.update()
    finally:
        comfy_adapter.clear_cancel()
        comfy_adapter.set_progress_hook(None)
