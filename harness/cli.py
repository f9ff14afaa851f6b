"""Command line: `python -m comfyui_opensora run|nodes|convert|validate ...`."""
from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
import time

from .. import comfy_adapter
from . import pack as pack_mod
from .convert import ConversionError, apply_widget_controls, load_prompt
from .execute import ExecutionInterrupted, Executor, NodeExecutionError
from .validate import format_report, validate_prompt

FRONTEND_VERSION = "1.27.10"


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"error: file not found: {path}")
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path} is not valid JSON ({e})")


# --------------------------------------------------------------------------------------------
# --set NODE.INPUT=VALUE
# --------------------------------------------------------------------------------------------
def _declared_inputs(node_def: dict) -> dict:
    spec = node_def.get("input", {})
    return {**spec.get("required", {}), **spec.get("optional", {})}


def _coerce(value: str, input_spec):
    """A --set value as the input's declared type, so `--set seed=7` is an INT and `--set prompt=123` a STRING."""
    kind = input_spec[0] if input_spec else None
    if kind == "INT":
        try:  # exactly: through float, seeds past 2**53 would change and the maximum seed overflow the max
            return int(value.strip().replace("_", ""), 0)
        except ValueError:
            number = float(value)  # 1e3 or 7.0 are integers too; 7.5 is not
            if not number.is_integer():
                raise ValueError(f"'{value}' is not an integer") from None
            return int(number)
    if kind == "FLOAT":
        return float(value)
    if kind == "BOOLEAN":
        low = value.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"'{value}' is not a boolean (use true or false)")
    return value


def apply_sets(prompt: dict, sets: list[str], defs: dict) -> list[str]:
    """Apply every --set to the API prompt in place; returns a list of error messages (empty when fine)."""
    errors = []
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq:
            errors.append(f"--set {item}: expected NODE.INPUT=VALUE or INPUT=VALUE")
            continue
        node_ref, dot, name = key.rpartition(".")
        if not dot:
            node_ref, name = None, key
        if node_ref is not None:
            targets = [nid for nid, n in prompt.items()
                       if nid == node_ref or n.get("_meta", {}).get("title") == node_ref]
            if not targets:
                errors.append(f"--set {item}: no node with id or title '{node_ref}' "
                              f"(ids: {', '.join(sorted(prompt))})")
                continue
        else:
            targets = [nid for nid, n in prompt.items()
                       if name in _declared_inputs(defs.get(n.get("class_type"), {}))]
            if len(targets) != 1:
                where = ", ".join(f"{nid} ({prompt[nid]['class_type']})" for nid in sorted(targets))
                errors.append(f"--set {item}: " + (f"no node has an input '{name}'" if not targets else
                              f"several nodes have an input '{name}': {where}; write NODE.{name}=... "
                              f"with one of those ids"))
                continue
        for nid in targets:
            spec = _declared_inputs(defs.get(prompt[nid]["class_type"], {})).get(name)
            if spec is None:
                errors.append(f"--set {item}: node {nid} ({prompt[nid]['class_type']}) has no input '{name}'")
                continue
            try:
                prompt[nid]["inputs"][name] = _coerce(value, spec)
            except ValueError as e:
                errors.append(f"--set {item}: {e}")
    return errors


# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------
class Terminated(BaseException):
    """SIGTERM: raised where the run is, so the writers' cleanup (no half-written or hidden .partial file) runs."""


def _on_ctrl_c(*_):
    """The first Ctrl-C cancels at the next check (between steps, layers, frames); a second one quits now."""
    if comfy_adapter._cancel.is_set():
        raise KeyboardInterrupt
    comfy_adapter.request_cancel()
    print("\ncancelling at the next step (Ctrl-C again to quit now)", file=sys.stderr, flush=True)


def _on_sigterm(*_):
    raise Terminated


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
def _load(args, pack):
    defs = pack_mod.node_definitions(pack, getattr(args, "object_info", None))
    data = _read_json(args.workflow)
    try:
        prompt, workflow = load_prompt(data, defs, frontend_version=FRONTEND_VERSION)
    except ConversionError as e:
        raise SystemExit(f"error: the workflow cannot be converted (ComfyUI's frontend would refuse it too): {e}")
    return defs, prompt, workflow, data


def cmd_convert(args) -> int:
    pack = pack_mod.load_pack()
    _, prompt, _, _ = _load(args, pack)
    print(json.dumps(prompt, indent=2))
    return 0


def cmd_validate(args) -> int:
    pack = pack_mod.load_pack()
    defs, prompt, _, _ = _load(args, pack)
    result = validate_prompt(prompt, defs, pack.classes)
    if result["http_status"] == 200 and not result["response"].get("node_errors"):
        print(f"ok: the server would accept this prompt ({len(result['outputs_to_execute'])} output node(s))")
        return 0
    print(format_report(result))
    return 0 if result["http_status"] == 200 else 1


def _saved_files(outputs: dict) -> list[str]:
    files = []
    for ui in outputs.values():
        for key in ("images", "gifs", "video", "audio"):
            for item in ui.get(key, []) or []:
                if isinstance(item, dict) and item.get("type", "output") == "output" and "filename" in item:
                    files.append(os.path.join(comfy_adapter.output_directory(), item.get("subfolder", ""),
                                              item["filename"]))
    return files


class _ConsoleProgress:
    """Headless progress: one line per node, a tqdm bar for nodes that report steps."""

    def __init__(self, prompt):
        self.prompt, self.bar, self.bar_node = prompt, None, None

    def __call__(self, event, data):
        from tqdm.auto import tqdm

        if event == "executing" and data.get("node") is not None:
            self._close()
            nid = data["node"]
            node = self.prompt.get(nid, {})
            title = node.get("_meta", {}).get("title") or node.get("class_type")
            print(f"[{nid}] {title}", file=sys.stderr, flush=True)
        elif event == "progress":
            if self.bar is None or self.bar_node != data.get("node"):
                self._close()
                self.bar, self.bar_node = tqdm(total=data["max"], leave=False, file=sys.stderr), data.get("node")
            self.bar.n = data["value"]
            self.bar.refresh()
        elif event in ("executed", "execution_success", "execution_error", "execution_interrupted"):
            self._close()

    def _close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_run(args) -> int:
    comfy_adapter.configure(models_dir=args.models_dir, output_dir=args.output_dir, input_dir=args.input_dir,
                            device=None if args.device == "auto" else args.device)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda was given but no CUDA GPU is available; use --device auto or cpu",
                  file=sys.stderr)
            return 2
    pack = pack_mod.load_pack()
    defs, prompt, workflow, data = _load(args, pack)
    executor = Executor(pack.classes)  # one session: unchanged nodes (loaded models) are reused across runs
    for run in range(args.repeat):
        if run > 0:
            if workflow is None:
                print("note: an API prompt has no seed controls; the repeat runs the same prompt", file=sys.stderr)
            else:  # what pressing Run again does: advance every control_after_generate widget, convert again
                apply_widget_controls(workflow, defs, FRONTEND_VERSION)
                prompt, _ = load_prompt(workflow, defs, frontend_version=FRONTEND_VERSION)
        rc = _run_once(args, pack, defs, copy.deepcopy(prompt), workflow, data, executor)
        if rc:
            return rc
    return 0


def _run_once(args, pack, defs, prompt, workflow, data, executor) -> int:
    errors = apply_sets(prompt, args.set or [], defs)
    if errors:
        print("\n".join(f"error: {e}" for e in errors), file=sys.stderr)
        return 2
    result = validate_prompt(prompt, defs, pack.classes)
    if result["http_status"] != 200:
        print(format_report(result), file=sys.stderr)
        return 1
    if result["response"].get("node_errors"):
        print("warning: some outputs are invalid and will not run:\n" + format_report(result), file=sys.stderr)
    extra_data = {}
    if workflow is not None:
        extra_data["extra_pnginfo"] = {"workflow": workflow}
    elif isinstance(data, dict) and isinstance(data.get("extra_data"), dict):
        extra_data = data["extra_data"]

    previous = signal.signal(signal.SIGINT, _on_ctrl_c)
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    start = time.time()
    try:
        out = executor.run(result["validated_prompt"], extra_data=extra_data,
                           outputs=result["outputs_to_execute"], on_event=_ConsoleProgress(prompt))
    except ExecutionInterrupted:
        print("cancelled: stopped cleanly, no partial files were written", file=sys.stderr)
        return 130
    except NodeExecutionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Terminated:
        print("terminated: stopped, no partial files were written", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        comfy_adapter.clear_cancel()
    for path in _saved_files(out["outputs"]):
        print(path)
    print(f"done in {time.time() - start:.1f}s", file=sys.stderr)
    return 0


def cmd_nodes(args) -> int:
    pack = pack_mod.load_pack()
    print(node_reference(pack))
    return 0


def node_reference(pack) -> str:
    """Markdown reference of every node: the README's node list is this output."""
    lines = []
    by_cat = {}
    for name, info in pack.object_info.items():
        by_cat.setdefault(info["category"], []).append((name, info))
    for cat in sorted(by_cat):
        lines.append(f"### {cat}\n")
        for name, info in sorted(by_cat[cat]):
            lines.append(f"#### {info['display_name']} (`{name}`)\n")
            if info["description"]:
                lines.append(info["description"] + "\n")
            for section in ("required", "optional"):
                for inp, spec in info["input"].get(section, {}).items():
                    kind = spec[0] if isinstance(spec[0], str) else "COMBO"
                    opts = spec[1] if len(spec) > 1 else {}
                    extra = f", default `{opts['default']}`" if "default" in opts else ""
                    opt = " (optional)" if section == "optional" else ""
                    lines.append(f"- `{inp}` {kind}{opt}{extra}: {opts.get('tooltip', '')}")
            tips = info.get("output_tooltips", [""] * len(info["output"]))
            for out_name, kind, tip in zip(info["output_name"], info["output"], tips):
                lines.append(f"- → `{out_name}` {kind if isinstance(kind, str) else 'COMBO'}: {tip}")
            lines.append("")
    return "\n".join(lines)


TINY_COGVIDEOX = ("2b", "5b", "5b_i2v", "1.5", "1.5_i2v")


def tiny_recipes(models_dir: str) -> list[str]:
    """Commands that run shipped workflows on the tiny checkpoints (tiny sizes, 2 steps)."""
    from ..models.tiny import TINY_FILES

    run = f"python -m comfyui_opensora run {{}} --models-dir {models_dir}"
    v12 = " ".join(f"--set {k}={os.path.basename(TINY_FILES[f])}" for k, f in
                   (("model_name", "model"), ("vae_name", "vae"), ("text_encoder_name", "text_encoder")))
    size = "--set resolution=custom --set width=64 --set height=48 --set num_frames=17 --set steps=2"
    cog = (f"--set model_name=cog_5b --set vae_name=cog_5b --set text_encoder_name={os.path.basename(TINY_FILES['text_encoder'])}"
           f" --set width=64 --set height=64 --set num_frames=17 --set steps=2")
    return [f"{run.format('workflows/opensora_v1.2_t2v.json')} {v12} {size}",
            f"{run.format('workflows/cogvideox_t2v.json')} {cog}"]


def cmd_tiny_models(args) -> int:
    from ..models.tiny import write_tiny_cogvideox, write_tiny_models

    for kind, path in write_tiny_models(args.models_dir).items():
        print(f"{kind}: {path}")
    for variant in TINY_COGVIDEOX:  # diffusers-layout folders, picked in both the model and the VAE loader
        path = write_tiny_cogvideox(os.path.join(args.models_dir, "opensora", f"cog_{variant}"), variant)
        print(f"cogvideox {variant}: {path}")
    print("\nRun a shipped workflow on them (64x48, 17 frames, 2 steps; the videos are noise):")
    for line in tiny_recipes(args.models_dir):
        print("  " + line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m comfyui_opensora",
                                description="Run ComfyUI-OpenSora workflows headless, exactly as ComfyUI would.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a workflow (UI or API JSON) and print the saved files")
    r.add_argument("workflow")
    r.add_argument("--set", action="append", metavar="[NODE.]INPUT=VALUE",
                   help="override a widget value; NODE is a node id or title, optional when one node has INPUT")
    r.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    r.add_argument("--models-dir", help="models root (default $OPENSORA_MODELS_DIR or ./models)")
    r.add_argument("--output-dir", help="output folder (default $OPENSORA_OUTPUT_DIR or ./output)")
    r.add_argument("--input-dir", help="input folder for loader nodes (default ./input)")
    r.add_argument("--object-info", help="ComfyUI /object_info JSON for core nodes used by the workflow")
    r.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="queue the workflow N times, advancing seed controls (randomize/increment) between runs "
                        "as ComfyUI's Run button does; loaded models are reused")
    r.set_defaults(fn=cmd_run)

    n = sub.add_parser("nodes", help="print the node reference")
    n.set_defaults(fn=cmd_nodes)

    c = sub.add_parser("convert", help="print the API prompt for a UI workflow, as ComfyUI's frontend makes it")
    c.add_argument("workflow")
    c.add_argument("--object-info")
    c.set_defaults(fn=cmd_convert)

    v = sub.add_parser("validate", help="check a prompt as ComfyUI's server would (exit 0 when accepted)")
    v.add_argument("workflow")
    v.add_argument("--object-info")
    v.set_defaults(fn=cmd_validate)
    t = sub.add_parser("tiny-models", help="write tiny random-weight checkpoints (real layouts) for trying workflows")
    t.add_argument("--models-dir", default="models")
    t.set_defaults(fn=cmd_tiny_models)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)
