"""Train the bundled demo model from a seed: `python -m comfyui_opensora.demo.train`.

The demo is Open-Sora 1.2 at small widths: the project's own STDiT3, VAE v1.2 (2D SD VAE + causal temporal VAE)
and T5 classes, trained on the procedural clips of demo/clips.py. Stages run in order, each resumable from
its last checkpoint in --work-dir (rerun the same command after an interruption):

  text     a small T5 tokenizer for the demo's words and a tiny T5 encoder. Like Open-Sora's T5 it is frozen
           (never trained): its random features still name each word, and the transformer learns to read them.
  vae2d    the spatial VAE on single frames: L1 (object pixels weighted up) + a small KL term.
  vae3d    the temporal VAE on 17-frame chunks and single frames of spatial latents, with the 2D decoder
           frozen: a latent loss plus a pixel loss through the decoder. Then shift/scale buffers are set to
           the latents' per-channel statistics, as the released VAE normalises its latents.
  latents  every training clip encoded once (posterior means), every caption encoded once. The VAE trains on
           shapes placed anywhere (it must encode any image); the DiT's clips are rendered again with the
           path centred in the frame (clips.random_scene's "centred" placement), since a prompt does not say
           where the object is and a tiny model should not spend itself averaging positions.
  dit      STDiT3 with Open-Sora's rectified-flow loss (uniform t, v = x0 - noise; see stage_dit for why not
           1.2's logit-normal + transform) and its mask-strategy training: per step one task, as Open-Sora's MaskGenerator
           picks one per sample: text-to-video, image-to-video (first latent conditioned), extension (the
           first 17-frame chunk of a 34-frame clip conditioned) or loop (first and last frame the same
           image). Conditioned frames stay clean, take the t0 path and are left out of the loss. Captions
           are dropped for 10% of samples (classifier-free guidance). An EMA of the weights is exported.
  export   safetensors in the released key layouts into --out (the pack's demo_models/ by default),
           stored in fp16 to keep the repository small.

Every stage logs its losses to <work-dir>/<stage>_loss.jsonl and shows a progress bar. Batches are drawn
from a generator seeded by (seed, stage, step), so a resumed run sees the same batches as an uninterrupted one.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import random
import shutil
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ..models import rflow, sd_vae
from ..models.opensora.stdit3 import STDiT3
from ..models.opensora.vae_v1_2 import OpenSoraVAEv12
from . import clips

HERE = os.path.dirname(os.path.abspath(__file__))
PACK_ROOT = os.path.dirname(HERE)
DEMO_MODELS = os.path.join(PACK_ROOT, "demo_models")
FILES = {"model": "diffusion_models/opensora_demo_stdit3.safetensors",
         "vae": "vae/opensora_demo_vae.safetensors",
         "text_encoder": "text_encoders/opensora_demo_t5.safetensors"}

PLAN = dict(
    clips=2000, loops=500, eval_seed=1234,
    t5=dict(d_model=64, num_layers=2, num_heads=2, d_ff=128),
    vae2d=dict(config=dict(block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8),
               steps=1500, batch=24, lr=1e-3, kl=1e-6),
    vae3d=dict(config=dict(filters=16, mults=(1, 2, 2, 2), num_res=1, groups=8), steps=1200, batch=8, lr=1e-3, kl=1e-6,
               pixel_frames=4, clips=500),
    dit=dict(config=dict(hidden_size=128, depth=4, num_heads=4, caption_channels=64, model_max_length=300,
                         patch_size=(1, 4, 4)),
             steps=6000, batch=32, lr=3e-3, warmup=200, decay=1000, ema=0.998, drop_caption=0.1,
             tasks={"t2v": 0.5, "i2v": 0.2, "extend": 0.15, "loop": 0.15}),
)
QUICK = dict(clips=48, loops=12, vae2d=dict(steps=20, batch=4), vae3d=dict(steps=10, batch=2),
             dit=dict(steps=20, batch=4, warmup=5, decay=5))


# --------------------------------------------------------------------------------------------
# The training loop shared by every stage
# --------------------------------------------------------------------------------------------
def step_generator(seed: int, stage: str, step: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(_mix(seed, stage, step))
    return g


def _mix(seed: int, stage: str, step: int) -> int:
    """A stable 62-bit seed from (seed, stage, step) (Python's hash() of a str changes between runs)."""
    h = seed * 1_000_003 + step
    for ch in stage:
        h = (h * 131 + ord(ch)) % (1 << 62)
    return h


def lr_factor(step: int, steps: int, warmup: int, decay: int | None) -> float:
    """Linear warm-up, then cosine decay to 0.1 (decay=None), or constant with a linear decay to 0.1 over the
    last `decay` steps (warmup-stable-decay: every step before the decay is the same whatever `steps` is, so a
    longer plan can resume a shorter run from its last checkpoint before the decay)."""
    ramp = min(1.0, (step + 1) / warmup)
    if decay is None:
        return ramp * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))
    return ramp * (1.0 - 0.9 * min(1.0, max(0, step - (steps - decay)) / decay))


def train_loop(stage: str, work: str, model: torch.nn.Module, loss_fn, steps: int, lr: float, seed: int,
               warmup: int = 50, decay: int | None = None, ema_decay: float | None = None, ckpt_every: int = 100):
    """AdamW with the schedule of lr_factor. loss_fn(step, generator) -> (loss, logs dict). Resumes from
    <work>/<stage>.pt; returns the trained model (the EMA copy when ema_decay is set)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, steps, warmup, decay))
    ema = copy.deepcopy(model).requires_grad_(False) if ema_decay else None
    os.makedirs(work, exist_ok=True)
    path, log_path = os.path.join(work, f"{stage}.pt"), os.path.join(work, f"{stage}_loss.jsonl")
    start = 0
    if os.path.exists(path):
        state = torch.load(path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        start = state["step"]
    elif os.path.exists(log_path):
        os.remove(log_path)

    def save(step):
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step}
        if ema is not None:
            state["ema"] = ema.state_dict()
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)

    model.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=stage, dynamic_ncols=True)
    t0 = time.time()
    with open(log_path, "a") as log:
        for step in bar:
            loss, logs = loss_fn(step, step_generator(seed, stage, step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if ema is not None:
                with torch.no_grad():
                    d = min(ema_decay, (1 + step) / (10 + step))
                    for pe, pm in zip(ema.parameters(), model.parameters()):
                        pe.lerp_(pm, 1 - d)
            log.write(json.dumps({"step": step, "loss": round(float(loss), 6), "lr": sched.get_last_lr()[0],
                                  "seconds": round(time.time() - t0, 2), **logs}) + "\n")
            bar.set_postfix(loss=f"{float(loss):.4f}")
            if (step + 1) % ckpt_every == 0 or step + 1 == steps:
                save(step + 1)
            if decay and step + 1 == steps - decay:  # kept: a longer plan resumes from here (copy it to <stage>.pt)
                save(step + 1)
                shutil.copyfile(path, os.path.join(work, f"{stage}_stable_{step + 1}.pt"))
    model.eval()
    return (ema if ema is not None else model).eval()


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def render_dataset(plan: dict, seed: int, placement: str):
    """uint8 videos: clips [N, 3, 34, 64, 64] and loops [M, 3, 18, 64, 64], with their scenes."""
    scenes = clips.dataset_scenes(seed, plan["clips"], plan["loops"], placement)
    long_ = [s for s in scenes if not s.loop]
    loops = [s for s in scenes if s.loop]
    to8 = lambda v: ((v + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)  # noqa: E731
    videos = torch.stack([to8(clips.render(s, 2 * clips.CHUNK)) for s in tqdm(long_, desc=f"render {placement}")])
    loop_videos = torch.stack([to8(clips.render(s, clips.CHUNK + 1)) for s in tqdm(loops, desc="render loops")])
    return long_, videos, loops, loop_videos


def to_pixels(v8: torch.Tensor) -> torch.Tensor:
    return v8.float() / 127.5 - 1


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------
def stage_text(out_dir: str, plan: dict, seed: int):
    """Tokenizer + frozen random T5, written straight to the export folder (the trainer reads them back
    through the pack's own loader, so training sees exactly what users' prompts get)."""
    from ..models.tiny import write_t5_tokenizer
    from transformers import T5Config, T5EncoderModel

    path = os.path.join(out_dir, FILES["text_encoder"])
    tok_dir = os.path.splitext(path)[0] + "_tokenizer"
    vocab = write_t5_tokenizer(tok_dir, words=clips.WORDS, vocab_size=160)
    torch.manual_seed(_mix(seed, "text", 0))
    cfg = plan["t5"]
    config = T5Config(vocab_size=vocab, d_model=cfg["d_model"], num_layers=cfg["num_layers"],
                      num_heads=cfg["num_heads"], d_kv=cfg["d_model"] // cfg["num_heads"], d_ff=cfg["d_ff"],
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False)
    sd = T5EncoderModel(config).state_dict()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in sd.items() if k != "encoder.embed_tokens.weight"}, path)
    return path


def object_weight(frames: torch.Tensor) -> torch.Tensor:
    """Per-pixel loss weight [N,1,H,W]: 5 on the object, 1 on the background (the median border colour)."""
    border = torch.cat([frames[..., 0, :], frames[..., -1, :], frames[..., :, 0], frames[..., :, -1]], dim=-1)
    bg = border.median(dim=-1).values[..., None, None]
    return 1 + 4 * ((frames - bg).abs().amax(1, keepdim=True) > 0.1).float()


def stage_vae2d(work, plan, seed, videos):
    cfg = plan["vae2d"]
    torch.manual_seed(_mix(seed, "vae2d-init", 0))
    vae = sd_vae.AutoencoderKL(**cfg["config"])
    n, _, t = videos.shape[:3]

    def loss_fn(step, g):
        idx = torch.randint(n, (cfg["batch"],), generator=g)
        ts = torch.randint(t, (cfg["batch"],), generator=g)
        x = to_pixels(videos[idx, :, ts])
        mean, logvar = vae.encode_moments(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        rec = vae.decode(z)
        l1 = ((rec - x).abs() * object_weight(x)).mean()
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()
        return l1 + cfg["kl"] * kl, {"l1": round(float(l1), 5), "kl": round(float(kl), 3)}

    return train_loop("vae2d", work, vae, loss_fn, cfg["steps"], cfg["lr"], seed)


@torch.no_grad()
def spatial_latents(vae2d, videos8: torch.Tensor, batch: int = 8) -> torch.Tensor:
    """Scaled posterior means [N, 4, T, 8, 8] of uint8 videos [N, 3, T, 64, 64]."""
    out = [sd_vae.encode_frames(vae2d, to_pixels(videos8[i:i + batch]), micro_batch_size=None)
           for i in tqdm(range(0, len(videos8), batch), desc="spatial latents")]
    return torch.cat(out)


def stage_vae3d(work, plan, seed, vae2d, videos, zs):
    """zs: spatial latents [N, 4, 34, 8, 8] of videos [N, 3, 34, 64, 64]."""
    cfg = plan["vae3d"]
    torch.manual_seed(_mix(seed, "vae3d-init", 0))
    full = OpenSoraVAEv12(spatial=plan["vae2d"]["config"], temporal=cfg["config"])
    full.spatial_vae.module.load_state_dict(vae2d.state_dict())
    full.spatial_vae.module.requires_grad_(False)
    tvae = full.temporal_vae
    decoder = full.spatial_vae.module
    n = zs.shape[0]

    def loss_fn(step, g):
        # One batch of 17-frame chunks (either half of a clip), every fourth step single frames (images).
        frames = 1 if step % 4 == 3 else clips.CHUNK
        idx = torch.randint(n, (cfg["batch"],), generator=g)
        start = torch.randint(2, (cfg["batch"],), generator=g) * clips.CHUNK
        if frames == 1:
            start = start + torch.randint(clips.CHUNK, (cfg["batch"],), generator=g)
        x = torch.stack([zs[i, :, s:s + frames] for i, s in zip(idx.tolist(), start.tolist())])
        mean, logvar = tvae.encode_moments(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        rec = tvae.decode(z, frames)
        lat = F.mse_loss(rec, x) / sd_vae.SD_SCALE ** 2
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()
        # pixel loss on a few frames through the frozen 2D decoder
        k = min(cfg["pixel_frames"], frames)
        pick = torch.randint(frames, (k,), generator=g)
        rec_px = decoder.decode(rearrange_frames(rec[:, :, pick]) / sd_vae.SD_SCALE)
        tgt = torch.stack([videos[i, :, s:s + frames] for i, s in zip(idx.tolist(), start.tolist())])
        tgt_px = rearrange_frames(to_pixels(tgt[:, :, pick]))
        px = ((rec_px - tgt_px).abs() * object_weight(tgt_px)).mean()
        return lat + px + cfg["kl"] * kl, {"latent": round(float(lat), 5), "pixel": round(float(px), 5),
                                           "frames": frames}

    train_loop("vae3d", work, tvae, loss_fn, cfg["steps"], cfg["lr"], seed)
    return full.eval()


def rearrange_frames(x):
    """[B, C, T, H, W] -> [(B T), C, H, W]"""
    return x.transpose(1, 2).flatten(0, 1)


@torch.no_grad()
def set_normalisation(vae: OpenSoraVAEv12, zs: torch.Tensor):
    """shift/scale = per-channel mean/std of the temporal latents of 17-frame chunks, so the diffusion model
    sees roughly unit-variance latents (as the released VAE's buffers do for real video)."""
    vae.shift.zero_()
    vae.scale.fill_(1.0)
    sample = zs[: min(256, len(zs)), :, : clips.CHUNK]
    z = torch.cat([vae.temporal_vae.encode_moments(sample[i:i + 16])[0] for i in range(0, len(sample), 16)])
    vae.shift.copy_(z.mean(dim=(0, 2, 3, 4)).reshape(vae.shift.shape))
    vae.scale.copy_(z.std(dim=(0, 2, 3, 4)).reshape(vae.scale.shape))


@torch.no_grad()
def encode_clips(vae: OpenSoraVAEv12, videos8: torch.Tensor, batch: int = 16) -> torch.Tensor:
    return torch.cat([vae.encode(to_pixels(videos8[i:i + batch])) for i in
                      tqdm(range(0, len(videos8), batch), desc="encode clips")])


def caption_variants(caption: str):
    """What the text node may append: nothing (aesthetic score 0), or an aesthetic score."""
    return [caption] + [f"{caption} aesthetic score: {s:.1f}." for s in (5.5, 6.0, 6.5, 7.0)]


@torch.no_grad()
def encode_captions(t5, captions: list[str]):
    """{caption variant: (y [L, C], mask [L])} through the pack's own text path, cut to the longest prompt."""
    from ..models import pipeline

    texts = sorted({v for c in captions for v in caption_variants(c)})
    ys, masks = [], []
    for i in range(0, len(texts), 64):
        cond = [pipeline.encode_text(t5, t, "opensora-v1.2", offload=False) for t in texts[i:i + 64]]
        ys += [c["y"][0, 0] for c in cond]
        masks += [c["mask"][0] for c in cond]
    length = int(max(m.sum() for m in masks))
    return {t: (y[:length], m[:length]) for t, y, m in zip(texts, ys, masks)}


def init_stdit3(model: STDiT3, seed: int):
    """DiT / Open-Sora initialisation: xavier linears, small normal for the embedders, zero for the output
    projections of cross-attention and the final layer (every block starts as a near-identity)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(m.weight)
            torch.nn.init.zeros_(m.bias)
    for mlp in (model.t_embedder.mlp, model.fps_embedder.mlp):
        torch.nn.init.normal_(mlp[0].weight, std=0.02)
        torch.nn.init.normal_(mlp[2].weight, std=0.02)
    torch.nn.init.normal_(model.t_block[1].weight, std=0.02)
    for blocks in (model.spatial_blocks, model.temporal_blocks):
        for b in blocks:
            torch.nn.init.zeros_(b.cross_attn.proj.weight)
    torch.nn.init.zeros_(model.final_layer.linear.weight)


def task_masks(task: str, latent_frames: int, batch: int) -> torch.Tensor | None:
    """x_mask [B, T] (True = generated, False = conditioned clean frame) per Open-Sora mask task."""
    if task == "t2v":
        return None
    m = torch.ones(batch, latent_frames, dtype=torch.bool)
    if task == "i2v":
        m[:, 0] = False
    elif task == "extend":
        m[:, :5] = False
    elif task == "loop":
        m[:, 0] = m[:, -1] = False
    return m


def stage_dit(work, plan, seed, clip_z, clip_captions, loop_z, loop_captions, text):
    """clip_z [N, 4, 10, 8, 8], loop_z [M, 4, 6, 8, 8] normalised latents; text {caption variant: (y, mask)}."""
    cfg = plan["dit"]
    model = STDiT3(**cfg["config"])
    init_stdit3(model, _mix(seed, "dit-init", 0))
    null = model.null_caption
    tasks, probs = list(cfg["tasks"]), torch.tensor(list(cfg["tasks"].values()))
    size = clips.SIZE

    def loss_fn(step, g):
        task = tasks[int(torch.multinomial(probs, 1, generator=g))]
        pool_z, pool_c = (loop_z, loop_captions) if task == "loop" else (clip_z, clip_captions)
        b = cfg["batch"]
        idx = torch.randint(len(pool_z), (b,), generator=g).tolist()
        x0 = pool_z[idx]
        if task in ("t2v", "i2v"):  # a 17-frame chunk: t2v the first (where a prompt's video starts), i2v either
            half = torch.randint(2, (b,), generator=g) * 5 * (task == "i2v")
            x0 = torch.stack([x0[i, :, h:h + 5] for i, h in enumerate(half.tolist())])
        variants = [caption_variants(pool_c[i]) for i in idx]
        pick = torch.randint(len(variants[0]), (b,), generator=g).tolist()
        y, mask = zip(*(text[v[p]] for v, p in zip(variants, pick)))
        y, mask = torch.stack(y), torch.stack(mask)
        drop = torch.rand(b, generator=g) < cfg["drop_caption"]
        y = torch.where(drop[:, None, None], null[: y.shape[1]][None].to(y), y)

        # Open-Sora's RFLOW scheduler with sample_method="uniform" and no timestep transform. Open-Sora 1.2's
        # own choice (logit-normal, then the resolution/length transform) is made for >= 256px: at 64px the
        # transform's ratio is 0.28, which leaves 0.4% of training above t = 800, yet the sampler's first steps
        # (where colour, shape and motion are decided) run at 1000, 890 and 800.
        t = torch.rand(b, generator=g) * rflow.NUM_TIMESTEPS
        full = lambda v: torch.full((b,), float(v))  # noqa: E731
        noise = torch.randn(x0.shape, generator=g)
        x_t = rflow.add_noise(x0, noise, t)
        x_mask = task_masks(task, x0.shape[2], b)
        if x_mask is not None:
            x_t = torch.where(x_mask[:, None, :, None, None], x_t, x0)
        pred = model(x_t, t, y[:, None], mask=mask, x_mask=x_mask, fps=full(24), height=full(size),
                     width=full(size))[:, : x0.shape[1]]
        err = ((pred - (x0 - noise)) ** 2).mean(dim=(1, 3, 4))  # [B, T]
        if x_mask is not None:
            loss = (err * x_mask).sum() / x_mask.sum()
        else:
            loss = err.mean()
        return loss, {"task": task}

    return train_loop("dit", work, model, loss_fn, cfg["steps"], cfg["lr"], seed, warmup=cfg["warmup"],
                      decay=cfg["decay"], ema_decay=cfg["ema"], ckpt_every=50)


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------
def save_fp16(model: torch.nn.Module, path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, path)


def merged_plan(quick: bool) -> dict:
    plan = copy.deepcopy(PLAN)
    if quick:
        for k, v in QUICK.items():
            if isinstance(v, dict):
                plan[k].update(v)
            else:
                plan[k] = v
    return plan


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work-dir", default=os.path.join(PACK_ROOT, "output", "demo_training"),
                    help="checkpoints, loss logs and caches (resumable)")
    ap.add_argument("--out", default=DEMO_MODELS, help="where the exported model files go")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a few steps of every stage (a smoke test)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = merged_plan(args.quick)
    os.makedirs(args.work_dir, exist_ok=True)
    started = time.time()
    timings = {}

    def timed(name, fn, *a):
        t = time.time()
        out = fn(*a)
        timings[name] = round(time.time() - t, 1)
        return out

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    stage_out = os.path.join(args.work_dir, "export")
    t5_path = timed("text", stage_text, stage_out, plan, args.seed)
    _, videos, _, _ = timed("render", render_dataset, plan, args.seed, "anywhere")  # the VAE's data
    vae2d = timed("vae2d", stage_vae2d, args.work_dir, plan, args.seed, videos)
    subset = videos[: plan["vae3d"]["clips"]]  # the temporal VAE trains on part of the set
    zs = timed("spatial_latents", spatial_latents, vae2d, subset)
    vae = timed("vae3d", stage_vae3d, args.work_dir, plan, args.seed, vae2d, subset, zs)
    set_normalisation(vae, zs)
    del zs, subset, videos
    long_, videos, loops, loop_videos = timed("render_dit", render_dataset, plan, args.seed, "centred")
    # the VAE is final here: its latents are cached under a key of the scenes they encode
    key = hashlib.sha1(repr(long_ + loops).encode()).hexdigest()[:12]
    cache = os.path.join(args.work_dir, f"latents_{key}.pt")
    if os.path.exists(cache):
        clip_z, loop_z = torch.load(cache, weights_only=True)
    else:
        clip_z = timed("encode", encode_clips, vae, videos)
        loop_z = timed("encode_loops", encode_clips, vae, loop_videos)
        torch.save((clip_z, loop_z), cache + ".tmp")
        os.replace(cache + ".tmp", cache)

    from ..models.text_encoders import load_t5

    t5 = load_t5(t5_path)
    text = timed("captions", encode_captions, t5, [s.caption for s in long_ + loops])
    dit = timed("dit", stage_dit, args.work_dir, plan, args.seed, clip_z, [s.caption for s in long_], loop_z,
                [s.caption for s in loops], text)

    save_fp16(vae, os.path.join(stage_out, FILES["vae"]))
    save_fp16(dit, os.path.join(stage_out, FILES["model"]))
    for rel in FILES.values():  # text encoder folder included
        os.makedirs(os.path.dirname(os.path.join(args.out, rel)), exist_ok=True)
    for sub in ("diffusion_models", "vae", "text_encoders"):
        src, dst = os.path.join(stage_out, sub), os.path.join(args.out, sub)
        shutil.copytree(src, dst, dirs_exist_ok=True)
    timings["total"] = round(time.time() - started, 1)
    info = {"seed": args.seed, "plan": plan, "seconds": timings, "threads": torch.get_num_threads(),
            "torch": torch.__version__}
    with open(os.path.join(args.work_dir, "training.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(timings))
    return info


if __name__ == "__main__":
    main()
