"""`system`: Triton-side facts for passerelle's admin/status API (see passerelle_triton.system_facts).

Thin on purpose: the collection lives in the shared ``passerelle_triton`` package installed into
Triton's Python environment. The optional ``request`` input is reserved and ignored; the ``facts``
output holds one JSON document.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from passerelle_triton.system_facts import SystemFacts


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        # Starts the one-off import checks in the background: loading does not wait for them.
        self.facts = SystemFacts()
        self.facts.start()

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for _ in requests:
            try:
                body = json.dumps(self.facts.collect()).encode()
                output = pb_utils.Tensor("facts", np.array([body], dtype=np.object_))
                responses.append(pb_utils.InferenceResponse(output_tensors=[output]))
            except Exception as exc:  # noqa: BLE001 - collect() should not raise; if it does, answer with an error
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"system facts failed: {exc}")))
        return responses

    def finalize(self) -> None:
        self.facts.close()
