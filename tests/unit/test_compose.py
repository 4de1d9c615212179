"""docker-compose.yml and the Dockerfile, checked without a Docker engine: the parts that break silently."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKER_SERVICES = ("worker", "worker-gpu")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def words(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def image_tag(image: str, repository: str) -> str:
    name, _, tag = image.rpartition(":")
    assert name == repository, image
    return tag


def test_kafka_is_a_single_kraft_node_of_apache_kafka_4(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert image_tag(kafka["image"], "apache/kafka").split(".")[0] == "4"
    env = env_of(kafka)
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["CLUSTER_ID"]
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
    assert voters.startswith(f"{env['KAFKA_NODE_ID']}@")
    # One broker: internal topics must not ask for more replicas than exist.
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", key
    listeners = dict(item.split("://", 1)[0:2] for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert listeners["PLAINTEXT"] == "kafka:9092"
    # The host listener advertises the address its port is published on (loopback only, IPv4).
    published = {p.rsplit(":", 1)[-1]: p.rsplit(":", 2)[0] for p in kafka["ports"]}
    host, port = listeners["HOST"].removeprefix("//").rsplit(":", 1)
    assert published[port] == host == "127.0.0.1"
    assert "kafka-broker-api-versions.sh" in " ".join(words(kafka["healthcheck"]["test"]))


def test_redis_is_7_with_appendonly_and_a_volume(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert image_tag(redis["image"], "redis").split(".")[0] == "7"
    command = words(redis["command"])
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert words(redis["healthcheck"]["test"])[-2:] == ["redis-cli", "ping"]


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_worker_waits_for_healthy_services_and_checks_its_own_health(
    services: dict[str, Any], name: str
) -> None:
    worker = services[name]
    assert words(worker["entrypoint"]) + words(worker["command"]) == ["sentiment-worker", "run"]
    assert worker["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "redis": {"condition": "service_healthy"},
    }
    health = " ".join(words(worker["healthcheck"]["test"]))
    port = env_of(worker)["SENTIMENT_METRICS_PORT"]
    assert f"127.0.0.1:{port}/healthz" in health and "urllib" in health
    assert any(v.split(":")[1] == "/models" for v in worker["volumes"])


def test_worker_talks_to_the_compose_services(services: dict[str, Any]) -> None:
    env = env_of(services["worker"])
    assert env["SENTIMENT_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["SENTIMENT_REDIS_URL"] == "redis://redis:6379/0"
    assert env["SENTIMENT_MODEL_DIR"].startswith("/models/")


@pytest.mark.parametrize("name", WORKER_SERVICES)
def test_every_worker_variable_is_a_setting_the_worker_reads(
    services: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.config import Settings

    prefix = str(Settings.model_config.get("env_prefix", ""))
    known = {prefix + field.upper() for field in Settings.model_fields}
    env = env_of(services[name])
    unknown = sorted(set(env) - known)
    assert not unknown, f"{name} sets variables worker.config.Settings does not read: {unknown}"

    # And the worker accepts the values, read from the environment exactly as in the container.
    for key in [k for k in os.environ if k.startswith(prefix)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.kafka_bootstrap_servers == env["SENTIMENT_KAFKA_BOOTSTRAP_SERVERS"]
    assert settings.metrics_port == int(env["SENTIMENT_METRICS_PORT"])
    assert settings.input_topics == env["SENTIMENT_INPUT_TOPICS"].split(",")


def test_gpu_worker_is_optional_and_reserves_a_gpu(services: dict[str, Any]) -> None:
    assert "profiles" not in services["worker"]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices and "gpu" in devices[0]["capabilities"]
    assert env_of(gpu)["SENTIMENT_DEVICE"] == "cuda"


def test_trainer_runs_only_under_the_train_profile_and_writes_the_models_volume(
    services: dict[str, Any], compose: dict[str, Any]
) -> None:
    trainer = services["trainer"]
    assert trainer["profiles"] == ["train"]
    argv = words(trainer["entrypoint"]) + words(trainer["command"])
    assert argv[:2] == ["sentiment-train", "train"]
    output = argv[argv.index("--output") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in trainer["volumes"]}
    assert mounts["/models"] == "models" and output.startswith("/models/")
    worker_model_dir = env_of(services["worker"])["SENTIMENT_MODEL_DIR"]
    assert output == worker_model_dir, "the trainer must write where the worker reads"
    assert "models" in compose["volumes"]


def test_dockerfile_is_slim_non_root_and_enters_the_worker() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert [ln for ln in lines if ln.startswith("FROM ")] == ["FROM python:3.11-slim"]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1] not in ("root", "0", "0:0"), users
    assert re.search(r"^ARG TORCH_INDEX_URL=\S+", text, re.MULTILINE)
    assert 'ENTRYPOINT ["sentiment-worker"]' in lines


def test_dockerignore_keeps_local_state_out_of_the_build_context() -> None:
    ignored = set((ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".git", ".venv", ".stack", "models"} <= ignored
