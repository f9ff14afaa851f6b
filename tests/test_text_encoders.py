"""T5 loading from ComfyUI's single-file layout and HF folders; caption handling."""
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_opensora.models import text_encoders as te
from comfyui_opensora.models.tiny import write_tiny_t5


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    d = tmp_path_factory.mktemp("t5")
    return write_tiny_t5(str(d / "t5xxl_tiny.safetensors"))


def test_single_file_matches_transformers_folder(tiny_t5, tmp_path):
    """Our single-file loader (config from shapes) against transformers' own from_pretrained on the same weights."""
    from transformers import T5Config, T5EncoderModel

    sd = load_file(tiny_t5)
    config = T5Config(**te.t5_config_from_state_dict(sd))
    ref = T5EncoderModel(config)
    ref.load_state_dict({**sd, "encoder.embed_tokens.weight": sd["shared.weight"]})
    ref.eval()
    ref.save_pretrained(tmp_path / "hf")
    tok_dir = os.path.splitext(tiny_t5)[0] + "_tokenizer"

    ours = te.load_t5(tiny_t5)
    folder = te.load_t5(str(tmp_path / "hf"), tokenizer_dir=tok_dir)
    texts = ["a red circle moving left on a black background", ""]
    y1, m1 = te.t5_encode(ours, texts, max_length=12)
    y2, m2 = te.t5_encode(folder, texts, max_length=12)
    assert y1.shape == (2, 1, 12, 32) and m1.shape == (2, 12)
    assert torch.equal(m1, m2) and m1[1].sum() == 1  # the empty prompt is just </s>
    torch.testing.assert_close(y1, y2, atol=1e-6, rtol=1e-6)
    ids = ours.tokenizer(texts[0])["input_ids"]
    with torch.no_grad():
        direct = ref(input_ids=torch.tensor([ids])).last_hidden_state
    torch.testing.assert_close(y1[0, 0, :len(ids)], direct[0], atol=1e-5, rtol=1e-5)


def test_fp8_scaled_file(tiny_t5, tmp_path):
    """ComfyUI's t5xxl_fp8_e4m3fn_scaled layout: weight in fp8 plus scale_weight per matrix."""
    sd = load_file(tiny_t5)
    scaled = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for k, v in sd.items():
        if k.endswith(".weight") and v.ndim == 2 and "relative_attention_bias" not in k and k != "shared.weight":
            scale = v.abs().max() / 448.0
            scaled[k] = (v / scale).to(torch.float8_e4m3fn)
            scaled[k[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            scaled[k] = v
    path = tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(scaled, str(path))
    tok_dir = os.path.splitext(tiny_t5)[0] + "_tokenizer"
    y8, _ = te.t5_encode(te.load_t5(str(path), tokenizer_dir=tok_dir), ["a blue square"], max_length=8)
    y32, _ = te.t5_encode(te.load_t5(tiny_t5), ["a blue square"], max_length=8)
    assert (y8 - y32).abs().max() < 0.1 * y32.abs().max()


def test_clear_errors(tmp_path, tiny_t5):
    with pytest.raises(te.TextEncoderError, match="not found"):
        te.load_t5(str(tmp_path / "nope.safetensors"))
    alone = tmp_path / "lonely.safetensors"
    alone.write_bytes(open(tiny_t5, "rb").read())
    with pytest.raises(te.TextEncoderError, match="no T5 tokenizer found"):
        te.load_t5(str(alone))
    with pytest.raises(te.TextEncoderError, match="not a T5 encoder"):
        te.t5_config_from_state_dict({"x_embedder.proj.weight": torch.zeros(1)})


def test_clean_caption_spec_example():
    # The example in the spec was produced by running the original clean_caption.
    assert te.clean_caption("A cat (fluffy) & a dog, 4K! aesthetic score: 6.5.") == \
        "a cat fluffy a dog, 4k! aesthetic score: 6.5."
