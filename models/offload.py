"""Where a model's weights live while it runs.

- "none": on the compute device throughout (fastest, most VRAM);
- "model": moved to the device for sampling and back to the offload device after (ComfyUI's usual way);
- "sequential": weights stay on the offload device and each transformer block visits the device only for its
  own forward pass (diffusers' sequential CPU offload): VRAM holds one block plus activations.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

OFFLOAD_MODES = ["model", "none", "sequential"]


def _blocks(net: nn.Module):
    """The repeated blocks: items of the model's top-level ModuleLists."""
    for child in net.children():
        if isinstance(child, nn.ModuleList):
            yield from child


@contextlib.contextmanager
def on_device(net: nn.Module, mode: str, device, offload_device):
    """Run `net` on `device` under an offload mode; afterwards the weights are where the mode keeps them."""
    device, offload_device = torch.device(device), torch.device(offload_device)
    if mode != "sequential" or device == offload_device:
        net.to(device)
        try:
            yield net
        finally:
            if mode == "model" and device != offload_device:
                net.to(offload_device)
        return
    blocks = list(_blocks(net))
    block_ids = {id(p) for b in blocks for p in b.parameters()}
    for p in net.parameters():  # everything but the blocks is small: keep it on the device
        if id(p) not in block_ids:
            p.data = p.data.to(device)
    for name, buf in net.named_buffers():
        if not any(buf is b2 for blk in blocks for b2 in blk.buffers()):
            mod = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
            setattr(mod, name.rsplit(".", 1)[-1], buf.to(device))
    def arrive(module, args):
        module.to(device)  # (a hook returning a value would replace the block's inputs / outputs)

    def leave(module, args, output):
        module.to(offload_device)

    hooks = []
    for blk in blocks:
        hooks.append(blk.register_forward_pre_hook(arrive))
        hooks.append(blk.register_forward_hook(leave))
    try:
        yield net
    finally:
        for h in hooks:
            h.remove()
        net.to(offload_device)
