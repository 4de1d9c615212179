"""The learner against a real Kafka broker: feedback validation and dead letters, a cycle below
--min-feedback, a cycle that promotes, one that registers and refuses, kill -9 mid-training and
mid-registration.

The champion is MiniLM after 16 optimiser steps on 400 TweetEval rows, and each candidate gets 24 more: enough
to learn a pattern that half its training rows carry, far too little for validation figures to mean anything.
So the promotion test relaxes the validation limits (the gate's rules have their own unit tests), while the
refusal test keeps the defaults: corrections that contradict the validation set must be refused by them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from tests.integration.helpers import ROOT, read_topic
from trainer.registry import Registry

DATASETS = Path(os.environ.get("SENTIMENT_DATASETS_DIR", ROOT.parent / "shared" / "datasets"))
TWEETEVAL = DATASETS / "tweeteval_sentiment"
LABELS = ("negative", "neutral", "positive")

# Each test trains a candidate (and the first one the champion): minutes on 2 shared cores.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not (TWEETEVAL / "train.jsonl").is_file():
        pytest.fail(f"TweetEval data not found under {TWEETEVAL} (set SENTIMENT_DATASETS_DIR)")
    folder = tmp_path_factory.mktemp("learn-data")
    for split, n in (("train", 400), ("validation", 200)):
        lines = (TWEETEVAL / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"train": folder / "train.jsonl", "validation": folder / "validation.jsonl"}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    env.update(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


@pytest.fixture(scope="module")
def champion_folder(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("learn-champion") / "minilm-tweets"
    args = ["train", "--base-model", "minilm", "--train", str(data["train"]), "--validation"]
    args += [str(data["validation"]), "--output", str(out), "--max-steps", "16", "--eval-steps", "8"]
    result = subprocess.run(
        [sys.executable, "-m", "trainer", *args, "--threads", "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture
def world(
    kafka_bootstrap: str,
    new_topic: Callable[..., str],
    champion_folder: Path,
    data: dict[str, Path],
    tmp_path: Path,
) -> dict[str, Any]:
    reg = Registry(tmp_path / "registry")
    champion = reg.register(champion_folder)["version"]
    reg.promote(champion)
    topic, dlq, group = new_topic("feedback", partitions=2), new_topic("feedback-dlq"), new_topic("learner")
    env = _env(
        SENTIMENT_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        SENTIMENT_FEEDBACK_DLQ_TOPIC=dlq,
        SENTIMENT_LEARNER_GROUP_ID=group,
    )
    args = ["learn", "--registry", str(reg.root), "--feedback-topic", topic, "--once"]
    args += ["--train", str(data["train"]), "--validation", str(data["validation"]), "--max-steps", "24"]
    return {"reg": reg, "champion": champion, "topic": topic, "dlq": dlq, "env": env, "args": args}


def send(kafka: str, topic: str, records: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka)
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def correction(message_id: str, text: str, label: str, source: str = "moderator") -> tuple[bytes, bytes]:
    body = {"id": message_id, "label": label, "text": text, "source": source, "kind": "social_post"}
    return message_id.encode(), json.dumps(body).encode()


def learn(
    w: dict[str, Any], *extra: str, **env: str
) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    result = subprocess.run(
        [sys.executable, "-m", "trainer", *w["args"], *extra],
        env={**w["env"], **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result


def assert_registry_intact(reg: Registry, aliases: dict[str, str], versions: list[str]) -> None:
    assert reg.aliases() == aliases
    assert reg.versions() == versions
    for v in versions:
        reg.verify(v)


def test_bad_feedback_is_dead_lettered_once_and_too_little_changes_nothing(
    kafka_bootstrap: str, world: dict[str, Any]
) -> None:
    w = world
    good = [correction(f"m{i}", f"text number {i}", "positive") for i in range(5)]
    bad: list[tuple[bytes | None, bytes | None]] = [
        (b"x1", b"{not json"),
        (b"x2", json.dumps({"id": "x2", "label": "great", "text": "t", "source": "user"}).encode()),
        (b"x3", json.dumps({"id": "x3", "label": "positive", "source": "user"}).encode()),
        (b"other", correction("x4", "t", "negative")[1]),
    ]
    send(kafka_bootstrap, w["topic"], [*good, *bad])
    before = (w["reg"].aliases(), w["reg"].versions())
    for _ in range(2):  # the second cycle reads the same records and dead-letters nothing again
        summary, _ = learn(w, "--min-feedback", "20")
        assert summary["decision"] == "skipped" and summary["candidate"] is None
        assert summary["feedback"]["messages"] == 5 and summary["feedback"]["new"] == 5
        assert "--min-feedback is 20" in summary["reasons"][0]
    dead = read_topic(kafka_bootstrap, w["dlq"])
    reasons = sorted(dict(r.headers)["sentiment.dlq.reason"].decode() for r in dead)
    assert reasons == ["invalid_fields", "invalid_fields", "invalid_json", "key_mismatch"]
    assert (w["reg"].aliases(), w["reg"].versions()) == before


def _least_predicted(folder: Path, texts: list[str]) -> str:
    import numpy as np

    from trainer.inference import load_classifier, predict_scores

    scores = predict_scores(load_classifier(str(folder)), texts)
    counts = np.bincount(np.argmax(scores, axis=1), minlength=3)
    return LABELS[int(np.argmin(counts))]


def test_a_cycle_that_fixes_a_systematic_error_registers_and_promotes(
    kafka_bootstrap: str, world: dict[str, Any], champion_folder: Path
) -> None:
    w = world
    texts = [f"zorblax arrived, number {i}" for i in range(60)]
    target = _least_predicted(champion_folder, texts)  # the label the champion gets most wrong
    records = [correction(f"z{i}", t, target) for i, t in enumerate(texts)]
    records.append(
        correction("z0", texts[0], LABELS[(LABELS.index(target) + 1) % 3], source="bot")
    )  # outranked
    send(kafka_bootstrap, w["topic"], records)
    summary, _ = learn(
        w, "--feedback-share", "0.5", "--max-macro-recall-drop", "1", "--max-class-recall-drop", "1"
    )
    assert summary["decision"] == "promoted", summary["reasons"]
    v = summary["candidate"]["version"]
    fb_old = summary["champion"]["sets"]["held_out_feedback"]
    fb_new = summary["candidate"]["sets"]["held_out_feedback"]
    assert fb_new["accuracy"] > fb_old["accuracy"] and fb_new["n"] >= 5
    reg: Registry = w["reg"]
    assert reg.aliases() == {"champion": v, "previous": w["champion"]}
    manifest = reg.verify(v)
    assert manifest["parent"] == w["champion"] and manifest["name"] == "minilm-tweets"
    folder = reg.versions_dir / v
    used = json.loads((folder / "feedback.json").read_text())
    labels = {**used["trained_on"], **used["held_out"]}
    assert labels["z0"] == target and len(labels) == 60  # the moderator's label, not the bot's
    assert "Decision: **promote**" in (folder / "learn_report.md").read_text()
    assert (folder / "learn_gate.png").stat().st_size > 0
    again, _ = learn(w)  # nothing new since this champion was trained
    assert again["decision"] == "skipped" and again["feedback"]["new"] == 0


def test_corrections_that_contradict_the_validation_set_are_registered_and_refused(
    kafka_bootstrap: str, world: dict[str, Any], data: dict[str, Path]
) -> None:
    w = world
    rows = [json.loads(line) for line in data["validation"].read_text().splitlines()]
    flipped = [
        correction(f"v{i}", r["text"], LABELS[(LABELS.index(r["label"]) + 1) % 3]) for i, r in enumerate(rows)
    ]
    send(kafka_bootstrap, w["topic"], flipped)
    summary, _ = learn(w, "--feedback-share", "0.5")
    assert summary["decision"] == "rejected", summary["reasons"]
    assert any(r.startswith("FAIL: ") and "macro recall" in r for r in summary["reasons"])
    reg: Registry = w["reg"]
    assert reg.aliases() == {"champion": w["champion"]}  # unchanged
    assert summary["candidate"]["version"] in reg.versions()  # registered, for the record
    assert (
        "Decision: **reject**"
        in (reg.versions_dir / summary["candidate"]["version"] / "learn_report.md").read_text()
    )


@pytest.mark.parametrize("where", ["training", "registration"])
def test_kill_9_of_the_learner_leaves_the_registry_valid_and_the_champion_unchanged(
    kafka_bootstrap: str, world: dict[str, Any], where: str, tmp_path: Path
) -> None:
    w = world
    send(kafka_bootstrap, w["topic"], [correction(f"k{i}", f"kill test {i}", "negative") for i in range(30)])
    reg: Registry = w["reg"]
    aliases, versions = reg.aliases(), reg.versions()
    env = {**w["env"]}
    if where == "registration":
        env["SENTIMENT_LEARN_FAULT_POINT"] = "registry_staged"
    log = (tmp_path / "learner.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "trainer", *w["args"]], env=env, stderr=log, stdout=log)
    if where == "training":
        deadline = time.monotonic() + 300
        while "training a candidate" not in (tmp_path / "learner.log").read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "learner.log").read_text()
            time.sleep(0.1)
        time.sleep(3)  # inside the training run
        proc.send_signal(signal.SIGKILL)
    assert proc.wait(600) == -signal.SIGKILL
    log.close()
    assert_registry_intact(reg, aliases, versions)
    listing = subprocess.run(
        [sys.executable, "-m", "trainer", "registry", "--registry", str(reg.root)],
        env=w["env"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(listing.stdout)["aliases"] == aliases
