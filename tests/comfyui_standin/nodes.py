"""The node registry and custom-node loading, as ComfyUI does it: each folder in custom_nodes/ is imported from
its __init__.py under a module name made from its path ('.' -> '_x_'), its NODE_CLASS_MAPPINGS merged into the
registry, and its WEB_DIRECTORY served at /extensions/<folder name>/."""
import importlib.util
import logging
import os
import sys
import time
import traceback

import comfy.model_management
import folder_paths

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
EXTENSION_WEB_DIRS = {}
LOADED_MODULE_DIRS = {}
FAILED_MODULES = {}


def load_core_nodes(object_info_file):
    """ComfyUI's core nodes as 0.3.64 describes them in /object_info (a recorded answer): the frontend builds on
    their definitions (its model-to-node map names core loaders), so they must be there. They cannot execute."""
    import json

    with open(object_info_file) as f:
        recorded = json.load(f)
    for name, info in recorded.items():
        def unavailable(self, *args, _name=name, **kwargs):
            raise RuntimeError(f"{_name} is a core node of ComfyUI; the test stand-in only describes it")

        NODE_CLASS_MAPPINGS[name] = type(name, (), {
            "INPUT_TYPES": classmethod(lambda cls, _spec=info["input"]: _spec),
            "RETURN_TYPES": tuple(info["output"]), "RETURN_NAMES": tuple(info["output_name"]),
            "OUTPUT_IS_LIST": tuple(info["output_is_list"]), "OUTPUT_NODE": info["output_node"],
            "CATEGORY": info["category"], "DESCRIPTION": info.get("description", ""),
            "RELATIVE_PYTHON_MODULE": info["python_module"], "FUNCTION": "run", "run": unavailable,
            **({"OUTPUT_TOOLTIPS": info["output_tooltips"]} if "output_tooltips" in info else {}),
            **({"DEPRECATED": True} if info.get("deprecated") else {}),
            **({"EXPERIMENTAL": True} if info.get("experimental") else {})})
        if info.get("display_name"):
            NODE_DISPLAY_NAME_MAPPINGS[name] = info["display_name"]


def interrupt_processing(value=True):
    comfy.model_management.interrupt_current_processing(value)


def load_custom_node(module_path):
    module_name = os.path.splitext(os.path.basename(module_path))[0]
    if os.path.isfile(module_path):
        sys_module_name, init_file, module_dir = module_name, module_path, os.path.dirname(module_path)
    else:
        sys_module_name, init_file, module_dir = module_path.replace(".", "_x_"), \
            os.path.join(module_path, "__init__.py"), module_path
    try:
        spec = importlib.util.spec_from_file_location(sys_module_name, init_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[sys_module_name] = module
        spec.loader.exec_module(module)
        LOADED_MODULE_DIRS[module_name] = os.path.abspath(module_dir)
        web = getattr(module, "WEB_DIRECTORY", None)
        if web is not None:
            web_dir = os.path.abspath(os.path.join(module_dir, web))
            if os.path.isdir(web_dir):
                EXTENSION_WEB_DIRS[module_name] = web_dir
        mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
        if mappings is None:
            logging.warning(f"Skip {module_path} module for custom nodes due to the lack of NODE_CLASS_MAPPINGS.")
            return False
        for name, cls in mappings.items():
            if name not in NODE_CLASS_MAPPINGS:
                cls.RELATIVE_PYTHON_MODULE = f"custom_nodes.{module_name}"
                NODE_CLASS_MAPPINGS[name] = cls
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}) or {})
        return True
    except Exception:
        FAILED_MODULES[module_name] = traceback.format_exc()
        logging.warning(traceback.format_exc())
        logging.warning(f"Cannot import {module_path} module for custom nodes")
        return False


def init_extra_nodes():
    for root in folder_paths.get_folder_paths("custom_nodes"):
        if not os.path.isdir(root):
            continue
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            if entry.startswith(".") or entry == "__pycache__" or (os.path.isfile(path) and not entry.endswith(".py")):
                continue
            start = time.perf_counter()
            ok = load_custom_node(path)
            logging.info(f"{time.perf_counter() - start:6.1f} seconds{'' if ok else ' (IMPORT FAILED)'}: {path}")
