"""The adapter's only door to Triton: tritonclient's asyncio gRPC client, and Triton's HTTP
protocol for audio held in memory (its binary extension streams a large tensor without copies).

Generation goes over gRPC `ModelStreamInfer`, because cancelling that stream reaches the
model at once (Triton's HTTP front end notices a disconnect only when it next writes). It
carries the vLLM backend's tensor contract (`passerelle.triton.vllm`, used by
`passerelle.triton.upstreams.Tritons.generate`) and knows nothing of OpenAI. The adapter always
asks for a stream (`stream=True`, `exclude_input_in_output=True`), so that every request,
streamed to the client or not, can be cancelled the moment its client
goes away. Every failure leaves this module as a `TritonFailure` (`passerelle.core.errors`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import httpx
import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor, triton_to_np_dtype

from passerelle.core.errors import FailureKind, TritonFailure

R = TypeVar("R")
Parse = Callable[[InferResult], R]

log = logging.getLogger("passerelle.triton")
_PIECE = 1 << 20


# The Python backend's answer once a model's stub process has died (killed, or out of memory).
_DEAD_STUB = re.compile(r"Stub process '[^']*' is not healthy")
_NOT_READY_MARKERS = ("unknown model", "has no available versions", "is not ready", "is not found", "unavailable model")


def classify(message: str) -> FailureKind:
    lowered = message.lower()
    if _DEAD_STUB.search(message):
        return FailureKind.MODEL_CRASHED
    if any(marker in lowered for marker in _NOT_READY_MARKERS):
        return FailureKind.MODEL_NOT_READY
    if "cancelled" in lowered:
        return FailureKind.CANCELLED
    return FailureKind.INTERNAL


def _from_rpc(error: grpc.aio.AioRpcError) -> TritonFailure:
    code, details = error.code(), error.details() or str(error)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return TritonFailure(FailureKind.SERVER_UNAVAILABLE, f"Triton is not reachable: {details}")
    if code == grpc.StatusCode.CANCELLED:
        return TritonFailure(FailureKind.CANCELLED, details)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return TritonFailure(FailureKind.BAD_REQUEST, details)
    return TritonFailure(classify(details), details)


def _from_client(error: InferenceServerException) -> TritonFailure:
    message = error.message() or str(error)
    status = (error.status() or "").upper()
    if "UNAVAILABLE" in status and "model" not in message.lower():
        return TritonFailure(FailureKind.SERVER_UNAVAILABLE, f"Triton is not reachable: {message}")
    if "INVALID_ARG" in status:
        return TritonFailure(FailureKind.BAD_REQUEST, message)
    return TritonFailure(classify(message), message)


# Transport ----------------------------------------------------------------------------------


class BinaryResult:
    """A response of Triton's HTTP protocol with binary outputs: a JSON header, then each output's bytes."""

    def __init__(self, body: bytes, header_length: int) -> None:
        header = json.loads(body[:header_length])
        self._arrays: dict[str, np.ndarray] = {}
        offset = header_length
        for output in header.get("outputs", []):
            size = int(output.get("parameters", {}).get("binary_data_size", 0))
            raw = body[offset : offset + size]
            offset += size
            if output["datatype"] == "BYTES":
                array = deserialize_bytes_tensor(raw) if size else np.array([], dtype=np.object_)
            else:
                array = np.frombuffer(raw, dtype=triton_to_np_dtype(output["datatype"]))
            self._arrays[output["name"]] = array.reshape(output["shape"])

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self._arrays.get(name)


# A channel over several replicas: gRPC spreads the calls (round_robin), leaves out a replica that
# fails the standard gRPC health check (Triton serves it), and retries a call that could not start.
_BALANCED_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [
        {
            "name": [{"service": "inference.GRPCInferenceService"}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}
# A replica's channel (and the balanced one) reconnects within 5 s of its Triton coming back,
# instead of gRPC's backoff of up to 2 minutes; the rest are tritonclient's own defaults.
_REPLICA_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.max_reconnect_backoff_ms", 5000),
]
_BALANCED_CHANNEL_ARGS = [
    *_REPLICA_CHANNEL_ARGS,
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(_BALANCED_SERVICE_CONFIG)),
]


class TritonClient:
    def __init__(self, grpc_url: str, http_url: str | None = None, *, balanced: bool = False, replica: bool = False) -> None:
        """`balanced`: `grpc_url` names several replicas (a `dns:` name, or an `ipv4:`/`ipv6:` list);
        `replica`: one replica of such an upstream (status and control)."""
        self.grpc_url = grpc_url
        channel_args = _BALANCED_CHANNEL_ARGS if balanced else _REPLICA_CHANNEL_ARGS if replica else None
        self._client = grpcclient.InferenceServerClient(url=grpc_url, channel_args=channel_args)
        self._http = httpx.AsyncClient(base_url=http_url, timeout=httpx.Timeout(None, connect=10), trust_env=False) if http_url else None

    async def close(self) -> None:
        await self._client.close()
        if self._http is not None:
            await self._http.aclose()

    async def infer_binary(
        self, model: str, inputs: list[dict[str, Any]], name: str, datatype: str, shape: list[int], data: memoryview, outputs: list[str]
    ) -> BinaryResult:
        """One inference over Triton's HTTP protocol with its binary-tensor extension: the large input
        `name` is streamed from `data` in 1 MiB pieces after the JSON header, never copied whole."""
        assert self._http is not None, "TritonClient was made without an HTTP URL"
        header = json.dumps(
            {
                "inputs": [*inputs, {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": data.nbytes}}],
                "outputs": [{"name": output, "parameters": {"binary_data": True}} for output in outputs],
            }
        ).encode()

        async def body() -> AsyncIterator[bytes]:
            yield header
            for offset in range(0, data.nbytes, _PIECE):
                yield bytes(data[offset : offset + _PIECE])

        headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
        try:
            response = await self._http.post(f"/v2/models/{model}/infer", content=body(), headers=headers)
        except httpx.TransportError as error:
            raise TritonFailure(FailureKind.SERVER_UNAVAILABLE, f"Triton is not reachable: {error}") from error
        if response.status_code != 200:
            try:
                message = str(response.json().get("error", response.text))
            except ValueError:
                message = response.text
            kind = classify(message)
            if kind is FailureKind.INTERNAL and response.status_code == 400:
                kind = FailureKind.BAD_REQUEST
            raise TritonFailure(kind, message)
        return BinaryResult(response.content, int(response.headers.get("Inference-Header-Content-Length", len(response.content))))

    async def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except InferenceServerException as error:
            raise _from_client(error) from error
        except grpc.aio.AioRpcError as error:
            raise _from_rpc(error) from error

    async def server_ready(self) -> bool:
        try:
            return bool(await self._call(self._client.is_server_ready))
        except TritonFailure:
            return False

    async def server_live(self) -> bool:
        try:
            return bool(await self._call(self._client.is_server_live))
        except TritonFailure:
            return False

    async def model_ready(self, model: str) -> bool:
        try:
            return bool(await self._call(self._client.is_model_ready, model))
        except TritonFailure as failure:
            if failure.kind is FailureKind.SERVER_UNAVAILABLE:
                raise
            return False

    async def server_metadata(self) -> dict[str, Any]:
        return dict(await self._call(self._client.get_server_metadata, as_json=True))

    async def statistics(self) -> list[dict[str, Any]]:
        stats = await self._call(self._client.get_inference_statistics, as_json=True)
        return list(stats.get("model_stats", []))

    async def model_config(self, model: str) -> dict[str, Any]:
        return dict((await self._call(self._client.get_model_config, model, as_json=True)).get("config", {}))

    async def infer(self, model: str, inputs: list[InferInput], outputs: list[InferRequestedOutput] | None = None) -> InferResult:
        return await self._call(self._client.infer, model, inputs, outputs=outputs)

    async def register_system_shared_memory(self, name: str, key: str, byte_size: int) -> None:
        await self._call(self._client.register_system_shared_memory, name, key, byte_size)

    async def unregister_system_shared_memory(self, name: str) -> None:
        await self._call(self._client.unregister_system_shared_memory, name)

    async def repository_index(self) -> list[dict[str, str]]:
        index = await self._call(self._client.get_model_repository_index, as_json=True)
        return list(index.get("models", []))

    async def load_model(self, model: str, config: str | None = None) -> None:
        await self._call(self._client.load_model, model, config=config)

    async def unload_model(self, model: str) -> None:
        await self._call(self._client.unload_model, model)

    async def stream(
        self,
        model: str,
        inputs: list[InferInput],
        outputs: list[InferRequestedOutput],
        request_id: str,
        parse: Parse[R],
        last: Callable[[R], bool],
    ) -> AsyncGenerator[R]:
        """One request to a decoupled model over one `ModelStreamInfer` stream: each response parsed, until
        `last` says it was the final. Leaving early cancels the stream, and so the request in the model."""
        done = asyncio.Event()

        async def requests() -> AsyncIterator[dict[str, Any]]:
            yield {"model_name": model, "inputs": inputs, "outputs": outputs, "request_id": request_id}
            await done.wait()  # keep the stream open until the last response has arrived

        responses = self._client.stream_infer(requests())
        finished = failed = False
        try:
            async for result, error in responses:
                if error is not None:
                    failed = True
                    raise _from_client(error)
                item = parse(result)
                finished = last(item)
                yield item
                if finished:
                    return
            failed = True
            raise TritonFailure(FailureKind.INTERNAL, "Triton closed the stream before the final response")
        except grpc.aio.AioRpcError as error:
            failed = True
            raise _from_rpc(error) from error
        finally:
            # Cancel before half-closing: Triton 2.51 can miss a cancellation after end-of-requests.
            if not finished:
                responses.cancel()
                if not failed:
                    # The fault tests match this line with the model's own log of each cancellation it received.
                    log.info("cancelled Triton request %s to %s: its caller stopped reading", request_id, model)
            done.set()
