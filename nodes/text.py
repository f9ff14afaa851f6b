"""Text encoding node."""
from __future__ import annotations

from ..models import pipeline
from .common import CATEGORY, check_floats
from .sampling import _checked

CAMERA_MOTIONS = ["none", "static", "pan right", "pan left", "tilt up", "tilt down", "zoom in", "zoom out"]


class OpenSoraTextEncode:
    DESCRIPTION = ("Encodes a prompt with T5 the way the chosen model family was trained: Open-Sora 1.2 appends "
                   "the aesthetic / motion / camera suffixes, cleans the caption and pads to 300 tokens; Open-Sora "
                   "1.0 / 1.1 clean it and pad to 120 / 200 tokens (no suffixes); CogVideoX takes the raw text at "
                   "226 tokens (and the empty prompt as its default negative); Open-Sora 2.0 appends '24 FPS. N "
                   "motion score.' (N = motion_score, 4 when 0), runs T5 at 512 tokens without a mask and adds "
                   "CLIP-L's pooled vector from the clip input (the empty prompt is its default negative); "
                   "opensora-v2.0-t2i encodes the same way without the suffix, for the FLUX.1 image of t2i2v. The "
                   "embeddings are kept on the CPU so the encoder can leave the GPU before sampling.")
    CATEGORY = f"{CATEGORY}/conditioning"
    RETURN_TYPES = ("OPENSORA_COND",)
    RETURN_NAMES = ("conditioning",)
    OUTPUT_TOOLTIPS = ("Text conditioning for the sampler (positive or negative).",)
    FUNCTION = "encode"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "text_encoder": ("OPENSORA_TEXT_ENCODER", {"tooltip": "From OpenSora Text Encoder Loader."}),
            "prompt": ("STRING", {"multiline": True, "default": "",
                                  "tooltip": "What the video shows. Several prompts for a long video: "
                                             "'|0|first part|2|second part' (loop index, then text)."}),
            "family": (pipeline.TEXT_FAMILIES, {
                "default": pipeline.TEXT_FAMILIES[0],
                "tooltip": "The model the conditioning is for: sets token count, cleaning and suffixes."}),
            "aesthetic_score": ("FLOAT", {"default": 6.5, "min": 0.0, "max": 10.0, "step": 0.1,
                                          "tooltip": "Appended as ' aesthetic score: X.' (Open-Sora 1.2). 0 = off."}),
            "motion_score": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.5,
                                       "tooltip": "Appended as ' motion score: X.' (Open-Sora 1.2). 0 = off."}),
            "camera_motion": (CAMERA_MOTIONS, {"default": "none",
                                               "tooltip": "Appended as ' camera motion: X.' unless none."}),
            "offload": ("BOOLEAN", {"default": True,
                                    "tooltip": "Move the text encoder to the offload device after encoding, so "
                                               "the transformer has the GPU to itself."}),
        }, "optional": {
            "clip": ("OPENSORA_TEXT_ENCODER", {"tooltip": "CLIP-L (clip_l.safetensors) from OpenSora Text Encoder "
                                                          "Loader: Open-Sora 2.0 needs its pooled vector."}),
        }}

    @classmethod
    def VALIDATE_INPUTS(cls, aesthetic_score=None, motion_score=None):
        return check_floats("OpenSoraTextEncode", cls, aesthetic_score=aesthetic_score, motion_score=motion_score)

    def encode(self, text_encoder, prompt, family, aesthetic_score, motion_score, camera_motion, offload, clip=None):
        cond = _checked("OpenSoraTextEncode", pipeline.encode_text, text_encoder, prompt, family,
                        aesthetic_score=aesthetic_score or None, motion_score=motion_score or None,
                        camera_motion=None if camera_motion == "none" else camera_motion, offload=offload, clip=clip)
        return (cond,)


NODE_CLASS_MAPPINGS = {"OpenSoraTextEncode": OpenSoraTextEncode}
NODE_DISPLAY_NAME_MAPPINGS = {"OpenSoraTextEncode": "OpenSora Text Encode"}
