"""Regenerate the shipped UI workflows: `python workflows/build.py` (from the repo root).

The JSON files are what users load in ComfyUI; writing them with the builder keeps their widget order in
step with the nodes' INPUT_TYPES. Each one is run by tests/test_workflows.py.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _pack():
    try:
        import comfyui_opensora  # noqa: F401
    except ImportError:  # a plain checkout: import the folder as the package
        import importlib.util

        root = os.path.dirname(HERE)
        spec = importlib.util.spec_from_file_location("comfyui_opensora", os.path.join(root, "__init__.py"),
                                                      submodule_search_locations=[root])
        module = importlib.util.module_from_spec(spec)
        sys.modules["comfyui_opensora"] = module
        spec.loader.exec_module(module)
    from comfyui_opensora.harness import pack
    from comfyui_opensora.harness.workflow_builder import WorkflowBuilder

    p = pack.load_pack()
    return pack.node_definitions(p), WorkflowBuilder


def video_convert(defs, Builder):
    b = Builder(defs)
    load = b.add("OpenSoraLoadVideo", 0, video="none", frame_cap=0, resize="none")
    save = b.add("OpenSoraSaveVideo", 1, fps=24.0, filename_prefix="OpenSora/converted", format="webm (vp9)")
    b.connect(load, 0, save, "images")
    b.connect(load, 1, save, "fps")
    b.note("Re-encode a video: pick it in 'video' (or set 'path'), choose the format on the right. "
           "Frame cap, stride and resize trim it on the way.", 0)
    return b


WORKFLOWS = {"video_convert": video_convert}


def main():
    defs, Builder = _pack()
    for name, fn in WORKFLOWS.items():
        fn(defs, Builder).save(os.path.join(HERE, f"{name}.json"), name)
        print(f"wrote workflows/{name}.json")


if __name__ == "__main__":
    main()
