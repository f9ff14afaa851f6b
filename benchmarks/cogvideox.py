"""CogVideoX speed and memory against diffusers on the same weights, in the same process (diffusers is the
test extra). Run: python benchmarks/cogvideox.py [--device cpu|cuda] [--out FILE]

- transformer: seconds per step (CFG batch 2) for ours and diffusers' CogVideoXTransformer3DModel;
- pipeline: sampling + decoding, ours (pack model layer) vs diffusers' CogVideoXPipeline, same noise;
- VAE decode peak memory: ours (chunked, and chunked + spatial tiles) vs diffusers' tiled decode, each in a
  fresh subprocess (CPU: max-RSS growth; CUDA: max_memory_allocated).
Sizes default to a CPU-friendly model (512 wide, 4 layers) at 480x720 latents; --released uses the real
5B transformer width (GPU only). Ratios > 1 mean ours is faster / smaller.
"""
import argparse
import json
import os
import sys
import tempfile
import time

import torch

from common import environment, import_pack, memory_mark, peak_since, report, run_child, timed, write_result


def bench_transformer(cfg, device, dtype, frames, h, w, repeats):
    import diffusers
    from comfyui_opensora.models.cogvideox.transformer import CogVideoXTransformer3D, rope_for_video

    torch.manual_seed(0)
    ref = diffusers.CogVideoXTransformer3DModel(**cfg).to(device, dtype).eval()
    ours = CogVideoXTransformer3D(**cfg).to(device, dtype).eval()
    ours.load_state_dict(ref.state_dict(), strict=False)
    x = torch.randn(2, frames, cfg["in_channels"], h, w, device=device, dtype=dtype)
    text = torch.randn(2, 226, cfg["text_embed_dim"], device=device, dtype=dtype)
    t = torch.tensor([500, 500], device=device)
    rope = tuple(r.to(device) for r in rope_for_video(ours.config, h * 8, w * 8, frames))
    a = timed(lambda: ours(x, text, t, image_rotary_emb=rope), device, repeats)
    b = timed(lambda: ref(x, text, t, image_rotary_emb=rope, return_dict=False), device, repeats)
    return {"tokens": frames * h * w // 4 + 226, "ours_s_per_step": a, "diffusers_s_per_step": b,
            "speed_ratio_diffusers_over_ours": b / a}


def bench_pipeline(device, steps):
    import diffusers
    from comfyui_opensora.models import noise, pipeline
    from comfyui_opensora.models.tiny import write_tiny_cogvideox, write_tiny_t5

    root = tempfile.mkdtemp()
    folder = write_tiny_cogvideox(os.path.join(root, "cog"), "5b")
    enc = pipeline.load_text_encoder(write_tiny_t5(os.path.join(root, "t5.safetensors")), None, "fp32", "cpu")
    cond = pipeline.encode_text(enc, "a red circle", "cogvideox")
    model = pipeline.load_diffusion_model(folder, "fp32")
    vae = pipeline.load_vae(folder, "fp32")
    lat = pipeline.empty_latent(vae, "custom", "1:1", 128, 128, 17, 1)

    def ours():
        out = pipeline.sample(model, cond, lat, 1, steps, 6.0, "dpm", 1.0, 8, dynamic_cfg=True)
        return pipeline.decode(vae, out)

    pipe = diffusers.CogVideoXPipeline(
        tokenizer=None, text_encoder=None, vae=diffusers.AutoencoderKLCogVideoX.from_pretrained(folder + "/vae"),
        transformer=diffusers.CogVideoXTransformer3DModel.from_pretrained(folder + "/transformer"),
        scheduler=diffusers.CogVideoXDPMScheduler(beta_schedule="scaled_linear", prediction_type="v_prediction",
                                                  timestep_spacing="trailing", rescale_betas_zero_snr=True))

    def ref():
        gen = noise.generator(1)
        z = noise.seeded_noise(1, (1, 5, 16, 16, 16), gen)
        return pipe(height=128, width=128, num_frames=17, num_inference_steps=steps, guidance_scale=6.0,
                    use_dynamic_cfg=True, latents=z, generator=gen, prompt_embeds=cond["y"][:, 0],
                    negative_prompt_embeds=cond["null_y"][:, 0], output_type="pt").frames

    a, b = timed(ours, "cpu", 1), timed(ref, "cpu", 1)
    return {"steps": steps, "ours_s": a, "diffusers_s": b, "speed_ratio_diffusers_over_ours": b / a}


def _vae_child(device, mode):
    import diffusers
    from comfyui_opensora.models.cogvideox.vae import CogVideoXVAE

    torch.manual_seed(0)
    cfg = dict(block_out_channels=[16, 32, 32, 32], latent_channels=16, layers_per_block=1, norm_num_groups=8)
    z = torch.randn(1, 16, 13, 30, 45, device=device)  # 49 frames at 360x240 (CPU-sized; --device cuda as well)
    if mode.startswith("diffusers"):
        vae = diffusers.AutoencoderKLCogVideoX(**cfg).to(device).eval()
        vae.enable_tiling(tile_sample_min_height=128, tile_sample_min_width=192)
        run = lambda: vae.decode(z).sample  # noqa: E731
    else:
        vae = CogVideoXVAE(**cfg).to(device).eval()
        if mode == "ours_tiled":
            from comfyui_opensora.models import tiling

            f = tiling.tiled_2d(lambda t: torch.cat(list(vae.decode_chunks(t)), dim=2), 16, 3, 8)
            run = lambda: f(z)  # noqa: E731
        else:
            run = lambda: torch.cat([c.cpu() for c in vae.decode_chunks(z)], dim=2)  # noqa: E731
    mark = memory_mark(device)
    start = time.perf_counter()
    with torch.inference_mode():
        out = run()
    report({"mode": mode, "frames": int(out.shape[2]), "seconds": time.perf_counter() - start,
            "peak_bytes": peak_since(device, mark)})


def bench_vae(device):
    rows = {}
    for mode in ("ours_chunked", "ours_tiled", "diffusers_tiled"):
        rows[mode] = run_child(__file__, "--vae-child", device, mode)
    rows["peak_ratio_diffusers_tiled_over_ours_tiled"] = rows["diffusers_tiled"]["peak_bytes"] / \
        rows["ours_tiled"]["peak_bytes"]
    return rows


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--vae-child":
        import_pack()
        _vae_child(sys.argv[2], sys.argv[3])
        return
    p = argparse.ArgumentParser()
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--released", action="store_true", help="the real 5B transformer width and depth (GPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args()
    import_pack()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    cfg = dict(num_attention_heads=48 if args.released else 8, attention_head_dim=64, in_channels=16,
               out_channels=16, time_embed_dim=512, text_embed_dim=4096 if args.released else 256,
               num_layers=42 if args.released else 4, use_rotary_positional_embeddings=True)
    frames, h, w = (13, 60, 90) if args.released else (5, 30, 45)
    result = {"benchmark": "cogvideox", **environment(args.device),
              "transformer": bench_transformer(cfg, args.device, dtype, frames, h, w, args.repeats),
              "pipeline_tiny_3_steps": bench_pipeline(args.device, 3), "vae_decode_360x240x49": bench_vae(args.device)}
    write_result(result, f"cogvideox_{args.device}", args.out)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
