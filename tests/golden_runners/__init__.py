"""Golden-case runners, one module per family/component.

Each module defines RUNNERS = {"<version>/<component>": run}, where run(case: golden.Case) loads the
component's weights, runs the call the case json describes and asserts every output within the
case's recommended tolerance. test_golden.py runs every case_*.json of every folder named here.
"""
import importlib
import pkgutil


def all_runners() -> dict:
    runners = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        runners.update(getattr(module, "RUNNERS", {}))
    return runners
