"""Validate an API prompt exactly as ComfyUI's server does on POST /prompt (execution.validate_prompt and
validate_inputs, server.py post_prompt).

The verdict carries the HTTP status and the JSON body the server would answer (less the run-specific prompt_id
and number), so a prompt that passes here is accepted by a real server, and one that fails gets the same error
types, messages, details and extra_info. Node types are known from /object_info entries (`node_defs`); the
pack's own classes (`classes`) add their VALIDATE_INPUTS. Values are coerced in place as the server stores them
(INT int(), FLOAT float(), STRING str(), BOOLEAN bool(), `{"__value__": ...}` unwrapped).

Where the versions differ the newer rule is used: combo membership is checked for both the classic list form and
("COMBO", {"options": [...]}) (0.3.64 only checked the list form), and links typed "*" match anything.
Core nodes' own VALIDATE_INPUTS (LoadImage's file check, ...) are not known from /object_info, so their combos
are checked as plain lists. A prompt that is not an object of nodes gets a 400 invalid_prompt (the server fails
with a 500). Checked against the server's own validate_prompt run on random prompts: the one known difference is
a dependency cycle through a node whose list widget ({"__value__": [...]}) the server unwraps once per level of
its runaway recursion.

format_report() turns the verdict into a report that says how to fix each error.
"""
from __future__ import annotations

import copy
import inspect
import re
import sys
import traceback
from dataclasses import dataclass, field

from .execute import full_type_name, input_info, input_lists, map_over_lists

COERCE = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}
LONG_LIST = 20  # the server does not echo combo lists longer than this (scanned model files)


def _error(type_, message, details, **extra_info) -> dict:
    return {"type": type_, "message": message, "details": details, "extra_info": extra_info}


# --------------------------------------------------------------------------------------------
# One input
# --------------------------------------------------------------------------------------------
def types_match(received, expected) -> bool:
    """comfy_execution.validation.validate_node_input (non-strict): equal, "*" on either side, overlapping
    comma-separated unions, or a custom node's list of options into a COMBO."""
    if received == expected:
        return True
    if received == "*" or expected == "*":
        return True
    if isinstance(received, list) and expected == "COMBO":
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    r = {t.strip() for t in received.split(",")}
    e = {t.strip() for t in expected.split(",")}
    return "*" in r or "*" in e or bool(r & e)


def combo_options(input_type, options: dict):
    """The choices of a combo input in either encoding, or None when the input is not a combo."""
    if isinstance(input_type, list):
        return input_type
    if input_type == "COMBO":
        return options.get("options", [])
    return None


def check_constant(inputs: dict, name: str, input_type, options: dict, own_check: bool) -> dict | None:
    """Coerce inputs[name] in place, then check min, max and combo membership (skipped when the node's
    VALIDATE_INPUTS takes this input). Returns the first error, or None."""
    info = [input_type, options]
    val = inputs[name]
    try:
        if isinstance(val, dict) and "__value__" in val:  # how the frontend sends a list-valued widget
            val = inputs[name] = val["__value__"]
        if isinstance(input_type, str) and input_type in COERCE:
            val = inputs[name] = COERCE[input_type](val)
    except Exception as ex:  # noqa: BLE001 - any conversion failure, as the server
        return _error("invalid_input_type", f"Failed to convert an input value to a {input_type} value",
                      f"{name}, {val}, {ex}", input_name=name, input_config=info, received_value=val,
                      exception_message=str(ex))
    if own_check:
        return None
    if "min" in options and val < options["min"]:
        return _error("value_smaller_than_min", f"Value {val} smaller than min of {options['min']}", f"{name}",
                      input_name=name, input_config=info, received_value=val)
    if "max" in options and val > options["max"]:
        return _error("value_bigger_than_max", f"Value {val} bigger than max of {options['max']}", f"{name}",
                      input_name=name, input_config=info, received_value=val)
    choices = combo_options(input_type, options)
    if choices is not None and val not in choices:
        listing, config = str(choices), info
        if len(choices) > LONG_LIST:
            listing, config = f"(list of length {len(choices)})", None
        return _error("value_not_in_list", "Value not in list", f"{name}: '{val}' not in {listing}",
                      input_name=name, input_config=config, received_value=val)
    return None


def custom_validation(cls, node_id: str, inputs: dict, received_types: dict) -> list[dict]:
    """Call the class's VALIDATE_INPUTS with the inputs it names (links are None, as the server calls it before
    anything runs; hidden inputs too); anything but True fails every input it was given. Exceptions propagate."""
    args, has_kwargs = _own_check_args(cls)
    values = input_lists(inputs, cls.INPUT_TYPES(), node_id)
    chosen = {k: v for k, v in values.items() if k in args or has_kwargs}
    if "input_types" in args:
        chosen["input_types"] = [received_types]
    results = map_over_lists(cls.VALIDATE_INPUTS, chosen, getattr(cls, "INPUT_IS_LIST", False))
    return [_error("custom_validation_failed", "Custom validation failed for node",
                   f"{name}" + ("" if r is False else f" - {r}"), input_name=name)
            for name in chosen for r in results if r is not True]


def _own_check_args(cls) -> tuple[list, bool]:
    """Parameter names of VALIDATE_INPUTS (with cls, as getfullargspec gives them) and whether it has **kwargs."""
    fn = getattr(cls, "VALIDATE_INPUTS", None) if cls is not None else None
    if fn is None:
        return [], False
    spec = inspect.getfullargspec(fn)
    return spec.args, spec.varkw is not None


# --------------------------------------------------------------------------------------------
# One node and its ancestors (execution.validate_inputs)
# --------------------------------------------------------------------------------------------
@dataclass
class _Run:
    prompt: dict
    node_defs: dict
    classes: dict
    validated: dict = field(default_factory=dict)  # node id -> (ok, errors, node id)
    visiting: set = field(default_factory=set)


def _validate_node(run: _Run, node_id: str):
    if node_id in run.validated:
        return run.validated[node_id]
    if node_id in run.visiting:
        # A dependency cycle. The server recurses until RecursionError, and as the stack unwinds every node of
        # the cycle is stored as (False, []): invalid with nothing to report (recorded case dependency_cycle).
        return (False, [], node_id)
    run.visiting.add(node_id)
    try:
        result = _validate_inputs(run, node_id)
    finally:
        run.visiting.discard(node_id)
    run.validated[node_id] = result
    return result


def _validate_inputs(run: _Run, node_id: str):
    inputs = run.prompt[node_id]["inputs"]
    class_type = run.prompt[node_id]["class_type"]
    declared = run.node_defs[class_type].get("input", {})
    cls = run.classes.get(class_type)
    own_args, own_kwargs = _own_check_args(cls)
    names = list(declared.get("required", {})) + [k for k in declared.get("optional", {})
                                                  if k not in declared.get("required", {})]
    errors, upstream_ok, received_types = [], True, {}

    for name in names:
        input_type, category, options = input_info(declared, name)
        info = [input_type, options]
        if name not in inputs:
            if category == "required":
                errors.append(_error("required_input_missing", "Required input is missing", f"{name}",
                                     input_name=name))
            continue
        val = inputs[name]
        if not isinstance(val, list):
            error = check_constant(inputs, name, input_type, options, name in own_args or own_kwargs)
            if error:
                errors.append(error)
            continue
        if len(val) != 2:
            errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, "
                                 "slot_index]", f"{name}", input_name=name, input_config=info, received_value=val))
            continue
        # A missing node, a non-string id or a bad slot raises here, as on the server (KeyError, IndexError).
        source_id = val[0]
        received = tuple(run.node_defs[run.prompt[source_id]["class_type"]]["output"])[val[1]]
        received_types[name] = received
        if "input_types" not in own_args and not types_match(received, input_type):
            errors.append(_error("return_type_mismatch", "Return type mismatch between linked nodes",
                                 f"{name}, received_type({received}) mismatch input_type({input_type})",
                                 input_name=name, input_config=info, received_type=received, linked_node=val))
            continue
        try:
            if _validate_node(run, source_id)[0] is False:
                upstream_ok = False  # the upstream node carries its own errors
        except Exception as ex:  # noqa: BLE001 - the server blames the upstream node, with this input's name
            upstream_ok = False
            run.validated[source_id] = (False, [_error(
                "exception_during_inner_validation", "Exception when validating inner node", str(ex),
                input_name=name, input_config=info, exception_message=str(ex),
                exception_type=full_type_name(type(ex)), traceback=traceback.format_tb(ex.__traceback__),
                linked_node=val)], source_id)

    if cls is not None and (own_args or own_kwargs):
        errors += custom_validation(cls, node_id, inputs, received_types)
    return (False, errors, node_id) if errors or not upstream_ok else (True, [], node_id)


# --------------------------------------------------------------------------------------------
# The whole prompt (execution.validate_prompt, server.py post_prompt)
# --------------------------------------------------------------------------------------------
def _verdict(status, body, outputs, prompt, node_defs) -> dict:
    nodes = prompt.values() if isinstance(prompt, dict) else ()
    used = {n["class_type"] for n in nodes if isinstance(n, dict) and isinstance(n.get("class_type"), str)}
    return {"http_status": status, "response": copy.deepcopy(body), "outputs_to_execute": list(outputs),
            "validated_prompt": prompt,
            # for format_report: the definitions of the prompt's node types (types, options, tooltips, outputs)
            "node_defs": {ct: node_defs[ct] for ct in used if ct in node_defs}}


def validate_request_body(body, node_defs: dict, classes: dict | None = None) -> dict:
    """POST /prompt for a whole request body ({"prompt": ..., "client_id": ...})."""
    if not isinstance(body, dict) or "prompt" not in body:
        error = _error("no_prompt", "No prompt provided", "No prompt provided")
        return _verdict(400, {"error": error, "node_errors": {}}, [], None, node_defs)
    return validate_prompt(body["prompt"], node_defs, classes, body.get("partial_execution_targets"))


def validate_prompt(prompt: dict, node_defs: dict, classes: dict | None = None, partial_targets=None) -> dict:
    """The server's verdict: {"http_status", "response", "outputs_to_execute", "validated_prompt"} (+ the
    "node_defs" of the prompt's node types, for format_report). `prompt` itself is not modified: validated_prompt is a
    coerced copy, what the server stores in its history and executes."""
    prompt = copy.deepcopy(prompt)

    def invalid(error):
        return _verdict(400, {"error": error, "node_errors": {}}, [], prompt, node_defs)

    if not isinstance(prompt, dict):  # the server answers 500 here; say what is wrong instead
        return invalid(_error("invalid_prompt", "The prompt must be a JSON object of nodes by id",
                              type(prompt).__name__))
    outputs = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            return invalid(_error("invalid_prompt", "Cannot execute because a node is missing the class_type "
                                  "property.", f"Node ID '#{node_id}'"))
        if not isinstance(node["class_type"], str) or node["class_type"] not in node_defs:
            return invalid(_error("invalid_prompt", f"Cannot execute because node {node['class_type']} does "
                                  "not exist.", f"Node ID '#{node_id}'"))
        if node_defs[node["class_type"]].get("output_node") is True:
            if partial_targets is None or node_id in partial_targets:
                outputs.append(node_id)
    if not outputs:
        return invalid(_error("prompt_no_outputs", "Prompt has no outputs", ""))

    run = _Run(prompt, node_defs, classes or {})
    good, failed, node_errors = [], [], {}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))  # deep chains validate recursively, as on the server
    try:
        for o in outputs:
            try:
                ok, reasons, _ = _validate_node(run, o)
            except Exception as ex:  # noqa: BLE001 - blamed on the output node, as the server does
                ok, reasons = False, [_error("exception_during_validation", "Exception when validating node",
                                             str(ex), exception_type=full_type_name(type(ex)),
                                             traceback=traceback.format_tb(ex.__traceback__))]
                run.validated[o] = (False, reasons, o)
            if ok is True:
                good.append(o)
                continue
            failed.append((o, reasons))
            # Every node validated so far with errors of its own is listed for this output, even one that an
            # earlier output reached (the server does the same, so dependent_outputs depends on output order).
            # Nodes invalid only because of something upstream carry no errors and are not listed.
            for nid, (node_ok, node_reasons, _) in run.validated.items():
                if node_ok is not True and node_reasons:
                    entry = node_errors.setdefault(nid, {"errors": node_reasons, "dependent_outputs": [],
                                                         "class_type": prompt[nid]["class_type"]})
                    entry["dependent_outputs"].append(o)
    finally:
        sys.setrecursionlimit(limit)

    if not good:
        details = "\n".join(f"{e['message']}: {e['details']}" for _, reasons in failed for e in reasons)
        error = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details)
        return _verdict(400, {"error": error, "node_errors": node_errors}, good, prompt, node_defs)
    return _verdict(200, {"node_errors": node_errors}, good, prompt, node_defs)


# --------------------------------------------------------------------------------------------
# Human report
# --------------------------------------------------------------------------------------------
WIDGET_TYPES = {"INT": "a whole number", "FLOAT": "a number", "STRING": "a text", "BOOLEAN": "true or false"}


def _widget_value(input_type, options) -> str | None:
    """What a widget input takes, in words; None for an input that only takes links."""
    if combo_options(input_type, options) is not None:
        return "one of its choices"
    return WIDGET_TYPES.get(input_type) if isinstance(input_type, str) else None


def _a(word) -> str:
    return f"{'an' if str(word)[:1] in 'AEIOU' else 'a'} {word}"


def _folder_hint(options: dict) -> str:
    """Where model files for this input go, when the definition says so (a 'models/<folder>' in its tooltip)."""
    folders = re.findall(r"models/[\w./-]*\w", options.get("tooltip", "") or "")
    return " or ".join(dict.fromkeys(folders))


def _declared(result, class_type, name):
    spec = result.get("node_defs", {}).get(class_type, {}).get("input", {})
    return input_info(spec, name)


def _fix_combo(value, choices, options) -> str:
    where = _folder_hint(options)
    if not choices:
        text = f"'{value}' is not available: no file is installed for this input"
        return text + (f"; put it in {where} and run again" if where else
                       "; put the file in the model folder this loader reads and run again")
    shown = ", ".join(map(str, choices[:10])) + (f", ... ({len(choices) - 10} more)" if len(choices) > 10 else "")
    text = f"'{value}' is not one of the choices. Choices: {shown}"
    return text + (f". A model file must be in {where}" if where else "")


def _bad_links(prompt: dict, node_id: str, node_defs: dict) -> list[str]:
    """Why the links of a node make the server raise: a missing node, an id that is not a string, a bad slot."""
    problems = []
    inputs = prompt.get(node_id, {}).get("inputs", {})
    for name, val in (inputs.items() if isinstance(inputs, dict) else []):
        if not isinstance(val, list) or len(val) != 2:
            continue
        src, slot = val
        if not isinstance(src, str):
            problems.append(f"input '{name}' links to node {src!r}: node ids must be strings, write \"{src}\"")
        elif src not in prompt:
            problems.append(f"input '{name}' links to node '{src}', which is not in the prompt: reconnect it")
        else:
            outs = node_defs.get(prompt[src].get("class_type"), {}).get("output")
            if outs is not None and (not isinstance(slot, int) or not -len(outs) <= slot < len(outs)):
                problems.append(f"input '{name}' links to output {slot!r} of node '{src}', which has "
                                f"{len(outs)} output(s) (0-based): pick an existing output")
    return problems


def _fix(result, node_id, class_type, err) -> list[str]:
    """Fix-it sentences for one error of one node."""
    t, extra = err["type"], err.get("extra_info", {})
    name = extra.get("input_name", "")
    input_type, _, options = _declared(result, class_type, name)
    options = options if isinstance(options, dict) else {}
    value = extra.get("received_value")
    if t == "required_input_missing":
        if input_type is None:
            return [f"required input '{name}' is missing: connect it or give it a value"]
        if _widget_value(input_type, options):
            default = f" (default {options['default']!r})" if "default" in options else ""
            return [f"required input '{name}' has no value: give it {_widget_value(input_type, options)}{default}"]
        return [f"required input '{name}' is not connected: link {_a(input_type)} output to it"]
    if t == "value_smaller_than_min":
        return [f"'{name}' = {value} is below the minimum {options.get('min')}: set it to at least "
                f"{options.get('min')}"]
    if t == "value_bigger_than_max":
        return [f"'{name}' = {value} is above the maximum {options.get('max')}: set it to at most "
                f"{options.get('max')}"]
    if t == "value_not_in_list":
        return [f"'{name}' = " + _fix_combo(value, combo_options(input_type, options) or [], options)]
    if t == "invalid_input_type":
        return [f"'{name}' = {value!r} cannot be read as {input_type}: give it "
                f"{_widget_value(input_type, options) or _a(input_type) + ' value'}"]
    if t == "return_type_mismatch":
        src = extra.get("linked_node", ["?", "?"])
        return [f"'{name}' is linked to output {src[1]} of node {src[0]}, which gives {extra.get('received_type')}, "
                f"but it takes {input_type}: link {_a(input_type)} output instead"]
    if t == "bad_linked_input":
        return [f"'{name}' holds {value!r}, which is neither a value nor a link: a link is [\"node id\", "
                f"output index]"]
    if t in ("exception_during_validation", "exception_during_inner_validation"):
        problems = _bad_links(result.get("validated_prompt") or {}, node_id, result.get("node_defs", {}))
        return problems or [f"validating it raised {extra.get('exception_type')}: {err.get('details')}"]
    if t == "custom_validation_failed":
        # The node's own message, which the server repeats for every input VALIDATE_INPUTS takes.
        details = err.get("details", "")
        return [details.split(" - ", 1)[1] if " - " in details else f"the node's own check rejected '{name}'"]
    return [f"{err.get('message')}: {err.get('details')}"]


def _find_cycle(prompt: dict) -> list[str]:
    """One dependency cycle of the prompt, as node ids, or []."""
    state, path = {}, []

    def visit(nid):
        state[nid] = "open"
        path.append(nid)
        for val in prompt[nid].get("inputs", {}).values():
            if isinstance(val, list) and len(val) == 2 and isinstance(val[0], str) and val[0] in prompt:
                if state.get(val[0]) == "open":
                    return path[path.index(val[0]):] + [val[0]]
                if val[0] not in state and (found := visit(val[0])):
                    return found
        state[nid] = "done"
        path.pop()
        return []

    for nid in prompt:
        if nid not in state and (found := visit(nid)):
            return found
    return []


def format_report(result: dict) -> str:
    """Every error of a verdict, one line each: node id, class_type, input and how to fix it."""
    body = result["response"]
    error = body.get("error")
    node_errors = body.get("node_errors", {})
    lines = []
    if error is None and node_errors:
        failed = sorted({o for e in node_errors.values() for o in e["dependent_outputs"]}, key=str)
        lines.append(f"output node(s) {', '.join(failed)} failed validation and will not run; "
                     f"{', '.join(result['outputs_to_execute'])} will")
    elif error and error["type"] == "prompt_outputs_failed_validation":
        lines.append("error: the prompt failed validation (no output node can run)")
    elif error:
        details = error.get("details", "")
        lines.append(f"error: {error['message']}" + (f" {details}" if details and details != error["message"] else ""))
        fixes = {"No prompt provided": "send the API prompt under the key 'prompt' of the request body",
                 "Prompt has no outputs": "add an output node (a Save or Preview node) and connect it",
                 "class_type property": "give every node a class_type",
                 "does not exist": "install the node pack that provides this node, or pass --object-info with "
                                   "the /object_info JSON of a ComfyUI server that has it"}
        fix = next((f for key, f in fixes.items() if key in error["message"]), None)
        if fix:
            lines.append(f"  fix: {fix}")
    for node_id, entry in node_errors.items():
        for err in entry["errors"]:
            for text in _fix(result, node_id, entry["class_type"], err):
                line = f"  node {node_id} ({entry['class_type']}): {text}"
                if line not in lines:
                    lines.append(line)
    if error and error["type"] == "prompt_outputs_failed_validation" and not node_errors:
        cycle = _find_cycle(result.get("validated_prompt") or {})
        if cycle:
            lines.append(f"  nodes {' -> '.join(cycle)} form a dependency cycle (ComfyUI reports no error for it): "
                         "remove one of these links")
        else:
            lines.append("  no node reported an error of its own: check the links upstream of every output")
    return "\n".join(lines)
