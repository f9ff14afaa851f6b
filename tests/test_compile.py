"""torch.compile of the transformer blocks (models/compilation.py) on CPU (inductor): within 1e-5 of eager, no
recompiles after the first run at a size, and back to bit-identical eager when a model without it samples."""
import pytest
import torch
from torch._dynamo.utils import counters

from comfyui_opensora.models import pipeline, tiny
from comfyui_opensora.nodes.common import NodeInputError
from comfyui_opensora.nodes.loaders import OpenSoraCompileModel


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    paths = tiny.write_tiny_models(str(tmp_path_factory.mktemp("compile")))
    model = pipeline.load_diffusion_model(paths["model"], "fp32")
    vae = pipeline.load_vae(paths["vae"], "fp32")
    t5 = pipeline.load_text_encoder(paths["text_encoder"], None, "fp32", "cpu")
    cond = pipeline.encode_text(t5, "a red ball", "opensora-v1.2", offload=False)
    latent = pipeline.empty_latent(vae, "custom", "16:9", 32, 32, 17, 1)
    return model, cond, latent


def _run(model, cond, latent, steps=3):
    return pipeline.sample(model, cond, latent, seed=1, steps=steps, cfg=5.0, scheduler="rflow", denoise=1.0,
                           fps=24)["samples"]


def test_compiled_blocks_match_eager_and_compile_once(setup):
    model, cond, latent = setup
    eager = _run(model, cond, latent)
    (compiled,) = OpenSoraCompileModel().compile(model, "default", False)
    assert compiled.net is model.net and model.compile is None  # weights shared, the loader's model untouched
    out = _run(compiled, cond, latent)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0, "nothing was compiled"
    _run(compiled, cond, latent, steps=5)  # more steps, same size: the graphs are reused, never recompiled
    assert counters["stats"]["unique_graphs"] == graphs
    assert torch.equal(_run(model, cond, latent), eager), "the model without compile runs eager again"


def test_unknown_mode_names_the_input(setup):
    with pytest.raises(NodeInputError, match="OpenSoraCompileModel: input 'mode': unknown torch.compile mode"):
        OpenSoraCompileModel().compile(setup[0], "fastest", False)
