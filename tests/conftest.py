import importlib.util
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Make `comfyui_opensora` importable from a plain checkout too (CI installs it with pip -e).
if importlib.util.find_spec("comfyui_opensora") is None:
    spec = importlib.util.spec_from_file_location(
        "comfyui_opensora", os.path.join(REPO_ROOT, "__init__.py"), submodule_search_locations=[REPO_ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_opensora"] = module
    spec.loader.exec_module(module)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def golden_root() -> str:
    return os.environ.get("OPENSORA_GOLDEN_DIR") or os.path.join(REPO_ROOT, "..", "shared", "golden")


@pytest.fixture
def golden_dir():
    root = golden_root()
    if not os.path.isdir(root):
        pytest.fail(f"golden data not found at {root}: set OPENSORA_GOLDEN_DIR")
    return root


@pytest.fixture
def comfy_frontend_dir(golden_dir):
    return os.path.join(golden_dir, "comfy_frontend")
