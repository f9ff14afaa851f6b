"""Node classes, grouped by role. Each module exports NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS.

Class names are a public API (saved workflows refer to them): never rename one. All carry the
`OpenSora` prefix so none clashes with a ComfyUI core node (ComfyUI drops clashing custom classes).
"""
from . import loaders, sampling, text, vae, video

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (loaders, text, sampling, vae, video):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
