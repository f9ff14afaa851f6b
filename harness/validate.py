"""Validate an API prompt exactly as ComfyUI's server does on POST /prompt (execution.validate_prompt).

The result carries the HTTP status and the JSON body the server would answer, so a prompt that passes here
is accepted by a real server and one that fails gets the same error types, messages and details. Values
are coerced in place (INT int(), FLOAT float(), STRING str(), BOOLEAN bool(), `__value__` unwrapped), as
the server stores them. format_report() turns the answer into a report that says how to fix each error.
"""
from __future__ import annotations

import copy
import inspect
import sys
import traceback

NO_PROMPT = {"http_status": 400, "response": {
    "error": {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
              "extra_info": {}}, "node_errors": {}}, "outputs_to_execute": [], "validated_prompt": None}


def validate_request_body(body: dict, node_defs: dict, classes: dict | None = None) -> dict:
    """POST /prompt semantics for a whole request body ({"prompt": ..., "client_id": ...})."""
    if "prompt" not in body:
        return copy.deepcopy(NO_PROMPT)
    return validate_prompt(body["prompt"], node_defs, classes, body.get("partial_execution_targets"))


def _input_info(node_def: dict, name: str):
    spec = node_def.get("input", {})
    for category in ("required", "optional", "hidden"):
        if name in spec.get(category, {}):
            entry = spec[category][name]
            if not isinstance(entry, (list, tuple)):
                entry = [entry]
            return entry[0], category, (entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {})
    return None, None, None


def _type_ok(received, expected) -> bool:
    """comfy_execution.validation.validate_node_input (non-strict)."""
    if not received != expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    r = {t.strip() for t in received.split(",")}
    e = {t.strip() for t in expected.split(",")}
    return "*" in r or "*" in e or bool(r & e)


def _exc_info(ex: BaseException) -> tuple[str, list]:
    typ = type(ex)
    name = typ.__qualname__ if typ.__module__ == "builtins" else f"{typ.__module__}.{typ.__qualname__}"
    return name, traceback.format_tb(ex.__traceback__)


def _validate_inputs_fn(classes, class_type):
    cls = (classes or {}).get(class_type)
    fn = getattr(cls, "VALIDATE_INPUTS", None) if cls is not None else None
    if fn is None:
        return None, [], False
    spec = inspect.getfullargspec(fn)
    args = [a for a in spec.args if a != "cls"]
    return fn, args, spec.varkw is not None


def _validate_node(prompt, node_id, validated, node_defs, classes, visiting):
    if node_id in validated:
        return validated[node_id]
    if node_id in visiting:
        # A dependency cycle. The real server recurses until RecursionError, and while the stack unwinds every
        # node of the cycle ends up as (False, []): invalid, with no error to report (README: dependency_cycle).
        return (False, [], node_id)
    visiting.add(node_id)
    try:
        return _validate_node_body(prompt, node_id, validated, node_defs, classes, visiting)
    finally:
        visiting.discard(node_id)


def _validate_node_body(prompt, node_id, validated, node_defs, classes, visiting):
    inputs = prompt[node_id]["inputs"]
    class_type = prompt[node_id]["class_type"]
    node_def = node_defs[class_type]
    spec = node_def.get("input", {})
    valid_inputs = list(spec.get("required", {})) + [k for k in spec.get("optional", {})
                                                     if k not in spec.get("required", {})]
    fn, fn_args, fn_kwargs = _validate_inputs_fn(classes, class_type)
    errors, valid, received_types = [], True, {}

    for x in valid_inputs:
        input_type, category, extra = _input_info(node_def, x)
        if x not in inputs:
            if category == "required":
                errors.append({"type": "required_input_missing", "message": "Required input is missing",
                               "details": f"{x}", "extra_info": {"input_name": x}})
            continue
        val = inputs[x]
        info = [input_type, extra]
        if isinstance(val, list):
            if len(val) != 2:
                errors.append({"type": "bad_linked_input",
                               "message": "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                               "details": f"{x}", "extra_info": {"input_name": x, "input_config": info,
                                                                 "received_value": val}})
                continue
            o_id = val[0]
            o_class_type = prompt[o_id]["class_type"]          # KeyError for a missing node, as the server
            received = tuple(node_defs[o_class_type]["output"])[val[1]]  # IndexError "tuple index out of range"
            received_types[x] = received
            if "input_types" not in fn_args and not _type_ok(received, input_type):
                details = f"{x}, received_type({received}) mismatch input_type({input_type})"
                errors.append({"type": "return_type_mismatch", "message": "Return type mismatch between linked nodes",
                               "details": details, "extra_info": {"input_name": x, "input_config": info,
                                                                  "received_type": received, "linked_node": val}})
                continue
            try:
                r = _validate_node(prompt, o_id, validated, node_defs, classes, visiting)
                if r[0] is False:
                    valid = False
                    continue
            except Exception as ex:  # noqa: BLE001 - the server reports any exception of an inner node
                valid = False
                name, tb = _exc_info(ex)
                validated[o_id] = (False, [{
                    "type": "exception_during_inner_validation", "message": "Exception when validating inner node",
                    "details": str(ex), "extra_info": {"input_name": x, "input_config": info,
                                                       "exception_message": str(ex), "exception_type": name,
                                                       "traceback": tb, "linked_node": val}}], o_id)
                continue
        else:
            try:
                if isinstance(val, dict) and "__value__" in val:
                    val = val["__value__"]
                    inputs[x] = val
                if input_type == "INT":
                    val = int(val)
                elif input_type == "FLOAT":
                    val = float(val)
                elif input_type == "STRING":
                    val = str(val)
                elif input_type == "BOOLEAN":
                    val = bool(val)
                inputs[x] = val
            except Exception as ex:  # noqa: BLE001 - any conversion failure
                errors.append({"type": "invalid_input_type",
                               "message": f"Failed to convert an input value to a {input_type} value",
                               "details": f"{x}, {val}, {ex}", "extra_info": {
                                   "input_name": x, "input_config": info, "received_value": val,
                                   "exception_message": str(ex)}})
                continue
            if x in fn_args or fn_kwargs:
                continue  # the node validates this input itself
            if "min" in extra and val < extra["min"]:
                errors.append({"type": "value_smaller_than_min",
                               "message": f"Value {val} smaller than min of {extra['min']}", "details": f"{x}",
                               "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                continue
            if "max" in extra and val > extra["max"]:
                errors.append({"type": "value_bigger_than_max",
                               "message": f"Value {val} bigger than max of {extra['max']}", "details": f"{x}",
                               "extra_info": {"input_name": x, "input_config": info, "received_value": val}})
                continue
            if isinstance(input_type, list) or input_type == "COMBO":
                options = input_type if isinstance(input_type, list) else extra.get("options", [])
                if val not in options:
                    config = info
                    if len(options) > 20:  # the server does not echo long lists (model files)
                        listing, config = f"(list of length {len(options)})", None
                    else:
                        listing = str(options)
                    errors.append({"type": "value_not_in_list", "message": "Value not in list",
                                   "details": f"{x}: '{val}' not in {listing}",
                                   "extra_info": {"input_name": x, "input_config": config, "received_value": val}})
                    continue

    if fn is not None and (fn_args or fn_kwargs):
        kwargs = {k: v for k, v in inputs.items() if not isinstance(v, list) and (k in fn_args or fn_kwargs)}
        if "input_types" in fn_args:
            kwargs["input_types"] = received_types
        try:
            ret = fn(**kwargs)
        except Exception as ex:  # noqa: BLE001 - a raising VALIDATE_INPUTS is a failed validation
            ret = f"{type(ex).__name__}: {ex}"
        if ret is not True:
            for x in kwargs:
                details = f"{x}" + (f" - {ret}" if ret is not False else "")
                errors.append({"type": "custom_validation_failed", "message": "Custom validation failed for node",
                               "details": details, "extra_info": {"input_name": x}})

    ret = (False, errors, node_id) if errors or valid is not True else (True, [], node_id)
    validated[node_id] = ret
    return ret


def validate_prompt(prompt: dict, node_defs: dict, classes: dict | None = None, partial_targets=None) -> dict:
    """The server's verdict: {"http_status", "response", "outputs_to_execute", "validated_prompt"}.

    `prompt` is not modified: validated_prompt is a coerced copy (what the server stores in its history).
    """
    prompt = copy.deepcopy(prompt)

    def fail(error, outputs=(), node_errors=None):
        return {"http_status": 400, "response": {"error": error, "node_errors": node_errors or {}},
                "outputs_to_execute": list(outputs), "validated_prompt": prompt}

    if not isinstance(prompt, dict):
        return fail({"type": "invalid_prompt", "message": "The prompt is not a JSON object of nodes",
                     "details": type(prompt).__name__, "extra_info": {}})
    outputs = []
    for x, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return fail({"type": "invalid_prompt", "message": "Cannot execute because a node is missing the "
                         "class_type property.", "details": f"Node ID '#{x}'", "extra_info": {}})
        node.setdefault("inputs", {})
        if node["class_type"] not in node_defs:
            return fail({"type": "invalid_prompt", "message": f"Cannot execute because node {node['class_type']} "
                         "does not exist.", "details": f"Node ID '#{x}'", "extra_info": {}})
        if node_defs[node["class_type"]].get("output_node") is True:
            if partial_targets is None or x in partial_targets:
                outputs.append(x)
    if not outputs:
        return fail({"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                     "extra_info": {}})

    good, errors, node_errors, validated = [], [], {}, {}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10000))
    try:
        for o in outputs:
            try:
                valid, reasons, _ = _validate_node(prompt, o, validated, node_defs, classes, set())
            except Exception as ex:  # noqa: BLE001 - reported against the output node, as the server does
                name, tb = _exc_info(ex)
                valid, reasons = False, [{"type": "exception_during_validation",
                                          "message": "Exception when validating node", "details": str(ex),
                                          "extra_info": {"exception_type": name, "traceback": tb}}]
                validated[o] = (False, reasons, o)
            if valid is True:
                good.append(o)
                continue
            errors.append((o, reasons))
            for node_id, (ok, rs, _) in validated.items():
                # Nodes that are invalid only because something upstream is are not listed (no reasons).
                if ok is not True and rs:
                    if node_id not in node_errors:
                        node_errors[node_id] = {"errors": rs, "dependent_outputs": [],
                                                "class_type": prompt[node_id]["class_type"]}
                    node_errors[node_id]["dependent_outputs"].append(o)
    finally:
        sys.setrecursionlimit(limit)

    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, rs in errors for e in rs)
        return fail({"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                     "details": details, "extra_info": {}}, good, node_errors)
    return {"http_status": 200, "response": {"node_errors": node_errors}, "outputs_to_execute": good,
            "validated_prompt": prompt}


# --------------------------------------------------------------------------------------------
# Human report
# --------------------------------------------------------------------------------------------
def _fix(err: dict) -> str:
    t, extra = err["type"], err.get("extra_info", {})
    name = extra.get("input_name", err.get("details", ""))
    config = extra.get("input_config") or [None, {}]
    kind = config[0] if config else None
    if t == "required_input_missing":
        return f"required input '{name}' is missing: connect it (or give it a value)"
    if t == "value_smaller_than_min":
        return f"'{name}' = {extra.get('received_value')} is below the minimum {config[1].get('min')}: " \
               f"set it to at least {config[1].get('min')}"
    if t == "value_bigger_than_max":
        return f"'{name}' = {extra.get('received_value')} is above the maximum {config[1].get('max')}: " \
               f"set it to at most {config[1].get('max')}"
    if t == "value_not_in_list":
        options = kind if isinstance(kind, list) else (config[1] or {}).get("options")
        if options == []:
            return f"'{name}' = '{extra.get('received_value')}' but there is nothing to choose from: put the " \
                   f"file in the model folder this input lists (see the README) and run again"
        shown = f" Choices: {', '.join(map(str, options[:10]))}{' ...' if len(options) > 10 else ''}." \
            if options else ""
        return f"'{name}' = '{extra.get('received_value')}' is not one of the choices.{shown}"
    if t == "invalid_input_type":
        return f"'{name}' = {extra.get('received_value')!r} cannot be read as {kind}: give a {kind} value"
    if t == "return_type_mismatch":
        return f"'{name}' is linked to an output of type {extra.get('received_type')} but takes {kind}: " \
               f"link an output of type {kind}"
    if t == "bad_linked_input":
        return f"'{name}' holds {extra.get('received_value')!r}: a link must be [\"node id\", output index]"
    if t in ("exception_during_validation", "exception_during_inner_validation"):
        return f"a link points to a node or output that does not exist ({extra.get('exception_type')}: " \
               f"{err.get('details')}): reconnect the input"
    if t == "custom_validation_failed":
        return f"{err.get('details')}"
    return f"{err.get('message')}: {err.get('details')}"


def format_report(result: dict) -> str:
    """Every error of the verdict, one line each: node id, class, input and what to do about it."""
    body = result["response"]
    lines = []
    error = body.get("error")
    if error and error["type"] != "prompt_outputs_failed_validation":
        lines.append(f"error: {error['message']} {error.get('details', '')}".rstrip())
        if error["type"] == "invalid_prompt" and "does not exist" in error["message"]:
            lines.append("  fix: install the pack that provides this node, or pass --object-info with the "
                         "/object_info JSON of a ComfyUI server that has it")
        if error["type"] == "prompt_no_outputs":
            lines.append("  fix: add an output node (e.g. OpenSora Save Video) and connect it")
    elif error:
        lines.append("error: the prompt failed validation")
    for node_id, entry in body.get("node_errors", {}).items():
        for err in entry["errors"]:
            text = _fix(err)
            if err["type"] == "custom_validation_failed" and " - " in text:
                text = text.split(" - ", 1)[1]  # the node's own message; the server repeats it per input
            line = f"  node {node_id} ({entry['class_type']}): {text}"
            if line not in lines:
                lines.append(line)
    if error and error["type"] == "prompt_outputs_failed_validation" and not body.get("node_errors"):
        lines.append("  the graph has a dependency cycle or an invalid link upstream of every output: check the "
                     "links")
    return "\n".join(lines)
