"""Structured logs: JSON lines with extra fields; kafka-python quiet by default."""

from __future__ import annotations

import json
import logging

import pytest

from worker import logs


def test_json_lines_carry_extra_fields() -> None:
    record = logging.LogRecord("worker.loop", logging.INFO, __file__, 1, "batch committed", (), None)
    record.records = 32
    record.partitions = ["reviews:0"]
    out = json.loads(logs.JsonFormatter().format(record))
    assert out["msg"] == "batch committed" and out["level"] == "INFO" and out["logger"] == "worker.loop"
    assert out["records"] == 32 and out["partitions"] == ["reviews:0"]


def test_setup_quiets_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    logs.setup("DEBUG")
    assert logging.getLogger("kafka").level == logging.WARNING
    assert root.level == logging.DEBUG
    logs.setup("ERROR")
    assert logging.getLogger("kafka").level == logging.ERROR
