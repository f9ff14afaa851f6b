"""torch.compile of a transformer's blocks, one block at a time (the items of its top-level ModuleLists, as
offload.repeated_blocks finds them): block streaming, fp8 storage and LoRA hooks keep working per block, state
dict keys do not change, and identical blocks share one compiled graph instead of one giant graph per model.

Settings are per model (OpenSora Compile Model); the sampler applies them before it runs the model. Compiling
happens lazily at the first step of the first run at a size; later steps and runs at that size reuse it.
"""
from __future__ import annotations

from torch import nn

from .offload import repeated_blocks

MODES = ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


def apply(net: nn.Module, settings: dict | None):
    """Compile net's blocks with settings {"mode", "dynamic"}, or back to eager for None; no-op when they are."""
    if getattr(net, "_opensora_compile", None) == settings:
        return
    for block in repeated_blocks(net):
        if settings:
            block.compile(mode=settings["mode"], dynamic=settings["dynamic"])
        else:
            block._compiled_call_impl = None  # what nn.Module.compile set: eager again
    net._opensora_compile = settings
