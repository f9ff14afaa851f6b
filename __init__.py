"""ComfyUI-OpenSora: Open-Sora and CogVideoX video diffusion as ComfyUI nodes.

ComfyUI imports this folder as a package and reads the three names below.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from . import comfy_adapter

comfy_adapter.register_model_folders()

WEB_DIRECTORY = "./web"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
