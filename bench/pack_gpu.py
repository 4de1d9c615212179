"""Pack what bench/gpu.sh needs into a folder small enough to travel to a GPU machine (< 64 MiB with wheels).

    python -m bench.pack_gpu .gpu/bench [--model DIR] [--datasets DIR] [--lines 20000]

Writes DEST/model (the model folder with its weights stored in fp16: half the bytes; bench.gpu restores fp32
before measuring) and DEST/datasets/<set>/train.jsonl (the first --lines rows of each train split the
benchmark traffic uses). Put DEST in a git-ignored folder and delete it afterwards: the data sets' licenses
allow reading them, not shipping them with the project.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench import traffic
from bench.models import DEFAULT_MODEL


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pack_gpu", description=__doc__.splitlines()[0])
    p.add_argument("dest", type=Path)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument(
        "--datasets", help="shared datasets folder (default: $SENTIMENT_DATASETS, ../shared/datasets)"
    )
    p.add_argument(
        "--lines", type=int, default=20_000, help="rows kept from each train split (default 20000)"
    )
    args = p.parse_args(argv)
    if not (args.model / "config.json").is_file():
        print(f"bench.pack_gpu: error: no model folder at {args.model}", file=sys.stderr)
        return 2
    root = traffic.datasets_dir(args.datasets)
    for folder, name, _, _ in traffic.SOURCES:
        src = root / folder / name
        if not src.is_file():
            print(f"bench.pack_gpu: error: missing {src}", file=sys.stderr)
            return 2
        dest = args.dest / "datasets" / folder / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with src.open(encoding="utf-8") as f, dest.open("w", encoding="utf-8") as out:
            for i, line in enumerate(f):
                if i >= args.lines:
                    break
                out.write(line)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, use_safetensors=True, trust_remote_code=False, local_files_only=True
    )
    model.to(torch.float16).save_pretrained(args.dest / "model", safe_serialization=True)
    AutoTokenizer.from_pretrained(args.model, local_files_only=True).save_pretrained(args.dest / "model")
    size = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file())
    print(f"bench.pack_gpu: wrote {args.dest} ({size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
