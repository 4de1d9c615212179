"""Pytest fixtures for tests against a real Kafka broker and Redis server.

Load with ``pytest_plugins = ["worker.pytest_plugin"]``. Each service is found, in this order:

1. ``SENTIMENT_KAFKA_BOOTSTRAP_SERVERS`` / ``SENTIMENT_REDIS_URL`` from the environment;
2. containers started with testcontainers when a Docker engine answers, stopped at the end of the session
   (``SENTIMENT_TEST_DOCKER=0`` skips this step; ``SENTIMENT_TEST_DOCKER=1`` requires it: no fallback to 3);
3. the local stack: ``scripts/stack up`` in the repository, else the packaged ``sentiment-stack up`` with its
   files in the rootdir's ``.stack/`` (Kafka and redis-server without Docker, needing Java, Maven and
   redis-server), left running afterwards so the next session starts in a second.

When none works the tests that need the service are skipped with the reason, or fail under ``CI=true``:
CI must never pass by skipping its integration tests.

Use a URL such as ``redis://127.0.0.1:6390/5`` to give a test session a Redis DB of its own:
``redis_clean_url`` empties the DB named by ``redis_url`` before each test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis
from kafka import KafkaAdminClient

KAFKA_ENV = "SENTIMENT_KAFKA_BOOTSTRAP_SERVERS"
REDIS_ENV = "SENTIMENT_REDIS_URL"
DOCKER_OPT_ENV = "SENTIMENT_TEST_DOCKER"
KAFKA_IMAGE = "apache/kafka:4.1.0"
REDIS_IMAGE = "redis:7"
IMAGES = {"Kafka": KAFKA_IMAGE, "Redis": REDIS_IMAGE}
STACK_UP_TIMEOUT_S = 600  # a cold run fetches ~45 MB of jars from Maven Central first
READY_TIMEOUT_S = 20.0

log = logging.getLogger(__name__)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


# ---------------------------------------------------------------------------------------- probes


def kafka_ready(bootstrap: str, timeout_s: float = READY_TIMEOUT_S) -> str | None:
    """None once a metadata request to `bootstrap` lists a broker; otherwise why not, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    error = "no answer"
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap,
                bootstrap_timeout_ms=3000,
                request_timeout_ms=3000,
                reconnect_backoff_max_ms=500,
            )
            try:
                if admin.describe_cluster()["brokers"]:
                    return None
                error = "metadata lists no broker"
            finally:
                admin.close()
        except Exception as exc:  # any failure here just means "not ready yet"
            error = _describe(exc)
        if time.monotonic() >= deadline:
            return error
        time.sleep(0.3)


def redis_ready(url: str, timeout_s: float = READY_TIMEOUT_S) -> str | None:
    """None once Redis at `url` answers PING; otherwise why not, after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
            return None
        except redis.RedisError as exc:
            error = _describe(exc)
        finally:
            client.close()
        if time.monotonic() >= deadline:
            return error
        time.sleep(0.2)


def docker_choice() -> str | None:
    """SENTIMENT_TEST_DOCKER: "off" (0/false/no), "required" (1/true/yes), None (unset: use it if it can)."""
    value = os.environ.get(DOCKER_OPT_ENV, "").strip().lower()
    if value in ("0", "false", "no"):
        return "off"
    if value in ("1", "true", "yes"):
        return "required"
    return None


def docker_available() -> bool:
    """True when a Docker engine answers a ping within a few seconds (never hangs without one)."""
    if docker_choice() == "off":
        return False
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1")


def unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing service is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def read_env_file(path: Path) -> dict[str, str]:
    """Parse the `export NAME=value` lines that `scripts/stack up` writes."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        name, sep, value = line.partition("=")
        if sep:
            out[name.strip()] = " ".join(shlex.split(value))
    return out


# -------------------------------------------------------------------------------------- sources


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _container_note(container: Any, image: str, address: str) -> str:
    wrapped = container.get_wrapped_container()
    note = f"container {wrapped.short_id} ({image}) at {address}"
    log.info("started %s", note)
    return note


def _start_kafka_container() -> tuple[Any, str]:
    """An apache/kafka KRaft broker whose advertised listener is the host's mapped port.

    The mapped port is only known once the container runs, so the container waits for a file holding the
    advertised listeners before it hands over to the image's own start script.
    """
    from testcontainers.core.container import DockerContainer

    env = {
        "CLUSTER_ID": "c2VudGltZW50LXN0cmVhbQ",
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9094,CONTROLLER://0.0.0.0:9093",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_NUM_PARTITIONS": "1",
    }
    flag = "/tmp/advertised-listeners"
    container = DockerContainer(KAFKA_IMAGE).with_exposed_ports(9092)
    for key, value in env.items():
        container = container.with_env(key, value)
    container = container.with_command(
        [
            "bash",
            "-c",
            f"while [ ! -s {flag} ]; do sleep 0.1; done; "
            f'export KAFKA_ADVERTISED_LISTENERS="$(cat {flag})"; exec /etc/kafka/docker/run',
        ]
    )
    container.start()
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(9092)
        listeners = f"PLAINTEXT://{host}:{port},BROKER://localhost:9094"
        container.copy_into_container(listeners.encode(), flag)
        bootstrap = f"{host}:{port}"
        error = kafka_ready(bootstrap, timeout_s=90)
        if error:
            raise RuntimeError(f"Kafka container did not answer at {bootstrap}: {error}")
    except BaseException:
        container.stop()
        raise
    return container, bootstrap


def _start_redis_container() -> tuple[Any, str]:
    try:
        from testcontainers.community.redis import RedisContainer
    except ImportError:  # testcontainers < 4.15 kept it at the top level
        from testcontainers.redis import RedisContainer

    container = RedisContainer(REDIS_IMAGE)
    container.start()
    url = f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
    return container, url


def _stack_command(rootpath: Path) -> tuple[list[str], Path, str]:
    """(command line, STACK_HOME, name) of the local stack: the repository's scripts/stack when this runs
    from a checkout, else the copy that ships in the package (``sentiment-stack``)."""
    for base in (rootpath, Path(__file__).resolve().parents[1]):
        script = base / "scripts" / "stack"
        if script.is_file():
            return [str(script), "up"], base, "scripts/stack"
    return [sys.executable, "-m", "worker.stack", "up"], rootpath, "sentiment-stack"


@dataclass
class Services:
    """Finds each service once per session; remembers failures so every test reports the same reason."""

    rootpath: Path
    containers: list[Any] = field(default_factory=list)
    # Where each service came from, for the session's closing summary: "Kafka" -> "container 3f2a... at ...".
    sources: dict[str, str] = field(default_factory=dict)
    _stack: dict[str, str] | str | None = None
    _stack_name: str = "scripts/stack"
    _docker: bool | None = None

    def kafka(self) -> str:
        return self._resolve("Kafka", KAFKA_ENV, kafka_ready, _start_kafka_container)

    def redis(self) -> str:
        return self._resolve("Redis", REDIS_ENV, redis_ready, _start_redis_container)

    def _resolve(
        self,
        name: str,
        env: str,
        ready: Callable[[str], str | None],
        start_container: Callable[[], tuple[Any, str]],
    ) -> str:
        given = os.environ.get(env)
        if given:
            error = ready(given)
            if error:
                unavailable(f"{env}={given}: {name} does not answer ({error})")
            self.sources[name] = f"{env}={given}"
            return given
        reasons = []
        if self._docker is None:
            self._docker = docker_available()
        required = docker_choice() == "required"
        if self._docker:
            try:
                container, address = start_container()
            except Exception as exc:
                if required:
                    unavailable(f"{DOCKER_OPT_ENV}=1: no {name} container: testcontainers: {_describe(exc)}")
                reasons.append(f"testcontainers: {_describe(exc)}")
            else:
                self.containers.append(container)
                self.sources[name] = _container_note(container, IMAGES[name], address)
                return address
        else:
            if required:
                unavailable(f"{DOCKER_OPT_ENV}=1 but no Docker engine answers (see DOCKER_HOST)")
            reasons.append("no Docker engine answers")
        stack = self._stack_env()
        if isinstance(stack, str):
            reasons.append(stack)
        else:
            address = stack.get(env, "")
            error = ready(address) if address else f".stack/env has no {env}"
            if error is None:
                self.sources[name] = f"{self._stack_name} at {address}"
                return address
            reasons.append(f"{self._stack_name} gave {address!r} but {name} does not answer ({error})")
        unavailable(f"no {name} for integration tests: set {env}, or: " + "; ".join(reasons))

    def _stack_env(self) -> dict[str, str] | str:
        """The variables from `scripts/stack up`, or why they could not be had."""
        if self._stack is not None:
            return self._stack
        command, home, self._stack_name = _stack_command(self.rootpath)
        stack_dir = Path(os.environ.get("STACK_DIR") or home / ".stack")
        try:
            proc = subprocess.run(
                command,
                cwd=home,
                env={**os.environ, "STACK_HOME": str(home)},
                capture_output=True,
                text=True,
                timeout=STACK_UP_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._stack = f"{self._stack_name} up: {exc}"
            return self._stack
        if proc.returncode != 0:
            lines = (proc.stderr or proc.stdout).strip().splitlines()
            self._stack = f"{self._stack_name} up failed: {lines[-1] if lines else f'exit {proc.returncode}'}"
            return self._stack
        log.info("%s up: %s", self._stack_name, proc.stdout.strip())
        try:
            self._stack = read_env_file(stack_dir / "env")
        except OSError as exc:
            self._stack = f"{self._stack_name} up wrote no env file: {exc}"
        return self._stack

    def close(self) -> None:
        for container in reversed(self.containers):
            with contextlib.suppress(Exception):
                container.stop()
        self.containers.clear()


# -------------------------------------------------------------------------------------- fixtures


SERVICES_KEY = pytest.StashKey[Services]()


@pytest.fixture(scope="session")
def _sentiment_services(request: pytest.FixtureRequest) -> Iterator[Services]:
    services = Services(rootpath=Path(request.config.rootpath))
    request.config.stash[SERVICES_KEY] = services
    yield services
    services.close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """One line naming where Kafka and Redis came from, so a log shows which path the fixtures took."""
    services = config.stash.get(SERVICES_KEY, None)
    if services is not None and services.sources:
        used = "; ".join(f"{name}: {where}" for name, where in services.sources.items())
        terminalreporter.write_line(f"sentiment services: {used}")


@pytest.fixture(scope="session")
def kafka_bootstrap(_sentiment_services: Services) -> str:
    """host:port of a Kafka broker that answers."""
    return _sentiment_services.kafka()


@pytest.fixture(scope="session")
def redis_url(_sentiment_services: Services) -> str:
    """URL of a Redis server that answers, e.g. redis://127.0.0.1:6390/0."""
    return _sentiment_services.redis()


@pytest.fixture
def redis_clean_url(redis_url: str) -> str:
    """`redis_url`, with its DB emptied (FLUSHDB) just before the test."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, socket_timeout=10)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_url


@pytest.fixture
def redis_client(redis_clean_url: str) -> Iterator[redis.Redis]:
    """A client on the freshly emptied DB (bytes replies), closed after the test."""
    client = redis.Redis.from_url(redis_clean_url, socket_connect_timeout=5, socket_timeout=10)
    yield client
    client.close()


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=15000)
    yield admin
    admin.close()


def wait_for_partitions(
    admin: KafkaAdminClient, topic: str, partitions: int, timeout_s: float = 15.0
) -> None:
    """Block until metadata shows `topic` with `partitions` partitions, each with a leader."""
    admin.wait_for_topics([topic], timeout_ms=int(timeout_s * 1000))
    deadline = time.monotonic() + timeout_s
    while True:
        (info,) = admin.describe_topics([topic])
        ready = [p for p in info.get("partitions") or [] if p.get("leader_id", -1) >= 0]
        if info.get("error_code", 0) == 0 and len(ready) == partitions:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"topic {topic}: {len(ready)}/{partitions} partitions ready after {timeout_s}s"
            )
        time.sleep(0.1)


@pytest.fixture
def new_topic(kafka_admin: KafkaAdminClient) -> Iterator[Callable[..., str]]:
    """Factory: ``new_topic(prefix="t", partitions=1)`` creates a uniquely named topic and returns its name.

    The topics are deleted after the test (best effort) so a long-lived broker does not pile them up.
    """
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        kafka_admin.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}})
        created.append(name)
        wait_for_partitions(kafka_admin, name, partitions)
        return name

    yield make
    if created:
        with contextlib.suppress(Exception):
            kafka_admin.delete_topics(created, timeout_ms=5000, raise_errors=False)
