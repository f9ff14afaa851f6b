"""Property: any mask strategy either samples or is refused with the node's input error naming the group and
the fix; never a raw library error (a strategy that parsed once reached the sampler and failed inside torch).

Random strategies and reference lengths, through the Mask Strategy and Reference Condition nodes' model calls
(pipeline.add_mask_strategy / add_reference) and two sampling steps, for every family that takes references,
and for one that refuses them."""
import random

import pytest
import torch

from comfyui_opensora.models import pipeline, tiny

FAMILY_SETUPS = {
    # family: (model file key, vae file key, text family, latent size (frames, h, w))
    "opensora-v1.2": ("model", "vae", "opensora-v1.2", (17, 32, 32)),
    "opensora-v1.1": ("model_v1.1", "vae_sd", "opensora-v1.1", (5, 32, 32)),
    "opensora-v1.0": ("model_v1.0", "vae_sd", "opensora-v1.0", None),
    "opensora-v2.0": ("model_v2.0", "vae_hunyuan", "opensora-v2.0", (9, 32, 32)),
}


@pytest.fixture(scope="module")
def setups(tmp_path_factory):
    root = tmp_path_factory.mktemp("ms")
    paths = tiny.write_tiny_models(str(root))
    t5 = pipeline.load_text_encoder(paths["text_encoder"], None, "fp32", "cpu")
    clip = pipeline.load_text_encoder(paths["clip"], None, "fp32", "cpu")
    out = {}
    for family, (model_key, vae_key, text_family, size) in FAMILY_SETUPS.items():
        model = pipeline.load_diffusion_model(paths[model_key], "fp32")
        vae = pipeline.load_vae(paths[vae_key], "fp32")
        if size is None:  # Open-Sora 1.0 makes the one size of its checkpoint
            t, h, w = (g * p for g, p in zip(model.net.grid, model.net.patch_size))
            size = (t, h * 8, w * 8)
        cond = pipeline.encode_text(t5, "a red ball", text_family, offload=False, clip=clip)
        out[family] = (model, vae, cond, size)
    return out


def _random_strategy(rng: random.Random) -> str:
    groups = []
    for _ in range(rng.randint(1, 3)):
        fields = [rng.choice([0, 0, 0, 1]), rng.choice([0, 0, 1, 2]), rng.randint(-8, 8), rng.randint(-8, 8),
                  rng.randint(-1, 8), rng.choice([0, 0, 0.5, 1, 1.5])]
        groups.append(",".join(str(f) for f in fields[:rng.randint(1, 6)]))
    return ";".join(groups)


def _sample_or_input_error(fn):
    """fn() must succeed or raise InputError with a problem and a fix; anything else fails the test."""
    try:
        fn()
        return None
    except pipeline.InputError as e:
        assert e.problem and e.fix, e
        return e


@pytest.mark.parametrize("family", list(FAMILY_SETUPS))
def test_random_strategies_sample_or_name_the_group(setups, family):
    model, vae, cond, (frames, h, w) = setups[family]
    rng = random.Random(family)
    refused = sampled = 0
    for trial in range(24):
        strategy = _random_strategy(rng)
        refs = [torch.rand(1, 3, rng.choice([1, 5, 9]), h, w) * 2 - 1 for _ in range(rng.randint(1, 2))]

        def run():
            latent = pipeline.empty_latent(vae, "custom", "16:9", w, h, frames, 1)
            latent = pipeline.add_mask_strategy(latent, vae, strategy, refs)
            pipeline.sample(model, cond, latent, seed=trial, steps=2, cfg=1.0, scheduler=pipeline.FAMILIES[
                family].schedulers[0], denoise=1.0, fps=24)

        err = _sample_or_input_error(run)
        if err is None:
            sampled += 1
            continue
        refused += 1
        if err.input_name == "mask_strategy":
            assert "group" in err.problem, err  # names the group at fault
    assert sampled and refused, (sampled, refused)  # both paths exercised


@pytest.mark.parametrize("family", list(FAMILY_SETUPS))
def test_random_reference_conditions_sample_or_name_the_input(setups, family):
    model, vae, cond, (frames, h, w) = setups[family]
    rng = random.Random("ref" + family)
    for trial in range(8):
        video = torch.rand(1, 3, rng.choice([1, 5, 9]), h, w) * 2 - 1
        args = (rng.randint(-6, 6), rng.randint(-6, 6), rng.randint(1, 6), rng.choice([0.0, 0.0, 0.5]))

        def run():
            latent = pipeline.empty_latent(vae, "custom", "16:9", w, h, frames, 1)
            latent = pipeline.add_reference(latent, vae, video, *args)
            pipeline.sample(model, cond, latent, seed=trial, steps=2, cfg=1.0, scheduler=pipeline.FAMILIES[
                family].schedulers[0], denoise=1.0, fps=24)

        _sample_or_input_error(run)


def test_start_outside_is_refused_with_the_group(monkeypatch):
    """Was: target_start past the end dropped silently, before the start wrapped, ref_start past the reference
    crashed inside torch."""
    latent = {"samples": torch.zeros(1, 4, 5, 4, 4), "opensora": {"height": 32, "width": 32, "num_frames": 17,
                                                                   "conditions": []}}

    class FakeVAE:  # encode_reference is all add_mask_strategy asks of the VAE
        pass

    refs = [torch.zeros(1, 3, 1, 32, 32)]
    monkeypatch.setattr(pipeline, "encode_reference", lambda vae, video, hh, ww: torch.zeros(4, 1, 4, 4))
    for strategy, field in (("0,0,0,5", "target_start 5"), ("0,0,0,-6", "target_start -6"),
                            ("0;0,0,1,0", "ref_start 1"), ("0,0,-2", "ref_start -2")):
        with pytest.raises(pipeline.InputError) as info:
            pipeline.add_mask_strategy(latent, FakeVAE(), strategy, refs)
        assert info.value.input_name == "mask_strategy" and field in info.value.problem
        assert "group" in info.value.problem and "count from the end" in info.value.fix
    for strategy in ("0,0,0,4", "0,0,0,-5", "0,0,-1,0,9"):  # in range; a long length is cut as the original
        assert pipeline.add_mask_strategy(latent, FakeVAE(), strategy, refs)["opensora"]["conditions"]


def test_iddpm_refuses_a_single_step(setups):
    """IDDPM's variance needs the posterior variance of respaced step 1 (the original indexes it too): one step
    is refused by name instead of an IndexError inside the sampler."""
    model, vae, cond, (frames, h, w) = setups["opensora-v1.1"]
    latent = pipeline.empty_latent(vae, "custom", "16:9", w, h, frames, 1)
    with pytest.raises(pipeline.InputError, match="input 'steps': IDDPM cannot sample in 1 step"):
        pipeline.sample(model, cond, latent, seed=0, steps=1, cfg=1.0, scheduler="iddpm", denoise=1.0, fps=24)


def test_out_of_memory_is_a_node_message_and_memory_is_freed(setups, monkeypatch):
    """An allocator failure inside sampling (the CPU's, as 4096x4096 on the demo model gave) reaches the user as
    the node's message with what to change, after the attempt's memory is freed; other errors pass through."""
    from comfyui_opensora.nodes.common import NodeInputError
    from comfyui_opensora.nodes.sampling import OpenSoraSampler

    model, vae, cond, (frames, h, w) = setups["opensora-v1.2"]
    latent = pipeline.empty_latent(vae, "custom", "16:9", w, h, frames, 1)
    freed = []
    monkeypatch.setattr(pipeline, "free_memory", lambda: freed.append(True))
    for error, wanted in ((RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't "
                                        "allocate memory: you tried to allocate 10099884032 bytes. Error code 12"),
                           "the computer ran out of memory for 9.4 GB"),
                          (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                           "the GPU ran out of memory")):
        def fail(*args, **kwargs):
            raise error

        monkeypatch.setattr(pipeline, "sample", fail)
        with pytest.raises(NodeInputError, match=f"OpenSoraSampler: input 'latent': {wanted}.*Fix: use a smaller "
                                                 f"size or fewer frames, or offload 'sequential'"):
            OpenSoraSampler().sample(model, cond, latent, 0, 2, 5.0, "rflow", 1.0, 24)
    assert freed == [True, True]
    monkeypatch.setattr(pipeline, "sample", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        OpenSoraSampler().sample(model, cond, latent, 0, 2, 5.0, "rflow", 1.0, 24)
