"""Where a model's weights live while it runs.

- "none": on the compute device throughout (fastest, most VRAM);
- "model": moved to the device for sampling and back to the offload device after (ComfyUI's usual way);
- "sequential": weights stay on the offload device and each transformer block visits the device only for its
  own forward pass (diffusers' sequential CPU offload): VRAM holds one block plus activations.
- "sequential_prefetch": "sequential" with the next block's copy overlapped with the current block's compute
  (`BlockPrefetcher`). On CUDA the block weights are pinned in host memory once, each block is copied on a side
  stream while the block before it runs, and a block's device copy is simply dropped after its forward (the host
  copy is still the same weights, so nothing is copied back). VRAM holds two to three blocks plus activations;
  host memory holds the block weights page-locked for as long as the model is loaded.

Where the compute device is the offload device (CPU-only machines) every mode is the same: the model just runs
there. The sequential modes' hook paths can still be exercised on CPU by naming the devices differently
(torch.device("cpu") vs torch.device("cpu", 0)): the bookkeeping is real, the copies stay in host memory (the
prefetcher's are no-ops; "sequential"'s move back to "cpu:0" is a memcpy).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

# Saved workflows store the mode's name, and the node lists them in this order: new modes go at the end.
OFFLOAD_MODES = ["model", "none", "sequential", "sequential_prefetch"]
SEQUENTIAL_MODES = ("sequential", "sequential_prefetch")


def repeated_blocks(net: nn.Module):
    """The repeated blocks: items of the model's top-level ModuleLists."""
    for child in net.children():
        if isinstance(child, nn.ModuleList):
            yield from child


_blocks = repeated_blocks


@contextlib.contextmanager
def on_device(net: nn.Module, mode: str, device, offload_device):
    """Run `net` on `device` under an offload mode; afterwards the weights are where the mode keeps them."""
    device, offload_device = torch.device(device), torch.device(offload_device)
    if mode not in SEQUENTIAL_MODES or device == offload_device:
        net.to(device)
        try:
            yield net
        finally:
            if mode == "model" and device != offload_device:
                net.to(offload_device)
        return
    blocks = list(repeated_blocks(net))
    block_ids = {id(p) for b in blocks for p in b.parameters()}
    for p in net.parameters():  # everything but the blocks is small: keep it on the device
        if id(p) not in block_ids:
            p.data = p.data.to(device)
    for name, buf in net.named_buffers():
        if not any(buf is b2 for blk in blocks for b2 in blk.buffers()):
            mod = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
            setattr(mod, name.rsplit(".", 1)[-1], buf.to(device))

    prefetcher = None
    if mode == "sequential_prefetch":
        prefetcher = BlockPrefetcher(blocks, device)
        hooks = prefetcher.attach()
    else:
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
        if prefetcher is not None:
            prefetcher.close()
        net.to(offload_device)


class BlockPrefetcher:
    """Sequential offload that keeps the next block's weights in flight while the current block computes.

    Each block has a *home* copy of its tensors (parameters and buffers, where the model keeps them: pinned host
    memory on CUDA) and, while it runs, a device copy swapped in through `.data` / `_buffers`. Weights are read
    only during inference, so leaving a block just swaps the home tensors back; the device copy is freed.

    Which block comes next is learned: the pre-hook records which block followed which, and the first pass
    falls back to the ModuleLists' order (right for the MMDiT and CogVideoX; STDiT3 interleaves two lists, so
    its first pass misses and later ones hit). A wrong guess costs one synchronous copy (`misses`), never a
    wrong result. After the last block the first one is fetched, so it arrives during the sampler's arithmetic
    between steps.

    CUDA synchronisation:
    - copies are queued on `self.stream` from pinned memory with non_blocking=True, so the host returns at once
      and the copy engine works alongside the compute stream;
    - before a block runs, the compute stream waits for the copy stream (wait_stream): its kernels cannot read a
      weight that has not landed. Only copies queued so far are waited for; the next prefetch is queued after;
    - the device copies were allocated on the copy stream but are read on the compute stream; record_stream
      tells the caching allocator so, and it will not hand their memory to a later copy until the kernels that
      read them have finished (without it a prefetch could overwrite a weight still being read).
    Without CUDA (the CPU-vs-"cpu:0" tests, or another device type) the same bookkeeping runs with plain,
    synchronous copies.
    """

    def __init__(self, blocks, device, pin: bool | None = None):
        self.blocks = list(blocks)
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.stream = torch.cuda.Stream(device=self.device) if self.cuda else None
        # (owner module, "p" or "b", attribute name) per tensor of each block, and the home tensors
        self.slots = {blk: _tensor_slots(blk) for blk in self.blocks}
        if self.cuda if pin is None else pin:
            self._pin_home()
        self.home = {blk: [_get(*slot) for slot in self.slots[blk]] for blk in self.blocks}
        self.guess_next = dict(zip(self.blocks, self.blocks[1:] + self.blocks[:1]))
        self.learned_next: dict[nn.Module, nn.Module] = {}
        self.pending: dict[nn.Module, list[torch.Tensor]] = {}  # block -> device copies, possibly still in flight
        self.installed: set[nn.Module] = set()
        self.last = None
        self.hits = self.misses = 0

    def _pin_home(self):
        """Page-lock the block weights that live on the CPU (once: they stay pinned after sampling). Copies from
        pageable memory are staged by the driver and block the host, which would defeat the overlap."""
        for blk in self.blocks:
            for slot in self.slots[blk]:
                t = _get(*slot)
                if t.device.type == "cpu" and not t.is_pinned():
                    try:
                        _set(*slot, t.pin_memory())
                    except RuntimeError:  # out of page-locked memory: the copies still work, only synchronously
                        return

    def next_of(self, blk):
        return self.learned_next.get(blk, self.guess_next.get(blk))

    def attach(self) -> list:
        """Register the hooks on every block; returns the handles. Starts fetching the first block."""
        hooks = []
        for blk in self.blocks:
            hooks.append(blk.register_forward_pre_hook(lambda m, args: self.arrive(m)))
            hooks.append(blk.register_forward_hook(lambda m, args, out: self.leave(m)))
        if self.blocks:
            self.prefetch(self.blocks[0])
        return hooks

    def prefetch(self, blk):
        """Queue the copy of `blk`'s tensors to the device (on the side stream under CUDA)."""
        if blk is None or blk in self.pending or blk in self.installed:
            return
        if self.stream is not None:
            with torch.cuda.stream(self.stream):
                self.pending[blk] = [t.to(self.device, non_blocking=True) for t in self.home[blk]]
        else:
            self.pending[blk] = [t.to(self.device) for t in self.home[blk]]

    def arrive(self, blk):
        if self.last is not None and self.last is not blk:
            self.learned_next[self.last] = blk
        self.last = blk
        if blk in self.installed:  # re-entered without leaving (an earlier forward raised): still in place
            return
        if blk in self.pending:
            self.hits += 1
        else:
            self.misses += 1
            self.prefetch(blk)
        copies = self.pending.pop(blk)
        if self.stream is not None:
            compute = torch.cuda.current_stream(self.device)
            compute.wait_stream(self.stream)
            for t in copies:
                t.record_stream(compute)
        for slot, t in zip(self.slots[blk], copies):
            _set(*slot, t)
        self.installed.add(blk)
        # At most one block waits ahead: a copy fetched on a wrong guess is dropped (freeing it is safe, it was
        # only ever used on the copy stream, where later work is ordered after it).
        nxt = self.next_of(blk)
        for other in [b for b in self.pending if b is not nxt]:
            del self.pending[other]
        self.prefetch(nxt)

    def leave(self, blk):
        if blk not in self.installed:
            return
        for slot, t in zip(self.slots[blk], self.home[blk]):
            _set(*slot, t)
        self.installed.discard(blk)

    def close(self):
        """Every block back on its home tensors, nothing in flight."""
        for blk in list(self.installed):
            self.leave(blk)
        self.pending.clear()
        if self.stream is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)


def _tensor_slots(module: nn.Module):
    return [(m, kind, name) for m in module.modules()
            for kind, table in (("p", m._parameters), ("b", m._buffers))
            for name, t in table.items() if t is not None]


def _get(module, kind, name):
    return module._parameters[name].data if kind == "p" else module._buffers[name]


def _set(module, kind, name, tensor):
    if kind == "p":
        module._parameters[name].data = tensor  # the Parameter object stays: optimisers / hooks keep theirs
    else:
        module._buffers[name] = tensor
