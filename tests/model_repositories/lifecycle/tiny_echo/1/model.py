"""Test-only echo model: returns its input, after DELAY_S seconds (a knob for slow-request tests);
its initialize takes LOAD_DELAY_S seconds (a knob for requests that arrive during a load)."""

import json
import time
from typing import Any

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        parameters = json.loads(args["model_config"]).get("parameters", {})
        self.delay = float(parameters.get("DELAY_S", {}).get("string_value", "0"))
        time.sleep(float(parameters.get("LOAD_DELAY_S", {}).get("string_value", "0")))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy()
            time.sleep(self.delay)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("TEXT", text)]))
        return responses
