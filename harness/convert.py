"""UI workflow (what ComfyUI saves) -> API prompt (what its Run button posts), as the frontend converts it.

Reproduces app.graphToPrompt() of ComfyUI's frontend (1.27.10 / 1.35.9), rule numbers as in
../shared/golden/comfy_frontend/README.md: load-time link fixing (R15) and patches (R14), widget order
from each node's definition with the frontend-only control/upload widgets (R4, R14), PrimitiveNode values
copied into their targets (R10), Reroute (R6), bypass by type (R7, R8), mute (R9), notes, subgraphs with
"outer:inner" ids (R11), dynamic prompts (R12), filename_prefix replacements (R13).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime

VIRTUAL_TYPES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID = -10, -20
MUTED, BYPASSED = 2, 4

# Node types renamed by the frontend when a workflow is loaded (R14).
TYPE_PATCHES = {"T2IAdapterLoader": "ControlNetLoader", "ConditioningAverage ": "ConditioningAverage",
                "SDV_img2vid_Conditioning": "SVD_img2vid_Conditioning"}
TYPE_PATCHES_1_35 = {"Load3DAnimation": "Load3D", "Preview3DAnimation": "Preview3D"}

# Widgets that frontend extensions (JS) add to a few core nodes; object_info cannot tell them.
# (name, serialised into the prompt)
EXTENSION_WIDGETS = {
    "Load3D": [("model_file", True), ("upload 3d model", True), ("upload extra resources", True), ("clear", True),
               ("image", True), ("width", True), ("height", True)],
    "Load3DAnimation": [("model_file", True), ("upload 3d model", True), ("upload extra resources", True),
                        ("clear", True), ("image", True), ("width", True), ("height", True)],
    "LoadAudio": [("audio", True), ("audioUI", True), ("upload", False)],
    "LoadImageOutput": [("image", True), ("Auto-refresh after generation", False), ("refresh", True),
                        ("upload", False)],
    "Preview3D": [("model_file", True), ("image", True)],
    "Preview3DAnimation": [("model_file", True), ("image", True)],
    "PreviewAny": [("preview", True)],
    "PreviewAudio": [("audioUI", True)],
    "RecordAudio": [("audio", True), ("audio", False)],
    "SaveAudio": [("filename_prefix", True), ("audioUI", True)],
    "SaveAudioMP3": [("filename_prefix", True), ("quality", True), ("audioUI", True)],
    "SaveAudioOpus": [("filename_prefix", True), ("quality", True), ("audioUI", True)],
    "SaveGLB": [("filename_prefix", True), ("image", True)],
    "WebcamCapture": [("image", True), ("width", True), ("height", True), ("capture_on_queue", True),
                      ("waiting for camera...", True)],
}
EXTENSION_WIDGETS_1_35 = {
    "PreviewAny": [("preview", True), ("preview", True), ("previewMode", True)],
    "CustomCombo": [("choice", True), ("option0", True)],
    "ResizeImageMaskNode": [("resize_type", True), ("resize_type.multiplier", True), ("scale_method", True)],
}
# Default titles the frontend takes from its own translations instead of object_info's display_name.
TITLES_1_27 = {"ImageBlend": "Image Blend", "ImageBlur": "Image Blur", "ImageQuantize": "Image Quantize",
               "ImageScaleToTotalPixels": "Scale Image to Total Pixels", "ImageSharpen": "Image Sharpen"}
TITLES_1_35 = {"ByteDanceSeedreamNode": "ByteDance Seedream 4",
               "FluxKontextMultiReferenceLatentMethod": "FluxKontextMultiReferenceLatentMethod",
               "Mahiro": "Mahiro is so cute that she deserves a better guidance function!! (。・ω・。)"}
VIRTUAL_TITLES = {"Note": "Note", "MarkdownNote": "Markdown Note", "PrimitiveNode": "Primitive", "Reroute": "Reroute"}
SAVE_NODES = {"SaveImage", "SaveAnimatedWEBP", "SaveAnimatedPNG", "SaveWEBM", "SaveAudio", "SaveGLB", "CLIPSave",
              "VAESave", "ModelSave", "LoraSave", "SaveLatent"}


class ConversionError(Exception):
    """The frontend would refuse to convert this graph (or we lack a node definition)."""


def _is_1_35(frontend_version: str) -> bool:
    return tuple(int(x) for x in frontend_version.split(".")[:2]) >= (1, 35)


# --------------------------------------------------------------------------------------------
# Widgets of a node type
# --------------------------------------------------------------------------------------------
def _spec(entry):
    if not isinstance(entry, (list, tuple)):
        entry = [entry]
    kind = entry[0]
    opts = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
    return ("COMBO" if isinstance(kind, list) else kind), opts, kind


def _default(kind, opts, raw):
    if "default" in opts:
        return opts["default"]
    if kind == "COMBO":
        options = raw if isinstance(raw, list) else opts.get("options", [])
        return options[0] if options else None
    return {"INT": 0, "FLOAT": 0, "STRING": "", "BOOLEAN": False}.get(kind)


def _ordered_inputs(node_def: dict):
    spec = node_def.get("input", {})
    order = node_def.get("input_order") or {k: list(v) for k, v in spec.items()}
    for cat in ("required", "optional"):
        for name in order.get(cat, []):
            if name in spec.get(cat, {}):
                yield name, spec[cat][name]


def frontend_widgets(node_def: dict, frontend_version: str = "1.27.10") -> list[dict]:
    """The widgets the frontend creates for a node type, in widgets_values order.

    Each is {"name", "serialize", "type", "options", "default", "control"}; control/filter/upload widgets
    take a widgets_values slot but never reach the prompt.
    """
    name = node_def.get("name")
    table = {**EXTENSION_WIDGETS, **(EXTENSION_WIDGETS_1_35 if _is_1_35(frontend_version) else {})}
    specs = dict(_ordered_inputs(node_def))
    if name in table:
        out = []
        for wname, ser in table[name]:
            kind, opts, raw = _spec(specs[wname]) if wname in specs and ser else (None, {}, None)
            out.append({"name": wname, "serialize": ser, "type": kind, "options": opts,
                        "default": _default(kind, opts, raw), "control": False})
        return out
    widgets, tail = [], []
    for wname, entry in _ordered_inputs(node_def):
        kind, opts, raw = _spec(entry)
        if kind not in WIDGET_TYPES or opts.get("forceInput"):
            continue
        widgets.append({"name": wname, "serialize": True, "type": kind, "options": opts,
                        "default": _default(kind, opts, raw), "control": False,
                        "choices": raw if isinstance(raw, list) else opts.get("options")})
        cag = opts.get("control_after_generate")
        control = {"name": "control_after_generate", "serialize": False, "type": "COMBO", "options": {},
                   "control": True, "default": cag if isinstance(cag, str) else "randomize"}
        if kind == "INT" and (cag if cag is not None else wname in ("seed", "noise_seed")):
            widgets.append(control)
        elif kind == "FLOAT" and cag and _is_1_35(frontend_version):
            widgets.append({**control, "default": cag if isinstance(cag, str) else "fixed"})
        elif kind == "COMBO" and cag:
            widgets.append(control)
            widgets.append({"name": "control_filter_list", "serialize": False, "type": "STRING", "options": {},
                            "control": False, "default": ""})
        if any(opts.get(k) for k in ("image_upload", "video_upload", "audio_upload", "animated_image_upload")):
            tail.append({"name": "upload", "serialize": False, "type": "BUTTON", "options": {}, "control": False,
                         "default": "image"})
    return widgets + tail


def runtime_inputs(node_def: dict, frontend_version: str = "1.27.10") -> list[tuple[str, str]]:
    """(name, type) of a node's input slots as the frontend builds them: socket inputs in definition order,
    then one socket per widget. Bypass resolution indexes into this list."""
    sockets, widget_slots = [], []
    widget_names = {w["name"] for w in frontend_widgets(node_def, frontend_version) if w["serialize"]}
    for name, entry in _ordered_inputs(node_def):
        kind, opts, _ = _spec(entry)
        if kind in WIDGET_TYPES and not opts.get("forceInput") and name in widget_names:
            widget_slots.append((name, kind))
        else:
            sockets.append((name, kind if isinstance(kind, str) else "COMBO"))
    return sockets + widget_slots


def default_title(node_type: str, node_def: dict | None, frontend_version: str = "1.27.10") -> str:
    table = TITLES_1_35 if _is_1_35(frontend_version) else TITLES_1_27
    if node_type in table:
        return table[node_type]
    if node_type in VIRTUAL_TITLES:
        return VIRTUAL_TITLES[node_type]
    return (node_def or {}).get("display_name") or node_type


# --------------------------------------------------------------------------------------------
# Graph model
# --------------------------------------------------------------------------------------------
@dataclass
class Link:
    id: int
    origin_id: object
    origin_slot: int
    target_id: object
    target_slot: int
    type: object


@dataclass
class Graph:
    nodes: dict                       # id -> node dict (as saved)
    links: dict                       # id -> Link
    inputs: list = field(default_factory=list)    # subgraph definition: input slots
    outputs: list = field(default_factory=list)   # subgraph definition: output slots
    invalid: tuple | None = None      # a dangling link the fixer could not repair (R15)


def _link(entry) -> Link:
    if isinstance(entry, dict):
        return Link(entry["id"], entry["origin_id"], entry["origin_slot"], entry["target_id"], entry["target_slot"],
                    entry.get("type"))
    return Link(*entry[:6])


def _build_graph(data: dict, is_subgraph: bool = False) -> Graph:
    nodes = {n["id"]: n for n in data.get("nodes", [])}
    links = {}
    for entry in data.get("links", []) or []:
        if entry is None:
            continue
        link = _link(entry)
        links[link.id] = link
    g = Graph(nodes, links, list(data.get("inputs", [])), list(data.get("outputs", [])))
    _fix_links(g, is_subgraph)
    return g


def _fix_links(g: Graph, is_subgraph: bool):
    """The frontend's link fixer on load (R15)."""
    boundary = {SUBGRAPH_INPUT_ID, SUBGRAPH_OUTPUT_ID} if is_subgraph else set()
    referenced = set()
    for node in g.nodes.values():
        for inp in node.get("inputs") or []:
            lid = inp.get("link")
            if lid is None:
                continue
            referenced.add(lid)
            link = g.links.get(lid)
            origin = link.origin_id if link else None
            if link is None or (origin not in g.nodes and origin not in boundary):
                # The fixer throws on this; the graph loads unfixed and graphToPrompt fails on it.
                if g.invalid is None:
                    slot = (node.get("inputs") or []).index(inp)
                    g.invalid = (node["id"], slot, inp.get("name"))
    for node in g.nodes.values():
        for out in node.get("outputs") or []:
            referenced.update(out.get("links") or [])
    for slot in g.inputs + g.outputs:
        referenced.update(slot.get("linkIds") or [])
    if g.invalid is not None:
        return
    for lid in list(g.links):
        link = g.links[lid]
        target_ok = link.target_id in g.nodes or link.target_id in boundary
        if not target_ok or lid not in referenced:
            del g.links[lid]
            origin = g.nodes.get(link.origin_id)
            if origin is not None:
                for out in origin.get("outputs") or []:
                    if out.get("links") and lid in out["links"]:
                        out["links"] = [x for x in out["links"] if x != lid]


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------
def _compatible(a, b) -> bool:
    """LiteGraph isValidConnection."""
    if not a or not b or a == "*" or b == "*":
        return True
    a, b = str(a).lower(), str(b).lower()
    if a == b:
        return True
    if "," not in a and "," not in b:
        return False
    return bool({x.strip() for x in a.split(",")} & {x.strip() for x in b.split(",")})


@dataclass
class Context:
    graph: Graph
    prefix: str                       # "" at top level, "11:" inside instance 11
    instance: dict | None = None      # the subgraph node this graph is instantiated by
    parent: "Context | None" = None


class Converter:
    def __init__(self, workflow: dict, node_defs: dict, frontend_version: str, rng, now):
        self.defs = node_defs
        self.fv = frontend_version
        self.rng = rng or random.Random()
        self.now = now or datetime.now()
        self.subgraphs = {sg["id"]: sg for sg in (workflow.get("definitions") or {}).get("subgraphs", [])}
        self._sub_graphs: dict = {}
        self.top = _build_graph(workflow)
        for g in [self.top]:
            self._patch_nodes(g)

    # -- load-time patches -------------------------------------------------------------------
    def _patch_nodes(self, g: Graph):
        renames = {**TYPE_PATCHES, **(TYPE_PATCHES_1_35 if _is_1_35(self.fv) else {})}
        for node in g.nodes.values():
            node["type"] = renames.get(node["type"], node["type"])
            vals = node.get("widgets_values")
            if node["type"] in ("KSampler", "KSamplerAdvanced", "PrimitiveNode") and isinstance(vals, list):
                for i, v in enumerate(vals):
                    if isinstance(v, bool) and (node["type"] == "PrimitiveNode" or i in (1, 2)):
                        vals[i] = "randomize" if v else "fixed"
                if node["type"] != "PrimitiveNode":
                    for i, v in enumerate(vals):
                        if isinstance(v, str) and v.startswith("sample_"):
                            vals[i] = v[len("sample_"):]

    def graph_of(self, type_id: str) -> Graph:
        if type_id not in self._sub_graphs:
            g = _build_graph(self.subgraphs[type_id], is_subgraph=True)
            self._patch_nodes(g)
            self._sub_graphs[type_id] = g
        return self._sub_graphs[type_id]

    def node_def(self, node: dict) -> dict:
        t = node["type"]
        if t not in self.defs:
            raise ConversionError(f"node {node['id']} has type '{t}', which is not known: pass --object-info with "
                                  f"the /object_info JSON of a ComfyUI server that has it, or install the pack "
                                  f"that provides it")
        return self.defs[t]

    # -- widget values -------------------------------------------------------------------------
    def widget_values(self, node: dict) -> dict:
        """name -> value for every widget of the node (serialised ones only), after the saved values."""
        widgets = frontend_widgets(self.node_def(node), self.fv)
        saved = node.get("widgets_values")
        values = {}
        if isinstance(saved, dict):
            for w in widgets:
                values[w["name"]] = saved.get(w["name"], w["default"])
        else:
            saved = list(saved or [])
            saved = self._migrate(node, widgets, saved)
            for i, w in enumerate(widgets):
                if w["name"] not in values or w["serialize"]:
                    if w["serialize"]:
                        values[w["name"]] = saved[i] if i < len(saved) else w["default"]
        return {w["name"]: values[w["name"]] for w in widgets if w["serialize"]}

    def _migrate(self, node, widgets, saved):
        """Workflows from before frontend 1.16 hold a slot for each forceInput widget: drop those slots when
        the count says so (migrateWidgetsValues)."""
        forced = [name for name, entry in _ordered_inputs(self.node_def(node))
                  if _spec(entry)[0] in WIDGET_TYPES and _spec(entry)[1].get("forceInput")]
        if forced and len(saved) == len(widgets) + len(forced):
            keep, i = [], 0
            for name, entry in _ordered_inputs(self.node_def(node)):
                kind, opts, _ = _spec(entry)
                if kind not in WIDGET_TYPES:
                    continue
                if not opts.get("forceInput"):
                    keep.append(saved[i])
                    i += 1
                    while i < len(saved) and len(keep) < len(widgets) and \
                            not widgets[len(keep)]["serialize"] and widgets[len(keep)]["name"] != name:
                        keep.append(saved[i])
                        i += 1
                else:
                    i += 1
            return keep + saved[i:]
        return saved

    # -- PrimitiveNode ----------------------------------------------------------------------------
    def apply_primitives(self, g: Graph, values: dict):
        for node in g.nodes.values():
            if node["type"] != "PrimitiveNode":
                continue
            wv = node.get("widgets_values") or []
            if not wv:
                continue
            for out in (node.get("outputs") or [])[:1]:
                for lid in out.get("links") or []:
                    link = g.links.get(lid)
                    if link is None or link.target_id not in g.nodes:
                        continue
                    target = g.nodes[link.target_id]
                    inp = next((i for i in target.get("inputs") or [] if i.get("link") == lid), None)
                    if inp and inp.get("widget") and link.target_id in values:
                        values[link.target_id][inp["widget"]["name"]] = wv[0]

    # -- link resolution -----------------------------------------------------------------------
    def resolve_link(self, ctx: Context, link_id, want_type):
        link = ctx.graph.links.get(link_id)
        if link is None:
            return None
        return self.resolve_output(ctx, link.origin_id, link.origin_slot, want_type)

    def resolve_output(self, ctx: Context, node_id, slot: int, want_type):
        if node_id == SUBGRAPH_INPUT_ID:
            return self._resolve_subgraph_input(ctx, slot, want_type)
        node = ctx.graph.nodes.get(node_id)
        if node is None:
            return None
        t = node["type"]
        if t == "Reroute":
            inp = (node.get("inputs") or [{}])[0]
            return self.resolve_link(ctx, inp.get("link"), want_type) if inp.get("link") is not None else None
        if t == "PrimitiveNode" or t in VIRTUAL_TYPES:
            return None
        if node.get("mode") == BYPASSED:
            return self._resolve_bypass(ctx, node, slot, want_type)
        if t in self.subgraphs:
            inner = Context(self.graph_of(t), f"{ctx.prefix}{node_id}:", node, ctx)
            out = inner.graph.outputs[slot]
            for lid in out.get("linkIds") or []:
                link = inner.graph.links.get(lid)
                if link is not None:
                    return self.resolve_output(inner, link.origin_id, link.origin_slot, want_type)
            return None
        return ("link", f"{ctx.prefix}{node_id}", slot)

    def _resolve_subgraph_input(self, ctx: Context, slot: int, want_type):
        name = ctx.graph.inputs[slot]["name"]
        inst = ctx.instance
        inp = next((i for i in inst.get("inputs") or [] if i.get("name") == name), None)
        if inp is not None and inp.get("link") is not None:
            return self.resolve_link(ctx.parent, inp["link"], want_type)
        values = self.promoted_values(ctx.graph, inst)
        if name in values:
            return ("value", values[name])
        return None

    def promoted_values(self, g: Graph, inst: dict) -> dict:
        """A subgraph instance's own widget values, one per subgraph input that feeds an inner widget (R11)."""
        names = []
        for sin in g.inputs:
            for lid in sin.get("linkIds") or []:
                link = g.links.get(lid)
                target = g.nodes.get(link.target_id) if link else None
                inp = next((i for i in (target or {}).get("inputs") or [] if i.get("link") == lid), None)
                if inp is not None and inp.get("widget"):
                    names.append(sin["name"])
                    break
        saved = inst.get("widgets_values") or []
        return {n: saved[i] for i, n in enumerate(names) if i < len(saved)}

    def _resolve_bypass(self, ctx: Context, node: dict, slot: int, want_type):
        inputs = node.get("inputs") or []
        if node["type"] in self.defs:
            slots = runtime_inputs(self.defs[node["type"]], self.fv)
        else:
            slots = [(i.get("name"), i.get("type")) for i in inputs]
        outputs = node.get("outputs") or []
        out_type = outputs[slot].get("type") if slot < len(outputs) else None
        chosen = None
        if want_type in ("*", "", None):
            chosen = slot if slot < len(slots) else (0 if slots else None)
        elif slot < len(slots) and _compatible(slots[slot][1], out_type) and _compatible(slots[slot][1], want_type):
            chosen = slot
        else:
            chosen = next((i for i, (_, t) in enumerate(slots) if t == want_type), None)
            if chosen is None:
                chosen = next((i for i, (_, t) in enumerate(slots)
                               if _compatible(t, out_type) and _compatible(t, want_type)), None)
        if chosen is None:
            return None
        name = slots[chosen][0]
        inp = next((i for i in inputs if i.get("name") == name), None)
        if inp is None or inp.get("link") is None:
            return None
        return self.resolve_link(ctx, inp["link"], want_type)

    # -- emit ----------------------------------------------------------------------------------
    def convert(self) -> dict:
        output = {}
        self.emit_graph(Context(self.top, ""), output)
        for entry in output.values():  # R9: links to nodes that are not in the prompt (muted) are dropped
            for k in [k for k, v in entry["inputs"].items()
                      if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and v[0] not in output]:
                del entry["inputs"][k]
        return output

    def emit_graph(self, ctx: Context, output: dict):
        g = ctx.graph
        if g.invalid is not None:
            nid, slot, name = g.invalid
            raise ConversionError(f"InvalidLinkError: No input node found for id [{nid}] slot [{slot}] {name}")
        values = {nid: self.widget_values(n) for nid, n in g.nodes.items()
                  if n["type"] not in VIRTUAL_TYPES and n["type"] not in self.subgraphs}
        self.apply_primitives(g, values)
        self._current_values = values
        for nid in sorted(g.nodes, key=lambda x: (g.nodes[x].get("order", 0), str(x))):
            node = g.nodes[nid]
            t = node["type"]
            if t in VIRTUAL_TYPES or node.get("mode") in (MUTED, BYPASSED):
                continue
            if t in self.subgraphs:
                self.emit_graph(Context(self.graph_of(t), f"{ctx.prefix}{nid}:", node, ctx), output)
                continue
            node_def = self.node_def(node)
            inputs = {}
            widgets = {w["name"]: w for w in frontend_widgets(node_def, self.fv) if w["serialize"]}
            for name, value in values[nid].items():
                if widgets[name].get("options", {}).get("dynamicPrompts") and isinstance(value, str):
                    value = process_dynamic_prompt(value, self.rng)
                if t in SAVE_NODES | ({"SaveVideo"} if _is_1_35(self.fv) else set()) and name == "filename_prefix" \
                        and isinstance(value, str):
                    value = self.replace_filename_tokens(value)
                inputs[name] = {"__value__": value} if isinstance(value, list) else value
            for inp in node.get("inputs") or []:
                if inp.get("link") is None:
                    continue
                resolved = self.resolve_link(ctx, inp["link"], inp.get("type"))
                if resolved is None:
                    continue  # R8: a widget keeps its value; a socket stays unconnected
                if resolved[0] == "value":
                    v = resolved[1]
                    inputs[inp["name"]] = {"__value__": v} if isinstance(v, list) else v
                else:
                    inputs[inp["name"]] = [resolved[1], int(resolved[2])]
            title = node.get("title") or default_title(t, node_def, self.fv)
            output[f"{ctx.prefix}{nid}"] = {"inputs": inputs, "class_type": t, "_meta": {"title": title}}

    # -- filename_prefix (R13) -------------------------------------------------------------------
    def replace_filename_tokens(self, text: str) -> str:
        def repl(m):
            token = m.group(1)
            if token.startswith("date:"):
                return format_date(token[5:], self.now)
            if "." not in token:
                return m.group(0)
            node_name, widget = token.split(".", 1)
            nodes = list(self.top.nodes.values())
            node = next((n for n in nodes if (n.get("properties") or {}).get("Node name for S&R") == node_name),
                        None) or next((n for n in nodes if n.get("title") == node_name), None)
            if node is None or node["type"] in VIRTUAL_TYPES or node["type"] not in self.defs:
                return m.group(0)
            vals = self._top_values().get(node["id"], {})
            if widget not in vals:
                return m.group(0)
            return re.sub(r'[/?<>\\:*|"\x00-\x1F\x7F]', "_", str(_js_str(vals[widget])))

        return re.sub(r"%([^%]+)%", repl, text)

    def _top_values(self):
        if not hasattr(self, "_top_cache"):
            values = {nid: self.widget_values(n) for nid, n in self.top.nodes.items()
                      if n["type"] not in VIRTUAL_TYPES and n["type"] not in self.subgraphs}
            self.apply_primitives(self.top, values)
            self._top_cache = values
        return self._top_cache


def _js_str(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return v


def format_date(fmt: str, now: datetime) -> str:
    parts = {"yyyy": f"{now.year:04d}", "yy": f"{now.year % 100:02d}", "MM": f"{now.month:02d}",
             "M": str(now.month), "dd": f"{now.day:02d}", "d": str(now.day), "hh": f"{now.hour:02d}",
             "h": str(now.hour), "mm": f"{now.minute:02d}", "m": str(now.minute), "ss": f"{now.second:02d}",
             "s": str(now.second)}
    return re.sub(r"yyyy|yy|MM|M|dd|d|hh|h|mm|m|ss|s", lambda m: parts[m.group(0)], fmt)


# --------------------------------------------------------------------------------------------
# Dynamic prompts (R12)
# --------------------------------------------------------------------------------------------
_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//.*")


def process_dynamic_prompt(text: str, rng: random.Random) -> str:
    """Strip // and /* */ comments, pick one option of every {a|b} group (nested too), unescape \\{ \\} \\|."""
    text = _COMMENTS.sub("", text)
    pos = 0

    def parse(in_group: bool):
        """Returns (options, end) where options is the list of alternatives parsed (one when not in a group)."""
        nonlocal pos
        options, current = [], []
        while pos < len(text):
            ch = text[pos]
            if ch == "\\" and pos + 1 < len(text):
                current.append(text[pos:pos + 2])
                pos += 2
            elif ch == "{":
                pos += 1
                choices = parse(True)
                current.append(rng.choice(choices) if choices else "")
            elif ch == "}" and in_group:
                pos += 1
                options.append("".join(current))
                return options
            elif ch == "|" and in_group:
                pos += 1
                options.append("".join(current))
                current = []
            else:
                current.append(ch)
                pos += 1
        options.append("".join(current))
        return options

    result = "".join(parse(False))
    return re.sub(r"\\([{}|])", r"\1", result)


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------
def ui_to_api(workflow: dict, node_defs: dict, frontend_version: str = "1.27.10", rng=None, now=None) -> dict:
    """The API prompt ComfyUI's frontend posts for this UI workflow."""
    import copy

    return Converter(copy.deepcopy(workflow), node_defs, frontend_version, rng, now).convert()


def is_ui_workflow(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def load_prompt(data: dict, node_defs: dict, **kwargs) -> tuple[dict, dict | None]:
    """(API prompt, UI workflow or None) from any of: a UI workflow, an API prompt, {"prompt": ...}."""
    if is_ui_workflow(data):
        return ui_to_api(data, node_defs, **kwargs), data
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        workflow = ((data.get("extra_data") or {}).get("extra_pnginfo") or {}).get("workflow")
        return data["prompt"], workflow
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        return data, None
    raise ConversionError("not a ComfyUI workflow: expected a UI workflow (with 'nodes'), an API prompt "
                          "({id: {class_type, inputs}}) or {'prompt': ...}")


# --------------------------------------------------------------------------------------------
# Queueing again: control_after_generate (R16)
# --------------------------------------------------------------------------------------------
JS_SAFE_MAX = 1125899906842624  # 2**50: the frontend caps random and clamped values here


def _control_value(value, mode, spec_kind, opts, choices, filter_text, rng):
    """The next value of one widget under its control mode, as the frontend's value control does."""
    if spec_kind == "COMBO":
        options = list(choices or [])
        if filter_text:
            try:
                rx = re.compile(filter_text.strip("/"), re.IGNORECASE) if filter_text.startswith("/") else None
            except re.error:
                rx = None
            options = [o for o in options if (rx.search(str(o)) if rx else filter_text.lower() in str(o).lower())] \
                or options
        if not options or mode == "fixed":
            return value
        i = options.index(value) if value in options else -1
        if mode == "increment":
            return options[min(i + 1, len(options) - 1)]
        if mode == "increment-wrap":
            return options[(i + 1) % len(options)]
        if mode == "decrement":
            return options[max(i - 1, 0)]
        if mode == "randomize":
            return options[int(rng.random() * len(options))]
        return value
    step = opts.get("step", 1) or 1
    lo = max(-JS_SAFE_MAX, opts.get("min", 0))
    hi = min(JS_SAFE_MAX, opts.get("max", 2048))
    if mode == "increment":
        value = value + step
    elif mode == "decrement":
        value = value - step
    elif mode == "randomize":
        value = int(rng.random() * ((hi - lo) / step)) * step + lo
    value = min(max(value, lo), hi)
    return int(value) if spec_kind == "INT" and float(value).is_integer() else value


def apply_widget_controls(workflow: dict, node_defs: dict, frontend_version: str = "1.27.10", rng=None) -> dict:
    """Advance every control_after_generate widget once, in place, as app.queuePrompt does after a run
    ("after" mode; "before" mode is the same call made before every queue except the first after a load).
    Returns the workflow. A PrimitiveNode's control changes its own value, which its targets then take."""
    rng = rng or random.Random()
    graphs = [workflow] + list((workflow.get("definitions") or {}).get("subgraphs", []))
    for g in graphs:
        for node in g.get("nodes", []):
            vals = node.get("widgets_values")
            if not isinstance(vals, list):
                continue
            if node.get("type") == "PrimitiveNode":
                _control_primitive(g, node, node_defs, frontend_version, rng)
                continue
            node_def = node_defs.get(node.get("type"))
            if node_def is None:
                continue
            widgets = frontend_widgets(node_def, frontend_version)
            for i, w in enumerate(widgets):
                if not w.get("control") or i == 0 or i >= len(vals):
                    continue
                target = widgets[i - 1]
                filt = vals[i + 1] if i + 1 < len(widgets) and widgets[i + 1]["name"] == "control_filter_list" \
                    and i + 1 < len(vals) else ""
                vals[i - 1] = _control_value(vals[i - 1], vals[i], target["type"], target["options"],
                                             target.get("choices"), filt, rng)
    return workflow


def _control_primitive(g, node, node_defs, frontend_version, rng):
    """A PrimitiveNode takes the type and options of the widget it feeds; widgets_values [value, mode, filter?]."""
    vals = node["widgets_values"]
    if len(vals) < 2:
        return
    links = {(_link(e).id): _link(e) for e in g.get("links", []) if e is not None}
    for lid in ((node.get("outputs") or [{}])[0].get("links") or []):
        link = links.get(lid)
        target = next((n for n in g.get("nodes", []) if link and n["id"] == link.target_id), None)
        inp = next((i for i in (target or {}).get("inputs") or [] if i.get("link") == lid), None)
        if not inp or not inp.get("widget") or target["type"] not in node_defs:
            continue
        spec = next((w for w in frontend_widgets(node_defs[target["type"]], frontend_version)
                     if w["name"] == inp["widget"]["name"]), None)
        if spec is not None:
            vals[0] = _control_value(vals[0], vals[1], spec["type"], spec["options"], spec.get("choices"),
                                     vals[2] if len(vals) > 2 else "", rng)
        return
