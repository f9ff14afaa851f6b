"""Load the pack the way ComfyUI does, and describe its nodes as ComfyUI's /object_info does."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass

PACK_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Pack:
    module: object
    classes: dict                     # class_type -> node class
    display_names: dict

    @property
    def object_info(self) -> dict:
        """class_type -> /object_info entry, rebuilt on every call as ComfyUI does (model lists change)."""
        return {name: node_info(name, cls, self.display_names.get(name), self.module.__name__)
                for name, cls in self.classes.items()}


_loaded: dict[str, Pack] = {}


def load_pack(path: str = PACK_ROOT) -> Pack:
    """Import the folder's __init__.py as a package, as ComfyUI's load_custom_node does, and read
    NODE_CLASS_MAPPINGS. Loaded once per folder and process."""
    path = os.path.abspath(path)
    if path in _loaded:
        return _loaded[path]
    if path == PACK_ROOT and __package__ and __package__.rsplit(".", 1)[0] in sys.modules:
        # Already imported (python -m comfyui_opensora, or ComfyUI itself): reuse, never import twice.
        module = sys.modules[__package__.rsplit(".", 1)[0]]
    else:
        name = path.replace(".", "_x_")
        spec = importlib.util.spec_from_file_location(name, os.path.join(path, "__init__.py"),
                                                      submodule_search_locations=[path])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    classes = dict(module.NODE_CLASS_MAPPINGS)
    display = dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    pack = Pack(module, classes, display)
    _loaded[path] = pack
    return pack


def node_info(name: str, cls, display_name: str | None = None, python_module: str = "custom_nodes") -> dict:
    """The /object_info entry ComfyUI's server builds for a V1 class (server.py node_info)."""
    inputs = cls.INPUT_TYPES()
    info = {
        "input": inputs,
        "input_order": {cat: list(vals) for cat, vals in inputs.items()},
        "output": list(cls.RETURN_TYPES),
        "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))),
        "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
        "name": name,
        "display_name": display_name or name,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": python_module,
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = list(cls.OUTPUT_TOOLTIPS)
    # JSON round trip: what a client of /object_info sees (tuples become lists).
    return json.loads(json.dumps(info, default=str))


def load_object_info(path: str | None) -> dict:
    """Node definitions from an /object_info JSON file (ComfyUI core nodes), or {}."""
    if not path:
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def node_definitions(pack: Pack, object_info_file: str | None = None) -> dict:
    """Every known node type: core ones from the file, the pack's own always (they win)."""
    defs = load_object_info(object_info_file)
    defs.update(pack.object_info)
    return defs
