"""Several Tritons: each model served by one upstream, each upstream by one or more replicas.

`TRITON_UPSTREAMS` maps an upstream's name to its gRPC target, its HTTP URL and the models it
serves; every other model is served by the default upstream (`TRITON_GRPC_URL`, `TRITON_HTTP_URL`).
An upstream's gRPC target names one Triton (`host:port`), several (`ip:port,ip:port`) or a DNS name
whose addresses are the replicas (`dns:///triton-llm.ns.svc:8001`, a Kubernetes headless Service).

Inference to an upstream with several replicas goes over one gRPC channel that gRPC itself spreads
(`round_robin`), checking each replica with the standard gRPC health service and retrying a call
that could not start (UNAVAILABLE) on another replica: no balancer of ours. A stream that fails
before its first response because its replica does not have the model (yet) is retried here, once
per replica. Control (load, unload) and status go to each replica on its own channel. A replica
that comes back is given the models its siblings have loaded.

Audio as shared memory needs Triton on this host: an upstream with several replicas gets audio over
Triton's HTTP protocol instead (its `http` URL: a Service that balances over the replicas).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tritonclient.grpc import InferInput, InferRequestedOutput, InferResult

from passerelle.core.config import Settings
from passerelle.core.errors import FailureKind, TritonFailure
from passerelle.triton.client import BinaryResult, Parse, TritonClient
from passerelle.triton.vllm import Delta, Generation, build_inputs, parse_response

log = logging.getLogger("passerelle.triton")
R = TypeVar("R")
DEFAULT_UPSTREAM = "default"
# Failures after which a stream that has sent nothing yet is tried on the next replica.
_RETRY_ON_ANOTHER = (FailureKind.MODEL_NOT_READY, FailureKind.SERVER_UNAVAILABLE)


def _several(target: str) -> bool:
    return target.startswith("dns:") or "," in target


def balanced_target(target: str) -> str:
    """The gRPC target of a channel over every replica: `dns:` as it is, a list under `ipv4:`/`ipv6:`."""
    if not _several(target) or target.startswith("dns:"):
        return target
    addresses = [address.strip() for address in target.removeprefix("ipv4:").removeprefix("ipv6:").split(",") if address.strip()]
    hosts = [address.rsplit(":", 1)[0].strip("[]") for address in addresses]
    try:
        versions = {ipaddress.ip_address(host).version for host in hosts}
    except ValueError as error:
        raise ValueError(f"a list of replicas must give IP addresses ({target!r}); use dns:///<name>:<port> for names") from error
    if len(versions) != 1:
        raise ValueError(f"a list of replicas must be all IPv4 or all IPv6: {target!r}")
    return f"ipv{versions.pop()}:" + ",".join(addresses)


def _resolve(target: str) -> list[str]:
    """host:port of each replica the target names; a DNS name is resolved now (blocking)."""
    if not target.startswith("dns:"):
        return [address.strip() for address in target.removeprefix("ipv4:").removeprefix("ipv6:").split(",") if address.strip()]
    host, _, port = target.rsplit("/", 1)[-1].rpartition(":")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except OSError as error:
        log.warning("replicas of %s: %s", target, error)
        return []
    return sorted({f"[{info[4][0]}]:{port}" if ":" in str(info[4][0]) else f"{info[4][0]}:{port}" for info in infos})


@dataclass
class ReplicaSample:
    upstream: str
    address: str
    live: bool
    ready: bool
    models: dict[str, str] = field(default_factory=dict)  # name -> Triton's state, for the upstream's models


class Upstream:
    def __init__(self, name: str, grpc_target: str, http_url: str | None, models: frozenset[str] | None) -> None:
        self.name = name
        self.target = grpc_target
        self.models = models  # None: every model no other upstream names
        self.several = _several(grpc_target)
        self.client = TritonClient(balanced_target(grpc_target), http_url, balanced=self.several)
        self._replicas: dict[str, TritonClient] = {}
        self._was_live: dict[str, bool] = {}

    def serves(self, model: str) -> bool:
        return self.models is None or model in self.models

    async def replicas(self) -> dict[str, TritonClient]:
        """A client per replica (the upstream's own when it has one), replicas re-resolved each call."""
        if not self.several:
            return {self.target: self.client}
        addresses = await asyncio.to_thread(_resolve, self.target)
        for gone in set(self._replicas) - set(addresses):
            await self._replicas.pop(gone).close()
        for address in addresses:
            if address not in self._replicas:
                self._replicas[address] = TritonClient(address, replica=True)
        return dict(self._replicas)

    async def close(self) -> None:
        await self.client.close()
        for client in self._replicas.values():
            await client.close()


class Tritons:
    """The adapter's Tritons: every call names its model, and goes to the upstream that serves it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        named = [Upstream(name, up.grpc, up.http, frozenset(up.models)) for name, up in settings.triton_upstreams.items()]
        self.default = Upstream(DEFAULT_UPSTREAM, settings.triton_grpc_url, settings.triton_http_url, None)
        self.upstreams = [*named, self.default]
        self._by_model = {model: upstream for upstream in named for model in upstream.models or ()}
        self._rejoining: dict[tuple[str, str], asyncio.Task[None]] = {}  # loads on replicas that came back

    def upstream(self, model: str) -> Upstream:
        return self._by_model.get(model, self.default)

    def client(self, model: str) -> TritonClient:
        return self.upstream(model).client

    def shares_memory(self, model: str) -> bool:
        """Whether decoded audio for `model` may go to Triton as a shared-memory region."""
        upstream = self.upstream(model)
        if upstream.several:
            return False
        if upstream is self.default:
            return self.settings.audio_through_shared_memory
        if self.settings.audio_transfer != "auto":
            return self.settings.audio_transfer == "shared_memory"
        host = upstream.target.rsplit(":", 1)[0].strip("[]")
        return host in ("127.0.0.1", "localhost", "::1") and self.settings.shared_memory_dir.is_dir()

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.close()

    # Inference ----------------------------------------------------------------------------

    async def infer(self, model: str, inputs: list[InferInput], outputs: list[InferRequestedOutput] | None = None) -> InferResult:
        return await self.client(model).infer(model, inputs, outputs)

    async def infer_binary(
        self, model: str, inputs: list[dict[str, Any]], name: str, datatype: str, shape: list[int], data: memoryview, outputs: list[str]
    ) -> BinaryResult:
        return await self.client(model).infer_binary(model, inputs, name, datatype, shape, data, outputs)

    async def register_system_shared_memory(self, model: str, name: str, key: str, byte_size: int) -> None:
        await self.client(model).register_system_shared_memory(name, key, byte_size)

    async def unregister_system_shared_memory(self, model: str, name: str) -> None:
        await self.client(model).unregister_system_shared_memory(name)

    async def stream(
        self,
        model: str,
        inputs: list[InferInput],
        outputs: list[InferRequestedOutput],
        request_id: str,
        parse: Parse[R],
        last: Callable[[R], bool],
    ) -> AsyncGenerator[R]:
        """`TritonClient.stream` on the model's upstream. With several replicas, a stream that fails
        before its first response (the replica lacks the model, or died) is tried on the next one."""
        upstream = self.upstream(model)
        attempts = max(1, len(upstream._replicas)) + 1 if upstream.several else 1
        for attempt in range(1, attempts + 1):
            started = False
            try:
                async with aclosing(upstream.client.stream(model, inputs, outputs, request_id, parse, last)) as items:
                    async for item in items:
                        started = True
                        yield item
                return
            except TritonFailure as failure:
                if started or attempt == attempts or failure.kind not in _RETRY_ON_ANOTHER:
                    raise
                log.warning("request %s to %s: %s; trying another replica", request_id, model, failure.message)

    def generate(self, model: str, generation: Generation, request_id: str) -> AsyncGenerator[Delta]:
        """One request to a vLLM-backend model: a delta per response until every choice has finished."""
        inputs, outputs = build_inputs(generation)
        return self.stream(model, inputs, outputs, request_id, parse_response, lambda delta: delta.finished)

    # Model control ------------------------------------------------------------------------

    async def _replicas(self, model: str, replica: str | None) -> dict[str, TritonClient]:
        replicas = await self.upstream(model).replicas()
        if replica is None:
            return replicas
        if replica not in replicas:
            raise TritonFailure(FailureKind.BAD_REQUEST, f"'{replica}' is not a replica of model '{model}': {', '.join(replicas)}")
        return {replica: replicas[replica]}

    async def model_ready(self, model: str) -> bool:
        """Ready on at least one replica (a request that meets one without it goes to another)."""
        replicas = await self._replicas(model, None)
        if len(replicas) == 1:
            return await next(iter(replicas.values())).model_ready(model)
        answers = await asyncio.gather(*(client.model_ready(model) for client in replicas.values()), return_exceptions=True)
        if any(answer is True for answer in answers):
            return True
        failures = [answer for answer in answers if isinstance(answer, TritonFailure)]
        if failures and len(failures) == len(answers):
            raise failures[0]
        return False

    async def load_model(self, model: str, config: str | None = None, replica: str | None = None) -> None:
        """Load on every replica, or on the one named. As Triton's own load does, this reloads a model
        already loaded (which is how a model whose process died comes back). Dead replicas are
        skipped while one at least succeeds."""
        replicas = await self._replicas(model, replica)
        await _on_each(list(replicas.values()), lambda client: client.load_model(model, config))

    async def unload_model(self, model: str, replica: str | None = None) -> None:
        replicas = await self._replicas(model, replica)
        await _on_each(list(replicas.values()), lambda client: client.unload_model(model))

    async def model_config(self, model: str) -> dict[str, Any]:
        return await self.client(model).model_config(model)

    # The whole: health, index, statistics ---------------------------------------------------

    async def server_live(self) -> bool:
        return all(await asyncio.gather(*(upstream.client.server_live() for upstream in self.upstreams)))

    async def server_ready(self) -> bool:
        return all(await asyncio.gather(*(upstream.client.server_ready() for upstream in self.upstreams)))

    async def server_metadata(self) -> dict[str, Any]:
        return await self.default.client.server_metadata()

    async def repository_index(self) -> list[dict[str, str]]:
        """Each model's entry from the upstream that serves it: READY if a replica has it ready."""
        merged: dict[str, dict[str, str]] = {}
        for upstream in self.upstreams:
            for replica in await _indexes(upstream):
                for entry in replica:
                    name = entry.get("name", "")
                    if self.upstream(name) is not upstream:
                        continue
                    if name not in merged or (entry.get("state") == "READY" and merged[name].get("state") != "READY"):
                        merged[name] = entry
        return list(merged.values())

    async def statistics(self) -> list[dict[str, Any]]:
        """Triton's per-model statistics, added up over the replicas of the model's upstream."""
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for upstream in self.upstreams:
            replicas = await upstream.replicas()
            for client in replicas.values():
                try:
                    stats = await client.statistics()
                except TritonFailure:
                    continue
                for entry in stats:
                    if self.upstream(entry.get("name", "")) is upstream:
                        key = (entry.get("name", ""), entry.get("version", ""))
                        merged[key] = _add_statistics(merged[key], entry) if key in merged else entry
        return list(merged.values())

    async def replica_samples(self, *, rejoin: bool = False) -> list[ReplicaSample]:
        """Every replica's health and its state of its upstream's models. `rejoin` (the monitor's
        samples): a replica that came back is given the models its siblings have ready, in the background."""
        samples: list[ReplicaSample] = []
        for upstream in self.upstreams:
            replicas = await upstream.replicas()
            found = await asyncio.gather(*(_sample(upstream, address, client) for address, client in replicas.items()))
            for sample in found:
                sample.models = {name: state for name, state in sample.models.items() if self.upstream(name) is upstream}
            samples += found
            if upstream.several and rejoin:
                self._rejoin(upstream, replicas, found)
        return samples

    def _rejoin(self, upstream: Upstream, replicas: dict[str, TritonClient], samples: list[ReplicaSample]) -> None:
        ready_somewhere = {name for sample in samples for name, state in sample.models.items() if state == "READY"}
        for sample in samples:
            came_back = sample.live and upstream._was_live.get(sample.address) is False
            upstream._was_live[sample.address] = sample.live
            missing = sorted(name for name in ready_somewhere if sample.models.get(name) != "READY")
            key = (upstream.name, sample.address)
            if came_back and missing and key not in self._rejoining:
                self._rejoining[key] = asyncio.create_task(self._load_on(key, replicas[sample.address], missing))

    async def _load_on(self, key: tuple[str, str], client: TritonClient, models: list[str]) -> None:
        upstream, address = key
        log.info("replica %s of %s is back: loading %s, as its siblings have them", address, upstream, ", ".join(models))
        try:
            for model in models:
                try:
                    await client.load_model(model)
                    log.info("replica %s of %s: %s loaded", address, upstream, model)
                except TritonFailure as failure:
                    log.error("replica %s of %s: loading %s failed: %s", address, upstream, model, failure.message)
        finally:
            self._rejoining.pop(key, None)


async def _on_each(clients: list[TritonClient], act: Callable[[TritonClient], Any]) -> None:
    """`act` on every client at once; a replica that is down is skipped unless all are."""
    if not clients:
        return
    results = await asyncio.gather(*(act(client) for client in clients), return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    unreachable = [failure for failure in failures if isinstance(failure, TritonFailure) and failure.kind is FailureKind.SERVER_UNAVAILABLE]
    for failure in failures:
        if failure not in unreachable or len(unreachable) == len(results):
            raise failure


async def _indexes(upstream: Upstream) -> list[list[dict[str, str]]]:
    replicas = await upstream.replicas()
    if len(replicas) == 1:
        return [await next(iter(replicas.values())).repository_index()]
    found = await asyncio.gather(*(client.repository_index() for client in replicas.values()), return_exceptions=True)
    indexes = [index for index in found if isinstance(index, list)]
    if not indexes and found and isinstance(found[0], BaseException):
        raise found[0]
    return indexes


async def _sample(upstream: Upstream, address: str, client: TritonClient) -> ReplicaSample:
    live = await client.server_live()
    sample = ReplicaSample(upstream=upstream.name, address=address, live=live, ready=live and await client.server_ready())
    if live:
        with suppress(TritonFailure):  # it went down just now: no models
            sample.models = {entry["name"]: entry.get("state") or "UNAVAILABLE" for entry in await client.repository_index()}
    return sample


def _add_statistics(total: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    added = dict(total)
    added["last_inference"] = max(int(total.get("last_inference", 0)), int(more.get("last_inference", 0)))
    for counter in ("inference_count", "execution_count"):
        added[counter] = int(total.get(counter, 0)) + int(more.get(counter, 0))
    stats: dict[str, dict[str, int]] = {}
    for source in (total.get("inference_stats", {}), more.get("inference_stats", {})):
        for name, value in source.items():
            entry = stats.setdefault(name, {"count": 0, "ns": 0})
            entry["count"] += int(value.get("count", 0))
            entry["ns"] += int(value.get("ns", 0))
    added["inference_stats"] = stats
    return added
