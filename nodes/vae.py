"""VAE decode / encode nodes."""
from __future__ import annotations

from ..models import pipeline
from .common import CATEGORY, images_to_video, video_to_images
from .sampling import _checked


class OpenSoraVAEDecode:
    DESCRIPTION = ("Decodes a video latent to frames. Memory is bounded by the temporal chunk (and the spatial "
                   "tile when tiling is on), not by the video length.")
    CATEGORY = f"{CATEGORY}/vae"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Frames [T, H, W, 3] in 0..1 (batches follow each other).",)
    FUNCTION = "decode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("OPENSORA_VAE", {"tooltip": "The VAE the latent was made with."}),
            "latent": ("LATENT", {"tooltip": "From the sampler."}),
            "temporal_chunk": ("INT", {"default": 0, "min": 0, "max": 1024,
                                       "tooltip": "Latent frames decoded at a time; 0 = the VAE's native chunk "
                                                  "(Open-Sora 1.2: 5 latents = 17 frames, exact; 2.0: the "
                                                  "whole video for the HunyuanVideo VAE, 8 latents for the "
                                                  "DC-AE)."}),
            "temporal_overlap": ("INT", {"default": 0, "min": 0, "max": 64,
                                         "tooltip": "Latent frames shared by neighbouring chunks and blended "
                                                    "(for VAEs whose chunks are not exact)."}),
            "spatial_tile": ("INT", {"default": 0, "min": 0, "max": 4096, "step": 32,
                                     "tooltip": "Tile size in pixels for spatial tiling; 0 = off (Open-Sora 2.0's "
                                                "VAEs: 0 = their released 256 px tiles)."}),
            "spatial_overlap": ("INT", {"default": 64, "min": 0, "max": 1024, "step": 8,
                                        "tooltip": "Pixels shared and blended between spatial tiles (Open-Sora "
                                                   "2.0's VAEs: its share of the tile also blends their time "
                                                   "windows, as the original's tile_overlap_factor)."}),
        }}

    def decode(self, vae, latent, temporal_chunk, temporal_overlap, spatial_tile, spatial_overlap):
        video = _checked("OpenSoraVAEDecode", pipeline.decode, vae, latent, temporal_chunk=temporal_chunk,
                         temporal_overlap=temporal_overlap, spatial_tile=spatial_tile,
                         spatial_overlap=spatial_overlap)
        return (video_to_images(video),)


class OpenSoraVAEEncode:
    DESCRIPTION = ("Encodes frames to a video latent (deterministic: the posterior mean), e.g. for "
                   "video-to-video with the sampler's denoise below 1.")
    CATEGORY = f"{CATEGORY}/vae"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("Latent [1, C, T, H, W] of the frames.",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("OPENSORA_VAE", {"tooltip": "The VAE to encode with."}),
            "images": ("IMAGE", {"tooltip": "Frames [T, H, W, 3]; height and width must suit the VAE."}),
        }}

    def encode(self, vae, images):
        return (_checked("OpenSoraVAEEncode", pipeline.encode, vae, images_to_video(images)),)


NODE_CLASS_MAPPINGS = {"OpenSoraVAEDecode": OpenSoraVAEDecode, "OpenSoraVAEEncode": OpenSoraVAEEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"OpenSoraVAEDecode": "OpenSora VAE Decode", "OpenSoraVAEEncode": "OpenSora VAE Encode"}
