"""CogVideoX schedulers and sampling loop against diffusers 0.42.1 (test-only dependency): the schedule, the
timesteps, CogVideoXDDIMScheduler.step / CogVideoXDPMScheduler.step on the same inputs and noise draws, add_noise,
the I2V image latents of the image-to-video pipeline's prepare_latents, and whole pipeline loops (t2v, v2v, i2v;
static and dynamic CFG) driven by the same tiny diffusers transformer, so only the loops are compared."""
import pytest
import torch

from comfyui_opensora import comfy_adapter
from comfyui_opensora.models.cogvideox import schedulers
from comfyui_opensora.models.cogvideox.loading import build_vae

import diffusers  # noqa: E402  (test extra)

TEXT_LEN, TEXT_DIM = 8, 32


def _scheduler(kind: str, snr_shift_scale: float):
    """The released scheduler_config.json with the variant's SNR shift."""
    cls = diffusers.CogVideoXDPMScheduler if kind == "dpm" else diffusers.CogVideoXDDIMScheduler
    return cls(beta_schedule="scaled_linear", prediction_type="v_prediction", timestep_spacing="trailing",
               rescale_betas_zero_snr=True, clip_sample=False, set_alpha_to_one=True, snr_shift_scale=snr_shift_scale)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ["ddim", "dpm"])
@pytest.mark.parametrize("snr", [1.0, 3.0])
def test_schedule_equals_diffusers(kind, snr):
    assert torch.equal(schedulers.alphas_cumprod(snr), _scheduler(kind, snr).alphas_cumprod)


@pytest.mark.parametrize("steps", [1, 3, 7, 50, 1000])
def test_trailing_timesteps_equal_diffusers(steps):
    sched = _scheduler("ddim", 1.0)
    sched.set_timesteps(steps)
    assert schedulers.get_timesteps(steps) == sched.timesteps.tolist()


@pytest.mark.parametrize("snr,steps", [(3.0, 7), (1.0, 4)])  # 1000/7 is fractional: prev t is not the next entry
def test_ddim_steps_equal_diffusers(snr, steps):
    sched = _scheduler("ddim", snr)
    sched.set_timesteps(steps)
    ac, g = schedulers.alphas_cumprod(snr), _gen()
    x = torch.randn(2, 3, 4, 5, 5, generator=g)
    for t in schedulers.get_timesteps(steps):
        v = torch.randn(x.shape, generator=g)
        want_prev, want_x0 = sched.step(v, t, x, return_dict=False)
        prev, x0 = schedulers.ddim_step(v, t, x, ac, steps)
        assert torch.equal(prev, want_prev) and torch.equal(x0, want_x0), t
        x = prev


@pytest.mark.parametrize("snr,steps", [(3.0, 7), (1.0, 3)])
def test_dpm_steps_equal_diffusers(snr, steps):
    """Chained over the whole schedule: first-order first step, second-order middle steps (with the wasted first
    draw), the noiseless last step; the same generator feeds both."""
    sched = _scheduler("dpm", snr)
    sched.set_timesteps(steps)
    ac, g_ref, g_ours = schedulers.alphas_cumprod(snr), _gen(5), _gen(5)
    ts = schedulers.get_timesteps(steps)
    x = torch.randn(1, 3, 4, 5, 5, generator=_gen(1))
    vs = torch.randn(steps, *x.shape, generator=_gen(2))
    ref_x, ref_x0, ours_x, ours_x0 = x, None, x, None
    for i, t in enumerate(ts):
        back = ts[i - 1] if i else None
        ref_x, ref_x0 = sched.step(vs[i], ref_x0, t, back, ref_x, generator=g_ref, return_dict=False)
        ours_x, ours_x0 = schedulers.dpm_step(vs[i], ours_x0, t, back, ours_x, ac, steps,
                                              lambda shape: torch.randn(shape, generator=g_ours))
        assert torch.equal(ours_x, ref_x) and torch.equal(ours_x0, ref_x0), t
    assert torch.equal(torch.randn(3, generator=g_ours), torch.randn(3, generator=g_ref))  # as many draws


@pytest.mark.parametrize("t", [999, 666, 19, 0])
def test_add_noise_equals_diffusers(t):
    sched, g = _scheduler("ddim", 3.0), _gen()
    x0, noise = torch.randn(1, 2, 4, 3, 3, generator=g), torch.randn(1, 2, 4, 3, 3, generator=g)
    want = sched.add_noise(x0, noise, torch.tensor([t]))
    assert torch.equal(schedulers.add_noise(x0, noise, t, schedulers.alphas_cumprod(3.0)), want)


# ------------------------------------------------------------------------------------------------------------
# Pipelines: a tiny diffusers transformer and VAE shared by both sides
# ------------------------------------------------------------------------------------------------------------
def _perturbed(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():  # zero-initialised layers must not hide anything
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    kw = dict(num_attention_heads=2, attention_head_dim=16, out_channels=16, time_embed_dim=32,
              text_embed_dim=TEXT_DIM, num_layers=1, sample_width=4, sample_height=4, sample_frames=9,
              max_text_seq_length=TEXT_LEN)
    t2v = _perturbed(diffusers.CogVideoXTransformer3DModel(in_channels=16, **kw), 1)
    i2v = _perturbed(diffusers.CogVideoXTransformer3DModel(in_channels=32, **kw), 2)
    i2v_15 = _perturbed(diffusers.CogVideoXTransformer3DModel(in_channels=32, patch_size_t=2, patch_bias=False,
                                                               use_rotary_positional_embeddings=True, **kw), 3)
    vae_cfg = dict(block_out_channels=(8, 16, 16, 16), latent_channels=16, layers_per_block=1, norm_num_groups=4)
    vae = _perturbed(diffusers.AutoencoderKLCogVideoX(**vae_cfg), 4)
    ours_vae = build_vae({k: v.clone() for k, v in vae.state_dict().items()}, vae_cfg).eval()
    return dict(t2v=t2v, i2v=i2v, i2v_15=i2v_15, vae=vae, ours_vae=ours_vae)


def _as_pack_model(tf):
    """The pack's model call convention on diffusers' transformer (the loop under test is the same either way)."""
    def call(x, text, timestep, image_rotary_emb=None, ofs=None):
        return tf(hidden_states=x, encoder_hidden_states=text, timestep=timestep, image_rotary_emb=image_rotary_emb,
                  ofs=ofs, return_dict=False)[0]
    return call


def _embeds(b):
    g = _gen(7)
    return torch.randn(b, TEXT_LEN, TEXT_DIM, generator=g), torch.randn(b, TEXT_LEN, TEXT_DIM, generator=g)


@pytest.mark.parametrize("kind,guidance,dynamic,steps,b", [("ddim", 6.0, False, 4, 1), ("dpm", 5.0, True, 7, 2),
                                                           ("dpm", 1.0, False, 3, 1)])
def test_t2v_loop_equals_diffusers_pipeline(tiny, kind, guidance, dynamic, steps, b):
    pos, neg = _embeds(b)
    z = torch.randn(b, 3, 16, 4, 4, generator=_gen(3))
    snr = 3.0 if kind == "ddim" else 1.0
    pipe = diffusers.CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=tiny["t2v"],
                                       scheduler=_scheduler(kind, snr))
    with torch.no_grad():
        want = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, latents=z, height=32, width=32, num_frames=9,
                    num_inference_steps=steps, guidance_scale=guidance, use_dynamic_cfg=dynamic,
                    generator=_gen(11), output_type="latent").frames
        g = _gen(11)
        got = schedulers.sample(_as_pack_model(tiny["t2v"]), z, pos, neg, steps, guidance, dynamic, kind, snr,
                                noise_fn=lambda shape: torch.randn(shape, generator=g))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_v2v_loop_equals_diffusers_pipeline(tiny):
    """Starting part-way (strength 0.5 of 6 steps): DPM looks back within the steps run, and dynamic CFG's N is
    the number of steps run, as the video-to-video pipeline computes them."""
    pos, neg = _embeds(1)
    z = torch.randn(1, 3, 16, 4, 4, generator=_gen(3))
    pipe = diffusers.CogVideoXVideoToVideoPipeline(tokenizer=None, text_encoder=None, vae=None,
                                                   transformer=tiny["t2v"], scheduler=_scheduler("dpm", 1.0))
    with torch.no_grad():
        want = pipe(prompt_embeds=pos, negative_prompt_embeds=neg, latents=z, height=32, width=32,
                    num_inference_steps=6, strength=0.5, guidance_scale=5.0, use_dynamic_cfg=True,
                    generator=_gen(11), output_type="latent").frames
        g = _gen(11)
        got = schedulers.sample(_as_pack_model(tiny["t2v"]), z, pos, neg, 6, 5.0, True, "dpm", 1.0, start_step=3,
                                noise_fn=lambda shape: torch.randn(shape, generator=g))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("variant,num_frames", [("5b_i2v", 9), ("1.5_i2v", 17)])
def test_i2v_image_latents_equal_diffusers_prepare_latents(tiny, variant, num_frames):
    """Each image encoded on its own, its posterior sampled from the shared generator, scaled (1.5 divides),
    zero frames after it; 1.5 with an odd latent count repeats the first frame in front."""
    tf = tiny["i2v_15" if variant == "1.5_i2v" else "i2v"]
    vae, invert = tiny["vae"], variant.startswith("1.5")
    vae.register_to_config(scaling_factor=0.7, invert_scale_latents=invert)
    pipe = diffusers.CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=tf,
                                                   scheduler=_scheduler("ddim", 1.0))
    image = torch.rand(2, 3, 16, 16, generator=_gen(9)) * 2 - 1
    with torch.no_grad():
        noise, want = pipe.prepare_latents(image, 2, 16, num_frames, 16, 16, torch.float32, "cpu", _gen(13))
        g = _gen(13)
        got = schedulers.i2v_image_latents(tiny["ours_vae"], image[:, :, None], (num_frames - 1) // 4 + 1, 0.7,
                                           invert, tf.config.patch_size_t,
                                           noise_fn=lambda shape: torch.randn(shape, generator=g))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert noise.shape[1] == schedulers.padded_latent_frames((num_frames - 1) // 4 + 1, tf.config.patch_size_t)


def test_i2v_loop_equals_diffusers_pipeline(tiny):
    vae = tiny["vae"]
    vae.register_to_config(scaling_factor=0.7, invert_scale_latents=False)
    pipe = diffusers.CogVideoXImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae,
                                                   transformer=tiny["i2v"], scheduler=_scheduler("dpm", 1.0))
    pos, neg = _embeds(1)
    z = torch.randn(1, 3, 16, 4, 4, generator=_gen(3))
    image = torch.rand(1, 3, 32, 32, generator=_gen(9))  # 0..1, as the video processor takes tensors
    with torch.no_grad():
        want = pipe(image=image, prompt_embeds=pos, negative_prompt_embeds=neg, latents=z, height=32, width=32,
                    num_frames=9, num_inference_steps=3, guidance_scale=5.0, use_dynamic_cfg=True,
                    generator=_gen(11), output_type="latent").frames
        g = _gen(11)
        draw = lambda shape: torch.randn(shape, generator=g)  # noqa: E731 - the posterior first, then DPM
        cond = schedulers.i2v_image_latents(tiny["ours_vae"], (image * 2 - 1)[:, :, None], 3, 0.7, noise_fn=draw)
        got = schedulers.sample(_as_pack_model(tiny["i2v"]), z, pos, neg, 3, 5.0, True, "dpm", 1.0,
                                image_latents=cond, noise_fn=draw)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_sampling_reports_progress_and_checks_for_cancel():
    """One progress update per step through the adapter; a pending cancel stops before any model call."""
    calls, progress = [], []

    def model(x, text, timestep, **kw):
        calls.append(int(timestep[0]))
        return torch.zeros_like(x)

    z, y = torch.zeros(1, 2, 4, 2, 2), torch.zeros(1, TEXT_LEN, TEXT_DIM)
    comfy_adapter.set_progress_hook(lambda node, value, total: progress.append((value, total)))
    try:
        schedulers.sample(model, z, y, y, 3, 1.0)
        assert calls == schedulers.get_timesteps(3) and progress == [(1, 3), (2, 3), (3, 3)]
        comfy_adapter.request_cancel()
        with pytest.raises(comfy_adapter.Interrupted):
            schedulers.sample(model, z, y, y, 3, 1.0)
        assert len(calls) == 3
    finally:
        comfy_adapter.clear_cancel()
        comfy_adapter.set_progress_hook(None)
