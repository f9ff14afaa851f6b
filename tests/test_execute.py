"""The headless executor against ComfyUI's execution semantics (execution.py, comfy_execution/graph.py and
caching.py of 0.3.64), with small pure-Python test nodes. Expected orders and cache hits are what ComfyUI's
ExecutionList and input-signature cache give for the same graphs."""
import pytest
import torch

from comfyui_opensora import comfy_adapter
from comfyui_opensora.harness.execute import ExecutionInterrupted, Executor, NodeExecutionError

CALLS = []
STAMP = {"value": "v1"}


class Const:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    def run(self, value):
        CALLS.append(("Const", value))
        return (value,)


class Add:
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {}), "b": ("INT", {})}, "optional": {"c": ("INT", {})}}

    def run(self, a, b, c="absent"):
        CALLS.append(("Add", a, b, c))
        return (a + b,)


class Show:
    RETURN_TYPES = ()
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {})},
                "hidden": {"prompt": "PROMPT", "extra": "EXTRA_PNGINFO", "uid": "UNIQUE_ID"}}

    def run(self, x, prompt, extra, uid):
        CALLS.append(("Show", x, uid, torch.is_inference_mode_enabled()))
        self.seen = (prompt, extra)
        return {"ui": {"text": [str(x)]}}


class Volatile(Const):
    @classmethod
    def IS_CHANGED(cls, value):
        return float("nan")


class Stamped(Const):
    @classmethod
    def IS_CHANGED(cls, value):
        return STAMP["value"]  # e.g. a file's modification time


class Fragile(Const):
    @classmethod
    def IS_CHANGED(cls, other):  # wrong parameters: ComfyUI treats the failure as "always changed"
        return 1


class Fresh(Const):
    NOT_IDEMPOTENT = True


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
        CALLS.append(("Total", xs))
        return {"ui": {"sum": [sum(xs)]}, "result": (sum(xs),)}


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


class CtrlC(Const):
    def run(self, value):
        raise KeyboardInterrupt


class NoReturn(Const):
    def run(self, value):
        return None


CLASSES = {c.__name__: c for c in (Const, Add, Show, Volatile, Stamped, Fragile, Fresh, Split, Total, Steps, Boom,
                                   CtrlC, NoReturn)}


def graph(a=1, b=2, unused=99):
    return {"1": {"class_type": "Const", "inputs": {"value": a}},
            "2": {"class_type": "Const", "inputs": {"value": b}},
            "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
            "4": {"class_type": "Show", "inputs": {"x": ["3", 0]}},
            "5": {"class_type": "Const", "inputs": {"value": unused}}}  # feeds no output: never runs


@pytest.fixture(autouse=True)
def clear():
    CALLS.clear()
    STAMP["value"] = "v1"
    yield
    comfy_adapter.clear_cancel()


def run(executor, prompt, **kw):
    events = []
    out = executor.run(prompt, on_event=lambda e, d: events.append((e, d)), **kw)
    return out, events


def test_order_pruning_hidden_inputs_and_inference_mode():
    prompt = {**graph(), "6": {"class_type": "Const", "inputs": {"value": 7}},
              "7": {"class_type": "Show", "inputs": {"x": ["6", 0]}}}
    ex = Executor(CLASSES)
    out, events = run(ex, prompt, extra_data={"extra_pnginfo": {"workflow": "w"}})
    # ComfyUI's pick: a node feeding an output first (6), the output as soon as it is ready (7), then the rest
    # in the depth-first order its ExecutionList added them (2 before 1).
    assert out["executed"] == ["6", "7", "2", "1", "3", "4"]
    assert CALLS == [("Const", 7), ("Show", 7, "7", True), ("Const", 2), ("Const", 1), ("Add", 1, 2, "absent"),
                     ("Show", 3, "4", True)]
    assert out["outputs"] == {"7": {"text": ["7"]}, "4": {"text": ["3"]}}
    assert ex.objects[("4", "Show")].seen == (prompt, {"workflow": "w"})
    assert [e for e, _ in events] == ["execution_start", "execution_cached"] + \
        ["executing", "executing", "executed"] + ["executing"] * 4 + ["executed", "execution_success", "executing"]
    assert events[-1] == ("executing", {"node": None})


def test_only_the_given_outputs_run():
    prompt = {**graph(), "7": {"class_type": "Show", "inputs": {"x": ["5", 0]}}}
    out = Executor(CLASSES).run(prompt, outputs=["7"])
    assert out["executed"] == ["5", "7"] and out["outputs"] == {"7": {"text": ["99"]}}


def test_unchanged_nodes_are_not_run_again():
    ex = Executor(CLASSES)
    ex.run(graph())
    CALLS.clear()
    out, events = run(ex, graph(unused=5))  # a change outside what the output needs changes nothing
    assert CALLS == [] and out["executed"] == [] and out["cached"] == ["1", "2", "3", "4"]
    assert ("executed", {"node": "4", "display_node": "4", "output": {"text": ["3"]}}) in events
    assert out["outputs"] == {"4": {"text": ["3"]}}
    out = ex.run(graph(b=5))  # only the changed branch and what follows re-run
    assert CALLS == [("Const", 5), ("Add", 1, 5, "absent"), ("Show", 6, "4", True)]
    assert out["cached"] == ["1"] and out["outputs"]["4"] == {"text": ["6"]}


def test_identical_nodes_share_a_result_unless_not_idempotent():
    prompt = {"1": {"class_type": "Const", "inputs": {"value": 3}},
              "2": {"class_type": "Const", "inputs": {"value": 3}},
              "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
              "4": {"class_type": "Show", "inputs": {"x": ["3", 0]}}}
    assert Executor(CLASSES).run(prompt)["executed"] == ["2", "3", "4"]  # same signature: computed once
    for nid in ("1", "2"):
        prompt[nid]["class_type"] = "Fresh"
    assert Executor(CLASSES).run(prompt)["executed"] == ["2", "1", "3", "4"]


def test_is_changed():
    ex = Executor(CLASSES)
    for cls in ("Volatile", "Fragile"):  # NaN, or an IS_CHANGED that raises: always re-run
        prompt = {"1": {"class_type": cls, "inputs": {"value": 4}},
                  "2": {"class_type": "Show", "inputs": {"x": ["1", 0]}}}
        assert ex.run(prompt)["executed"] == ["1", "2"]
        assert ex.run(prompt)["executed"] == ["1", "2"]  # and what follows: ancestors are part of a signature
    prompt = {"1": {"class_type": "Stamped", "inputs": {"value": 4}},
              "2": {"class_type": "Show", "inputs": {"x": ["1", 0]}}}
    ex.run(prompt)
    assert ex.run(prompt)["executed"] == []
    STAMP["value"] = "v2"
    assert ex.run(prompt)["executed"] == ["1", "2"]


def test_lists_map_over_nodes_and_ui_merges():
    prompt = {"1": {"class_type": "Split", "inputs": {"n": 4}},
              "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["1", 0]}},
              "3": {"class_type": "Total", "inputs": {"xs": ["2", 0]}},
              "4": {"class_type": "Show", "inputs": {"x": ["3", 0]}},
              "5": {"class_type": "Show", "inputs": {"x": ["2", 0]}},
              "6": {"class_type": "Const", "inputs": {"value": 10}},
              "7": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["6", 0]}},
              "8": {"class_type": "Show", "inputs": {"x": ["7", 0]}}}
    out = Executor(CLASSES).run(prompt)
    assert ("Total", [0, 2, 4, 6]) in CALLS                      # INPUT_IS_LIST: one call with the whole list
    assert out["outputs"]["4"] == {"text": ["12"]}                 # {"ui", "result"}: the result flows on
    assert out["outputs"]["3"] == {"sum": [12]}
    assert out["outputs"]["5"] == {"text": ["0", "2", "4", "6"]}  # one call per item, ui lists concatenated
    assert out["outputs"]["8"] == {"text": ["10", "11", "12", "13"]}  # the shorter list repeats its last item


def test_node_instances_are_kept_per_id_and_class():
    ex = Executor(CLASSES)
    ex.run(graph())
    show = ex.objects[("4", "Show")]
    ex.run(graph(a=8))
    assert ex.objects[("4", "Show")] is show
    ex.run({"9": graph()["1"], "4": {"class_type": "Show", "inputs": {"x": ["9", 0]}}})
    assert ("3", "Add") not in ex.objects  # nodes gone from the prompt lose their instance


def test_error_names_the_node_and_keeps_what_ran():
    prompt = {**graph(), "1": {"class_type": "Boom", "inputs": {"value": 1}}}
    ex = Executor(CLASSES)
    with pytest.raises(NodeExecutionError, match=r"node 1 \(Boom\) failed: RuntimeError: kaput") as info:
        run(ex, prompt)
    assert (info.value.node_id, info.value.class_type, str(info.value.original)) == ("1", "Boom", "kaput")
    assert info.value.details["exception_type"] == "RuntimeError"
    assert info.value.details["current_inputs"] == {"value": [1]}
    CALLS.clear()
    ex.run(graph())  # node 2 ran before the failure: its output is reused
    assert CALLS == [("Const", 1), ("Add", 1, 2, "absent"), ("Show", 3, "4", True)]
    with pytest.raises(NodeExecutionError, match=r"node 1 \(NoReturn\) failed: TypeError: NoReturn.run returned "
                                                 r"NoneType: return a tuple matching RETURN_TYPES"):
        ex.run({"1": {"class_type": "NoReturn", "inputs": {"value": 1}},
                "2": {"class_type": "Show", "inputs": {"x": ["1", 0]}}})


def test_cancel_stops_between_steps():
    prompt = {"1": {"class_type": "Steps", "inputs": {"n": 10}}, "2": {"class_type": "Show", "inputs": {"x": ["1", 0]}}}
    ex = Executor(CLASSES)
    events = []
    with pytest.raises(ExecutionInterrupted, match=r"node 1 \(Steps\)"):
        ex.run(prompt, on_event=lambda e, d: events.append((e, d)))
    assert CALLS == [("step", 0), ("step", 1), ("step", 2)]  # the step that saw the cancel was the last
    assert [d for e, d in events if e == "progress"] == [{"value": v, "max": 10, "node": "1"} for v in (1, 2, 3)]
    assert events[-2][0] == "execution_interrupted" and events[-2][1]["node_id"] == "1"
    assert events[-1] == ("executing", {"node": None})
    CALLS.clear()
    assert ex.run(graph())["executed"]  # the next run clears the cancel flag


def test_cancel_between_nodes_and_ctrl_c_inside_a_node():
    def cancel_after_first(event, data):
        if event == "executed":
            comfy_adapter.request_cancel()

    prompt = {**graph(), "6": {"class_type": "Show", "inputs": {"x": ["5", 0]}}}
    with pytest.raises(ExecutionInterrupted, match=r"node 2 \(Const\)"):
        Executor(CLASSES).run(prompt, on_event=cancel_after_first)
    assert CALLS == [("Const", 99), ("Show", 99, "6", True)]
    with pytest.raises(ExecutionInterrupted, match=r"node 1 \(CtrlC\)"):
        Executor(CLASSES).run({"1": {"class_type": "CtrlC", "inputs": {"value": 1}},
                               "2": {"class_type": "Show", "inputs": {"x": ["1", 0]}}})
