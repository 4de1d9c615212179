"""sentiment-train: train / evaluate / predict, and the model registry (register / promote / rollback /
registry / prune) and the learner (learn). Bad input ends with one line on stderr and exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

PROG = "sentiment-train"
PRECISIONS = ("fp32", "bf16", "int8")  # kept in step with trainer.inference (not imported: torch is slow)


class UsageError(Exception):
    """A bad argument; reported as one line, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _number(
    kind: Callable[[str], Any], low: float | None = None, high: float | None = None, low_open: bool = False
) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}") from None
        if low is not None and (value < low or (low_open and value == low)):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}: {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}: {text}")
        return value

    return parse


positive_int = _number(int, 1)
positive_float = _number(float, 0, low_open=True)


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    p.add_argument("--label-column", default="label", help="column holding the label (default: label)")
    p.add_argument(
        "--label-map", help="raw=label pairs applied first, e.g. 'bad=negative,meh=neutral,good=positive'"
    )
    p.add_argument(
        "--label-scheme",
        default="auto",
        choices=["auto", "names", "three", "binary", "stars"],
        help="how integer labels are read (default: auto; see README)",
    )


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog=PROG, description="Train, evaluate and use 3-class sentiment models.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    t = sub.add_parser("train", help="fine-tune a base model (LoRA by default) and export a model folder")
    t.add_argument("--base-model", required=True, help="minilm, mpnet, a local model folder or a hub id")
    t.add_argument(
        "--train",
        required=True,
        nargs="+",
        metavar="DATA",
        help="training data: .jsonl/.csv/.parquet file(s) or hf:NAME[:CONFIG][@SPLIT]",
    )
    t.add_argument(
        "--validation",
        nargs="+",
        metavar="DATA",
        help="validation data, one or more sets; with several the best checkpoint is chosen on their mean "
        "(default: split off --train)",
    )
    t.add_argument(
        "--validation-fraction",
        type=_number(float, 0, 0.5, low_open=True),
        default=0.05,
        help="share of --train held out when no --validation is given (default: 0.05)",
    )
    t.add_argument("--output", required=True, help="model folder to write")
    t.add_argument("--overwrite", action="store_true", help="replace an existing, non-empty output folder")
    t.add_argument(
        "--epochs", type=positive_float, default=1.0, help="epochs, may be fractional (default: 1)"
    )
    t.add_argument("--max-steps", type=positive_int, help="stop after N optimiser steps (overrides --epochs)")
    t.add_argument(
        "--max-train-samples", type=positive_int, help="use a stratified subset of N training rows"
    )
    t.add_argument(
        "--learning-rate",
        "--lr",
        type=positive_float,
        help="peak learning rate (default: 1e-3 for LoRA, 5e-5 with --full)",
    )
    t.add_argument("--batch-size", type=positive_int, default=32, help="training batch size (default: 32)")
    t.add_argument("--eval-batch-size", type=positive_int, default=128, help="(default: 128)")
    t.add_argument(
        "--max-length", type=_number(int, 8, 4096), default=128, help="max tokens per text (default: 128)"
    )
    t.add_argument(
        "--truncation",
        choices=["head+tail", "right"],
        default="head+tail",
        help="how a longer text is cut: its first quarter and last three quarters of the tokens (head+tail), "
        "or its first tokens (right); the model folder records it and the worker cuts the same way "
        "(default: head+tail)",
    )
    t.add_argument("--warmup-ratio", type=_number(float, 0, 0.5), default=0.06, help="(default: 0.06)")
    t.add_argument("--weight-decay", type=_number(float, 0), default=0.01, help="(default: 0.01)")
    t.add_argument("--lora-r", type=positive_int, default=16, help="LoRA rank (default: 16)")
    t.add_argument("--lora-alpha", type=positive_int, default=32, help="LoRA alpha (default: 32)")
    t.add_argument(
        "--dropout",
        type=_number(float, 0, 0.9),
        default=0.0,
        help="dropout in the base model and on the adapter's input while training (default: 0; a run of an "
        "epoch or less sees each row once)",
    )
    t.add_argument(
        "--lora-target-modules",
        type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
        help="comma-separated module names (default: picked by architecture)",
    )
    t.add_argument(
        "--no-train-pooler",
        dest="train_pooler",
        action="store_false",
        help="LoRA: keep the pooler frozen (default: train it in full with the head)",
    )
    t.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA (no adapter/)")
    t.add_argument(
        "--weighted-loss",
        action="store_true",
        help="class-balanced cross-entropy, balanced within each --train file",
    )
    t.add_argument(
        "--early-stopping",
        type=positive_int,
        metavar="N",
        help="stop after N evaluations without improvement",
    )
    t.add_argument(
        "--eval-steps", type=positive_int, help="evaluate every N steps (default: 5 times per run)"
    )
    t.add_argument(
        "--metric",
        default="macro_recall",
        choices=["macro_recall", "accuracy", "macro_f1"],
        help="validation metric that picks the best checkpoint (default: macro_recall)",
    )
    t.add_argument(
        "--no-group-by-length",
        dest="group_by_length",
        action="store_false",
        help="plain random batches (default: batches of similar length, less padding)",
    )
    t.add_argument("--seed", type=int, default=42, help="(default: 42)")
    t.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="bf16 mixed precision (default: on when CUDA supports it or the CPU has AMX-BF16)",
    )
    t.add_argument("--threads", type=positive_int, help="CPU threads for torch (default: cores, at most 8)")
    t.add_argument("--data-license", help="licence statement for the model card")
    _data_options(t)

    e = sub.add_parser("evaluate", help="score a model folder on labelled data; last stdout line is JSON")
    e.add_argument("--model", required=True, help="exported model folder")
    e.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="DATA",
        help=".jsonl/.csv/.parquet file(s) or hf:NAME[:CONFIG][@SPLIT]; several: each, and their mean",
    )
    e.add_argument(
        "--by",
        metavar="FIELD",
        help="also break each file down by a column (domain, stars, ...) or by 'tokens' (the text's length)",
    )
    e.add_argument(
        "--report", help="also write the JSON report here, and a confusion-matrix PNG per file next to it"
    )
    e.add_argument("--batch-size", type=positive_int, default=64, help="(default: 64)")
    e.add_argument(
        "--max-length",
        type=_number(int, 8, 4096),
        help="max tokens per text (default: the model folder's truncation.json, else 128)",
    )
    e.add_argument(
        "--truncation",
        choices=["head+tail", "right"],
        help="how a longer text is cut (default: the model folder's truncation.json, else right)",
    )
    e.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="int8: dynamic quantization of the Linear layers (CPU; as SENTIMENT_PRECISION=int8 in the "
        "worker); bf16: bf16 weights (default: fp32)",
    )
    _data_options(e)

    p = sub.add_parser("predict", help="label texts; one JSON line per text")
    p.add_argument("--model", required=True, help="exported model folder")
    p.add_argument(
        "--max-length",
        type=_number(int, 8, 4096),
        help="max tokens per text (default: the model folder's truncation.json, else 128)",
    )
    p.add_argument("texts", nargs="+", metavar="TEXT")

    def registry_option(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--registry", required=True, metavar="DIR", help="the model registry folder")

    r = sub.add_parser("register", help="copy a model folder into a registry as a new version (JSON line)")
    registry_option(r)
    r.add_argument("model", metavar="MODEL_FOLDER", help="an exported model folder")
    r.add_argument("--parent", metavar="VERSION", help="the version it was derived from (default: champion)")
    pr = sub.add_parser("promote", help="make VERSION the champion (the old one becomes previous)")
    registry_option(pr)
    pr.add_argument("version", metavar="VERSION")
    rb = sub.add_parser("rollback", help="swap champion and previous")
    registry_option(rb)
    ls = sub.add_parser("registry", help="versions, aliases, metrics and history as JSON")
    registry_option(ls)
    pn = sub.add_parser("prune", help="remove all but the N newest versions; never an aliased one")
    registry_option(pn)
    pn.add_argument("--keep", type=positive_int, required=True, metavar="N")

    lr = sub.add_parser(
        "learn", help="re-train on the feedback topic, gate the candidate against the champion, promote"
    )
    registry_option(lr)
    lr.add_argument("--feedback-topic", help="default: SENTIMENT_FEEDBACK_TOPIC, else sentiment-feedback")
    lr.add_argument("--train", required=True, nargs="+", metavar="DATA", help="the original training data")
    lr.add_argument(
        "--validation", required=True, nargs="+", metavar="DATA", help="validation sets the gate checks"
    )
    lr.add_argument("--once", action="store_true", help="one cycle, then exit (a cron job)")
    lr.add_argument(
        "--interval", type=positive_float, default=3600, metavar="S", help="seconds between cycles (3600)"
    )
    lr.add_argument(
        "--min-feedback", type=positive_int, default=20, metavar="N", help="new corrections needed (20)"
    )
    lr.add_argument("--max-steps", type=positive_int, help="optimiser steps (default: the champion's recipe)")
    lr.add_argument(
        "--feedback-share",
        type=_number(float, 0, 0.9, low_open=True),
        default=0.03,
        help="share of training rows that are corrections, by oversampling (default: 0.03)",
    )
    lr.add_argument(
        "--holdout-share",
        type=_number(float, 0, 0.9, low_open=True),
        default=0.2,
        help="share of corrections kept out of training to judge the candidate, by id hash (default: 0.2)",
    )
    lr.add_argument(
        "--max-macro-recall-drop",
        type=_number(float, 0, 1),
        default=0.005,
        help="gate: largest allowed macro-recall drop on any validation set (default: 0.005)",
    )
    lr.add_argument(
        "--max-class-recall-drop",
        type=_number(float, 0, 1),
        default=0.02,
        help="gate: largest allowed recall drop of any class (default: 0.02)",
    )
    lr.add_argument("--report-dir", help="also copy the cycle's report (Markdown, plot, JSON) here")
    return parser


def _threads() -> None:
    import os

    import torch

    torch.set_num_threads(min(8, len(os.sched_getaffinity(0))))


def cmd_train(args: argparse.Namespace) -> None:
    from trainer.train import TrainConfig, run

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UsageError(f"output {out} exists and is not empty (pass --overwrite to replace it)")
    fields = {k: v for k, v in vars(args).items() if k not in ("command", "overwrite", "func")}
    summary = run(TrainConfig(**fields))
    m = summary["validation"]
    print(
        json.dumps(
            {
                "output": str(out),
                "macro_recall": m["macro_recall"],
                "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"],
                "steps": summary["steps"],
                "wall_time_s": summary["wall_time_s"],
            }
        )
    )


def cmd_evaluate(args: argparse.Namespace) -> None:
    import numpy as np

    from trainer.data import LABELS, load_labelled, parse_label_map, set_name
    from trainer.evaluate import (
        BY_TOKENS,
        breakdown,
        classification_metrics,
        mean_over_sets,
        plot_confusion_matrix,
        restricted_predictions,
        token_bucket,
    )
    from trainer.inference import load_classifier, predict_scores

    label_map = parse_label_map(args.label_map)
    column = args.by if args.by and args.by != BY_TOKENS else None
    sets = {}
    taken: set[str] = set()
    for ref in args.data:
        data = load_labelled(
            ref,
            args.text_column,
            args.label_column,
            label_map,
            args.label_scheme,
            "test",
            group_column=column,
        )
        sets[set_name(ref, taken)] = data
    clf = load_classifier(args.model, precision=args.precision)
    _threads()
    result: dict[str, Any] = {
        "model": args.model,
        "data": args.data[0] if len(args.data) == 1 else args.data,
        "precision": args.precision,
        "device": clf.device.type,
        "max_length": args.max_length or clf.max_length,
        "truncation": args.truncation or clf.truncation,
    }
    per_set: dict[str, dict[str, Any]] = {}
    for name, data in sets.items():
        started = time.perf_counter()
        scores = predict_scores(
            clf, data.texts, args.batch_size, args.max_length, progress=True, strategy=args.truncation
        )
        seconds = time.perf_counter() - started
        predicted = np.argmax(scores, axis=1).tolist()
        m: dict[str, Any] = {
            "data": data.source,
            "seconds": round(seconds, 3),
            "texts_per_s": round(len(data.texts) / seconds, 1),
            **classification_metrics(data.labels, predicted),
        }
        present = sorted(set(data.labels))
        if len(present) < len(LABELS):
            # e.g. a 2-class set: also score the argmax over the classes the set has (see evaluate.py)
            restricted = classification_metrics(data.labels, restricted_predictions(scores, present).tolist())
            m["restricted_to_present_classes"] = {
                k: restricted[k] for k in ("accuracy", "macro_recall", "macro_f1", "confusion_matrix")
            }
        if args.by:
            groups = data.groups
            if args.by == BY_TOKENS:
                lengths = clf.tokenizer(data.texts, truncation=False, verbose=False)["input_ids"]  # type: ignore[operator]
                groups = [token_bucket(len(ids)) for ids in lengths]
            assert groups is not None
            m["by"] = {args.by: breakdown(data.labels, predicted, groups)}
        per_set[name] = m
    if len(per_set) == 1:
        result.update(next(iter(per_set.values())))
    else:
        result["mean"] = mean_over_sets(per_set)
        result["sets"] = per_set
    if args.report:
        report = Path(args.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2) + "\n")
        for name, m in per_set.items():
            infix = "" if len(per_set) == 1 else "." + name.replace("/", "_")
            plot_confusion_matrix(
                m["confusion_matrix"],
                report.with_name(f"{report.stem}{infix}.confusion_matrix.png"),
                f"{name}: macro recall {m['macro_recall']:.3f}",
            )
    print(json.dumps(result))


def cmd_predict(args: argparse.Namespace) -> None:
    from trainer.data import LABELS
    from trainer.inference import label_of, load_classifier, predict_scores

    clf = load_classifier(args.model)
    _threads()
    scores = predict_scores(clf, args.texts, max_length=args.max_length)
    for text, row in zip(args.texts, scores, strict=True):
        record = {
            "text": text,
            "label": label_of(row),
            "scores": {n: round(float(s), 5) for n, s in zip(LABELS, row, strict=True)},
        }
        print(json.dumps(record, ensure_ascii=False))


def cmd_registry(args: argparse.Namespace) -> None:
    from trainer.registry import Registry

    registry = Registry(args.registry)
    if args.command == "register":
        out = registry.register(args.model, parent=args.parent)
    elif args.command == "promote":
        out = registry.promote(args.version)
    elif args.command == "rollback":
        out = registry.rollback()
    elif args.command == "prune":
        out = registry.prune(args.keep)
    else:
        out = registry.describe()
    print(json.dumps(out))


def cmd_learn(args: argparse.Namespace) -> None:
    from trainer.learn import LearnError, LearnOptions, learn

    fields = {k: v for k, v in vars(args).items() if k not in ("command", "once", "interval")}
    try:
        learn(LearnOptions(**fields), once=args.once, interval_s=args.interval, out=sys.stdout)
    except LearnError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        sys.exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    from trainer.data import DataError
    from trainer.models import ModelError
    from trainer.registry import RegistryError

    commands = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict}
    commands |= dict.fromkeys(("register", "promote", "rollback", "registry", "prune"), cmd_registry)
    commands["learn"] = cmd_learn
    try:
        args = build_parser().parse_args(argv)
        commands[args.command](args)
    except (UsageError, DataError, ModelError, RegistryError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
