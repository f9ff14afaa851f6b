"""Build UI-format (schema 0.4) workflows in code, as ComfyUI's editor would save them.

The shipped workflows in workflows/ are written by workflows/build.py with this builder, so their widget
order always matches the nodes' INPUT_TYPES (including the frontend-only control_after_generate entries).
"""
from __future__ import annotations

import json
import uuid

from .convert import frontend_widgets


class WorkflowBuilder:
    def __init__(self, node_defs: dict):
        self.defs = node_defs
        self.nodes: list[dict] = []
        self.links: list[list] = []
        self.groups: list[dict] = []
        self._column: dict[int, float] = {}

    def add(self, class_type: str, column: int = 0, title: str | None = None, mode: int = 0, **widgets) -> int:
        """Add a node; widget values by input name (others keep their defaults). Returns the node id."""
        node_def = self.defs[class_type]
        values = []
        known = set()
        for w in frontend_widgets(node_def):
            known.add(w["name"])
            if w["name"] in widgets:
                values.append(widgets[w["name"]])
            elif w.get("control"):
                values.append("fixed")  # shipped workflows reproduce: the seed stays as saved
            else:
                values.append(w["default"])
        unknown = set(widgets) - known
        if unknown:
            raise KeyError(f"{class_type} has no widget(s) {sorted(unknown)}")
        nid = len(self.nodes) + 1
        inputs = []
        for section in ("required", "optional"):
            for name, spec in node_def["input"].get(section, {}).items():
                kind = spec[0]
                if isinstance(kind, str) and kind not in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                    inputs.append({"name": name, "type": kind, "link": None})
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (n, t) in enumerate(zip(node_def["output_name"], node_def["output"]))]
        y = self._column.get(column, 0.0)
        self._column[column] = y + 60 + 26 * (len(values) + len(inputs) + len(outputs))
        node = {"id": nid, "type": class_type, "pos": [40 + 360 * column, 40 + y], "size": [320, 0],
                "flags": {}, "order": nid - 1, "mode": mode, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": class_type}, "widgets_values": values}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return nid

    def connect(self, src: int, src_slot: int, dst: int, input_name: str):
        s, d = self.nodes[src - 1], self.nodes[dst - 1]
        link_id = len(self.links) + 1
        slot = next((i for i, inp in enumerate(d["inputs"]) if inp["name"] == input_name), None)
        out_type = s["outputs"][src_slot]["type"]
        if slot is None:  # a widget turned into an input (compressed form: only linked widget inputs are listed)
            d["inputs"].append({"name": input_name, "type": out_type, "link": None, "widget": {"name": input_name}})
            slot = len(d["inputs"]) - 1
        d["inputs"][slot]["link"] = link_id
        s["outputs"][src_slot]["links"].append(link_id)
        self.links.append([link_id, src, src_slot, dst, slot, out_type])

    def note(self, text: str, column: int = 0):
        nid = len(self.nodes) + 1
        y = self._column.get(column, 0.0)
        self._column[column] = y + 160
        self.nodes.append({"id": nid, "type": "Note", "pos": [40 + 360 * column, 40 + y], "size": [320, 140],
                           "flags": {}, "order": nid - 1, "mode": 0, "inputs": [], "outputs": [],
                           "properties": {}, "widgets_values": [text]})
        return nid

    def to_ui(self, name: str) -> dict:
        for n in self.nodes:
            n["size"][1] = max(n["size"][1], 40 + 26 * len(n["widgets_values"]))
        return {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-opensora/{name}")), "revision": 0,
                "last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": self.groups, "config": {},
                "extra": {"ds": {"scale": 1.0, "offset": [0, 0]}}, "version": 0.4}

    def save(self, path: str, name: str):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_ui(name), f, indent=2)
            f.write("\n")
