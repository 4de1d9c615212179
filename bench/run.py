"""The CPU benchmark: pure inference, int8, end to end through Kafka + Redis, and the baseline, in one run.

    python -m bench [--quick] [--model DIR] [--out DIR]

Needs the local stack (``scripts/stack up``; addresses from SENTIMENT_KAFKA_BOOTSTRAP_SERVERS and
SENTIMENT_REDIS_URL, else .stack/env). Prints a table and writes results.json, results.md,
throughput_vs_batch.png and latency_vs_load.png to --out (default bench/out). Order of the run:

1. pure inference with the worker's classifier at several batch sizes (fp32); int8 (and bf16 where the CPU
   has it) at the worker's batch size, with their validation macro recall on tweeteval_sentiment/validation;
2. the worker (``python -m worker run``) and the baseline consumer (bench/baseline.py) start on their own
   fresh topics and answer warm-up messages;
3. rounds (5), each one back to back: pure inference at the worker's batch size (in a process of its own,
   bench/reference.py, like the worker), the worker on N messages sent as fast as the producer goes, the
   baseline on the first messages of the same traffic. The machine is shared and its load changes by the
   minute, so each ratio is taken within a round and the median over rounds is reported;
4. the worker at paced loads, for the latency figures: before each, the reference measures the model and a
   short full-speed burst measures the worker; the phase is offered that fraction of the burst's throughput
   and its p99 is held to max wait + 2 × the reference's batch time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench import e2e, inference, plots, stats, traffic
from bench.cli import ArgParser, int_list
from bench.models import REPO, choose_model
from bench.reference import Reference
from worker.batching import default_batch_size

OUT_DEFAULT = REPO / "bench" / "out"
FRESH = "fresh head"


def _fractions(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, got {text!r}") from None
    if not values or not all(0 < v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"loads must be fractions between 0 and 1, got {text!r}")
    return values


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes for CI: checks that everything runs")
    p.add_argument("--model", help="model folder (default: models/minilm-mixed, else MiniLM, fresh head)")
    p.add_argument(
        "--datasets", help="shared datasets folder (default: $SENTIMENT_DATASETS, ../shared/datasets)"
    )
    p.add_argument("--out", type=Path, default=OUT_DEFAULT, help="output folder (default: bench/out)")
    p.add_argument("--rounds", type=_positive, help="interleaved rounds (default 5; quick 1)")
    p.add_argument(
        "--long-rounds",
        type=int,
        help="rounds with long reviews in the mix (review_sentiment, not SST; default 3; quick 1; 0: none)",
    )
    p.add_argument("--n", type=_positive, help="worker messages per round (default 600; quick 100)")
    p.add_argument("--baseline-n", type=_positive, help="baseline messages per round (default 100; quick 20)")
    p.add_argument(
        "--batch-size",
        type=_positive,
        default=default_batch_size("cpu"),
        help=f"worker SENTIMENT_BATCH_SIZE (default {default_batch_size('cpu')}, the worker's on a CPU)",
    )
    p.add_argument("--max-wait-ms", type=int, default=50, help="worker SENTIMENT_MAX_WAIT_MS (default 50)")
    p.add_argument("--max-length", type=_positive, default=128)
    p.add_argument("--threads", type=_positive, default=2, help="torch threads for every model (default 2)")
    p.add_argument("--batch-sizes", type=int_list, help="pure-inference batch sizes (default 1,4,8,16,32,64)")
    p.add_argument(
        "--loads", type=_fractions, help="paced loads, fractions of full speed (default .25,.5,.75)"
    )
    p.add_argument("--phase-seconds", type=float, help="length of each paced phase (default 20; quick 3)")
    p.add_argument("--validation-n", type=_positive, help="validation texts for int8 (default all 2000)")
    p.add_argument("--skip-baseline", action="store_true")
    p.add_argument("--skip-int8", action="store_true", help="skip the int8/bf16 speed and recall figures")
    return p


def kafka_redis() -> tuple[str, str]:
    env = dict(os.environ)
    stack_env = REPO / ".stack" / "env"
    if stack_env.is_file():
        for line in stack_env.read_text().splitlines():
            k, sep, v = line.removeprefix("export ").partition("=")
            if sep and k not in env:
                env[k] = v.strip().strip("'\"")
    bootstrap = env.get("SENTIMENT_KAFKA_BOOTSTRAP_SERVERS")
    redis_url = env.get("SENTIMENT_REDIS_URL")
    if not bootstrap or not redis_url:
        raise e2e.BenchError(
            "no Kafka/Redis address: run scripts/stack up, or set SENTIMENT_KAFKA_BOOTSTRAP_SERVERS and "
            "SENTIMENT_REDIS_URL"
        )
    return bootstrap, redis_url


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def machine() -> dict[str, Any]:
    import torch
    import transformers

    from worker.classifier import tokenizer_threads

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "tokenizer_threads": tokenizer_threads(os.environ, len(os.sched_getaffinity(0))),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "uptime_at_start": uptime(),
    }


def log(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds the finally blocks: consumers stopped, topics deleted

    signal.signal(signal.SIGTERM, on_term)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as scratch:  # a stand-in model folder, if needed
            return run(args, argv, Path(scratch))
    except (e2e.BenchError, traffic.TrafficError) as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cpu_variants(
    model_dir: Path,
    clf: Any,
    texts: list[str],
    val: tuple[list[str], list[str]],
    args: argparse.Namespace,
    repeats: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """int8 (and bf16 where the CPU has it) vs fp32 at the worker's batch: speed and validation recall.

    Speeds are measured in turns (fp32, then each variant, ``repeats`` times) and the speed-up is the median
    of the per-turn ratios, since the machine's load changes from one minute to the next.
    """
    import torch

    b = args.batch_size
    others: dict[str, Any] = {}
    for name in ("int8", "bf16"):
        if name == "bf16" and not (
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        ):
            continue
        others[name] = inference.load(
            model_dir, device="cpu", batch=b, max_length=args.max_length, threads=args.threads, precision=name
        )
    # Per variant and turn: (speed-up, the variant's figures, fp32's msg/s in the same turn).
    turns: dict[str, list[tuple[float, dict[str, Any], float]]] = {name: [] for name in others}
    for _ in range(repeats):
        fp32 = inference.measure(clf, texts, b)
        for name, other in others.items():
            speed = inference.measure(other, texts, b)
            turns[name].append((speed["msg_s"] / fp32["msg_s"], speed, fp32["msg_s"]))

    val_texts, val_labels = val
    fp32_recall = inference.macro_recall(clf, val_texts, val_labels, b)
    rows: list[dict[str, Any]] = []
    variants: dict[str, Any] = {"batch": b, "repeats": repeats, "fp32_macro_recall": fp32_recall}
    for name, other in others.items():
        ranked = sorted(turns[name], key=lambda turn: turn[0])
        speedup, speed, fp32_msg_s = ranked[(len(ranked) - 1) // 2]  # the median turn, figures and all
        # A variant slower than fp32 is no option, so its recall is not worth the minutes.
        recall = (
            inference.macro_recall(other, val_texts, val_labels, b) if speedup > 1 or name == "int8" else None
        )
        rows.append({"variant": name, **speed})
        variants[name] = {
            "msg_s": speed["msg_s"],
            "fp32_msg_s_same_turn": fp32_msg_s,
            "speedup": speedup,
            "macro_recall": recall,
            "recall_loss": None if recall is None else fp32_recall - recall,
        }
        log(
            f"  {name} batch {b}: {speedup:.2f}x fp32 (median of {repeats}); macro recall "
            + ("not measured" if recall is None else f"{recall:.4f} vs fp32 {fp32_recall:.4f}")
        )
    variants["methods"] = {
        "int8": "SENTIMENT_PRECISION=int8: quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig})",
        "bf16": "SENTIMENT_PRECISION=bf16: model.to(torch.bfloat16) (oneDNN bf16 kernels)",
    }
    variants["validation"] = f"tweeteval_sentiment/validation.jsonl (n={len(val_texts)})"
    return rows, variants


# A CPU variant counts as a reference only if it keeps the model's accuracy (the worker's own bound for bf16).
MAX_REFERENCE_RECALL_LOSS = 0.003


def strongest_reference(
    rows: list[dict[str, Any]], variants: dict[str, Any], worker_precision: str, trained: bool
) -> dict[str, Any]:
    """PURE: the fastest pure-inference row among those a user could serve: fp32, what the worker's auto
    chose, and int8/bf16 when the validation set showed at most MAX_REFERENCE_RECALL_LOSS of macro recall."""

    def precision_of(row: dict[str, Any]) -> str:
        return str(row.get("variant", "fp32")).split(" ")[0]

    def eligible(row: dict[str, Any]) -> bool:
        p = precision_of(row)
        if p in ("fp32", worker_precision):
            return True
        loss = (variants.get(p) or {}).get("recall_loss")
        return trained and loss is not None and loss <= MAX_REFERENCE_RECALL_LOSS

    candidates = [r for r in rows if eligible(r) and r["batch"] > 1]
    top = max(candidates, key=lambda r: r["msg_s"])
    return {
        "precision": precision_of(top),
        "batch": top["batch"],
        "msg_s": top["msg_s"],
        "considered": sorted({precision_of(r) for r in candidates}),
    }


def run(args: argparse.Namespace, argv: list[str], scratch: Path) -> int:
    quick = args.quick
    rounds = args.rounds or (1 if quick else 5)
    long_rounds = (1 if quick else 3) if args.long_rounds is None else max(0, args.long_rounds)
    n = args.n or (100 if quick else 600)
    baseline_n = min(n, args.baseline_n or (20 if quick else 100))
    b = args.batch_size
    batch_sizes = sorted({*(args.batch_sizes or ([1, 8, 32] if quick else [1, 4, 8, 16, 32, 64])), b})
    loads = sorted({*(args.loads or ([0.5] if quick else [0.25, 0.5, 0.75])), 0.5})
    phase_s = args.phase_seconds or (3.0 if quick else 20.0)
    validation_n = args.validation_n or (100 if quick else None)
    n_inf = 128 if quick else 384
    calibration_n = 64 if quick else 300
    started = time.time()

    bootstrap, redis_url = kafka_redis()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model_dir, chosen = choose_model(args.model, scratch)
    trained = FRESH not in chosen
    root = traffic.datasets_dir(args.datasets)
    social, reviews = traffic.load_rows(root, per_source=20_000)
    long_reviews = traffic.load_long_reviews(root, limit=40_000) if long_rounds else []
    run_id = uuid.uuid4().hex[:8]
    info = machine()
    log(f"bench: model {model_dir} ({chosen}); {info['cpus']} CPUs; {info['uptime_at_start']}")

    def traffic_for(label: str, count: int, seed: int, long: bool = False) -> list[dict[str, object]]:
        pool = long_reviews if long else reviews
        return traffic.build_messages(social, pool, count, seed=seed, run_id=f"{run_id}-{label}")

    # 1. pure inference ------------------------------------------------------------------------------------
    import torch

    torch.set_num_threads(args.threads)
    clf = inference.load(
        model_dir, device="cpu", batch=b, max_length=args.max_length, threads=args.threads, precision="fp32"
    )
    texts = traffic.texts_of(traffic_for("inference", n_inf, 0))
    rows: list[dict[str, Any]] = []
    for size in batch_sizes:
        # Best of two passes of at least a second each: a pass that another program interrupts says nothing
        # about the model.
        passes = [
            inference.measure(clf, texts[: 64 if size == 1 else n_inf], size, min_seconds=1.0) for _ in "ab"
        ]
        r = max(passes, key=lambda p: p["msg_s"])
        rows.append({"variant": "fp32", **r})
        log(f"  inference fp32 batch {size}: {r['msg_s']:.1f} msg/s, {r['batch_ms']:.1f} ms/batch")
    model_ref = {"name": clf.model_ref.name, "version": clf.model_ref.version}
    variants: dict[str, Any] = {}
    if not args.skip_int8:
        val = traffic.validation_set(root, validation_n)
        extra, variants = cpu_variants(model_dir, clf, texts, val, args, repeats=1 if quick else 3)
        rows += extra
    # What the worker runs with its defaults (SENTIMENT_PRECISION=auto: bf16 on a CPU with AMX when the model
    # folder's precision.json allows it), swept over the batch sizes too when that is not fp32.
    auto = inference.load(
        model_dir, device="cpu", batch=b, max_length=args.max_length, threads=args.threads, precision="auto"
    )
    worker_precision = {"precision": auto.precision, "reason": auto.precision_reason}
    log(f"  worker's precision: {auto.precision} ({auto.precision_reason})")
    if auto.precision != "fp32":
        for size in batch_sizes:
            passes = [
                inference.measure(auto, texts[: 64 if size == 1 else n_inf], size, min_seconds=1.0)
                for _ in "ab"
            ]
            r = max(passes, key=lambda p: p["msg_s"])
            rows.append({"variant": f"{auto.precision} (auto)", **r})
            log(
                f"  inference {auto.precision} batch {size}: {r['msg_s']:.1f} msg/s, "
                f"{r['batch_ms']:.1f} ms/batch"
            )
    del auto
    best = strongest_reference(rows, variants, worker_precision["precision"], trained)
    log(f"  strongest reference: {best['precision']} at batch {best['batch']} ({best['msg_s']:.1f} msg/s)")

    # 2.-4. Kafka ------------------------------------------------------------------------------------------
    admin = e2e.Admin(bootstrap)
    prefix = f"bench-{run_id}"
    sessions: list[e2e.Session] = []
    round_rows: list[dict[str, Any]] = []
    paced: list[dict[str, Any]] = []
    checks: dict[str, Any] = {}
    long_rows: list[dict[str, Any]] = []
    long_paced: list[dict[str, Any]] = []
    del clf  # from here on the reference runs in a process of its own (bench/reference.py)
    # The worker's own settings (its batch and precision: for the p99 bound) and the strongest reference (the
    # model alone at its best batch size and precision: for the end-to-end ratio).
    reference = Reference(model_dir, max_length=args.max_length, threads=args.threads, cwd=REPO)
    strongest = (
        reference
        if best["precision"] == worker_precision["precision"]
        else Reference(
            model_dir, max_length=args.max_length, threads=args.threads, cwd=REPO, precision=best["precision"]
        )
    )
    try:
        wtopics = admin.topic_set("worker")
        metrics_port = e2e.free_port()  # the worker's own batch figures, read between phases
        env = e2e.worker_env(
            bootstrap=bootstrap,
            redis_url=redis_url,
            model_dir=model_dir,
            topics=wtopics,
            group=f"bench-worker-{run_id}",
            batch_size=b,
            max_wait_ms=args.max_wait_ms,
            max_length=args.max_length,
            threads=args.threads,
            redis_prefix=prefix,
            metrics_port=metrics_port,
        )
        worker = e2e.Session(
            bootstrap=bootstrap,
            topics=wtopics,
            start=lambda: e2e.start_worker(env, out / "worker.log", idle_s=600),
            min_rate=2.0,
            metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        )
        sessions.append(worker)
        baseline: e2e.Session | None = None
        if not args.skip_baseline:
            btopics = admin.topic_set("baseline")
            baseline = e2e.Session(
                bootstrap=bootstrap,
                topics=btopics,
                start=lambda: e2e.start_baseline(
                    bootstrap=bootstrap,
                    redis_url=redis_url,
                    model_dir=model_dir,
                    topics=btopics,
                    group=f"bench-baseline-{run_id}",
                    max_length=args.max_length,
                    threads=args.threads,
                    redis_prefix=f"{prefix}-baseline",
                    log_path=out / "baseline.log",
                    idle_s=600,
                ),
                min_rate=0.5,
            )
            sessions.append(baseline)
        for s in sessions:
            log(f"  {s.name}: ready after {s.warm_up(traffic_for(f'warmup-{s.name}', 2 * b, 99)):.1f}s")

        def one_round(k: int, long: bool) -> dict[str, Any]:
            tag = "long reviews, " if long else ""
            msgs = traffic_for(f"{'long' if long else 'round'}{k}", n, (500 if long else 0) + k, long)
            # The reference runs just before and just after the worker, and the ratio takes their mean: the
            # machine's speed drifts within seconds (the reference's own speed doubled within one run), and
            # a reference on one side only puts all of that drift into the ratio.
            ref_texts = traffic.texts_of(msgs)[:n_inf]
            ref = strongest.measure(ref_texts, best["batch"])
            w = worker.phase(f"full speed, {tag}round {k}", msgs).summary()
            ref_after = strongest.measure(ref_texts, best["batch"])
            model_msg_s = (ref["msg_s"] + ref_after["msg_s"]) / 2
            model_per_cpu_s = (ref["msg_per_cpu_s"] + ref_after["msg_per_cpu_s"]) / 2
            row: dict[str, Any] = {
                "round": k,
                "model": ref,
                "model_after": ref_after,
                "model_msg_s": model_msg_s,
                "worker": w,
                "e2e_vs_model": w["msg_s"] / model_msg_s,
                "e2e_vs_model_before": w["msg_s"] / ref["msg_s"],
                "cpu_vs_model": w["msg_per_cpu_s"] / model_per_cpu_s,
            }
            line = (
                f"  {tag}round {k}: model {ref['msg_s']:.1f} / {ref_after['msg_s']:.1f} (before / after), "
                f"worker {w['msg_s']:.1f}"
            )
            if baseline is not None:
                bl = baseline.phase(f"full speed, {tag}round {k}", msgs[:baseline_n]).summary()
                row["baseline"] = bl
                row["e2e_vs_baseline"] = w["msg_s"] / bl["msg_s"]
                row["cpu_vs_baseline"] = w["msg_per_cpu_s"] / bl["msg_per_cpu_s"]
                line += f", baseline {bl['msg_s']:.1f}"
            log(f"{line} msg/s (load avg {w['load_avg_1m']:.2f})")
            return row

        round_rows += [one_round(k, False) for k in range(1, rounds + 1)]

        full_msg_s = statistics.median(r["worker"]["msg_s"] for r in round_rows)

        def one_paced(j: int, load: float, long: bool) -> dict[str, Any]:
            # The machine's speed drifts, so each paced phase is set against what the worker and the model
            # do just before it: a short full-speed burst gives the rate, the reference gives the bound.
            pct = round(100 * load)
            tag = "long reviews, " if long else ""
            seed = 300 if long else 0
            phase_texts = (
                traffic.texts_of(traffic_for(f"ref{j}", n_inf, seed + 400 + j, long)) if long else texts
            )
            ref = reference.measure(phase_texts, b)
            burst = worker.phase(
                f"burst before {tag}{pct}%",
                traffic_for(f"burst{seed + j}", calibration_n, seed + 200 + j, long),
            )
            capacity = burst.summary()["msg_s"]
            rate = load * capacity
            count = max(40, int(rate * phase_s))
            p = worker.phase(
                f"{tag}{pct}% load", traffic_for(f"load{seed + j}", count, seed + 100 + j, long), rate
            ).summary()
            p.update(
                load=load,
                capacity_msg_s=capacity,
                reference_batch_ms=ref["batch_ms"],
                bound_ms=args.max_wait_ms + 2 * ref["batch_ms"],
            )
            log(
                f"  worker at {p['phase']} ({rate:.1f} of {capacity:.1f} msg/s): p50 {p['p50_ms']:.0f} ms, "
                f"p95 {p['p95_ms']:.0f} ms, p99 {p['p99_ms']:.0f} ms, bound {p['bound_ms']:.0f} ms "
                f"(load avg {p['load_avg_1m']:.2f})"
            )
            return p

        paced += [one_paced(j, load, False) for j, load in enumerate(loads)]
        if long_rounds:
            long_rows += [one_round(k, True) for k in range(1, long_rounds + 1)]
            long_paced.append(one_paced(0, 0.5, True))
        after = reference.measure(texts, b)
        checks["worker_exit_code"] = worker.close()
        checks["produced"] = worker.produced
        checks["dead_letters"] = e2e.dlq_size(bootstrap, wtopics.dlq)
        checks["redis_counted"] = e2e.redis_counted(redis_url, prefix)
        if baseline is not None:
            checks["baseline_exit_code"] = baseline.close()
    finally:
        for s in sessions:
            s.close()
        reference.close()
        if strongest is not reference:
            strongest.close()
        admin.close()
        e2e.redis_cleanup(redis_url, [f"{{{prefix}}}:*", f"{prefix}-baseline:*"])

    # 5. figures --------------------------------------------------------------------------------------------
    batch_ms_all = [r[m]["batch_ms"] for r in round_rows for m in ("model", "model_after")] + [
        after["batch_ms"]
    ]
    batch_ms = statistics.median(batch_ms_all)
    model_msg_s = statistics.median(r["model_msg_s"] for r in round_rows)
    half = next(p for p in paced if p["phase"] == "50% load")
    e2e_vs_model = statistics.median(r["e2e_vs_model"] for r in round_rows)
    e2e_vs_baseline = (
        statistics.median(r["e2e_vs_baseline"] for r in round_rows) if baseline is not None else float("nan")
    )
    baseline_msg_s = (
        statistics.median(r["baseline"]["msg_s"] for r in round_rows)
        if baseline is not None
        else float("nan")
    )
    target_rows = stats.targets(
        e2e_vs_model=e2e_vs_model,
        e2e_vs_baseline=e2e_vs_baseline,
        p99_at_half_ms=half["p99_ms"],
        max_wait_ms=args.max_wait_ms,
        batch_inference_ms=half["reference_batch_ms"],
        int8_speedup=variants["int8"]["speedup"] if variants else None,
        int8_recall_loss=variants["int8"]["recall_loss"] if variants and trained else None,
    )
    long_medians: dict[str, Any] = {}
    if long_rows:
        long_medians = {
            "model_msg_s": statistics.median(r["model_msg_s"] for r in long_rows),
            "worker_msg_s": statistics.median(r["worker"]["msg_s"] for r in long_rows),
            "baseline_msg_s": (
                statistics.median(r["baseline"]["msg_s"] for r in long_rows) if baseline is not None else None
            ),
            "e2e_vs_model": statistics.median(r["e2e_vs_model"] for r in long_rows),
            "e2e_vs_baseline": (
                statistics.median(r["e2e_vs_baseline"] for r in long_rows)
                if baseline is not None
                else float("nan")
            ),
        }
        target_rows += [
            {**t, "name": f"{t['name']}, long reviews in the mix"}
            for t in stats.targets(
                e2e_vs_model=long_medians["e2e_vs_model"],
                e2e_vs_baseline=long_medians["e2e_vs_baseline"],
                p99_at_half_ms=long_paced[0]["p99_ms"],
                max_wait_ms=args.max_wait_ms,
                batch_inference_ms=long_paced[0]["reference_batch_ms"],
            )
        ]
    results = {
        "command": " ".join(["python -m bench", *argv]),
        "quick": quick,
        "machine": {**info, "uptime_at_end": uptime()},
        "model": {"dir": str(model_dir), "chosen": chosen, "trained": trained, **model_ref},
        "settings": {
            "batch_size": b,
            "max_wait_ms": args.max_wait_ms,
            "max_length": args.max_length,
            "torch_threads": args.threads,
            "rounds": rounds,
            "messages_per_round": n,
            "baseline_messages_per_round": baseline_n,
            "calibration_messages": calibration_n,
            "long_rounds": long_rounds,
            "worker_precision": worker_precision,
        },
        "reference": best,
        "inference": rows,
        "cpu_variants": variants,
        "rounds": round_rows,
        "paced": paced,
        "long_rounds": long_rows,
        "long_paced": long_paced,
        "long_medians": long_medians,
        "inference_after": after,
        "medians": {
            "model_msg_s": model_msg_s,
            "worker_msg_s": full_msg_s,
            "baseline_msg_s": baseline_msg_s,
            "batch_ms": batch_ms,
            "e2e_vs_model": e2e_vs_model,
            "e2e_vs_model_before": statistics.median(r["e2e_vs_model_before"] for r in round_rows),
            "e2e_vs_baseline": e2e_vs_baseline,
            "cpu_vs_model": statistics.median(r["cpu_vs_model"] for r in round_rows),
            "classify_share": statistics.median(
                r["worker"].get("classify_share", math.nan) for r in round_rows
            ),
            "cpu_vs_baseline": (
                statistics.median(r["cpu_vs_baseline"] for r in round_rows) if baseline is not None else None
            ),
        },
        "checks": checks,
        "targets": target_rows,
        "seconds": time.time() - started,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    md = report(results)
    (out / "results.md").write_text(md + "\n")
    title = f"{model_ref['name']}, {info['cpus']} CPU cores ({info['cpu']}), {args.threads} torch threads"
    plots.throughput_vs_batch(
        out / "throughput_vs_batch.png",
        rows,
        e2e={"batch": b, "msg_s": full_msg_s, "label": "worker end to end via Kafka + Redis (median round)"},
        baseline_msg_s=baseline_msg_s if baseline is not None else None,
        title=title,
    )
    plots.latency_vs_load(out / "latency_vs_load.png", paced, title=title)
    print()
    print(md)
    print(f"\nbench: wrote results.json, results.md, throughput_vs_batch.png, latency_vs_load.png to {out}")
    return 0


def report(r: dict[str, Any]) -> str:
    m, s, c, med = r["machine"], r["settings"], r["checks"], r["medians"]
    fmt = stats.fmt
    parts = [
        "## Benchmark results" + (" (quick run: sizes too small for conclusions)" if r["quick"] else ""),
        "",
        f"Machine: {m['cpus']} × {m['cpu']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"{s['torch_threads']} torch threads, {m.get('tokenizer_threads', '?')} tokenizer threads. "
        f"Shared machine; load at start `{m['uptime_at_start']}`, "
        f"at end `{m['uptime_at_end']}`.",
        f"Model: `{r['model']['name']}` ({r['model']['chosen']}), version {r['model']['version']}. "
        f"Worker: batch {s['batch_size']}, max wait {s['max_wait_ms']} ms, max length {s['max_length']}; "
        f"{s['rounds']} round(s) of {s['messages_per_round']} messages (baseline: "
        f"{s['baseline_messages_per_round']}).",
        f"Worker precision: {s['worker_precision']['precision']} ({s['worker_precision']['reason']}). "
        f"Reference (a), the model alone at its best batch size and precision on the same messages: "
        f"{r['reference']['precision']} at batch {r['reference']['batch']} (the fastest in the "
        f"pure-inference table among {', '.join(r['reference']['considered'])}; int8/bf16 count only "
        "without a macro-recall loss above 0.3 points). Reference (b): the per-message consumer "
        "(bench/baseline.py).",
        "",
        "### Targets (ratios: median over rounds; in each round the reference runs just before and just "
        "after the worker, and the ratio takes their mean)",
        "",
        stats.md_table(
            ["target", "measured", "goal", "met"],
            [
                [t["name"], t["value"], f"{t['op']} {fmt(t['target'], 2)}", "yes" if t["met"] else "NO"]
                for t in r["targets"]
            ],
            digits=2,
        ),
        "",
        "Reading end-to-end / model when the machine is noisy: in the full-speed phases the worker spent a "
        f"median {fmt(med['classify_share'], 2)} of the time inside classify (from its own /metrics), which "
        "is the ratio it reaches whenever its model runs as fast as the reference's. Against the reference "
        "before it only (the method of earlier runs), end-to-end / model is "
        f"{fmt(med['e2e_vs_model_before'], 2)}.",
        "",
        "### Throughput, per round (msg/s)",
        "",
        stats.md_table(
            [
                "round",
                "model (pure inference), before / after",
                "worker end to end",
                "baseline",
                "worker / model",
                "worker / baseline",
                "load avg (1 min)",
                "worker / model per CPU-s",
                "worker / baseline per CPU-s",
            ],
            [
                [
                    x["round"],
                    f"{fmt(x['model']['msg_s'], 1)} / {fmt(x['model_after']['msg_s'], 1)}",
                    x["worker"]["msg_s"],
                    x["baseline"]["msg_s"] if "baseline" in x else "-",
                    fmt(x["e2e_vs_model"], 2),
                    fmt(x["e2e_vs_baseline"], 2) if "e2e_vs_baseline" in x else "-",
                    fmt(x["worker"]["load_avg_1m"], 2),
                    fmt(x["cpu_vs_model"], 2),
                    fmt(x["cpu_vs_baseline"], 2) if "cpu_vs_baseline" in x else "-",
                ]
                for x in r["rounds"]
            ],
        ),
        "",
        *_long_section(r),
        "Per CPU-second: messages per CPU-second of the consumer process (or of the reference process), a "
        "diagnostic that the other programs on a shared machine disturb less than wall-clock throughput "
        f"(it leaves out the broker's and Redis' CPU). Medians: worker / model "
        f"{fmt(med['cpu_vs_model'], 2)}, worker / baseline {fmt(med['cpu_vs_baseline'], 2)}.",
        "",
        "### Latency, produce → result (ms)",
        "",
        stats.md_table(
            [
                "consumer",
                "phase",
                "messages",
                "offered msg/s",
                "msg/s",
                "p50",
                "p95",
                "p99",
                "max",
                "p99 bound",
            ],
            [
                [who, p["phase"], p["n"], p["offered_msg_s"] or "max", p["msg_s"]]
                + [p[q] for q in ("p50_ms", "p95_ms", "p99_ms", "max_ms")]
                + [p.get("bound_ms", "-")]
                for who, p in [("worker", x["worker"]) for x in r["rounds"]]
                + [("baseline", x["baseline"]) for x in r["rounds"] if "baseline" in x]
                + [("worker", p) for p in r["paced"]]
                + [("worker", x["worker"]) for x in r.get("long_rounds", [])]
                + [("baseline", x["baseline"]) for x in r.get("long_rounds", []) if "baseline" in x]
                + [("worker", p) for p in r.get("long_paced", [])]
            ],
            digits=0,
        ),
        "",
        "The worker's own figures per phase (from its /metrics): batches, mean records per batch, and per "
        "batch the classify time and the time after it (build results, publish + flush, Redis, commit):",
        "",
        stats.md_table(
            [
                "phase",
                "batches",
                "mean batch",
                "classify ms / batch",
                "after classify ms / batch",
                "classify share",
            ],
            [
                [
                    p["phase"],
                    p["batches"],
                    fmt(p["mean_batch"]),
                    p["inference_ms_per_batch"],
                    p["after_inference_ms_per_batch"],
                    fmt(p.get("classify_share"), 2),
                ]
                for p in [x["worker"] for x in r["rounds"]] + r["paced"]
                if "batches" in p
            ],
            digits=0,
        ),
        "",
        f"Paced phases: each is offered a fraction of the throughput a {s['calibration_messages']}-message "
        "full-speed burst reached "
        "just before it, and its p99 bound is max wait + 2 × the time of one batch of "
        f"{s['batch_size']} in pure inference measured just before it too (the machine's speed drifts).",
        "",
        "### Pure inference (the worker's classifier: tokenize + forward, length-sorted chunks)",
        "",
        inference.table(r["inference"]),
        "",
        f"Checks: {c.get('dead_letters')} dead letters; Redis counted {c.get('redis_counted')} of the "
        f"{c.get('produced')} messages sent to the worker; worker exit code {c.get('worker_exit_code')}.",
    ]
    v = r["cpu_variants"]
    if v:
        lines = [
            f"- {name}: {fmt(v[name]['speedup'], 2)}× fp32 speed at batch {v['batch']} (median of "
            f"{v['repeats']} turns; in that turn {fmt(v[name]['msg_s'])} vs "
            f"{fmt(v[name]['fp32_msg_s_same_turn'])} msg/s); "
            + (
                "macro recall not measured (slower than fp32)"
                if v[name]["macro_recall"] is None
                else f"macro recall {fmt(100 * v[name]['macro_recall'], 2)} vs fp32 "
                f"{fmt(100 * v['fp32_macro_recall'], 2)} (loss {fmt(100 * v[name]['recall_loss'], 2)} points)"
            )
            + f"; `{v['methods'][name]}`"
            for name in ("int8", "bf16")
            if name in v
        ]
        parts += ["", f"### CPU int8 / bf16 (validation: {v['validation']})", "", *lines]
        if not r["model"]["trained"]:
            parts.append("- The model's head is untrained, so these recall figures mean nothing.")
    parts += ["", f"Run took {r['seconds']:.0f} s. Command: `{r['command']}`."]
    return "\n".join(parts)


def _long_section(r: dict[str, Any]) -> list[str]:
    rows = r.get("long_rounds") or []
    if not rows:
        return []
    fmt, med = stats.fmt, r["long_medians"]
    return [
        "### Throughput with long reviews in the mix (review_sentiment instead of SST sentences), msg/s",
        "",
        stats.md_table(
            [
                "round",
                "model (a), before / after",
                "worker end to end",
                "baseline (b)",
                "worker / (a)",
                "worker / (b)",
                "load avg",
            ],
            [
                [
                    x["round"],
                    f"{fmt(x['model']['msg_s'], 1)} / {fmt(x['model_after']['msg_s'], 1)}",
                    x["worker"]["msg_s"],
                    x["baseline"]["msg_s"] if "baseline" in x else "-",
                    fmt(x["e2e_vs_model"], 2),
                    fmt(x["e2e_vs_baseline"], 2) if "e2e_vs_baseline" in x else "-",
                    fmt(x["worker"]["load_avg_1m"], 2),
                ]
                for x in rows
            ],
        ),
        "",
        f"Medians: worker / (a) {fmt(med['e2e_vs_model'], 2)}, "
        f"worker / (b) {fmt(med['e2e_vs_baseline'], 2)}. "
        "Reference (a) runs at the batch size chosen on the short mix.",
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
