"""The learner: feedback topic -> fresh LoRA adapter on the original data plus the corrections -> gate ->
register, and promote only what passes. ``sentiment-train learn``; one cycle with --once (a cron job).

One cycle:
1. read the whole feedback topic (the durable store), dead-letter records that are not valid feedback (each
   once: the learner's consumer group remembers how far it has checked), apply precedence (trainer.feedback);
2. count corrections the champion was not trained on; below --min-feedback, stop: decision "skipped";
3. keep a slice of them out of training, fixed by id hash (--holdout-share), and oversample the rest to
   --feedback-share of the training rows;
4. train a fresh adapter from the champion's base model with the champion's recipe (trainer.train.run), on
   the original --train data plus the corrections;
5. score champion and candidate on the same rows: each --validation set and the held-out corrections;
6. write the report into the candidate's folder, register it (parent: the champion), and promote it if the
   gate passes (trainer.gate); publish a hint on Redis so workers look at the alias at once.

Crash safety: training happens in a temp folder, registration and promotion are atomic renames, so a kill at
any point leaves the registry valid and the champion unchanged unless the promotion itself completed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.feedback import Feedback, Item, Rejected, decode, held_out, new_since, repeats, resolve
from trainer.gate import FEEDBACK, Check, gate, passed
from trainer.registry import Registry, RegistryError

log = logging.getLogger(__name__)

# Header names on dead letters: the same ones the worker puts on its own (worker/keys.py).
H_REASON, H_DETAIL = "sentiment.dlq.reason", "sentiment.dlq.detail"
H_TOPIC, H_PARTITION, H_OFFSET = "sentiment.dlq.topic", "sentiment.dlq.partition", "sentiment.dlq.offset"


class LearnError(RuntimeError):
    """The cycle cannot run (Kafka unreachable, no champion); one line for the operator."""


class LearnSettings(BaseSettings):
    """The SENTIMENT_* variables the worker reads, the subset the learner needs (the two share no code)."""

    model_config = SettingsConfigDict(env_prefix="SENTIMENT_", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    redis_url: str | None = None
    redis_prefix: str = Field(default="sentiment", pattern=r"^[A-Za-z0-9_.-]+$")
    feedback_topic: str = "sentiment-feedback"
    feedback_dlq_topic: str = "sentiment-feedback-dlq"
    learner_group_id: str = "sentiment-learner"
    connect_timeout_s: float = Field(default=30.0, gt=0)
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None

    def kafka_args(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.kafka_bootstrap_servers.split(",") if s.strip()],
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            out["sasl_mechanism"] = self.kafka_sasl_mechanism
            out["sasl_plain_username"] = self.kafka_sasl_username
            if self.kafka_sasl_password is not None:
                out["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile is not None:
            out["ssl_cafile"] = str(self.kafka_ssl_cafile)
        return out


@dataclasses.dataclass
class LearnOptions:
    registry: str
    train: list[str]
    validation: list[str]
    feedback_topic: str | None = None
    min_feedback: int = 20
    max_steps: int | None = None
    feedback_share: float = 0.03
    holdout_share: float = 0.2
    max_macro_recall_drop: float = 0.005
    max_class_recall_drop: float = 0.02
    report_dir: str | None = None


# ------------------------------------------------------------------------------------------- Kafka


def read_feedback(settings: LearnSettings, topic: str) -> tuple[list[Item], int]:
    """Every record of the topic up to its end now; dead-letters the invalid ones not seen before.
    Returns the valid items and the number of records dead-lettered by this call."""
    from kafka import KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
    from kafka.errors import KafkaError

    args = settings.kafka_args()
    try:
        consumer = KafkaConsumer(
            group_id=settings.learner_group_id,
            enable_auto_commit=False,
            request_timeout_ms=int(settings.connect_timeout_s * 1000) + 5000,
            **args,
        )
    except KafkaError as exc:
        raise LearnError(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise LearnError(f"feedback topic {topic!r} does not exist (or has no partitions)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        checked = {tp: (consumer.committed(tp) or 0) for tp in tps}
        items: list[Item] = []
        bad: list[tuple[Any, Rejected]] = []
        deadline = time.monotonic() + max(60.0, settings.connect_timeout_s * 4)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise LearnError(f"timed out reading feedback topic {topic!r}")
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    if r.offset >= end[tp]:
                        continue
                    got = decode(r.key, r.value, r.timestamp, (r.partition, r.offset))
                    if isinstance(got, Rejected):
                        if r.offset >= checked[tp]:
                            bad.append((r, got))
                    else:
                        items.append(got)
        if bad:
            producer = KafkaProducer(**args)
            try:
                futures = [
                    producer.send(
                        settings.feedback_dlq_topic,
                        key=r.key,
                        value=r.value,
                        headers=[
                            (H_REASON, why.reason.encode()),
                            (H_DETAIL, why.detail.encode()),
                            (H_TOPIC, r.topic.encode()),
                            (H_PARTITION, str(r.partition).encode()),
                            (H_OFFSET, str(r.offset).encode()),
                        ],
                    )
                    for r, why in bad
                ]
                producer.flush()
                for f in futures:
                    f.get(timeout=settings.connect_timeout_s)
            finally:
                producer.close()
            for r, why in bad:
                log.warning("feedback dead-lettered", extra={"offset": r.offset, "reason": why.reason})
        # Only after the dead letters are acknowledged: a crash before this checks them again next cycle.
        consumer.commit({tp: OffsetAndMetadata(end[tp], "", -1) for tp in tps})
        return items, len(bad)
    except KafkaError as exc:
        raise LearnError(f"feedback topic {topic!r}: {type(exc).__name__}: {exc}") from None
    finally:
        consumer.close()


def hint_workers(settings: LearnSettings, version: str) -> None:
    """Tell workers the alias moved (they also check on their own timer: this only makes it sooner)."""
    if not settings.redis_url:
        return
    try:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
        client.publish(f"{{{settings.redis_prefix}}}:model-promoted", version)
        client.close()
    except Exception as exc:  # a hint: the workers' own poll still finds the new version
        log.warning("could not publish the promotion hint", extra={"error": type(exc).__name__})


# ------------------------------------------------------------------------------------------- cycle


def _score(model_dir: Path, sets: dict[str, tuple[list[str], list[int]]]) -> dict[str, Any]:
    import numpy as np
    import torch

    from trainer.evaluate import classification_metrics
    from trainer.inference import load_classifier, predict_scores

    clf = load_classifier(str(model_dir))
    out = {}
    with torch.inference_mode():
        for name, (texts, labels) in sets.items():
            scores = predict_scores(clf, texts, 64)  # each folder's own truncation.json
            out[name] = classification_metrics(labels, np.argmax(scores, axis=1).tolist())
    return out


def cycle(options: LearnOptions, settings: LearnSettings) -> dict[str, Any]:
    """One learn cycle; returns the summary printed as the last stdout line."""
    from trainer.data import LABELS, load_labelled, set_name

    reg = Registry(options.registry)
    champion = reg.aliases().get("champion")
    if champion is None:
        raise RegistryError(f"{reg.root} has no champion: register and promote a first model")
    champion_dir = reg.versions_dir / champion
    recipe = _recipe(champion_dir)
    topic = options.feedback_topic or settings.feedback_topic
    items, dead = read_feedback(settings, topic)
    current = resolve(items)
    used = _used_feedback(champion_dir)
    fresh = new_since(current, used)
    base = {
        "champion": {"version": champion},
        "feedback": {"records": len(items), "messages": len(current), "new": fresh, "dead_lettered": dead},
    }
    if fresh < options.min_feedback:
        return {
            "decision": "skipped",
            **base,
            "candidate": None,
            "reasons": [
                f"{fresh} new corrections since the champion was trained; --min-feedback is "
                f"{options.min_feedback}"
            ],
        }

    holdout = {k: fb for k, fb in current.items() if held_out(k, options.holdout_share)}
    trained = {k: fb for k, fb in current.items() if k not in holdout}
    label_id = {name: i for i, name in enumerate(LABELS)}
    validation_sets: dict[str, tuple[list[str], list[int]]] = {}
    taken: set[str] = set()
    for ref in options.validation:
        data = load_labelled(ref, default_split="validation")
        validation_sets[set_name(ref, taken)] = (data.texts, data.labels)
    n_original = sum(len(load_labelled(ref).texts) for ref in options.train)

    work = Path(tempfile.mkdtemp(prefix="sentiment-learn-"))
    try:
        copies = repeats(n_original, len(trained), options.feedback_share)
        rows = [json.dumps({"text": fb.text, "label": fb.label}) for fb in trained.values()] * copies
        feedback_file = work / "feedback.jsonl"
        feedback_file.write_text("\n".join(rows) + "\n" if rows else "", encoding="utf-8")
        name = str(reg.manifest(champion).get("name") or champion)
        candidate_dir = work / "candidate" / name
        cfg = _train_config(
            recipe, options, [*options.train, *([str(feedback_file)] if rows else [])], candidate_dir
        )
        log.info(
            "training a candidate",
            extra={
                "base_model": cfg.base_model,
                "corrections": len(trained),
                "copies": copies,
                "held_out": len(holdout),
                "max_steps": cfg.max_steps,
            },
        )
        from trainer.train import run

        run(cfg)
        sets = dict(validation_sets)
        if holdout:
            sets[FEEDBACK] = (
                [fb.text for fb in holdout.values()],
                [label_id[fb.label] for fb in holdout.values()],
            )
        scores = {
            "champion": _score(champion_dir, sets),
            "candidate": _score(candidate_dir, sets),
        }
        checks = gate(
            scores["champion"],
            scores["candidate"],
            max_macro_drop=options.max_macro_recall_drop,
            max_class_drop=options.max_class_recall_drop,
        )
        ok = passed(checks)
        _write_record(candidate_dir, topic, trained, holdout, copies, scores, checks, champion)
        registered = reg.register(candidate_dir, parent=champion, hook=_fault_hook())
        version = registered["version"]
        if ok:
            reg.promote(version)
            hint_workers(settings, version)
        summary: dict[str, Any] = {
            "decision": "promoted" if ok else "rejected",
            **base,
            "champion": {"version": champion, "sets": _brief(scores["champion"])},
            "candidate": {
                "version": version,
                "path": registered["path"],
                "sets": _brief(scores["candidate"]),
            },
            "reasons": [f"{'pass' if c.passed else 'FAIL'}: {c.name}: {c.detail}" for c in checks],
        }
        if options.report_dir:
            out = Path(options.report_dir)
            out.mkdir(parents=True, exist_ok=True)
            for f in ("learn_report.md", "learn_gate.png", "learn.json"):
                shutil.copy(candidate_dir / f, out / f)
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _fault_hook() -> Callable[[str], None] | None:
    """SENTIMENT_LEARN_FAULT_POINT=registry_staged: SIGKILL this process there (the crash tests)."""
    point = os.environ.get("SENTIMENT_LEARN_FAULT_POINT")
    if not point:
        return None

    def hook(at: str) -> None:
        if at == point:
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _brief(scores: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "n": m["n"],
            "macro_recall": round(m["macro_recall"], 4),
            "accuracy": round(m["accuracy"], 4),
            "recall": {k: round(v["recall"], 4) for k, v in m["per_class"].items()},
        }
        for name, m in scores.items()
    }


def _recipe(champion_dir: Path) -> dict[str, Any]:
    try:
        config = json.loads((champion_dir / "training_args.json").read_text())["config"]
    except (OSError, ValueError, KeyError):
        raise RegistryError(
            f"the champion {champion_dir.name} has no training_args.json: the learner re-trains from the "
            "recipe a model was trained with, so promote a model exported by sentiment-train train"
        ) from None
    if not isinstance(config, dict) or "base_model" not in config:
        raise RegistryError(f"the champion {champion_dir.name}'s training_args.json names no base model")
    return config


def _train_config(recipe: dict[str, Any], options: LearnOptions, train: list[str], output: Path) -> Any:
    from trainer.train import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    keep = {
        k: v
        for k, v in recipe.items()
        if k in known and k not in ("train", "validation", "output", "max_train_samples", "extra")
    }
    keep.update(train=train, validation=list(options.validation), output=str(output))
    keep.setdefault("truncation", "right")  # a champion from before truncation.json was cut on the right
    keep.setdefault("dropout", recipe.get("lora_dropout", 0.1))  # before --dropout: 0.1 in base and adapter
    if options.max_steps is not None:
        keep["max_steps"] = options.max_steps
    return TrainConfig(**keep)


def _used_feedback(champion_dir: Path) -> dict[str, str]:
    try:
        record = json.loads((champion_dir / "feedback.json").read_text())
    except (OSError, ValueError):
        return {}
    return {**record.get("trained_on", {}), **record.get("held_out", {})}


def _write_record(
    folder: Path,
    topic: str,
    trained: dict[str, Feedback],
    holdout: dict[str, Feedback],
    copies: int,
    scores: dict[str, dict[str, Any]],
    checks: list[Check],
    champion: str,
) -> None:
    (folder / "feedback.json").write_text(
        json.dumps(
            {
                "topic": topic,
                "copies": copies,
                "trained_on": {k: fb.label for k, fb in trained.items()},
                "held_out": {k: fb.label for k, fb in holdout.items()},
            },
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )
    record = {
        "champion": champion,
        "scores": scores,
        "checks": [dataclasses.asdict(c) for c in checks],
        "passed": passed(checks),
    }
    (folder / "learn.json").write_text(json.dumps(record, indent=1) + "\n")
    _plot(scores, folder / "learn_gate.png")
    lines = [
        f"# Learn cycle: candidate vs champion {champion}",
        "",
        f"Decision: **{'promote' if passed(checks) else 'reject'}**. Corrections: {len(trained)} trained on "
        f"(x{copies}), {len(holdout)} held out.",
        "",
        "| set | n | champion macro recall | candidate macro recall | champion accuracy | candidate accuracy"
        " |",
        "|---|---|---|---|---|---|",
    ]
    for name in scores["champion"]:
        a, b = scores["champion"][name], scores["candidate"][name]
        lines.append(
            f"| {name} | {a['n']} | {a['macro_recall']:.4f} | {b['macro_recall']:.4f} | {a['accuracy']:.4f} "
            f"| {b['accuracy']:.4f} |"
        )
    lines += ["", "Gate:", ""]
    lines += [f"- {'pass' if c.passed else '**FAIL**'}: {c.name}: {c.detail}" for c in checks]
    lines += ["", "![champion vs candidate](learn_gate.png)", ""]
    (folder / "learn_report.md").write_text("\n".join(lines))


def _plot(scores: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(scores["champion"])
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.4))
    for shift, who, color in ((-0.2, "champion", "tab:gray"), (0.2, "candidate", "tab:blue")):
        values = [scores[who][n]["macro_recall"] for n in names]
        ax.bar([i + shift for i in x], values, width=0.4, label=who, color=color)
    ax.set_xticks(list(x), names, fontsize=8)
    ax.set_ylabel("macro recall")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- loop


def learn(options: LearnOptions, *, once: bool, interval_s: float, out: Any) -> None:
    """Run cycles (one with once) and print each summary as one JSON line."""
    settings = LearnSettings()
    stop = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True
        signal.signal(signum, signal.SIG_DFL)

    if not once:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    while True:
        try:
            summary = cycle(options, settings)
        except LearnError as exc:  # Kafka away: a looping learner tries again at its next cycle
            if once:
                raise
            log.error("learn cycle failed; trying again in %ss: %s", interval_s, exc)
        else:
            print(json.dumps(summary), file=out, flush=True)
        if once or stop:
            return
        deadline = time.monotonic() + interval_s
        while not stop and time.monotonic() < deadline:
            time.sleep(min(1.0, deadline - time.monotonic()))
        if stop:
            return
