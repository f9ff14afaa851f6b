"""Latent, conditioning and sampler nodes."""
from __future__ import annotations

import torch

from ..models import pipeline
from .common import CATEGORY, NodeInputError, check_floats, images_to_video

SEED_MAX = 0xFFFFFFFFFFFFFFFF


OUT_OF_MEMORY_FIX = {
    "OpenSoraSampler": "use a smaller size or fewer frames, or offload 'sequential' in OpenSora Model Loader",
    "OpenSoraVAEDecode": "set spatial_tile (e.g. 256) and a smaller temporal_chunk, or decode fewer frames",
    "OpenSoraVAEEncode": "encode fewer or smaller frames (OpenSora Load Video's frame_cap and resize)",
}


def _checked(node: str, fn, *args, **kwargs):
    """Run model code; its InputError names the input, this adds the node. Running out of memory (CPU or CUDA)
    frees what the attempt held and says what to change, instead of the allocator's traceback."""
    try:
        return fn(*args, **kwargs)
    except pipeline.InputError as e:
        raise NodeInputError(node, e.input_name, e.problem, e.fix) from e
    except (torch.OutOfMemoryError, RuntimeError) as e:
        wanted = pipeline.out_of_memory(e)
        if wanted is None:
            raise
        e = None  # drop the traceback's frames, and with them the tensors they hold, before freeing
        pipeline.free_memory()
        raise NodeInputError(node, "latent" if node != "OpenSoraVAEEncode" else "images", wanted,
                             OUT_OF_MEMORY_FIX.get(node, "use a smaller size or fewer frames")) from None


class OpenSoraEmptyLatent:
    DESCRIPTION = ("An empty video latent of the VAE's shape. Pick a resolution preset and an aspect ratio (the "
                   "model's training buckets), or 'custom' with width and height. The frame count is checked "
                   "against what the VAE can encode and decode.")
    CATEGORY = f"{CATEGORY}/latent"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Latent [B, C, T, H, W] plus the video size it decodes to.",)
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("OPENSORA_VAE", {"tooltip": "The VAE the latent belongs to (sets channels and compression)."}),
            "resolution": (pipeline.RESOLUTIONS, {
                "default": "240p", "tooltip": "Pixel-count preset of the model's buckets, or custom."}),
            "aspect_ratio": (pipeline.ASPECT_RATIOS, {
                "default": "16:9", "tooltip": "Width:height of the preset (16:9 is landscape). Ignored for custom."}),
            "width": ("INT", {"default": 424, "min": 16, "max": 4096, "step": 8,
                              "tooltip": "Width in pixels when resolution is custom (a multiple of 8)."}),
            "height": ("INT", {"default": 240, "min": 16, "max": 4096, "step": 8,
                               "tooltip": "Height in pixels when resolution is custom (a multiple of 8)."}),
            "num_frames": ("INT", {"default": 51, "min": 1, "max": 1024, "step": 1,
                                   "tooltip": "Frames of the decoded video (Open-Sora 1.2: 51 = 2 s at 24 fps; "
                                              "1 = an image)."}),
            "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Videos generated at once."}),
        }}

    def generate(self, vae, resolution, aspect_ratio, width, height, num_frames, batch_size):
        return (_checked("OpenSoraEmptyLatent", pipeline.empty_latent, vae, resolution, aspect_ratio, width, height,
                         num_frames, batch_size),)


class OpenSoraReferenceCondition:
    DESCRIPTION = ("Places reference frames (an image or a video) into the latent, as one entry of Open-Sora's "
                   "mask_strategy: image-to-video (target 0), last-frame conditioning (target -1), connecting "
                   "images, or editing a video with an edit ratio. Chain several for several references. Frame "
                   "positions are latent frames (Open-Sora 1.2: 17 video frames = 5 latent frames; one image = "
                   "one latent frame); negative values count from the end.")
    CATEGORY = f"{CATEGORY}/conditioning"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent carrying the reference condition, for the sampler.",)
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "From OpenSora Empty Latent (or another condition node)."}),
            "vae": ("OPENSORA_VAE", {"tooltip": "Encodes the reference frames."}),
            "reference": ("IMAGE", {"tooltip": "Reference image or video frames; resized and center-cropped to "
                                               "the latent's size."}),
            "reference_start": ("INT", {"default": 0, "min": -1024, "max": 1024,
                                        "tooltip": "First latent frame taken from the reference (-1 = last)."}),
            "target_start": ("INT", {"default": 0, "min": -1024, "max": 1024,
                                     "tooltip": "Latent frame of the video where the reference goes (0 = first, "
                                                "-1 = last)."}),
            "length": ("INT", {"default": 1, "min": 1, "max": 1024,
                               "tooltip": "Latent frames copied (clipped to what both sides have)."}),
            "edit_ratio": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                     "tooltip": "0 keeps the reference fixed; r in (0,1) lets the model change it "
                                                "from noise level r on (video editing strength)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, edit_ratio=None):
        return check_floats("OpenSoraReferenceCondition", cls, edit_ratio=edit_ratio)

    def condition(self, latent, vae, reference, reference_start, target_start, length, edit_ratio):
        return (_checked("OpenSoraReferenceCondition", pipeline.add_reference, latent, vae, images_to_video(reference),
                         reference_start, target_start, length, edit_ratio),)


class OpenSoraMaskStrategy:
    DESCRIPTION = ("Open-Sora's mask_strategy string with its full syntax: ';'-separated groups of "
                   "'loop,ref,ref_start,target_start,length,edit_ratio' (missing fields default to 0,0,0,0,1,0). "
                   "'ref' indexes reference_1..4. Example: '0' = image to video; '0;1,0,0,-1,1' connects two "
                   "images (the second group refers to reference_2 with ref index 1).")
    CATEGORY = f"{CATEGORY}/conditioning"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent carrying the conditions, for the sampler.",)
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": ("LATENT", {"tooltip": "From OpenSora Empty Latent."}),
                "vae": ("OPENSORA_VAE", {"tooltip": "Encodes the references."}),
                "mask_strategy": ("STRING", {"default": "0", "multiline": False,
                                             "tooltip": "e.g. '0' (i2v), '0,0,0,-1,1' (last frame), "
                                                        "'0,0,0,0,5,0.4' (edit the first 5 latents at 0.4)."}),
                "loop_index": ("INT", {"default": 0, "min": 0, "max": 1024,
                                       "tooltip": "Groups apply only when their loop field equals this."}),
                "reference_1": ("IMAGE", {"tooltip": "Reference 0 of the strategy (image or video frames)."}),
            },
            "optional": {
                "reference_2": ("IMAGE", {"tooltip": "Reference 1 of the strategy."}),
                "reference_3": ("IMAGE", {"tooltip": "Reference 2 of the strategy."}),
                "reference_4": ("IMAGE", {"tooltip": "Reference 3 of the strategy."}),
            }}

    def condition(self, latent, vae, mask_strategy, loop_index, reference_1, reference_2=None, reference_3=None,
                  reference_4=None):
        refs = [images_to_video(r) for r in (reference_1, reference_2, reference_3, reference_4) if r is not None]
        return (_checked("OpenSoraMaskStrategy", pipeline.add_mask_strategy, latent, vae, mask_strategy, refs,
                         loop_index),)


class OpenSoraExtendVideo:
    DESCRIPTION = ("Conditions a new clip on the last frames of a previous video, as Open-Sora's long-video "
                   "loop does (condition_frame_length latent frames of the previous clip become the first ones "
                   "of the new clip). Join the clips with OpenSora Join Clips.")
    CATEGORY = f"{CATEGORY}/conditioning"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The latent of the next clip, conditioned on the previous one.",)
    FUNCTION = "condition"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "latent": ("LATENT", {"tooltip": "Empty latent of the next clip."}),
            "vae": ("OPENSORA_VAE", {"tooltip": "Encodes the previous video."}),
            "previous_video": ("IMAGE", {"tooltip": "Decoded frames of the previous clip."}),
            "condition_frame_length": ("INT", {"default": 5, "min": 1, "max": 64,
                                               "tooltip": "Latent frames carried over (Open-Sora 1.2: 5 = 17 "
                                                          "video frames)."}),
            "condition_frame_edit": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.05,
                                               "tooltip": "Edit ratio of the carried frames (0 = keep them)."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, condition_frame_edit=None):
        return check_floats("OpenSoraExtendVideo", cls, condition_frame_edit=condition_frame_edit)

    def condition(self, latent, vae, previous_video, condition_frame_length, condition_frame_edit):
        return (_checked("OpenSoraExtendVideo", pipeline.add_reference, latent, vae, images_to_video(previous_video),
                         -condition_frame_length, 0, condition_frame_length, condition_frame_edit),)


class OpenSoraJoinClips:
    DESCRIPTION = ("Joins a clip made by OpenSora Extend Video to the video it continues, dropping the new "
                   "clip's first frames (they repeat the end of the previous one).")
    CATEGORY = f"{CATEGORY}/video"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("previous frames followed by the new frames after the overlap.",)
    FUNCTION = "join"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "previous_video": ("IMAGE", {"tooltip": "Frames of the earlier clip."}),
            "next_video": ("IMAGE", {"tooltip": "Frames of the clip that continues it."}),
            "overlap_frames": ("INT", {"default": 17, "min": 0, "max": 1024,
                                       "tooltip": "Video frames of next_video that repeat previous_video "
                                                  "(Open-Sora 1.2: 17 for 5 latent frames)."}),
        }}

    def join(self, previous_video, next_video, overlap_frames):
        import torch

        if previous_video.shape[1:] != next_video.shape[1:]:
            raise NodeInputError("OpenSoraJoinClips", "next_video",
                                 f"frame size {tuple(next_video.shape[1:3])} differs from previous_video's "
                                 f"{tuple(previous_video.shape[1:3])}", "generate both clips at the same size")
        if overlap_frames >= next_video.shape[0]:
            raise NodeInputError("OpenSoraJoinClips", "overlap_frames",
                                 f"{overlap_frames} is not less than next_video's {next_video.shape[0]} frames",
                                 "lower it below the clip's frame count")
        return (torch.cat([previous_video, next_video[overlap_frames:]]),)


class OpenSoraSampler:
    DESCRIPTION = ("Samples a video latent. Open-Sora 1.2: rectified flow (scheduler rflow) with the resolution- "
                   "and length-aware timestep transform, classifier-free guidance against the learned null caption, "
                   "and the conditions placed by the reference / mask-strategy nodes. CogVideoX: DPM-Solver++(2M) "
                   "or DDIM (v-prediction), optional dynamic cfg, image-to-video from a Reference Condition at "
                   "frame 0. Open-Sora 1.0 / 1.1: IDDPM (scheduler iddpm, 100 steps as released) with guidance on 3 of "
                   "the 4 channels and, for 1.1, the reference conditions. Open-Sora 2.0: rflow-v2, the shifted "
                   "flow schedule with text guidance (cfg, 7.5 as released) and image guidance (guidance_img) for "
                   "reference frames placed by Reference Condition (first frame, last frame, or both for a loop); "
                   "with the FLUX.1-dev model of its t2i2v mode and a 1-frame FLUX.1 autoencoder latent, rflow-v2 "
                   "makes the first image (cfg is then Flux's distilled guidance, 4.0 in the original; no negative). "
                   "denoise < 1 edits the input latent (video-to-video).")
    CATEGORY = f"{CATEGORY}/sampling"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The denoised latent, for OpenSora VAE Decode.",)
    FUNCTION = "sample"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("OPENSORA_MODEL", {"tooltip": "From OpenSora Model Loader."}),
                "positive": ("OPENSORA_COND", {"tooltip": "The prompt, from OpenSora Text Encode."}),
                "latent": ("LATENT", {"tooltip": "Empty latent, conditioned latent, or an encoded video with "
                                                 "denoise < 1."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": SEED_MAX, "control_after_generate": True,
                                 "tooltip": "Noise seed; the same seed gives the same video on CPU and GPU."}),
                "steps": ("INT", {"default": 30, "min": 1, "max": 1000, "tooltip": "Sampling steps."}),
                "cfg": ("FLOAT", {"default": 7.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance scale (1 = no guidance pass); for "
                                             "FLUX.1-dev, its distilled guidance (4.0)."}),
                "scheduler": (pipeline.SCHEDULERS, {"default": pipeline.SCHEDULERS[0],
                                                    "tooltip": "Sampling method of the model family: rflow for "
                                                               "Open-Sora 1.2; dpm or ddim for CogVideoX; iddpm "
                                                               "for Open-Sora 1.0 / 1.1."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "1 generates from noise; lower keeps more of the input latent."}),
                "fps": ("INT", {"default": 24, "min": 1, "max": 240,
                                "tooltip": "Frame rate the model is conditioned on (Open-Sora 1.2 uses 24; "
                                           "images use 120)."}),
            },
            "optional": {
                "negative": ("OPENSORA_COND", {"tooltip": "Negative prompt, for families that use one (CogVideoX; "
                                                          "unconnected it is the empty prompt). Open-Sora 1.2 uses "
                                                          "its learned null caption."}),
                "dynamic_cfg": ("BOOLEAN", {"default": False,
                                            "tooltip": "CogVideoX: the guidance scale follows the reference's "
                                                       "cosine 'wave' schedule (use_dynamic_cfg)."}),
                "guidance_img": ("FLOAT", {"default": 3.0, "min": 1.0, "max": 30.0, "step": 0.1, "round": 0.01,
                                           "tooltip": "Open-Sora 2.0: guidance toward the reference frames (and "
                                                      "for text-to-video its empty-image pass)."}),
                "guidance_oscillation": ("BOOLEAN", {"default": True,
                                                     "tooltip": "Open-Sora 2.0: from step 10 on, guidance only on "
                                                                "even steps (text_osci / image_osci)."}),
                "temporal_image_guidance": ("BOOLEAN", {"default": True,
                                                        "tooltip": "Open-Sora 2.0 image-to-video: image guidance "
                                                                   "rises along the video and falls over the steps "
                                                                   "(scale_temporal_osci)."}),
                "flow_shift": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.1,
                                         "tooltip": "Open-Sora 2.0: the schedule's shift; 0 = from resolution and "
                                                    "length, as released."}),
            }}

    @classmethod
    def VALIDATE_INPUTS(cls, cfg=None, denoise=None, guidance_img=None, flow_shift=None):
        return check_floats("OpenSoraSampler", cls, cfg=cfg, denoise=denoise, guidance_img=guidance_img,
                            flow_shift=flow_shift)

    def sample(self, model, positive, latent, seed, steps, cfg, scheduler, denoise, fps, negative=None,
               dynamic_cfg=False, guidance_img=3.0, guidance_oscillation=True, temporal_image_guidance=True,
               flow_shift=0.0):
        return (_checked("OpenSoraSampler", pipeline.sample, model, positive, latent, seed=seed, steps=steps,
                         cfg=cfg, scheduler=scheduler, denoise=denoise, fps=fps, negative=negative,
                         dynamic_cfg=dynamic_cfg, guidance_img=guidance_img,
                         guidance_oscillation=guidance_oscillation, temporal_image_guidance=temporal_image_guidance,
                         flow_shift=flow_shift),)


NODE_CLASS_MAPPINGS = {
    "OpenSoraEmptyLatent": OpenSoraEmptyLatent,
    "OpenSoraReferenceCondition": OpenSoraReferenceCondition,
    "OpenSoraMaskStrategy": OpenSoraMaskStrategy,
    "OpenSoraExtendVideo": OpenSoraExtendVideo,
    "OpenSoraJoinClips": OpenSoraJoinClips,
    "OpenSoraSampler": OpenSoraSampler,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OpenSoraEmptyLatent": "OpenSora Empty Latent",
    "OpenSoraReferenceCondition": "OpenSora Reference Condition",
    "OpenSoraMaskStrategy": "OpenSora Mask Strategy",
    "OpenSoraExtendVideo": "OpenSora Extend Video",
    "OpenSoraJoinClips": "OpenSora Join Clips",
    "OpenSoraSampler": "OpenSora Sampler",
}
