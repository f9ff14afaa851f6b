"""Node classes, grouped by role. Each module exports NODE_CLASS_MAPPINGS / NODE_DISPLAY_NAME_MAPPINGS.

Class names are a public API (saved workflows refer to them): never rename one. All carry the
`OpenSora` prefix so none clashes with a ComfyUI core node (ComfyUI drops clashing custom classes).
"""
from . import video

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (video,):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
