"""Worker settings: environment variables prefixed SENTIMENT_.

Built in main(), never at import time. Secrets are SecretStr and can also come from a file named by the
matching *_FILE variable (e.g. SENTIMENT_KAFKA_SASL_PASSWORD_FILE=/run/secrets/kafka), as container platforms
mount them; they are never logged.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.batching import default_batch_size, default_forward_tokens
from worker.decode import DEFAULT_TOPIC_KINDS
from worker.messages import KINDS

_SECRET_FIELDS = ("kafka_sasl_password", "kafka_ssl_password", "redis_password")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SENTIMENT_", extra="ignore", validate_default=True)

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    redis_url: str = "redis://127.0.0.1:6379/0"
    model_dir: Path = Path("models/minilm-mixed")
    # A model registry (sentiment-train register/promote): serve the version MODEL_ALIAS names, and swap to
    # the one it names next without a restart. Takes the place of MODEL_DIR.
    model_registry: Path | None = None
    model_alias: str = Field(default="champion", pattern=r"^[a-z][a-z0-9_-]*$")
    model_poll_s: float = Field(default=10.0, gt=0, le=3600)
    input_topics: Annotated[list[str], NoDecode] = ["reviews", "social-posts"]
    output_topic: str = "sentiment-results"
    dlq_topic: str = "sentiment-dlq"
    group_id: str = "sentiment-worker"
    # Topic -> kind for messages without "kind": "reviews=review,social-posts=social_post" or a JSON object.
    topic_kinds: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_TOPIC_KINDS)
    )

    batch_size: int | None = Field(default=None, ge=1, le=4096, description="default 64 on CPU, 128 on CUDA")
    max_wait_ms: int = Field(default=50, ge=0, le=60_000)
    max_length: int | None = Field(
        default=None, ge=8, le=512, description="default: the model folder's truncation.json, else 128"
    )
    max_batch_tokens: int | None = Field(
        default=None,
        ge=8,
        description="a batch closes when its texts hold this many tokens (batch_size x max_length)",
    )
    max_forward_tokens: int | None = Field(
        default=None, ge=8, description="padded tokens per forward pass (default 1024 on CPU, 16384 on CUDA)"
    )
    max_message_bytes: int = Field(default=64 * 1024, ge=64)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto: bf16 on CUDA (fp16 without bf16); on a CPU bf16 where it has AMX-BF16 and the model folder's
    # precision.json shows bf16 costs at most 0.3 points, else fp32 (classifier.pick_precision).
    # int8: CPU only.
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto"
    torch_threads: int = Field(default=0, ge=0, le=256, description="0: min(4, CPU count)")
    processing_guarantee: Literal["at_least_once", "exactly_once"] = "at_least_once"
    # Exactly once: the producer's transactional.id; one per worker instance, stable across its restarts.
    transactional_id: str | None = Field(default=None, min_length=1, max_length=200)
    # Exactly once: the longest one transaction call (send offsets, commit, abort) may wait for the broker;
    # past it the worker exits 1 and a restart resumes. 60 s, as the Java producer's max.block.ms.
    transaction_call_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    session_timeout_ms: int = Field(default=45_000, ge=1_000)
    connect_timeout_s: float = Field(default=30.0, gt=0)

    metrics_port: int = Field(default=9100, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    bucket_seconds: int = Field(default=60, ge=1)
    retention_seconds: int = Field(default=7 * 86400, ge=60)
    mood_size: int = Field(default=20, ge=1, le=10_000)
    redis_prefix: str = Field(default="sentiment", pattern=r"^[A-Za-z0-9_.-]+$")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_text: bool = False

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_password: SecretStr | None = None
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_ssl_ca_certs: Path | None = None

    # Fault injection for the crash tests: SIGKILL self the Nth time the loop reaches this point.
    fault_point: (
        Literal["after_poll", "after_classify", "after_publish", "after_redis", "after_commit"] | None
    ) = None
    fault_after_n: int = Field(default=1, ge=1)
    # Fault injection for F17: a forward pass over more padded tokens than this raises out-of-memory.
    fault_oom_tokens: int | None = Field(default=None, ge=1)

    @field_validator("input_topics", mode="before")
    @classmethod
    def _split_topics(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [t.strip() for t in v.split(",") if t.strip()]
        if isinstance(v, list) and not v:
            raise ValueError("needs at least one topic")
        return v

    @field_validator("topic_kinds", mode="before")
    @classmethod
    def _parse_kinds(cls, v: Any) -> Any:
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("{"):
                return json.loads(text)
            pairs = [p.strip() for p in text.split(",") if p.strip()]
            if not all("=" in p for p in pairs):
                raise ValueError("expected topic=kind pairs separated by commas")
            return {t.strip(): k.strip() for t, k in (p.split("=", 1) for p in pairs)}
        return v

    @field_validator("topic_kinds")
    @classmethod
    def _check_kinds(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in v.values() if k not in KINDS)
        if bad:
            raise ValueError(f"kinds must be review or social_post, got {', '.join(bad)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _secret_files(cls, data: Any) -> Any:
        """Fill each secret from SENTIMENT_<NAME>_FILE when the variable itself is unset."""
        if not isinstance(data, dict):
            return data
        for name in _SECRET_FIELDS:
            path = os.environ.get(f"SENTIMENT_{name.upper()}_FILE")
            if path and not data.get(name):
                try:
                    data[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
                except OSError as exc:
                    raise ValueError(
                        f"SENTIMENT_{name.upper()}_FILE: cannot read {path}: {exc.strerror}"
                    ) from None
        return data

    @model_validator(mode="after")
    def _check_sasl(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL") and self.kafka_sasl_mechanism is None:
            raise ValueError("KAFKA_SASL_MECHANISM is required with a SASL security protocol")
        return self

    # ------------------------------------------------------------------------------------ derived values

    def effective_batch_size(self, device: str) -> int:
        return self.batch_size or default_batch_size(device)

    def effective_batch_tokens(self, device: str) -> int:
        return self.max_batch_tokens or self.effective_batch_size(device) * (self.max_length or 128)

    def effective_forward_tokens(self, device: str) -> int:
        return self.max_forward_tokens or default_forward_tokens(device)

    def effective_transactional_id(self) -> str:
        """TRANSACTIONAL_ID, else "<group_id>-<hostname>": stable across restarts of the same host or pod, so
        a restarted instance aborts its predecessor's open transaction at once. Two instances on one host
        need distinct TRANSACTIONAL_IDs (the same id fences the older one, which exits)."""
        return self.transactional_id or f"{self.group_id}-{socket.gethostname()}"

    def effective_threads(self) -> int:
        return self.torch_threads or min(4, len(os.sched_getaffinity(0)))

    def kafka_common(self) -> dict[str, Any]:
        """kafka-python connection and security arguments shared by the consumer and the producer."""
        out: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()],
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            out["sasl_mechanism"] = self.kafka_sasl_mechanism
            out["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                out["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            value = getattr(self, f"kafka_{name}")
            if value is not None:
                out[name] = str(value)
        if self.kafka_ssl_password is not None:
            out["ssl_password"] = self.kafka_ssl_password.get_secret_value()
        return out

    def redis_kwargs(self) -> dict[str, Any]:
        """Extra redis.Redis.from_url arguments (credentials in the URL also work)."""
        out: dict[str, Any] = {}
        if self.redis_username:
            out["username"] = self.redis_username
        if self.redis_password is not None:
            out["password"] = self.redis_password.get_secret_value()
        if self.redis_ssl_ca_certs is not None:
            out["ssl_ca_certs"] = str(self.redis_ssl_ca_certs)
        return out

    # HTTP API (sentiment-worker serve)
    api_host: str = "127.0.0.1"  # loopback unless an operator decides to expose it
    api_port: int = Field(default=8080, ge=0, le=65535)
    # When set, every API endpoint wants "Authorization: Bearer <token>"; also from SENTIMENT_API_TOKEN_FILE.
    api_token: SecretStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _api_token_file(cls, data: Any) -> Any:
        path = os.environ.get("SENTIMENT_API_TOKEN_FILE")
        if isinstance(data, dict) and path and not data.get("api_token"):
            try:
                data["api_token"] = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"SENTIMENT_API_TOKEN_FILE: cannot read {path}: {exc.strerror}") from None
        return data

    @field_validator("api_token")
    @classmethod
    def _token_not_blank(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().strip():
            raise ValueError("must not be empty (unset it to serve without a token)")
        return v


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)


def describe_error(exc: ValidationError) -> str:
    """One line naming each bad setting by its environment variable, without echoing values (secrets)."""
    parts = []
    for e in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in e["loc"]]
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"SENTIMENT_{loc[0].upper()}: {msg}" if loc else msg)
    return "invalid settings: " + "; ".join(parts)
