"""Offline checks of the deployment files in docker/ (no Docker engine, no cluster, no Triton): the
Dockerfiles (hadolint), the compose file (the compose-spec schema), every YAML file (yamllint), the
Kubernetes manifests (their schemas, strict, at a pinned Kubernetes version), the Prometheus
configuration and alert rules (promtool, with the rules' unit tests), the settings documented in
docker/.env.example, and how the pieces name each other. The metric names of the PromQL in them are
checked against a real Prometheus in tests/test_prometheus.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployment_promql import (
    AUTOSCALING,
    DOCKER,
    NVIDIA_VLLM_METRICS,
    TRITON_GPU_METRICS_FROM_DOCS,
    all_expressions,
    autoscaling_queries,
    dashboard_expressions,
    metric_names,
)
from passerelle.core.config import Settings

REPO = DOCKER.parent
KUBERNETES = DOCKER / "kubernetes"
TOOLS = Path(sys.executable).parent  # hadolint, check-jsonschema, yamllint, kubernetes-validate (the adapter's dev extra)
KUBERNETES_VERSION = "1.33.0"
# Kinds whose schemas are not Kubernetes' own (KEDA's CRD; kustomize's file): checked by hand below.
NOT_KUBERNETES = {"autoscaling.yaml", "kustomization.yaml"}
TRITON_TAG = re.compile(r"^(\d\d)\.(\d\d)$")


def run(*command: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=120)
    print(f"$ {' '.join(str(part) for part in command)}\n{result.stdout}{result.stderr}")
    return result


def tool(name: str) -> Path:
    path = TOOLS / name
    assert path.exists(), f"{name} is missing from the adapter's environment (adapter/pyproject.toml, dev extra)"
    return path


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: scripts/test installs Debian's 'prometheus' package, which has it"
    return found


def documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object of the kustomization, by (kind, name)."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for document in documents(KUBERNETES / resource):
            found[(document["kind"], document["metadata"]["name"])] = document
    return found


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def env_example_names() -> set[str]:
    """Names assigned in docker/.env.example, set or shown commented out with their default."""
    return set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", (DOCKER / ".env.example").read_text(), re.M))


# ---- Dockerfiles ---------------------------------------------------------------------------------


def test_hadolint_passes_both_dockerfiles() -> None:
    result = run(tool("hadolint"), "--failure-threshold", "style", DOCKER / "triton.Dockerfile", DOCKER / "adapter.Dockerfile")
    assert result.returncode == 0


def test_the_triton_image_is_nvidias_vllm_image_at_the_pinned_tag() -> None:
    dockerfile = (DOCKER / "triton.Dockerfile").read_text()
    tag = re.search(r"^ARG TRITON_TAG=(\S+)$", dockerfile, re.M)
    assert tag and TRITON_TAG.match(tag[1]), "triton.Dockerfile pins ARG TRITON_TAG=<yy.mm>"
    assert "FROM nvcr.io/nvidia/tritonserver:${TRITON_TAG}-vllm-python-py3" in dockerfile
    # Qwen3-VL needs >= 25.11; the structured_outputs key that the adapter sends is read after 25.11.
    assert tuple(int(part) for part in tag[1].split(".")) >= (25, 12)
    # compose and .env.example build the same tag by default.
    assert f"TRITON_TAG: ${{TRITON_TAG:-{tag[1]}}}" in (DOCKER / "compose.yaml").read_text()
    assert re.search(rf"^TRITON_TAG={re.escape(tag[1])}$", (DOCKER / ".env.example").read_text(), re.M)
    sources = "".join(path.read_text() for path in (REPO / "adapter" / "src" / "passerelle").rglob("*.py"))
    assert '["structured_outputs"] =' in sources, "the adapter no longer sends structured_outputs: recheck the tag's reason"


def test_the_triton_image_ships_nvidias_vllm_backend_and_not_the_stand_in() -> None:
    dockerfile = (DOCKER / "triton.Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+)$", dockerfile, re.M)
    assert copies and not any("backends" in line or line.split()[0] in ("triton-python", ".") for line in copies), copies
    ignore = [line for line in (DOCKER / "triton.Dockerfile.dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert ignore[0] == "*", "the dockerignore starts from nothing"
    assert not [line for line in ignore if line.startswith("!") and ("backends" in line or line in ("!triton-python", "!triton-python/"))]
    assert "test -f /opt/tritonserver/backends/vllm/model.py" in dockerfile, "the build checks that NVIDIA's backend is there"
    entrypoint = re.search(r"^ENTRYPOINT \[(.+?)\]$", dockerfile, re.M | re.S)
    assert entrypoint
    for flag in ("--model-control-mode=explicit", "--allow-gpu-metrics=true", "--model-repository=/models/repository"):
        assert f'"{flag}"' in entrypoint[1]
    assert re.search(r"^HEALTHCHECK .*\n.*/v2/health/", dockerfile, re.M)
    # The audio engines at the versions the local Triton environment is tested with.
    requirements = (REPO / "triton-python" / "requirements.in").read_text()
    for pin in ("nemo_toolkit[asr]==", "pyannote.audio==", "silero-vad=="):
        version = re.search(re.escape(pin) + r"([\w.]+)", requirements)
        assert version, f"{pin} is not pinned in triton-python/requirements.in"
        assert f'"{pin}{version[1]}"' in dockerfile, f"triton.Dockerfile must install {pin}{version[1]}"


def test_the_adapter_image_is_multi_stage_non_root_with_a_health_check() -> None:
    dockerfile = (DOCKER / "adapter.Dockerfile").read_text()
    assert re.search(r"^FROM \S+ AS dashboard$", dockerfile, re.M) and "COPY --from=dashboard" in dockerfile
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0"
    assert re.search(r"^HEALTHCHECK .*\n.*/health", dockerfile, re.M)
    adapter = compose()["services"]["adapter"]
    assert adapter["read_only"] is True and any(entry.startswith("/tmp:") for entry in adapter["tmpfs"])
    deployment = manifests()[("Deployment", "adapter")]
    for container in deployment["spec"]["template"]["spec"]["initContainers"] + deployment["spec"]["template"]["spec"]["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


# ---- compose -------------------------------------------------------------------------------------


def test_the_compose_file_matches_the_compose_spec() -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", DOCKER / "compose.yaml")
    assert result.returncode == 0


def test_compose_reserves_a_gpu_starts_in_health_order_and_mounts_files_that_exist() -> None:
    services = compose()["services"]
    assert set(services) == {"triton", "adapter", "prometheus", "grafana"}
    devices = services["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["driver"] == "nvidia"
    assert services["adapter"]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert services["prometheus"]["depends_on"]["triton"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert all("healthcheck" in service for service in services.values())
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, which does not exist"
    # Prometheus scrapes both by their compose names and ports, and loads the alert rules.
    scrape = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in scrape["scrape_configs"]}
    assert targets == {"triton": ["triton:8002"], "adapter": ["adapter:8080"]}
    assert scrape["rule_files"] == ["alerts.yml"] and "./alerts.yml:/etc/prometheus/alerts.yml:ro" in services["prometheus"]["volumes"]


def test_grafana_is_provisioned_with_the_data_source_and_the_board() -> None:
    provisioning = DOCKER / "grafana" / "provisioning"
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((provisioning / "dashboards" / "passerelle.yml").read_text())["providers"][0]
    grafana = compose()["services"]["grafana"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    board = json.loads((DOCKER / "grafana" / "dashboards" / "passerelle.json").read_text())
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    assert all(panel["datasource"]["uid"] == source["uid"] for panel in panels)
    assert all(target["datasource"]["uid"] == source["uid"] for panel in panels for target in panel["targets"])
    assert all(variable["datasource"]["uid"] == source["uid"] for variable in board["templating"]["list"] if variable["type"] == "query")
    # The board shows what the issue asks for: GPU, per-model request rate, latency, time to first
    # token, tokens/s, in-flight and queue.
    names = {
        name
        for _, expression in dashboard_expressions(DOCKER / "grafana" / "dashboards" / "passerelle.json")
        for name in metric_names(expression)
    }
    for needed in (
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
        "passerelle_requests_total",
        "passerelle_request_duration_seconds_bucket",
        "passerelle_time_to_first_token_seconds_bucket",
        "passerelle_tokens_total",
        "passerelle_generations_in_flight",
        "nv_inference_pending_request_count",
        "nv_inference_queue_duration_us",
    ):
        assert needed in names, f"the Grafana board has no panel on {needed}"


def test_env_example_documents_every_setting_and_every_compose_variable() -> None:
    documented = env_example_names()
    settings = {
        field.validation_alias if isinstance(field.validation_alias, str) else name.upper() for name, field in Settings.model_fields.items()
    }
    missing = sorted(settings - documented)
    assert not missing, f"adapter settings missing from docker/.env.example: {missing}"
    variables = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", json.dumps(compose())))  # values only, not comments
    missing = sorted(variables - documented)
    assert not missing, f"compose.yaml variables missing from docker/.env.example: {missing}"


# ---- YAML, Prometheus ----------------------------------------------------------------------------


def test_yamllint_passes_every_yaml_file_under_docker() -> None:
    files = sorted(DOCKER.rglob("*.yaml")) + sorted(DOCKER.rglob("*.yml"))
    assert len(files) >= 10
    result = run(tool("yamllint"), "--strict", "-c", DOCKER / ".yamllint.yaml", *files)
    assert result.returncode == 0


def test_promtool_checks_the_configurations_and_the_rules_pass_their_unit_tests(tmp_path: Path) -> None:
    assert run(promtool(), "check", "config", DOCKER / "prometheus.yml").returncode == 0
    assert run(promtool(), "check", "rules", DOCKER / "alerts.yml").returncode == 0
    assert run(promtool(), "test", "rules", "alerts.test.yml", cwd=DOCKER).returncode == 0
    # The Kubernetes scrape configuration: Debian's promtool is built without Kubernetes service
    # discovery, so its discovery block is swapped for a static target; the relabelling and the
    # rule file are checked as they are.
    config = yaml.safe_load((KUBERNETES / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(DOCKER / "alerts.yml", tmp_path / "alerts.yml")
    assert run(promtool(), "check", "config", tmp_path / "prometheus.yml").returncode == 0


def test_every_promql_expression_parses_and_names_only_families_production_exports() -> None:
    expressions = all_expressions()
    assert len(expressions) >= 20
    for where, expression in expressions:
        names = metric_names(expression)
        assert names, f"{where}: no metric in {expression}"
        for name in names:
            if name.startswith(("nv_gpu_", "nv_energy_")):
                assert name in TRITON_GPU_METRICS_FROM_DOCS, f"{where}: {name} is not one of Triton's documented GPU metrics"
            if name.startswith("vllm:"):
                assert name in NVIDIA_VLLM_METRICS, f"{where}: NVIDIA's vLLM backend does not export {name} (only the CPU stand-in does)"


# ---- Kubernetes ----------------------------------------------------------------------------------


def test_kubernetes_manifests_validate_strictly_against_a_pinned_kubernetes() -> None:
    files = sorted(path for path in KUBERNETES.glob("*.yaml") if path.name not in NOT_KUBERNETES)
    result = run(tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, *files)
    assert result.returncode == 0
    assert "WARN" not in result.stdout + result.stderr, "a manifest was not checked against a schema"
    checked = len(re.findall(r" passed for resource ", result.stdout + result.stderr))
    assert checked == sum(len(documents(path)) for path in files)


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present
    assert all(
        document["metadata"].get("namespace", kustomization["namespace"]) == kustomization["namespace"] for document in manifests().values()
    )


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in container.get("env", []) if "value" in entry}


def test_each_triton_group_has_a_gpu_shared_memory_probes_and_the_model_cache() -> None:
    objects = manifests()
    for group in ("triton-llm", "triton-audio"):
        deployment = objects[("Deployment", group)]
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"] == {"passerelle.io/gpu-pool": group.removeprefix("triton-")}
        assert {
            "key": "passerelle.io/gpu-pool",
            "operator": "Equal",
            "value": group.removeprefix("triton-"),
            "effect": "NoSchedule",
        } in pod["tolerations"]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        shm = volumes[mounts["/dev/shm"]]["emptyDir"]
        assert shm["medium"] == "Memory" and shm["sizeLimit"]
        assert volumes[mounts["/models/cache"]]["persistentVolumeClaim"]["claimName"] in {
            name for kind, name in objects if kind == "PersistentVolumeClaim"
        }
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["path"] == "/v2/health/ready"
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60, "a model load takes minutes"
        assert "--strict-readiness=true" in container["args"]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8002"
        headless = objects[("Service", f"{group}-headless")]
        assert headless["spec"]["clusterIP"] == "None"
        assert headless["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_the_adapters_upstreams_name_the_services_and_the_models_each_group_loads() -> None:
    objects = manifests()
    adapter = _container(objects[("Deployment", "adapter")])
    env = _env(adapter)
    upstreams = json.loads(env["TRITON_UPSTREAMS"])
    served: list[str] = []

    def service(url: str, scheme: str) -> tuple[dict[str, Any], int]:
        match = re.fullmatch(scheme + r"([a-z0-9-]+)\.passerelle\.svc\.cluster\.local:(\d+)", url)
        assert match, f"{url} is not {scheme}<service>.passerelle.svc.cluster.local:<port>"
        found = objects[("Service", match[1])]
        assert int(match[2]) in {port["port"] for port in found["spec"]["ports"]}
        return found, int(match[2])

    for name, upstream in upstreams.items():
        assert set(upstream) == {"grpc", "http", "models"}, name
        grpc, _ = service(upstream["grpc"], "dns:///")
        assert grpc["spec"]["clusterIP"] == "None", "gRPC balances over a headless Service's addresses"
        http, _ = service(upstream["http"], "http://")
        assert http["spec"]["selector"] == grpc["spec"]["selector"]
        group = grpc["spec"]["selector"]["app.kubernetes.io/component"]
        loads = {
            arg.removeprefix("--load-model=")
            for arg in _container(objects[("Deployment", group)])["args"]
            if arg.startswith("--load-model=")
        }
        assert set(upstream["models"]) == loads, f"upstream {name} lists {upstream['models']}; {group} loads {sorted(loads)}"
        served += upstream["models"]
    repository = {path.parent.name for path in (REPO / "model_repository").glob("*/config.pbtxt")} - {"system"}
    assert sorted(served) == sorted(repository), "every model is served by exactly one Triton group"
    # Models no upstream lists (`system`) go to the default Triton: a Service too.
    service("http://" + env["TRITON_GRPC_URL"], "http://")
    service(env["TRITON_HTTP_URL"], "http://")
    assert env["AUDIO_TRANSFER"] == "http", "pods share no /dev/shm"


def test_the_adapter_deployment_env_is_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, field in Settings.model_fields.items():
        monkeypatch.delenv(field.validation_alias if isinstance(field.validation_alias, str) else name.upper(), raising=False)
    env = _env(_container(manifests()[("Deployment", "adapter")]))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("OPENAI_API_KEYS", "from-the-secret")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.adapter_host == "0.0.0.0" and settings.audio_transfer == "http"
    assert settings.preload_models == [] and settings.lazy_load_models is False and settings.default_model_ttl_s == -1
    upstreams = json.loads(env["TRITON_UPSTREAMS"])
    assert {name: upstream.models for name, upstream in settings.triton_upstreams.items()} == {
        name: upstream["models"] for name, upstream in upstreams.items()
    }


def test_the_adapter_has_probes_a_disruption_budget_and_its_secrets() -> None:
    objects = manifests()
    deployment = objects[("Deployment", "adapter")]
    container = _container(deployment)
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "tcpSocket" in container["livenessProbe"], "liveness must not depend on Triton"
    budget = objects[("PodDisruptionBudget", "adapter")]
    assert budget["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert budget["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    secret = documents(KUBERNETES / "secret.example.yaml")[0]
    keys = set(secret["stringData"])
    pod = deployment["spec"]["template"]["spec"]
    referenced = {
        entry["valueFrom"]["secretKeyRef"]["key"]
        for entry_container in pod["initContainers"] + pod["containers"]
        for entry in entry_container.get("env", [])
        if "secretKeyRef" in entry.get("valueFrom", {})
    }
    assert referenced == keys == {"openai-api-keys", "admin-api-key", "hf-token"}


def _preflight(cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    pod = manifests()[("Deployment", "adapter")]["spec"]["template"]["spec"]
    command = next(container for container in pod["initContainers"] if container["name"] == "preflight")["command"]
    assert command[:2] == ["python", "-c"]
    return subprocess.run(
        [sys.executable, "-c", command[2]],
        env={"PATH": os.environ["PATH"], "MODEL_CACHE_DIR": str(cache), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_adapters_preflight_refuses_no_keys_and_seeds_the_token_only_once(tmp_path: Path) -> None:
    refused = _preflight(tmp_path, OPENAI_API_KEYS=" ", HF_TOKEN="hf_secret_one")
    assert refused.returncode != 0 and "OPENAI_API_KEYS is empty" in refused.stderr
    assert not (tmp_path / ".hf_token").exists()
    assert _preflight(tmp_path, OPENAI_API_KEYS="k").returncode == 0 and not (tmp_path / ".hf_token").exists()
    assert _preflight(tmp_path, OPENAI_API_KEYS="k", HF_TOKEN="hf_secret_one").returncode == 0
    token = tmp_path / ".hf_token"
    assert token.read_text() == "hf_secret_one" and token.stat().st_mode & 0o777 == 0o600
    # A token stored since (PUT /api/admin/huggingface/token) is kept: the Secret only seeds.
    token.write_text("hf_put_through_the_admin_api")
    assert _preflight(tmp_path, OPENAI_API_KEYS="k", HF_TOKEN="hf_secret_one").returncode == 0
    assert token.read_text() == "hf_put_through_the_admin_api"
    assert sorted(path.name for path in tmp_path.iterdir()) == [".hf_token"], "no staging file is left behind"


def test_the_scaled_objects_target_the_deployments_and_their_queries_are_documented() -> None:
    objects = manifests()
    readme = (KUBERNETES / "README.md").read_text()
    scaled = [document for document in documents(AUTOSCALING) if document["kind"] == "ScaledObject"]
    assert {document["spec"]["scaleTargetRef"]["name"] for document in scaled} == {"triton-llm", "triton-audio", "adapter"}
    for document in scaled:
        assert document["apiVersion"] == "keda.sh/v1alpha1"
        assert ("Deployment", document["spec"]["scaleTargetRef"]["name"]) in objects
        assert 1 <= document["spec"]["minReplicaCount"] <= document["spec"]["maxReplicaCount"]
        for trigger in document["spec"]["triggers"]:
            assert trigger["type"] in {"prometheus", "cpu"}
            assert trigger["metricType"] in {"AverageValue", "Value", "Utilization"}
            if trigger["type"] == "prometheus":
                float(trigger["metadata"]["threshold"])
                assert trigger["metadata"]["serverAddress"].startswith("http")
    assert len(autoscaling_queries()) >= 6
    for where, query in autoscaling_queries():
        assert f"`{query}`" in readme, f"{where}: the query is not written down in docker/kubernetes/README.md"
