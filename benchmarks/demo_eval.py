"""Accuracy of the bundled demo model, scored by the model-free detector (demo/detector.py).

    python benchmarks/demo_eval.py [--suites seen held_out i2v extend loop] [--n N] [--models-dir DIR]

Writes benchmarks/results/demo_eval.json: per suite the accuracy, the number of videos and every video's
detected colour / shape / motion. Goals (issue #4): seen >= 0.9, held-out >= 0.7.
"""
import argparse
import json
import time

from common import RESULTS, import_pack, write_result


def main():
    import_pack()
    from comfyui_opensora.demo import evaluate

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suites", nargs="+", default=list(evaluate.SUITES), choices=evaluate.SUITES)
    ap.add_argument("--n", type=int, default=None, help="first N scenes of each suite (default: all)")
    ap.add_argument("--steps", type=int, default=evaluate.STEPS)
    ap.add_argument("--cfg", type=float, default=evaluate.CFG)
    ap.add_argument("--models-dir", default=None, help="demo model files (default: the bundled demo_models/)")
    ap.add_argument("--out", default=None, help=f"default: {RESULTS}/demo_eval.json")
    args = ap.parse_args()
    t = time.time()
    res = evaluate.evaluate(args.models_dir, args.suites, args.n, args.steps, args.cfg)
    res["seconds"] = round(time.time() - t, 1)
    res["summary"] = {k: round(v["accuracy"], 3) for k, v in res["suites"].items()}
    write_result(res, "demo_eval", args.out, indent=1)
    print(json.dumps(res["summary"]))


if __name__ == "__main__":
    main()
