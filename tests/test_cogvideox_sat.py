"""SAT (original CogVideoX) checkpoints: key renaming against the recorded mapping, and a numeric round trip."""
import os

import torch

from comfyui_opensora.models import checkpoint, pipeline
from comfyui_opensora.models.cogvideox import sat
from comfyui_opensora.models.tiny import write_tiny_cogvideox
from conftest import golden_root

MAPPING = os.path.join(golden_root(), "..", "specs", "cogvideox_sat_key_mapping.txt")


def _rows(section):
    rows, current = [], None
    for line in open(MAPPING):
        if line.startswith("## "):
            current = line[3:].split()[0]
        elif line.strip() and not line.startswith("#") and current == section:
            key, shape, targets = line.rstrip("\n").split("\t")
            rows.append((key, [int(x) for x in shape.strip("[]").split(",")], targets.split(",")))
    return rows


def test_transformer_keys_map_as_recorded():
    rows = _rows("transformer")
    sd = {k: torch.zeros(shape[0]) for k, shape, _ in rows}  # 1D stand-ins: splits only look at dim 0
    assert checkpoint.detect_family(sd) == "cogvideox_sat"
    assert set(sat.transformer_to_diffusers(sd)) == {t for _, _, ts in rows for t in ts}


def test_vae_keys_map_as_recorded():
    rows = _rows("vae")
    sd = {k: torch.zeros(1) for k, _, _ in rows}
    assert checkpoint.detect_family(sd) == "cogvideox_vae_sat"
    assert set(sat.vae_to_diffusers(sd)) == {t for _, _, ts in rows for t in ts}


def _to_sat(sd):
    """The inverse renaming (what the official converter undoes), written independently for the round trip."""
    out = {}
    layers = {int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")}
    for i in layers:
        b = f"transformer_blocks.{i}."
        for p in ("weight", "bias"):
            n1, n2 = sd[b + f"norm1.linear.{p}"].chunk(6), sd[b + f"norm2.linear.{p}"].chunk(6)
            out[f"mixins.adaln_layer.adaLN_modulations.{i}.1.{p}"] = torch.cat(n1[:3] + n2[:3] + n1[3:] + n2[3:])
            out[f"transformer.layers.{i}.attention.query_key_value.{p}"] = torch.cat(
                [sd[b + f"attn1.to_{x}.{p}"] for x in "qkv"])
            out[f"transformer.layers.{i}.input_layernorm.{p}"] = sd[b + f"norm1.norm.{p}"]
            out[f"transformer.layers.{i}.post_attention_layernorm.{p}"] = sd[b + f"norm2.norm.{p}"]
            out[f"mixins.adaln_layer.query_layernorm_list.{i}.{p}"] = sd[b + f"attn1.norm_q.{p}"]
            out[f"mixins.adaln_layer.key_layernorm_list.{i}.{p}"] = sd[b + f"attn1.norm_k.{p}"]
            out[f"transformer.layers.{i}.attention.dense.{p}"] = sd[b + f"attn1.to_out.0.{p}"]
            out[f"transformer.layers.{i}.mlp.dense_h_to_4h.{p}"] = sd[b + f"ff.net.0.proj.{p}"]
            out[f"transformer.layers.{i}.mlp.dense_4h_to_h.{p}"] = sd[b + f"ff.net.2.{p}"]
    rest = {"patch_embed.proj.": "mixins.patch_embed.proj.", "patch_embed.text_proj.": "mixins.patch_embed.text_proj.",
            "time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
            "norm_final.": "transformer.final_layernorm.", "norm_out.norm.": "mixins.final_layer.norm_final.",
            "norm_out.linear.": "mixins.final_layer.adaLN_modulation.1.", "proj_out.": "mixins.final_layer.linear."}
    for k, v in sd.items():
        for a, b2 in rest.items():
            if k.startswith(a):
                out[b2 + k[len(a):]] = v
    return {"model.diffusion_model." + k: v for k, v in out.items()}


def test_sat_checkpoint_loads_to_the_same_model(tmp_path):
    folder = write_tiny_cogvideox(str(tmp_path / "cog"), "5b")
    ref = pipeline.load_diffusion_model(folder, "fp32")
    sd = {k: v.contiguous() for k, v in ref.net.state_dict().items()}
    torch.save({"module": _to_sat(sd)}, tmp_path / "mp_rank_00_model_states.pt")  # DeepSpeed layout
    loaded = pipeline.load_diffusion_model(str(tmp_path / "mp_rank_00_model_states.pt"), "fp32")
    assert loaded.family == "cogvideox" and loaded.config["variant"] == "5b"
    got = loaded.net.state_dict()
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
