"""Seconds per training step of the trainer's LoRA model, by dropout, precision and attention: the figures
behind the trainer's CPU defaults (no dropout; bf16 with the eager attention where the CPU has AMX-BF16).

    .venv/bin/python -m bench.train_step [--base-model minilm] [--length 128] [--batch 32] [--steps 5]

Each variant loads the base model as `sentiment-train train` does (trainer.train), sets its dropout, wraps
it in the default LoRA adapter and times forward + backward + AdamW step on random token ids of the given
length (no padding), median of --steps after one warm-up step. Prints a table, then one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

VARIANTS = [  # (dropout, precision, attention; None = the model's default)
    (0.1, "fp32", None),
    (0.1, "bf16", None),
    (0.0, "fp32", None),
    (0.0, "bf16", None),
    (0.0, "fp32", "eager"),
    (0.0, "bf16", "eager"),
]


def time_steps(
    base_model: str, dropout: float, bf16: bool, attention: str | None, args: Any
) -> dict[str, Any]:
    import torch

    from trainer.models import resolve_base_model
    from trainer.train import TrainConfig, _load_base, _wrap_lora

    cfg = TrainConfig(base_model=base_model, train=[], output="-", dropout=dropout)
    _, model = _load_base(cfg, resolve_base_model(base_model), attention)
    used = model.config._attn_implementation
    model, _ = _wrap_lora(cfg, model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (args.batch, args.length), generator=generator)
    labels = torch.randint(0, 3, (args.batch,), generator=generator)
    times = []
    for _ in range(args.steps + 1):
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        times.append(time.perf_counter() - started)
    return {"attention": used, "s_per_step": round(statistics.median(times[1:]), 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.splitlines()[0])
    p.add_argument("--base-model", default="minilm", help="minilm, mpnet or a model folder (default: minilm)")
    p.add_argument("--length", type=int, default=128, help="tokens per row (default 128)")
    p.add_argument("--batch", type=int, default=32, help="rows per step (default 32)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant (default 5)")
    p.add_argument("--threads", type=int, help="torch threads (default: the trainer's)")
    args = p.parse_args(argv)
    if min(args.length, args.batch, args.steps) < 1:
        p.error("--length, --batch and --steps must be positive")

    import os

    import torch

    from trainer.models import ModelError
    from trainer.precision import amx_bf16

    torch.set_num_threads(args.threads or min(8, len(os.sched_getaffinity(0))))
    rows = []
    for dropout, precision, attention in VARIANTS:
        try:
            row = time_steps(args.base_model, dropout, precision == "bf16", attention, args)
        except ModelError as exc:  # an attention this model does not implement
            print(f"skipped {attention}: {str(exc).splitlines()[0]}", file=sys.stderr)
            continue
        rows.append({"dropout": dropout, "precision": precision, **row})
        print(
            f"dropout {dropout:<4} {precision}  {row['attention']:<6} {row['s_per_step']:7.3f} s/step",
            flush=True,
        )
    print(
        json.dumps(
            {
                "base_model": args.base_model,
                "length": args.length,
                "batch": args.batch,
                "threads": torch.get_num_threads(),
                "amx_bf16": amx_bf16(),
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
