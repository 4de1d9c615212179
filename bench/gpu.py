"""The GPU benchmark: pure inference and the worker's pipeline with an in-process source, no Kafka or Redis.

    python -m bench.gpu [--model DIR] [--datasets DIR] [--out DIR]      (bench/gpu.sh runs this)

1. Model ceiling: the model alone, weights cast to bf16 and to fp16, on pre-tokenized batches that are
   length-sorted inside each batch, padded to a multiple of 8, copied from pinned host memory with
   non_blocking transfers.
2. Pure inference in the worker's own code: worker.classifier.Classifier ``encode`` + ``classify`` on chunks
   of B texts (tokenizing included; the classifier runs under bf16 autocast on CUDA).
3. The pipeline: the real worker.loop.Loop with an in-memory source (records holding the JSON bytes that a
   producer would send), a sink that drops the result records, and a counts stand-in that builds the Redis
   Lua call's arguments (worker.counts.pack_apply) without sending them. So it runs the real decode ->
   batch -> tokenize -> classify -> build results -> tally -> commit path, and measures the pipeline's own
   overhead; the Kafka and Redis round trips are not in it.
4. The same pipeline with a stub in place of the transformer (logits from the first token ids): the most
   one process can do with an instant model, i.e. the ceiling that tokenizing, JSON and results set.

Writes gpu_results.json and gpu_results.md to --out (default: $OUT if set, else bench/out) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench import inference, stats, traffic
from bench.cli import ArgParser, int_list
from bench.models import DEFAULT_MODEL, REPO

TARGET_PIPELINE_MSG_S = 10_000
TARGET_PIPELINE_VS_INFERENCE = 0.5


def build_parser() -> argparse.ArgumentParser:
    p = ArgParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model folder (default: $SENTIMENT_MODEL_DIR, else models/minilm-mixed)")
    p.add_argument(
        "--datasets", help="shared datasets folder (default: $SENTIMENT_DATASETS, ../shared/datasets)"
    )
    p.add_argument("--out", type=Path, help="output folder (default: $OUT, else bench/out)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu only to try the script out")
    p.add_argument("--n", type=int, default=60_000, help="messages through the pipeline per batch size")
    p.add_argument("--ceiling-batches", type=int_list, default=[128, 512, 1024, 2048])
    p.add_argument("--inference-batches", type=int_list, default=[128, 512, 1024])
    p.add_argument("--pipeline-batches", type=int_list, default=[128, 512, 1024])
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--seconds", type=float, default=2.0, help="minimum timed seconds per inference figure")
    return p


def model_dir(explicit: str | None, scratch: Path) -> Path:
    """The model folder; one stored in half precision (bench.pack_gpu) gets an fp32 copy in scratch, since the
    worker is measured on what the trainer exports (fp32 weights; the classifier autocasts on CUDA)."""
    path = Path(explicit or os.environ.get("SENTIMENT_MODEL_DIR") or str(DEFAULT_MODEL))
    if not (path / "config.json").is_file():
        raise SystemExit(f"bench.gpu: error: no model folder at {path} (set SENTIMENT_MODEL_DIR or --model)")
    import torch
    from safetensors.torch import load_file, save_file

    weights = sorted(path.glob("*.safetensors"))
    tensors = {f.name: load_file(f) for f in weights}
    if not any(t.dtype in (torch.float16, torch.bfloat16) for ts in tensors.values() for t in ts.values()):
        return path
    copy = scratch / path.name
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    for name, ts in tensors.items():
        save_file({k: v.float().contiguous() for k, v in ts.items()}, copy / name, metadata={"format": "pt"})
    config = json.loads((copy / "config.json").read_text())
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = "float32"
    (copy / "config.json").write_text(json.dumps(config, indent=2))
    print(f"bench.gpu: {path} holds half-precision weights; measuring an fp32 copy ({copy})")
    return copy


# --------------------------------------------------------------------------------------------- 1. ceiling


def ceiling(
    path: Path,
    texts: Sequence[str],
    batches: Sequence[int],
    *,
    device: str,
    max_length: int,
    seconds: float,
    rows: list[dict[str, Any]],
) -> None:
    """Append one row per (dtype, batch) to rows as it is measured."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False, local_files_only=True)
    ids = tok(list(texts), truncation=True, max_length=max_length)["input_ids"]
    pad = int(tok.pad_token_id or 0)
    dev = torch.device(device)
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16} if device == "cuda" else {"fp32": torch.float32}
    for name, dtype in dtypes.items():
        model = AutoModelForSequenceClassification.from_pretrained(
            path, use_safetensors=True, trust_remote_code=False, local_files_only=True
        )
        model = model.to(device=dev, dtype=dtype).eval()
        for b in batches:
            host = _pinned_batches(ids, b, pad, pin=device == "cuda")
            with torch.inference_mode():
                for x, m in host[:3]:  # warm-up: kernels for a few shapes
                    model(input_ids=x.to(dev), attention_mask=m.to(dev))
                _sync(device)
                n = 0
                t0 = time.perf_counter()
                while True:
                    for x, m in host:
                        logits = model(
                            input_ids=x.to(dev, non_blocking=True),
                            attention_mask=m.to(dev, non_blocking=True),
                        ).logits
                        torch.softmax(logits.float(), dim=-1).to("cpu", non_blocking=True)
                        n += x.shape[0]
                    _sync(device)
                    if time.perf_counter() - t0 >= seconds:
                        break
                elapsed = time.perf_counter() - t0
            rows.append(
                {
                    "variant": name,
                    "batch": b,
                    "n": n,
                    "msg_s": n / elapsed,
                    "batch_ms": 1000 * elapsed * b / n,
                }
            )
            print(f"  ceiling {name} batch {b}: {n / elapsed:,.0f} msg/s", flush=True)
        del model


def _pinned_batches(ids: Sequence[Sequence[int]], b: int, pad: int, *, pin: bool) -> list[tuple[Any, Any]]:
    import numpy as np
    import torch

    out = []
    for start in range(0, len(ids) - b + 1, b):
        chunk = sorted(ids[start : start + b], key=len)
        width = -(-len(chunk[-1]) // 8) * 8
        x = np.full((len(chunk), width), pad, dtype=np.int64)
        m = np.zeros((len(chunk), width), dtype=np.int64)
        for i, row in enumerate(chunk):
            x[i, : len(row)] = row
            m[i, : len(row)] = 1
        tx, tm = torch.from_numpy(x), torch.from_numpy(m)
        out.append((tx.pin_memory(), tm.pin_memory()) if pin else (tx, tm))
    return out


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


# --------------------------------------------------------------------------------------------- 3. pipeline


class MemorySource:
    """The loop's Source over a list of records: one partition, polls hand out up to max_records at once."""

    def __init__(self, records: Sequence[Any]) -> None:
        self.records = records
        self.pos = 0
        self.end = {(r.topic, r.partition): r.offset + 1 for r in records}
        self.committed: dict[tuple[str, int], int] = {}
        self.done_at: float | None = None
        self.polls = 0

    def poll(self, timeout_ms: int, max_records: int) -> list[Any]:
        if self.pos >= len(self.records):
            time.sleep(min(timeout_ms, 50) / 1000)  # like an empty Kafka poll: nothing to do, so wait
            return []
        self.polls += 1
        out = self.records[self.pos : self.pos + max_records]
        self.pos += len(out)
        return list(out)

    def take_revoked(self) -> set[tuple[str, int]]:
        return set()

    def assigned(self) -> bool:
        return True

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.committed.update(offsets)
        if self.done_at is None and all(self.committed.get(k, -1) >= v for k, v in self.end.items()):
            self.done_at = time.perf_counter()

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        raise RuntimeError("a batch failed in the in-process pipeline; see the log")

    def lag(self) -> dict[tuple[str, int], int]:
        return {}


class DropSink:
    """Counts the records a Kafka producer would have sent, per topic, and drops them."""

    def __init__(self) -> None:
        self.records = 0
        self.by_topic: dict[str, int] = {}

    def publish(self, records: Sequence[Any]) -> None:
        self.records += len(records)
        for r in records:
            self.by_topic[r.topic] = self.by_topic.get(r.topic, 0) + 1


class PackOnlyCounts:
    """Builds the arguments of the Redis Lua call (the CPU part of counting) and sends nothing."""

    def apply(self, tallies: Sequence[Any], next_offsets: Mapping[tuple[str, int], int]) -> int:
        from worker.counts import pack_apply

        pack_apply(
            tallies,
            next_offsets,
            prefix="bench",
            bucket_s=60,
            retention_s=86400,
            mood_size=20,
            now_ms=time.time_ns() // 1_000_000,
        )
        return len(tallies)


def stub_network(device: str) -> Any:
    """Stands in for the transformer in the classifier: logits from the first three token ids and the mask,
    on the device. Everything else (tokenizing, padding, copies to the device, softmax, results, tallies)
    runs as in the worker, so a pipeline with it shows the most one process can do with an instant model."""
    import torch

    class StubNetwork(torch.nn.Module):
        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            logits = (input_ids[:, :3] * attention_mask[:, :3]).float()
            return type("Output", (), {"logits": logits})()

    return StubNetwork().to(device)


def make_records(messages: Sequence[dict[str, object]], topic: str = "bench-in") -> list[Any]:
    from worker.messages import Record

    now_ms = time.time_ns() // 1_000_000
    return [
        Record(
            topic=topic,
            partition=0,
            offset=i,
            key=str(m["id"]).encode(),
            value=traffic.encode(m),
            timestamp_ms=now_ms,
        )
        for i, m in enumerate(messages)
    ]


def pipeline(clf: Any, records: Sequence[Any], batch: int, *, max_wait_ms: int = 50) -> dict[str, Any]:
    import torch

    from worker.batching import Limits
    from worker.loop import Loop, LoopConfig, overlap_pays

    inference.set_batch(clf, batch)
    # As the worker decides it: batches overlap on a GPU, on a CPU only with a core left to the loop.
    overlap = overlap_pays(clf.device.type, torch.get_num_threads(), len(os.sched_getaffinity(0)))
    source, sink = MemorySource(records), DropSink()
    loop = Loop(
        source,
        sink,
        PackOnlyCounts(),
        clf,
        LoopConfig(
            limits=Limits(
                max_records=batch, max_tokens=batch * clf.max_length, max_wait_s=max_wait_ms / 1000
            ),
            output_topic="bench-out",
            dlq_topic="bench-dlq",
            topic_kinds={},
            max_message_bytes=64 * 1024,
        ),
        overlap=overlap,
    )
    t0 = time.perf_counter()
    loop.run(until_idle_s=0.05)
    if source.done_at is None or sink.records != len(records):
        raise RuntimeError(f"pipeline at batch {batch}: {sink.records} of {len(records)} records came out")
    elapsed = source.done_at - t0
    registry = loop.metrics.registry
    inference_s = registry.get_sample_value("sentiment_inference_seconds_sum") or 0.0
    batches = registry.get_sample_value("sentiment_batch_size_count") or 0.0
    return {
        "batch": batch,
        "overlap": overlap,
        "n": len(records),
        "msg_s": len(records) / elapsed,
        "batches": int(batches),
        "mean_batch": len(records) / batches if batches else float("nan"),
        "inference_share": inference_s / elapsed,
        "dead_letters": sink.by_topic.get("bench-dlq", 0),
    }


# --------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as scratch:
        return run(args, Path(scratch))


def run(args: argparse.Namespace, scratch: Path) -> int:
    out: Path = args.out or Path(os.environ.get("OUT") or REPO / "bench" / "out")
    out.mkdir(parents=True, exist_ok=True)
    path = model_dir(args.model, scratch)
    try:
        social, reviews = traffic.load_rows(
            traffic.datasets_dir(args.datasets), per_source=max(args.n, 20_000)
        )
    except traffic.TrafficError as exc:
        print(f"bench.gpu: error: {exc}", file=sys.stderr)
        return 2
    messages = traffic.build_messages(social, reviews, args.n, seed=0, run_id="gpu")

    import torch
    import transformers

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "bench.gpu: error: CUDA is not available (use --device cpu only to try the script)",
            file=sys.stderr,
        )
        return 2
    from worker.classifier import tokenizer_threads

    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu"
    cpus = len(os.sched_getaffinity(0))
    tok_threads = tokenizer_threads(os.environ, cpus)
    print(
        f"bench.gpu: {gpu}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"model {path}, tokenizing on {tok_threads} of {cpus} CPUs"
    )
    if tok_threads == 1 < cpus:
        print(
            "bench.gpu: TOKENIZERS_PARALLELISM is off, so the tokenizer runs on one thread; "
            "the worker as deployed uses every CPU (unset it to measure that)",
            file=sys.stderr,
        )
    started = time.time()
    results: dict[str, Any] = {
        "device": gpu,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpus": cpus,
        "tokenizer_threads": tok_threads,
        "model": str(path),
        "messages": len(messages),
        "ceiling": [],
        "classifier": [],
        "pipeline": [],
        "no_network": [],
        "targets": [],
        "complete": False,
    }

    def save() -> None:  # after every figure, so a run cut short still leaves what it measured
        results["seconds"] = time.time() - started
        (out / "gpu_results.json").write_text(json.dumps(results, indent=2) + "\n")

    try:
        sections(args, path, messages, results, save)
    except KeyboardInterrupt:
        save()
        print(f"bench.gpu: interrupted; partial figures in {out}/gpu_results.json", file=sys.stderr)
        return 130
    results["complete"] = True
    save()
    md = report(results)
    (out / "gpu_results.md").write_text(md + "\n")
    print()
    print(md)
    print(f"\nbench.gpu: wrote {out}/gpu_results.json and gpu_results.md in {results['seconds']:.0f}s")
    return 0


def sections(
    args: argparse.Namespace,
    path: Path,
    messages: list[dict[str, object]],
    results: dict[str, Any],
    save: Callable[[], None],
) -> None:
    texts = traffic.texts_of(messages)
    print("1. model ceiling (weights in half precision, pinned host memory)", flush=True)
    ceil: list[dict[str, Any]] = results["ceiling"]
    ceiling(
        path,
        texts[: max(8 * max(args.ceiling_batches), 8192)],
        args.ceiling_batches,
        device=args.device,
        max_length=args.max_length,
        seconds=args.seconds,
        rows=ceil,
    )
    save()

    print("2. pure inference in the worker's classifier (tokenize + classify)", flush=True)
    clf = inference.load(
        path, device=args.device, batch=args.inference_batches[0], max_length=args.max_length, threads=0
    )
    autocast = str(getattr(clf, "_autocast_dtype", None)).replace("torch.", "")
    worker_rows: list[dict[str, Any]] = results["classifier"]
    for b in sorted({*args.inference_batches, *args.pipeline_batches}):
        r = inference.measure(clf, texts[: max(8 * b, 8192)], b, min_seconds=args.seconds)
        worker_rows.append({"variant": f"worker classifier ({autocast} autocast)", **r})
        print(f"  classifier batch {b}: {r['msg_s']:,.0f} msg/s (tokenize share {r['tokenize_share']:.2f})")
        save()

    print("3. the worker's loop with an in-process source", flush=True)
    records = make_records(messages)
    pipe_rows: list[dict[str, Any]] = results["pipeline"]
    for b in args.pipeline_batches:
        r = pipeline(clf, records, b)
        ref = next(w for w in worker_rows if w["batch"] == b)
        best = max((c["msg_s"] for c in ceil if c["batch"] == b), default=float("nan"))
        r["vs_classifier"] = r["msg_s"] / ref["msg_s"]
        r["vs_ceiling"] = r["msg_s"] / best
        pipe_rows.append(r)
        save()
        vs_ceiling = "no ceiling at this batch"
        if math.isfinite(best):
            vs_ceiling = f"{r['vs_ceiling']:.2f}x the ceiling"
        print(
            f"  pipeline batch {b}: {r['msg_s']:,.0f} msg/s ({r['vs_classifier']:.2f}x the classifier, "
            f"{vs_ceiling}; inference {100 * r['inference_share']:.0f}% of the time)"
        )

    print("4. the same loop with a stub for the network: the limit the pipeline's own work sets", flush=True)
    free: list[dict[str, Any]] = results["no_network"]
    bare = inference.load(
        path, device=args.device, batch=args.pipeline_batches[0], max_length=args.max_length, threads=0
    )
    bare.model = stub_network(args.device)
    for b in args.pipeline_batches:
        r = pipeline(bare, records, b)
        free.append(r)
        save()
        print(f"  no network, batch {b}: {r['msg_s']:,.0f} msg/s ({1e6 / r['msg_s']:.0f} us per message)")

    best_pipe = max(pipe_rows, key=lambda r: r["msg_s"])
    results["targets"] = [
        {
            "name": f"pipeline msg/s (best: batch {best_pipe['batch']})",
            "value": best_pipe["msg_s"],
            "target": TARGET_PIPELINE_MSG_S,
            "met": best_pipe["msg_s"] >= TARGET_PIPELINE_MSG_S,
        },
        {
            "name": "pipeline / pure inference (same batch)",
            "value": best_pipe["vs_classifier"],
            "target": TARGET_PIPELINE_VS_INFERENCE,
            "met": best_pipe["vs_classifier"] >= TARGET_PIPELINE_VS_INFERENCE,
        },
    ]


def report(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"## GPU benchmark: {r['device']}",
            "",
            f"torch {r['torch']}, transformers {r['transformers']}, {r['cpus']} CPU cores, "
            f"tokenizing on {r.get('tokenizer_threads', '?')}; "
            f"model `{r['model']}`; {r['messages']:,} messages per pipeline run.",
            "",
            stats.md_table(
                ["target", "measured", "goal", "met"],
                [[t["name"], t["value"], t["target"], "yes" if t["met"] else "NO"] for t in r["targets"]],
                digits=2,
            ),
            "",
            "Model ceiling (model alone, half-precision weights, pinned memory, pre-tokenized):",
            "",
            stats.md_table(
                ["dtype", "batch", "msg/s", "ms / batch"],
                [[c["variant"], c["batch"], c["msg_s"], c["batch_ms"]] for c in r["ceiling"]],
                digits=1,
            ),
            "",
            "Pure inference in the worker's classifier, and the worker's loop with an in-process source:",
            "",
            stats.md_table(
                [
                    "batch",
                    "classifier msg/s",
                    "tokenize share",
                    "pipeline msg/s",
                    "pipeline / classifier",
                    "pipeline / ceiling",
                    "inference share of pipeline time",
                ],
                [
                    [
                        c["batch"],
                        c["msg_s"],
                        c["tokenize_share"],
                        p["msg_s"] if p else "-",
                        p["vs_classifier"] if p else "-",
                        p["vs_ceiling"] if p else "-",
                        p["inference_share"] if p else "-",
                    ]
                    for c in r["classifier"]
                    for p in [next((x for x in r["pipeline"] if x["batch"] == c["batch"]), None)]
                ],
                digits=2,
            ),
            "",
            "The loop with a stub for the network (the most one process can do with an instant model):",
            "",
            stats.md_table(
                ["batch", "msg/s", "us per message"],
                [[p["batch"], p["msg_s"], 1e6 / p["msg_s"]] for p in r.get("no_network", [])],
                digits=1,
            ),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
