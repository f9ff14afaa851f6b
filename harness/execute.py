"""Execute an API prompt the way ComfyUI's execution.py does, without a server.

What is reproduced (ComfyUI 0.3.64 `PromptExecutor.execute_async`, `execute`, `comfy_execution.graph.ExecutionList`,
`comfy_execution.caching` with the default "classic" cache):
  * only the output nodes (or the given output ids) and the ancestors they need run, in dependency order, with
    ComfyUI's ux-friendly pick among the ready nodes (output node first, then a node feeding one, then one two
    links away, else the first ready one);
  * the whole run is under torch.inference_mode();
  * outputs are cached by input signature: class_type + IS_CHANGED result + constant inputs + the same for every
    ancestor (+ the node id for NOT_IDEMPOTENT classes or a hidden UNIQUE_ID). A node whose signature was computed
    before is not run again, in this run or a later one of the same Executor; entries the current prompt does not
    use are dropped (the classic cache), and node instances are kept per (node id, class_type);
  * inputs are handed over as ComfyUI does: a node is called once per index of its longest input list (shorter
    lists repeat their last item), INPUT_IS_LIST nodes once with whole lists, OUTPUT_IS_LIST outputs are
    concatenated, `ui` dicts are merged key by key as lists; absent optional inputs are not passed; hidden inputs
    PROMPT, EXTRA_PNGINFO and UNIQUE_ID are filled in;
  * events as the server sends them over its websocket (execution_start, execution_cached, executing, progress,
    executed, execution_success, execution_error, execution_interrupted), to `on_event(event, data)`.

Not reproduced: node expansion ({"expand": ...}) and ExecutionBlocker (a clear error instead), lazy inputs (they
are computed eagerly, so check_lazy_status has nothing to ask for), and ComfyUI writing `is_changed` into the
prompt that PROMPT hidden inputs see.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import time
import traceback
from collections.abc import Mapping, Sequence

import torch

from .. import comfy_adapter


class NodeExecutionError(RuntimeError):
    """A node raised while running. `details` is the server's execution_error payload."""

    def __init__(self, node_id: str, class_type: str, original: BaseException, details: dict | None = None):
        self.node_id, self.class_type, self.original, self.details = node_id, class_type, original, details or {}
        super().__init__(f"node {node_id} ({class_type}) failed: {type(original).__name__}: {original}")


class ExecutionInterrupted(RuntimeError):
    """The run was cancelled (comfy_adapter.request_cancel, Ctrl-C); it stopped between nodes or steps."""

    def __init__(self, node_id: str, class_type: str):
        self.node_id, self.class_type = node_id, class_type
        super().__init__(f"cancelled while running node {node_id} ({class_type})")


class DependencyCycleError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# How ComfyUI hands inputs to a node function (shared with validate.py for VALIDATE_INPUTS)
# --------------------------------------------------------------------------------------------
def is_link(value) -> bool:
    """comfy_execution.graph_utils.is_link: ["node id", output index]."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], (int, float)))


def input_info(input_types: dict, name: str):
    """(type, category, options) of one input in an INPUT_TYPES dict (comfy_execution.graph.get_input_info);
    required wins over optional over hidden; (None, None, None) when the input is not declared."""
    for category in ("required", "optional", "hidden"):
        if name in input_types.get(category, {}):
            entry = input_types[category][name]
            if isinstance(entry, str):  # hidden inputs are declared by a bare kind: "PROMPT"
                return entry, category, {}
            return entry[0], category, (entry[1] if len(entry) > 1 else {})
    return None, None, None


def full_type_name(cls) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def input_lists(inputs: dict, input_types: dict, node_id: str, upstream=None, prompt=None,
                extra_data=None) -> dict:
    """Every input as the list a node function is mapped over (execution.get_input_data).

    A link gives the upstream output list, `upstream(node_id)` -> that node's output lists; without `upstream`
    (IS_CHANGED, VALIDATE_INPUTS) or when the output is missing a link gives (None,). A declared constant gives
    [value]; undeclared constants are dropped (undeclared links are not, as in ComfyUI). Hidden inputs are
    filled in: PROMPT is {} when no prompt is given, as ComfyUI does before execution.
    """
    extra_data = extra_data or {}
    values = {}
    for name, value in inputs.items():
        _, category, options = input_info(input_types, name)
        if is_link(value) and not (options or {}).get("rawLink", False):
            outputs = upstream(value[0]) if upstream is not None else None
            values[name] = outputs[value[1]] if outputs is not None and value[1] < len(outputs) else (None,)
        elif category is not None:
            values[name] = [value]
    hidden = {"PROMPT": prompt if prompt is not None else {}, "DYNPROMPT": None,
              "EXTRA_PNGINFO": extra_data.get("extra_pnginfo"), "UNIQUE_ID": node_id,
              "AUTH_TOKEN_COMFY_ORG": extra_data.get("auth_token_comfy_org"),
              "API_KEY_COMFY_ORG": extra_data.get("api_key_comfy_org")}
    for name, kind in input_types.get("hidden", {}).items():
        if kind in hidden:
            values[name] = [hidden[kind]]
    return values


def map_over_lists(fn, values: dict, input_is_list: bool = False, allow_interrupt: bool = False) -> list:
    """Call fn once per index of the longest input list, shorter lists repeating their last item; once with
    the whole lists for INPUT_IS_LIST; once with no arguments when there are no values at all
    (execution._async_map_node_over_list). With allow_interrupt, a pending cancel stops before each call."""

    def call(kwargs):
        if allow_interrupt:
            comfy_adapter.check_interrupt()
        result = fn(**kwargs)
        return asyncio.run(result) if inspect.isawaitable(result) else result

    if input_is_list:
        return [call(values)]
    n = max((len(v) for v in values.values()), default=0)
    if n == 0:
        return [call({})]
    return [call({k: v[i if len(v) > i else -1] for k, v in values.items()}) for i in range(n)]


def merge_returns(results: list, cls) -> tuple[list, dict]:
    """(output lists, ui) from the return values of the mapped calls (execution.get_output_from_returns)."""
    tuples, uis = [], []
    for r in results:
        if isinstance(r, dict):
            if "expand" in r:
                raise NotImplementedError("node expansion ({'expand': ...}) is not supported by the headless "
                                          "executor")
            if "ui" in r:
                uis.append(r["ui"])
            if "result" in r:
                tuples.append(r["result"])
        else:
            tuples.append(r)
    for t in tuples:
        if not isinstance(t, (tuple, list)):
            raise TypeError(f"{cls.__name__}.{cls.FUNCTION} returned {type(t).__name__}: return a tuple matching "
                            f"RETURN_TYPES {tuple(cls.RETURN_TYPES)}, or {{'ui': ..., 'result': (...)}}")
    outputs = []
    if tuples:
        is_list = getattr(cls, "OUTPUT_IS_LIST", [False] * len(tuples[0]))
        for i, listed in zip(range(len(tuples[0])), is_list):
            outputs.append([x for t in tuples for x in t[i]] if listed else [t[i] for t in tuples])
    # ComfyUI takes the keys of the first ui and concatenates the values: ui values must be lists.
    ui = {k: [y for u in uis for y in u[k]] for k in uis[0]} if uis else {}
    return outputs, ui


# --------------------------------------------------------------------------------------------
# Cache keys (comfy_execution.caching.CacheKeySetInputSignature)
# --------------------------------------------------------------------------------------------
def hashable(value):
    """A hashable stand-in for an input value. Anything else than plain data (tensors, objects) becomes a fresh
    object that equals nothing, so a signature holding it never hits the cache, as ComfyUI's Unhashable."""
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    if isinstance(value, Mapping):
        return frozenset((hashable(k), hashable(v)) for k, v in value.items())
    if isinstance(value, Sequence):
        return tuple(hashable(v) for v in value)
    return object()


def ordered_ancestors(prompt: dict, node_id: str) -> dict:
    """Ancestor id -> index, depth first through the inputs in sorted name order: the numbering lets a
    signature refer to ancestors without their ids, so an identical sub-graph under other ids hits the cache."""
    order = {}

    def visit(nid):
        if nid not in prompt:
            return
        inputs = prompt[nid]["inputs"]
        for key in sorted(inputs):
            if is_link(inputs[key]) and inputs[key][0] not in order:
                order[inputs[key][0]] = len(order)
                visit(inputs[key][0])

    visit(node_id)
    return order


def _uses_node_id(cls, input_types) -> bool:
    return bool(getattr(cls, "NOT_IDEMPOTENT", False)) or "UNIQUE_ID" in input_types.get("hidden", {}).values()


def _is_output(cls) -> bool:
    return getattr(cls, "OUTPUT_NODE", False) is True


def _is_interrupt(e: BaseException) -> bool:
    # Inside ComfyUI check_interrupt raises ComfyUI's own InterruptProcessingException.
    return isinstance(e, (comfy_adapter.Interrupted, KeyboardInterrupt)) or \
        type(e).__name__ == "InterruptProcessingException"


def _format_value(x):
    return x if x is None or isinstance(x, (int, float, bool, str)) else str(x)


def _now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------------
# Order of execution (comfy_execution.graph.ExecutionList)
# --------------------------------------------------------------------------------------------
def _add_node(prompt, start, pending, blocking, waiting_on, is_cached):
    """Add `start` and its not-yet-cached ancestors: depth first with a stack, as ComfyUI's add_node, because the
    insertion order decides which of several ready nodes runs first."""
    stack, links = [start], []
    while stack:
        nid = stack.pop()
        if nid in pending:
            continue
        if nid not in prompt:
            raise KeyError(f"node {nid} is linked to but not in the prompt: validate the prompt first")
        pending[nid] = True
        blocking[nid], waiting_on[nid] = set(), set()
        for value in prompt[nid]["inputs"].values():
            if is_link(value) and not is_cached(value[0]):
                stack.append(value[0])
                links.append((value[0], nid))
    for src, dst in links:
        blocking[src].add(dst)
        waiting_on[dst].add(src)


def _pick(ready: list, blocking: dict, is_output) -> str:
    """ComfyUI's ux_friendly_pick_node: a preview shows up as soon as it can."""
    for nid in ready:
        if is_output(nid):
            return nid
    for nid in ready:
        if any(is_output(b) for b in blocking[nid]):
            return nid
    for nid in ready:
        if any(is_output(b2) for b in blocking[nid] for b2 in blocking[b]):
            return nid
    return ready[0]


def _blamed_for_cycle(pending: dict, waiting_on: dict) -> str:
    """First node left once every node that waits on nothing pending is dissolved (get_nodes_in_cycle)."""
    left = {nid: set(waiting_on[nid]) & set(pending) for nid in pending}
    while free := [nid for nid, w in left.items() if not w]:
        for nid in free:
            del left[nid]
        for w in left.values():
            w.difference_update(free)
    return next(iter(left))


# --------------------------------------------------------------------------------------------
class Executor:
    """One per session: keeps outputs, UI results and node instances between runs, as a ComfyUI server."""

    def __init__(self, classes: dict):
        self.classes = classes
        self.outputs: dict = {}   # signature -> output lists
        self.ui: dict = {}        # signature -> merged ui dict
        self.objects: dict = {}   # (node id, class_type) -> node instance
        self._types: dict = {}    # class_type -> INPUT_TYPES(), read once per run (model lists scan folders)

    def _input_types(self, class_type) -> dict:
        if class_type not in self._types:
            self._types[class_type] = self.classes[class_type].INPUT_TYPES()
        return self._types[class_type]

    def run(self, prompt: dict, extra_data: dict | None = None, outputs: list | None = None,
            on_event=None) -> dict:
        """Run what `outputs` (default: every OUTPUT_NODE) needs. Returns {"outputs": {node id: ui},
        "executed": [ids run now], "cached": [ids whose result was reused]}. Raises NodeExecutionError or
        ExecutionInterrupted after emitting execution_error / execution_interrupted."""
        emit = on_event or (lambda event, data: None)
        extra_data = extra_data or {}
        comfy_adapter.clear_cancel()  # as nodes.interrupt_processing(False) at the start of every prompt
        unknown = sorted({n.get("class_type") for n in prompt.values()} - set(self.classes), key=str)
        if unknown:
            raise ValueError(f"unknown node types {unknown}: validate the prompt first")
        self._types = {}
        emit("execution_start", {"timestamp": _now_ms()})
        current = {"node": None}
        comfy_adapter.set_progress_hook(lambda node, value, total: emit(
            "progress", {"value": value, "max": total, "node": node or current["node"]}))
        try:
            with torch.inference_mode():
                return self._run(prompt, extra_data, outputs, emit, current)
        finally:
            comfy_adapter.set_progress_hook(None)
            emit("executing", {"node": None})

    # ----------------------------------------------------------------------------------------
    def _is_changed(self, prompt, node_id):
        """IS_CHANGED on the class with the constant inputs only (links are None); raising means NaN."""
        cls = self.classes[prompt[node_id]["class_type"]]
        if not hasattr(cls, "IS_CHANGED"):
            return False
        values = input_lists(prompt[node_id]["inputs"], self._input_types(prompt[node_id]["class_type"]), node_id)
        try:
            return map_over_lists(cls.IS_CHANGED, values, getattr(cls, "INPUT_IS_LIST", False))
        except Exception as e:  # noqa: BLE001 - ComfyUI: any failure means "always changed"
            logging.warning("WARNING: %s", e)
            return float("nan")

    def _signatures(self, prompt) -> dict:
        is_changed = {}

        def immediate(nid, order):
            if nid not in prompt:
                return [float("nan")]  # a link to a missing node can never be cached
            node = prompt[nid]
            cls = self.classes[node["class_type"]]
            if nid not in is_changed:
                is_changed[nid] = self._is_changed(prompt, nid)
            sig = [node["class_type"], is_changed[nid]]
            if _uses_node_id(cls, self._input_types(node["class_type"])):
                sig.append(nid)
            for key in sorted(node["inputs"]):
                value = node["inputs"][key]
                sig.append((key, ("ANCESTOR", order[value[0]], value[1]) if is_link(value) else value))
            return sig

        signatures = {}
        for nid in prompt:
            order = ordered_ancestors(prompt, nid)
            signatures[nid] = hashable([immediate(nid, order)] + [immediate(a, order) for a in order])
        return signatures

    def _forget_unused(self, prompt, signatures):
        """The classic cache keeps only what the current prompt can use."""
        used = set(signatures.values())
        self.outputs = {k: v for k, v in self.outputs.items() if k in used}
        self.ui = {k: v for k, v in self.ui.items() if k in used}
        keep = {(nid, node["class_type"]) for nid, node in prompt.items()}
        self.objects = {k: v for k, v in self.objects.items() if k in keep}

    def _run(self, prompt, extra_data, outputs, emit, current):
        signatures = self._signatures(prompt)
        self._forget_unused(prompt, signatures)
        cached = [nid for nid in prompt if signatures[nid] in self.outputs]
        emit("execution_cached", {"nodes": cached, "timestamp": _now_ms()})

        def is_output(nid):
            return _is_output(self.classes[prompt[nid]["class_type"]])

        if outputs is None:
            outputs = [nid for nid in prompt if is_output(nid)]
        pending, blocking, waiting_on = {}, {}, {}
        for nid in outputs:
            _add_node(prompt, nid, pending, blocking, waiting_on, lambda n: signatures.get(n) in self.outputs)

        executed = []
        while pending:
            ready = [nid for nid in pending if not waiting_on[nid]]
            if not ready:
                nid = _blamed_for_cycle(pending, waiting_on)
                error = DependencyCycleError("Dependency cycle detected")
                emit("execution_error", {"node_id": nid, "node_type": prompt[nid]["class_type"],
                                         "executed": list(executed), "exception_message": str(error),
                                         "exception_type": "graph.DependencyCycleError", "traceback": [],
                                         "current_inputs": [], "timestamp": _now_ms()})
                raise NodeExecutionError(nid, prompt[nid]["class_type"], error)
            nid = _pick(ready, blocking, is_output)
            current["node"] = nid
            if self._execute(prompt, nid, signatures, extra_data, executed, emit):
                executed.append(nid)
            del pending[nid]
            for dst in blocking.pop(nid):
                waiting_on[dst].discard(nid)

        emit("execution_success", {"timestamp": _now_ms()})
        ui = {nid: self.ui[signatures[nid]] for nid in prompt if signatures[nid] in self.ui}
        return {"outputs": ui, "executed": executed, "cached": cached}

    def _execute(self, prompt, nid, signatures, extra_data, executed, emit) -> bool:
        """Run one node unless its signature is cached (then only its UI is re-sent). True when it ran."""
        sig = signatures[nid]
        class_type = prompt[nid]["class_type"]
        if sig in self.outputs:
            emit("executed", {"node": nid, "display_node": nid, "output": self.ui.get(sig)})
            return False
        emit("executing", {"node": nid, "display_node": nid})
        cls = self.classes[class_type]
        values = None
        try:
            values = input_lists(prompt[nid]["inputs"], self._input_types(class_type), nid,
                                 upstream=lambda src: self.outputs.get(signatures.get(src)),
                                 prompt=prompt, extra_data=extra_data)
            obj = self.objects.get((nid, class_type))
            if obj is None:
                obj = self.objects[(nid, class_type)] = cls()
            results = map_over_lists(getattr(obj, cls.FUNCTION), values, getattr(cls, "INPUT_IS_LIST", False),
                                     allow_interrupt=True)
            outputs, ui = merge_returns(results, cls)
        except BaseException as e:  # noqa: BLE001 - every failure is reported with the node that raised it
            if _is_interrupt(e):
                emit("execution_interrupted", {"node_id": nid, "node_type": class_type, "executed": list(executed),
                                               "timestamp": _now_ms()})
                raise ExecutionInterrupted(nid, class_type) from e
            if not isinstance(e, Exception):
                raise  # SystemExit and the like are not node failures
            details = {
                "node_id": nid, "node_type": class_type, "executed": list(executed),
                "exception_message": str(e), "exception_type": full_type_name(type(e)),
                "traceback": traceback.format_tb(sys.exc_info()[2]),
                "current_inputs": {k: [_format_value(x) for x in v] for k, v in (values or {}).items()},
                "current_outputs": [n for n in prompt if signatures[n] in self.outputs]}
            emit("execution_error", {**details, "timestamp": _now_ms()})
            raise NodeExecutionError(nid, class_type, e, details) from e
        if ui:
            self.ui[sig] = ui
            emit("executed", {"node": nid, "display_node": nid, "output": ui})
        self.outputs[sig] = outputs
        return True
