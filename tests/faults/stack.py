"""The suite's own Kafka broker and redis-server (scripts/stack with a dedicated dir and ports), by PID.

Fault scenarios kill and pause these processes, so they never share the development stack on 9092/6390:
FAULTS_STACK_DIR (default .stack/faults), FAULTS_KAFKA_PORT (29092), FAULTS_CONTROLLER_PORT (29093),
FAULTS_REDIS_PORT (26390), FAULTS_PROXIED_PORT (29094) and FAULTS_PROXY_PORT (29095) choose where it lives.

Its broker does not create topics on first use (a missing output topic stays missing, F14), and it has a
second listener on the proxied port that advertises the proxy's port: workers given proxy_bootstrap reach
the broker only through the suite's TCP proxy (tests/faults/proxy.py), even after the metadata round trip.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "scripts" / "stack"


@dataclass(frozen=True)
class Stack:
    dir: Path
    kafka_port: int
    controller_port: int
    redis_port: int
    proxied_port: int
    proxy_port: int

    @classmethod
    def from_env(cls) -> Stack:
        return cls(
            dir=Path(os.environ.get("FAULTS_STACK_DIR", ROOT / ".stack" / "faults")).resolve(),
            kafka_port=int(os.environ.get("FAULTS_KAFKA_PORT", "29092")),
            controller_port=int(os.environ.get("FAULTS_CONTROLLER_PORT", "29093")),
            redis_port=int(os.environ.get("FAULTS_REDIS_PORT", "26390")),
            proxied_port=int(os.environ.get("FAULTS_PROXIED_PORT", "29094")),
            proxy_port=int(os.environ.get("FAULTS_PROXY_PORT", "29095")),
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def proxy_bootstrap(self) -> str:
        return f"127.0.0.1:{self.proxy_port}"

    def redis_url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/{db}"

    def _script(self, command: str, timeout: float = 300) -> None:
        env = dict(
            os.environ,
            STACK_DIR=str(self.dir),
            STACK_KAFKA_PORT=str(self.kafka_port),
            STACK_CONTROLLER_PORT=str(self.controller_port),
            STACK_REDIS_PORT=str(self.redis_port),
            STACK_PROXIED_PORT=str(self.proxied_port),
            STACK_PROXY_PORT=str(self.proxy_port),
            STACK_AUTO_CREATE_TOPICS="false",
        )
        done = subprocess.run(
            [str(STACK), command], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"scripts/stack {command} failed: {done.stderr.strip()[-500:]}")

    def up(self) -> None:
        self._script("up")

    def down(self) -> None:
        self._script("down")

    def restart_kafka(self) -> None:
        self._script("restart-kafka")

    def restart_redis(self) -> None:
        self._script("restart-redis")

    def running(self) -> bool:
        """True when both servers recorded in the pid files are alive."""
        try:
            return all(_state(self._pid(n)) not in ("", "Z") for n in ("kafka", "redis"))
        except (OSError, ValueError):
            return False

    def _pid(self, name: str) -> int:
        return int((self.dir / f"{name}.pid").read_text().strip())

    def kafka_pid(self) -> int:
        return self._pid("kafka")

    def redis_pid(self) -> int:
        return self._pid("redis")

    def signal(self, name: str, sig: signal.Signals) -> int:
        pid = self._pid(name)
        os.kill(pid, sig)
        return pid

    def kill(self, name: str) -> None:
        """SIGKILL the server and wait until the PID is gone (the port is free again)."""
        pid = self.signal(name, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and _state(pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.05)

    def wipe_redis(self) -> None:
        """Kill redis-server and delete its data (RDB and AOF), as a lost volume would."""
        self.kill("redis")
        redis_dir = self.dir / "redis"
        for path in redis_dir.iterdir():
            if path.name.endswith(".log"):
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
