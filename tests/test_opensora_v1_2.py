"""Open-Sora 1.2 beyond golden parity: loaders and family detection on the released key lists, bad input,
sampler behaviour (conditioned frames, seeds, cfg), attention backends, tiled decoding."""
import glob
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_opensora import comfy_adapter
from comfyui_opensora.models import checkpoint, layers, mask_strategy, noise, pipeline, tiling
from comfyui_opensora.models.opensora import vae_v1_2
from comfyui_opensora.models.opensora.stdit3 import load_stdit3
from comfyui_opensora.models.tiny import write_tiny_models
from comfyui_opensora.nodes.common import NodeInputError, video_to_images
from comfyui_opensora.nodes.loaders import OpenSoraModelLoader, OpenSoraVAELoader
from comfyui_opensora.nodes.sampling import OpenSoraEmptyLatent, OpenSoraMaskStrategy, OpenSoraReferenceCondition
from conftest import golden_root

SPECS = os.path.join(golden_root(), "..", "specs")
EXPECTED_FAMILY = {"v1.0_STDiT": "stdit", "v1.1_STDiT2": "stdit2", "v1.2_STDiT3": "stdit3", "v1.3_STDiT3": "stdit3",
                   "v1.2_OpenSoraVAE": "opensora_vae_v1_2", "v1.3_OpenSoraVAE": "opensora_vae_v1_3",
                   "v2.0_MMDiT": "mmdit", "v2.0_hunyuan": "hunyuan_vae", "v2.0_video_dc_ae": "dc_ae",
                   "cogvideox2b_transformer": "cogvideox", "cogvideox_vae": "cogvideox_vae"}


def _keys(path):
    return [line.split("\t")[0] for line in open(path) if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(SPECS, "opensora_keys", "*.txt")) +
                                        glob.glob(os.path.join(SPECS, "cogvideox*_keys.txt"))),
                         ids=os.path.basename)
def test_detect_family_on_released_key_lists(path):
    name = os.path.basename(path)
    want = next(v for k, v in EXPECTED_FAMILY.items() if name.startswith(k))
    assert checkpoint.detect_family({k: torch.zeros(1) for k in _keys(path)}) == want


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    paths = write_tiny_models(str(root))
    comfy_adapter.configure(models_dir=str(root))
    yield {"root": root, **paths}
    comfy_adapter._settings["models_dir"] = None


def test_loaders_refuse_other_kinds(models, tmp_path):
    root = models["root"]
    cog = {k: torch.zeros(1) for k in _keys(os.path.join(SPECS, "cogvideox2b_transformer_keys.txt"))}
    save_file(cog, str(root / "diffusion_models" / "cogvideox.safetensors"))
    (root / "diffusion_models" / "random.safetensors").write_bytes(os.urandom(2048))
    os.link(models["vae"], root / "diffusion_models" / "a_vae.safetensors")
    os.link(models["model"], root / "vae" / "a_model.safetensors")
    loader = OpenSoraModelLoader()
    with pytest.raises(NodeInputError, match=r"OpenSoraModelLoader: input 'model_name':.*looks like a cogvideox "
                                             r"checkpoint but its tensors do not fit"):
        loader.load("cogvideox.safetensors", "fp32")  # the right keys, wrong (dummy) shapes
    cog_vae = {k: torch.zeros(1) for k in _keys(os.path.join(SPECS, "cogvideox_vae_keys.txt"))}
    save_file(cog_vae, str(root / "diffusion_models" / "cogvideox_vae.safetensors"))
    with pytest.raises(NodeInputError, match=r"is a VAE \(cogvideox_vae\): load it with OpenSora VAE Loader"):
        loader.load("cogvideox_vae.safetensors", "fp32")
    with pytest.raises(NodeInputError, match=r"input 'model_name': 'random.safetensors' is incomplete or damaged .*Fix: download it again"):
        loader.load("random.safetensors", "fp32")
    with pytest.raises(NodeInputError, match=r"is a VAE \(opensora_vae_v1_2\): load it with OpenSora VAE Loader"):
        loader.load("a_vae.safetensors", "fp32")
    with pytest.raises(NodeInputError, match=r"OpenSoraVAELoader.*is a diffusion transformer \(stdit3\): load it with OpenSora Model"):
        OpenSoraVAELoader().load("a_model.safetensors", "fp32")
    with pytest.raises(NodeInputError, match="'missing.safetensors' was not found.*models/diffusion_models"):
        loader.load("missing.safetensors", "fp32")
    with pytest.raises(NodeInputError, match="fp16 does not run on the CPU"):
        loader.load(os.path.basename(models["model"]), "fp16")


def test_pixart_initialised_null_caption_is_fitted(models, tmp_path):
    sd = load_file(models["model"])
    short = {**sd, "y_embedder.y_embedding": sd["y_embedder.y_embedding"][:120].clone()}
    save_file(short, str(tmp_path / "pixart_init.safetensors"))
    model = pipeline.load_diffusion_model(str(tmp_path / "pixart_init.safetensors"), "fp32").net
    y = model.null_caption
    assert y.shape == (300, 32)
    assert torch.equal(y[:120], short["y_embedder.y_embedding"]) and torch.equal(y[200], y[119])


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_checkpoints_load_weights_only(models, tmp_path):
    sd = load_file(models["model"])
    torch.save({"ema": sd}, tmp_path / "ema.pt")  # training-style wrapper: unwrapped
    assert set(checkpoint.load_state_dict_file(str(tmp_path / "ema.pt"))) == set(sd)
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "ddp.pth")
    assert set(checkpoint.load_state_dict_file(str(tmp_path / "ddp.pth"))) == set(sd)
    torch.save({"model": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(pipeline.ModelLoadError, match="cannot read"):
        pipeline.load_diffusion_model(str(tmp_path / "evil.pth"))


def test_latent_sizes_and_bad_sizes(models):
    vae = OpenSoraVAELoader().load(os.path.basename(models["vae"]), "fp32")[0]
    node = OpenSoraEmptyLatent()
    (lat,) = node.generate(vae, "240p", "16:9", 0, 0, 51, 2)
    assert lat["samples"].shape == (2, 4, 15, 30, 53)  # 240x426 -> 30x53 latents, 51 frames -> 15
    (lat,) = node.generate(vae, "custom", "16:9", 64, 48, 100, 1)
    assert lat["samples"].shape[2] == 29  # spec: 100 frames -> 29 latent frames
    with pytest.raises(NodeInputError, match=r"OpenSoraEmptyLatent: input 'width': 60 is not divisible by 8"):
        node.generate(vae, "custom", "16:9", 60, 48, 17, 1)


def test_mask_strategy_errors_name_the_field(models):
    vae = OpenSoraVAELoader().load(os.path.basename(models["vae"]), "fp32")[0]
    (lat,) = OpenSoraEmptyLatent().generate(vae, "custom", "1:1", 32, 32, 17, 1)
    ref = torch.rand(1, 32, 32, 3)
    with pytest.raises(NodeInputError, match=r"input 'mask_strategy': group 2 '0,0,x': ref_start 'x' is not an "
                                             r"integer"):
        OpenSoraMaskStrategy().condition(lat, vae, "0;0,0,x", 0, ref)
    with pytest.raises(NodeInputError, match="edit_ratio 1.5 is not within 0..1"):
        OpenSoraMaskStrategy().condition(lat, vae, "0,0,0,0,1,1.5", 0, ref)
    with pytest.raises(NodeInputError, match="input 'reference_2': the strategy uses reference 1"):
        OpenSoraMaskStrategy().condition(lat, vae, "0;0,1,0,-1,1", 0, ref)
    with pytest.raises(NodeInputError, match=r"input 'length': the reference is longer than the video"):
        OpenSoraReferenceCondition().condition(lat, vae, torch.rand(34, 32, 32, 3), 0, 0, 10, 0.0)
    with pytest.raises(NodeInputError, match=r"input 'target_start': 7 is outside the video's 5 latent frames"):
        OpenSoraReferenceCondition().condition(lat, vae, ref, 0, 7, 1, 0.0)


def test_conditioned_frames_are_kept_and_seeds_reproduce(models):
    net = pipeline.load_diffusion_model(models["model"], "fp32")
    vae = pipeline.load_vae(models["vae"], "fp32")
    cond = {"family": "opensora-v1.2", "y": torch.randn(1, 1, 300, 32), "mask": torch.ones(1, 300, dtype=torch.long)}
    cond["mask"][:, 7:] = 0
    lat = pipeline.empty_latent(vae, "custom", "1:1", 32, 32, 34, 1)
    image = torch.rand(1, 3, 1, 32, 32) * 2 - 1
    lat = pipeline.add_reference(lat, vae, image, 0, 0, 1, 0.0)      # image to video
    lat = pipeline.add_reference(lat, vae, image, 0, -1, 1, 0.0)     # and the same image at the end (loop)
    ref = pipeline.encode_reference(vae, image, 32, 32)
    out = pipeline.sample(net, cond, lat, seed=3, steps=3, cfg=5.0, scheduler="rflow", denoise=1.0, fps=24)["samples"]
    # align=5 (the temporal VAE's chunk) puts the "last frame" reference at the start of the last chunk.
    assert torch.equal(out[0, :, 0], ref[:, 0]) and torch.equal(out[0, :, 5], ref[:, 0])
    again = pipeline.sample(net, cond, lat, seed=3, steps=3, cfg=5.0, scheduler="rflow", denoise=1.0, fps=24)
    assert torch.equal(out, again["samples"])
    other = pipeline.sample(net, cond, lat, seed=4, steps=3, cfg=5.0, scheduler="rflow", denoise=1.0, fps=24)
    assert not torch.equal(out[:, :, 1:5], other["samples"][:, :, 1:5])
    # denoise 0: nothing is generated, the input latent comes back
    enc = pipeline.encode(vae, torch.rand(1, 3, 17, 32, 32) * 2 - 1)
    same = pipeline.sample(net, cond, enc, seed=1, steps=3, cfg=5.0, scheduler="rflow", denoise=0.0, fps=24)
    assert torch.equal(same["samples"], enc["samples"])
    with pytest.raises(pipeline.InputError, match="encoded for 'other'"):
        pipeline.sample(net, {**cond, "family": "other"}, lat, 1, 1, 5.0, "rflow", 1.0, 24)


def test_cfg_one_skips_the_unconditional_pass(models):
    """cfg 1 gives the same result as the doubled batch would, with half the model calls."""
    from comfyui_opensora.models import rflow

    model = load_stdit3(load_file(models["model"])).eval()
    calls = []

    def counting(x, *a, **k):
        calls.append(x.shape[0])
        return model(x, *a, **k)

    z = torch.randn(1, 4, 2, 4, 4)
    y, m = torch.randn(1, 1, 300, 32), torch.ones(1, 300, dtype=torch.long)
    null = model.null_caption[None, None]
    ts = rflow.get_timesteps(2, 1, 32, 32, 5)
    kw = {"height": torch.tensor([32.0]), "width": torch.tensor([32.0]), "fps": torch.tensor([24.0])}
    with torch.no_grad():
        a = rflow.sample(counting, z, y, m, null, ts, 1.0, model_kwargs=kw)
        assert calls == [1, 1]
        b = rflow.sample(counting, z, y, m, null, ts, 1.0 + 1e-12, model_kwargs=kw)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sdpa_matches_reference_attention_and_bf16_runs():
    sd = load_file(os.path.join(golden_root(), "v1.2", "stdit3", "weights.safetensors"))
    model = load_stdit3(sd).eval()
    x = torch.randn(2, 4, 3, 6, 7)
    args = dict(timestep=torch.tensor([500.0, 20.0]), y=torch.randn(2, 1, 8, 32),
                mask=torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0]]), x_mask=torch.tensor([[False, True, True]] * 2),
                fps=torch.tensor([24.0, 24.0]), height=torch.tensor([48.0]), width=torch.tensor([56.0]))
    with torch.no_grad():
        sdpa = model(x, **args)
        layers.ATTENTION_BACKEND["name"] = "math"
        try:
            math_out = model(x, **args)
        finally:
            layers.ATTENTION_BACKEND["name"] = "sdpa"
        torch.testing.assert_close(sdpa, math_out, atol=1e-5, rtol=1e-5)
        bf16 = model.to(torch.bfloat16)(x, **args)
    assert bf16.dtype == torch.float32 and torch.isfinite(bf16).all()
    assert (bf16 - sdpa).abs().mean() < 0.05 * sdpa.abs().mean()


def test_chunked_decode_is_exact_and_tiling_blends_correctly(models):
    vae = pipeline.load_vae(models["vae"], "fp32")
    z = torch.randn(1, 4, 10, 12, 16)
    full = vae_v1_2.decode_tiled(vae.net, z, 34)
    assert full.shape == (1, 3, 34, 96, 128)
    # chunked decoding is the original's and exact: decoding the second chunk alone gives the same frames
    second = torch.cat(list(vae.net.decode_chunks(z[:, :, 5:], 17)), dim=2)
    torch.testing.assert_close(second, full[:, :, 17:], atol=1e-5, rtol=1e-5)
    # a tile as large as the frame is the untiled decode
    same = vae_v1_2.decode_tiled(vae.net, z, 34, spatial_tile=128, spatial_overlap=32)
    torch.testing.assert_close(same, full, atol=1e-5, rtol=1e-5)
    # the blend is exact for a decoder without spatial context (nearest upsampling + 1x1 conv)
    conv = torch.nn.Conv2d(4, 3, 1)

    def local(x):
        return conv(torch.nn.functional.interpolate(x, scale_factor=8, mode="nearest"))

    x = torch.randn(2, 4, 20, 27)
    with torch.no_grad():
        torch.testing.assert_close(tiling.tiled_2d(local, 8, 3, 8)(x), local(x), atol=1e-5, rtol=1e-5)
    # with real spatial context tiles differ at the seams (by design, as the original): shape and values only
    tiled = vae_v1_2.decode_tiled(vae.net, z, 34, spatial_tile=64, spatial_overlap=32)
    assert tiled.shape == full.shape and torch.isfinite(tiled).all()


def test_noise_is_seeded_on_the_cpu():
    a = noise.seeded_noise(7, (2, 3))
    assert torch.equal(a, noise.seeded_noise(7, (2, 3)))
    assert torch.equal(a, torch.randn((2, 3), generator=torch.Generator().manual_seed(7)))
    assert noise.seeded_noise(2 ** 64 - 1, (1,)).shape == (1,)  # the full seed range of the widget


def test_video_to_images_layout():
    v = torch.zeros(2, 3, 4, 5, 6)
    v[1, 0, 2] = 1.0
    imgs = video_to_images(v)
    assert imgs.shape == (8, 5, 6, 3) and imgs[6, 0, 0, 0] == 1.0 and imgs[6, 0, 0, 1] == 0.5


def test_mask_strategy_parse_defaults():
    entries = mask_strategy.parse_mask_strategy("0;1,2,-5,0,5,0.4")
    assert entries == [mask_strategy.MaskEntry(), mask_strategy.MaskEntry(1, 2, -5, 0, 5, 0.4)]
    assert mask_strategy.find_nearest_point(14, 5, 15) == 10 and mask_strategy.find_nearest_point(8, 5, 15) == 10
