"""Test-only: fails to initialize, on purpose."""

from typing import Any


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        raise RuntimeError("broken on purpose (test fixture)")

    def execute(self, requests: list[Any]) -> list[Any]:
        return []
