"""Settings parsing from SENTIMENT_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from worker.config import Settings, describe_error


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("SENTIMENT_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults(env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.input_topics == ["reviews", "social-posts"]
    assert (s.output_topic, s.dlq_topic, s.group_id) == (
        "sentiment-results",
        "sentiment-dlq",
        "sentiment-worker",
    )
    assert s.topic_kinds == {"reviews": "review", "social-posts": "social_post"}
    assert s.effective_batch_size("cpu") == 64 and s.effective_batch_size("cuda") == 128
    assert s.effective_batch_tokens("cpu") == 64 * 128
    assert s.effective_forward_tokens("cpu") == 1024 and s.effective_forward_tokens("cuda") == 16384
    assert 1 <= s.effective_threads() <= 4
    assert (s.max_wait_ms, s.max_message_bytes, s.metrics_port, s.bucket_seconds) == (50, 65536, 9100, 60)
    assert s.processing_guarantee == "at_least_once" and s.log_text is False


def test_values_from_the_environment(env: pytest.MonkeyPatch) -> None:
    env.setenv("SENTIMENT_INPUT_TOPICS", " a, b ,,c")
    env.setenv("SENTIMENT_TOPIC_KINDS", "a=review, b=social_post")
    env.setenv("SENTIMENT_BATCH_SIZE", "8")
    env.setenv("SENTIMENT_MAX_BATCH_TOKENS", "300")
    env.setenv("SENTIMENT_MAX_FORWARD_TOKENS", "256")
    env.setenv("SENTIMENT_TORCH_THREADS", "1")
    env.setenv("SENTIMENT_DEVICE", "cpu")
    env.setenv("SENTIMENT_LOG_TEXT", "true")
    s = Settings()
    assert s.input_topics == ["a", "b", "c"]
    assert s.topic_kinds == {"a": "review", "b": "social_post"}
    assert s.effective_batch_size("cuda") == 8 and s.effective_batch_tokens("cpu") == 300
    assert s.effective_forward_tokens("cuda") == 256 and s.effective_threads() == 1
    assert s.device == "cpu" and s.log_text is True


def test_topic_kinds_as_json(env: pytest.MonkeyPatch) -> None:
    env.setenv("SENTIMENT_TOPIC_KINDS", '{"tweets": "social_post"}')
    assert Settings().topic_kinds == {"tweets": "social_post"}


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("SENTIMENT_TOPIC_KINDS", "a=tweet", "SENTIMENT_TOPIC_KINDS"),
        ("SENTIMENT_TOPIC_KINDS", "nonsense", "topic=kind"),
        ("SENTIMENT_BATCH_SIZE", "0", "SENTIMENT_BATCH_SIZE"),
        ("SENTIMENT_BATCH_SIZE", "many", "SENTIMENT_BATCH_SIZE"),
        ("SENTIMENT_DEVICE", "tpu", "SENTIMENT_DEVICE"),
        ("SENTIMENT_INPUT_TOPICS", " , ", "SENTIMENT_INPUT_TOPICS"),
        ("SENTIMENT_PROCESSING_GUARANTEE", "at_most_once", "SENTIMENT_PROCESSING_GUARANTEE"),
        ("SENTIMENT_REDIS_PREFIX", "a:b", "SENTIMENT_REDIS_PREFIX"),
        ("SENTIMENT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL", "KAFKA_SASL_MECHANISM is required"),
        ("SENTIMENT_FAULT_POINT", "after_lunch", "SENTIMENT_FAULT_POINT"),
    ],
)
def test_bad_settings_give_one_line_naming_the_variable(
    env: pytest.MonkeyPatch, name: str, value: str, fragment: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    line = describe_error(info.value)
    assert "\n" not in line and fragment in line


def test_error_line_never_echoes_a_secret(env: pytest.MonkeyPatch) -> None:
    env.setenv("SENTIMENT_KAFKA_SASL_PASSWORD", "hunter2")
    env.setenv("SENTIMENT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    env.setenv("SENTIMENT_BATCH_SIZE", "hunter2")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "hunter2" not in describe_error(info.value)


def test_secrets_are_hidden_and_can_come_from_files(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "kafka").write_text("s3cret\n")
    (tmp_path / "redis").write_text("r3dis")
    env.setenv("SENTIMENT_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    env.setenv("SENTIMENT_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    env.setenv("SENTIMENT_KAFKA_SASL_USERNAME", "svc")
    env.setenv("SENTIMENT_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "kafka"))
    env.setenv("SENTIMENT_REDIS_PASSWORD_FILE", str(tmp_path / "redis"))
    env.setenv("SENTIMENT_KAFKA_SSL_CAFILE", "/etc/ca.pem")
    s = Settings()
    assert "s3cret" not in repr(s) and "r3dis" not in repr(s)
    kafka = s.kafka_common()
    assert kafka["security_protocol"] == "SASL_SSL" and kafka["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (kafka["sasl_plain_username"], kafka["sasl_plain_password"]) == ("svc", "s3cret")
    assert kafka["ssl_cafile"] == "/etc/ca.pem"
    assert s.redis_kwargs() == {"password": "r3dis"}


def test_the_variable_wins_over_its_file(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "p").write_text("from-file")
    env.setenv("SENTIMENT_REDIS_PASSWORD", "from-env")
    env.setenv("SENTIMENT_REDIS_PASSWORD_FILE", str(tmp_path / "p"))
    assert Settings().redis_kwargs()["password"] == "from-env"


def test_missing_secret_file_is_a_clear_error(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env.setenv("SENTIMENT_REDIS_PASSWORD_FILE", str(tmp_path / "nope"))
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "SENTIMENT_REDIS_PASSWORD_FILE: cannot read" in describe_error(info.value)


def test_plaintext_kafka_has_no_security_arguments(env: pytest.MonkeyPatch) -> None:
    env.setenv("SENTIMENT_KAFKA_BOOTSTRAP_SERVERS", "k1:9092, k2:9092")
    assert Settings().kafka_common() == {
        "bootstrap_servers": ["k1:9092", "k2:9092"],
        "security_protocol": "PLAINTEXT",
    }


def test_exactly_once_is_accepted_as_a_setting(env: pytest.MonkeyPatch) -> None:
    env.setenv("SENTIMENT_PROCESSING_GUARANTEE", "exactly_once")
    assert Settings().processing_guarantee == "exactly_once"  # `run` refuses it: see test_worker_cli
