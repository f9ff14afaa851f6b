"""Open-Sora VAE v1.2 beyond the golden cases (tests/test_golden.py runs those): configs read from the golden and
released layouts, chunked decoding against the golden decode, bounded memory, tiling, seeded sampling in the
recorded draw order, frame-count errors, bf16. The model is the golden tiny one; inputs are a few pixels."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from comfyui_opensora.models import tiling
from comfyui_opensora.models.opensora import vae_v1_2
from conftest import golden_root
from golden_runners.v1_2_vae import Recorded

GOLDEN = os.path.join(golden_root(), "v1.2", "vae")
WEIGHTS = os.path.join(GOLDEN, "weights.safetensors")
KEYS = os.path.join(golden_root(), "..", "specs", "opensora_keys", "v1.2_OpenSoraVAE_V1_2_keys.txt")


def _case(name):
    spec = json.load(open(os.path.join(GOLDEN, f"case_{name}.json")))
    return spec, load_file(os.path.join(GOLDEN, spec["tensor_file"]))


@pytest.fixture(scope="module")
def config():
    return json.load(open(os.path.join(GOLDEN, "config.json")))


@pytest.fixture(scope="module")
def vae(config):
    return vae_v1_2.load_vae_v1_2(load_file(WEIGHTS), micro_frame_size=config["tiny"]["pipeline"]["micro_frame_size"])


@pytest.fixture(scope="module")
def released():
    """The released model on the meta device, from the released key list's shapes."""
    sd = {}
    for line in open(KEYS):
        if line.strip() and not line.startswith("#"):
            key, shape = line.rstrip("\n").split("\t")
            sd[key] = torch.empty(eval(shape), device="meta")
    return sd, vae_v1_2.load_vae_v1_2(sd)


def _temporal_args(cfg: dict) -> dict:
    """The original VAE_Temporal arguments, in our names."""
    return dict(channels=cfg["in_out_channels"], latent=cfg["latent_embed_dim"], filters=cfg["filters"],
                mults=tuple(cfg["channel_multipliers"]), num_res=cfg["num_res_blocks"],
                downsample=tuple(cfg["temporal_downsample"]), groups=cfg["num_groups"])


def _spatial_args(cfg: dict) -> dict:
    names = ("in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
             "norm_num_groups")
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k in names}


def test_config_from_golden_weights_is_the_tiny_config(config):
    got = vae_v1_2.config_from_state_dict(load_file(WEIGHTS))
    assert got["temporal"] == _temporal_args(config["tiny"]["pipeline"]["vae_temporal"])
    assert got["spatial"] == _spatial_args(config["tiny"]["autoencoder_kl"])
    assert got["micro_batch_size"] == config["tiny"]["pipeline"]["vae_2d"]["micro_batch_size"]


def test_released_layout_loads_strictly_with_released_config(config, released):
    sd, model = released
    got = vae_v1_2.config_from_state_dict(sd)
    assert got["temporal"] == _temporal_args(config["released"]["VAE_Temporal_SD"])
    spatial = next(v for k, v in config["released"].items() if k.startswith("autoencoder_kl"))
    assert got["spatial"] == _spatial_args(spatial)
    assert (model.micro_frame_size, model.micro_z_frame_size, model.micro_batch_size) == (17, 5, 4)
    assert set(model.state_dict()) == set(sd)
    assert sum(v.numel() for v in model.state_dict().values()) == 393_341_015  # the key list's header
    with pytest.raises(ValueError, match="does not match Open-Sora VAE v1.2"):
        vae_v1_2.load_vae_v1_2({k: v for k, v in sd.items() if k != "scale"})


def test_released_latent_frame_counts(released):
    """The spec's get_latent_size examples (section 2.2)."""
    model = released[1]
    assert {n: model.latent_frames(n) for n in (51, 102, 204, 408, 1, 100, 17)} == \
        {51: 15, 102: 30, 204: 60, 408: 120, 1: 1, 100: 29, 17: 5}


@pytest.mark.parametrize("temporal_chunk,calls", [(0, [1, 2, 3]), (4, [2, 3]), (5, [2, 3]), (100, [2, 3])])
def test_chunked_decode_is_the_golden_decode(vae, temporal_chunk, calls):
    """The original decodes 2-latent chunks (tiny) one by one; stacking several per call changes nothing. The
    last chunk (1 latent, 3 frames) differs in size, so it always runs alone. temporal_overlap is unused."""
    spec, t = _case("decode_T13_B2")
    done = []
    with torch.inference_mode():
        x = vae_v1_2.decode_tiled(vae, t["z"], spec["scalars"]["num_frames"], temporal_chunk=temporal_chunk,
                                  temporal_overlap=1, progress=done.append)
    assert x.dtype == torch.float32 and x.device.type == "cpu"
    torch.testing.assert_close(x, t["x"], **spec["recommended_tolerance"])
    assert done == calls


def test_peak_decode_size_does_not_grow_with_video_length(vae):
    """What the temporal and 2D decoders see at once is one call's chunk, for a video of 1 chunk or of 4."""
    seen = {}

    def watch(name):
        return lambda module, args: seen.__setitem__(name, max(seen.get(name, 0), args[0].numel()))

    hooks = [vae.temporal_vae.decoder.register_forward_pre_hook(watch("temporal")),
             vae.spatial_vae.module.decoder.register_forward_pre_hook(watch("spatial"))]
    sizes = {}
    try:
        with torch.inference_mode():
            for frames in (5, 20):
                seen.clear()
                z = torch.zeros(1, 4, vae.latent_frames(frames), 2, 2)
                assert vae_v1_2.decode_tiled(vae, z, frames).shape == (1, 3, frames, 16, 16)
                sizes[frames] = dict(seen)
    finally:
        for h in hooks:
            h.remove()
    # temporal: [1, 4 channels, 2 latents, 2, 2]; spatial: micro-batch of 4 frames [4, 4, 2, 2]
    assert sizes[5] == sizes[20] == {"temporal": 4 * 2 * 2 * 2, "spatial": vae.micro_batch_size * 4 * 2 * 2}


def test_tiling_blend_is_exact_for_a_decoder_without_context():
    """Nearest upsampling (2x time, 8x space) + a 1x1x1 conv sees only its own latent sample, so windows in time
    and space, cross-faded, must give back the untiled output: checks windows, ramps and normalisation."""
    conv = torch.nn.Conv3d(4, 3, 1)

    def local(z):
        return conv(torch.nn.functional.interpolate(z, scale_factor=(2, 8, 8), mode="nearest"))

    z = torch.randn(2, 4, 7, 9, 11, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = local(z)
        got = tiling.tiled(local, {-3: (3, 1, 2), -2: (4, 2, 8), -1: (5, 2, 8)})(z)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(tiling.tiled_time(local, 3, 2, 2)(z), want, atol=1e-5, rtol=1e-5)
        frame = tiling.tiled_2d(lambda f: local(f[:, :, None])[:, :, 0], 4, 1, 8)(z[:, :, 0])
        torch.testing.assert_close(frame, want[:, :, 0], atol=1e-5, rtol=1e-5)
    assert tiling.window_starts(9, 4, 2) == [0, 2, 4, 5] and tiling.window_starts(3, 4, 2) == [0]


def test_spatial_tiling_agrees_with_plain_decode(vae):
    """Tiles covering the frame are the plain decode. Smaller tiles are approximate: the 2D decoder's GroupNorm
    statistics, 3x3 convs and mid-block attention span the frame. On this random-weight tiny model (48-px tiles,
    16-px overlap, a 64x80 frame) the mean error measured 0.16 against a mean |x| of 0.36; the bound is 0.25."""
    z = torch.randn(1, 4, 1, 8, 10, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = vae.decode(z, 1)
        whole = vae_v1_2.decode_tiled(vae, z, 1, spatial_tile=80, spatial_overlap=16)
        tiled = vae_v1_2.decode_tiled(vae, z, 1, spatial_tile=48, spatial_overlap=16)
    torch.testing.assert_close(whole, plain, atol=1e-5, rtol=1e-5)
    assert tiled.shape == plain.shape
    assert (tiled - plain).abs().mean() < 0.25


def test_seeded_sampling_is_reproducible_and_follows_the_recorded_draw_order(vae):
    """A generator gives the same z twice, and the same z as feeding draws of the golden case's recorded shapes,
    in its recorded order (2D micro-batches first, then one per temporal chunk), taken from that generator."""
    spec, t = _case("encode_T13_B2")
    x = t["x"]
    with torch.inference_mode():
        a = vae.encode(x, generator=torch.Generator().manual_seed(3))
        b = vae.encode(x, generator=torch.Generator().manual_seed(3))
        gen = torch.Generator().manual_seed(3)
        draws = [torch.randn(c["shape"], generator=gen) for c in spec["call"]["noise_calls"]]
        recorded = vae.encode(x, noise_fn=Recorded(draws))
        other = vae.encode(x, generator=torch.Generator().manual_seed(4))
        mean = vae.encode(x)
    assert torch.equal(a, b) and torch.equal(a, recorded)
    assert not torch.allclose(a, other) and not torch.allclose(a, mean)
    torch.testing.assert_close(mean, t["z_zero_noise"], **spec["recommended_tolerance"])


def test_frame_count_errors_say_what_fits(vae):
    z = torch.zeros(1, 4, 4, 1, 1)  # 4 latents = two 5-frame chunks in the tiny model
    with pytest.raises(ValueError, match=r"num_frames=13 needs 5 latent frames but the latent has 4\. "
                                         r"Fix: decode it with num_frames 10$"):
        vae.decode(z, 13)
    with pytest.raises(ValueError, match=r"Fix: decode it with num_frames 6 to 9$"):
        vae_v1_2.decode_tiled(vae, torch.zeros(1, 4, 3, 1, 1), 12)
    with pytest.raises(ValueError, match=r"num_frames=0 is not a video"):
        vae.decode(z, 0)
    with pytest.raises(ValueError, match=r"encodes videos \[B, 3, T, H, W\], got a tensor of shape \(3, 5, 8, 8\)"):
        vae.encode(torch.zeros(3, 5, 8, 8))
    assert vae.check_num_frames(0) and vae.check_num_frames(1) is None


def test_bf16_runs_close_to_the_fp32_golden(config):
    """bf16 is the original's inference precision. Measured on CPU: decode mean error 0.010 (max 0.19, |x| up
    to 4.9), encode max error 0.016."""
    model = vae_v1_2.load_vae_v1_2(load_file(WEIGHTS), micro_frame_size=config["tiny"]["pipeline"]["micro_frame_size"])
    model.to(torch.bfloat16)
    dec_spec, dec = _case("decode_T10")
    _, enc = _case("encode_T10")
    with torch.inference_mode():
        x = model.decode(dec["z"].to(torch.bfloat16), dec_spec["scalars"]["num_frames"])
        z = model.encode(enc["x"].to(torch.bfloat16))
    assert x.dtype == z.dtype == torch.bfloat16
    assert (x.float() - dec["x"]).abs().mean() < 0.03
    assert (x.float() - dec["x"]).abs().max() < 0.1 * dec["x"].abs().max()
    assert (z.float() - enc["z_zero_noise"]).abs().max() < 0.05


@pytest.mark.parametrize("writer,frames", [("write_tiny_vae_v1_2", 34), ("write_tiny_sd_vae", 9),
                                           ("write_tiny_flux_ae", 1)])
def test_encode_shows_progress_per_encoder_run(tmp_path, writer, frames):
    """VAE Encode's bar ticks once per 2D-encoder micro-batch (encoder_runs counts them), and a cancel stops it."""
    from comfyui_opensora import comfy_adapter
    from comfyui_opensora.models import pipeline, tiny

    vae = pipeline.load_vae(getattr(tiny, writer)(str(tmp_path / "vae.safetensors")), "fp32")
    video = torch.rand(2, 3, frames, 32, 32) * 2 - 1
    encoder, runs = vae.net.encoder_runs(video.shape)
    calls, seen = [], []
    handle = encoder.register_forward_hook(lambda *_: calls.append(1))
    comfy_adapter.set_progress_hook(lambda node, value, total: seen.append((value, total)))
    try:
        pipeline.encode(vae, video)
        assert len(calls) == runs and seen == [(i + 1, runs) for i in range(runs)]
        comfy_adapter.request_cancel()
        with pytest.raises(comfy_adapter.Interrupted):
            pipeline.encode(vae, video)
    finally:
        handle.remove()
        comfy_adapter.clear_cancel()
        comfy_adapter.set_progress_hook(None)
