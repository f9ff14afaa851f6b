"""Make `comfyui_opensora` importable from a plain checkout, whatever the folder is called.

Scripts and tests outside the package (benchmarks/, workflows/build.py, tests/conftest.py) put the repository
root on sys.path, import this module and call ensure() before importing the pack. An installed pack
(`pip install -e .`) or one already imported (ComfyUI, `python -m comfyui_opensora`) is used as it is.
"""
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))


def ensure():
    if "comfyui_opensora" in sys.modules or importlib.util.find_spec("comfyui_opensora") is not None:
        return
    spec = importlib.util.spec_from_file_location("comfyui_opensora", os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfyui_opensora"] = module
    spec.loader.exec_module(module)
