"""T5 v1.1 and CLIP text encoders through transformers, loaded from local files only.

Two T5 layouts are accepted:
- a Hugging Face folder (config.json + weights, e.g. DeepFloyd/t5-v1_1-xxl), and
- the single file ComfyUI users already keep in models/text_encoders (t5xxl_fp16.safetensors,
  t5xxl_fp8_e4m3fn[_scaled].safetensors): T5EncoderModel keys, config read off the tensor shapes.
The tokenizer always comes from a local folder (the checkpoint's own folder, a folder named like the
file, models/opensora/t5_tokenizer, or the tokenizer ComfyUI ships).

CLIP-L (Open-Sora 2.0's pooled text vector) loads the same two ways: an HF folder
(openai/clip-vit-large-patch14) or ComfyUI's clip_l.safetensors (CLIPTextModel keys `text_model.*`).
"""
from __future__ import annotations

import html
import os
import re
import urllib.parse
from dataclasses import dataclass

import torch

from .checkpoint import check_safetensors, load_state_dict_file

T5_MAX_LENGTH = {"v1.0": 120, "v1.1": 200, "v1.2": 300, "v2.0": 512}
CLIP_MAX_LENGTH = 77
T5_TOKENIZER_FILES = {"spiece.model", "tokenizer.json"}
CLIP_TOKENIZER_FILES = {"vocab.json", "tokenizer.json"}


class TextEncoderError(ValueError):
    pass


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def t5_config_from_state_dict(sd: dict) -> dict:
    """T5Config arguments for an encoder state dict (ComfyUI single-file or HF layout)."""
    if "shared.weight" not in sd and "encoder.embed_tokens.weight" not in sd:
        raise TextEncoderError("this file is not a T5 encoder (no 'shared.weight' / 'encoder.embed_tokens.weight')")
    vocab, d_model = (sd.get("shared.weight") if "shared.weight" in sd else sd["encoder.embed_tokens.weight"]).shape
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.block."))
    bias = sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    heads = bias.shape[1]
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in sd
    wi = sd["encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi") + ".weight"]
    return dict(vocab_size=vocab, d_model=d_model, num_layers=layers, num_heads=heads,
                d_kv=sd["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0] // heads, d_ff=wi.shape[0],
                relative_attention_num_buckets=bias.shape[0],
                feed_forward_proj="gated-gelu" if gated else "relu", is_encoder_decoder=False,
                use_cache=False, tie_word_embeddings=False)


def _dequantize(sd: dict, dtype: torch.dtype) -> dict:
    """fp8 files: ComfyUI's 'scaled' variants store weight/scale_weight pairs; plain fp8 is just cast."""
    out = {}
    for k, v in sd.items():
        if k == "scaled_fp8" or k.endswith(".scale_weight") or k.endswith(".scale_input"):
            continue
        scale = sd.get(k[: -len("weight")] + "scale_weight") if k.endswith(".weight") else None
        v = v.to(torch.float32) * scale.to(torch.float32) if scale is not None else v
        out[k] = v.to(dtype) if v.is_floating_point() else v
    return out


def find_tokenizer(model_path: str, extra_dirs=(), files=T5_TOKENIZER_FILES) -> str | None:
    """First folder that holds a tokenizer (one of `files`), near the checkpoint or in the usual places."""
    base = model_path if os.path.isdir(model_path) else os.path.dirname(model_path)
    stem = os.path.splitext(model_path)[0]
    candidates = [base, stem, os.path.join(base, "tokenizer"), stem + "_tokenizer", *extra_dirs]
    for d in candidates:
        if d and os.path.isdir(d) and (set(files) & set(os.listdir(d))):
            return d
    return None


def load_tokenizer(folder: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, legacy=True)
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds here
        raise TextEncoderError(f"could not read a tokenizer from {folder}: {e}") from e


@dataclass
class TextEncoder:
    """A transformers encoder with its tokenizer; kind is "t5" or "clip"."""
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype

    kind: str = "t5"

    def to(self, device):
        self.model.to(device)
        self.device = torch.device(device)
        return self


T5Encoder = TextEncoder


def _check_weights(folder: str):
    """A cut download in a Hugging Face folder is named before transformers fails on it."""
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            check_safetensors(os.path.join(folder, name))


def load_t5(path: str, tokenizer_dir: str | None = None, dtype=torch.float32, device="cpu") -> TextEncoder:
    """A T5 encoder from an HF folder or a single safetensors file."""
    from transformers import T5Config, T5EncoderModel

    if not os.path.exists(path):
        raise TextEncoderError(f"text encoder not found: {path}")
    if tokenizer_dir is None:
        tokenizer_dir = find_tokenizer(path)
    if tokenizer_dir is None:
        raise TextEncoderError(
            f"no T5 tokenizer found next to {path}: put the tokenizer files (spiece.model or tokenizer.json with "
            f"tokenizer_config.json) in a folder beside it, or pick one with the tokenizer input")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "config.json")):
            raise TextEncoderError(f"{path} is a folder without config.json; expected a Hugging Face T5 folder")
        _check_weights(path)
        model = T5EncoderModel.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
    else:
        sd = _dequantize(load_state_dict_file(path), dtype)
        config = T5Config(**t5_config_from_state_dict(sd))
        with torch.device("meta"):
            model = T5EncoderModel(config)
        sd.setdefault("encoder.embed_tokens.weight", sd.get("shared.weight"))
        sd.setdefault("shared.weight", sd["encoder.embed_tokens.weight"])
        missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
        if missing:
            raise TextEncoderError(f"{os.path.basename(path)} lacks T5 encoder weights: {missing[:5]}...")
        model = model.to(dtype)
    model.eval().requires_grad_(False)
    return TextEncoder(model.to(device), load_tokenizer(tokenizer_dir), torch.device(device), dtype)


def clip_config_from_state_dict(sd: dict) -> dict:
    """CLIPTextConfig arguments from the weight shapes; heads of 64 channels and quick_gelu as OpenAI's CLIP."""
    vocab, hidden = sd["text_model.embeddings.token_embedding.weight"].shape
    return dict(vocab_size=vocab, hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
                intermediate_size=sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
                num_hidden_layers=1 + max(int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers.")),
                max_position_embeddings=sd["text_model.embeddings.position_embedding.weight"].shape[0],
                hidden_act="quick_gelu", bos_token_id=vocab - 2, pad_token_id=vocab - 1,
                eos_token_id=2)  # eos 2 selects transformers' legacy pooling: at the highest id, OpenAI's <|endoftext|>


def is_clip(sd: dict) -> bool:
    return any(k.endswith("text_model.embeddings.token_embedding.weight") for k in sd)


def load_clip(path: str, tokenizer_dir: str | None = None, dtype=torch.float32, device="cpu") -> TextEncoder:
    """A CLIP text encoder from an HF folder or a single safetensors file (clip_l.safetensors)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    if not os.path.exists(path):
        raise TextEncoderError(f"text encoder not found: {path}")
    if tokenizer_dir is None:
        raise TextEncoderError(
            f"no CLIP tokenizer found next to {path}: put its files (vocab.json and merges.txt, or tokenizer.json) "
            f"in a folder beside it named like the file plus '_tokenizer', or pick one with the tokenizer input")
    if os.path.isdir(path):
        _check_weights(path)
        model = CLIPTextModel.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
    else:
        sd = _dequantize(load_state_dict_file(path), dtype)
        cut = next(k for k in sd if k.endswith("text_model.embeddings.token_embedding.weight")).index("text_model.")
        sd = {k[cut:]: v for k, v in sd.items() if k[cut:].startswith("text_model.")}  # drop prefixes, projection
        # built on the CPU, not meta: position_ids is a non-persistent buffer the file does not hold (CLIP-L is
        # 123M parameters, so the throwaway init is cheap)
        model = CLIPTextModel(CLIPTextConfig(**clip_config_from_state_dict(sd)))
        sd.pop("text_model.embeddings.position_ids", None)
        # transformers 4 names CLIPTextModel's weights text_model.*, transformers 5 drops the prefix
        own = "text_model." if any(k.startswith("text_model.") for k in model.state_dict()) else ""
        sd = {own + k[len("text_model."):]: v for k, v in sd.items()}
        missing, _ = model.load_state_dict(sd, strict=False)
        if missing:
            raise TextEncoderError(f"{os.path.basename(path)} lacks CLIP text weights: {missing[:5]}...")
        model = model.to(dtype)
    model.eval().requires_grad_(False)
    try:
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise TextEncoderError(f"could not read a CLIP tokenizer from {tokenizer_dir}: {e}") from e
    return TextEncoder(model.to(device), tokenizer, torch.device(device), dtype, kind="clip")


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def t5_encode(enc: T5Encoder, texts: list[str], max_length: int, use_mask: bool = True):
    """y [B, 1, L, C] float32 and the token mask [B, L] (int64, 1 = real token).

    v1.x pads to max_length and passes the attention mask; 2.0 pads the same way but runs T5 without it.
    """
    tok = enc.tokenizer(texts, max_length=max_length, padding="max_length", truncation=True,
                        add_special_tokens=True, return_tensors="pt")
    ids, mask = tok["input_ids"].to(enc.device), tok["attention_mask"].to(enc.device)
    hidden = enc.model(input_ids=ids, attention_mask=mask if use_mask else None).last_hidden_state
    return hidden.float()[:, None].cpu(), mask.cpu()


@torch.no_grad()
def clip_pooled(enc: TextEncoder, texts: list[str]) -> torch.Tensor:
    """CLIP's pooled output [B, hidden] float32: 77 tokens padded to the maximum, no attention mask (2.0)."""
    tok = enc.tokenizer(texts, max_length=CLIP_MAX_LENGTH, padding="max_length", truncation=True,
                        return_tensors="pt")
    return enc.model(input_ids=tok["input_ids"].to(enc.device)).pooler_output.float().cpu()


_URL = re.compile(r"\b(?:https?:|www\.)\S+", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]+>")
_NICK = re.compile(r"@[\w\d]+\b")
_BAD_PUNCT = re.compile(r"[#®•©™&@·º½¾¿¡§~\)\(\]\[\}\{\|\\/\*]{1,}")


def clean_caption(text: str) -> str:
    """The v1.x caption normalisation (PixArt's clean_caption, applied twice by the original): lowercase,
    unescape HTML, drop URLs, tags, @nicknames and noisy punctuation, collapse spaces.

    Our own rendition of the documented rules; it matches the original on ordinary prompts
    ("A cat (fluffy) & a dog, 4K! aesthetic score: 6.5." -> "a cat fluffy a dog, 4k! aesthetic score: 6.5.")
    rather than every corner of its ~40 regexes.
    """
    for _ in range(2):
        text = urllib.parse.unquote_plus(str(text)).strip().lower()
        text = html.unescape(text)
        text = _URL.sub("", text)
        text = _HTML_TAG.sub("", text)
        text = _NICK.sub("", text)
        text = re.sub(r"[‘’´`]", "'", text)
        text = re.sub(r"[“”„«»]", '"', text)
        text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)
        text = _BAD_PUNCT.sub(" ", text)
        text = re.sub(r"\s+([,.!?;:])", r"\1", text)
        text = re.sub(r"\s+", " ", text).strip()
    return text
