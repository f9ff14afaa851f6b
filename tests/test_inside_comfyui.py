"""The pack inside ComfyUI: with ComfyUI's modules importable, the adapter forwards to them (folders,
ProgressBar, model_management). ComfyUI itself is not installable here, so its helpers are stood in by small
fakes with the same signatures; the pack is imported under a fresh name, as ComfyUI imports it."""
import importlib.util
import shutil
import sys
import types

import torch

from conftest import REPO_ROOT


def _fake_comfy(tmp_path, calls):
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(tmp_path / "models")
    folder_paths.folder_names_and_paths = {"diffusion_models": ([str(tmp_path / "models" / "unet")], set())}
    folder_paths.add_model_folder_path = lambda name, path, is_default=False: calls.append(("add", name, path))
    folder_paths.get_folder_paths = lambda name: folder_paths.folder_names_and_paths[name][0]
    folder_paths.get_output_directory = lambda: str(tmp_path / "comfy_out")
    folder_paths.get_input_directory = lambda: str(tmp_path / "comfy_in")
    folder_paths.get_temp_directory = lambda: str(tmp_path / "comfy_tmp")
    folder_paths.get_save_image_path = lambda prefix, out: (out, prefix, 7, "", prefix)

    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.soft_empty_cache = lambda: calls.append(("empty",))

    class InterruptProcessingException(Exception):
        pass

    mm.InterruptProcessingException = InterruptProcessingException
    mm.throw_exception_if_processing_interrupted = lambda: calls.append(("check",))
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        def __init__(self, total):
            calls.append(("bar", total))

        def update_absolute(self, value, total=None, preview=None):
            calls.append(("progress", value, total))

    utils.ProgressBar = ProgressBar
    # ComfyUI 0.3.6x: comfy/ has no __init__.py, a namespace package without __file__
    comfy = types.ModuleType("comfy")
    comfy.__path__ = [str(tmp_path / "comfy")]
    comfy.model_management, comfy.utils = mm, utils
    return {"folder_paths": folder_paths, "comfy": comfy, "comfy.model_management": mm, "comfy.utils": utils}


def test_adapter_forwards_to_comfyui(tmp_path, monkeypatch):
    calls = []
    for name, module in _fake_comfy(tmp_path, calls).items():
        monkeypatch.setitem(sys.modules, name, module)
    dst = tmp_path / "custom_nodes" / "ComfyUI-OpenSora"
    shutil.copytree(REPO_ROOT, dst, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", "output"))
    modname = str(dst).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(modname, dst / "__init__.py", submodule_search_locations=[str(dst)])
    pack = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, modname, pack)
    try:
        spec.loader.exec_module(pack)
        adapter = sys.modules[modname + ".comfy_adapter"]
        assert adapter.IN_COMFY
        assert ("add", "opensora", str(tmp_path / "models" / "opensora")) in calls  # the pack's model folder
        assert adapter.output_directory() == str(tmp_path / "comfy_out")
        assert adapter.get_save_path("x/y") == (str(tmp_path / "comfy_out"), "x/y", 7, "")
        bar = adapter.Progress(3)
        bar.update()
        assert ("bar", 3) in calls and ("progress", 1, 3) in calls and calls[-1] == ("check",)
        assert adapter.torch_device() == torch.device("cpu")
        (tmp_path / "models" / "unet").mkdir(parents=True)
        (tmp_path / "models" / "unet" / "m.safetensors").write_bytes(b"")
        assert adapter.list_models("diffusion_models") == ["m.safetensors"]
        assert "m.safetensors" in pack.NODE_CLASS_MAPPINGS["OpenSoraModelLoader"].INPUT_TYPES()["required"]["model_name"][0]
        # ComfyUI's bundled tokenizers are found through comfy.__path__; a missing one is no error
        assert getattr(sys.modules["comfy"], "__file__", None) is None
        t5 = tmp_path / "comfy" / "text_encoders" / "t5_tokenizer"
        t5.mkdir(parents=True)
        assert adapter.bundled_tokenizer_dirs() == [str(t5)]
        assert adapter.bundled_tokenizer_dirs("sd1_tokenizer") == []
        # the example inputs of the shipped workflows were copied into ComfyUI's input folder on import
        for name, source in adapter.EXAMPLE_INPUTS.items():
            assert (tmp_path / "comfy_in" / name).read_bytes() == (dst / "demo" / "examples" / source).read_bytes()
    finally:
        for key in [k for k in sys.modules if k == modname or k.startswith(modname + ".")]:
            del sys.modules[key]
