"""The two errors model code raises for the nodes to turn into messages (nodes/common.py adds the node)."""
from __future__ import annotations


class ModelLoadError(ValueError):
    pass


class InputError(ValueError):
    """A bad node input, raised from model code: which input, what is wrong, how to fix it."""

    def __init__(self, input_name: str, problem: str, fix: str):
        super().__init__(f"input '{input_name}': {problem}. Fix: {fix}")
        self.input_name, self.problem, self.fix = input_name, problem, fix
