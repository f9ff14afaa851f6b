"""v2.0/dc_ae: the Video DC-AE's encode and decode, plain and tiled.

Generic over the folder's cases: the method (encode / decode) comes from `call.method`, its one tensor
argument from `input_tensors`, the tiling flags from `scalars.flags` (or `call.flags`), and every tensor in
`output_tensors` is checked. The model is built from the weights' shapes; what shapes cannot show (the
temporal resampling flags, the latent scaling) is read from config.json's tiny dotlist and scaling_factor, and
the widths/depths/latent channels inferred from the shapes are checked against the dotlist.
"""
import ast
import re

import torch
from safetensors.torch import load_file

from comfyui_opensora.models.opensora.dc_ae import config_from_state_dict, load_dc_ae
from golden import assert_close

# dotlist name -> VideoDCAE argument
DOTLIST_ARGS = {"latent_channels": "latent_channels", "encoder.width_list": "encoder_widths",
                "encoder.depth_list": "encoder_depths", "decoder.width_list": "decoder_widths",
                "decoder.depth_list": "decoder_depths", "encoder.temporal_downsample": "temporal_downsample",
                "decoder.temporal_upsample": "temporal_upsample"}
TILING_FLAGS = ("use_spatial_tiling", "use_temporal_tiling", "spatial_tile_size", "temporal_tile_size",
                "tile_overlap_factor")


def parse_dotlist(dotlist: str) -> dict:
    """'a=1 b.c=[x,True]' -> {'a': 1, 'b.c': ('x', True)} (OmegaConf's bare words become strings)."""
    out = {}
    for item in dotlist.split():
        key, value = item.split("=", 1)
        if value.startswith("["):
            out[key] = tuple(parse_scalar(v) for v in value[1:-1].split(",") if v)
        else:
            out[key] = parse_scalar(value)
    return out


def parse_scalar(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def load(case, flags: dict):
    sd = load_file(case.weights_path)
    tiny = case.config["tiny"]
    dotlist = parse_dotlist(tiny["cfg_dotlist"])
    given = {arg: dotlist[key] for key, arg in DOTLIST_ARGS.items() if key in dotlist}
    inferred = config_from_state_dict(sd)
    for arg in ("latent_channels", "encoder_widths", "encoder_depths", "decoder_widths", "decoder_depths"):
        if arg in given:
            assert inferred[arg] == given[arg], f"{case.name}: {arg} inferred {inferred[arg]} != config {given[arg]}"
    overrides = {arg: given[arg] for arg in ("temporal_downsample", "temporal_upsample") if arg in given}
    return load_dc_ae(sd, scaling_factor=tiny.get("scaling_factor"), **overrides,
                      **{k: flags[k] for k in TILING_FLAGS if k in flags})


def run(case):
    spec, t = case.spec, case.tensors
    flags = spec.get("scalars", {}).get("flags") or spec["call"].get("flags", {})
    model = load(case, flags)
    method = re.search(r"\.(\w+)\(", spec["call"]["method"])
    assert method and method.group(1) in ("encode", "decode"), f"{case.name}: no runner for {spec['call']['method']}"
    (arg,) = spec["input_tensors"]
    with torch.inference_mode():
        actual = getattr(model, method.group(1))(t[arg])
    (name,) = spec["output_tensors"]  # encode and decode return one tensor
    assert_close(f"{case.name}:{name}", actual, t[name], **case.tolerance)


RUNNERS = {"v2.0/dc_ae": run}
