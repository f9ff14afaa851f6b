"""Latent previews (models/preview.py): the latent -> RGB fit reads the demo VAE's latents back as the frames'
colours, every VAE family gets a fit, and the samplers hand ComfyUI's progress bar a preview image each step
(through the same ProgressBar interface ComfyUI has) only when previews are on."""
import types

import pytest
import torch

from comfyui_opensora import comfy_adapter
from comfyui_opensora.demo import clips, evaluate
from comfyui_opensora.models import pipeline, preview, tiny


@pytest.fixture
def previews_on():
    comfy_adapter.force_previews(True)
    yield
    comfy_adapter.force_previews(None)


@pytest.fixture
def fake_comfy(monkeypatch):
    """ComfyUI's ProgressBar and interrupt check as comfy.utils / comfy.model_management provide them."""
    calls = []

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            calls.append((value, total, preview))

    def enable():  # after loading: only the progress / interrupt / device calls are stood in for
        monkeypatch.setattr(comfy_adapter, "IN_COMFY", True)
        monkeypatch.setattr(comfy_adapter, "_comfy_utils", types.SimpleNamespace(ProgressBar=ProgressBar))
        monkeypatch.setattr(comfy_adapter, "_mm", types.SimpleNamespace(
            throw_exception_if_processing_interrupted=lambda: None, get_torch_device=lambda: torch.device("cpu"),
            unet_offload_device=lambda: torch.device("cpu"), soft_empty_cache=lambda *a, **k: None))
        return calls
    return enable


def _contrast(frames: torch.Tensor) -> torch.Tensor:
    """[T, h, w, 3] -> [T, h, w]: distance of each pixel's colour from the frame's background (border median)."""
    border = torch.cat([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], dim=1)  # [T, 4w, 3]
    return (frames - border.median(dim=1).values[:, None, None]).norm(dim=-1)


def test_fit_shows_the_demo_objects_where_they_are(previews_on):
    """The preview of an encoded clip stands the object out from the background where the clip has it (the fit
    never saw these scenes: it is made from flat colours and rectangles). Colours are not tested: the tiny demo
    VAE's latents are far from linear in colour (its normalisation layers mix the object into the background),
    so a linear preview shows where things are and how they move, not their exact shades."""
    vae = pipeline.load_vae(evaluate.demo_paths()["vae"], "fp32")
    fit = pipeline.latent_preview(vae)
    assert fit[0].shape == (vae.latent_channels, 3) and fit[1].shape == (3,)
    scenes = clips.eval_scenes(3, [("red", "circle", "left"), ("blue", "square", "up"),
                                   ("yellow", "triangle", "growing"), ("green", "circle", "still")], num_frames=17)
    for sc in scenes:
        video = clips.render(sc, 17)[None]
        z = pipeline.encode(vae, video)["samples"][0]
        rgb = preview.to_rgb(z, *fit)  # [T', h, w, 3]
        pooled = torch.nn.functional.adaptive_avg_pool2d(((video[0] + 1) / 2).transpose(0, 1), z.shape[-2:])
        frames = [0] + [4 * k for k in range(1, z.shape[1])]  # the last pixel frame each latent frame covers
        target = pooled[frames].permute(0, 2, 3, 1)
        a, b = _contrast(rgb).flatten(), _contrast(target).flatten()
        corr = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
        assert corr > 0.4, (sc.caption, corr)  # measured 0.48 (green on gray) to 0.9; no structure gives 0


@pytest.mark.parametrize("kind", ["vae", "vae_v1.0", "vae_hunyuan", "vae_dc_ae"])
def test_every_vae_family_gets_a_fit(tmp_path, previews_on, kind):
    writers = {"vae": tiny.write_tiny_vae_v1_2, "vae_v1.0": tiny.write_tiny_sd_vae,
               "vae_hunyuan": tiny.write_tiny_hunyuan_vae, "vae_dc_ae": tiny.write_tiny_dc_ae}
    vae = pipeline.load_vae(writers[kind](str(tmp_path / "vae.safetensors")), "fp32")
    fit = pipeline.latent_preview(vae)
    assert fit[0].shape == (vae.latent_channels, 3) and torch.isfinite(fit[0]).all()
    assert pipeline.latent_preview(vae) is fit  # fitted once per loaded VAE
    latent = pipeline.empty_latent(vae, "custom", "1:1", 64, 64, 17 if kind != "vae_dc_ae" else 8, 1)
    assert latent["opensora"]["preview"] is fit


def test_no_fit_and_no_preview_when_previews_are_off(tmp_path):
    vae = pipeline.load_vae(tiny.write_tiny_vae_v1_2(str(tmp_path / "vae.safetensors")), "fp32")
    latent = pipeline.empty_latent(vae, "custom", "1:1", 64, 64, 17, 1)
    assert latent["opensora"]["preview"] is None and vae.preview_fit is None
    assert preview.image(torch.zeros(1, 4, 5, 8, 8)) is None


def test_sampler_sends_a_preview_every_step(previews_on, fake_comfy):
    """Demo text-to-video inside (a stand-in of) ComfyUI: each step's progress update carries a JPEG preview of
    up to 4 frames side by side, at the latent's resolution."""
    model, vae, t5 = evaluate.load_demo()
    latent = pipeline.empty_latent(vae, "custom", "1:1", 64, 64, 17, 1)
    cond = pipeline.encode_text(t5, "a red circle moving right on a black background", "opensora-v1.2",
                                offload=False)
    calls = fake_comfy()
    pipeline.sample(model, cond, latent, seed=0, steps=4, cfg=5.0, scheduler="rflow", denoise=1.0, fps=24)
    sampling = [c for c in calls if c[1] == 4]
    assert [c[0] for c in sampling] == [1, 2, 3, 4]
    for _, _, (fmt, img, size) in sampling:
        assert fmt == "JPEG" and size == comfy_adapter.preview_size()
        assert img.size == (16 * 4, 16)  # 5 latent frames of 16x16: frames 0, 1, 3, 4 shown
    # the previews follow the estimate step by step, and the last one shows an object (not a flat frame)
    images = [torch.tensor(list(c[2][1].getdata()), dtype=torch.float32) for c in sampling]
    assert all((a - b).abs().mean() > 0.5 for a, b in zip(images, images[1:]))
    assert float(images[-1].max(dim=0).values.sub(images[-1].min(dim=0).values).max()) > 60


def test_strip_picks_first_and_last_frames():
    factors, bias = torch.eye(3), torch.zeros(3)
    latent = torch.arange(7, dtype=torch.float32).view(1, 7, 1, 1).expand(3, 7, 2, 2) / 6
    img = preview.strip(latent, factors, bias)
    assert img.shape == (2, 8, 3)
    assert img[0, ::2, 0].tolist() == [0, 85, 170, 255]  # frames 0, 2, 4, 6
