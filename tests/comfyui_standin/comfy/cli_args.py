"""`from comfy.cli_args import args`: the parsed command line, as ComfyUI exposes it to custom nodes."""
import argparse
import enum


class LatentPreviewMethod(enum.Enum):
    NoPreviews = "none"
    Auto = "auto"
    Latent2RGB = "latent2rgb"
    TAESD = "taesd"


parser = argparse.ArgumentParser()
parser.add_argument("--listen", type=str, default="127.0.0.1")
parser.add_argument("--port", type=int, default=8188)
parser.add_argument("--cpu", action="store_true")
parser.add_argument("--base-directory", type=str, default=None)
parser.add_argument("--preview-method", type=LatentPreviewMethod, default=LatentPreviewMethod.NoPreviews)
parser.add_argument("--preview-size", type=int, default=512)
parser.add_argument("--front-end-root", type=str, default=None)
parser.add_argument("--disable-all-custom-nodes", action="store_true")
# The stand-in's own option: the recorded /object_info of the ComfyUI it stands in for, for its core nodes.
parser.add_argument("--core-object-info", type=str, default=None)

args = parser.parse_args([])


def parse(argv):
    global args
    parsed = parser.parse_args(argv)
    vars(args).update(vars(parsed))
    return args
