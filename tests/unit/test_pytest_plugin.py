"""worker.pytest_plugin's choice of services, without starting any: SENTIMENT_TEST_DOCKER and the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker import pytest_plugin
from worker.pytest_plugin import Services, docker_choice


@pytest.mark.parametrize(
    ("value", "choice"),
    [("0", "off"), ("false", "off"), ("1", "required"), ("yes", "required"), ("", None), ("maybe", None)],
)
def test_docker_choice(monkeypatch: pytest.MonkeyPatch, value: str, choice: str | None) -> None:
    monkeypatch.setenv("SENTIMENT_TEST_DOCKER", value)
    assert docker_choice() == choice


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("SENTIMENT_KAFKA_BOOTSTRAP_SERVERS", "SENTIMENT_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")


def test_required_docker_without_an_engine_fails_under_ci_and_never_falls_back(
    no_engine: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SENTIMENT_TEST_DOCKER", "1")
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(pytest_plugin, "_stack_command", lambda _: pytest.fail("fell back to the stack"))
    with pytest.raises(pytest.fail.Exception, match="SENTIMENT_TEST_DOCKER=1 but no Docker engine answers"):
        Services(rootpath=tmp_path).kafka()


def test_required_docker_without_an_engine_skips_outside_ci(
    no_engine: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SENTIMENT_TEST_DOCKER", "1")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Docker engine answers"):
        Services(rootpath=tmp_path).redis()


def test_the_environment_is_named_as_the_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SENTIMENT_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(pytest_plugin, "redis_ready", lambda url: None)
    services = Services(rootpath=tmp_path)
    assert services.redis() == "redis://127.0.0.1:1/0"
    assert services.sources == {"Redis": "SENTIMENT_REDIS_URL=redis://127.0.0.1:1/0"}


def test_the_repository_stack_is_found_from_any_rootdir(tmp_path: Path) -> None:
    command, home, name = pytest_plugin._stack_command(tmp_path)
    repo = Path(pytest_plugin.__file__).resolve().parents[1]
    assert (command, home, name) == ([str(repo / "scripts" / "stack"), "up"], repo, "scripts/stack")
