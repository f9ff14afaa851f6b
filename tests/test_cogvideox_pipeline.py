"""CogVideoX through the pack's nodes' model layer, against diffusers' own pipelines on the same tiny weights and
noise (diffusers: test extra only); bad input."""
import os

import pytest
import torch

from comfyui_opensora.models import noise, pipeline
from comfyui_opensora.models.cogvideox.loading import SCALE, SNR_SHIFT
from comfyui_opensora.models.tiny import write_tiny_cogvideox, write_tiny_t5

import diffusers  # noqa: E402  (test extra)

VARIANTS = ["2b", "5b", "5b_i2v", "1.5", "1.5_i2v"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cog")
    folders = {v: write_tiny_cogvideox(str(root / f"cog_{v}"), v) for v in VARIANTS}
    t5 = write_tiny_t5(str(root / "t5.safetensors"))
    enc = pipeline.load_text_encoder(t5, None, "fp32", "cpu")
    cond = pipeline.encode_text(enc, "a red circle moving left", "cogvideox")
    return folders, cond


def _diffusers_pipe(folder, variant, scheduler):
    transformer = diffusers.CogVideoXTransformer3DModel.from_pretrained(os.path.join(folder, "transformer"))
    vae = diffusers.AutoencoderKLCogVideoX.from_pretrained(os.path.join(folder, "vae"))
    sched_cls = diffusers.CogVideoXDPMScheduler if scheduler == "dpm" else diffusers.CogVideoXDDIMScheduler
    sched = sched_cls(beta_schedule="scaled_linear", prediction_type="v_prediction", timestep_spacing="trailing",
                      rescale_betas_zero_snr=True, snr_shift_scale=SNR_SHIFT[variant])
    cls = diffusers.CogVideoXImageToVideoPipeline if variant.endswith("i2v") else diffusers.CogVideoXPipeline
    return cls(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer, scheduler=sched)


@pytest.mark.parametrize("variant,scheduler", [("2b", "ddim"), ("5b", "dpm"), ("1.5", "dpm"), ("5b_i2v", "ddim"),
                                               ("1.5_i2v", "ddim")])
def test_sampling_matches_diffusers_pipeline(tiny, variant, scheduler):
    folders, cond = tiny
    model = pipeline.load_diffusion_model(folders[variant], "fp32")
    vae = pipeline.load_vae(folders[variant], "fp32")
    frames, seed, steps = 17, 3, 3
    lat = pipeline.empty_latent(vae, "custom", "1:1", 64, 64, frames, 1)
    image = None
    if variant.endswith("i2v"):
        # the reference samples the image posterior; make its std vanish so both use the mean
        with torch.no_grad():
            vae.net.encoder.conv_out.conv.weight[16:] = 0
            vae.net.encoder.conv_out.conv.bias[16:] = -30
        image = (torch.rand(1, 64, 64, 3) * 255).round() / 255  # what a PIL image holds
        lat = pipeline.add_reference(lat, vae, image.permute(3, 0, 1, 2)[None] * 2 - 1, 0, 0, 1, 0.0)
    ours = pipeline.sample(model, cond, lat, seed=seed, steps=steps, cfg=5.0, scheduler=scheduler, denoise=1.0,
                           fps=8, dynamic_cfg=True)["samples"]

    pipe = _diffusers_pipe(folders[variant], variant, scheduler)
    if variant.endswith("i2v"):
        pipe.vae.load_state_dict(vae.net.state_dict(), strict=False)
    f_lat = (frames - 1) // 4 + 1
    pad = 1 if variant.startswith("1.5") and f_lat % 2 else 0
    gen = noise.generator(seed)
    z = noise.seeded_noise(seed, (1, f_lat + pad, 16, 8, 8), gen)
    kw = dict(height=64, width=64, num_frames=frames, num_inference_steps=steps, guidance_scale=5.0,
              use_dynamic_cfg=True, latents=z, generator=gen, prompt_embeds=cond["y"][:, 0],
              negative_prompt_embeds=cond["null_y"][:, 0], output_type="latent")
    if image is not None:
        from PIL import Image

        kw["image"] = Image.fromarray((image[0] * 255).round().byte().numpy())
    with torch.no_grad():
        want = pipe(**kw).frames
    want = want[:, pad:] / SCALE[variant]
    torch.testing.assert_close(ours, want.permute(0, 2, 1, 3, 4), atol=2e-4, rtol=2e-4)


def test_bad_input(tiny, tmp_path):
    folders, cond = tiny
    model = pipeline.load_diffusion_model(folders["1.5"], "fp32")
    vae = pipeline.load_vae(folders["5b"], "fp32")
    with pytest.raises(pipeline.InputError, match="18 frames is not 4k\\+1"):
        pipeline.empty_latent(vae, "custom", "1:1", 64, 64, 18, 1)
    lat = pipeline.empty_latent(vae, "custom", "1:1", 64, 64, 13, 1)
    with pytest.raises(pipeline.InputError, match="13 frames is not 8k\\+1, which CogVideoX 1.5 needs"):
        pipeline.sample(model, cond, lat, 1, 1, 5.0, "dpm", 1.0, 8)
    lat = pipeline.empty_latent(vae, "custom", "1:1", 72, 64, 17, 1)
    with pytest.raises(pipeline.InputError, match="72x64 is not a multiple of 16"):
        pipeline.sample(model, cond, lat, 1, 1, 5.0, "dpm", 1.0, 8)
    i2v = pipeline.load_diffusion_model(folders["5b_i2v"], "fp32")
    lat = pipeline.empty_latent(pipeline.load_vae(folders["5b_i2v"], "fp32"), "custom", "1:1", 64, 64, 17, 1)
    with pytest.raises(pipeline.InputError, match="image-to-video model and no image was given"):
        pipeline.sample(i2v, cond, lat, 1, 1, 5.0, "dpm", 1.0, 8)
    two_b = pipeline.load_diffusion_model(folders["2b"], "fp32")
    lat = pipeline.empty_latent(pipeline.load_vae(folders["5b"], "fp32"), "custom", "1:1", 64, 64, 17, 1)
    with pytest.raises(pipeline.InputError, match="scaling factor 0.7, but CogVideoX 2b uses 1.15258426"):
        pipeline.sample(two_b, cond, lat, 1, 1, 5.0, "dpm", 1.0, 8)
    with pytest.raises(pipeline.InputError, match="'rflow' is not a scheduler of cogvideox"):
        pipeline.sample(two_b, cond, lat, 1, 1, 5.0, "rflow", 1.0, 8)
    with pytest.raises(pipeline.InputError, match="encoded for 'cogvideox' but the model is 'opensora-v1.2'"):
        from comfyui_opensora.models.tiny import write_tiny_stdit3

        os_model = pipeline.load_diffusion_model(write_tiny_stdit3(str(tmp_path / "m.safetensors")), "fp32")
        pipeline.sample(os_model, cond, lat, 1, 1, 5.0, "rflow", 1.0, 8)


def test_video_to_video_keeps_the_input_at_denoise_zero(tiny):
    folders, cond = tiny
    model = pipeline.load_diffusion_model(folders["5b"], "fp32")
    vae = pipeline.load_vae(folders["5b"], "fp32")
    enc = pipeline.encode(vae, torch.rand(1, 3, 9, 64, 64) * 2 - 1)
    same = pipeline.sample(model, cond, enc, 1, 4, 5.0, "ddim", 0.0, 8)
    assert torch.equal(same["samples"], enc["samples"])
    half = pipeline.sample(model, cond, enc, 1, 4, 5.0, "ddim", 0.5, 8)
    assert half["samples"].shape == enc["samples"].shape and torch.isfinite(half["samples"]).all()


def test_offload_modes_give_the_same_result(tiny):
    folders, cond = tiny
    vae = pipeline.load_vae(folders["5b"], "fp32")
    lat = pipeline.empty_latent(vae, "custom", "1:1", 64, 64, 17, 1)
    outs = []
    for mode in ("model", "none", "sequential"):
        model = pipeline.load_diffusion_model(folders["5b"], "fp32", mode)
        outs.append(pipeline.sample(model, cond, lat, 2, 2, 5.0, "dpm", 1.0, 8)["samples"])
        assert all(p.device.type == "cpu" for p in model.net.parameters())
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])
    with pytest.raises(pipeline.ModelLoadError, match="CogVideoX 1.5 does not run in fp16"):
        pipeline.load_diffusion_model(folders["1.5"], "fp16")


def test_sequential_offload_moves_one_block_at_a_time(tiny):
    """The hook path, exercised on CPU by naming the offload device differently ('cpu:0' vs 'cpu')."""
    from comfyui_opensora.models import offload

    folders, cond = tiny
    model = pipeline.load_diffusion_model(folders["5b"], "fp32")
    x = torch.randn(2, 5, 16, 8, 8)
    text = torch.randn(2, 226, 32)
    t = torch.tensor([500, 500])
    with torch.no_grad():
        want = model.net(x, text, t)
        seen = []
        for blk in model.net.transformer_blocks:
            blk.register_forward_pre_hook(lambda m, a: seen.append(("in", id(m))))
        with offload.on_device(model.net, "sequential", torch.device("cpu"), torch.device("cpu", 0)) as net:
            got = net(x, text, t)
    assert torch.equal(got, want)
    assert len(seen) == len(model.net.transformer_blocks)


def test_vae_decode_matches_diffusers_and_tiles(tiny):
    """Untiled decode equals diffusers' (chunked, conv cache); spatial tiling equals diffusers' enable_tiling with
    the same tile and overlap."""
    folders, _ = tiny
    vae = pipeline.load_vae(folders["5b"], "fp32")
    ref = diffusers.AutoencoderKLCogVideoX.from_pretrained(os.path.join(folders["5b"], "vae")).eval()
    z = torch.randn(1, 16, 5, 12, 16)
    lat = {"samples": z, "opensora": {"family": "cogvideox", "num_frames": 17, "height": 96, "width": 128,
                                      "conditions": []}}
    ours = pipeline.decode(vae, lat)
    with torch.no_grad():
        want = ref.decode(z).sample
    torch.testing.assert_close(ours, want, atol=1e-4, rtol=1e-4)
    tiled = pipeline.decode(vae, lat, spatial_tile=64, spatial_overlap=16)
    ref.enable_tiling(tile_sample_min_height=64, tile_sample_min_width=64, tile_overlap_factor_height=0.25,
                      tile_overlap_factor_width=0.25)
    with torch.no_grad():
        want_tiled = ref.decode(z).sample
    torch.testing.assert_close(tiled, want_tiled, atol=1e-4, rtol=1e-4)  # diffusers' own tiling, seam for seam
    assert (tiled - ours).abs().max() > 1e-4, "the tiles must differ from the untiled decode somewhere"
    whole = pipeline.decode(vae, lat, spatial_tile=128, spatial_overlap=16)  # one tile = the untiled decode
    torch.testing.assert_close(whole, ours, atol=1e-5, rtol=1e-5)
