"""CogVideoX VAE against diffusers 0.42.1's AutoencoderKLCogVideoX (test-only dependency) on the same tiny random
weights, saved in the diffusers layout (and in the SAT layout) and read back by the pack's loaders: chunked
encode / decode (conv cache, per-chunk GroupNorm), diffusers' spatial tiling, and memory bounded by the chunk
and the tile."""
import re

import pytest
import torch

from comfyui_opensora.models import pipeline
from comfyui_opensora.models.cogvideox import loading, vae as cog_vae
from comfyui_opensora.models.cogvideox.vae import Tiling

import diffusers  # noqa: E402  (test extra)

# Smallest geometry that keeps 8x space / 4x time; sample 64x96 so diffusers' tiles are 32x48 px (4x6 latents).
TINY = dict(block_out_channels=(8, 16, 16, 16), latent_channels=16, layers_per_block=1, norm_num_groups=4,
            sample_height=64, sample_width=96, scaling_factor=0.7, invert_scale_latents=True)
# Overlap factors whose blend widths agree with the strides (diffusers rounds each on its own).
FACTORS = dict(tile_overlap_factor_height=1 / 4, tile_overlap_factor_width=1 / 3)
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLCogVideoX(**TINY).eval()
    with torch.no_grad():  # make every GroupNorm affine and bias matter
        for p in ref.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = tmp_path_factory.mktemp("cogvae") / "vae"
    ref.save_pretrained(str(folder))
    sd, config = loading.read_vae(str(folder))
    return ref, loading.build_vae(sd, config).eval()


def _video(b, f, h, w, seed=1):
    return torch.rand(b, 3, f, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _latent(b, f, h, w, seed=2):
    return torch.randn(b, 16, f, h, w, generator=torch.Generator().manual_seed(seed))


def test_loader_reads_the_diffusers_folder(vaes):
    ref, ours = vaes
    assert (ours.scaling_factor, ours.invert_scale_latents) == (ref.config.scaling_factor, True)
    assert ours.default_tiling == Tiling((ref.tile_latent_min_height, ref.tile_latent_min_width),
                                         (int(ref.tile_latent_min_height * (1 - ref.tile_overlap_factor_height)),
                                          int(ref.tile_latent_min_width * (1 - ref.tile_overlap_factor_width))))


@pytest.mark.parametrize("b,f,h,w", [(1, 17, 16, 16), (2, 13, 16, 24), (1, 1, 16, 16)])
def test_encode_matches_diffusers(vaes, b, f, h, w):
    """17 frames: chunks 9 + 8 with the conv cache; 13: one chunk (13 // 8 = 1); 1: an image."""
    ref, ours = vaes
    x = _video(b, f, h, w)
    with torch.no_grad():
        want = ref.encode(x).latent_dist
        mean, logvar = ours.encode_moments(x)
    torch.testing.assert_close(mean, want.mean, **TOL)
    torch.testing.assert_close(logvar, want.logvar, **TOL)


@pytest.mark.parametrize("b,f,h,w", [(1, 5, 2, 3), (2, 4, 2, 2), (1, 1, 2, 2)])
def test_decode_matches_diffusers(vaes, b, f, h, w):
    """5 latents: chunks 3 + 2 -> 17 frames; 4: 2 + 2 -> 16 frames; 1 -> 1 frame."""
    ref, ours = vaes
    z = _latent(b, f, h, w)
    with torch.no_grad():
        want = ref.decode(z).sample
        got = ours.decode(z)
    torch.testing.assert_close(got, want, **TOL)


@pytest.fixture
def tiled_ref(vaes):
    ref, ours = vaes
    ref.enable_tiling(**FACTORS)
    yield ref, ours, Tiling.diffusers(64, 96, FACTORS["tile_overlap_factor_height"],
                                      FACTORS["tile_overlap_factor_width"])
    ref.disable_tiling()


def test_tiled_decode_matches_diffusers(tiled_ref):
    """5x7 latents in 4x6 tiles every 3x4: a 2x2 grid whose last row and column are thin; chunks of 2 + 2
    latents, so each tile carries its own conv cache."""
    ref, ours, tiling = tiled_ref
    assert tiling == Tiling((4, 6), (3, 4))
    z = _latent(1, 4, 5, 7)
    with torch.no_grad():
        want = ref.decode(z).sample
        got = ours.decode(z, tiling=tiling)
        untiled = ours.decode(z)
    assert got.shape == untiled.shape == want.shape
    torch.testing.assert_close(got, want, **TOL)
    assert (got - untiled).abs().max() > 1e-3  # the tiles really were decoded on their own


def test_tiled_encode_matches_diffusers(tiled_ref):
    ref, ours, tiling = tiled_ref
    x = _video(1, 17, 40, 56)  # 2x2 tiles of 32x48 px every 24x32, chunks 9 + 8
    with torch.no_grad():
        want = ref.encode(x).latent_dist
        mean, logvar = ours.encode_moments(x, tiling=tiling)
    torch.testing.assert_close(mean, want.mean, **TOL)
    torch.testing.assert_close(logvar, want.logvar, **TOL)


def test_a_video_within_one_tile_is_not_tiled(tiled_ref):
    ref, ours, tiling = tiled_ref
    z = _latent(1, 3, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours.decode(z, tiling=tiling), ref.decode(z).sample, **TOL)


def test_decode_memory_is_bounded_by_chunk_and_tile(vaes):
    """Every decoder call sees at most one chunk (3 latents: 2 + the odd rest) of one tile, however long the
    video, and frames come out chunk by chunk."""
    _, ours = vaes
    seen = []
    hook = ours.decoder.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[2:])))
    try:
        with torch.no_grad():
            for f in (3, 5):
                sizes = [c.shape[2] for c in ours.decode_chunks(_latent(1, f, 3, 3), tiling=Tiling.from_pixels(16, 0))]
                assert sizes == [9] + [8] * (f // 2 - 1)  # the first chunk holds the odd latent (1 + 4*2 frames)
    finally:
        hook.remove()
    assert max(s[0] for s in seen) == 3 and max(s[1] for s in seen) == 2 and max(s[2] for s in seen) == 2
    assert len(seen) == 4 * (1 + 2)  # 2x2 tiles (the second row and column thin), per chunk


def test_tiling_from_pixels_needs_whole_latents():
    with pytest.raises(ValueError, match="multiples of 8"):
        Tiling.from_pixels(100, 20)
    with pytest.raises(ValueError, match="overlap smaller than the tile"):
        Tiling.from_pixels(64, 64)


def test_conv_split_above_the_size_limit_is_the_same_conv(monkeypatch):
    """The CogVideoXSafeConv3d split (time parts overlapping by kernel - 1 frames) changes nothing."""
    conv = torch.nn.Conv3d(4, 5, 3, padding=(0, 1, 1))
    x = torch.randn(1, 4, 11, 6, 6)
    with torch.no_grad():
        want = conv(x)
        monkeypatch.setattr(cog_vae, "SAFE_CONV_GIB", x.numel() * 2 / 1024 ** 3 / 5)  # -> 3 parts
        got = cog_vae.conv3d_in_parts(conv, x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def _to_sat(sd: dict, ups: int) -> dict:
    """diffusers -> SAT names by the rules in the spec (§8), written independently of models/cogvideox/sat.py."""
    out = {"loss.logvar": torch.zeros(())}  # SAT VAE files carry the training loss too; it must be dropped
    for k, v in sd.items():
        k = re.sub(r"mid_block\.resnets\.(\d)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", k)
        k = re.sub(r"down_blocks\.(\d)\.resnets\.", r"down.\1.block.", k)
        k = re.sub(r"down_blocks\.(\d)\.downsamplers\.0\.", r"down.\1.downsample.", k)
        k = re.sub(r"up_blocks\.(\d)\.resnets\.", lambda m: f"up.{ups - 1 - int(m[1])}.block.", k)
        k = re.sub(r"up_blocks\.(\d)\.upsamplers\.0\.", lambda m: f"up.{ups - 1 - int(m[1])}.upsample.", k)
        out[k.replace("conv_shortcut", "nin_shortcut")] = v
    return out


def test_sat_vae_file_decodes_like_diffusers(vaes, tmp_path):
    ref, _ = vaes
    path = tmp_path / "3d-vae.pt"
    torch.save({"state_dict": _to_sat(ref.state_dict(), len(TINY["block_out_channels"]))}, path)
    loaded = pipeline.load_vae(str(path), "fp32")
    z = _latent(1, 3, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.net.decode(z), ref.decode(z).sample, **TOL)
