"""Test-only: fails to initialize, on purpose."""


class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("broken on purpose (test fixture)")

    def execute(self, requests):
        return []
