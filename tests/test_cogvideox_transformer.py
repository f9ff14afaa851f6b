"""CogVideoX transformer, every released variant (2B, 5B, 5B-I2V, 1.5, 1.5-I2V), against diffusers 0.42.1's
CogVideoXTransformer3DModel on the same weights and inputs (diffusers is a test-only dependency).

Models are built here with diffusers, saved in the released layouts (a diffusers folder, a single file of
diffusers keys, an original SAT/DeepSpeed checkpoint written from the recorded key mapping) and read back with the
pack's loader. Released-size models are only ever built on the meta device, to check that the variant and its
config are read off the tensor shapes.
"""
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from comfyui_opensora.models import checkpoint, pipeline
from comfyui_opensora.models.cogvideox import loading, sat
from comfyui_opensora.models.cogvideox.transformer import rope_3d
from conftest import golden_root

import diffusers  # noqa: E402  (test extra)
from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline  # noqa: E402
from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import CogVideoXImageToVideoPipeline  # noqa: E402

SPECS = os.path.join(golden_root(), "..", "specs")

# What tells the variants apart (spec 1.1); widths and sizes come on top.
SWITCHES = {
    "2b": dict(in_channels=16),
    "5b": dict(in_channels=16, use_rotary_positional_embeddings=True),
    "5b_i2v": dict(in_channels=32, use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True),
    "1.5": dict(in_channels=16, use_rotary_positional_embeddings=True, patch_size_t=2, patch_bias=False),
    "1.5_i2v": dict(in_channels=32, use_rotary_positional_embeddings=True, patch_size_t=2, patch_bias=False,
                    ofs_embed_dim=512),
}
# The released configs (spec 1.1 table, HF config.json files).
RELEASED_1_0 = dict(num_attention_heads=48, attention_head_dim=64, out_channels=16, time_embed_dim=512,
                    text_embed_dim=4096, num_layers=42, sample_height=60, sample_width=90, sample_frames=49,
                    patch_size=2, max_text_seq_length=226)
RELEASED = {
    "2b": {**RELEASED_1_0, **SWITCHES["2b"], "num_attention_heads": 30, "num_layers": 30},
    "5b": {**RELEASED_1_0, **SWITCHES["5b"]},
    "5b_i2v": {**RELEASED_1_0, **SWITCHES["5b_i2v"]},
    "1.5": {**RELEASED_1_0, **SWITCHES["1.5"], "sample_height": 300, "sample_width": 300, "sample_frames": 81},
    "1.5_i2v": {**RELEASED_1_0, **SWITCHES["1.5_i2v"], "sample_height": 300, "sample_width": 300,
                "sample_frames": 81},
}
WIDTHS = dict(num_attention_heads=2, attention_head_dim=16, time_embed_dim=32, text_embed_dim=24, num_layers=2)
TINY_SIZES = dict(sample_height=8, sample_width=8, sample_frames=9, max_text_seq_length=7)  # 3 latent frames


def _tiny(variant: str, **sizes) -> dict:
    cfg = {**SWITCHES[variant], **WIDTHS, **(sizes or TINY_SIZES)}
    if cfg.get("ofs_embed_dim"):
        cfg["ofs_embed_dim"] = 32
    return cfg


def _diffusers_model(cfg: dict, seed: int = 0):
    """diffusers' own init, then every tensor perturbed so zero-initialised layers and unit norms hide nothing."""
    torch.manual_seed(seed)
    ref = diffusers.CogVideoXTransformer3DModel(**cfg).eval()
    with torch.no_grad():
        for p in ref.state_dict().values():  # parameters and the learned (buffer) position table
            p.add_(torch.randn_like(p) * 0.05)
    return ref


def _diffusers_rope(ref, h: int, w: int, frames: int):
    """The pipelines' own RoPE tables (an I2V model's from the I2V pipeline) for a latent of this size."""
    pipe = CogVideoXImageToVideoPipeline if ref.config.in_channels == 32 else CogVideoXPipeline
    host = SimpleNamespace(vae_scale_factor_spatial=8, transformer=ref)
    return pipe._prepare_rotary_positional_embeddings(host, h * 8, w * 8, frames, torch.device("cpu"))


def _compare(ours, ref, frames: int, h: int, w: int, text_len: int, dtype=torch.float32, atol=2e-5):
    """Same inputs through both; ours builds its RoPE itself, diffusers gets the pipeline's tables."""
    cfg = ref.config
    gen = torch.Generator().manual_seed(frames * 100 + h * 10 + w)
    x = torch.randn(2, frames, cfg.in_channels, h, w, generator=gen).to(dtype)
    text = torch.randn(2, text_len, cfg.text_embed_dim, generator=gen).to(dtype)
    t = torch.tensor([999, 321])
    rope = _diffusers_rope(ref, h, w, frames) if cfg.use_rotary_positional_embeddings else None
    kw = {"ofs": torch.tensor([2.0])} if cfg.ofs_embed_dim else {}
    with torch.no_grad():
        want = ref(x, text, t, image_rotary_emb=rope, return_dict=False, **kw)[0]
        got = ours(x, text, t, **kw)
    assert got.dtype == want.dtype and got.shape == (2, frames, 16, h, w)
    torch.testing.assert_close(got, want, atol=atol, rtol=atol)


# Per variant: (latent frames, h, w) to run. The first is the sample size (2B's stored sincos table, 5B-I2V's
# learned table); the second a non-square grid (recomputed sincos, a fractional 'linspace' RoPE crop) or, for
# 5B-I2V, whose size is fixed, another frame count (the sincos fallback).
GEOMETRIES = {"2b": [(3, 8, 8), (2, 4, 6)], "5b": [(3, 8, 8), (2, 4, 6)], "5b_i2v": [(3, 8, 8), (2, 8, 8)],
              "1.5": [(4, 8, 8), (2, 4, 6)], "1.5_i2v": [(4, 8, 8), (2, 4, 6)]}


@pytest.mark.parametrize("variant", SWITCHES)
def test_diffusers_folder_matches_diffusers(variant, tmp_path):
    """save_pretrained folder (config.json + diffusion_pytorch_model.safetensors) -> the pack's loader."""
    ref = _diffusers_model(_tiny(variant))
    ref.save_pretrained(tmp_path / "transformer")
    loaded = pipeline.load_diffusion_model(str(tmp_path / "transformer"), "fp32")
    assert loaded.family == "cogvideox" and loaded.config["variant"] == variant
    for frames, h, w in GEOMETRIES[variant]:
        _compare(loaded.net, ref, frames, h, w, text_len=7)


@pytest.mark.parametrize("variant", ["2b", "5b_i2v", "1.5_i2v"])
def test_bf16_equals_diffusers_bf16(variant, tmp_path):
    """bf16 rounds where diffusers rounds (fp32 sinusoids and RoPE rotation cast around bf16 layers): equal."""
    ref = _diffusers_model(_tiny(variant))
    ref.save_pretrained(tmp_path / "transformer")
    ours = pipeline.load_diffusion_model(str(tmp_path / "transformer"), "bf16").net
    _compare(ours, ref.to(torch.bfloat16), *GEOMETRIES[variant][0], text_len=7, dtype=torch.bfloat16, atol=0)


# --------------------------------------------------------------------------------------------
# Files without a config: the variant and config come from tensor shapes
# --------------------------------------------------------------------------------------------
def _recorded_sat_names():
    """[(SAT key template, diffusers key templates)] from the recorded 2B mapping: layer 0's rows with the layer
    index as {i}, plus the rows outside the blocks."""
    rows, section = [], None
    for line in open(os.path.join(SPECS, "cogvideox_sat_key_mapping.txt")):
        if line.startswith("## "):
            section = line[3:].split()[0]
        elif section == "transformer" and line.strip() and not line.startswith("#"):
            sat_key, _, targets = line.rstrip("\n").split("\t")
            targets = targets.split(",")
            if not any(t.startswith("transformer_blocks.") for t in targets):
                rows.append((sat_key, targets))
            elif all(t.startswith("transformer_blocks.0.") for t in targets):
                rows.append((sat_key.replace(".0.", ".{i}.", 1),
                             [t.replace("transformer_blocks.0.", "transformer_blocks.{i}.") for t in targets]))
    return rows


# Keys the 2B recording does not hold (spec 1.5, the mapping's header).
SAT_EXTRA = {"patch_embed.pos_embedding": "mixins.pos_embed.pos_embedding",
             "ofs_embedding.linear_1.weight": "ofs_embed.0.weight", "ofs_embedding.linear_1.bias": "ofs_embed.0.bias",
             "ofs_embedding.linear_2.weight": "ofs_embed.2.weight", "ofs_embedding.linear_2.bias": "ofs_embed.2.bias"}


def _to_sat(sd: dict, cfg: dict) -> dict:
    """A DeepSpeed `mp_rank_00_model_states.pt` dict as SAT saves it: fused q/k/v, one 12-way adaLN per layer
    (chunk order: video msa, video mlp, text msa, text mlp; spec 1.5), plus the buffers the converter drops."""
    out = {}
    layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks."))
    for sat_key, targets in _recorded_sat_names():
        for i in range(layers) if "{i}" in sat_key else [None]:
            names = [t.format(i=i) for t in targets]
            if len(names) == 1:
                value = sd[names[0]]
            elif "query_key_value" in sat_key:
                value = torch.cat([sd[n] for x in ("to_q", "to_k", "to_v") for n in names if f".{x}." in n])
            else:  # adaLN_modulations
                n1 = sd[next(n for n in names if ".norm1." in n)].chunk(6)
                n2 = sd[next(n for n in names if ".norm2." in n)].chunk(6)
                value = torch.cat(n1[:3] + n2[:3] + n1[3:] + n2[3:])
            out[sat_key.format(i=i)] = value
    extra = {SAT_EXTRA[k]: v for k, v in sd.items() if k in SAT_EXTRA}
    dim, device = sd["proj_out.weight"].shape[1], sd["proj_out.weight"].device
    if cfg.get("use_rotary_positional_embeddings"):  # Rotary3DPositionEmbeddingMixin's buffers
        extra["mixins.pos_embed.freqs_sin"] = torch.zeros(4, cfg["attention_head_dim"], device=device)
        extra["mixins.pos_embed.freqs_cos"] = torch.zeros(4, cfg["attention_head_dim"], device=device)
    elif not cfg.get("use_learned_positional_embeddings"):  # 2B: SAT keeps its frozen sincos table
        extra["mixins.pos_embed.pos_embedding"] = torch.zeros(1, 5, dim, device=device)
    return {**out, **{"model.diffusion_model." + k: v for k, v in extra.items()}}


@pytest.mark.parametrize("layout", ["diffusers", "sat"])
@pytest.mark.parametrize("variant", SWITCHES)
def test_released_shapes_give_the_released_config(variant, layout):
    """Released-size state dicts (meta tensors): the variant and every config value are read off the shapes,
    and the pack's model takes every tensor, strictly."""
    with torch.device("meta"):
        sd = diffusers.CogVideoXTransformer3DModel(**RELEASED[variant]).state_dict()
    if variant == "2b":  # the meta-built dict is the recorded one
        recorded = [line.rstrip("\n").split("\t")[:2]
                    for line in open(os.path.join(SPECS, "cogvideox2b_transformer_keys.txt"))
                    if not line.startswith("#")]
        assert {k: list(v.shape) for k, v in sd.items()} == {k: [int(n) for n in s.strip("[]").split(",")]
                                                             for k, s in recorded}
    if layout == "sat":
        sd = _to_sat(sd, RELEASED[variant])
        assert checkpoint.detect_family(sd) == "cogvideox_sat"
        sd = sat.transformer_to_diffusers(sd)
    else:
        assert checkpoint.detect_family(sd) == "cogvideox"
    config = loading.config_from_state_dict(sd)
    assert loading.variant_of(config) == variant
    assert {k: config.get(k) for k in RELEASED[variant]} == RELEASED[variant]
    model = loading.build_transformer(sd, config)  # strict both ways; meta tensors are adopted, nothing allocated
    assert model.config["use_learned_positional_embeddings"] == (variant == "5b_i2v")


# Shape detection needs the released width for 2B (D = 1920), too big to build here: 2B files are covered above.
FILE_VARIANTS = ["5b", "5b_i2v", "1.5", "1.5_i2v"]


@pytest.mark.parametrize("layout", ["single_file", "sat"])
@pytest.mark.parametrize("variant", FILE_VARIANTS)
def test_files_without_config_match_diffusers(variant, layout, tmp_path):
    """A single file of diffusers keys, or a SAT checkpoint, with tiny widths but the released sizes (which is
    what a file without config.json is taken to have): same tensors and same outputs as diffusers."""
    released = RELEASED[variant]
    cfg = _tiny(variant, **{k: released[k] for k in ("sample_height", "sample_width", "sample_frames",
                                                     "max_text_seq_length")})
    ref = _diffusers_model(cfg)
    sd = {k: v.contiguous() for k, v in ref.state_dict().items()}
    if layout == "sat":
        path = str(tmp_path / "mp_rank_00_model_states.pt")
        torch.save({"module": _to_sat(sd, cfg)}, path)
    else:
        path = str(tmp_path / "cogvideox.safetensors")
        save_file(sd, path)
    loaded = pipeline.load_diffusion_model(path, "fp32")
    assert loaded.config["variant"] == variant
    got = loaded.net.state_dict()
    # (diffusers keeps its position table in float64; the model dtype is what a loaded model holds)
    assert set(got) == set(sd) and all(torch.equal(got[k], sd[k].float()) for k in sd)
    # 5B-I2V only runs at its sample size (60x90 latent); one frame there takes the sincos fallback.
    frames, h, w = (1, 60, 90) if variant == "5b_i2v" else GEOMETRIES[variant][1]
    _compare(loaded.net, ref, frames, h, w, text_len=226)


# --------------------------------------------------------------------------------------------
# RoPE tables and input errors
# --------------------------------------------------------------------------------------------
def test_rope_tables_match_diffusers_function():
    """Released head size and grids: 720x480 (integers), other aspects (fractional crops), 1.5 'slice'."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    for gh, gw, t in ((30, 45, 13), (20, 40, 5), (7, 3, 2), (45, 30, 3)):
        want = get_3d_rotary_pos_embed(64, get_resize_crop_region_for_grid((gh, gw), 45, 30), (gh, gw), t)
        got = rope_3d(64, gh, gw, t, "linspace", 30, 45)
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    for gh, gw, t in ((48, 85, 11), (5, 7, 1)):
        want = get_3d_rotary_pos_embed(64, None, (gh, gw), t, grid_type="slice", max_size=(150, 150))
        torch.testing.assert_close(rope_3d(64, gh, gw, t, "slice"), want, atol=1e-6, rtol=1e-6)


def test_input_errors_are_clear(tmp_path):
    ref = _diffusers_model(_tiny("5b_i2v"))
    ref.save_pretrained(tmp_path / "i2v")
    i2v = pipeline.load_diffusion_model(str(tmp_path / "i2v"), "fp32").net
    text = torch.randn(1, 7, 24)
    with pytest.raises(ValueError, match="only fit 64x64 pixels; got 48x32"):
        i2v(torch.randn(1, 3, 32, 4, 6), text, torch.tensor([1]))
    with pytest.raises(ValueError, match="expect 7 text tokens; got 5"):
        i2v(torch.randn(1, 3, 32, 8, 8), text[:, :5], torch.tensor([1]))
    ref = _diffusers_model(_tiny("1.5"))
    ref.save_pretrained(tmp_path / "v15")
    v15 = pipeline.load_diffusion_model(str(tmp_path / "v15"), "fp32").net
    with pytest.raises(ValueError, match="got 3 latent frames: pad the latent to a multiple of 2"):
        v15(torch.randn(1, 3, 16, 8, 8), text, torch.tensor([1]))
