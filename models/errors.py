"""The two errors model code raises for the nodes to turn into messages (nodes/common.py adds the node)."""
from __future__ import annotations


class ModelLoadError(ValueError):
    pass


class DamagedFileError(ModelLoadError):
    """A weight file cut short or corrupted (an interrupted download, a full disk)."""

    def __init__(self, name: str, detail: str):
        self.problem, self.fix = f"'{name}' is incomplete or damaged ({detail})", "download it again"
        super().__init__(f"{self.problem}: {self.fix}")


class InputError(ValueError):
    """A bad node input, raised from model code: which input, what is wrong, how to fix it."""

    def __init__(self, input_name: str, problem: str, fix: str):
        super().__init__(f"input '{input_name}': {problem}. Fix: {fix}")
        self.input_name, self.problem, self.fix = input_name, problem, fix
