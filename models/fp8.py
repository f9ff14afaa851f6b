"""fp8 weight storage: Open-Sora 2.0's 11B MMDiT in about half the memory of bf16.

11B weights are 22 GB in bf16, which leaves nothing for activations on a 24 GB card. Stored as float8 (e4m3) they
are 11 GB. Only the *storage* is fp8: each converted Linear upcasts its weight to the activation dtype inside
forward, so the matmul still runs in bf16 / fp32 and nothing depends on fp8 matmul kernels (none on CPU, and on
GPUs only from Ada / Hopper on). The cost is one elementwise upcast of a weight per call, and the rounding of
each weight to 3 mantissa bits.

What is converted: the nn.Linear layers inside the repeated blocks (the items of the model's top-level
ModuleLists). In the MMDiT they hold over 99% of the weights. The embedders, the final layer and every norm
keep their dtype: they are a few MB, and they sit where an error is not averaged over many later layers (the
input projections see every token's raw features, the final layer writes the velocity directly).

Scaling is per tensor, as in ComfyUI's `scaled_fp8` checkpoints: scale = amax(|W|) / 448 (448 is the largest
finite float8_e4m3fn), W8 = round(W / scale), W ~= W8 * scale. The scale uses the whole e4m3 range, so the
largest weight lands on 448 and the rounding is relative (at most 2^-4 of a weight, for weights above 2^-6 of
the scale's range; smaller weights fall into the subnormals, where the step is an absolute 2^-9 * scale). The
scale is a float32 buffer named `scale_weight`, ComfyUI's key name: it moves with .to(device), it is saved in
state_dict, and a file written from a converted model has ComfyUI's layout.

Already-fp8 files load too: `split_scaled_fp8` takes the `.scale_weight` / `.scale_input` tensors and the
`scaled_fp8` marker out of a state dict (the model loaders accept only weight names), then `adopt_fp8_linears`
wraps every Linear whose loaded weight is float8, with the file's scale (1 for unscaled fp8 files), without
rounding anything a second time.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .offload import repeated_blocks  # the same blocks the sequential offload modes move one at a time

FP8_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
SCALED_FP8_MARKER = "scaled_fp8"  # ComfyUI puts an empty tensor of the storage dtype under this key


class FP8Linear(nn.Linear):
    """A Linear whose weight is stored in float8 with a per-tensor float32 scale, computed in the activations'
    dtype (or `compute_dtype` when set). The bias stays in the model's dtype. A subclass of nn.Linear so that
    code reading in_features / out_features or checking isinstance(..., nn.Linear) keeps working."""

    def __init__(self, weight_fp8: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None,
                 compute_dtype: torch.dtype | None = None):
        nn.Module.__init__(self)  # not nn.Linear.__init__: it would allocate and initialise a full-precision weight
        self.out_features, self.in_features = weight_fp8.shape
        self.weight = nn.Parameter(weight_fp8, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.register_buffer("scale_weight", scale.detach().to(weight_fp8.device, torch.float32).reshape(()))
        self.compute_dtype = compute_dtype

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype = torch.float8_e4m3fn,
                    compute_dtype: torch.dtype | None = None) -> FP8Linear:
        weight, scale = quantize(linear.weight.detach(), dtype)
        bias = None if linear.bias is None else linear.bias.detach()
        return cls(weight, scale, bias, compute_dtype)

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        # The scale is a 0-dim float32 tensor: it does not promote the product, so W8 (exact in bf16 / fp16 /
        # fp32) times scale is computed at float32 and rounded once, to `dtype`.
        return self.weight.to(dtype) * self.scale_weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype or x.dtype
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.linear(x.to(dtype), self.dequantized_weight(dtype), bias).to(x.dtype)

    def _apply(self, fn, recurse=True):
        # Module.to(dtype) casts every floating tensor, and float8 counts as floating. pipeline-style code calls
        # net.to(dtype=bf16) after loading; that must move the storage, never widen it back (the memory saving
        # would be lost) nor round the scale to bf16. So: apply fn, and where it changed the dtype of the fp8
        # weight or of the scale, put back the tensor as it was, on the device fn chose.
        weight, scale = self.weight.data, self.scale_weight
        super()._apply(fn, recurse)
        if self.weight.dtype != weight.dtype:
            self.weight.data = weight.to(self.weight.device)
        if self.scale_weight.dtype != scale.dtype:
            self.scale_weight = scale.to(self.scale_weight.device)
        return self

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"storage={str(self.weight.dtype).replace('torch.', '')}, compute={self.compute_dtype or 'input'}")


def quantize(weight: torch.Tensor, dtype: torch.dtype = torch.float8_e4m3fn):
    """(W8, scale) with W ~= W8 * scale, scale = amax / max finite of `dtype` (448 for e4m3fn)."""
    w = weight.float()  # round once, from the weight's own precision, not via bf16
    fmax = torch.finfo(dtype).max
    amax = w.abs().max()
    scale = torch.where(amax > 0, amax / fmax, torch.ones_like(amax))  # an all-zero weight: any scale is exact
    # The clamp only guards float32 rounding of w / scale a hair above fmax: e4m3fn has no inf, and a value
    # past its range would become NaN.
    return (w / scale).clamp(-fmax, fmax).to(dtype), scale


def _replace_linears(root: nn.Module, make) -> int:
    """Replace each nn.Linear below `root` (itself excluded) by make(name, linear) where that returns a module."""
    n = 0
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:  # exactly nn.Linear: never wrap an FP8Linear twice
                new = make(child)
                if new is not None:
                    setattr(parent, name, new)
                    n += 1
    return n


@torch.no_grad()
def store_fp8(net: nn.Module, dtype: torch.dtype = torch.float8_e4m3fn,
              compute_dtype: torch.dtype | None = None) -> nn.Module:
    """Convert, in place, the Linear weights of `net`'s repeated blocks to `dtype` storage with a per-tensor
    scale. Everything else keeps its dtype. compute_dtype None: each layer computes in its input's dtype (what
    the rest of the model runs in); a dtype: always in that one (e.g. float32 on CPU under a bf16 model).
    Returns `net`. Apply it to a model on either device: the conversion runs where the weights are."""
    if isinstance(dtype, str):
        dtype = FP8_DTYPES[dtype]
    if dtype not in FP8_DTYPES.values():
        raise ValueError(f"store_fp8 stores float8 weights, not {dtype}; choose one of {list(FP8_DTYPES)}")
    for block in repeated_blocks(net):
        _replace_linears(block, lambda lin: FP8Linear.from_linear(lin, dtype, compute_dtype))
    return net


def fp8_linears(net: nn.Module):
    """(name, FP8Linear) for every fp8-stored layer of `net`."""
    return [(n, m) for n, m in net.named_modules() if isinstance(m, FP8Linear)]


# --------------------------------------------------------------------------------------------------------------
# Checkpoints that are already fp8 (ComfyUI `scaled_fp8` files, or plain float8 weights)
# --------------------------------------------------------------------------------------------------------------
# FLUX.1-named checkpoints fuse q/k/v; load_mmdit splits the weight, and each part keeps the fused tensor's scale.
_FUSED_PARTS = {"_attn.qkv": ("_attn.q_proj", "_attn.k_proj", "_attn.v_proj"),
                ".linear1": (".q_proj", ".k_proj", ".v_mlp")}


def is_fp8_state_dict(sd: dict) -> bool:
    return SCALED_FP8_MARKER in sd or any(v.dtype in FP8_DTYPES.values() for v in sd.values())


def split_scaled_fp8(sd: dict) -> tuple[dict, dict]:
    """(the state dict with only weight names, {Linear name: float32 scale}). Drops the `scaled_fp8` marker and
    the `scale_input` tensors (they serve fp8 matmuls of fp8 activations; here activations stay in bf16 / fp32).
    A fused FLUX name's scale is given to the split names too. The fp8 weights themselves are left in `sd`:
    load the model from it as usual, then call adopt_fp8_linears. A state dict without fp8 comes back as is."""
    out, scales = {}, {}
    for key, value in sd.items():
        if key == SCALED_FP8_MARKER or key.endswith(".scale_input"):
            continue
        if key.endswith(".scale_weight"):
            name = key[: -len(".scale_weight")]
            scales[name] = value.float().reshape(())
            for fused, parts in _FUSED_PARTS.items():
                if name.endswith(fused) and (fused != ".linear1" or name.startswith("single_blocks.")):
                    for part in parts:
                        scales[name[: -len(fused)] + part] = scales[name]
        else:
            out[key] = value
    return out, scales


@torch.no_grad()
def adopt_fp8_linears(net: nn.Module, scales: dict | None = None,
                      compute_dtype: torch.dtype | None = None) -> int:
    """Wrap, in place, every nn.Linear of `net` whose weight was loaded as float8 into an FP8Linear, using
    scales[name] (from split_scaled_fp8) or 1. No weight is rounded again. Anywhere in the model, not only in the
    blocks: the file decides what is fp8. Returns the number of layers wrapped."""
    scales = scales or {}
    names = {id(m): n for n, m in net.named_modules()}

    def make(lin):
        if lin.weight.dtype not in FP8_DTYPES.values():
            return None
        scale = scales.get(names[id(lin)], torch.tensor(1.0))
        bias = None if lin.bias is None else lin.bias.detach()
        return FP8Linear(lin.weight.detach(), scale, bias, compute_dtype)

    return _replace_linears(net, make)


def scaled_fp8_state_dict(net: nn.Module) -> dict:
    """`net`'s state dict in ComfyUI's scaled_fp8 layout (fp8 `weight` + float32 `scale_weight` per converted
    layer, and the marker), e.g. to save a converted model once instead of converting at every load."""
    sd = net.state_dict()
    layers = fp8_linears(net)
    if layers:
        sd[SCALED_FP8_MARKER] = torch.empty(0, dtype=layers[0][1].weight.dtype)
    return sd


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of a module's parameters and buffers (the fp8 scales included)."""
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))
