"""Memory features for the 11B Open-Sora 2.0 MMDiT: fp8 weight storage (models/fp8.py) and sequential offload
with prefetch (models/offload.py), on the tiny MMDiT. CPU tests run everywhere; the CUDA ones check the stream
path and the peak memory where a GPU is present."""
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from comfyui_opensora.models import fp8, offload, rflow_v2, tiny
from comfyui_opensora.models.opensora.mmdit import MMDiT, image_ids, load_mmdit

E4M3 = torch.float8_e4m3fn
CPU, CPU0 = torch.device("cpu"), torch.device("cpu", 0)  # different names, the same memory: the hook paths run


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return load_file(tiny.write_tiny_mmdit(str(tmp_path_factory.mktemp("mem") / "mmdit.safetensors")))


def _model(sd):
    return load_mmdit(dict(sd)).float().requires_grad_(False)


def _inputs(batch=2, t=2, h=8, w=8, seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    n = t * (h // 2) * (w // 2)
    args = (torch.randn(batch, n, 64, generator=g), image_ids(batch, t, h, w), torch.randn(batch, 7, 32, generator=g),
            torch.zeros(batch, 7, 3), torch.tensor([0.3, 0.8][:batch]), torch.randn(batch, 64, generator=g))
    cond = torch.randn(batch, n, 68, generator=g)
    return [a.to(device, dtype) for a in args], cond.to(device, dtype)


def _run(net, device="cpu", dtype=torch.float32):
    args, cond = _inputs(device=device, dtype=dtype)
    with torch.no_grad():
        return net(*args, cond=cond)


def _same(a, b):
    """Bitwise equal, dtype included (torch.equal has no float8 kernels on CPU)."""
    return a.dtype == b.dtype and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _block_linear_names(net):
    return {f"{lst}.{i}.{n}" for lst in ("double_blocks", "single_blocks") for i, blk in enumerate(getattr(net, lst))
            for n, m in blk.named_modules() if isinstance(m, nn.Linear)}


# --------------------------------------------------------------------------------------------------------------
# fp8 storage
# --------------------------------------------------------------------------------------------------------------
def test_fp8_storage_stays_close_to_fp32(tiny_sd):
    """Tolerance, from the format: e4m3 keeps 3 mantissa bits, so round-to-nearest moves a weight by at most 2^-4
    of itself (2^-10 of the scale in the subnormal range); checked elementwise below. Over a weight matrix the
    error is then ~2.5% RMS (uniform over half an ulp), independent from weight to weight, so a layer's output is
    off by about that much relative, and in the MMDiT each block's error enters only through its gated residual
    branch, while the embedders and the final layer stay exact. The whole model's relative error is therefore
    bounded by the per-layer 2^-4 / sqrt(3) ~ 3.6% RMS figure: assert < 3%, and > 1e-4 so that rounding did happen
    (the tiny model gives ~0.25%)."""
    ref, net = _model(tiny_sd), fp8.store_fp8(_model(tiny_sd))
    names = _block_linear_names(ref)
    assert {n for n, _ in fp8.fp8_linears(net)} == names
    ref_sd, sd = ref.state_dict(), net.state_dict()
    for key, value in ref_sd.items():
        layer = key.rsplit(".", 1)[0]
        if layer in names and key.endswith(".weight"):
            assert sd[key].dtype == E4M3
            scale = sd[layer + ".scale_weight"]
            assert scale.dtype == torch.float32 and scale.shape == ()
            assert torch.isclose(sd[key].float().abs().max() * scale, value.abs().max(), rtol=1e-6)
            err = (sd[key].float() * scale - value).abs()
            assert (err <= torch.maximum(value.abs() * 2 ** -4, scale * 2 ** -10) * (1 + 1e-6)).all(), key
        else:  # biases of converted layers, and every tensor outside the block linears: untouched
            assert sd[key].dtype == value.dtype and torch.equal(sd[key], value), key
    assert set(sd) - set(ref_sd) == {n + ".scale_weight" for n in names}

    want, got = _run(ref), _run(net)
    rel = ((got - want).norm() / want.norm()).item()
    assert 1e-4 < rel < 0.03, rel


def test_fp8_block_linears_take_a_quarter_of_the_bytes(tiny_sd):
    ref, net = _model(tiny_sd), fp8.store_fp8(_model(tiny_sd))
    names = _block_linear_names(ref)
    before = sum(fp8.parameter_bytes(ref.get_submodule(n)) for n in names)
    after = sum(fp8.parameter_bytes(net.get_submodule(n)) for n in names)
    assert after < 0.3 * before, after / before  # 1 byte per weight; fp32 bias and scale on top
    assert net.dtype == torch.float32  # the model's dtype (img_in) is still its compute dtype


def test_fp8_survives_dtype_casts_and_computes_in_the_input_dtype(tiny_sd):
    """pipeline-style net.to(dtype=bf16) after conversion: block weights stay fp8 and the scales fp32, the rest
    becomes bf16 and the model runs in bf16."""
    net = fp8.store_fp8(_model(tiny_sd))
    scales = {n: m.scale_weight.clone() for n, m in fp8.fp8_linears(net)}
    weights = {n: m.weight.clone() for n, m in fp8.fp8_linears(net)}
    net.to(dtype=torch.bfloat16)
    for n, m in fp8.fp8_linears(net):
        assert m.weight.dtype == E4M3 and _same(m.weight, weights[n])
        assert m.scale_weight.dtype == torch.float32 and torch.equal(m.scale_weight, scales[n])
        assert m.bias.dtype == torch.bfloat16
    assert net.img_in.weight.dtype == torch.bfloat16
    out = _run(net, dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    ref = _run(fp8.store_fp8(_model(tiny_sd)))
    assert ((out.float() - ref).norm() / ref.norm()) < 0.03  # bf16 rounding on top of the same fp8 weights
    # compute_dtype pins the matmul's precision whatever the input's
    lin = fp8.FP8Linear.from_linear(nn.Linear(8, 4), compute_dtype=torch.float32)
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    assert lin(x).dtype == torch.bfloat16
    torch.testing.assert_close(lin(x), (x.float() @ lin.dequantized_weight(torch.float32).T + lin.bias).bfloat16())


def test_scaled_fp8_checkpoint_round_trip(tiny_sd):
    """A converted model saved in ComfyUI's scaled_fp8 layout loads back to the same model, no second rounding;
    an unscaled fp8 file loads with scale 1; FLUX fused names hand their scale to the split layers."""
    net = fp8.store_fp8(_model(tiny_sd))
    sd = fp8.scaled_fp8_state_dict(net)
    assert fp8.is_fp8_state_dict(sd) and sd[fp8.SCALED_FP8_MARKER].dtype == E4M3
    plain, scales = fp8.split_scaled_fp8({**sd, "double_blocks.0.img_attn.q_proj.scale_input": torch.tensor(1.0)})
    assert not any(k.endswith((".scale_weight", ".scale_input")) or k == fp8.SCALED_FP8_MARKER for k in plain)
    loaded = load_mmdit(plain)
    assert fp8.adopt_fp8_linears(loaded, scales) == len(_block_linear_names(loaded))
    loaded.to(dtype=torch.float32)
    assert torch.equal(_run(loaded), _run(net))
    assert not fp8.is_fp8_state_dict(tiny_sd) and fp8.split_scaled_fp8(tiny_sd) == (dict(tiny_sd), {})

    lin = nn.Linear(4, 4)
    lin.weight.data = lin.weight.data.to(E4M3)
    holder = nn.Sequential(lin)
    assert fp8.adopt_fp8_linears(holder) == 1 and holder[0].scale_weight.item() == 1.0

    _, fused = fp8.split_scaled_fp8({"double_blocks.0.txt_attn.qkv.scale_weight": torch.tensor([0.5]),
                                     "single_blocks.1.linear1.scale_weight": torch.tensor(0.25)})
    assert {k: v.item() for k, v in fused.items()} == {
        "double_blocks.0.txt_attn.qkv": 0.5, "double_blocks.0.txt_attn.q_proj": 0.5,
        "double_blocks.0.txt_attn.k_proj": 0.5, "double_blocks.0.txt_attn.v_proj": 0.5,
        "single_blocks.1.linear1": 0.25, "single_blocks.1.q_proj": 0.25, "single_blocks.1.k_proj": 0.25,
        "single_blocks.1.v_mlp": 0.25}


# --------------------------------------------------------------------------------------------------------------
# Sequential offload and prefetch
# --------------------------------------------------------------------------------------------------------------
def test_offload_mode_names():
    assert offload.OFFLOAD_MODES[:3] == ["model", "none", "sequential"]  # saved workflows store these names
    assert "sequential_prefetch" in offload.OFFLOAD_MODES


@pytest.mark.parametrize("use_fp8", [False, True])
def test_sequential_offload_gives_the_same_output(tiny_sd, use_fp8):
    """Both sequential modes through their hook paths (cpu vs 'cpu:0'), and on a single CPU (no hooks): bitwise
    the output without offload, through the 2.0 sampler too; afterwards the weights are where they were."""
    net = _model(tiny_sd)
    if use_fp8:
        fp8.store_fp8(net)
    want = _run(net)
    args, _ = _inputs(batch=1)
    z, txt, vec = torch.randn(1, 16, 2, 8, 8), args[2][:1], args[5][:1]
    ts = rflow_v2.get_schedule(2, 16, 2)

    def sample(m):
        with torch.no_grad():
            return rflow_v2.sample(m, z, txt, vec, torch.zeros_like(txt), torch.zeros_like(vec), ts)

    want_sample = sample(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for mode in ("sequential", "sequential_prefetch"):
        for offload_device in (CPU0, CPU):
            with offload.on_device(net, mode, CPU, offload_device) as m:
                assert torch.equal(_run(m), want), (mode, offload_device)
                assert torch.equal(sample(m), want_sample), (mode, offload_device)
            after = net.state_dict()
            assert all(_same(after[k], v) for k, v in before.items())
            assert not any(h for blk in offload.repeated_blocks(net) for h in (blk._forward_pre_hooks,
                                                                              blk._forward_hooks))


def test_prefetcher_follows_the_execution_order():
    """The next block is learned from the previous pass: for the MMDiT the ModuleList order is already right
    (no misses), for interleaved lists (STDiT3's spatial / temporal) the first pass misses and later ones hit.
    The hook bookkeeping leaves every block on its home tensors."""

    class Interleaved(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))
            self.b = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

        def forward(self, x):
            for a, b in zip(self.a, self.b):
                x = b(a(x))
            return x

    torch.manual_seed(0)
    net, x = Interleaved().eval(), torch.randn(2, 4)
    want = net(x)
    blocks = list(offload.repeated_blocks(net))
    pf = offload.BlockPrefetcher(blocks, CPU)
    homes = {id(p): p.data_ptr() for p in net.parameters()}
    hooks = pf.attach()
    outs = [net(x) for _ in range(3)]
    first_pass_misses = pf.misses
    assert 0 < first_pass_misses < len(blocks)
    assert pf.hits + pf.misses == 3 * len(blocks) and pf.misses == first_pass_misses  # later passes: all hits
    assert [pf.next_of(b) for b in blocks] == [net.b[0], net.b[1], net.b[2], net.a[1], net.a[2], net.a[0]]
    assert len(pf.pending) == 1 and not pf.installed
    for h in hooks:
        h.remove()
    pf.close()
    assert not pf.pending and all(p.data_ptr() == homes[id(p)] for p in net.parameters())
    assert all(torch.equal(o, want) for o in outs)


def test_prefetcher_on_the_mmdit_never_misses(tiny_sd):
    net = _model(tiny_sd)
    blocks = list(offload.repeated_blocks(net))
    pf = offload.BlockPrefetcher(blocks, CPU)
    hooks = pf.attach()
    want = [_run(net) for _ in range(2)]
    assert (pf.hits, pf.misses) == (2 * len(blocks), 0)
    for h in hooks:
        h.remove()
    pf.close()
    assert torch.equal(want[0], want[1])


# --------------------------------------------------------------------------------------------------------------
# CUDA: the stream path and the memory it saves
# --------------------------------------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _mid_mmdit(seed=0):
    """Large enough that the blocks dominate the memory (about 280 MB in fp32), small enough for any GPU."""
    torch.manual_seed(seed)
    net = MMDiT(in_channels=64, vec_in_dim=64, context_in_dim=32, hidden_size=512, num_heads=4, depth=4,
                depth_single_blocks=8, axes_dim=(16, 56, 56)).eval().requires_grad_(False)
    tiny._perturb(net)
    return net


@cuda
@pytest.mark.parametrize("use_fp8", [False, True])
def test_cuda_prefetch_matches_no_offload(use_fp8):
    net = _mid_mmdit()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    net.to(dtype=dtype)
    if use_fp8:
        fp8.store_fp8(net)
    dev = torch.device("cuda")
    with offload.on_device(net, "none", dev, CPU) as m:
        want = [_run(m, dev, dtype) for _ in range(2)]
    net.to(CPU)
    for mode in ("sequential", "sequential_prefetch"):
        with offload.on_device(net, mode, dev, CPU) as m:
            got = [_run(m, dev, dtype) for _ in range(2)]  # two passes: the wrap-around prefetch is used too
        torch.cuda.synchronize()
        for g, w in zip(got, want):
            # The same kernels on the same weights give the same bits in practice; the tolerance (about one bf16
            # step) only allows cuBLAS another algorithm. A block that ran on weights still in flight, or on memory
            # a prefetch reused too early, would be off by O(1).
            torch.testing.assert_close(g.float(), w.float(), rtol=2 ** -7, atol=2 ** -7 * w.abs().max().item())
        assert all(p.device.type == "cpu" for p in net.parameters())
    if use_fp8:
        assert all(m.weight.dtype == E4M3 for _, m in fp8.fp8_linears(net))
    # the prefetch mode pinned the block weights once, and they stay pinned for the next sampling
    assert all(p.is_pinned() for blk in offload.repeated_blocks(net) for p in blk.parameters())


@cuda
def test_cuda_peak_memory_under_sequential_offload_is_below_the_model_size():
    net = _mid_mmdit()
    model_bytes = fp8.parameter_bytes(net)
    dev = torch.device("cuda")
    peaks = {}
    for mode in ("none", "sequential", "sequential_prefetch"):
        net.to(CPU)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with offload.on_device(net, mode, dev, CPU) as m:
            _run(m, dev)
            torch.cuda.synchronize()
        peaks[mode] = torch.cuda.max_memory_allocated() - base
    assert peaks["none"] >= model_bytes
    # one block (sequential) or two to three (prefetch) of 12, plus the small non-block layers and activations
    assert peaks["sequential"] < 0.5 * model_bytes, peaks
    assert peaks["sequential_prefetch"] < 0.75 * model_bytes, peaks
