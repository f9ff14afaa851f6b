"""The server side of a Run: validate_prompt (the rules recorded from 0.3.64 in shared/golden/comfy_frontend),
the queue and history, and the executor that calls node functions the way ComfyUI does."""
import heapq
import inspect
import threading
import time
import traceback

import comfy.model_management
import nodes


def _error(type_, message, details="", **extra):
    return {"type": type_, "message": message, "details": details, "extra_info": extra}


def _is_link(value):
    return isinstance(value, list)


def _input_spec(class_def):
    spec = class_def.INPUT_TYPES()
    return spec.get("required", {}), spec.get("optional", {})


def _types_match(received, wanted):
    if received == "*" or wanted == "*" or received == wanted:
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return False
    got, want = {t.strip() for t in received.split(",")}, {t.strip() for t in wanted.split(",")}
    return bool(got & want)


COERCE = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}


def validate_inputs(prompt, node_id, validated):
    """(ok, errors, node_id), memoised in `validated`; an upstream failure fails this node without an error of
    its own, as ComfyUI reports it."""
    if node_id in validated:
        return validated[node_id]
    node = prompt[node_id]
    class_def = nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
    required, optional = _input_spec(class_def)
    validate_fn = getattr(class_def, "VALIDATE_INPUTS", None)
    custom_inputs = set(inspect.signature(validate_fn).parameters) if validate_fn else set()
    errors, ok = [], True
    for name, info in {**required, **optional}.items():
        if name not in node["inputs"]:
            if name in required:
                errors.append(_error("required_input_missing", "Required input is missing", name,
                                     input_name=name))
            continue
        value, type_input, options = node["inputs"][name], info[0], (info[1] if len(info) > 1 else {})
        if _is_link(value):
            if len(value) != 2:
                errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of "
                                     "[node_id, slot_index]", name, input_name=name, received_value=value))
                continue
            try:
                origin = prompt[value[0]]
                received = nodes.NODE_CLASS_MAPPINGS[origin["class_type"]].RETURN_TYPES[value[1]]
                if name not in custom_inputs and not _types_match(received, type_input):
                    errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                         f"{name}, received_type({received}) mismatch input_type({type_input})",
                                         input_name=name, received_type=received, linked_node=value))
                    continue
                up_ok, _, _ = validate_inputs(prompt, value[0], validated)
                ok = ok and up_ok
            except Exception as e:  # noqa: BLE001 - reported as the server does
                errors.append(_error("exception_during_validation", "Exception when validating node", str(e),
                                     exception_type=type(e).__name__, traceback=traceback.format_tb(e.__traceback__),
                                     linked_node=value))
            continue
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
        if isinstance(type_input, str) and type_input in COERCE:
            try:
                value = COERCE[type_input](value)
                node["inputs"][name] = value
            except Exception:  # noqa: BLE001
                errors.append(_error("invalid_input_type", f"Failed to convert an input value to a {type_input} "
                                     "value", f"{name}, {value}", input_name=name, received_value=value))
                continue
        if name in custom_inputs:
            continue
        if "min" in options and value < options["min"]:
            errors.append(_error("value_smaller_than_min", f"Value {value} smaller than min of {options['min']}",
                                 name, input_name=name, received_value=value))
        elif "max" in options and value > options["max"]:
            errors.append(_error("value_bigger_than_max", f"Value {value} bigger than max of {options['max']}",
                                 name, input_name=name, received_value=value))
        combo = type_input if isinstance(type_input, list) else (
            options.get("options") if type_input == "COMBO" else None)
        if combo is not None and value not in combo:
            shown = f"(list of length {len(combo)})" if len(combo) > 20 else combo
            errors.append(_error("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {shown}",
                                 input_name=name, received_value=value))
    if validate_fn is not None and not errors:
        args = {k: (None if _is_link(v) else v) for k, v in node["inputs"].items() if k in custom_inputs}
        result = validate_fn(**args)
        if result is not True:
            errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                 f"{', '.join(args)} - {result}"))
    validated[node_id] = (ok and not errors, errors, node_id)
    return validated[node_id]


def validate_prompt(prompt):
    """(valid, error, outputs_to_execute, node_errors) as execution.validate_prompt returns them."""
    outputs = []
    for node_id, node in prompt.items():
        if "class_type" not in node:
            return False, _error("invalid_prompt", "Cannot execute because a node is missing the class_type "
                                 "property.", f"Node ID '#{node_id}'"), [], {}
        if node["class_type"] not in nodes.NODE_CLASS_MAPPINGS:
            return False, _error("invalid_prompt", f"Cannot execute because node {node['class_type']} does not "
                                 "exist.", f"Node ID '#{node_id}'"), [], {}
        if getattr(nodes.NODE_CLASS_MAPPINGS[node["class_type"]], "OUTPUT_NODE", False):
            outputs.append(node_id)
    if not outputs:
        return False, _error("prompt_no_outputs", "Prompt has no outputs"), [], {}
    validated, good, node_errors = {}, [], {}
    for out in outputs:
        try:
            ok, _, _ = validate_inputs(prompt, out, validated)
        except Exception as e:  # noqa: BLE001
            ok = False
            validated[out] = (False, [_error("exception_during_validation", "Exception when validating node",
                                             str(e), exception_type=type(e).__name__)], out)
        if ok:
            good.append(out)
    for node_id, (ok, errors, _) in validated.items():
        if errors:
            node_errors[node_id] = {"errors": errors, "dependent_outputs": outputs,
                                    "class_type": prompt[node_id]["class_type"]}
    if good:
        return True, None, good, node_errors
    details = "\n".join(f"{e['message']}: {e['details']}" for o in outputs for e in validated[o][1])
    return False, _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details), [], \
        node_errors


class PromptQueue:
    def __init__(self, server):
        self.server, self.queue, self.history, self.running = server, [], {}, {}
        self.cond = threading.Condition()
        server.prompt_queue = self

    def put(self, item):
        with self.cond:
            heapq.heappush(self.queue, item)
            self.server.queue_updated()
            self.cond.notify()

    def get(self):
        with self.cond:
            while not self.queue:
                self.cond.wait()
            item = heapq.heappop(self.queue)
            self.running[item[1]] = item
            return item

    def task_done(self, item, outputs, status):
        with self.cond:
            self.running.pop(item[1], None)
            self.history[item[1]] = {"prompt": list(item), "outputs": outputs, "status": status, "meta": {}}
            self.server.queue_updated()

    def get_tasks_remaining(self):
        with self.cond:
            return len(self.queue) + len(self.running)

    def get_current_queue(self):
        with self.cond:
            return [list(i) for i in self.running.values()], [list(i) for i in self.queue]

    def get_history(self, prompt_id=None, max_items=None):
        with self.cond:
            if prompt_id is not None:
                return {prompt_id: self.history[prompt_id]} if prompt_id in self.history else {}
            items = list(self.history.items())
            return dict(items[-max_items:] if max_items else items)


class PromptExecutor:
    def __init__(self, server):
        self.server = server

    def _send(self, event, data):
        self.server.send_sync(event, data, self.server.client_id)

    def execute(self, prompt, prompt_id, extra_data, execute_outputs):
        """Runs the outputs' upstream graphs; returns (ui outputs, status) for the history."""
        comfy.model_management.interrupt_current_processing(False)
        self.server.client_id = extra_data.get("client_id")
        self.server.last_prompt_id = prompt_id
        messages = []

        def send(event, data):
            messages.append((event, data))
            self._send(event, data)

        send("execution_start", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        send("execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        results, ui_outputs, objects, executed = {}, {}, {}, []

        def run(node_id):
            if node_id in results:
                return
            node = prompt[node_id]
            class_def = nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
            for value in node["inputs"].values():
                if _is_link(value):
                    run(value[0])
            required, optional = _input_spec(class_def)
            hidden = class_def.INPUT_TYPES().get("hidden", {})
            kwargs = {}
            for name, value in node["inputs"].items():
                if name in required or name in optional:
                    kwargs[name] = results[value[0]][value[1]] if _is_link(value) else value
            for name, kind in hidden.items():
                kwargs[name] = {"PROMPT": prompt, "EXTRA_PNGINFO": extra_data.get("extra_pnginfo"),
                                "UNIQUE_ID": node_id}.get(kind)
            if hasattr(class_def, "IS_CHANGED"):
                consts = {k: v for k, v in node["inputs"].items() if not _is_link(v)}
                params = inspect.signature(class_def.IS_CHANGED).parameters
                if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
                    consts = {k: v for k, v in consts.items() if k in params}
                class_def.IS_CHANGED(**consts)
            self.server.last_node_id = node_id
            self._send("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
            obj = objects.setdefault(node_id, class_def())
            out = getattr(obj, class_def.FUNCTION)(**kwargs)
            if isinstance(out, dict):
                ui = out.get("ui")
                out = out.get("result", ())
                if ui is not None:
                    ui_outputs[node_id] = ui
                    self._send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                            "prompt_id": prompt_id})
            results[node_id] = tuple(out or ())
            executed.append(node_id)

        current = None
        try:
            for out in execute_outputs:
                current = out
                run(out)
        except comfy.model_management.InterruptProcessingException:
            send("execution_interrupted", {"prompt_id": prompt_id, "node_id": self.server.last_node_id,
                                           "node_type": prompt[self.server.last_node_id]["class_type"],
                                           "executed": executed})
            return ui_outputs, {"status_str": "error", "completed": False, "messages": messages}
        except Exception as e:  # noqa: BLE001 - reported to the client as ComfyUI reports it
            node_id = self.server.last_node_id or current
            send("execution_error", {"prompt_id": prompt_id, "node_id": node_id,
                                     "node_type": prompt[node_id]["class_type"], "executed": executed,
                                     "exception_message": str(e), "exception_type": type(e).__module__ + "." +
                                     type(e).__name__, "traceback": traceback.format_tb(e.__traceback__),
                                     "current_inputs": {}, "current_outputs": {}})
            return ui_outputs, {"status_str": "error", "completed": False, "messages": messages}
        finally:
            self.server.last_node_id = None
        self._send("executing", {"node": None, "prompt_id": prompt_id})
        send("execution_success", {"prompt_id": prompt_id, "timestamp": int(time.time() * 1000)})
        return ui_outputs, {"status_str": "success", "completed": True, "messages": messages}
