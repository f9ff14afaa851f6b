"""Attention backends (models/attention.py): every backend present here against the reference `math` path on
each family's transformer, the dispatch, the fallback of calls a kernel cannot take, and the errors."""
import json
import os
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from comfyui_opensora.models import attention as attn, pipeline, tiny

from conftest import REPO_ROOT

# (model key, vae key, text family, scheduler, frames, height, width, batch)
FAMILIES = {
    "opensora-v1.2": ("model", "vae", "opensora-v1.2", "rflow", 17, 32, 32, 2),
    "opensora-v1.1": ("model_v1.1", "vae_sd", "opensora-v1.1", "iddpm", 5, 32, 32, 2),
    "opensora-v1.0": ("model_v1.0", "vae_sd", "opensora-v1.0", "iddpm", None, None, None, 1),
    "opensora-v2.0": ("model_v2.0", "vae_hunyuan", "opensora-v2.0", "rflow-v2", 9, 32, 32, 1),
    "cogvideox": ("cogvideox", "cogvideox", "cogvideox", "dpm", 9, 64, 64, 1),
}
PRESENT = [b for b in attn.BACKENDS if b not in ("math", "auto") and
           (b not in attn.PACKAGES or attn._importable(attn.PACKAGES[b][0])) and b != "comfy"]


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("attn")
    out = tiny.write_tiny_models(str(root))
    out["cogvideox"] = tiny.write_tiny_cogvideox(str(root / "cogvideox"), "5b")
    return out


def _sample(paths, family, backend, prompts=("a red ball",)):
    model_key, vae_key, text_family, scheduler, frames, h, w, batch = FAMILIES[family]
    model = pipeline.load_diffusion_model(paths[model_key], "fp32", attention=backend)
    vae = pipeline.load_vae(paths[vae_key], "fp32")
    if frames is None:  # Open-Sora 1.0 makes the one size of its checkpoint
        frames, h, w = (g * p for g, p in zip(model.net.grid, model.net.patch_size))
        h, w = h * 8, w * 8
    t5 = pipeline.load_text_encoder(paths["text_encoder"], None, "fp32", "cpu")
    clip = pipeline.load_text_encoder(paths["clip"], None, "fp32", "cpu")
    cond = pipeline.encode_text(t5, prompts[0], text_family, offload=False, clip=clip)
    latent = pipeline.empty_latent(vae, "custom", "16:9", w, h, frames, batch)
    return pipeline.sample(model, cond, latent, seed=3, steps=2, cfg=5.0, scheduler=scheduler, denoise=1.0,
                           fps=24)["samples"]


@pytest.mark.parametrize("backend", PRESENT)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_backends_match_the_math_path_on_every_family(paths, family, backend):
    reference = _sample(paths, family, "math")
    out = _sample(paths, family, backend)
    # IDDPM's x0 = 157 x - ... at t = 999 amplifies float rounding (its golden tolerance is 1e-2)
    tol = 1e-3 if FAMILIES[family][3] == "iddpm" else 1e-4
    torch.testing.assert_close(out, reference, atol=tol, rtol=tol)
    assert not torch.equal(out, torch.zeros_like(out))


def test_auto_and_the_errors():
    cpu = torch.device("cpu")
    assert attn.resolve("auto", cpu) == "sdpa"
    with pytest.raises(pipeline.InputError, match="input 'attention': 'comfy' is ComfyUI's own attention"):
        attn.resolve("comfy", cpu)
    with pytest.raises(pipeline.InputError, match="unknown attention backend 'xformers'"):
        attn.resolve("xformers", cpu)
    for name, (module, pip) in attn.PACKAGES.items():
        if attn._importable(module):
            assert attn.resolve(name, cpu) == name
        else:
            with pytest.raises(pipeline.InputError, match=f"needs the {pip} package.*pip install {pip}"):
                attn.resolve(name, cpu)


def test_loader_names_the_attention_input(paths):
    from comfyui_opensora import comfy_adapter
    from comfyui_opensora.nodes.common import NodeInputError
    from comfyui_opensora.nodes.loaders import OpenSoraModelLoader

    comfy_adapter.configure(models_dir=os.path.dirname(os.path.dirname(paths["model"])))
    try:
        with pytest.raises(NodeInputError, match="OpenSoraModelLoader: input 'attention': 'comfy' is ComfyUI's"):
            OpenSoraModelLoader().load(os.path.basename(paths["model"]), "fp32", "model", "comfy")
    finally:
        comfy_adapter._settings["models_dir"] = None


@pytest.fixture
def fake_flash(monkeypatch):
    """A stand-in flash_attn module: flash's [B, N, H, D] layout, computed by sdpa; counts its calls."""
    calls = []

    def flash_attn_func(q, k, v):
        calls.append(q.shape)
        out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))
        return out.transpose(1, 2)

    module = types.ModuleType("flash_attn")
    module.flash_attn_func = flash_attn_func
    monkeypatch.setitem(sys.modules, "flash_attn", module)
    monkeypatch.setattr(attn, "_importable", lambda name: name == "flash_attn" or attn.importlib.util.find_spec(name))
    monkeypatch.setattr(attn, "_said", set())
    return calls


def test_calls_a_kernel_cannot_take_run_on_sdpa_said_once(fake_flash, capsys):
    q, k, v = (torch.randn(2, 2, 8, 16) for _ in range(3))
    mask = torch.rand(2, 1, 1, 8) > 0.3
    mask[..., 0] = True
    with attn.use("flash"):
        for _ in range(3):  # fp32 CPU tensors: flash cannot take them
            assert torch.equal(attn.attention(q, k, v), F.scaled_dot_product_attention(q, k, v))
        assert torch.equal(attn.attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    said = capsys.readouterr().out.splitlines()
    assert said == ["[OpenSora] attention 'flash' cannot take a key mask: those calls run on sdpa"] or said == [
        "[OpenSora] attention 'flash' cannot take CPU tensors: those calls run on sdpa",
        "[OpenSora] attention 'flash' cannot take a key mask: those calls run on sdpa"]
    assert not fake_flash


def test_kernel_layout_matches_math(fake_flash, monkeypatch):
    """When the kernel takes a call, its [B, N, H, D] layout round trip gives the math path's result."""
    monkeypatch.setattr(attn, "_kernel_refuses", lambda name, q, mask: None)
    q, k, v = torch.randn(2, 3, 8, 16), torch.randn(2, 3, 5, 16), torch.randn(2, 3, 5, 16)
    with attn.use("flash"):
        out = attn.attention(q, k, v)
    torch.testing.assert_close(out, attn.math_attention(q, k, v), atol=1e-5, rtol=1e-5)
    assert fake_flash == [(2, 8, 3, 16)]


def test_saved_workflows_without_the_input_keep_working():
    """attention was added at the end of the loader's optional inputs: a workflow saved before has one widget
    value fewer and converts to the default."""
    from comfyui_opensora.harness import pack as pack_mod
    from comfyui_opensora.harness.convert import load_prompt

    workflow = json.load(open(os.path.join(REPO_ROOT, "workflows", "demo_t2v.json")))
    loader = next(n for n in workflow["nodes"] if n["type"] == "OpenSoraModelLoader")
    assert loader["widgets_values"][-1] == "sdpa"
    loader["widgets_values"] = loader["widgets_values"][:-1]
    prompt, _ = load_prompt(workflow, pack_mod.node_definitions(pack_mod.load_pack()))
    inputs = next(n for n in prompt.values() if n["class_type"] == "OpenSoraModelLoader")["inputs"]
    assert inputs.get("attention", "sdpa") == "sdpa"
