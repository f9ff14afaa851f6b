"""Open-Sora 1.0 / 1.1 beyond the golden cases: the SD VAE in its three key layouts (checked against diffusers),
the released-checkpoint loaders, and the sampler's checks."""

import pytest
import torch

from comfyui_opensora.models import pipeline, sd_vae
from comfyui_opensora.models.opensora.stdit import STDiT
from comfyui_opensora.models.tiny import (ldm_vae_layout, write_tiny_sd_vae, write_tiny_stdit, write_tiny_stdit2,
                                          write_tiny_t5)

diffusers = pytest.importorskip("diffusers")


def _diffusers_vae():
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4,
                                  latent_channels=4)
    with torch.no_grad():
        for p in vae.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return vae.eval()


@pytest.mark.parametrize("layout", ["diffusers", "diffusers_old", "ldm"])
def test_sd_vae_layouts_match_diffusers(layout):
    ref = _diffusers_vae()
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    if layout == "diffusers_old":
        old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
        sd = {next((k.replace(f".{n}.", f".{o}.") for n, o in old.items() if f".{n}." in k), k): v for k, v in sd.items()}
    elif layout == "ldm":
        sd = ldm_vae_layout(sd, levels=2)
        # the test's own LDM names are the ones diffusers' converter reads
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        back = convert_ldm_vae_checkpoint({f"first_stage_model.{k}": v for k, v in sd.items()},
                                          {"down_block_types": ("DownEncoderBlock2D",) * 2,
                                           "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1})
        assert set(back) == set(ref.state_dict())
    assert pipeline.checkpoint.detect_family(sd) == "sd_vae"
    ours = sd_vae.load_video_vae(sd).eval()
    x = torch.rand(1, 3, 2, 16, 16) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x)
        want = ref.encode(x[:, :, 0]).latent_dist.mean * sd_vae.SD_SCALE
        torch.testing.assert_close(z[:, :, 0], want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.decode(z)[:, :, 1], ref.decode(z[:, :, 1] / sd_vae.SD_SCALE).sample,
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side,scale", [(32, 0.5), (64, 1.0)])
def test_v1_0_loader_reads_the_size_from_the_position_tables(tmp_path, side, scale):
    """The released .pth files carry pos_embed tables: 256px (32x32 latent, space_scale 0.5) or 512px (64x64,
    1.0). The loader drops them, rebuilds the model for that size, and its recomputed tables equal the file's."""
    torch.manual_seed(0)
    net = STDiT(input_size=(16, side, side), hidden_size=32, depth=1, num_heads=16, caption_channels=16,
                model_max_length=120, space_scale=scale)
    path = str(tmp_path / "stdit.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = pipeline.load_diffusion_model(path, "fp32")
    assert model.family == "opensora-v1.0" and model.config["input_size"] == (16, side, side)
    torch.testing.assert_close(model.net.pos_embed, net.pos_embed)
    torch.testing.assert_close(model.net.pos_embed_temporal, net.pos_embed_temporal)


@pytest.fixture(scope="module")
def v1x(tmp_path_factory):
    root = tmp_path_factory.mktemp("v1x")
    paths = {"v1.0": write_tiny_stdit(str(root / "stdit.pth")), "v1.1": write_tiny_stdit2(str(root / "stdit2.safetensors")),
             "vae": write_tiny_sd_vae(str(root / "vae.safetensors")), "t5": write_tiny_t5(str(root / "t5.safetensors"))}
    return {"vae": pipeline.load_vae(paths["vae"], "fp32"), "t5": pipeline.load_text_encoder(paths["t5"], None),
            "v1.0": pipeline.load_diffusion_model(paths["v1.0"], "fp32"),
            "v1.1": pipeline.load_diffusion_model(paths["v1.1"], "fp32")}


def test_v1_1_image_to_video_keeps_the_image(v1x):
    """With mask strategy '0' the first latent frame stays the encoded image (SD VAE: one latent per frame) up to
    the last step, where v1.1 re-noises it to step 0 and lets the model denoise it (the original's mask_t == t
    rule at t = 0): it ends within the tiny step-0 noise of the image."""
    vae, model = v1x["vae"], v1x["v1.1"]
    assert vae.family == "sd-vae" and vae.latent_frames(9) == 9 and vae.align is None
    cond = pipeline.encode_text(v1x["t5"], "a red circle", "opensora-v1.1", offload=False)
    assert cond["y"].shape[2] == 200
    latent = pipeline.empty_latent(vae, "custom", "1:1", 32, 24, 5, 1)
    image = torch.rand(1, 3, 1, 24, 32) * 2 - 1
    latent = pipeline.add_reference(latent, vae, image, 0, 0, 1, 0.0)
    out = pipeline.sample(model, cond, latent, seed=1, steps=4, cfg=7.0, scheduler="iddpm", denoise=1.0, fps=24)
    ref = pipeline.encode_reference(vae, image, 24, 32)
    assert (out["samples"][0, :, 0] - ref[:, 0]).abs().max() < 0.1
    assert (out["samples"][0, :, 1] - ref[:, 0]).abs().max() > 0.5
    video = pipeline.decode(vae, out)
    assert video.shape == (1, 3, 5, 24, 32)


def test_v1_x_sampler_checks(v1x):
    vae = v1x["vae"]
    cond = pipeline.encode_text(v1x["t5"], "a cat", "opensora-v1.0", offload=False)
    assert cond["y"].shape[2] == 120
    wrong = pipeline.empty_latent(vae, "custom", "1:1", 64, 48, 17, 1)
    with pytest.raises(pipeline.InputError, match="fixed size.*64x64"):
        pipeline.sample(v1x["v1.0"], cond, wrong, seed=0, steps=2, cfg=7.0, scheduler="iddpm", denoise=1.0, fps=24)
    right = pipeline.empty_latent(vae, "custom", "1:1", 64, 64, 17, 1)
    with pytest.raises(pipeline.InputError, match="iddpm"):
        pipeline.sample(v1x["v1.0"], cond, right, seed=0, steps=2, cfg=7.0, scheduler="rflow", denoise=1.0, fps=24)
    out = pipeline.sample(v1x["v1.0"], cond, right, seed=0, steps=2, cfg=7.0, scheduler="iddpm", denoise=1.0, fps=24)
    again = pipeline.sample(v1x["v1.0"], cond, right, seed=0, steps=2, cfg=7.0, scheduler="iddpm", denoise=1.0,
                            fps=24)
    torch.testing.assert_close(out["samples"], again["samples"])  # seeded
    with pytest.raises(pipeline.InputError, match="encoded for 'opensora-v1.0'"):
        pipeline.sample(v1x["v1.1"], cond, right, seed=0, steps=2, cfg=7.0, scheduler="iddpm", denoise=1.0, fps=24)


def test_v1_1_hf_folder_loads(tmp_path):
    """hpcai-tech/OpenSora-STDiT-v2-stage3 as downloaded: a folder with config.json and model.safetensors."""
    import json

    folder = tmp_path / "OpenSora-STDiT-v2-stage3"
    folder.mkdir()
    write_tiny_stdit2(str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({"architectures": ["STDiT2"], "model_max_length": 200}))
    model = pipeline.load_diffusion_model(str(folder), "fp32")
    assert model.family == "opensora-v1.1" and model.net.null_caption.shape[0] == 200


def test_sd_vae_decode_tiles_and_chunks(v1x):
    """VAE Decode's spatial tiles and frame slices bound what the SD VAE decoder sees at once; with tiles at least
    as large as the frame, the result is the untiled one exactly."""
    vae = v1x["vae"]
    latent = {"samples": torch.randn(1, 4, 5, 12, 16),
              "opensora": {"family": "sd-vae", "num_frames": 5, "height": 96, "width": 128}}
    full = pipeline.decode(vae, latent)
    assert full.shape == (1, 3, 5, 96, 128)
    torch.testing.assert_close(pipeline.decode(vae, latent, spatial_tile=128, spatial_overlap=16), full)
    seen = []
    decode = vae.net.module.decode
    vae.net.module.decode = lambda z: (seen.append(tuple(z.shape)), decode(z))[1]
    try:
        tiled = pipeline.decode(vae, latent, temporal_chunk=2, spatial_tile=64, spatial_overlap=16)
    finally:
        vae.net.module.decode = decode
    assert tiled.shape == full.shape and torch.isfinite(tiled).all()
    assert max(s[0] for s in seen) <= 2 and max(s[2] for s in seen) <= 8 and max(s[3] for s in seen) <= 8, seen
    # away from the seams a tile's interior is decoded from the same latents as the untiled frame; GroupNorm's
    # statistics still differ per tile, so the tiled frame stays close, not equal
    assert (tiled - full).abs().mean() < (full - full.mean()).abs().mean()
