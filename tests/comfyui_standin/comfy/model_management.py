"""The parts of comfy.model_management custom nodes call: the torch device, offload, cache and interruption."""
import threading

import psutil
import torch

from .cli_args import args

torch_version = torch.version.__version__


class InterruptProcessingException(Exception):
    pass


_interrupt_lock = threading.RLock()
_interrupt = False


def get_torch_device():
    if args.cpu or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(torch.cuda.current_device())


def get_torch_device_name(device):
    return "cpu" if device.type == "cpu" else f"{device} {torch.cuda.get_device_name(device)}"


def unet_offload_device():
    return torch.device("cpu")


def get_total_memory(dev=None, torch_total_too=False):
    dev = dev or get_torch_device()
    total = psutil.virtual_memory().total if dev.type == "cpu" else torch.cuda.mem_get_info(dev)[1]
    return (total, total) if torch_total_too else total


def get_free_memory(dev=None, torch_free_too=False):
    dev = dev or get_torch_device()
    free = psutil.virtual_memory().available if dev.type == "cpu" else torch.cuda.mem_get_info(dev)[0]
    return (free, free) if torch_free_too else free


def soft_empty_cache(force=False):
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def interrupt_current_processing(value=True):
    global _interrupt
    with _interrupt_lock:
        _interrupt = value


def processing_interrupted():
    with _interrupt_lock:
        return _interrupt


def throw_exception_if_processing_interrupted():
    global _interrupt
    with _interrupt_lock:
        if _interrupt:
            _interrupt = False
            raise InterruptProcessingException()
