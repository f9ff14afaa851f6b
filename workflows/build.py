"""Regenerate the shipped UI workflows: `python workflows/build.py` (from the repo root).

The JSON files are what users load in ComfyUI; writing them with the builder keeps their widget order in
step with the nodes' INPUT_TYPES. Each one is run by tests/test_workflows.py.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _pack():
    sys.path.insert(0, os.path.dirname(HERE))  # the repository root, for _import_pack only
    import _import_pack

    sys.path.remove(os.path.dirname(HERE))
    _import_pack.ensure()
    from comfyui_opensora.harness import pack
    from comfyui_opensora.harness.workflow_builder import WorkflowBuilder

    p = pack.load_pack()
    return pack.node_definitions(p), WorkflowBuilder


# The example inputs the pack ships (comfy_adapter.EXAMPLE_INPUTS): copied into ComfyUI's input folder, so the
# workflows that take a video or an image run as shipped from the template browser.
EXAMPLE_IMAGE, EXAMPLE_LAST, EXAMPLE_CLIP = ("opensora_example_image.png", "opensora_example_last_frame.png",
                                             "opensora_example_clip.mp4")


def _input_note(*names):
    return (f" The example input{'s' if len(names) > 1 else ''} ({', '.join(names)}) ship{'' if len(names) > 1 else 's'}"
            " with the pack: pick your own in 'video' (or upload one), or set 'path'.")


def video_convert(defs, Builder):
    b = Builder(defs)
    load = b.add("OpenSoraLoadVideo", 0, video=EXAMPLE_CLIP, frame_cap=0, resize="none")
    save = b.add("OpenSoraSaveVideo", 1, fps=24.0, filename_prefix="OpenSora/converted", format="webm (vp9)")
    b.connect(load, 0, save, "images")
    b.connect(load, 1, save, "fps")
    b.note("Re-encode a video: pick it in 'video' (or set 'path'), choose the format on the right. "
           "Frame cap, stride and resize trim it on the way." + _input_note(EXAMPLE_CLIP), 0)
    return b


MODEL = "OpenSora-STDiT-v3.safetensors"
VAE = "OpenSora-VAE-v1.2.safetensors"
T5 = "t5xxl_fp16.safetensors"
PROMPT = "a red panda eating bamboo in a misty forest, close-up, soft morning light"


def _t2v_core(b, col=0, prompt=PROMPT, seed=42, num_frames=51):
    """Loaders, prompt, empty latent: returns (model, vae, cond, latent) node ids."""
    model = b.add("OpenSoraModelLoader", col, model_name=MODEL, dtype="auto")
    vae = b.add("OpenSoraVAELoader", col, vae_name=VAE, dtype="auto")
    te = b.add("OpenSoraTextEncoderLoader", col, text_encoder_name=T5, tokenizer="auto", dtype="auto", device="auto")
    enc = b.add("OpenSoraTextEncode", col + 1, prompt=prompt, family="opensora-v1.2", aesthetic_score=6.5)
    b.connect(te, 0, enc, "text_encoder")
    latent = b.add("OpenSoraEmptyLatent", col + 1, resolution="240p", aspect_ratio="16:9", num_frames=num_frames)
    b.connect(vae, 0, latent, "vae")
    return model, vae, enc, latent


def _sample_decode(b, model, vae, cond, latent, col, seed=42, denoise=1.0, **sampler):
    """Sampler and VAE decode; `sampler` overrides the Open-Sora 1.2 settings (steps, cfg, scheduler)."""
    s = b.add("OpenSoraSampler", col, seed=seed, denoise=denoise, fps=24, **{"steps": 30, "cfg": 7.0, **sampler})
    b.connect(model, 0, s, "model")
    b.connect(cond, 0, s, "positive")
    b.connect(latent, 0, s, "latent")
    d = b.add("OpenSoraVAEDecode", col)
    b.connect(vae, 0, d, "vae")
    b.connect(s, 0, d, "latent")
    return d


def _save(b, images, col, prefix, fps=24.0):
    out = b.add("OpenSoraSaveVideo", col, fps=fps, filename_prefix=prefix, format="mp4 (h264)")
    b.connect(images, 0, out, "images")
    return out


def opensora_v1_2_t2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _t2v_core(b)
    _save(b, _sample_decode(b, model, vae, cond, latent, 2), 3, "OpenSora/t2v")
    b.note("Open-Sora 1.2 text-to-video. Files: the STDiT3 checkpoint in models/diffusion_models, the v1.2 VAE "
           "in models/vae, T5-XXL in models/text_encoders (see the README).", 0)
    return b


def opensora_v1_2_i2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _t2v_core(b, prompt="the waves roll onto the beach at sunset")
    image = b.add("OpenSoraLoadVideo", 1, video=EXAMPLE_IMAGE, path="")
    ref = b.add("OpenSoraReferenceCondition", 2, reference_start=0, target_start=0, length=1, edit_ratio=0.0)
    b.connect(latent, 0, ref, "latent")
    b.connect(vae, 0, ref, "vae")
    b.connect(image, 0, ref, "reference")
    _save(b, _sample_decode(b, model, vae, cond, ref, 3), 4, "OpenSora/i2v")
    b.note("Image-to-video: the image becomes the first latent frame (mask_strategy '0'). Set target_start to -1 "
           "to end on the image instead." + _input_note(EXAMPLE_IMAGE), 1)
    return b


def opensora_v1_2_extend(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _t2v_core(b, prompt="the camera keeps flying over the snowy mountains")
    prev = b.add("OpenSoraLoadVideo", 1, video=EXAMPLE_CLIP, path="")
    ext = b.add("OpenSoraExtendVideo", 2, condition_frame_length=5, condition_frame_edit=0.0)
    b.connect(latent, 0, ext, "latent")
    b.connect(vae, 0, ext, "vae")
    b.connect(prev, 0, ext, "previous_video")
    new = _sample_decode(b, model, vae, cond, ext, 3)
    join = b.add("OpenSoraJoinClips", 4, overlap_frames=17)
    b.connect(prev, 0, join, "previous_video")
    b.connect(new, 0, join, "next_video")
    _save(b, join, 4, "OpenSora/extended")
    b.note("Extends a video: its last 5 latent frames (17 frames) start the new clip; Join Clips drops the "
           "repeated frames." + _input_note(EXAMPLE_CLIP), 1)
    return b


def opensora_v1_2_long_video(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _t2v_core(b, prompt="a timelapse of clouds over a city skyline")
    clip = _sample_decode(b, model, vae, cond, latent, 2, seed=1)
    for i, seed in enumerate((2, 3)):
        ext = b.add("OpenSoraExtendVideo", 3 + 2 * i, condition_frame_length=5, condition_frame_edit=0.0)
        b.connect(latent, 0, ext, "latent")
        b.connect(vae, 0, ext, "vae")
        b.connect(clip, 0, ext, "previous_video")
        new = _sample_decode(b, model, vae, cond, ext, 3 + 2 * i, seed=seed)
        join = b.add("OpenSoraJoinClips", 4 + 2 * i, overlap_frames=17)
        b.connect(clip, 0, join, "previous_video")
        b.connect(new, 0, join, "next_video")
        clip = join
    _save(b, clip, 8, "OpenSora/long")
    b.note("A long video in three loops, as Open-Sora's `loop` option: each clip is conditioned on the last 5 "
           "latent frames of the video so far (condition_frame_length).", 0)
    return b


def opensora_v1_2_v2v_edit(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _t2v_core(b, prompt="the same street, covered in snow")
    src = b.add("OpenSoraLoadVideo", 1, video=EXAMPLE_CLIP, path="", frame_cap=51)
    ms = b.add("OpenSoraMaskStrategy", 2, mask_strategy="0,0,0,0,100,0.6", loop_index=0)
    b.connect(latent, 0, ms, "latent")
    b.connect(vae, 0, ms, "vae")
    b.connect(src, 0, ms, "reference_1")
    _save(b, _sample_decode(b, model, vae, cond, ms, 3), 4, "OpenSora/edit")
    b.note("Video-to-video editing: the source video is the reference for every latent frame with edit ratio "
           "0.6 (lower keeps more of the source)." + _input_note(EXAMPLE_CLIP), 1)
    return b


def _cogvideox_core(b, repo, prompt, frames=49):
    model = b.add("OpenSoraModelLoader", 0, model_name=repo, dtype="auto")
    vae = b.add("OpenSoraVAELoader", 0, vae_name=repo, dtype="auto")
    te = b.add("OpenSoraTextEncoderLoader", 0, text_encoder_name=T5, tokenizer="auto", dtype="auto", device="auto")
    enc = b.add("OpenSoraTextEncode", 1, prompt=prompt, family="cogvideox", aesthetic_score=0.0)
    b.connect(te, 0, enc, "text_encoder")
    latent = b.add("OpenSoraEmptyLatent", 1, resolution="custom", width=720, height=480, num_frames=frames)
    b.connect(vae, 0, latent, "vae")
    return model, vae, enc, latent


def _cogvideox_sample(b, model, vae, cond, latent, col, denoise=1.0, scheduler="dpm"):
    s = b.add("OpenSoraSampler", col, seed=42, steps=50, cfg=6.0, scheduler=scheduler, denoise=denoise, fps=8,
              dynamic_cfg=True)
    b.connect(model, 0, s, "model")
    b.connect(cond, 0, s, "positive")
    b.connect(latent, 0, s, "latent")
    d = b.add("OpenSoraVAEDecode", col)
    b.connect(vae, 0, d, "vae")
    b.connect(s, 0, d, "latent")
    out = b.add("OpenSoraSaveVideo", col + 1, fps=8.0, filename_prefix="OpenSora/cogvideox", format="mp4 (h264)")
    b.connect(d, 0, out, "images")


def cogvideox_t2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _cogvideox_core(b, "CogVideoX-5b", "a golden retriever runs through a sunlit meadow")
    _cogvideox_sample(b, model, vae, cond, latent, 2)
    b.note("CogVideoX text-to-video (2B or 5B: pick the repo folder in models/opensora, e.g. CogVideoX-2b). "
           "720x480, 49 frames, DPM 50 steps, dynamic cfg 6. For CogVideoX 1.5 use 1360x768 and 81 frames.", 0)
    return b


def cogvideox_i2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _cogvideox_core(b, "CogVideoX-5b-I2V", "the boat sails towards the lighthouse")
    image = b.add("OpenSoraLoadVideo", 1, video=EXAMPLE_IMAGE, path="")
    ref = b.add("OpenSoraReferenceCondition", 2, reference_start=0, target_start=0, length=1, edit_ratio=0.0)
    b.connect(latent, 0, ref, "latent")
    b.connect(vae, 0, ref, "vae")
    b.connect(image, 0, ref, "reference")
    _cogvideox_sample(b, model, vae, cond, ref, 3)
    b.note("CogVideoX image-to-video: 5B-I2V (720x480, 49 frames) or 1.5-I2V (e.g. 1360x768, 81 frames). The "
           "image is the first frame." + _input_note(EXAMPLE_IMAGE), 1)
    return b


def cogvideox_v2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _cogvideox_core(b, "CogVideoX-5b", "the same scene as an oil painting")
    src = b.add("OpenSoraLoadVideo", 1, video=EXAMPLE_CLIP, path="", frame_cap=49, resize="crop to size",
                width=720, height=480)
    enc = b.add("OpenSoraVAEEncode", 2)
    b.connect(vae, 0, enc, "vae")
    b.connect(src, 0, enc, "images")
    _cogvideox_sample(b, model, vae, cond, enc, 3, denoise=0.8, scheduler="ddim")
    b.note("CogVideoX video-to-video: the source (49 frames, 720x480) is encoded and re-noised to strength 0.8."
           + _input_note(EXAMPLE_CLIP), 1)
    return b


# -- the bundled demo model (demo/train.py): runs on any machine, no download --------------------------------
DEMO = {"model_name": "opensora_demo_stdit3.safetensors", "vae_name": "opensora_demo_vae.safetensors",
        "text_encoder_name": "opensora_demo_t5.safetensors"}
DEMO_PROMPT = "a red circle moving left on a black background"
DEMO_STEPS, DEMO_CFG = 30, 5.0
DEMO_IMAGE = "demo/examples/blue_square.png"


def _demo_core(b, prompt=DEMO_PROMPT, num_frames=17):
    model = b.add("OpenSoraModelLoader", 0, model_name=DEMO["model_name"], dtype="auto")
    vae = b.add("OpenSoraVAELoader", 0, vae_name=DEMO["vae_name"], dtype="auto")
    te = b.add("OpenSoraTextEncoderLoader", 0, text_encoder_name=DEMO["text_encoder_name"], tokenizer="auto",
               dtype="auto", device="auto")
    enc = b.add("OpenSoraTextEncode", 1, prompt=prompt, family="opensora-v1.2", aesthetic_score=0.0)
    b.connect(te, 0, enc, "text_encoder")
    latent = b.add("OpenSoraEmptyLatent", 1, resolution="custom", width=64, height=64, num_frames=num_frames)
    b.connect(vae, 0, latent, "vae")
    return model, vae, enc, latent


def _demo_sample(b, model, vae, cond, latent, col, seed=0):
    return _sample_decode(b, model, vae, cond, latent, col, seed=seed, steps=DEMO_STEPS, cfg=DEMO_CFG)


def _demo_save(b, images, col, prefix):
    return _save(b, images, col, prefix, fps=12.0)


DEMO_GRAMMAR = ("Prompts follow the training grammar: 'a <red|green|blue|yellow|purple> <circle|square|triangle> "
                "<moving left|moving right|moving up|moving down|staying still|growing|shrinking> on a "
                "<black|gray|white> background'.")


def demo_t2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _demo_core(b)
    _demo_save(b, _demo_sample(b, model, vae, cond, latent, 2), 3, "OpenSora/demo_t2v")
    b.note("The bundled demo model (a tiny Open-Sora 1.2 trained by demo/train.py): 17 frames at 64x64, seconds "
           "on a CPU. " + DEMO_GRAMMAR, 0)
    return b


def demo_i2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _demo_core(b, prompt="a blue square moving right on a gray background")
    image = b.add("OpenSoraLoadVideo", 1, video="none", path=DEMO_IMAGE)
    ref = b.add("OpenSoraReferenceCondition", 2, reference_start=0, target_start=0, length=1, edit_ratio=0.0)
    b.connect(latent, 0, ref, "latent")
    b.connect(vae, 0, ref, "vae")
    b.connect(image, 0, ref, "reference")
    _demo_save(b, _demo_sample(b, model, vae, cond, ref, 3), 4, "OpenSora/demo_i2v")
    b.note("Demo image-to-video: the image is the first frame and the prompt says how it moves. Any 64x64 "
           "picture of one shape on a plain background works. " + DEMO_GRAMMAR, 1)
    return b


def demo_extend(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _demo_core(b, prompt="a green square moving down on a white background")
    first = _demo_sample(b, model, vae, cond, latent, 2, seed=1)
    longer = b.add("OpenSoraEmptyLatent", 2, resolution="custom", width=64, height=64, num_frames=34)
    b.connect(vae, 0, longer, "vae")
    ext = b.add("OpenSoraExtendVideo", 3, condition_frame_length=5, condition_frame_edit=0.0)
    b.connect(longer, 0, ext, "latent")
    b.connect(vae, 0, ext, "vae")
    b.connect(first, 0, ext, "previous_video")
    new = _demo_sample(b, model, vae, cond, ext, 4, seed=2)
    join = b.add("OpenSoraJoinClips", 5, overlap_frames=17)
    b.connect(first, 0, join, "previous_video")
    b.connect(new, 0, join, "next_video")
    _demo_save(b, join, 5, "OpenSora/demo_extend")
    b.note("Demo extension: a 17-frame clip, then a 34-frame clip whose first 17 frames (5 latent frames) are "
           "that clip; Join Clips keeps the new 17. The motion carries on across the seam.", 0)
    return b


def demo_loop(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _demo_core(b, prompt="a yellow triangle moving up on a black background",
                                          num_frames=18)
    image = b.add("OpenSoraLoadVideo", 1, video="none", path="demo/examples/yellow_triangle.png")
    ms = b.add("OpenSoraMaskStrategy", 2, mask_strategy="0;0,0,0,-1,1", loop_index=0)
    b.connect(latent, 0, ms, "latent")
    b.connect(vae, 0, ms, "vae")
    b.connect(image, 0, ms, "reference_1")
    _demo_save(b, _demo_sample(b, model, vae, cond, ms, 3), 4, "OpenSora/demo_loop")
    b.note("Demo loop: 18 frames whose first and last frame are the same image (mask_strategy '0;0,0,0,-1,1'). "
           "18 = one 17-frame VAE chunk plus a 1-frame chunk, so the last latent frame is exactly an image and "
           "Open-Sora's chunk alignment keeps it at the end. The shape goes out and comes back.", 1)
    return b


# -- Open-Sora 1.0 / 1.1: STDiT / STDiT2 with the SD VAE and IDDPM --------------------------------------------
SD_VAE = "sd-vae-ft-ema.safetensors"


def _v1x_core(b, model_name, family, prompt, resolution="custom", width=256, height=256, num_frames=16):
    model = b.add("OpenSoraModelLoader", 0, model_name=model_name, dtype="auto")
    vae = b.add("OpenSoraVAELoader", 0, vae_name=SD_VAE, dtype="auto")
    te = b.add("OpenSoraTextEncoderLoader", 0, text_encoder_name=T5, tokenizer="auto", dtype="auto", device="auto")
    enc = b.add("OpenSoraTextEncode", 1, prompt=prompt, family=family, aesthetic_score=0.0)
    b.connect(te, 0, enc, "text_encoder")
    latent = b.add("OpenSoraEmptyLatent", 1, resolution=resolution, aspect_ratio="16:9", width=width, height=height,
                   num_frames=num_frames)
    b.connect(vae, 0, latent, "vae")
    return model, vae, enc, latent


def _iddpm_sample(b, model, vae, cond, latent, col, fps):
    images = _sample_decode(b, model, vae, cond, latent, col, steps=100, scheduler="iddpm")
    _save(b, images, col + 1, "OpenSora/v1x", fps=fps)


def opensora_v1_0_t2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _v1x_core(b, "OpenSora-v1-16x256x256.pth", "opensora-v1.0",
                                         "a small boat drifting on a calm lake at dawn")
    _iddpm_sample(b, model, vae, cond, latent, 2, fps=8.0)
    b.note("Open-Sora 1.0 text-to-video: STDiT-XL/2 makes exactly the size it was trained for, 16 frames at "
           "256x256 (OpenSora-v1-16x256x256.pth) or 512x512 (OpenSora-v1-HQ-16x512x512.pth: set the latent to "
           "512x512). VAE: stabilityai/sd-vae-ft-ema. IDDPM, 100 steps, cfg 7; the clips were sampled every "
           "third frame, hence 8 fps.", 0)
    return b


def opensora_v1_1_t2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _v1x_core(b, "OpenSora-STDiT-v2-stage3.safetensors", "opensora-v1.1",
                                         "a red panda eating bamboo in a misty forest", resolution="240p")
    _iddpm_sample(b, model, vae, cond, latent, 2, fps=24.0)
    b.note("Open-Sora 1.1 text-to-video: STDiT2 (hpcai-tech/OpenSora-STDiT-v2-stage3 model.safetensors) at any "
           "size and length (16 frames at 240p here), the SD VAE, IDDPM 100 steps, cfg 7.", 0)
    return b


def opensora_v1_1_i2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _v1x_core(b, "OpenSora-STDiT-v2-stage3.safetensors", "opensora-v1.1",
                                         "the waves roll onto the beach at sunset", resolution="240p")
    image = b.add("OpenSoraLoadVideo", 1, video=EXAMPLE_IMAGE, path="")
    ref = b.add("OpenSoraReferenceCondition", 2, reference_start=0, target_start=0, length=1, edit_ratio=0.0)
    b.connect(latent, 0, ref, "latent")
    b.connect(vae, 0, ref, "vae")
    b.connect(image, 0, ref, "reference")
    _iddpm_sample(b, model, vae, cond, ref, 3, fps=24.0)
    b.note("Open-Sora 1.1 image-to-video: the image is the first frame (mask_strategy '0'); the SD VAE has no "
           "temporal compression, so one latent frame is one video frame." + _input_note(EXAMPLE_IMAGE), 1)
    return b


# -- Open-Sora 2.0: MMDiT with the HunyuanVideo VAE, T5 + CLIP-L, the guided flow sampler ----------------------
def _v2_core(b, prompt, resolution="256px", num_frames=129):
    model = b.add("OpenSoraModelLoader", 0, model_name="Open_Sora_v2.safetensors", dtype="auto")
    vae = b.add("OpenSoraVAELoader", 0, vae_name="hunyuan_vae.safetensors", dtype="auto")
    t5 = b.add("OpenSoraTextEncoderLoader", 0, text_encoder_name=T5, tokenizer="auto", dtype="auto", device="auto")
    clip = b.add("OpenSoraTextEncoderLoader", 0, text_encoder_name="clip_l.safetensors", tokenizer="auto",
                 dtype="auto", device="auto")
    enc = b.add("OpenSoraTextEncode", 1, prompt=prompt, family="opensora-v2.0", aesthetic_score=0.0,
                motion_score=4.0)
    b.connect(t5, 0, enc, "text_encoder")
    b.connect(clip, 0, enc, "clip")
    latent = b.add("OpenSoraEmptyLatent", 1, resolution=resolution, aspect_ratio="16:9", num_frames=num_frames)
    b.connect(vae, 0, latent, "vae")
    return model, vae, enc, latent


def _v2_sample_save(b, model, vae, cond, latent, col, prefix):
    images = _sample_decode(b, model, vae, cond, latent, col, steps=50, cfg=7.5, scheduler="rflow-v2",
                            guidance_img=3.0, guidance_oscillation=True, temporal_image_guidance=True,
                            flow_shift=0.0)
    _save(b, images, col + 1, prefix)


def _v2_images(b, latent, vae, col, targets, shared_image=False):
    """Reference Condition nodes placing images at the given latent frames (0 first, -1 last)."""
    image = None
    for i, target in enumerate(targets):
        if image is None or not shared_image:
            image = b.add("OpenSoraLoadVideo", col, video=EXAMPLE_LAST if i else EXAMPLE_IMAGE, path="")
        ref = b.add("OpenSoraReferenceCondition", col + 1 + i, reference_start=0, target_start=target, length=1,
                    edit_ratio=0.0)
        b.connect(latent, 0, ref, "latent")
        b.connect(vae, 0, ref, "vae")
        b.connect(image, 0, ref, "reference")
        latent = ref
    return latent


def opensora_v2_0_t2v_256px(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _v2_core(b, "a red panda eating bamboo in a misty forest, close-up")
    _v2_sample_save(b, model, vae, cond, latent, 2, "OpenSora/v2_t2v")
    b.note("Open-Sora 2.0 text-to-video at 256px (192x336, 129 frames): Open_Sora_v2.safetensors in "
           "models/diffusion_models, hunyuan_vae.safetensors in models/vae, T5-XXL and clip_l.safetensors in "
           "models/text_encoders. 50 steps, text guidance 7.5 with oscillation, as released.", 0)
    return b


def opensora_v2_0_t2v_768px(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _v2_core(b, "a red panda eating bamboo in a misty forest, close-up",
                                        resolution="768px")
    _v2_sample_save(b, model, vae, cond, latent, 2, "OpenSora/v2_t2v_768px")
    b.note("Open-Sora 2.0 at 768px (576x1024, 129 frames). The 11B model needs offload on a 24 GB GPU: set "
           "the loader's offload to sequential; the VAE decodes in 256 px tiles.", 0)
    return b


def opensora_v2_0_i2v(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _v2_core(b, "the waves roll onto the beach at sunset")
    latent = _v2_images(b, latent, vae, 1, [0])
    _v2_sample_save(b, model, vae, cond, latent, 3, "OpenSora/v2_i2v")
    b.note("Open-Sora 2.0 image-to-video (i2v_head): the image is the first latent frame; guidance_img pulls "
           "toward it, rising along the video." + _input_note(EXAMPLE_IMAGE), 1)
    return b


def opensora_v2_0_first_last(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _v2_core(b, "a flower opens in time-lapse")
    latent = _v2_images(b, latent, vae, 1, [0, -1])
    _v2_sample_save(b, model, vae, cond, latent, 4, "OpenSora/v2_first_last")
    b.note("Open-Sora 2.0 first + last frame: one image at the start, another at the end (i2v_loop with two "
           "references)." + _input_note(EXAMPLE_IMAGE, EXAMPLE_LAST), 1)
    return b


def opensora_v2_0_loop(defs, Builder):
    b = Builder(defs)
    model, vae, cond, latent = _v2_core(b, "a paper boat bobbing on gentle waves")
    latent = _v2_images(b, latent, vae, 1, [0, -1], shared_image=True)
    _v2_sample_save(b, model, vae, cond, latent, 4, "OpenSora/v2_loop")
    b.note("Open-Sora 2.0 loop (i2v_loop): the same image first and last, so the video comes back to where it "
           "starts." + _input_note(EXAMPLE_IMAGE), 1)
    return b


def opensora_v2_0_t2i2v(defs, Builder):
    b = Builder(defs)
    prompt = "a red panda eating bamboo in a misty forest, close-up"
    model, vae, cond, latent = _v2_core(b, prompt)
    t5, clip = (node["id"] for node in b.nodes if node["type"] == "OpenSoraTextEncoderLoader")
    flux = b.add("OpenSoraModelLoader", 0, model_name="flux1-dev.safetensors", dtype="auto")
    ae = b.add("OpenSoraVAELoader", 0, vae_name="flux1-dev-ae.safetensors", dtype="auto")
    enc = b.add("OpenSoraTextEncode", 1, prompt=prompt, family="opensora-v2.0-t2i", aesthetic_score=0.0)
    b.connect(t5, 0, enc, "text_encoder")
    b.connect(clip, 0, enc, "clip")
    image_latent = b.add("OpenSoraEmptyLatent", 1, resolution="768px", aspect_ratio="16:9", num_frames=1)
    b.connect(ae, 0, image_latent, "vae")
    image = _sample_decode(b, flux, ae, enc, image_latent, 2, steps=50, cfg=4.0, scheduler="rflow-v2")
    ref = b.add("OpenSoraReferenceCondition", 3, reference_start=0, target_start=0, length=1, edit_ratio=0.0)
    b.connect(latent, 0, ref, "latent")
    b.connect(vae, 0, ref, "vae")
    b.connect(image, 0, ref, "reference")
    _v2_sample_save(b, model, vae, cond, ref, 4, "OpenSora/v2_t2i2v")
    b.note("Open-Sora 2.0 t2i2v, its recommended mode: FLUX.1-dev (flux1-dev.safetensors, with flux1-dev-ae or "
           "ComfyUI's ae.safetensors) draws the first frame at 768px from the prompt as written (family "
           "opensora-v2.0-t2i: no FPS / motion suffix; 50 steps, distilled guidance 4.0), then the video model "
           "animates it as image-to-video. Keep both prompts the same.", 0)
    return b


WORKFLOWS = {"video_convert": video_convert, "cogvideox_t2v": cogvideox_t2v, "cogvideox_i2v": cogvideox_i2v,
             "cogvideox_v2v": cogvideox_v2v, "opensora_v1.2_t2v": opensora_v1_2_t2v,
             "opensora_v1.2_i2v": opensora_v1_2_i2v, "opensora_v1.2_extend": opensora_v1_2_extend,
             "opensora_v1.2_long_video": opensora_v1_2_long_video, "opensora_v1.2_v2v_edit": opensora_v1_2_v2v_edit,
             "opensora_v1.0_t2v": opensora_v1_0_t2v, "opensora_v1.1_t2v": opensora_v1_1_t2v,
             "opensora_v1.1_i2v": opensora_v1_1_i2v,
             "opensora_v2.0_t2v_256px": opensora_v2_0_t2v_256px, "opensora_v2.0_t2v_768px": opensora_v2_0_t2v_768px,
             "opensora_v2.0_i2v": opensora_v2_0_i2v, "opensora_v2.0_first_last": opensora_v2_0_first_last,
             "opensora_v2.0_loop": opensora_v2_0_loop, "opensora_v2.0_t2i2v": opensora_v2_0_t2i2v,
             "demo_t2v": demo_t2v, "demo_i2v": demo_i2v, "demo_extend": demo_extend, "demo_loop": demo_loop}


def demo_examples():
    """The example inputs of the demo workflows: first frames of two procedural scenes."""
    from comfyui_opensora import video_io
    from comfyui_opensora.demo import clips

    scenes = {"blue_square.png": clips.Scene("blue", "square", "right", "gray", x=20.0, y=30.0, half=9.0),
              "yellow_triangle.png": clips.Scene("yellow", "triangle", "up", "black", x=32.0, y=40.0, half=9.0)}
    # and the example clip of the extension / editing / conversion workflows: 51 frames, the longest they read
    clip = clips.Scene("red", "circle", "growing", "black", x=32.0, y=32.0, half=5.0)
    frames = ((clips.render(clip, 51) + 1) / 2).permute(1, 2, 3, 0)
    video_io.write_video(os.path.join(HERE, "..", "demo", "examples", "red_circle.mp4"), frames, 24.0, crf=17)
    for name, scene in scenes.items():
        frame = ((clips.render(scene, 1) + 1) / 2).permute(1, 2, 3, 0)  # [1, H, W, 3]
        tmp = os.path.join(HERE, "..", "demo", "examples", name + ".dir")
        video_io.write_video(tmp, frame, 24.0, "png (frames)")
        os.replace(os.path.join(tmp, "frame_00000.png"), os.path.join(HERE, "..", "demo", "examples", name))
        os.rmdir(tmp)


# The template browser shows <name>.jpg beside each workflow: a card with the family, the task and its settings.
THUMBNAILS = {
    "video_convert": ("Video", "convert a video", "mp4 / webm / gif / webp / png frames"),
    "cogvideox_t2v": ("CogVideoX", "text to video", "2B / 5B / 1.5 · 720x480 · 49 frames · DPM 50"),
    "cogvideox_i2v": ("CogVideoX", "image to video", "5B-I2V / 1.5-I2V · the image is frame 0"),
    "cogvideox_v2v": ("CogVideoX", "video to video", "re-noised to 0.8 · DDIM 50"),
    "opensora_v1.0_t2v": ("Open-Sora 1.0", "text to video", "STDiT · 16 frames · IDDPM 100"),
    "opensora_v1.1_t2v": ("Open-Sora 1.1", "text to video", "STDiT2 · 240p · 16 frames · IDDPM 100"),
    "opensora_v1.1_i2v": ("Open-Sora 1.1", "image to video", "STDiT2 · the image is frame 0"),
    "opensora_v1.2_t2v": ("Open-Sora 1.2", "text to video", "STDiT3 · 240p · 51 frames · rflow 30"),
    "opensora_v1.2_i2v": ("Open-Sora 1.2", "image to video", "mask_strategy 0 · rflow 30"),
    "opensora_v1.2_extend": ("Open-Sora 1.2", "extend a video", "5 latent frames carried over · join clips"),
    "opensora_v1.2_long_video": ("Open-Sora 1.2", "long video", "three clips, each continuing the last"),
    "opensora_v1.2_v2v_edit": ("Open-Sora 1.2", "edit a video", "the source at edit ratio 0.6"),
    "opensora_v2.0_t2v_256px": ("Open-Sora 2.0", "text to video", "11B MMDiT · 256px · 129 frames"),
    "opensora_v2.0_t2v_768px": ("Open-Sora 2.0", "text to video", "11B MMDiT · 768px · 129 frames"),
    "opensora_v2.0_i2v": ("Open-Sora 2.0", "image to video", "image guidance 3, rising along the video"),
    "opensora_v2.0_first_last": ("Open-Sora 2.0", "first + last frame", "two images, the video between"),
    "opensora_v2.0_loop": ("Open-Sora 2.0", "loop", "the same image first and last"),
    "opensora_v2.0_t2i2v": ("Open-Sora 2.0", "text to image to video", "FLUX.1-dev draws frame 0"),
    "demo_t2v": ("Demo model", "text to video", "bundled · 64x64 · 17 frames · seconds on a CPU"),
    "demo_i2v": ("Demo model", "image to video", "bundled · 64x64 · 17 frames"),
    "demo_extend": ("Demo model", "extend a clip", "bundled · 64x64 · 34 frames"),
    "demo_loop": ("Demo model", "loop", "bundled · 64x64 · 18 frames"),
}


def thumbnail(path, family, task, detail, size=(512, 384)):
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", size, (24, 26, 34))
    draw = ImageDraw.Draw(img)
    for x in range(0, size[0], 32):  # a film strip along the top and the bottom
        for y in (8, size[1] - 24):
            draw.rectangle([x + 8, y, x + 24, y + 14], fill=(60, 64, 80))
    draw.text((32, 70), family, font=ImageFont.load_default(size=30), fill=(150, 170, 255))
    draw.text((32, 130), task, font=ImageFont.load_default(size=46), fill=(240, 240, 245))
    draw.text((32, 230), detail, font=ImageFont.load_default(size=20), fill=(170, 175, 190))
    draw.text((32, 300), "ComfyUI-OpenSora", font=ImageFont.load_default(size=18), fill=(110, 115, 135))
    img.save(path, quality=88)


def main():
    defs, Builder = _pack()
    demo_examples()
    for name, fn in WORKFLOWS.items():
        fn(defs, Builder).save(os.path.join(HERE, f"{name}.json"), name)
        thumbnail(os.path.join(HERE, f"{name}.jpg"), *THUMBNAILS[name])
        print(f"wrote workflows/{name}.json and .jpg")


if __name__ == "__main__":
    main()
