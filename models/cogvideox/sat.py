"""Original CogVideoX (SAT) checkpoints -> diffusers key names, as the official converter renames them.

Transformer: the 12-way adaLN tensor of each layer holds norm1 (chunks 0:3 and 6:9) and norm2 (3:6 and 9:12);
query_key_value splits into to_q, to_k, to_v. VAE: SAT numbers decoder up blocks from the bottom (up.3 is
diffusers' up_blocks.0) and its mid blocks from 1.
"""
from __future__ import annotations

import re

import torch

PREFIX = "model.diffusion_model."
DROPPED = ("embed_tokens", "freqs_sin", "freqs_cos", "position_embedding")
RENAMES = [  # (regex, replacement), applied to the transformer keys after the prefix is stripped
    (r"^mixins\.patch_embed\.", "patch_embed."),
    (r"^mixins\.pos_embed\.pos_embedding$", "patch_embed.pos_embedding"),
    (r"^time_embed\.0\.", "time_embedding.linear_1."),
    (r"^time_embed\.2\.", "time_embedding.linear_2."),
    (r"^ofs_embed\.0\.", "ofs_embedding.linear_1."),
    (r"^ofs_embed\.2\.", "ofs_embedding.linear_2."),
    (r"^transformer\.final_layernorm\.", "norm_final."),
    (r"^mixins\.final_layer\.norm_final\.", "norm_out.norm."),
    (r"^mixins\.final_layer\.adaLN_modulation\.1\.", "norm_out.linear."),
    (r"^mixins\.final_layer\.linear\.", "proj_out."),
    (r"^transformer\.layers\.(\d+)\.input_layernorm\.", r"transformer_blocks.\1.norm1.norm."),
    (r"^transformer\.layers\.(\d+)\.post_attention_layernorm\.", r"transformer_blocks.\1.norm2.norm."),
    (r"^mixins\.adaln_layer\.query_layernorm_list\.(\d+)\.", r"transformer_blocks.\1.attn1.norm_q."),
    (r"^mixins\.adaln_layer\.key_layernorm_list\.(\d+)\.", r"transformer_blocks.\1.attn1.norm_k."),
    (r"^transformer\.layers\.(\d+)\.attention\.dense\.", r"transformer_blocks.\1.attn1.to_out.0."),
    (r"^transformer\.layers\.(\d+)\.mlp\.dense_h_to_4h\.", r"transformer_blocks.\1.ff.net.0.proj."),
    (r"^transformer\.layers\.(\d+)\.mlp\.dense_4h_to_h\.", r"transformer_blocks.\1.ff.net.2."),
]


def is_sat_transformer(sd: dict) -> bool:
    return any(k.startswith(PREFIX + "mixins.") for k in sd)


def is_sat_vae(sd: dict) -> bool:
    return any(k.startswith("decoder.up.") for k in sd) and any(".conv_y." in k for k in sd)


def transformer_to_diffusers(sd: dict) -> dict:
    out = {}
    for key, value in sd.items():
        if any(d in key for d in DROPPED) or not key.startswith(PREFIX):
            continue
        k = key[len(PREFIX):]
        if m := re.match(r"^mixins\.adaln_layer\.adaLN_modulations\.(\d+)\.1\.(weight|bias)$", k):
            c = value.chunk(12, dim=0)
            out[f"transformer_blocks.{m[1]}.norm1.linear.{m[2]}"] = torch.cat(c[0:3] + c[6:9])
            out[f"transformer_blocks.{m[1]}.norm2.linear.{m[2]}"] = torch.cat(c[3:6] + c[9:12])
            continue
        if m := re.match(r"^transformer\.layers\.(\d+)\.attention\.query_key_value\.(weight|bias)$", k):
            for name, part in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                out[f"transformer_blocks.{m[1]}.attn1.{name}.{m[2]}"] = part
            continue
        for pattern, repl in RENAMES:
            if re.match(pattern, k):
                k = re.sub(pattern, repl, k)
                break
        out[k] = value
    return out


def vae_to_diffusers(sd: dict) -> dict:
    ups = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("decoder.up."))
    out = {}
    for k, v in sd.items():
        if "loss" in k:
            continue
        k = re.sub(r"^(encoder|decoder)\.mid\.block_(\d+)\.", lambda m: f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.", k)
        k = re.sub(r"^encoder\.down\.(\d+)\.block\.", r"encoder.down_blocks.\1.resnets.", k)
        k = re.sub(r"^encoder\.down\.(\d+)\.downsample\.", r"encoder.down_blocks.\1.downsamplers.0.", k)
        k = re.sub(r"^decoder\.up\.(\d+)\.block\.", lambda m: f"decoder.up_blocks.{ups - 1 - int(m[1])}.resnets.", k)
        k = re.sub(r"^decoder\.up\.(\d+)\.upsample\.", lambda m: f"decoder.up_blocks.{ups - 1 - int(m[1])}.upsamplers.0.", k)
        out[k.replace(".nin_shortcut.", ".conv_shortcut.")] = v
    return out
