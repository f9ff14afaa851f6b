"""UI workflow (what ComfyUI saves) -> API prompt (what its Run button posts), as the frontend converts it.

Reproduces app.graphToPrompt() of ComfyUI's frontend 1.27.10 and 1.35.9. Rule numbers refer to
../shared/golden/comfy_frontend/README.md. The conversion runs in the frontend's own order:

  load      link repair (R15), type renames (R14), node instances built from their definitions: widget
            lists with the frontend-only control/upload widgets (R4, R14), input slots, saved values,
            subgraph instances with their promoted widgets (R11), PrimitiveNode widgets (R10), value patches
  apply     every PrimitiveNode copies its value into the widgets it feeds (R10)
  emit      per executable node: widget values (dynamic prompts R12, filename_prefix R13, __value__),
            then every input link resolved through Reroutes (R6), bypassed nodes (R7, R8) and subgraph
            boundaries (R11); links to nodes left out of the prompt are dropped last (R9)

apply_widget_controls() is what app.queuePrompt() does around a queue: control_after_generate (R16).
"""
from __future__ import annotations

import copy
import math
import random
import re
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

SUBGRAPH_INPUT_ID = -10   # the origin id of links from a subgraph's input node
MUTED, BYPASSED = 2, 4    # node modes
JS_SAFE_MAX = 1125899906842624  # 2**50: controls cap random and clamped values here (R16)
UNDEFINED = object()      # a JS `undefined` value: JSON.stringify drops the key


class ConversionError(Exception):
    """The frontend would refuse to convert this graph (its graphToPrompt throws), or a node is unknown."""


def _is_1_35(frontend_version: str) -> bool:
    return tuple(int(x) for x in frontend_version.split(".")[:2]) >= (1, 35)


# --------------------------------------------------------------------------------------------------------
# What object_info cannot tell: the frontend's own tables, by node class (kept as small as possible)
# --------------------------------------------------------------------------------------------------------
VIRTUAL_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
VIRTUAL_TITLES = {"Note": "Note", "MarkdownNote": "Markdown Note", "PrimitiveNode": "Primitive", "Reroute": "Reroute"}

# app.loadGraphData renames these types before anything else (R14).
TYPE_RENAMES = {"T2IAdapterLoader": "ControlNetLoader", "ConditioningAverage ": "ConditioningAverage",
                "SDV_img2vid_Conditioning": "SVD_img2vid_Conditioning"}
TYPE_RENAMES_1_35 = {"Load3DAnimation": "Load3D", "Preview3DAnimation": "Preview3D"}

# Default titles come from the frontend's bundled English translations, which were generated from an older
# object_info: these are the core types whose translation differs from today's display_name (checked against
# frontend_nodes_<ver>.json for every type).
TITLES_1_27 = {"ImageBlend": "Image Blend", "ImageBlur": "Image Blur", "ImageQuantize": "Image Quantize",
               "ImageScaleToTotalPixels": "Scale Image to Total Pixels", "ImageSharpen": "Image Sharpen"}
TITLES_1_35 = {"ByteDanceSeedreamNode": "ByteDance Seedream 4",
               "FluxKontextMultiReferenceLatentMethod": "FluxKontextMultiReferenceLatentMethod",
               "Mahiro": "Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)"}

# Extensions that add an input to a node definition by class name (beforeRegisterNodeDef hooks).
AUDIO_UI_CLASSES = {"LoadAudio", "SaveAudio", "PreviewAudio", "SaveAudioMP3", "SaveAudioOpus"}
PREVIEW_3D_INPUTS = {"Preview3D": "PREVIEW_3D", "Preview3DAnimation": "PREVIEW_3D_ANIMATION", "SaveGLB": "PREVIEW_3D"}

# filename_prefix gets %Node.widget% / %date:...% replaced for these classes (Comfy.SaveImageExtraOutput, R13).
SAVE_NODES = {"SaveImage", "SaveAnimatedWEBP", "SaveWEBM", "SaveAudio", "SaveGLB", "SaveAnimatedPNG", "CLIPSave",
              "VAESave", "ModelSave", "LoraSave", "SaveLatent"}


def _widget(name, ftype, *, input_type=None, options=None, default=None, prompt=True, workflow=True,
            fixed=False, role=None, target=None, choices=None):
    """One frontend widget. prompt: goes into the API prompt (options.serialize); workflow: takes a
    widgets_values slot on load (widget.serialize); fixed: a DOM widget without a setter, whose value never
    changes from `default`."""
    return {"name": name, "type": ftype, "input_type": input_type, "options": options or {}, "default": default,
            "serialize": prompt, "workflow": workflow, "fixed": fixed, "role": role, "control": role == "control",
            "target": target, "choices": choices}


def _class_extra_widgets(node_type: str, fv: str) -> list:
    """Widgets that an extension's nodeCreated adds to one class (they follow the definition's widgets)."""
    if node_type == "WebcamCapture":  # a capture button; its serializeValue returns undefined
        return [_widget("waiting for camera...", "button", default=UNDEFINED, fixed=True)]
    if node_type == "PreviewAny":  # the text shown after execution, empty until then
        text = _widget("preview", "customtext", input_type="STRING", default="", workflow=False, fixed=True)
        if not _is_1_35(fv):
            return [text]
        return [_widget("preview", "MARKDOWN", input_type="MARKDOWN", default="", workflow=False, fixed=True), text,
                _widget("previewMode", "toggle", input_type="BOOLEAN", default=False)]
    if node_type == "CustomCombo" and _is_1_35(fv):  # the first editable option line
        return [_widget("option0", "string", input_type="STRING", default="")]
    return []


# --------------------------------------------------------------------------------------------------------
# Widgets and input slots of a node type, from its /object_info entry (R4, R14)
# --------------------------------------------------------------------------------------------------------
CORE_WIDGET_TYPES = {"INT", "FLOAT", "BOOLEAN", "STRING", "MARKDOWN", "COMBO", "IMAGEUPLOAD", "COLOR",
                     "IMAGECOMPARE", "CHART", "GALLERIA", "TEXTAREA"}
CORE_WIDGET_TYPES_1_27 = {"FILEUPLOAD", "TREESELECT", "MULTISELECT", "SELECTBUTTON"}
# Registered by core extensions (getCustomWidgets).
EXTENSION_WIDGET_TYPES = {"WEBCAM", "AUDIO_UI", "AUDIOUPLOAD", "AUDIO_RECORD", "LOAD_3D", "PREVIEW_3D"}
EXTENSION_WIDGET_TYPES_1_27 = {"LOAD_3D_ANIMATION", "PREVIEW_3D_ANIMATION"}


def _widget_types(fv: str) -> set:
    if _is_1_35(fv):
        return CORE_WIDGET_TYPES | EXTENSION_WIDGET_TYPES | {"COMFY_DYNAMICCOMBO_V3"}
    return CORE_WIDGET_TYPES | CORE_WIDGET_TYPES_1_27 | EXTENSION_WIDGET_TYPES | EXTENSION_WIDGET_TYPES_1_27


def _nz(value, default):
    """JavaScript's `value ?? default`."""
    return default if value is None else value


def _spec_parts(entry):
    """(type, options, combo choices or None) of an /object_info input entry, in the frontend's V2 terms."""
    if not isinstance(entry, (list, tuple)):
        entry = [entry]
    kind = entry[0] if entry else None
    opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    if isinstance(kind, list):
        return "COMBO", opts, kind
    if kind == "COMBO":
        return "COMBO", opts, list(opts.get("options") or [])
    return kind, opts, None


def _input_specs(node_def: dict) -> list[dict]:
    """The inputs the frontend builds a node from, in creation order: required then optional following
    input_order, then the rest, after the extensions' additions (upload buttons, audio/3D views)."""
    spec = node_def.get("input") or {}
    required = dict(spec.get("required") or {})
    name = node_def.get("name")
    upload = next((k for k, v in required.items() if _is_media_upload(v)), None)
    if upload is not None:  # Comfy.UploadImage
        required["upload"] = ["IMAGEUPLOAD", {**_spec_parts(required[upload])[1], "imageInputName": upload}]
    if name in AUDIO_UI_CLASSES:  # Comfy.AudioWidget (registered before Comfy.UploadAudio)
        required["audioUI"] = ["AUDIO_UI", {}]
    if "audio" in required and _spec_parts(required["audio"])[1].get("audio_upload") is True:
        required["upload"] = ["AUDIOUPLOAD", {}]  # Comfy.UploadAudio
    if name in PREVIEW_3D_INPUTS:
        required["image"] = [PREVIEW_3D_INPUTS[name]]
    inputs = {}
    for cat, entries in (("required", required), ("optional", spec.get("optional") or {})):
        for key, entry in entries.items():
            kind, opts, choices = _spec_parts(entry)
            inputs[key] = {"name": key, "type": kind, "options": opts, "choices": choices,
                           "optional": cat == "optional"}
    order = node_def.get("input_order")
    if not order:
        return list(inputs.values())
    out = [inputs[k] for k in order.get("required") or [] if k in inputs and not inputs[k]["optional"]]
    out += [inputs[k] for k in order.get("optional") or [] if k in inputs and inputs[k]["optional"]]
    seen = {s["name"] for s in out}
    return out + [s for s in inputs.values() if s["name"] not in seen]


def _is_media_upload(entry) -> bool:
    if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[1], dict):
        return False
    opts = entry[1]
    flagged = any(opts.get(k) is True for k in ("image_upload", "video_upload", "animated_image_upload"))
    return flagged and (isinstance(entry[0], list) or entry[0] == "COMBO")


def _control_name(default: str, opts: dict, explicit=None) -> str:
    """addValueControlWidgets' getName: the control widgets can be renamed by the input's options."""
    if explicit:
        return explicit
    if isinstance(opts.get(default), str):
        return opts[default]
    if opts.get("control_prefix"):
        return f"{opts['control_prefix']} {default}"
    return default


def _control_widgets(opts: dict, target: int, combo: bool, default: str = "randomize", name=None) -> list:
    """control_after_generate (+ control_filter_list for a combo) driving widget number `target`."""
    modes = ["fixed", "increment", "decrement", "randomize"] + (["increment-wrap"] if combo else [])
    out = [_widget(_control_name("control_after_generate", opts, name), "combo", default=default, prompt=False,
                   role="control", target=target, choices=modes)]
    if combo:
        out.append(_widget(_control_name("control_filter_list", opts), "string", default="", prompt=False,
                           role="filter", target=target))
    return out


def _number_widget(spec: dict, index: int, fv: str) -> list:
    kind, opts, name = spec["type"], spec["options"], spec["name"]
    display = opts.get("display")
    ftype = "slider" if display == "slider" else "knob" if display == "knob" else "number"
    step = _nz(opts.get("step"), 1 if kind == "INT" else 0.5)
    wopts = {"min": _nz(opts.get("min"), 0), "max": _nz(opts.get("max"), 2048), "step2": step}
    if kind == "FLOAT":
        precision = max(0, -math.floor(math.log10(step))) if step and step > 0 else 0
        wopts["round"] = 10 ** -precision if precision and not opts.get("round") else opts.get("round")
        wopts["precision"] = precision
    out = [_widget(name, ftype, input_type=kind, options={**opts, **wopts}, default=_nz(opts.get("default"), 0))]
    cag = opts.get("control_after_generate")
    if kind == "INT":  # a seed gets a control even without the flag (legacy convention)
        wants = cag if cag is not None else name in ("seed", "noise_seed")
    else:
        wants = bool(cag) and _is_1_35(fv)
    if wants:
        out += _control_widgets(opts, index, combo=False, name=cag if isinstance(cag, str) else None)
    return out


def _combo_widgets(spec: dict, index: int) -> list:
    opts, choices = spec["options"], list(spec["choices"] or [])
    default = opts.get("default") or (choices[0] if choices else ("Loading..." if opts.get("remote") else None))
    out = [_widget(spec["name"], "combo", input_type="COMBO", options=opts, default=default, choices=choices)]
    remote = opts.get("remote")
    if remote:  # useRemoteWidget: always an auto-refresh toggle, a refresh button when asked for
        out.append(_widget("Auto-refresh after generation", "toggle", default=False, prompt=False))
        if remote.get("refresh_button"):
            out.append(_widget("refresh", "button", default="refresh"))
    if opts.get("control_after_generate"):
        out += _control_widgets(opts, index, combo=True)
    return out


def _spec_widgets(spec: dict, index: int, fv: str) -> list:
    """The widgets one input's widget constructor creates; `index` is where the first one lands."""
    kind, opts, name = spec["type"], spec["options"], spec["name"]
    if kind in ("INT", "FLOAT"):
        return _number_widget(spec, index, fv)
    if kind == "COMBO":
        return _combo_widgets(spec, index)
    if kind == "BOOLEAN":
        return [_widget(name, "toggle", input_type=kind, options=opts, default=_nz(opts.get("default"), False))]
    if kind == "STRING":
        ftype = "customtext" if opts.get("multiline") else "text"
        return [_widget(name, ftype, input_type=kind, options=opts, default=_nz(opts.get("default"), ""))]
    if kind == "MARKDOWN":
        return [_widget(name, "MARKDOWN", input_type=kind, options=opts, default=_nz(opts.get("default"), ""))]
    if kind == "IMAGEUPLOAD":
        return [_widget(name, "button", default="image", prompt=False)]
    if kind == "AUDIOUPLOAD":
        return [_widget(name, "button", default="", prompt=False)]
    if kind == "AUDIO_UI":  # an <audio> element: its value is always ""
        return [_widget(name, "audioUI", default="", workflow=False, fixed=True)]
    if kind == "AUDIO_RECORD":
        button = "audiorecord" if _is_1_35(fv) else "button"
        return [_widget(name, "audioUI", default="", fixed=True), _widget(name, button, default="", prompt=False)]
    if kind == "WEBCAM":
        return [_widget(name, "WEBCAM", default="", fixed=True)]
    view = "load3D" if _is_1_35(fv) else "custom"
    if kind in ("LOAD_3D", "LOAD_3D_ANIMATION"):
        return [_widget("upload 3d model", "button", default="upload3dmodel"),
                _widget("upload extra resources", "button", default="uploadExtraResources"),
                _widget("clear", "button", default="clear"), _widget("image", view, default="")]
    if kind in ("PREVIEW_3D", "PREVIEW_3D_ANIMATION"):
        return [_widget("image", view, default="")]
    return [_widget(name, kind.lower(), input_type=kind, options=opts, default=opts.get("default"))]


def _node_layout(node_def: dict, fv: str) -> tuple[list, list]:
    """(widgets, input slots) of a fresh node, as LiteGraph.createNode builds them: first a socket for every
    input without a widget constructor (or forced to a socket), then each widget input's widgets and socket."""
    specs = _input_specs(node_def)
    types = _widget_types(fv)
    is_widget = [s["type"] in types and not s["options"].get("forceInput") for s in specs]
    widgets, slots = [], []
    for s, w in zip(specs, is_widget):
        if not w:
            slots += _socket_slots(s)
    for s, w in zip(specs, is_widget):
        if not w:
            continue
        if s["type"] == "COMFY_DYNAMICCOMBO_V3":
            made, sub_slots = _dynamic_combo(s, len(widgets), fv)
            widgets += made
            slots += sub_slots
        else:
            widgets += _spec_widgets(s, len(widgets), fv)
        slots.append({"name": s["name"], "type": s["type"], "widget": s["name"]})
    widgets += _class_extra_widgets(node_def.get("name"), fv)
    return widgets, slots


def _socket_slots(spec: dict) -> list:
    kind, opts = spec["type"], spec["options"]
    template = opts.get("template") or {}
    if kind == "COMFY_MATCHTYPE_V3":  # one socket accepting any of the allowed types
        return [{"name": spec["name"], "type": template.get("allowed_types", "*"), "widget": None}]
    if kind == "COMFY_AUTOGROW_V3":  # the minimum number of sockets from the template
        inner = next(iter((template.get("input") or {}).get("required", {}).items()), None)
        itype = _spec_parts(inner[1])[0] if inner else "*"
        if template.get("names"):
            names = template["names"][:max(1, template.get("min", 1))]
        else:
            names = [f"{template.get('prefix', '')}{i}" for i in range(template.get("min", 1))]
        return [{"name": f"{spec['name']}.{n}", "type": itype, "widget": None} for n in names]
    return [{"name": spec["name"], "type": kind, "widget": None}]


def _dynamic_combo(spec: dict, index: int, fv: str) -> tuple[list, list]:
    """1.35 DynamicCombo: a combo of option keys followed by the widgets of the selected option's inputs
    (named "combo.input"); their sockets land before the combo's own socket."""
    options = {o["key"]: o.get("inputs") or {} for o in spec["options"].get("options") or []}
    keys = list(options)
    combo = _widget(spec["name"], "combo", input_type="COMBO", options={}, default=keys[0] if keys else None,
                    choices=keys)
    widgets, slots = [combo], []
    selected = options.get(combo["default"], {})
    for cat in ("required", "optional"):
        for key, entry in (selected.get(cat) or {}).items():
            kind, opts, choices = _spec_parts(entry)
            sub = {"name": f"{spec['name']}.{key}", "type": kind, "options": opts, "choices": choices}
            if kind in _widget_types(fv) and not opts.get("forceInput"):
                widgets += _spec_widgets(sub, index + len(widgets), fv)
                slots.append({"name": sub["name"], "type": kind, "widget": sub["name"]})
            else:
                slots += _socket_slots(sub)
    return widgets, slots


def frontend_widgets(node_def: dict, frontend_version: str = "1.27.10") -> list[dict]:
    """The widgets the frontend creates for a node type from its /object_info entry, in widgets_values order.

    Each is {"name", "type" (the frontend widget type: number, combo, ...), "input_type" (INT, COMBO, ... or None
    for frontend-only widgets), "serialize" (goes into the prompt), "workflow" (has a widgets_values slot on
    load), "options", "default", "choices", "role" ("control"/"filter" for control_after_generate and
    control_filter_list, with "target" the index of the widget they drive), "control", "fixed"}.
    """
    return _node_layout(node_def, frontend_version)[0]


def input_slots(node_def: dict, frontend_version: str = "1.27.10") -> list[dict]:
    """The node's input slots in the frontend's order ({"name", "type", "widget"}): sockets, then one per
    widget input. Bypass matching (R7) indexes into this list."""
    return _node_layout(node_def, frontend_version)[1]


def default_title(node_type: str, node_def: dict | None, frontend_version: str = "1.27.10") -> str:
    """The title a node gets when the UI JSON has none (R2)."""
    table = TITLES_1_35 if _is_1_35(frontend_version) else TITLES_1_27
    if node_type in table:
        return table[node_type]
    if node_type in VIRTUAL_TITLES:
        return VIRTUAL_TITLES[node_type]
    return (node_def or {}).get("display_name") or (node_def or {}).get("name") or node_type


# --------------------------------------------------------------------------------------------------------
# JavaScript numbers, and widget values as the widgets' change callbacks leave them
# --------------------------------------------------------------------------------------------------------
def _js_round(x):
    return math.floor(x + 0.5)


def _js_number(x):
    """A number as JavaScript holds it: integers beyond 2**53 become the nearest double, which JSON then
    writes with the shortest digits (2**64 - 1 -> 18446744073709552000)."""
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) > 2 ** 53:
        return int(Decimal(repr(float(x))))
    return x


def _js_to_fixed(x: float, digits: int) -> str:
    """Number.prototype.toFixed: the exact binary value rounded half up (Python's format rounds half even)."""
    return str(Decimal(x).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def _normalise(widget: dict, value):
    """What an INT/FLOAT widget's change callback does to a value: INT rounds to its step (offset by min),
    FLOAT rounds to `round` and clamps to [min, max]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    opts = widget["options"]
    if widget["input_type"] == "INT":
        step = opts.get("step2") or 1
        if step == 1:  # Math.round: integers (huge ones too) stay as they are
            return value if isinstance(value, int) or not math.isfinite(value) else int(_js_round(value))
        low = _nz(opts.get("min"), 0)
        offset = math.fmod(low, step) if math.isfinite(low) else 0
        out = _js_round((value - offset) / step) * step + offset
        return int(out) if float(out).is_integer() else out
    if widget["input_type"] == "FLOAT" and opts.get("round"):
        rnd = opts["round"]
        precision = _nz(opts.get("precision"), max(0, -math.floor(math.log10(rnd))))
        out = float(_js_to_fixed(_js_round(value / rnd) * rnd, int(precision)))
        out = min(max(out, _nz(opts.get("min"), -math.inf)), _nz(opts.get("max"), math.inf))
        return int(out) if out.is_integer() else out
    return value


def js_string(v) -> str:
    """String(v) in JavaScript, for the values widgets hold."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if abs(v) < 10 ** 21 else js_string(float(v))
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        if v == 0:
            return "0"
        # Number::toString: the shortest round-trip digits s (k of them), the point after n of them.
        sign, digits, exponent = Decimal(repr(v)).normalize().as_tuple()
        s = "".join(map(str, digits))
        k, n = len(s), len(s) + exponent
        if k <= n <= 21:
            out = s + "0" * (n - k)
        elif 0 < n <= 21:
            out = s[:n] + "." + s[n:]
        elif -6 < n <= 0:
            out = "0." + "0" * -n + s
        else:
            out = s[0] + ("." + s[1:] if k > 1 else "") + ("e+" if n > 0 else "e-") + str(abs(n - 1))
        return ("-" if sign else "") + out
    if isinstance(v, list):
        return ",".join("" if x is None else js_string(x) for x in v)
    if isinstance(v, dict):
        return "[object Object]"
    return str(v)


# --------------------------------------------------------------------------------------------------------
# Link repair on load (R15)
# --------------------------------------------------------------------------------------------------------
class Link:
    __slots__ = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")

    def __init__(self, entry):
        if isinstance(entry, dict):  # inside definitions.subgraphs, and in schema 1.0 graphs
            self.id, self.origin_id, self.origin_slot = entry["id"], entry["origin_id"], entry["origin_slot"]
            self.target_id, self.target_slot, self.type = entry["target_id"], entry["target_slot"], entry.get("type")
        else:  # [id, origin_id, origin_slot, target_id, target_slot, type]
            self.id, self.origin_id, self.origin_slot, self.target_id, self.target_slot, self.type = \
                (list(entry) + [None] * 6)[:6]


class _UnfixableLinks(Exception):
    pass


def fix_bad_links(graph: dict) -> dict:
    """The frontend's link fixer, on a serialised root graph, in place. Walking `links` backwards, it drops a
    link id from an origin's output list when the link's target is gone or connected elsewhere, adds it when
    only the target has it, and then deletes the links that neither end lists. A repair of a node *input* is
    only planned, never made, so the fixer's own consistency check then gives up (_UnfixableLinks), e.g. when
    a link's origin node was deleted but its target still uses it."""
    nodes = graph.get("nodes") or []
    planned_inputs: dict = {}    # node id -> {slot: link id or None}
    planned_outputs: dict = {}   # node id -> {slot: {"links": [...], "changes": {link id: op}}}

    def find(node_id):
        return next((n for n in nodes if str(n.get("id")) == str(node_id)), None)

    def input_link(node, slot):
        ins = node.get("inputs") or []
        return ins[slot].get("link") if isinstance(slot, int) and 0 <= slot < len(ins) else None

    def output_links(node, slot):
        outs = node.get("outputs") or []
        return (outs[slot].get("links") or []) if isinstance(slot, int) and 0 <= slot < len(outs) else []

    def check(actual, planned):
        if actual != planned:
            raise _UnfixableLinks("Expected node to match patched data.")
        return planned

    def input_has(node, slot, lid):
        if node["id"] in planned_inputs:
            return check(input_link(node, slot) == lid, planned_inputs[node["id"]].get(slot, UNDEFINED) == lid)
        return input_link(node, slot) == lid

    def input_has_any(node, slot):
        if node["id"] in planned_inputs:
            return check(input_link(node, slot) is not None, planned_inputs[node["id"]].get(slot) is not None)
        return input_link(node, slot) is not None

    def output_has(node, slot, lid):
        plan = planned_outputs.get(node["id"], {}).get(slot)
        if plan and plan["changes"].get(lid):
            return check(lid in output_links(node, slot), lid in plan["links"])
        return lid in output_links(node, slot)

    def plan_input(node, slot, lid, op):
        slots = planned_inputs.setdefault(node["id"], {})
        if slot in slots:
            return False
        slots[slot] = None if op == "REMOVE" else lid
        return True

    def patch_output(node, slot, lid, op):
        plan = planned_outputs.setdefault(node["id"], {}).setdefault(
            slot, {"links": list(output_links(node, slot)), "changes": {}})
        if lid in plan["changes"]:
            return False
        plan["changes"][lid] = op
        outs = node.setdefault("outputs", [])
        while len(outs) <= slot:
            outs.append({})
        if op == "ADD":
            if lid in plan["links"]:
                return False
            plan["links"].append(lid)
            outs[slot]["links"] = (outs[slot].get("links") or []) + [lid]
        else:
            if lid not in plan["links"]:
                return False
            i = plan["links"].index(lid)
            del plan["links"][i]
            del outs[slot]["links"][i]
        return True

    links = [Link(e) for e in reversed(graph.get("links") or []) if e is not None]
    for link in links:
        origin, target = find(link.origin_id), find(link.target_id)
        if origin is None or target is None:
            if origin is None and target is not None and input_has(target, link.target_slot, link.id):
                plan_input(target, link.target_slot, -1, "REMOVE")
            elif target is None and origin is not None and output_has(origin, link.origin_slot, link.id):
                patch_output(origin, link.origin_slot, link.id, "REMOVE")
            continue
        if input_has(target, link.target_slot, link.id) or output_has(origin, link.origin_slot, link.id):
            if not output_has(origin, link.origin_slot, link.id):
                patch_output(origin, link.origin_slot, link.id, "ADD")
            elif not input_has(target, link.target_slot, link.id):
                if input_has_any(target, link.target_slot) or not plan_input(target, link.target_slot, link.id, "ADD"):
                    patch_output(origin, link.origin_slot, link.id, "REMOVE")
    dead = set()
    for link in links:
        origin, target = find(link.origin_id), find(link.target_id)
        if (origin is None or not output_has(origin, link.origin_slot, link.id)) and \
                (target is None or not input_has(target, link.target_slot, link.id)):
            dead.add(link.id)
    if dead:
        graph["links"] = [e for e in graph.get("links") or [] if e is not None and Link(e).id not in dead]
    return graph


# --------------------------------------------------------------------------------------------------------
# The loaded graph: node instances as the frontend holds them after loadGraphData
# --------------------------------------------------------------------------------------------------------
class Node:
    """A node instance: its runtime input slots, outputs and widgets with their current values."""

    def __init__(self, data: dict, graph: "Graph"):
        self.data, self.graph = data, graph
        self.id, self.type, self.mode = data["id"], data.get("type"), data.get("mode", 0) or 0
        self.title = data.get("title") or None
        self.properties = data.get("properties") or {}
        self.inputs: list[dict] = []    # {"name", "type", "link", "widget"}
        self.outputs: list[dict] = []   # {"type", "links"}
        self.widgets: list[dict] = []   # widget specs
        self.values: list = []          # current widget values, one per widget
        self.subgraph: "Graph | None" = None   # set on subgraph instances

    @property
    def virtual(self) -> bool:
        return self.type in VIRTUAL_TYPES

    def widget_index(self, name):
        return next((i for i, w in enumerate(self.widgets) if w["name"] == name), None)

    def set_value(self, i: int, value):
        """widget.value = value, then its change callback (rounding)."""
        if not self.widgets[i]["fixed"]:
            self.values[i] = _normalise(self.widgets[i], value)


class Graph:
    """The root graph or a subgraph definition."""

    def __init__(self, data: dict, gid=None):
        self.id, self.data = gid, data
        self.links = {}
        for entry in data.get("links") or []:
            if entry is not None:
                link = Link(entry)
                self.links[link.id] = link
        self.nodes: dict = {}
        self.inputs = list(data.get("inputs") or [])    # subgraph definition IO
        self.outputs = list(data.get("outputs") or [])


def _input_with_link(node: Node, link_id):
    return next((i for i in node.inputs if i.get("link") == link_id), None)


class Loader:
    """app.loadGraphData(): builds the node instances of the root graph and of every subgraph definition."""

    def __init__(self, workflow: dict, node_defs: dict, frontend_version: str):
        self.defs, self.fv = node_defs, frontend_version
        try:  # the fixer repairs the workflow in place, unless it gives up: then nothing changes
            fix_bad_links(copy.deepcopy(workflow))
            fix_bad_links(workflow)
        except _UnfixableLinks:
            pass
        self.renames = {**TYPE_RENAMES, **(TYPE_RENAMES_1_35 if _is_1_35(frontend_version) else {})}
        definitions = (workflow.get("definitions") or {}).get("subgraphs") or []
        self.subgraphs = {sg["id"]: Graph(sg, sg["id"]) for sg in definitions}
        self.root = Graph(workflow)
        for g in [*self.subgraphs.values(), self.root]:
            self._add_nodes(g)
        promoted: set = set()
        for g in [*self.subgraphs.values(), self.root]:
            self._promote_all(g, promoted, ())
        for g in [*self.subgraphs.values(), self.root]:
            for node in g.nodes.values():
                if node.type == "PrimitiveNode":
                    self._setup_primitive(node)
        self._patch_values(self.root)   # app.loadGraphData patches widgets of the root graph only

    # -- nodes ------------------------------------------------------------------------------------------
    def _add_nodes(self, g: Graph):
        for data in g.data.get("nodes") or []:
            data["type"] = self.renames.get(data.get("type"), data.get("type"))
            node = Node(data, g)
            g.nodes[node.id] = node
            if node.type in self.subgraphs:
                self._build_instance(node)
            elif node.type in self.defs:
                self._build_regular(node)
            else:
                self._build_other(node)

    @staticmethod
    def _saved_inputs(node: Node) -> list:
        return [{"name": i.get("name"), "type": i.get("type"), "link": i.get("link"),
                 "widget": (i.get("widget") or {}).get("name")} for i in node.data.get("inputs") or []]

    def _merge_inputs(self, node: Node, defined: list):
        """Saved inputs are matched to the defined slots by name; unknown saved ones are kept at the end."""
        saved_list = self._saved_inputs(node)
        saved = {i["name"]: i for i in saved_list}
        names = {s["name"] for s in defined}
        node.inputs = [{**s, "link": saved[s["name"]]["link"] if s["name"] in saved else None} for s in defined]
        node.inputs += [i for i in saved_list if i["name"] not in names]

    @staticmethod
    def _outputs(node: Node, types=None) -> list:
        """Output slots: their types from the definition where there is one, their links as saved."""
        saved = node.data.get("outputs") or []
        types = types or []
        return [{"type": types[i] if i < len(types) else saved[i].get("type"),
                 "links": (saved[i].get("links") or []) if i < len(saved) else []}
                for i in range(max(len(saved), len(types)))]

    def _build_regular(self, node: Node):
        node_def = self.defs[node.type]
        node.widgets, slots = _node_layout(node_def, self.fv)
        self._merge_inputs(node, slots)
        names = {w["name"] for w in node.widgets}  # onGraphConfigured drops widget inputs without a widget
        node.inputs = [i for i in node.inputs if not i.get("widget") or i["widget"] in names]
        node.outputs = self._outputs(node, [t if isinstance(t, str) else "COMBO" for t in node_def.get("output") or []])
        node.title = node.title or default_title(node.type, node_def, self.fv)
        node.values = [w["default"] for w in node.widgets]
        saved = node.data.get("widgets_values")
        if isinstance(saved, list):  # (a dict, as some custom nodes save, is ignored by LGraphNode.configure)
            self._assign(node, _migrate_widget_values(node_def, node.widgets, saved))

    def _build_other(self, node: Node):
        if not node.virtual and node.mode not in (MUTED, BYPASSED):
            raise ConversionError(_unknown_type_message(node))
        node.inputs = self._saved_inputs(node)
        if node.type == "Reroute" and not node.inputs:
            node.inputs = [{"name": "", "type": "*", "link": None, "widget": None}]
        node.outputs = self._outputs(node)
        node.title = node.title or default_title(node.type, None, self.fv)
        if node.type in ("Note", "MarkdownNote"):  # one text widget, which %Note.text% can find
            node.widgets = [_widget("text", "customtext", input_type="STRING", default="")]
            node.values = [""]
            self._assign(node, node.data.get("widgets_values") or [])

    def _build_instance(self, node: Node):
        """A subgraph instance: its slots are the subgraph's IO (R11)."""
        sg = self.subgraphs[node.type]
        node.subgraph = sg
        self._merge_inputs(node, [{"name": s.get("name"), "type": s.get("type"), "widget": None} for s in sg.inputs])
        node.outputs = self._outputs(node, [s.get("type") for s in sg.outputs])
        node.title = node.title or sg.data.get("name") or node.type

    @staticmethod
    def _assign(node: Node, saved: list):
        """LGraphNode.configure: widgets_values[i] goes to the i-th widget that takes a slot."""
        slots = [i for i, w in enumerate(node.widgets) if w["workflow"]]
        for value, i in zip(saved, slots):
            if not node.widgets[i]["fixed"]:
                node.values[i] = value

    # -- subgraph instances ---------------------------------------------------------------------------------
    def _promote_all(self, g: Graph, done: set, stack: tuple):
        """Promote the widgets of g's instances, inner instances first (their widgets can be promoted again)."""
        for node in g.nodes.values():
            if node.subgraph is None or id(node) in done:
                continue
            if node.type in stack:
                raise ConversionError(f"subgraph {node.type} contains an instance of itself (node {node.id})")
            self._promote_all(node.subgraph, done, (*stack, node.type))
            self._promote_widgets(node)
            done.add(id(node))

    def _promote_widgets(self, inst: Node):
        """Each subgraph input linked to an inner widget input gets a widget on the instance, in input order,
        valued from the instance's widgets_values (R11); 1.35 maps them through properties.proxyWidgets."""
        sg = inst.subgraph
        for sin in sg.inputs:
            for lid in sin.get("linkIds") or []:
                link = sg.links.get(lid)
                target = sg.nodes.get(link.target_id) if link else None
                slot = _input_with_link(target, lid) if target else None
                wi = target.widget_index(slot["widget"]) if slot is not None and slot.get("widget") else None
                if wi is None:
                    continue
                inst.widgets.append(dict(target.widgets[wi], name=sin.get("name"), role=None, target=None))
                inst.values.append(target.values[wi])
                inp = next((i for i in inst.inputs if i["name"] == sin.get("name")), None)
                if inp is not None:
                    inp["widget"] = sin.get("name")
                break
        saved = inst.data.get("widgets_values")
        if not isinstance(saved, list):
            return
        self._assign(inst, saved)
        proxies = inst.properties.get("proxyWidgets")
        if _is_1_35(self.fv) and isinstance(proxies, list):
            for value, proxy in zip(saved, proxies):
                if isinstance(proxy, list) and len(proxy) == 2 and str(proxy[0]) == "-1" and value is not None:
                    wi = inst.widget_index(proxy[1])
                    if wi is not None:
                        inst.values[wi] = value

    # -- PrimitiveNode (R10) ------------------------------------------------------------------------------------
    def _setup_primitive(self, node: Node):
        """onAfterGraphConfigured: the widget (named "value") takes the config of the first widget input it
        feeds, numbers and combos get control widgets, widgets_values fill them by index, and a number is
        clamped to the merged range of all its targets and rounded to the step."""
        g, links = node.graph, (node.outputs[0]["links"] if node.outputs else [])
        if not links or links[0] not in g.links:
            return
        first = g.links[links[0]]
        target = g.nodes.get(first.target_id)
        slot = _input_with_link(target, first.id) if target else None
        spec = _target_spec(target, slot, self.defs) if slot is not None else None
        if spec is None:
            return
        if spec["type"] in ("INT", "FLOAT"):
            for lid in links:
                other = g.links.get(lid)
                t = g.nodes.get(other.target_id) if other else None
                s = _input_with_link(t, lid) if t else None
                if s is not None:
                    spec = _merge_numeric(spec, _target_spec(t, s, self.defs)) or spec
        if spec["type"] in _widget_types(self.fv):
            node.widgets = _spec_widgets({**spec, "name": "value"}, 0, self.fv)
        else:
            node.widgets = [_widget("value", spec["type"], input_type=spec["type"], options=spec["options"])]
        if not spec["options"].get("control_after_generate") and node.widgets[0]["type"] in ("number", "combo"):
            saved = node.data.get("widgets_values") or []
            node.widgets += _control_widgets(spec["options"], 0, combo=node.widgets[0]["type"] == "combo",
                                             default=(saved[1] if len(saved) > 1 else None) or "fixed")
        for w in node.widgets:  # a primitive takes its widgets_values by plain index
            w["workflow"] = True
        node.values = [w["default"] for w in node.widgets]
        tw = target.widget_index(slot["widget"]) if slot.get("widget") else None
        if tw is not None:
            node.values[0] = target.values[tw]
        for i, v in enumerate((node.data.get("widgets_values") or [])[:len(node.widgets)]):
            node.values[i] = v
        v = node.values[0]
        if spec["type"] in ("INT", "FLOAT") and isinstance(v, (int, float)) and not isinstance(v, bool):
            lo, hi = node.widgets[0]["options"].get("min"), node.widgets[0]["options"].get("max")
            if lo is not None and float(v) < float(lo):  # compared as JS doubles
                v = _js_number(lo)
            elif hi is not None and float(v) > float(hi):
                v = _js_number(hi)
            node.set_value(0, v)

    # -- load-time patches (R14) ------------------------------------------------------------------------------
    @staticmethod
    def _patch_values(g: Graph):
        for node in g.nodes.values():
            for i, w in enumerate(node.widgets):
                v = node.values[i]
                if node.type in ("KSampler", "KSamplerAdvanced") and w["name"] == "sampler_name" \
                        and isinstance(v, str) and v.startswith("sample_"):
                    node.values[i] = v[len("sample_"):]
                if node.type in ("KSampler", "KSamplerAdvanced", "PrimitiveNode") \
                        and w["name"] == "control_after_generate" and isinstance(v, bool):
                    node.values[i] = "randomize" if v else "fixed"


def _target_spec(target: Node, slot: dict, defs: dict):
    """The input spec behind a widget input, which a PrimitiveNode copies (None for a subgraph instance:
    its promoted widgets have no config to copy)."""
    if target.type not in defs or target.subgraph is not None:
        return None
    name = slot.get("widget")
    if not name:
        kind = slot.get("type")
        return {"name": slot.get("name"), "type": kind, "options": {}, "choices": None} \
            if kind in CORE_WIDGET_TYPES else None
    return next((s for s in _input_specs(defs[target.type]) if s["name"] == name), None)


def _gcd(a, b):
    while b:
        a, b = b, (math.fmod(a, b) if isinstance(a, float) or isinstance(b, float) else a % b)
    return a


_MERGE_IGNORED = {"default", "forceInput", "defaultInput", "control_after_generate", "multiline", "tooltip",
                  "dynamicPrompts", "min", "max", "step"}


def _merge_numeric(a: dict, b: dict | None):
    """mergeInputSpec for two INT/FLOAT specs: the ranges' intersection and the steps' lcm; None when the
    ranges do not overlap or another option differs."""
    if b is None or a["type"] != b["type"]:
        return None
    oa, ob = a["options"], b["options"]
    if any(oa.get(k) != ob.get(k) for k in (set(oa) | set(ob)) - _MERGE_IGNORED):
        return None
    lo_a, hi_a = _nz(oa.get("min"), -math.inf), _nz(oa.get("max"), math.inf)
    lo_b, hi_b = _nz(ob.get("min"), -math.inf), _nz(ob.get("max"), math.inf)
    if lo_a > hi_b or hi_a < lo_b:
        return None
    s1, s2 = _nz(oa.get("step"), 1), _nz(ob.get("step"), 1)
    step = s1 * s2 / _gcd(s1, s2) if s1 and s2 else 1
    if isinstance(s1, int) and isinstance(s2, int):
        step = int(step)
    return {**a, "options": {**oa, **ob, "min": max(lo_a, lo_b), "max": min(hi_a, hi_b), "step": step}}


def _migrate_widget_values(node_def: dict, widgets: list, saved: list) -> list:
    """migrateWidgetsValues: workflows from before frontend 1.16 hold a slot for each forceInput input; when
    the count matches that layout, those slots are dropped (pairing inputs with values one to one)."""
    names = {w["name"] for w in widgets}
    inputs = []
    for cat in ("required", "optional"):
        for key, entry in ((node_def.get("input") or {}).get(cat) or {}).items():
            opts = _spec_parts(entry)[1]
            if key in names or opts.get("forceInput"):
                inputs.append((key, opts))
    count = sum(2 if (o.get("control_after_generate") or k in ("seed", "noise_seed")) else 1 for k, o in inputs)
    if count != len(saved) or not any(o.get("forceInput") for _, o in inputs):
        return saved
    return [v for i, v in enumerate(saved) if i >= len(inputs) or not inputs[i][1].get("forceInput")]


def _unknown_type_message(node: Node) -> str:
    hint = " Group nodes are not supported: convert them to a subgraph or ungroup them in the editor." \
        if str(node.type).startswith(("workflow>", "workflow/")) else ""
    return (f"node {node.id} has type '{node.type}', which is not in the node definitions: pass --object-info "
            f"with the /object_info JSON of the ComfyUI server that has this node (or install the pack that "
            f"provides it).{hint}")


# --------------------------------------------------------------------------------------------------------
# Conversion (graphToPrompt)
# --------------------------------------------------------------------------------------------------------
def _valid_connection(a, b) -> bool:
    """LiteGraph.isValidConnection: equal, a wildcard, or overlapping comma-separated lists."""
    a = 0 if a in ("", "*") else a
    b = 0 if b in ("", "*") else b
    if not a or not b or a == b:
        return True
    a, b = str(a).lower(), str(b).lower()
    if "," not in a and "," not in b:
        return a == b
    return any(_valid_connection(x, y) for x in a.split(",") for y in b.split(","))


class Exec:
    """An executable node: a node instance at a path of subgraph instances (ExecutableNodeDTO)."""

    __slots__ = ("node", "path", "instance")

    def __init__(self, node: Node, path: tuple, instance: "Exec | None"):
        self.node, self.path, self.instance = node, path, instance  # instance: the Exec of the container

    @property
    def id(self) -> str:
        return ":".join(str(p) for p in (*self.path, self.node.id))


class Converter:
    def __init__(self, loaded: Loader, rng, now):
        self.loaded, self.fv = loaded, loaded.fv
        self.rng = rng or random.Random()
        self.now = now or datetime.now()
        self.execs: dict[str, Exec] = {}
        self._collect(loaded.root, (), None)

    def _collect(self, g: Graph, path: tuple, instance):
        for node in g.nodes.values():
            ex = Exec(node, path, instance)
            self.execs[ex.id] = ex
            if node.subgraph is not None:
                self._collect(node.subgraph, (*path, node.id), ex)

    def _exec_of(self, path: tuple, node: Node) -> Exec:
        return self.execs[":".join(str(p) for p in (*path, node.id))]

    # -- R10: PrimitiveNode.applyToGraph --------------------------------------------------------------------
    def apply_primitives(self):
        for ex in self.execs.values():
            if ex.node.type == "PrimitiveNode":
                self.apply_primitive(ex.node)

    def apply_primitive(self, node: Node):
        """Copy the primitive's value into every widget it feeds, through the widgets' callbacks, whatever the
        primitive's mode. (1.27 looks the links up in the root graph even for a primitive inside a subgraph,
        a bug fixed in 1.35; both versions use the primitive's own graph here.)"""
        if not node.outputs or not node.outputs[0]["links"]:
            return
        g = node.graph
        value = node.values[0] if node.widgets else UNDEFINED
        if value is not UNDEFINED and value and node.properties.get("Run widget replace on values"):
            value = replace_text_tokens(str(value), g if _is_1_35(self.fv) else self.loaded.root, self.now)
        for lid in node.outputs[0]["links"]:
            link = g.links.get(lid)
            if link is None:  # the frontend reads .target_id of undefined here
                raise ConversionError(f"TypeError: PrimitiveNode {node.id} lists output link {lid}, which does "
                                      f"not exist; reconnect the primitive")
            target = g.nodes.get(link.target_id)
            slot = _input_with_link(target, lid) if target else None
            if slot is None and target is not None and isinstance(link.target_slot, int) \
                    and 0 <= link.target_slot < len(target.inputs):
                slot = target.inputs[link.target_slot]
            wi = target.widget_index(slot["widget"]) if slot is not None and slot.get("widget") else None
            if wi is not None:
                target.set_value(wi, value)

    # -- link resolution (ExecutableNodeDTO.resolveInput / resolveOutput) ---------------------------------
    def resolve_input(self, ex: Exec, slot: int, visited: set, want=None):
        key = (ex.node.graph.id, ex.node.id, "I", slot)
        if key in visited:
            raise ConversionError(f"RecursionError: circular reference while resolving input {slot} of node {ex.id}")
        visited.add(key)
        if not 0 <= slot < len(ex.node.inputs):
            raise ConversionError(f"SlotIndexError: No input found for flattened id [{ex.id}] slot [{slot}]")
        inp = ex.node.inputs[slot]
        if inp["link"] is None:
            return None
        g = ex.node.graph
        link = g.links.get(inp["link"])
        if link is None:
            raise ConversionError(f"InvalidLinkError: No link found in parent graph for id [{ex.id}] slot [{slot}] "
                                  f"{inp['name']}")
        if ex.instance is not None and link.origin_id == SUBGRAPH_INPUT_ID:
            return self._resolve_from_instance(ex, link, inp, visited)
        origin = g.nodes.get(link.origin_id)
        if origin is None:
            raise ConversionError(f"InvalidLinkError: No input node found for id [{ex.id}] slot [{slot}] {inp['name']}")
        return self.resolve_output(self._exec_of(ex.path, origin), link.origin_slot,
                                   want if want is not None else inp["type"], visited)

    def _resolve_from_instance(self, ex: Exec, link: Link, inp: dict, visited: set):
        """An inner link from the subgraph's input node continues outside, on the instance (R11): its outer
        link, or else the instance's own (promoted) widget value."""
        inst = ex.instance.node
        if not 0 <= link.origin_slot < len(inst.inputs):
            raise ConversionError(f"SlotIndexError: No input found for slot [{link.origin_slot}] {inp['name']}")
        outer = inst.inputs[link.origin_slot]
        if outer["link"] is None:
            wi = inst.widget_index(outer["widget"]) if outer.get("widget") else None
            return None if wi is None else ("value", inst.values[wi])
        if inst.graph.links.get(outer["link"]) is None:
            raise ConversionError(f"InvalidLinkError: No outer link found for slot [{link.origin_slot}] {inp['name']}")
        return self.resolve_input(ex.instance, next(i for i, s in enumerate(inst.inputs) if s is outer), visited)

    def resolve_output(self, ex: Exec, slot: int, want, visited: set):
        node = ex.node
        key = (node.graph.id, node.id, "O", slot)
        if key in visited:
            raise ConversionError(f"RecursionError: circular reference while resolving output {slot} of node {ex.id}")
        visited.add(key)
        if node.mode == BYPASSED:  # R7; the next hop looks for the bypassed node's own input type
            i = self._bypass_slot(node, slot, want)
            return None if i == -1 else self.resolve_input(ex, i, visited)
        if node.subgraph is not None:
            return self._resolve_subgraph_output(ex, slot, want, visited)
        if node.virtual:  # Reroute: output i continues from input i (R6)
            if slot >= len(node.inputs):
                return None
            if _is_1_35(self.fv) and node.inputs[slot]["link"] not in node.graph.links:
                return None  # 1.35 asks getInputLink first, which finds no link instead of throwing
            return self.resolve_input(ex, slot, visited, want)
        return ("link", ex.id, slot)

    @staticmethod
    def _bypass_slot(node: Node, slot: int, want) -> int:
        """getBypassSlotIndex (R7): the input to pass through for output `slot`, or -1."""
        inputs = node.inputs
        if want in ("*", ""):
            return slot if len(inputs) > slot else 0
        out_type = node.outputs[slot]["type"] if slot < len(node.outputs) else None
        if slot < len(inputs) and _valid_connection(inputs[slot]["type"], out_type) \
                and _valid_connection(inputs[slot]["type"], want):
            return slot
        exact = next((i for i, s in enumerate(inputs) if s["type"] == want), -1)
        if exact != -1:
            return exact
        return next((i for i, s in enumerate(inputs)
                     if _valid_connection(s["type"], out_type) and _valid_connection(s["type"], want)), -1)

    def _resolve_subgraph_output(self, ex: Exec, slot: int, want, visited: set):
        node, sg = ex.node, ex.node.subgraph
        if not 0 <= slot < len(node.outputs) or slot >= len(sg.outputs):
            raise ConversionError(f"SlotIndexError: No output found for flattened id [{ex.id}] slot [{slot}]")
        link = next((sg.links[i] for i in sg.outputs[slot].get("linkIds") or [] if i in sg.links), None)
        if link is None:
            return None
        inner = sg.nodes.get(link.origin_id)
        if inner is None:  # e.g. a subgraph input wired straight to an output: the frontend throws
            raise ConversionError(f"Error: No output node found for id [{ex.id}] slot [{slot}] "
                                  f"{sg.outputs[slot].get('name')}")
        return self.resolve_output(self._exec_of((*ex.path, node.id), inner), link.origin_slot, want, visited)

    # -- emit --------------------------------------------------------------------------------------------
    def convert(self) -> dict:
        self.apply_primitives()
        output = {}
        for ex in self.execs.values():
            node = ex.node
            if node.virtual or node.subgraph is not None or node.mode in (MUTED, BYPASSED):
                continue
            inputs = {}
            for i, w in enumerate(node.widgets):
                if w["name"] and w["serialize"]:
                    inputs[w["name"]] = _wrap(self.serialize_value(node, w, node.values[i]))
            for i, inp in enumerate(node.inputs):
                resolved = self.resolve_input(ex, i, set())
                if resolved is None:
                    continue  # R8: a widget input keeps its widget value
                if resolved[0] == "value":
                    inputs[inp["name"]] = _wrap(resolved[1])
                else:
                    inputs[inp["name"]] = [str(resolved[1]), int(resolved[2])]
            output[ex.id] = {"inputs": {k: v for k, v in inputs.items() if v is not UNDEFINED},
                             "class_type": node.type, "_meta": {"title": node.title}}
        for entry in output.values():  # R9: links to nodes that are not in the prompt (muted) go
            for k in [k for k, v in entry["inputs"].items()
                      if isinstance(v, list) and len(v) == 2 and v[0] not in output]:
                del entry["inputs"][k]
        return output

    def serialize_value(self, node: Node, w: dict, value):
        """widget.serializeValue: dynamic prompts (R12) and filename_prefix replacements (R13)."""
        if w["options"].get("dynamicPrompts") is True and w["input_type"] == "STRING" and isinstance(value, str):
            return process_dynamic_prompt(value, self.rng)
        save_nodes = SAVE_NODES | ({"SaveVideo"} if _is_1_35(self.fv) else set())
        if node.type in save_nodes and w["name"] == "filename_prefix" \
                and w is node.widgets[node.widget_index("filename_prefix")]:  # the first of that name
            return replace_text_tokens(value, self.loaded.root, self.now)
        return value


def _wrap(value):
    return {"__value__": value} if isinstance(value, list) else value


# --------------------------------------------------------------------------------------------------------
# filename_prefix replacements (R13)
# --------------------------------------------------------------------------------------------------------
_DATE_PARTS = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")


def format_date(fmt: str, now: datetime) -> str:
    """formatDate: d, M, h, m, s (doubled: zero-padded), yy, yyyy."""
    parts = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}

    def repl(m):
        t = m.group(0)
        if t == "yy":
            return str(now.year)[2:]
        if t == "yyyy":
            return str(now.year)
        if t[0] in parts:
            return str(parts[t[0]]).rjust(len(t), "0")
        return t

    return _DATE_PARTS.sub(repl, fmt)


def _all_nodes(g: Graph) -> list:
    """collectAllNodes: every node, a subgraph instance's inner nodes (recursively) before the instance."""
    out = []
    for node in g.nodes.values():
        if node.subgraph is not None:
            out += _all_nodes(node.subgraph)
        out.append(node)
    return out


def replace_text_tokens(value, g: Graph, now: datetime):
    """applyTextReplacements: %date:FMT%, and %Node.widget% by "Node name for S&R", else by title, with the
    characters that are invalid in file names replaced by "_"; anything else stays as written."""
    if not isinstance(value, str):
        return value
    nodes = _all_nodes(g)

    def repl(m):
        split = m.group(1).split(".")
        if len(split) != 2:
            return format_date(split[0][5:], now) if split[0].startswith("date:") else m.group(0)
        found = [n for n in nodes if n.properties.get("Node name for S&R") == split[0]] or \
            [n for n in nodes if n.title == split[0]]
        i = found[0].widget_index(split[1]) if found else None
        if i is None:
            return m.group(0)
        v = found[0].values[i]
        return re.sub(r'[/?<>\\:*|"\x00-\x1F\x7F]', "_", js_string("" if v is None or v is UNDEFINED else v))

    return re.sub(r"%([^%]+)%", repl, value)


# --------------------------------------------------------------------------------------------------------
# Dynamic prompts (R12)
# --------------------------------------------------------------------------------------------------------
_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//[^\n\r\u2028\u2029]*")


def process_dynamic_prompt(text: str, rng: random.Random) -> str:
    """processDynamicPrompt: strip // and /* */ comments, replace every {a|b|...} with one option chosen
    uniformly (nested groups are processed inside the chosen option), then unescape \\{ \\} \\|."""
    text = _COMMENTS.sub("", text)
    pos = 0

    def escape():
        nonlocal pos
        nxt = text[pos] if pos < len(text) else "undefined"  # JS reads past the end as undefined
        pos += 1
        return "\\" + nxt

    def choice_block():
        nonlocal pos
        options, choice, depth = [], "", 0
        while pos < len(text):
            ch = text[pos]
            pos += 1
            if ch == "\\":
                choice += escape()
                continue
            if ch == "{":
                depth += 1
            elif ch == "}":
                if not depth:
                    break
                depth -= 1
            elif ch == "|" and not depth:
                options.append(choice)
                choice = ""
                continue
            choice += ch
        options.append(choice)
        return process_dynamic_prompt(options[math.floor(rng.random() * len(options))], rng)

    result = ""
    while pos < len(text):
        ch = text[pos]
        pos += 1
        if ch == "\\":
            result += escape()
        elif ch == "{":
            result += choice_block()
        else:
            result += ch
    return re.sub(r"\\([{}|])", r"\1", result)


# --------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------
def ui_to_api(workflow: dict, node_defs: dict, frontend_version: str = "1.27.10", rng=None, now=None) -> dict:
    """The API prompt that ComfyUI's frontend posts for this UI workflow ({id: {inputs, class_type, _meta}}).

    rng: random.Random for dynamic prompt choices; now: the datetime for %date:...% (local time)."""
    loaded = Loader(copy.deepcopy(workflow), node_defs, frontend_version)
    return Converter(loaded, rng, now).convert()


def is_ui_workflow(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def load_prompt(data: dict, node_defs: dict, **kwargs) -> tuple[dict, dict | None]:
    """(API prompt, UI workflow or None) from a UI workflow, an API prompt ({id: {class_type, inputs}}), or
    {"prompt": ..., "extra_data": {"extra_pnginfo": {"workflow": ...}}} as the Run button posts it."""
    if is_ui_workflow(data):
        return ui_to_api(data, node_defs, **kwargs), data
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        workflow = ((data.get("extra_data") or {}).get("extra_pnginfo") or {}).get("workflow")
        return data["prompt"], workflow if is_ui_workflow(workflow) else None
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return data, None
    raise ConversionError("not a ComfyUI workflow: expected a UI workflow (with 'nodes'), an API prompt "
                          "({id: {class_type, inputs}}) or {'prompt': ...}; save it from ComfyUI with "
                          "Workflow > Save or Export (API)")


def node_widgets(workflow: dict, node_defs: dict, frontend_version: str = "1.27.10") -> dict:
    """{node id: [(widget, value), ...]} for the root graph's nodes, as the frontend holds them after loading
    the workflow (patched values, PrimitiveNode widgets, promoted subgraph widgets)."""
    loaded = Loader(copy.deepcopy(workflow), node_defs, frontend_version)
    return {nid: list(zip(n.widgets, n.values)) for nid, n in loaded.root.nodes.items()}


def set_widget_value(workflow: dict, node_defs: dict, frontend_version: str, node_id, name: str, value) -> dict:
    """Set widget `name` of root node `node_id` in the workflow's widgets_values, in place."""
    loaded = Loader(workflow, node_defs, frontend_version)
    node = loaded.root.nodes.get(node_id)
    i = node.widget_index(name) if node is not None else None
    if i is None:
        raise KeyError(f"node {node_id} has no widget {name!r}")
    node.values[i] = value
    _store_values(node)
    return workflow


# --------------------------------------------------------------------------------------------------------
# Queueing: control_after_generate (R16)
# --------------------------------------------------------------------------------------------------------
def _next_value(node: Node, ci: int, rng: random.Random):
    """applyWidgetControl for control widget number ci of a node: the next value of the widget it drives."""
    ti = node.widgets[ci]["target"]
    target, value, mode = node.widgets[ti], node.values[ti], node.values[ci]
    if target["type"] == "combo":
        if mode == "fixed":
            return value
        values = list(target["choices"] or [])
        fi = next((i for i, w in enumerate(node.widgets) if w["role"] == "filter" and w["target"] == ti), None)
        pattern = node.values[fi] if fi is not None else ""
        if pattern:
            check = None
            if pattern.startswith("/") and pattern.endswith("/"):  # /regex/, case-sensitive
                try:
                    check = re.compile(pattern[1:-1]).search
                except re.error:
                    check = None
            if check is None:
                check = lambda item: pattern.lower() in item.lower()  # noqa: E731
            values = [v for v in values if check(str(v))]
        i = values.index(value) if value in values else -1
        if mode == "increment":
            i += 1
        elif mode == "increment-wrap":
            i = i + 1 if i + 1 < len(values) else 0
        elif mode == "decrement":
            i -= 1
        elif mode == "randomize":
            i = math.floor(rng.random() * len(values))
        i = min(len(values) - 1, max(0, i))
        return values[i] if i >= 0 else value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    opts = target["options"]
    lo = max(-JS_SAFE_MAX, _nz(opts.get("min"), 0))
    hi = min(JS_SAFE_MAX, _nz(opts.get("max"), 1))
    step = _nz(opts.get("step2"), 1)
    if mode == "increment":
        value = value + step
    elif mode == "decrement":
        value = value - step
    elif mode == "randomize":
        value = math.floor(rng.random() * ((hi - lo) / step)) * step + lo
    return min(max(value, lo), hi)  # even "fixed" is clamped


def _queue_order(loaded: Loader, fv: str) -> list:
    """The nodes whose widgets get the queue callbacks, in the frontend's order: 1.27 walks the root graph
    then each subgraph definition once; 1.35 walks every node (collectAllNodes), so a subgraph used twice is
    visited twice."""
    if _is_1_35(fv):
        return _all_nodes(loaded.root)
    return list(loaded.root.nodes.values()) + [n for sg in loaded.subgraphs.values() for n in sg.nodes.values()]


def apply_widget_controls(workflow: dict, node_defs: dict, frontend_version: str = "1.27.10", mode: str = "after",
                          rng=None, first_queue: bool = False) -> dict:
    """Advance every control_after_generate widget once, in place, as app.queuePrompt does (R16).

    mode="after" (the default Comfy.WidgetControlMode): call after converting and posting a prompt.
    mode="before": call before converting; the first queue after a load changes nothing (first_queue=True).
    Every number is clamped to [min, min(max, 2**50)] whenever its control runs, even "fixed". A
    PrimitiveNode's control changes the primitive, whose value its targets then take. Returns the workflow."""
    if mode not in ("after", "before"):
        raise ValueError(f"mode must be 'after' or 'before', not {mode!r}")
    if mode == "before" and first_queue:
        return workflow
    rng = rng or random.Random()
    loaded = Loader(workflow, node_defs, frontend_version)  # works on the workflow's own node dicts
    conv = Converter(loaded, rng, datetime.now())
    nodes = [n for g in [loaded.root, *loaded.subgraphs.values()] for n in g.nodes.values()]
    before = [list(n.values) for n in nodes]
    for node in _queue_order(loaded, frontend_version):
        for ci, w in enumerate(node.widgets):
            if w["role"] == "control":
                node.set_value(w["target"], _next_value(node, ci, rng))
                if node.type == "PrimitiveNode":  # the value widget's callback runs applyToGraph
                    conv.apply_primitive(node)
    for node, old in zip(nodes, before):
        if node.values != old:
            _store_values(node)
    return workflow


def _store_values(node: Node):
    """Write a node's widget values back into its widgets_values, as LGraphNode.serialize does (a slot per
    widget; widgets that take no slot on load are left null)."""
    if node.subgraph is not None:
        return
    out = [node.values[i] if w["workflow"] else None for i, w in enumerate(node.widgets)]
    while out and out[-1] is None and not node.widgets[len(out) - 1]["workflow"]:
        out.pop()
    node.data["widgets_values"] = [None if v is UNDEFINED else v for v in out]
