"""Golden parity: every case_*.json in every component folder that has a runner.

A case that its runner cannot run fails; nothing is skipped. Ids are '<component>/<case>',
e.g. 'v1.2/stdit3/cfg_xmask', so `pytest -k v1.2/stdit3` selects a component.
"""
import os

import pytest

from golden import discover
from golden_runners import all_runners

RUNNERS = all_runners()
CASES = discover(RUNNERS)


@pytest.mark.golden
@pytest.mark.parametrize("case", CASES, ids=[f"{c.component}/{c.name}" for c in CASES])
def test_golden(case):
    RUNNERS[case.component](case)


@pytest.mark.golden
@pytest.mark.parametrize("component", sorted(RUNNERS))
def test_component_has_cases(component, golden_dir):
    """A runner whose folder has vanished or holds no case would otherwise pass silently."""
    assert os.path.isdir(os.path.join(golden_dir, component)), f"no golden folder for {component}"
    assert any(c.component == component for c in CASES), f"no case_*.json in {component}"
