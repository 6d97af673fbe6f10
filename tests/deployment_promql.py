"""The PromQL of the deployment files, and the metric names it reads.

Three sources: the Grafana board (docker/grafana/dashboards/*.json), the alert rules (docker/alerts.yml)
and the autoscaling queries (docker/kubernetes/autoscaling.yaml). Names are read with a real PromQL
parser (promql-parser, the Rust parser of GreptimeDB's PromQL engine), not with a regular expression.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml

DOCKER = Path(__file__).resolve().parent.parent / "docker"
DASHBOARDS = DOCKER / "grafana" / "dashboards"
ALERTS = DOCKER / "alerts.yml"
AUTOSCALING = DOCKER / "kubernetes" / "autoscaling.yaml"

# Triton's GPU families, which Triton exports through DCGM only on a machine with a GPU: the test
# suite (CPU) never sees them. Taken from Triton's documentation, docs/user_guide/metrics.md,
# "GPU Metrics" (triton-inference-server/server); the same six were exported on a lent H100
# (shared notes, triton-here.md).
TRITON_GPU_METRICS_FROM_DOCS = frozenset(
    {
        "nv_gpu_utilization",
        "nv_gpu_memory_total_bytes",
        "nv_gpu_memory_used_bytes",
        "nv_gpu_power_usage",
        "nv_gpu_power_limit",
        "nv_energy_consumption",
    }
)

# What NVIDIA's vLLM backend exports (its src/utils/metrics.py, as the shared notes record it for the
# 25.11+ containers): counters and histograms, no scheduler or KV-cache gauges. The CPU stand-in
# exports those gauges too, so "seen in the test suite" is not enough for a vllm:* name: it must be
# one of these as well.
NVIDIA_VLLM_COUNTERS = frozenset({"vllm:prompt_tokens_total", "vllm:generation_tokens_total"})
NVIDIA_VLLM_HISTOGRAMS = frozenset(
    {
        "vllm:time_to_first_token_seconds",
        "vllm:time_per_output_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:request_params_n",
    }
)
NVIDIA_VLLM_METRICS = NVIDIA_VLLM_COUNTERS | {
    f"{family}{suffix}" for family in NVIDIA_VLLM_HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")
}

# Grafana's variables, as Grafana would fill them in: intervals become a duration, any other
# variable (they all sit inside regular-expression label matchers here) matches everything.
_INTERVALS = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|__interval|__range)\}")
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?P<selector>.+?)\s*,\s*\w+\s*\)\s*$")


def grafana_to_promql(text: str) -> str:
    return _VARIABLE.sub(".*", _INTERVALS.sub("1m", text))


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in panels:
        found.append(panel)
        found += _panels(panel.get("panels", []))
    return found


def dashboard_expressions(path: Path) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable of a Grafana dashboard."""
    board = json.loads(path.read_text())
    found: list[tuple[str, str]] = []
    for panel in _panels(board.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                found.append((f"{path.name}: panel '{panel.get('title')}' {target.get('refId')}", grafana_to_promql(target["expr"])))
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        matched = _LABEL_VALUES.match(text)
        # label_values(selector, label) is Grafana's, not PromQL: its selector is the PromQL part.
        found.append((f"{path.name}: variable ${variable['name']}", grafana_to_promql(matched["selector"] if matched else text)))
    return found


def alert_expressions(path: Path = ALERTS) -> list[tuple[str, str]]:
    rules = yaml.safe_load(path.read_text())
    return [
        (f"{path.name}: {rule.get('alert') or rule.get('record')}", str(rule["expr"]))
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def autoscaling_queries(path: Path = AUTOSCALING) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for document in yaml.safe_load_all(path.read_text()):
        for trigger in document["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                found.append((f"{path.name}: {document['metadata']['name']}/{trigger.get('name')}", str(trigger["metadata"]["query"])))
    return found


def all_expressions() -> list[tuple[str, str]]:
    boards = sorted(DASHBOARDS.glob("*.json"))
    assert boards, f"no Grafana dashboard in {DASHBOARDS}"
    return [item for board in boards for item in dashboard_expressions(board)] + alert_expressions() + autoscaling_queries()


def metric_names(expression: str) -> set[str]:
    """The metric names an expression selects (functions, keywords, labels and durations are not names)."""
    names: set[str] = set()
    problems: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        by_matcher = [m.value for m in node.matchers.matchers if m.name == "__name__" and str(m.op) == "MatchOp.Equal"]
        if node.name:
            names.add(node.name)
        elif by_matcher:
            names.update(by_matcher)
        else:
            problems.append(str(node))

    promql_parser.walk(promql_parser.parse(expression), visit)
    assert not problems, f"selectors without one metric name (cannot be checked): {problems} in {expression}"
    return names
