"""Reading golden cases (see ../shared/golden/README.md for the format)."""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass

import torch
from safetensors.torch import load_file

from conftest import golden_root


@dataclass
class Case:
    component_dir: str        # .../golden/v1.2/stdit3
    component: str            # "v1.2/stdit3"
    name: str                 # "cfg_xmask"
    spec: dict                # the case json

    @property
    def tensors(self) -> dict:
        f = self.spec.get("tensor_file")
        return load_file(os.path.join(self.component_dir, f)) if f else {}

    @property
    def config(self) -> dict:
        p = os.path.join(self.component_dir, "config.json")
        return json.load(open(p)) if os.path.exists(p) else {}

    @property
    def weights_path(self) -> str:
        return os.path.join(self.component_dir, "weights.safetensors")

    @property
    def tolerance(self) -> dict:
        tol = self.spec.get("recommended_tolerance", {})
        return {"atol": tol.get("atol", 1e-5), "rtol": tol.get("rtol", 1e-5)}


def discover(components) -> list[Case]:
    """Every case_*.json under each component folder, sorted; components are 'v1.2/stdit3' strings."""
    root = golden_root()
    cases = []
    for comp in sorted(components):
        cdir = os.path.join(root, comp)
        for path in sorted(glob.glob(os.path.join(cdir, "case_*.json"))):
            name = os.path.basename(path)[len("case_"):-len(".json")]
            cases.append(Case(cdir, comp, name, json.load(open(path))))
    return cases


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float):
    """torch.testing.assert_close with the max error in the message (the closing notes quote it)."""
    actual = actual.detach().to("cpu")
    expected = expected.to(actual.dtype) if expected.is_floating_point() else expected
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    if expected.is_floating_point():
        err = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
        torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol,
                                   msg=lambda m: f"{name}: max abs err {err:.3e}\n{m}")
    else:
        assert torch.equal(actual, expected), f"{name}: values differ"
