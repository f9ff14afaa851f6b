"""Accuracy of the bundled demo model, scored by the model-free detector (demo/detector.py).

    python benchmarks/demo_eval.py [--suites seen held_out i2v extend loop] [--n N] [--models-dir DIR]

Writes benchmarks/results/demo_eval.json: per suite the accuracy, the number of videos and every video's
detected colour / shape / motion. Goals (issue #4): seen >= 0.9, held-out >= 0.7.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _pack():
    sys.path.insert(0, os.path.dirname(HERE))  # the repository root, for _import_pack only
    import _import_pack

    sys.path.remove(os.path.dirname(HERE))
    _import_pack.ensure()


def main():
    _pack()
    from comfyui_opensora.demo import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suites", nargs="+", default=list(evaluate.SUITES), choices=evaluate.SUITES)
    ap.add_argument("--n", type=int, default=None, help="first N scenes of each suite (default: all)")
    ap.add_argument("--steps", type=int, default=evaluate.STEPS)
    ap.add_argument("--cfg", type=float, default=evaluate.CFG)
    ap.add_argument("--models-dir", default=None, help="demo model files (default: the bundled demo_models/)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "demo_eval.json"))
    args = ap.parse_args()
    t = time.time()
    res = evaluate.evaluate(args.models_dir, args.suites, args.n, args.steps, args.cfg)
    res["seconds"] = round(time.time() - t, 1)
    res["summary"] = {k: round(v["accuracy"], 3) for k, v in res["suites"].items()}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(args.out + ".tmp", args.out)
    print(json.dumps(res["summary"]))


if __name__ == "__main__":
    main()
