"""models/tiling.py's in-place stitching (HunyuanVideo's VAE, CogVideoX's) against a row-by-row reference that
spells the originals' loops out: bitwise, for fp32 and bf16 tiles, weights in fp32 or in the tiles' dtype."""
import pytest
import torch

from comfyui_opensora.models.tiling import fade_in_, stitch_rows


def reference_fade(prev, cur, extent, dim, weight_dtype):
    """A new tensor: cur with its first rows along dim faded in from prev's last ones, one row at a time, each
    weight y / e a float64 rounded to the weight dtype and applied in what it and the tile promote to."""
    e = min(prev.shape[dim], cur.shape[dim], extent)
    w_dtype = weight_dtype or cur.dtype
    acc = torch.promote_types(cur.dtype, w_dtype)
    out = cur.clone()
    for y in range(e):
        w = torch.tensor(y / e, dtype=torch.float64).to(w_dtype).to(acc)
        w1 = torch.tensor(1 - y / e, dtype=torch.float64).to(w_dtype).to(acc)
        row = prev.select(dim, prev.shape[dim] - e + y).to(acc) * w1 + cur.select(dim, y).to(acc) * w
        out.select(dim, y).copy_(row)
    return out


def reference_stitch(rows, blend, keep, weight_dtype):
    """Tiles blended with the already blended tile above, then the already blended one to the left (the
    in-place originals' dependency, made explicit), cropped and concatenated."""
    done = []
    for i, row in enumerate(rows):
        done.append([])
        for j, tile in enumerate(row):
            if i:
                tile = reference_fade(done[i - 1][j], tile, blend[0], 3, weight_dtype)
            if j:
                tile = reference_fade(done[i][j - 1], tile, blend[1], 4, weight_dtype)
            done[i].append(tile)
    crops = [torch.cat([t[:, :, :, :keep[0], :keep[1]] for t in row], dim=4) for row in done]
    return torch.cat(crops, dim=3)


def tile_grid(dtype, heights=(7, 7, 3), widths=(9, 9, 2)):
    """Tiles [B, C, T, h, w] as a tiled decode makes them: full ones and thin last ones."""
    g = torch.Generator().manual_seed(0)
    return [[torch.randn(2, 3, 2, h, w, generator=g).to(dtype) for w in widths] for h in heights]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("weight_dtype", [torch.float32, None])  # HunyuanVideo's, CogVideoX's
@pytest.mark.parametrize("blend, keep", [((3, 4), (4, 5)), ((0, 1), (7, 8)), ((20, 20), (5, 6))])
def test_stitch_rows_matches_the_reference(dtype, weight_dtype, blend, keep):
    rows = tile_grid(dtype)
    want = reference_stitch(rows, blend, keep, weight_dtype)
    got = stitch_rows([[t.clone() for t in row] for row in rows], blend, keep, weight_dtype)
    assert got.dtype == dtype
    assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("weight_dtype", [torch.float32, None])
@pytest.mark.parametrize("dim", [2, -1])
def test_fade_in_matches_the_reference_in_place(dtype, weight_dtype, dim):
    """Along time too (HunyuanVideo's temporal windows), shrinking to the shorter tile."""
    g = torch.Generator().manual_seed(1)
    shape = lambda n: [n if d == dim % 5 else s for d, s in enumerate((1, 2, 4, 4, 6))]  # noqa: E731
    prev, cur = (torch.randn(shape(n), generator=g).to(dtype) for n in (5, 3))
    want, before = reference_fade(prev, cur, 4, dim, weight_dtype), cur.clone()
    assert fade_in_(prev, cur, 4, dim, weight_dtype) is cur
    assert torch.equal(cur, want) and not torch.equal(cur, before)


def test_bf16_tiles_blend_at_the_weights_precision():
    """fp32 weights round a bf16 tile once; weights in bf16 round each product: the two VAEs' numerics differ,
    which is why the weight dtype is a parameter."""
    rows = tile_grid(torch.bfloat16)
    fp32 = stitch_rows([[t.clone() for t in row] for row in rows], (3, 4), (4, 5), torch.float32)
    bf16 = stitch_rows([[t.clone() for t in row] for row in rows], (3, 4), (4, 5))
    assert not torch.equal(fp32, bf16)
