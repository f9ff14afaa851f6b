"""CogVideoX transformer: every released variant, tiny, against diffusers 0.42.1 on the same weights
(diffusers is a test-only dependency, never imported by the pack)."""
import pytest
import torch

from comfyui_opensora.models.cogvideox.transformer import CogVideoXTransformer3D, rope_3d, rope_for_video

import diffusers  # noqa: E402  (test extra)

TINY = dict(num_attention_heads=2, attention_head_dim=16, time_embed_dim=32, text_embed_dim=24, num_layers=2,
            sample_width=8, sample_height=8, sample_frames=9, max_text_seq_length=7, out_channels=16)
VARIANTS = {
    "2b": dict(in_channels=16),
    "5b": dict(in_channels=16, use_rotary_positional_embeddings=True),
    "5b_i2v": dict(in_channels=32, use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True),
    "1.5": dict(in_channels=16, use_rotary_positional_embeddings=True, patch_size_t=2, patch_bias=False,
                sample_height=12, sample_width=10),
    "1.5_i2v": dict(in_channels=32, use_rotary_positional_embeddings=True, patch_size_t=2, patch_bias=False,
                    ofs_embed_dim=32, sample_height=12, sample_width=10),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_matches_diffusers(variant):
    cfg = {**TINY, **VARIANTS[variant]}
    torch.manual_seed(0)
    ref = diffusers.CogVideoXTransformer3DModel(**cfg).eval()
    with torch.no_grad():
        for p in ref.parameters():  # zero-initialised layers must not hide anything
            p.add_(torch.randn_like(p) * 0.05)
    ours = CogVideoXTransformer3D(**cfg).eval()
    sd = ref.state_dict()
    missing, unexpected = ours.load_state_dict({k: v for k, v in sd.items() if k != "patch_embed.pos_embedding"
                                                or cfg.get("use_learned_positional_embeddings")}, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    frames = 4 if cfg.get("patch_size_t") else 3  # 3 latent frames = 9 pixel frames = the sample size
    x = torch.randn(2, frames, cfg["in_channels"], 8, 8)
    text = torch.randn(2, cfg["max_text_seq_length"], cfg["text_embed_dim"])
    t = torch.tensor([999, 321])
    rope = rope_for_video(ours.config, 64, 64, frames) if cfg.get("use_rotary_positional_embeddings") else None
    kw = {"ofs": torch.tensor([2.0])} if cfg.get("ofs_embed_dim") else {}
    with torch.no_grad():
        want = ref(x, text, t, image_rotary_emb=rope, return_dict=False, **kw)[0]
        got = ours(x, text, t, image_rotary_emb=rope, **kw)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def test_rope_matches_diffusers_function():
    from diffusers.models.embeddings import get_3d_rotary_pos_embed
    from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

    for gh, gw, t in ((30, 45, 13), (20, 40, 5), (7, 3, 2)):
        crops = get_resize_crop_region_for_grid((gh, gw), 45, 30)
        want = get_3d_rotary_pos_embed(64, crops, (gh, gw), t)
        got = rope_3d(64, gh, gw, t, "linspace", 30, 45)
        torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(got[1], want[1], atol=1e-6, rtol=1e-6)
