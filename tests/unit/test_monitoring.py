"""The Grafana board and the compose monitoring profile, checked against what the worker really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
BOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "sentiment-worker.json"
# The samples each metric type exposes (prometheus_client's text format).
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
METRIC_RE = re.compile(r"\b(sentiment_[a-z0-9_]+)")
BY_RE = re.compile(r"\bby \(([^)]*)\)")


@pytest.fixture(scope="module")
def exported() -> dict[str, tuple[str, tuple[str, ...]]]:
    """sample name -> (family type, label names) for every metric in the worker's registry."""
    metrics = Metrics()
    types = {family.name: family.type for family in metrics.registry.collect()}
    labels = {
        collector._name: tuple(collector._labelnames)  # the only place prometheus_client keeps them
        for collector in vars(metrics).values()
        if hasattr(collector, "_labelnames")
    }
    assert labels.keys() == types.keys(), "every registry metric is an attribute of Metrics"
    return {name + suffix: (kind, labels[name]) for name, kind in types.items() for suffix in SUFFIXES[kind]}


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    data = json.loads(BOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def targets(board: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in board["panels"] if p["type"] != "row" for t in p["targets"]]


def test_every_metric_the_board_queries_is_one_the_worker_exports(
    board: dict[str, Any], exported: dict[str, tuple[str, tuple[str, ...]]]
) -> None:
    for title, target in targets(board):
        names = METRIC_RE.findall(target["expr"])
        assert names, f"{title}: no sentiment_* metric in {target['expr']!r}"
        for name in names:
            assert name in exported, f"{title}: {name} is not exported by worker.metrics.Metrics"
            kind, labels = exported[name]
            # Grouping labels and legend placeholders must be labels the metric has (or Prometheus's own).
            grouped = {g.strip() for by in BY_RE.findall(target["expr"]) for g in by.split(",") if g.strip()}
            legend = set(re.findall(r"{{\s*(\w+)\s*}}", target.get("legendFormat", "")))
            allowed = {*labels, "le", "instance", "job"}
            assert grouped <= allowed and legend <= allowed, (title, grouped, legend, labels)
            if kind == "histogram":
                assert "_bucket" not in name or "histogram_quantile" in target["expr"]


def test_the_board_covers_what_operators_asked_for(board: dict[str, Any]) -> None:
    queried = {m for _, t in targets(board) for m in METRIC_RE.findall(t["expr"])}
    for wanted in (
        "sentiment_messages_in_total",  # throughput
        "sentiment_results_total",
        "sentiment_consumer_lag",  # lag
        "sentiment_batch_seconds_bucket",  # batch latency
        "sentiment_end_to_end_seconds_bucket",  # end-to-end percentiles
        "sentiment_dead_letters_total",  # dead letters by reason
        "sentiment_batch_failures_total",  # failures
        "sentiment_model_info",  # model version
    ):
        assert wanted in queried, wanted
    e2e = [t["expr"] for _, t in targets(board) if "sentiment_end_to_end_seconds" in t["expr"]]
    assert {re.search(r"histogram_quantile\(([\d.]+)", e).group(1) for e in e2e} == {"0.5", "0.95", "0.99"}  # type: ignore[union-attr]
    assert any("by (reason)" in t["expr"] for _, t in targets(board) if "dead_letters" in t["expr"])


def test_panels_have_unique_ids_and_use_the_board_datasource(board: dict[str, Any]) -> None:
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for title, target in targets(board):
        assert target["datasource"]["uid"] == "${datasource}", title


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(compose, dict)
    return dict(compose["services"])


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> host path for bind mounts."""
    return {v.split(":")[1]: v.split(":")[0] for v in service["volumes"] if v.startswith("./")}


def test_compose_mounts_the_board_into_an_optional_grafana_and_prometheus(services: dict[str, Any]) -> None:
    grafana, prometheus = services["grafana"], services["prometheus"]
    assert grafana["profiles"] == prometheus["profiles"] == ["monitoring"]

    provisioning = mounts(grafana)
    assert (
        ROOT / provisioning["/etc/grafana/provisioning"]
    ).resolve() == ROOT / "monitoring/grafana/provisioning"
    board_dir = (ROOT / provisioning["/var/lib/grafana/dashboards"]).resolve()
    assert BOARD.parent == board_dir
    providers = yaml.safe_load(
        (ROOT / "monitoring/grafana/provisioning/dashboards/sentiment.yml").read_text(encoding="utf-8")
    )
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    sources = yaml.safe_load(
        (ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text(encoding="utf-8")
    )
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"

    config_host = mounts(prometheus)["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((ROOT / config_host).read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    worker_port = int(services["worker"]["environment"]["SENTIMENT_METRICS_PORT"])
    assert sd["port"] == worker_port
    assert set(sd["names"]) == {"worker", "worker-gpu"}


def test_compose_api_serves_redis_only_on_loopback(services: dict[str, Any]) -> None:
    from worker.config import Settings

    api = services["api"]
    assert api["entrypoint"] + api["command"][:1] == ["sentiment-worker", "serve"]
    assert set(api["environment"]) <= {"SENTIMENT_" + f.upper() for f in Settings.model_fields}
    assert (
        api["environment"]["SENTIMENT_REDIS_URL"] == services["worker"]["environment"]["SENTIMENT_REDIS_URL"]
    )
    assert all(p.startswith("127.0.0.1:") for p in api["ports"])
    port = api["command"][api["command"].index("--port") + 1]
    assert f"127.0.0.1:{port}/healthz" in " ".join(api["healthcheck"]["test"])
    assert set(api["depends_on"]) == {"redis"}
