// ComfyUI-OpenSora frontend extension: checks mask_strategy strings as they are typed, so a malformed
// strategy shows on the node before a run fails on it. The syntax mirrors models/mask_strategy.py.
// Served at /extensions/<pack folder>/js/opensora.js: three levels up is the web root, for any folder name.
import { app } from "../../../scripts/app.js";

const GROUP = /^\s*-?\d+(\s*,\s*-?\d+){0,4}(\s*,\s*(0|1|0?\.\d+|1\.0*))?\s*$/;

export function maskStrategyProblem(text) {
  if (!text || !text.trim()) return null;
  const groups = text.split(";");
  for (let i = 0; i < groups.length; i++) {
    if (!GROUP.test(groups[i])) {
      return `group ${i + 1} ("${groups[i].trim()}") is not 'loop,ref,ref_start,target_start,length,edit_ratio'`;
    }
  }
  return null;
}

app.registerExtension({
  name: "comfyui_opensora.maskStrategy",
  async nodeCreated(node) {
    if (node.comfyClass !== "OpenSoraMaskStrategy") return;
    const widget = node.widgets?.find((w) => w.name === "mask_strategy");
    if (!widget) return;
    const original = widget.callback;
    const check = () => {
      const problem = maskStrategyProblem(widget.value);
      node.bgcolor = problem ? "#5a2a2a" : undefined;
      widget.options = { ...(widget.options || {}), tooltip: problem || "mask_strategy: ok" };
      node.setDirtyCanvas?.(true, true);
    };
    widget.callback = function () {
      const r = original?.apply(this, arguments);
      check();
      return r;
    };
    check();
  },
});
