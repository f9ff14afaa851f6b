"""Execute an API prompt the way ComfyUI's execution.py does, without a server.

Only the nodes the output nodes need run, in dependency order (ComfyUI's "ux friendly" pick), under
torch.inference_mode(). One Executor keeps its outputs between runs: a node whose class, constant inputs,
IS_CHANGED value and ancestors are unchanged is not run again (ComfyUI's input-signature cache).
"""
from __future__ import annotations

import inspect
import math
import time

import torch

from .. import comfy_adapter


class NodeExecutionError(RuntimeError):
    def __init__(self, node_id: str, class_type: str, original: BaseException):
        self.node_id, self.class_type, self.original = node_id, class_type, original
        super().__init__(f"node {node_id} ({class_type}) failed: {type(original).__name__}: {original}")


class ExecutionInterrupted(RuntimeError):
    pass


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def _declared(cls) -> dict:
    spec = cls.INPUT_TYPES()
    return {**spec.get("required", {}), **spec.get("optional", {})}, spec.get("hidden", {})


def _nan_safe(value):
    """IS_CHANGED results enter the cache key; NaN never equals itself, so it always re-runs (as ComfyUI)."""
    return ("nan", time.monotonic_ns()) if isinstance(value, float) and math.isnan(value) else value


class Executor:
    def __init__(self, classes: dict):
        self.classes = classes
        self.outputs: dict[str, tuple] = {}      # node id -> (signature, output lists, ui)
        self.objects: dict[tuple, object] = {}   # (node id, class_type) -> instance, reused as ComfyUI does

    # ----------------------------------------------------------------------------------------
    def _is_changed(self, node_id, node):
        cls = self.classes[node["class_type"]]
        fn = getattr(cls, "IS_CHANGED", None)
        if fn is None:
            return None
        consts = {k: v for k, v in node["inputs"].items() if not is_link(v)}
        try:
            params = inspect.signature(fn).parameters
            if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
                consts = {k: v for k, v in consts.items() if k in params}
            return _nan_safe(fn(**consts))
        except Exception:  # noqa: BLE001 - ComfyUI treats a failing IS_CHANGED as "always changed"
            return ("failed", time.monotonic_ns())

    def _signature(self, prompt, node_id, memo):
        if node_id in memo:
            return memo[node_id]
        node = prompt[node_id]
        cls = self.classes[node["class_type"]]
        declared, hidden = _declared(cls)
        parts = [node["class_type"], repr(self._is_changed(node_id, node))]
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value):
                parts.append((name, "link", self._signature(prompt, value[0], memo), value[1]))
            else:
                parts.append((name, repr(value)))
        if getattr(cls, "NOT_IDEMPOTENT", False) or "UNIQUE_ID" in hidden.values():
            parts.append(("id", node_id))
        memo[node_id] = repr(parts)
        return memo[node_id]

    # ----------------------------------------------------------------------------------------
    def _needed(self, prompt, outputs) -> list[str]:
        seen, order = set(), []

        def visit(nid, stack):
            if nid in seen:
                return
            if nid in stack:
                raise ValueError(f"dependency cycle through node {nid}")
            stack.add(nid)
            for value in prompt[nid]["inputs"].values():
                if is_link(value):
                    visit(value[0], stack)
            stack.discard(nid)
            seen.add(nid)
            order.append(nid)

        for nid in outputs:
            visit(nid, set())
        return order

    def _pick_order(self, prompt, needed, outputs) -> list[str]:
        """ComfyUI's ux_friendly_pick_node: among ready nodes prefer an output node, then a node feeding an
        output node, then one two links away, else the first ready one."""
        deps = {nid: {v[0] for v in prompt[nid]["inputs"].values() if is_link(v)} for nid in needed}
        users = {nid: set() for nid in needed}
        for nid, ds in deps.items():
            for d in ds:
                users[d].add(nid)
        output_set = set(outputs)
        done, order = set(), []
        pending = list(needed)
        while pending:
            ready = [n for n in pending if deps[n] <= done]

            def rank(n):
                if n in output_set:
                    return 0
                if users[n] & output_set:
                    return 1
                if any(users[u] & output_set for u in users[n]):
                    return 2
                return 3

            pick = min(ready, key=lambda n: (rank(n), pending.index(n)))
            pending.remove(pick)
            done.add(pick)
            order.append(pick)
        return order

    # ----------------------------------------------------------------------------------------
    def _call(self, node_id, node, inputs_by_name, extra_data, prompt):
        cls = self.classes[node["class_type"]]
        declared, hidden = _declared(cls)
        for name, kind in hidden.items():
            if kind == "PROMPT":
                inputs_by_name[name] = [prompt]
            elif kind == "EXTRA_PNGINFO":
                inputs_by_name[name] = [extra_data.get("extra_pnginfo")]
            elif kind == "UNIQUE_ID":
                inputs_by_name[name] = [node_id]
        key = (node_id, node["class_type"])
        if key not in self.objects:
            self.objects[key] = cls()
        obj = self.objects[key]
        fn = getattr(obj, cls.FUNCTION)
        if getattr(cls, "INPUT_IS_LIST", False):
            calls = [inputs_by_name]
        else:
            n = max((len(v) for v in inputs_by_name.values()), default=1)
            n = 0 if any(len(v) == 0 for v in inputs_by_name.values()) else n
            calls = [{k: v[min(i, len(v) - 1)] for k, v in inputs_by_name.items()} for i in range(n)]
        results, uis = [], []
        for kwargs in calls:
            comfy_adapter.check_interrupt()
            ret = fn(**kwargs)
            if isinstance(ret, dict):
                if "ui" in ret:
                    uis.append(ret["ui"])
                ret = ret.get("result", ())
            results.append(tuple(ret) if ret is not None else ())
        n_out = len(cls.RETURN_TYPES)
        is_list = list(getattr(cls, "OUTPUT_IS_LIST", [False] * n_out))
        outputs = []
        for i in range(n_out):
            if is_list[i]:
                outputs.append([x for r in results for x in r[i]])
            else:
                outputs.append([r[i] for r in results])
        ui = {}
        for u in uis:
            for k, v in u.items():
                ui.setdefault(k, []).extend(v if isinstance(v, (list, tuple)) else [v])
        return outputs, ui

    def run(self, prompt: dict, extra_data: dict | None = None, outputs: list | None = None, on_event=None) -> dict:
        emit = on_event or (lambda event, data: None)
        extra_data = extra_data or {}
        comfy_adapter.clear_cancel()
        if outputs is None:
            outputs = [nid for nid, n in prompt.items()
                       if getattr(self.classes[n["class_type"]], "OUTPUT_NODE", False)]
        needed = self._needed(prompt, outputs)
        order = self._pick_order(prompt, needed, outputs)
        memo = {}
        signatures = {nid: self._signature(prompt, nid, memo) for nid in needed}
        cached = [nid for nid in order if nid in self.outputs and self.outputs[nid][0] == signatures[nid]]
        emit("execution_start", {"timestamp": time.time()})
        emit("execution_cached", {"nodes": cached})
        executed, result_ui = [], {}
        current = {"node": None}

        def progress_hook(node, value, total):
            emit("progress", {"value": value, "max": total, "node": node or current["node"]})

        previous_hook = comfy_adapter._progress_hook
        comfy_adapter.set_progress_hook(progress_hook)
        try:
            with torch.inference_mode():
                for nid in order:
                    node = prompt[nid]
                    if nid in cached:
                        ui = self.outputs[nid][2]
                    else:
                        current["node"] = nid
                        emit("executing", {"node": nid})
                        inputs = {}
                        for name, value in node["inputs"].items():
                            if is_link(value):
                                inputs[name] = self.outputs[value[0]][1][value[1]]
                            else:
                                inputs[name] = [value]
                        declared, _ = _declared(self.classes[node["class_type"]])
                        inputs = {k: v for k, v in inputs.items() if k in declared}
                        try:
                            outs, ui = self._call(nid, node, inputs, extra_data, prompt)
                        except (comfy_adapter.Interrupted, KeyboardInterrupt) as e:
                            emit("execution_interrupted", {"node_id": nid, "node_type": node["class_type"],
                                                           "executed": executed})
                            raise ExecutionInterrupted(f"cancelled while running node {nid}") from e
                        except Exception as e:  # noqa: BLE001 - reported with the node that raised it
                            if comfy_adapter.IN_COMFY and type(e).__name__ == "InterruptProcessingException":
                                raise
                            emit("execution_error", {"node_id": nid, "node_type": node["class_type"],
                                                     "exception_message": str(e),
                                                     "exception_type": type(e).__name__, "executed": executed})
                            raise NodeExecutionError(nid, node["class_type"], e) from e
                        self.outputs[nid] = (signatures[nid], outs, ui)
                        executed.append(nid)
                    if ui:
                        result_ui[nid] = ui
                        emit("executed", {"node": nid, "output": ui})
        finally:
            comfy_adapter.set_progress_hook(previous_hook)
        for stale in [nid for nid in self.outputs if nid not in signatures]:
            del self.outputs[stale]  # as ComfyUI's classic cache: keep only what this prompt uses
        emit("execution_success", {})
        emit("executing", {"node": None})
        return {"outputs": result_ui, "executed": executed, "cached": cached}
