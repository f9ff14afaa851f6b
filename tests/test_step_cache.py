"""Step caching (models/step_cache.py): off is the uncached run bit for bit; on, calls are skipped exactly when
the summed input change stays under the threshold inside [start, end), for every family's sampler."""
import pytest
import torch

from comfyui_opensora.models import pipeline, step_cache, tiny
from comfyui_opensora.nodes.common import NodeInputError
from comfyui_opensora.nodes.loaders import OpenSoraStepCache


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ran = []

    def forward(self, x, t):
        self.ran.append(t)
        return x * 2


def test_skips_while_the_summed_change_stays_under_the_threshold():
    net = Net()
    x = torch.ones(4)
    # relative changes between consecutive calls: 0 (first), .05, .05, .05, .2, .01, .01
    inputs = [x, x * 1.05]
    for f in (1.05, 1.05, 1.2, 1.01, 1.01):
        inputs.append(inputs[-1] * f)
    with step_cache.caching(net, {"threshold": 0.12, "start": 0.0, "end": 1.0}, len(inputs)) as stats:
        outs = [net(v, i) for i, v in enumerate(inputs)]
    # 0 runs; 1 (.05) and 2 (.10) skip; 3 (.15) runs; 4 (.2) runs; 5 (.01) and 6 (.02) skip
    assert net.ran == [0, 3, 4]
    assert stats == {"calls": 7, "skipped": 4}
    assert outs[1] is outs[0] and outs[6] is outs[4]
    assert "forward" not in net.__dict__, "the class's forward is back after the run"


def test_start_and_end_always_run():
    net = Net()
    with step_cache.caching(net, {"threshold": 10.0, "start": 0.25, "end": 0.75}, 8):
        for i in range(8):
            net(torch.ones(2) * (1 + i), i)
    assert net.ran == [0, 1, 6, 7]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    paths = tiny.write_tiny_models(str(root))
    paths["cogvideox"] = tiny.write_tiny_cogvideox(str(root / "cogvideox"), "5b")
    t5 = pipeline.load_text_encoder(paths["text_encoder"], None, "fp32", "cpu")
    clip = pipeline.load_text_encoder(paths["clip"], None, "fp32", "cpu")
    return paths, t5, clip


FAMILIES = {  # model, vae, text family, scheduler, frames, size
    "opensora-v1.2": ("model", "vae", "rflow", 17, 32),
    "opensora-v1.1": ("model_v1.1", "vae_sd", "iddpm", 5, 32),
    "opensora-v2.0": ("model_v2.0", "vae_hunyuan", "rflow-v2", 9, 32),
    "cogvideox": ("cogvideox", "cogvideox", "dpm", 9, 64),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_sampler_off_is_exact_and_on_skips(models, family, capsys):
    paths, t5, clip = models
    model_key, vae_key, scheduler, frames, size = FAMILIES[family]
    model = pipeline.load_diffusion_model(paths[model_key], "fp32")
    vae = pipeline.load_vae(paths[vae_key], "fp32")
    cond = pipeline.encode_text(t5, "a red ball", family, offload=False, clip=clip)
    latent = pipeline.empty_latent(vae, "custom", "1:1", size, size, frames, 1)

    def run(m):
        return pipeline.sample(m, cond, latent, seed=2, steps=12, cfg=5.0, scheduler=scheduler, denoise=1.0,
                               fps=24)["samples"]

    exact = run(model)
    (off,) = OpenSoraStepCache().cache(model, 0.0, 0.1, 0.9)
    assert torch.equal(run(off), exact), "threshold 0 must be the uncached run bit for bit"
    (on,) = OpenSoraStepCache().cache(model, 1.0, 0.1, 0.9)
    capsys.readouterr()
    cached = run(on)
    said = capsys.readouterr().out
    skipped = int(said.split("step cache: ")[1].split(" of ")[0])
    assert 0 < skipped <= 10, said  # step 0 (before 0.1 of 12) and step 11 (from 0.9 of 12 on) always run
    assert torch.isfinite(cached).all() and not torch.equal(cached, exact)
    assert "forward" not in model.net.__dict__


def test_bad_range_names_the_input(models):
    paths, _, _ = models
    model = pipeline.load_diffusion_model(paths["model"], "fp32")
    with pytest.raises(NodeInputError, match="OpenSoraStepCache: input 'start'"):
        OpenSoraStepCache().cache(model, 0.1, 0.8, 0.2)
