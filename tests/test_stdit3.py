"""STDiT3 beyond the golden forward cases: checkpoint reading and its errors, family detection and config reading
on the released key lists, the PixArt-initialised / ema.pt layouts, SDPA against the original's attention
arithmetic, and the bf16 roundings the original performs."""
import glob
import os

import pytest
import torch
from safetensors.torch import load_file

from comfyui_opensora.models import checkpoint, layers
from comfyui_opensora.models.opensora.stdit3 import load_stdit3
from conftest import golden_root
from golden import discover
from golden_runners.v1_2_stdit3 import call_kwargs, run

SPECS = os.path.join(golden_root(), "..", "specs")
STDIT3_KEYS = os.path.join(SPECS, "opensora_keys", "v1.2_STDiT3-XL2_keys.txt")
GOLDEN = os.path.join(golden_root(), "v1.2", "stdit3")
CASES = {c.name: c for c in discover(["v1.2/stdit3"])}
# Released STDiT3-XL/2 sizes -> a shrunk model with the same structure: hidden 48, head_dim 12 (4 heads),
# caption 16 channels x 10 tokens. Sizes not listed (patch, 256 sinusoid, 6 / 2 tables, 32 = 8 ch x 4) stay.
SHRINK = {1152: 48, 3456: 144, 2304: 96, 4608: 192, 6912: 288, 72: 12, 36: 6, 4096: 16, 300: 10}
FAMILY_OF_LIST = {"v1.0_STDiT": "stdit", "v1.1_STDiT2": "stdit2", "v1.2_STDiT3": "stdit3", "v1.3_STDiT3": "stdit3",
                  "v1.2_OpenSoraVAE": "opensora_vae_v1_2", "v1.3_OpenSoraVAE": "opensora_vae_v1_3",
                  "v2.0_MMDiT": "mmdit", "v2.0_hunyuan": "hunyuan_vae", "v2.0_video_dc_ae": "dc_ae",
                  "cogvideox2b_transformer": "cogvideox", "cogvideox_vae": "cogvideox_vae"}


def released_keys(path):
    """[(key, shape)] of a key list ('key<TAB>(d0, d1, ...) or [d0, d1, ...][<TAB>dtype]')."""
    rows = []
    for line in open(path):
        if line.strip() and not line.startswith("#"):
            key, shape = line.split("\t")[:2]
            rows.append((key, tuple(int(d) for d in shape.strip("()[]\n ").split(",") if d.strip())))
    return rows


def shrunk_stdit3(path=STDIT3_KEYS):
    return {k: torch.zeros(tuple(SHRINK.get(d, d) for d in shape)) for k, shape in released_keys(path)}


def golden_weights():
    return load_file(os.path.join(GOLDEN, "weights.safetensors"))


def golden_forward(model, case_name):
    case = CASES[case_name]
    tensors = case.tensors
    with torch.no_grad():
        return model(**call_kwargs(case, tensors)), tensors["out"], case.tolerance


def to_pixart_names(sd):
    return {("blocks." + k[len("spatial_blocks."):] if k.startswith("spatial_blocks.") else k): v
            for k, v in sd.items()}


# --------------------------------------------------------------------------------------------------------------
# Family detection and config reading
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(SPECS, "opensora_keys", "*.txt")) +
                                        glob.glob(os.path.join(SPECS, "cogvideox*_keys.txt"))),
                         ids=os.path.basename)
def test_detect_family_on_shrunk_released_layouts(path):
    want = next(v for k, v in FAMILY_OF_LIST.items() if os.path.basename(path).startswith(k))
    sd = {k: torch.zeros(tuple(min(d, 2) for d in shape)) for k, shape in released_keys(path)}
    assert checkpoint.detect_family(sd) == want


def test_released_layout_loads_strictly_with_the_config_read_off_its_shapes():
    sd = shrunk_stdit3()
    config = checkpoint.config_from_state_dict(sd)
    assert config == dict(hidden_size=48, depth=28, num_heads=4, patch_size=(1, 2, 2), in_channels=4,
                          caption_channels=16, model_max_length=10, qk_norm=True, pred_sigma=True, mlp_ratio=4.0)
    model = load_stdit3(sd)  # every released key, no extra, every shape: else build_strict raises
    assert len(model.state_dict()) == len(sd) == 973  # the count the key list's header states
    # adopted, not copied: the 1.1B model must not need a second copy of its weights while loading
    assert model.spatial_blocks[3].mlp.fc1.weight.data_ptr() == sd["spatial_blocks.3.mlp.fc1.weight"].data_ptr()
    assert model.rope.freqs.requires_grad is False


# --------------------------------------------------------------------------------------------------------------
# Loading errors
# --------------------------------------------------------------------------------------------------------------
def test_unreadable_files_give_clear_errors(tmp_path):
    for name in ("random.safetensors", "random.pt"):
        (tmp_path / name).write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match=r"random.safetensors' is incomplete or damaged \(it does not start with a safetensors header\): download it again"):
        checkpoint.load_state_dict_file(str(tmp_path / "random.safetensors"))
    with pytest.raises(ValueError, match=r"random.pt' is not a readable PyTorch checkpoint"):
        checkpoint.load_state_dict_file(str(tmp_path / "random.pt"))
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match=r"unsupported checkpoint format '.gguf' \(use .safetensors"):
        checkpoint.load_state_dict_file(str(tmp_path / "model.gguf"))
    torch.save({"step": 3, "config": {"lr": 1.0}}, tmp_path / "no_weights.pt")
    with pytest.raises(ValueError, match="does not hold a state dict"):
        checkpoint.load_state_dict_file(str(tmp_path / "no_weights.pt"))


def test_wrong_family_names_what_was_expected():
    cog = {k: torch.zeros(1) for k, _ in released_keys(os.path.join(SPECS, "cogvideox2b_transformer_keys.txt"))}
    with pytest.raises(ValueError, match=r"expected an Open-Sora 1.2 STDiT3 checkpoint \(family 'stdit3'\), but its "
                                         r"keys look like a CogVideoX transformer \(diffusers\) \('cogvideox'\)"):
        load_stdit3(cog)
    vae = {k: torch.zeros(1) for k, _ in released_keys(os.path.join(SPECS, "opensora_keys",
                                                                     "v1.2_OpenSoraVAE_V1_2_keys.txt"))}
    with pytest.raises(ValueError, match=r"keys look like the Open-Sora 1.2 VAE \('opensora_vae_v1_2'\)"):
        load_stdit3(vae)
    v13 = shrunk_stdit3(os.path.join(SPECS, "opensora_keys", "v1.3_STDiT3-XL2_STDiT-v4_keys.txt"))
    with pytest.raises(ValueError, match="Open-Sora 1.3 STDiT3 .* not supported"):
        load_stdit3(v13)


def test_strict_loading_lists_missing_unexpected_and_misshaped_keys():
    sd = golden_weights()
    del sd["temporal_blocks.1.attn.k_norm.weight"]
    sd["spatial_blocks.0.attn.extra"] = torch.zeros(3)
    sd["spatial_blocks.1.mlp.fc2.bias"] = torch.zeros(7)
    with pytest.raises(ValueError, match=r"does not match an Open-Sora 1.2 STDiT3: missing keys: 1 "
                                         r"\(temporal_blocks.1.attn.k_norm.weight\); unexpected keys: 1 "
                                         r"\(spatial_blocks.0.attn.extra\); mis-shaped keys: 1 "
                                         r"\(spatial_blocks.1.mlp.fc2.bias \(7,\) != \(64,\)\)"):
        load_stdit3(sd)


# --------------------------------------------------------------------------------------------------------------
# Training / PixArt-initialised layouts
# --------------------------------------------------------------------------------------------------------------
def test_ema_and_wrapped_checkpoints_read_the_ema_weights(tmp_path):
    sd = golden_weights()
    other = {k: torch.zeros_like(v) for k, v in sd.items()}
    torch.save({"model": other, "ema": sd, "step": torch.tensor(5)}, tmp_path / "train.pt")
    torch.save(sd, tmp_path / "ema.pt")  # Open-Sora's ema.pt: the EMA state dict, flat
    torch.save({"module": {"_orig_mod." + k: v for k, v in sd.items()}}, tmp_path / "deepspeed.pth")
    for name in ("train.pt", "ema.pt", "deepspeed.pth"):
        got = checkpoint.load_state_dict_file(str(tmp_path / name))
        assert set(got) == set(sd) and all(torch.equal(got[k], sd[k]) for k in sd), name


def test_pixart_initialised_layout_is_normalised_and_runs_the_golden_case(tmp_path):
    """PixArt names the spatial blocks `blocks.N`, has a 2D patch kernel, a pos_embed table and (alpha) a
    120-token null caption; the original renames / reshapes / drops / extends on load. Here: the golden weights
    written that way, read back through a {"state_dict": ...} .pth, must reproduce the golden output."""
    sd = golden_weights()
    pixart = to_pixart_names(sd)
    pixart["x_embedder.proj.weight"] = sd["x_embedder.proj.weight"][:, :, 0]
    pixart["pos_embed"] = torch.zeros(1, 16, 64)
    pixart["y_embedder.y_embedding"] = sd["y_embedder.y_embedding"][:5]
    torch.save({"state_dict": pixart}, tmp_path / "pixart_init.pth")
    read = checkpoint.load_state_dict_file(str(tmp_path / "pixart_init.pth"))
    assert checkpoint.detect_family(read) == "pixart"
    model = load_stdit3(read, model_max_length=8).eval()
    null = model.null_caption
    assert torch.equal(null[:5], sd["y_embedder.y_embedding"][:5]) and torch.equal(null[7], null[4])
    out, want, tol = golden_forward(model, "cfg_xmask")
    torch.testing.assert_close(out, want, **tol)


def test_image_only_pixart_file_is_refused_with_the_reason():
    sd = golden_weights()
    pixart = to_pixart_names({k: v for k, v in sd.items()
                              if not k.startswith(("temporal_blocks.", "fps_embedder.", "rope."))})
    with pytest.raises(ValueError, match=r"a PixArt image transformer \(spatial blocks only\).*use the STDiT3 "
                                         r"model"):
        load_stdit3(pixart)


# --------------------------------------------------------------------------------------------------------------
# Attention backends
# --------------------------------------------------------------------------------------------------------------
def test_sdpa_agrees_with_the_original_attention_arithmetic():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (5, 7, 7))
    mask = torch.rand(2, 1, 1, 7, generator=g) > 0.3
    mask[..., 0] = True
    for m in (None, mask):
        sdpa = layers.attention(q, k, v, m)
        layers.ATTENTION_BACKEND["name"] = "math"
        try:
            ref = layers.attention(q, k, v, m)
        finally:
            layers.ATTENTION_BACKEND["name"] = "sdpa"
        torch.testing.assert_close(sdpa, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_cases_with_the_reference_attention(name):
    layers.ATTENTION_BACKEND["name"] = "math"
    try:
        run(CASES[name])
    finally:
        layers.ATTENTION_BACKEND["name"] = "sdpa"


# --------------------------------------------------------------------------------------------------------------
# bf16
# --------------------------------------------------------------------------------------------------------------
def test_bf16_forward_runs_and_rounds_where_the_original_rounds():
    model = load_stdit3(golden_weights()).eval()
    case = CASES["two_prompts_xmask"]
    kwargs = call_kwargs(case, case.tensors)
    model.to(torch.bfloat16)
    with torch.no_grad():
        out = model(**kwargs)
        assert out.dtype == torch.float32 and out.shape == case.tensors["out"].shape
        ref = case.tensors["out"]
        assert (out - ref).abs().mean() < 0.02 * ref.abs().mean()
        # The timestep and the pixel size are cast to the weight dtype first (spec 1.4: 966.67 -> 968,
        # 854 -> 856), so a bf16 model cannot tell them apart.
        b = kwargs["x"].shape[0]
        a = model(**{**kwargs, "timestep": torch.full((b,), 966.67), "height": torch.full((b,), 854.0)})
        c = model(**{**kwargs, "timestep": torch.full((b,), 968.0), "height": torch.full((b,), 856.0)})
        assert torch.equal(a, c)
    # RoPE frequencies are a parameter: bf16 in a bf16 model (spec 1.4: freq[1] 0.774264 -> 0.773438 at dim 72)
    assert abs(layers.RotaryFreqs(72).to(torch.bfloat16).freqs[1].item() - 0.773438) < 1e-6


def test_forward_input_errors():
    model = load_stdit3(golden_weights()).eval()
    case = CASES["cfg_xmask"]
    kwargs = call_kwargs(case, case.tensors)
    with pytest.raises(ValueError, match="'height' is required"):
        model(**{**kwargs, "height": None})
    with pytest.raises(ValueError, match="a caption mask row has no valid token"):
        model(**{**kwargs, "mask": torch.zeros(1, 8, dtype=torch.long)})
    with pytest.raises(ValueError, match=r"the caption mask \(3, 8\) does not fit y"):
        model(**{**kwargs, "mask": torch.ones(3, 8, dtype=torch.long)})
