"""Accuracy of the bundled demo model, scored by the model-free detector (demo/detector.py).

    python benchmarks/demo_eval.py [--suites seen held_out i2v extend loop] [--n N] [--models-dir DIR]
                                   [--cache-threshold T [--cache-start S] [--cache-end E]]

Writes benchmarks/results/demo_eval.json: per suite the accuracy, the number of videos and every video's
detected colour / shape / motion. Goals (issue #4): seen >= 0.9, held-out >= 0.7.

With --cache-threshold the same run also samples with step caching (models/step_cache.py) and writes
demo_eval_step_cache.json: per suite both accuracies, their difference and the share of transformer calls
skipped (goal, issue #14: at most 0.05 lower on every suite with at least 30% skipped).
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
    ap.add_argument("--cache-threshold", type=float, default=None)
    ap.add_argument("--cache-start", type=float, default=0.1)
    ap.add_argument("--cache-end", type=float, default=0.9)
    ap.add_argument("--out", default=None, help=f"default: {RESULTS}/demo_eval.json")
    args = ap.parse_args()
    t = time.time()
    res = evaluate.evaluate(args.models_dir, args.suites, args.n, args.steps, args.cfg)
    res["seconds"] = round(time.time() - t, 1)
    res["summary"] = {k: round(v["accuracy"], 3) for k, v in res["suites"].items()}
    if args.cache_threshold is None:
        write_result(res, "demo_eval", args.out, indent=1)
        print(json.dumps(res["summary"]))
        return
    cache = {"threshold": args.cache_threshold, "start": args.cache_start, "end": args.cache_end}
    t = time.time()
    cached = evaluate.evaluate(args.models_dir, args.suites, args.n, args.steps, args.cfg, cache)
    suites = {}
    for name, run in cached["suites"].items():
        calls = run["transformer_calls"]
        suites[name] = {"accuracy_uncached": res["suites"][name]["accuracy"], "accuracy_cached": run["accuracy"],
                        "accuracy_drop": res["suites"][name]["accuracy"] - run["accuracy"], "n": run["n"],
                        "calls": calls["calls"], "skipped": calls["skipped"],
                        "skipped_share": calls["skipped"] / max(1, calls["calls"])}
    out = {"steps": args.steps, "cfg": args.cfg, "cache": cache, "seconds_uncached": res["seconds"],
           "seconds_cached": round(time.time() - t, 1), "suites": suites,
           "goal_met": all(s["accuracy_drop"] <= 0.05 and s["skipped_share"] >= 0.3 for s in suites.values())}
    write_result(out, "demo_eval_step_cache", args.out, indent=1)
    print(json.dumps({k: (round(v["accuracy_drop"], 3), round(v["skipped_share"], 3)) for k, v in suites.items()}))


if __name__ == "__main__":
    main()
