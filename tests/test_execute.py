"""The headless executor against ComfyUI's execution semantics, with small test nodes."""

import pytest
import torch

from comfyui_opensora import comfy_adapter
from comfyui_opensora.harness.execute import ExecutionInterrupted, Executor, NodeExecutionError

CALLS = []


class Const:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 100})}}

    def run(self, value):
        CALLS.append(("Const", value))
        return (value,)


class Add:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {}), "b": ("INT", {})}, "optional": {"c": ("INT", {})}}

    def run(self, a, b, c=None):
        CALLS.append(("Add", a, b, c))
        return (a + b + (c or 0),)


class Show:
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {})}, "hidden": {"prompt": "PROMPT", "extra": "EXTRA_PNGINFO",
                                                        "uid": "UNIQUE_ID"}}

    def run(self, x, prompt=None, extra=None, uid=None):
        CALLS.append(("Show", x, uid, torch.is_inference_mode_enabled(), extra))
        return {"ui": {"text": [str(x)]}}


class Volatile(Const):
    @classmethod
    def IS_CHANGED(cls, value):
        return float("nan")


class Split:
    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT", {})}}

    def run(self, n):
        return (list(range(n)),)


class Total:
    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"xs": ("INT", {})}}

    def run(self, xs):
        return (sum(xs),)


class Steps:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"n": ("INT", {})}}

    def run(self, n):
        bar = comfy_adapter.Progress(n)
        for i in range(n):
            if i == 2:
                comfy_adapter.request_cancel()  # what Ctrl-C does, mid-run
            CALLS.append(("step", i))
            bar.update()
        return (n,)


class Boom(Const):
    def run(self, value):
        raise RuntimeError("kaput")


CLASSES = {c.__name__: c for c in (Const, Add, Show, Volatile, Split, Total, Steps, Boom)}


def prompt(a=1, b=2):
    return {"1": {"class_type": "Const", "inputs": {"value": a}},
            "2": {"class_type": "Const", "inputs": {"value": b}},
            "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
            "4": {"class_type": "Show", "inputs": {"x": ["3", 0]}},
            "5": {"class_type": "Const", "inputs": {"value": 99}}}  # unused: never runs


@pytest.fixture(autouse=True)
def clear():
    CALLS.clear()


def test_runs_only_what_outputs_need_in_order_with_hidden_inputs():
    events = []
    out = Executor(CLASSES).run(prompt(), extra_data={"extra_pnginfo": {"workflow": "w"}},
                                on_event=lambda e, d: events.append(e))
    assert out["outputs"] == {"4": {"text": ["3"]}}
    assert CALLS == [("Const", 1), ("Const", 2), ("Add", 1, 2, None), ("Show", 3, "4", True, {"workflow": "w"})]
    assert events[0] == "execution_start" and events[-2:] == ["execution_success", "executing"]


def test_cache_between_runs():
    ex = Executor(CLASSES)
    ex.run(prompt())
    CALLS.clear()
    out = ex.run(prompt())
    assert CALLS == [] and sorted(out["cached"]) == ["1", "2", "3", "4"]
    out = ex.run(prompt(b=5))  # only the changed branch and what follows re-run
    assert CALLS == [("Const", 5), ("Add", 1, 5, None), ("Show", 6, "4", True, None)]
    assert out["outputs"]["4"] == {"text": ["6"]}


def test_is_changed_nan_always_reruns():
    p = {"1": {"class_type": "Volatile", "inputs": {"value": 4}}, "2": {"class_type": "Show", "inputs": {"x": ["1", 0]}}}
    ex = Executor(CLASSES)
    ex.run(p)
    ex.run(p)
    assert CALLS.count(("Const", 4)) == 2


def test_list_outputs_map_over_nodes():
    p = {"1": {"class_type": "Split", "inputs": {"n": 4}},
         "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
         "3": {"class_type": "Total", "inputs": {"xs": ["2", 0]}},
         "4": {"class_type": "Show", "inputs": {"x": ["3", 0]}},
         "5": {"class_type": "Show", "inputs": {"x": ["2", 0]}}}
    out = Executor(CLASSES).run(p)
    assert out["outputs"]["4"] == {"text": ["12"]}
    assert out["outputs"]["5"] == {"text": ["0", "2", "4", "6"]}  # ui lists merged over the mapped calls


def test_error_names_the_node():
    p = {"1": {"class_type": "Boom", "inputs": {"value": 1}}, "2": {"class_type": "Show", "inputs": {"x": ["1", 0]}}}
    with pytest.raises(NodeExecutionError, match=r"node 1 \(Boom\) failed: RuntimeError: kaput"):
        Executor(CLASSES).run(p)


def test_cancel_stops_between_steps():
    p = {"1": {"class_type": "Steps", "inputs": {"n": 10}}, "2": {"class_type": "Show", "inputs": {"x": ["1", 0]}}}
    events = []
    with pytest.raises(ExecutionInterrupted):
        Executor(CLASSES).run(p, on_event=lambda e, d: events.append((e, d)))
    assert CALLS == [("step", 0), ("step", 1), ("step", 2)]
    assert ("progress", {"value": 2, "max": 10, "node": "1"}) in events
    assert events[-1][0] == "execution_interrupted"
    # the flag is cleared by the next run
    CALLS.clear()
    Executor(CLASSES).run(prompt())
    assert CALLS
