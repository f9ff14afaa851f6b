"""Tiny random checkpoints in the released key layouts, written to a models folder.

Used by the tests, the benchmarks and the README's first command: they exercise the real file loading
(single-file safetensors, strict keys, tokenizer folders) without any download.
"""
from __future__ import annotations

import io
import os

import torch
from safetensors.torch import save_file

WORDS = ("a an the red green blue yellow white orange purple circle square triangle moving left right up down "
         "still growing shrinking on black gray white background aesthetic score motion camera pan zoom cat dog "
         "in of and with is are video frame fps").split()


def write_t5_tokenizer(folder: str, words=WORDS, vocab_size: int = 96):
    """A small T5-style (sentencepiece unigram) tokenizer: pad 0, </s> 1, <unk> 2, saved as tokenizer.json."""
    import sentencepiece as spm
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))] * 8
    proto = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=proto, vocab_size=vocab_size,
                                   model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                   character_coverage=1.0, hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=proto.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    vocab[:3] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Replace(" {2,}", " ")
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    fast = T5TokenizerFast(tokenizer_object=tok, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0)
    os.makedirs(folder, exist_ok=True)
    fast.save_pretrained(folder)
    return len(vocab)


def write_tiny_t5(path: str, d_model: int = 32, num_layers: int = 2, num_heads: int = 2, d_ff: int = 64,
                  seed: int = 0) -> str:
    """A tiny T5 v1.1 encoder as ComfyUI's single-file t5xxl_*.safetensors layout, plus its tokenizer in
    `<stem>_tokenizer/` beside it. Returns the file path."""
    from transformers import T5Config, T5EncoderModel

    tok_dir = os.path.splitext(path)[0] + "_tokenizer"
    vocab = write_t5_tokenizer(tok_dir)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab, d_model=d_model, num_layers=num_layers, num_heads=num_heads,
                      d_kv=d_model // num_heads, d_ff=d_ff, feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    model = T5EncoderModel(config)
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file(sd, path)
    return path


def write_clip_tokenizer(folder: str, words=WORDS) -> int:
    """A small CLIP-style BPE tokenizer (vocab.json + merges.txt with '</w>' word ends; <|startoftext|> and
    <|endoftext|> last, so the end token has the highest id as in OpenAI's vocabulary). Returns the vocab size."""
    import json
    import tempfile

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([" ".join(words)] * 8, trainers.BpeTrainer(vocab_size=400, end_of_word_suffix="</w>",
                                                                         show_progress=False))
    with tempfile.TemporaryDirectory() as tmp:
        tok.model.save(tmp)
        vocab = json.load(open(os.path.join(tmp, "vocab.json")))
        vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
        with open(os.path.join(tmp, "vocab.json"), "w") as f:
            json.dump(vocab, f)
        CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt")).save_pretrained(folder)
    return len(vocab)


def write_tiny_clip(path: str, hidden: int = 64, layers: int = 2, seed: int = 0) -> str:
    """A tiny CLIP text encoder as ComfyUI's clip_l.safetensors layout (text_model.* plus text_projection),
    its tokenizer in `<stem>_tokenizer/`. Returns the file path."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    vocab = write_clip_tokenizer(os.path.splitext(path)[0] + "_tokenizer")
    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, num_attention_heads=max(1, hidden // 64),
                            intermediate_size=2 * hidden, num_hidden_layers=layers, max_position_embeddings=77,
                            projection_dim=hidden, hidden_act="quick_gelu", bos_token_id=vocab - 2,
                            pad_token_id=vocab - 1, eos_token_id=2)
    sd = CLIPTextModelWithProjection(config).state_dict()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items() if k != "text_model.embeddings.position_ids"}, path)
    return path


def write_tiny_stdit3(path: str, seed: int = 0, **overrides) -> str:
    """A tiny STDiT3 (hidden 64, depth 2) with the released key layout and a 300-token null caption, so it
    takes the v1.2 text conditioning of write_tiny_t5 (d_model 32)."""
    from .opensora.stdit3 import STDiT3

    torch.manual_seed(seed)
    cfg = dict(hidden_size=64, depth=2, num_heads=4, caption_channels=32, model_max_length=300)
    cfg.update(overrides)
    model = STDiT3(**cfg)
    _save(model, path)
    return path


def write_tiny_vae_v1_2(path: str, seed: int = 0) -> str:
    """A tiny Open-Sora VAE v1.2 (2D VAE widths 8-16, temporal filters 8) in the released key layout."""
    from .opensora.vae_v1_2 import OpenSoraVAEv12

    torch.manual_seed(seed)
    model = OpenSoraVAEv12(spatial=dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4),
                           temporal=dict(filters=8, num_res=1, groups=4))
    _save(model, path)
    return path


def write_tiny_stdit(path: str, input_size=(17, 8, 8), seed: int = 0) -> str:
    """A tiny Open-Sora 1.0 STDiT (hidden 64, 16 heads as STDiT-XL/2, depth 2) for a fixed latent size, with
    the position tables the released .pth files carry, saved as a .pth training checkpoint would be."""
    from .opensora.stdit import STDiT

    torch.manual_seed(seed)
    model = STDiT(input_size=input_size, hidden_size=64, depth=2, num_heads=16, caption_channels=32,
                  model_max_length=120, space_scale=input_size[1] / 64)
    _perturb(model)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    torch.save({"model": {k: v.detach().clone() for k, v in model.state_dict().items()}}, path)
    return path


def write_tiny_stdit2(path: str, seed: int = 0) -> str:
    """A tiny Open-Sora 1.1 STDiT2 (hidden 96, depth 2, 200-token null caption) in the HF model.safetensors layout."""
    from .opensora.stdit2 import STDiT2

    torch.manual_seed(seed)
    model = STDiT2(hidden_size=96, depth=2, num_heads=4, caption_channels=32, model_max_length=200)
    _perturb(model)
    _save(model, path)
    return path


def write_tiny_sd_vae(path: str, seed: int = 0) -> str:
    """A tiny SD VAE (widths 8-16, 8x downsampling) in the diffusers layout (as stabilityai/sd-vae-ft-ema)."""
    from .sd_vae import AutoencoderKL

    torch.manual_seed(seed)
    _save(AutoencoderKL(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4), path)
    return path


def write_tiny_mmdit(path: str, in_channels: int = 64, patch_size: int = 2, seed: int = 0) -> str:
    """A tiny Open-Sora 2.0 MMDiT (hidden 64, 2 heads, 2 double + 2 single blocks) in the released split-qkv
    layout, taking write_tiny_t5's width-32 T5 features and write_tiny_clip's 64-wide pooled vector.
    in_channels 64 / patch 2 pairs with the HunyuanVideo VAE, 32 / patch 1 with write_tiny_dc_ae."""
    from .opensora.mmdit import MMDiT

    torch.manual_seed(seed)
    model = MMDiT(in_channels=in_channels, vec_in_dim=64, context_in_dim=32, hidden_size=64, num_heads=2, depth=2,
                  depth_single_blocks=2, axes_dim=(4, 14, 14), patch_size=patch_size)
    _perturb(model)
    _save(model, path)
    return path


def write_tiny_hunyuan_vae(path: str, seed: int = 0) -> str:
    """A tiny HunyuanVideo VAE (widths 8-16, 8x space, 4x time, 16 latent channels) in the released layout."""
    from .opensora.hunyuan_vae import HunyuanVAE

    torch.manual_seed(seed)
    _save(HunyuanVAE(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4), path)
    return path


def write_tiny_dc_ae(path: str, seed: int = 0) -> str:
    """A tiny Video DC-AE (the released six stages at widths 8-64, 32x space, 4x time, 32 latent channels)."""
    from .opensora.dc_ae import VideoDCAE

    torch.manual_seed(seed)
    widths = [8, 8, 16, 32, 32, 64]
    _save(VideoDCAE(latent_channels=32, encoder_widths=widths, encoder_depths=[1] * 6, decoder_widths=widths,
                    decoder_depths=[1] * 6), path)
    return path


def flux_layout(sd: dict) -> dict:
    """Split-qkv MMDiT names -> FLUX.1's released fused ones (img_attn.qkv / txt_attn.qkv, single linear1)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if len(parts) == 5 and parts[0] == "double_blocks" and parts[3] in ("q_proj", "k_proj", "v_proj"):
            if parts[3] == "q_proj":
                base = ".".join(parts[:3])
                out[f"{base}.qkv.{parts[4]}"] = torch.cat([sd[f"{base}.{n}_proj.{parts[4]}"] for n in "qkv"])
        elif len(parts) == 4 and parts[0] == "single_blocks" and parts[2] in ("q_proj", "k_proj", "v_mlp"):
            if parts[2] == "q_proj":
                base = ".".join(parts[:2])
                out[f"{base}.linear1.{parts[3]}"] = torch.cat([sd[f"{base}.{n}.{parts[3]}"]
                                                               for n in ("q_proj", "k_proj", "v_mlp")])
        else:
            out[k] = v
    return out


def write_tiny_flux(path: str, seed: int = 0) -> str:
    """A tiny FLUX.1-dev (Open-Sora 2.0's t2i2v image model: guidance-distilled, no cond_in, interleaved RoPE) in
    the released fused layout, taking the same tiny T5 / CLIP features as write_tiny_mmdit."""
    from .opensora.mmdit import MMDiT

    torch.manual_seed(seed)
    model = MMDiT(in_channels=64, vec_in_dim=64, context_in_dim=32, hidden_size=64, num_heads=2, depth=2,
                  depth_single_blocks=2, axes_dim=(4, 14, 14), guidance_embed=True, cond_embed=False,
                  rope_half_split=False)
    _perturb(model)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in flux_layout(model.state_dict()).items()}, path)
    return path


def ldm_vae_layout(sd: dict, levels: int) -> dict:
    """2D VAE weights in diffusers names -> the LDM / BFL single-file names (flux1-dev-ae.safetensors, ComfyUI's
    VAE files); written independently of sd_vae's converter, which tests check against diffusers' own."""
    out = {}
    for k, v in sd.items():
        p = k.split(".")
        if p[1] in ("down_blocks", "up_blocks"):
            level = int(p[2]) if p[1] == "down_blocks" else levels - 1 - int(p[2])
            where = "down" if p[1] == "down_blocks" else "up"
            if p[3] == "resnets":
                name = {"conv_shortcut": "nin_shortcut"}.get(p[5], p[5])
                k = f"{p[0]}.{where}.{level}.block.{p[4]}.{name}.{p[-1]}"
            else:
                k = f"{p[0]}.{where}.{level}.{'downsample' if where == 'down' else 'upsample'}.conv.{p[-1]}"
        elif p[1] == "mid_block":
            if p[2] == "resnets":
                k = f"{p[0]}.mid.block_{int(p[3]) + 1}.{p[4]}.{p[-1]}"
            else:
                name = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}[p[4]]
                k = f"{p[0]}.mid.attn_1.{name}.{p[-1]}"
                if name != "norm" and v.ndim == 2:
                    v = v[:, :, None, None]
        elif p[1] == "conv_norm_out":
            k = f"{p[0]}.norm_out.{p[-1]}"
        out[k] = v
    return out


def write_tiny_flux_ae(path: str, seed: int = 0) -> str:
    """A tiny FLUX.1 autoencoder (widths 8-16, 8x space, 16 latent channels, no quant convs) in the BFL layout of
    flux1-dev-ae.safetensors."""
    from .sd_vae import AutoencoderKL

    torch.manual_seed(seed)
    model = AutoencoderKL(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4,
                          latent_channels=16, use_quant_conv=False)
    _perturb(model)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in ldm_vae_layout(model.state_dict(), 4).items()}, path)
    return path


def _perturb(model):
    """Zero-initialised layers made non-zero, so every path of a random test model matters."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)


def _save(model, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)


TINY_FILES = {"model": "diffusion_models/opensora_v1.2_tiny.safetensors",
              "vae": "vae/opensora_vae_v1.2_tiny.safetensors",
              "text_encoder": "text_encoders/t5_tiny.safetensors"}


# Open-Sora 1.0 / 1.1 (the SD VAE serves both)
TINY_FILES_V1 = {"model_v1.0": "diffusion_models/opensora_v1.0_tiny.pth",
                 "model_v1.1": "diffusion_models/opensora_v1.1_tiny.safetensors",
                 "vae_sd": "vae/sd_vae_tiny.safetensors"}


# Open-Sora 2.0 (T5 is shared with the files above)
TINY_FILES_V2 = {"model_v2.0": "diffusion_models/opensora_v2_tiny.safetensors",
                 "model_v2.0_dc_ae": "diffusion_models/opensora_v2_dc_ae_tiny.safetensors",
                 "vae_hunyuan": "vae/hunyuan_vae_tiny.safetensors",
                 "vae_dc_ae": "vae/dc_ae_tiny.safetensors",
                 "clip": "text_encoders/clip_l_tiny.safetensors",
                 "model_flux": "diffusion_models/flux1_dev_tiny.safetensors",
                 "vae_flux": "vae/flux_ae_tiny.safetensors"}


def write_tiny_models(models_dir: str) -> dict:
    """Every tiny checkpoint under a models folder, as a user would lay out real ones. Returns the paths."""
    paths = {k: os.path.join(models_dir, v) for k, v in {**TINY_FILES, **TINY_FILES_V1, **TINY_FILES_V2}.items()}
    write_tiny_stdit3(paths["model"])
    write_tiny_vae_v1_2(paths["vae"])
    write_tiny_t5(paths["text_encoder"])
    write_tiny_stdit(paths["model_v1.0"])
    write_tiny_stdit2(paths["model_v1.1"])
    write_tiny_sd_vae(paths["vae_sd"])
    write_tiny_mmdit(paths["model_v2.0"])
    write_tiny_mmdit(paths["model_v2.0_dc_ae"], in_channels=32, patch_size=1)
    write_tiny_hunyuan_vae(paths["vae_hunyuan"])
    write_tiny_dc_ae(paths["vae_dc_ae"])
    write_tiny_clip(paths["clip"])
    write_tiny_flux(paths["model_flux"])
    write_tiny_flux_ae(paths["vae_flux"])
    return paths


def write_tiny_cogvideox(folder: str, variant: str = "5b", seed: int = 0) -> str:
    """A tiny CogVideoX pipeline folder in the diffusers layout (model_index.json, transformer/ and vae/ with
    config.json and weights), as users keep the released repos in models/opensora/. Text width 32 matches
    write_tiny_t5."""
    import json

    from .cogvideox.loading import SCALE, VARIANTS
    from .cogvideox.transformer import CogVideoXTransformer3D
    from .cogvideox.vae import CogVideoXVAE

    torch.manual_seed(seed)
    cfg = dict(VARIANTS[variant])
    cfg.update(num_attention_heads=2, attention_head_dim=16, time_embed_dim=32, text_embed_dim=32, num_layers=2,
               sample_height=8, sample_width=8, sample_frames=17)
    if cfg.get("ofs_embed_dim"):
        cfg["ofs_embed_dim"] = 32
    if cfg.get("patch_size_t"):
        cfg.update(sample_height=12, sample_width=10)
    transformer = CogVideoXTransformer3D(**cfg)
    with torch.no_grad():  # zero-initialised layers stay non-zero so every path matters
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    vae_cfg = dict(block_out_channels=[8, 16, 16, 16], latent_channels=16, layers_per_block=1, norm_num_groups=4,
                   scaling_factor=SCALE[variant], invert_scale_latents=variant.startswith("1.5"))
    vae = CogVideoXVAE(**vae_cfg)
    for sub, model, config in (("transformer", transformer, cfg), ("vae", vae, vae_cfg)):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        with open(os.path.join(folder, sub, "config.json"), "w") as f:
            json.dump(config, f, indent=1)
        _save(model, os.path.join(folder, sub, "diffusion_pytorch_model.safetensors"))
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump({"_class_name": "CogVideoXPipeline" if "i2v" not in variant else "CogVideoXImageToVideoPipeline",
                   "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
                   "vae": ["diffusers", "AutoencoderKLCogVideoX"]}, f, indent=1)
    return folder
