"""Open-Sora 2.0 beyond the golden cases: the CLIP-L and Flux-layout loaders against transformers / the split
layout, the prompt suffix and buckets the spec records, and the pipeline's conditions and input errors."""
import pytest
import torch
from safetensors.torch import save_file

from comfyui_opensora.models import pipeline, rflow_v2, tiny
from comfyui_opensora.models.opensora import buckets, v2_0
from comfyui_opensora.models.opensora.mmdit import MMDiT, image_ids, load_mmdit, pack
from comfyui_opensora.models.text_encoders import CLIP_TOKENIZER_FILES, clip_pooled, find_tokenizer, load_clip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    paths = {k: str(root / v) for k, v in {**tiny.TINY_FILES, **tiny.TINY_FILES_V2}.items()}
    tiny.write_tiny_t5(paths["text_encoder"])
    tiny.write_tiny_clip(paths["clip"])
    tiny.write_tiny_mmdit(paths["model_v2.0"])
    tiny.write_tiny_mmdit(paths["model_v2.0_dc_ae"], in_channels=32, patch_size=1)
    tiny.write_tiny_hunyuan_vae(paths["vae_hunyuan"])
    tiny.write_tiny_dc_ae(paths["vae_dc_ae"])
    t5 = pipeline.load_text_encoder(paths["text_encoder"], None, "fp32", "cpu")
    clip = pipeline.load_text_encoder(paths["clip"], None, "fp32", "cpu")
    return {"paths": paths, "t5": t5, "clip": clip, "model": pipeline.load_diffusion_model(paths["model_v2.0"]),
            "vae": pipeline.load_vae(paths["vae_hunyuan"])}


def test_clip_single_file_matches_transformers(models):
    """clip_l.safetensors layout -> the pooled vector transformers' CLIPTextModelWithProjection gives."""
    from safetensors.torch import load_file
    from transformers import CLIPTextModelWithProjection, CLIPTokenizer

    path = models["paths"]["clip"]
    enc = load_clip(path, find_tokenizer(path, files=CLIP_TOKENIZER_FILES))
    ref = CLIPTextModelWithProjection(enc.model.config.__class__(**{**enc.model.config.to_dict(),
                                                                     "projection_dim": 64}))
    ref.load_state_dict(load_file(path), strict=False)
    texts = ["a red circle moving left", ""]
    ids = CLIPTokenizer.from_pretrained(find_tokenizer(path, files=CLIP_TOKENIZER_FILES))(
        texts, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = ref.eval().text_model(input_ids=ids).pooler_output
    got = clip_pooled(enc, texts)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got[0] - got[1]).abs().max() > 1e-3, "the prompt must change the pooled vector"


def test_flux_fused_layout_loads_as_split():
    """FLUX.1 names (img_attn.qkv, single linear1) load into the split-qkv model with identical outputs."""
    torch.manual_seed(0)
    model = MMDiT(in_channels=16, vec_in_dim=8, context_in_dim=8, hidden_size=64, num_heads=2, depth=1,
                  depth_single_blocks=1, axes_dim=(4, 14, 14), guidance_embed=True, cond_embed=False,
                  rope_half_split=False).eval()
    fused = tiny.flux_layout(model.state_dict())
    loaded = load_mmdit(fused, num_heads=2)
    assert loaded.half_split is False and loaded.guidance_in is not None
    img = torch.randn(2, 12, 16)
    args = (img, image_ids(2, 1, 6, 8), torch.randn(2, 5, 8), torch.zeros(2, 5, 3), torch.tensor([0.3, 0.9]),
            torch.randn(2, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded(*args, guidance=torch.tensor([4.0, 4.0])),
                                   model(*args, guidance=torch.tensor([4.0, 4.0])), atol=0, rtol=0)


def _rope_sampler_case(distilled: bool, half_split: bool):
    """A tiny MMDiT and the sampler call that drives it: the guided video sampler or FLUX.1's distilled one."""
    torch.manual_seed(0)
    model = MMDiT(in_channels=16, vec_in_dim=8, context_in_dim=8, hidden_size=64, num_heads=2, depth=1,
                  depth_single_blocks=1, axes_dim=(4, 14, 14), guidance_embed=distilled, cond_embed=not distilled,
                  rope_half_split=half_split).eval()
    z, txt, vec = torch.randn(2, 4, 1 if distilled else 2, 4, 6), torch.randn(2, 5, 8), torch.randn(2, 8)
    ts = rflow_v2.get_schedule(4, 6, z.shape[2])
    if distilled:
        return model, lambda: rflow_v2.sample_distilled(model, z, txt, vec, ts)
    return model, lambda: rflow_v2.sample(model, z, txt, vec, torch.zeros_like(txt[:1]), torch.zeros_like(vec[:1]), ts)


@pytest.mark.parametrize("half_split", [True, False])
@pytest.mark.parametrize("distilled", [False, True])
def test_samplers_compute_rope_once(monkeypatch, distilled, half_split):
    """The RoPE tables depend on the ids alone, so the samplers make them once per run: the output is bitwise
    what recomputing them in every step gives, and rope_angles runs once, not once per step."""
    from comfyui_opensora.models.opensora import mmdit

    model, run = _rope_sampler_case(distilled, half_split)
    calls, rope_angles = [], mmdit.rope_angles

    def counting(*args, **kwargs):
        calls.append(1)
        return rope_angles(*args, **kwargs)

    monkeypatch.setattr(mmdit, "rope_angles", counting)
    with torch.no_grad():
        once = run()
        assert len(calls) == 1
        forward = model.forward
        model.forward = lambda *args, rope=None, **kwargs: forward(*args, **kwargs)  # drop it: every step recomputes
        calls.clear()
        every_step = run()
    assert len(calls) == 1 + 4, "the sampler's own call, then one per step: the counter sees recomputation"
    assert torch.equal(once, every_step)


def test_prompt_suffix_and_buckets():
    assert v2_0.prompt_text("a cat") == "a cat. 24 FPS. 4 motion score."  # spec 5.4
    assert v2_0.prompt_text("a cat.", motion_score=7) == "a cat. 24 FPS. 7 motion score."
    # spec 6: inference sizes of 2.0's buckets
    for res, ar, hw in (("256px", "16:9", (192, 336)), ("256px", "9:16", (336, 192)), ("256px", "1:1", (256, 256)),
                        ("256px", "2.39:1", (160, 384)), ("768px", "16:9", (576, 1024)),
                        ("768px", "1:1", (768, 768)), ("768px", "2.39:1", (496, 1184))):
        assert buckets.get_image_size_v2(res, ar) == hw


def _cond(models, prompt="a red circle moving left"):
    return pipeline.encode_text(models["t5"], prompt, "opensora-v2.0", motion_score=None, offload=False,
                                clip=models["clip"])


def test_text_encoding(models):
    cond = _cond(models)
    assert cond["prompts"] == ["a red circle moving left. 24 FPS. 4 motion score."]
    assert cond["y"].shape == (1, 1, 512, 32) and cond["vec"].shape == (1, 64)
    assert cond["null_y"].shape == (1, 1, 512, 32) and cond["null_vec"].shape == (1, 64)
    with pytest.raises(pipeline.InputError, match="'clip'"):
        pipeline.encode_text(models["t5"], "x", "opensora-v2.0", offload=False)
    with pytest.raises(pipeline.InputError, match="'text_encoder'"):
        pipeline.encode_text(models["clip"], "x", "opensora-v2.0", offload=False, clip=models["clip"])


def test_loop_conditions_and_reproducibility(models):
    vae, model, cond = models["vae"], models["model"], _cond(models)
    latent = pipeline.empty_latent(vae, "custom", "16:9", 96, 64, 9, 1)
    assert latent["samples"].shape == (1, 16, 3, 8, 12)
    image = torch.rand(1, 3, 1, 64, 96) * 2 - 1
    lat = pipeline.add_reference(pipeline.add_reference(latent, vae, image, 0, 0, 1, 0.0), vae, image, 0, -1, 1, 0.0)
    out = pipeline.sample(model, cond, lat, 3, 3, 7.5, "rflow-v2", 1.0, 24)["samples"]
    ref = pipeline.encode_reference(vae, image, 64, 96)
    torch.testing.assert_close(out[0, :, 0], ref[:, 0])
    torch.testing.assert_close(out[0, :, -1], ref[:, 0])
    again = pipeline.sample(model, cond, lat, 3, 3, 7.5, "rflow-v2", 1.0, 24)["samples"]
    assert torch.equal(out, again)
    other = pipeline.sample(model, cond, lat, 4, 3, 7.5, "rflow-v2", 1.0, 24)["samples"]
    assert (other[0, :, 1] - out[0, :, 1]).abs().max() > 1e-3, "the seed must change the free frames"
    video = pipeline.decode(vae, {**latent, "samples": out})
    assert video.shape == (1, 3, 9, 64, 96)


@pytest.mark.parametrize("cond_type,placed", [
    ("i2v_head", [(0, 0)]), ("i2v_tail", [(-1, -1)]), ("i2v_loop", [(0, 0), (0, -1)]),
    ("v2v_head", [(0, 0)]), ("v2v_tail", [(-9, -9)])])
def test_reference_nodes_build_the_original_cond_types(models, cond_type, placed):
    """What the reference nodes place (target_start, ref_start) gives the cond_in the original builds for its
    cond_type: i2v head / tail / loop from one image, v2v head / tail from 9 latent frames of a video. placed:
    (reference_start, target_start) per reference node."""
    vae = models["vae"]
    latent = pipeline.empty_latent(vae, "custom", "16:9", 96, 64, 45, 1)
    frames = 1 if cond_type.startswith("i2v") else 33
    video = torch.rand(1, 3, frames, 64, 96) * 2 - 1
    length = 1 if frames == 1 else 9
    for reference_start, target_start in placed:
        latent = pipeline.add_reference(latent, vae, video, reference_start, target_start, length, 0.0)
    z = latent["samples"]
    masks, masked_ref, image_cond = v2_0.reference_conditions(z, latent["opensora"]["conditions"])
    expected = rflow_v2.condition(z, cond_type, [[pipeline.encode_reference(vae, video, 64, 96)]])
    assert torch.equal(masks, expected[0]) and torch.equal(masked_ref, expected[1])
    assert image_cond == cond_type.startswith("i2v")


def test_sampler_matches_rflow_v2_directly(models):
    """The pipeline's text-to-video is rflow_v2.sample on seeded noise with the released schedule."""
    from comfyui_opensora.models import noise as noise_mod, rflow_v2

    vae, model, cond = models["vae"], models["model"], _cond(models)
    latent = pipeline.empty_latent(vae, "custom", "16:9", 64, 48, 9, 1)
    out = pipeline.sample(model, cond, latent, 5, 4, 6.0, "rflow-v2", 1.0, 24, guidance_img=2.0)["samples"]
    z = noise_mod.seeded_noise(5, latent["samples"].shape, noise_mod.generator(5))
    ts = rflow_v2.get_schedule(4, 6 * 8 // 4, 3)
    with torch.no_grad():
        expected = rflow_v2.sample(model.net, (1 - ts[0]) * torch.zeros_like(z) + ts[0] * z, cond["y"][:, 0],
                                   cond["vec"], cond["null_y"][:, 0], cond["null_vec"], ts, 6.0, 2.0)
    torch.testing.assert_close(out, expected)


def test_input_errors(models):
    vae, model, cond = models["vae"], models["model"], _cond(models)
    with pytest.raises(pipeline.InputError, match="'num_frames'.*4k\\+1"):
        pipeline.empty_latent(vae, "custom", "16:9", 64, 48, 10, 1)
    with pytest.raises(pipeline.InputError, match="'width'.*16"):
        pipeline.empty_latent(vae, "custom", "16:9", 72, 48, 9, 1)
    with pytest.raises(pipeline.InputError, match="'resolution'"):
        pipeline.empty_latent(vae, "240p", "16:9", 0, 0, 9, 1)
    dc = pipeline.load_vae(models["paths"]["vae_dc_ae"])
    wrong = pipeline.empty_latent(dc, "custom", "16:9", 64, 64, 8, 1)
    with pytest.raises(pipeline.InputError, match="'latent'"):
        pipeline.sample(model, cond, wrong, 0, 2, 7.5, "rflow-v2", 1.0, 24)
    with pytest.raises(pipeline.InputError, match="'scheduler'"):
        pipeline.sample(model, cond, pipeline.empty_latent(vae, "custom", "1:1", 64, 64, 9, 1), 0, 2, 7.5, "rflow",
                        1.0, 24)
    latent = pipeline.empty_latent(vae, "custom", "1:1", 64, 64, 9, 1)
    v12 = pipeline.encode_text(models["t5"], "x", "opensora-v1.2", offload=False)
    with pytest.raises(pipeline.InputError, match="'negative'"):
        pipeline.sample(model, cond, latent, 0, 2, 7.5, "rflow-v2", 1.0, 24, negative=v12)
    with torch.no_grad():
        neg = _cond(models, "a green square")
    out = pipeline.sample(model, cond, latent, 0, 2, 7.5, "rflow-v2", 1.0, 24, negative=neg)["samples"]
    assert (out - pipeline.sample(model, cond, latent, 0, 2, 7.5, "rflow-v2", 1.0, 24)["samples"]).abs().max() > 1e-4
    edit = pipeline.add_reference(latent, vae, torch.zeros(1, 3, 1, 64, 64), 0, 0, 1, 0.5)
    with pytest.raises(pipeline.InputError, match="edit_ratio"):
        pipeline.sample(model, cond, edit, 0, 2, 7.5, "rflow-v2", 1.0, 24)


def test_dc_ae_pipeline(models):
    """The DC-AE variant: 128-channel latents in the release, 32 in the tiny model, patch 1, 4k frames."""
    vae = pipeline.load_vae(models["paths"]["vae_dc_ae"])
    model = pipeline.load_diffusion_model(models["paths"]["model_v2.0_dc_ae"])
    latent = pipeline.empty_latent(vae, "256px", "1:1", 0, 0, 8, 1)
    assert latent["samples"].shape == (1, 32, 2, 8, 8)
    out = pipeline.sample(model, _cond(models), latent, 0, 2, 7.5, "rflow-v2", 1.0, 24)
    assert pipeline.decode(vae, out).shape == (1, 3, 8, 256, 256)


def test_packing_matches_the_original(golden_dir):
    """pack() lays tokens out as the original's: its recorded step-0 cond is pack(cat(masks, masked_ref))."""
    import os

    from safetensors.torch import load_file

    t = load_file(os.path.join(golden_dir, "v2.0", "sampler", "case_i2v_loop_3steps_flowshift.safetensors"))
    cond = pack(torch.cat([t["masks"], t["masked_ref"]], dim=1))
    assert torch.equal(cond, t["step0_cond"][: cond.shape[0]])
    assert cond[:, :, 4:].abs().sum() > 0, "the reference frames must be in the tokens"


def test_fp8_storage_through_the_loader(models, tmp_path):
    """dtype fp8_e4m3fn stores the block weights in fp8 and samples close to fp32; a ComfyUI-style scaled_fp8
    file of that model loads back with the same weights."""
    from comfyui_opensora.models import fp8

    path = models["paths"]["model_v2.0"]
    full = pipeline.load_diffusion_model(path, "fp32")
    small = pipeline.load_diffusion_model(path, "fp8_e4m3fn")
    assert small.dtype == torch.float32  # compute precision on CPU
    assert small.net.double_blocks[0].img_attn.q_proj.weight.dtype == torch.float8_e4m3fn
    assert fp8.parameter_bytes(small.net) < 0.5 * fp8.parameter_bytes(full.net)
    cond = _cond(models)
    latent = pipeline.empty_latent(models["vae"], "custom", "16:9", 64, 48, 9, 1)
    a = pipeline.sample(full, cond, latent, 1, 2, 7.5, "rflow-v2", 1.0, 24)["samples"]
    b = pipeline.sample(small, cond, latent, 1, 2, 7.5, "rflow-v2", 1.0, 24)["samples"]
    assert (a - b).abs().max() / a.abs().max() < 0.05
    saved = str(tmp_path / "v2_fp8.safetensors")
    save_file({k: v.contiguous() for k, v in fp8.scaled_fp8_state_dict(small.net).items()}, saved)
    again = pipeline.load_diffusion_model(saved, "auto")
    assert again.net.double_blocks[0].img_attn.q_proj.weight.dtype == torch.float8_e4m3fn
    c = pipeline.sample(again, cond, latent, 1, 2, 7.5, "rflow-v2", 1.0, 24)["samples"]
    torch.testing.assert_close(c, b)


def _released(keys_file):
    """The released state dict's layout as meta tensors, from the spec's key list (name <tab> shape)."""
    import os

    from conftest import REPO_ROOT

    path = os.path.join(REPO_ROOT, "..", "shared", "specs", "opensora_keys", keys_file)
    if not os.path.exists(path):
        pytest.skip(f"the spec's key lists are not at {os.path.dirname(path)}")
    sd = {}
    for line in open(path):
        if line.strip() and not line.startswith("#"):
            name, shape = line.rstrip("\n").split("\t")
            sd[name] = torch.empty(tuple(int(x) for x in shape.strip("()").split(",") if x.strip()), device="meta")
    return sd


def test_released_layouts_load():
    """Every 2.0 file's released key layout is recognised and builds the released configuration."""
    from comfyui_opensora.models import checkpoint
    from comfyui_opensora.models.opensora import dc_ae, hunyuan_vae, mmdit

    sd = _released("v2.0_MMDiT_Open_Sora_v2_keys.txt")
    assert checkpoint.detect_family(sd) == "mmdit"
    config = mmdit.config_from_state_dict(sd)
    assert config == {**mmdit.RELEASED, "mlp_ratio": 4.0}
    assert sum(p.numel() for p in mmdit.load_mmdit(sd).parameters()) == 11_891_390_528  # spec 1.6
    config = mmdit.config_from_state_dict(_released("v2.0_MMDiT_Video_DC_AE_keys.txt"))
    assert (config["in_channels"], config["patch_size"]) == (128, 1)
    sd = _released("v2.0_hunyuan_vae_keys.txt")
    assert checkpoint.detect_family(sd) == "hunyuan_vae"
    vae = hunyuan_vae.load_hunyuan_vae(sd)
    assert vae.latent_channels == 16 and vae.spatial_compression_ratio == 8
    sd = _released("v2.0_video_dc_ae_f32t4c128_keys.txt")
    assert checkpoint.detect_family(sd) == "dc_ae"
    assert dc_ae.load_dc_ae(sd).spatial_ratio == 32


def _count_calls(module, fn):
    calls = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    try:
        with torch.no_grad():
            fn()
    finally:
        handle.remove()
    return len(calls)


@pytest.mark.parametrize("flags,z_shape,x_shape", [
    ({}, (1, 16, 3, 3, 3), (1, 3, 9, 24, 24)),
    ({"use_slicing": True}, (2, 16, 3, 3, 3), (2, 3, 9, 24, 24)),
    ({"use_spatial_tiling": True}, (1, 16, 2, 6, 9), (1, 3, 5, 48, 72)),
    ({"use_temporal_tiling": True, "use_spatial_tiling": True, "use_slicing": True}, (2, 16, 5, 6, 9),
     (2, 3, 17, 48, 72)),
])
def test_hunyuan_vae_counts_its_windows(flags, z_shape, x_shape):
    """calls() (the length of the VAE progress bars) is how often encode / decode really run the encoder /
    decoder, with every tiling flag: 32 px tiles, 8-frame windows."""
    from comfyui_opensora.models.opensora.hunyuan_vae import HunyuanVAE

    vae = HunyuanVAE(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4, sample_size=32,
                     sample_tsize=8, **flags)
    z, x = torch.randn(z_shape), torch.rand(x_shape) * 2 - 1
    assert _count_calls(vae.decoder, lambda: vae.decode(z)) == vae.calls(z.shape, decode=True)
    assert _count_calls(vae.encoder, lambda: vae.encode(x)) == vae.calls(x.shape, decode=False)
    if len(flags) == 3:
        assert vae.calls(z.shape, decode=True) == 2 * 5 * 6  # slices x time windows x spatial tiles


@pytest.mark.parametrize("flags,z_shape,x_shape", [
    ({}, (2, 32, 2, 2, 2), (2, 3, 8, 64, 64)),
    ({"use_temporal_tiling": True, "use_spatial_tiling": True}, (1, 32, 4, 3, 2), (1, 3, 16, 64, 64)),
])
def test_dc_ae_counts_its_windows(flags, z_shape, x_shape):
    from comfyui_opensora.models.opensora.dc_ae import VideoDCAE

    widths = [8, 8, 16, 32, 32, 64]
    on = {"use_spatial_tiling": False, "use_temporal_tiling": False, **flags}
    vae = VideoDCAE(latent_channels=32, encoder_widths=widths, encoder_depths=[1] * 6, decoder_widths=widths,
                    decoder_depths=[1] * 6, spatial_tile_size=64, temporal_tile_size=8, **on)
    z, x = torch.randn(z_shape), torch.rand(x_shape) * 2 - 1
    assert _count_calls(vae.decoder, lambda: vae.decode(z)) == vae.calls(z.shape, decode=True)
    assert _count_calls(vae.encoder, lambda: vae.encode(x)) == vae.calls(x.shape, decode=False)


def test_v2_vae_progress_and_cancel(models):
    """The 2.0 VAE decode and encode advance a progress bar per window and stop when the user cancels."""
    from comfyui_opensora import comfy_adapter

    vae = models["vae"]
    latent = pipeline.empty_latent(vae, "custom", "16:9", 96, 64, 17, 1)
    seen = []
    comfy_adapter.set_progress_hook(lambda node, value, total: seen.append((value, total)))
    try:
        # 5 latent frames in windows of 2 every 1, 8x12 latents in tiles of 4 every 3: 5 x (3 x 4) decoder runs
        video = pipeline.decode(vae, latent, temporal_chunk=2, spatial_tile=32, spatial_overlap=8)
        assert seen == [(i + 1, 60) for i in range(60)]
        assert video.shape == (1, 3, 17, 64, 96)
        seen.clear()
        pipeline.encode(vae, video.clamp(-1, 1))
        assert seen and seen[-1][0] == seen[-1][1]
        comfy_adapter.request_cancel()
        with pytest.raises(comfy_adapter.Interrupted):
            pipeline.decode(vae, latent)
    finally:
        comfy_adapter.clear_cancel()
        comfy_adapter.set_progress_hook(None)
    with pytest.raises(pipeline.InputError, match="temporal_chunk"):
        pipeline.decode(vae, latent, temporal_chunk=1)
    with pytest.raises(pipeline.InputError, match="spatial_tile"):
        pipeline.decode(vae, latent, spatial_tile=36)
    with pytest.raises(pipeline.InputError, match="spatial_overlap"):
        pipeline.decode(vae, latent, spatial_tile=32, spatial_overlap=32)


@pytest.mark.parametrize("component,case", [
    ("hunyuan_vae", "decode_spatial_temporal_tiled_slicing_B2"), ("hunyuan_vae", "decode_spatial_tiled"),
    ("dc_ae", "decode_spatial_tiled"), ("dc_ae", "decode_temporal_tiled")])
def test_decode_node_tiles_are_the_originals(golden_dir, component, case):
    """The decode node's spatial_tile (px), spatial_overlap (px; over spatial_tile it is the original's
    tile_overlap_factor) and temporal_chunk (latent frames) are the original's tiling: set to a golden case's,
    the pipeline decodes the golden weights to the original's output."""
    import json
    import os

    from safetensors.torch import load_file

    folder = os.path.join(golden_dir, "v2.0", component)
    spec = json.load(open(os.path.join(folder, f"case_{case}.json")))
    flags = spec["call"]["flags"]
    t = load_file(os.path.join(folder, spec["tensor_file"]))
    vae = pipeline.load_vae(os.path.join(folder, "weights.safetensors"), "fp32")
    z = t["z"]
    if component == "hunyuan_vae":
        tiles = json.load(open(os.path.join(folder, "config.json")))["derived"]
        tile, overlap = tiles["tile_sample_min_size"], 0.25  # the tiny config's tile_overlap_factor
        chunk = tiles["tile_latent_min_tsize"] if flags.get("use_temporal_tiling") else 0
        frames = 4 * (z.shape[2] - 1) + 1
    else:
        tile, overlap = flags["spatial_tile_size"], flags["tile_overlap_factor"]
        chunk, frames = flags["temporal_tile_size"] // 4, 4 * z.shape[2]
    r = vae.spatial_ratio
    latent = {"samples": z, "opensora": pipeline._new_info(vae, frames, r * z.shape[3], r * z.shape[4])}
    video = pipeline.decode(vae, latent, temporal_chunk=chunk, spatial_tile=tile, spatial_overlap=int(tile * overlap))
    torch.testing.assert_close(video, t["x"], **spec["recommended_tolerance"])


# -- t2i2v: FLUX.1-dev and its autoencoder make the first frame ----------------------------------------------------
@pytest.mark.parametrize("layout", ["bfl", "diffusers"])
def test_flux_ae_matches_diffusers(layout):
    """The FLUX.1 autoencoder (no quant convs, 16 channels, latents 0.3611 * (z - 0.1159)) in the BFL single-file
    layout of flux1-dev-ae.safetensors and in diffusers' layout: encode and decode as diffusers' AutoencoderKL."""
    diffusers = pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    from comfyui_opensora.models import checkpoint, sd_vae

    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4,
                                  latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                                  scaling_factor=sd_vae.FLUX_AE_SCALE, shift_factor=sd_vae.FLUX_AE_SHIFT)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref.eval()
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    if layout == "bfl":
        sd = tiny.ldm_vae_layout(sd, levels=2)
        back = convert_ldm_vae_checkpoint({f"first_stage_model.{k}": v for k, v in sd.items()},
                                          {"down_block_types": ("DownEncoderBlock2D",) * 2,
                                           "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1})
        assert set(back) == set(ref.state_dict())
    assert checkpoint.detect_family(sd) == "flux_ae"
    ours = sd_vae.load_video_vae(sd).eval()
    x = torch.rand(1, 3, 2, 16, 16) * 2 - 1
    with torch.no_grad():
        z = ours.encode(x)
        want = (ref.encode(x[:, :, 0]).latent_dist.mean - ref.config.shift_factor) * ref.config.scaling_factor
        torch.testing.assert_close(z[:, :, 0], want, atol=1e-5, rtol=1e-5)
        raw = z[:, :, 1] / ref.config.scaling_factor + ref.config.shift_factor
        torch.testing.assert_close(ours.decode(z)[:, :, 1], ref.decode(raw).sample, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def flux(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("flux")
    model = pipeline.load_diffusion_model(tiny.write_tiny_flux(str(root / "flux.safetensors")))
    vae = pipeline.load_vae(tiny.write_tiny_flux_ae(str(root / "ae.safetensors")))
    prompt = "a red panda eating bamboo"
    cond = pipeline.encode_text(models["t5"], prompt, "opensora-v2.0-t2i", offload=False, clip=models["clip"])
    return {"model": model, "vae": vae, "cond": cond, "prompt": prompt}


def test_flux_t2i_is_the_distilled_sampler(flux):
    """The sampler on FLUX.1 is rflow_v2.sample_distilled on the seeded noise, with the 2.0 schedule at T = 1 and
    cfg as the distilled guidance; its prompt carries no FPS / motion suffix."""
    from comfyui_opensora.models import noise as noise_mod, rflow_v2

    model, vae, cond = flux["model"], flux["vae"], flux["cond"]
    assert model.family == "opensora-v2.0" and model.net.guidance_in is not None and model.net.cond_in is None
    assert vae.family == "flux-ae" and cond["prompts"] == [flux["prompt"]]
    latent = pipeline.empty_latent(vae, "custom", "16:9", 64, 48, 1, 1)
    assert latent["samples"].shape == (1, 16, 1, 6, 8)
    out = pipeline.sample(model, cond, latent, 7, 4, 4.0, "rflow-v2", 1.0, 24)["samples"]
    z = noise_mod.seeded_noise(7, latent["samples"].shape, noise_mod.generator(7))
    ts = rflow_v2.get_schedule(4, 3 * 4, 1)
    with torch.no_grad():
        expected = rflow_v2.sample_distilled(model.net, ts[0] * z, cond["y"][:, 0], cond["vec"], ts, 4.0)
    torch.testing.assert_close(out, expected)
    other = pipeline.sample(model, cond, latent, 7, 4, 2.0, "rflow-v2", 1.0, 24)["samples"]
    assert (other - out).abs().max() > 1e-4, "the guidance must reach the model"
    image = pipeline.decode(vae, {**latent, "samples": out})
    assert image.shape == (1, 3, 1, 48, 64)
    big = pipeline.empty_latent(vae, "768px", "16:9", 0, 0, 1, 1)
    h, w = buckets.get_image_size_v2("768px", "16:9", 16)
    assert big["samples"].shape == (1, 16, 1, h // 8, w // 8)


def test_flux_and_video_latents_do_not_mix(models, flux):
    video_latent = pipeline.empty_latent(models["vae"], "custom", "16:9", 64, 48, 9, 1)
    with pytest.raises(pipeline.InputError, match="FLUX.1 autoencoder"):
        pipeline.sample(flux["model"], flux["cond"], video_latent, 0, 2, 4.0, "rflow-v2", 1.0, 24)
    image_latent = pipeline.empty_latent(flux["vae"], "custom", "16:9", 64, 48, 1, 1)
    with pytest.raises(pipeline.InputError, match="Reference Condition"):
        pipeline.sample(models["model"], _cond(models), image_latent, 0, 2, 7.5, "rflow-v2", 1.0, 24)
    frames = pipeline.empty_latent(flux["vae"], "custom", "16:9", 64, 48, 3, 1)
    with pytest.raises(pipeline.InputError, match="num_frames to 1"):
        pipeline.sample(flux["model"], flux["cond"], frames, 0, 2, 4.0, "rflow-v2", 1.0, 24)
