import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Make `comfyui_opensora` importable from a plain checkout too (CI installs it with pip -e).
sys.path.insert(0, REPO_ROOT)
import _import_pack  # noqa: E402

sys.path.remove(REPO_ROOT)  # the root's folders (models/, nodes/, demo/) must not shadow other packages
_import_pack.ensure()

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
