"""The verifier's judgement and the result table, on hand-made observations (no Kafka, no Redis)."""

from __future__ import annotations

from tests.faults.report import FAIL, NOT_IMPLEMENTED, PASS, Result, table
from tests.faults.traffic import Traffic
from tests.faults.verify import Copy, Observed, judge

LABELS0 = {"negative": 0, "neutral": 0, "positive": 0}


def truth() -> Traffic:
    return Traffic(good={"a": "review", "b": "social_post"}, bad={"k1": "not_utf8", "k2": ""})


def seen(
    out: list[Copy], dlq: list[Copy], *, lag: int = 0, uncommitted: list[Copy] | None = None
) -> Observed:
    total = dict(LABELS0)
    by_kind = {"review": dict(LABELS0), "social_post": dict(LABELS0)}
    kinds = truth().good
    for c in {c.key: c for c in out}.values():
        total[c.label] += 1
        by_kind[kinds[c.key]][c.label] += 1
    return Observed(
        out={"read_committed": out, "read_uncommitted": uncommitted if uncommitted is not None else out},
        dlq={"read_committed": dlq, "read_uncommitted": dlq},
        lag=lag,
        redis_total=total,
        redis_by_kind=by_kind,
    )


CLEAN_OUT = [Copy("a", "positive"), Copy("b", "negative")]
CLEAN_DLQ = [Copy("k1", "not_utf8"), Copy("k2", "invalid_json")]


def test_clean_run_passes() -> None:
    v = judge(truth(), seen(CLEAN_OUT, CLEAN_DLQ), max_duplicates=0)
    assert v.passed, v.problems
    assert (v.lost, v.duplicates, v.counts_exact, v.lag) == (0, 0, True, 0)


def test_lost_records_fail() -> None:
    v = judge(truth(), seen(CLEAN_OUT[:1], CLEAN_DLQ[:1]), max_duplicates=0)
    assert not v.passed and v.lost == 2


def test_duplicates_within_and_over_the_allowance() -> None:
    out = [*CLEAN_OUT, Copy("a", "positive"), Copy("a", "positive")]
    assert judge(truth(), seen(out, CLEAN_DLQ), max_duplicates=2).passed
    v = judge(truth(), seen(out, CLEAN_DLQ), max_duplicates=1)
    assert not v.passed and v.duplicates == 2


def test_exactly_once_allows_no_committed_duplicate_but_ignores_aborted_ones() -> None:
    aborted = [*CLEAN_OUT, Copy("a", "positive")]
    v = judge(
        truth(), seen(CLEAN_OUT, CLEAN_DLQ, uncommitted=aborted), max_duplicates=99, guarantee="exactly_once"
    )
    assert v.passed and v.duplicates_uncommitted == 1
    committed_dup = [*CLEAN_OUT, Copy("b", "negative")]
    v = judge(truth(), seen(committed_dup, CLEAN_DLQ), max_duplicates=99, guarantee="exactly_once")
    assert not v.passed and v.duplicates == 1


def test_wrong_counts_conflicting_labels_wrong_reason_lag_and_strays_fail() -> None:
    s = seen(CLEAN_OUT, CLEAN_DLQ)
    s.redis_total["positive"] += 1
    assert not judge(truth(), s, max_duplicates=0).counts_exact
    two_labels = [*CLEAN_OUT, Copy("a", "negative")]
    assert not judge(truth(), seen(two_labels, CLEAN_DLQ), max_duplicates=9).passed
    wrong_reason = [Copy("k1", "oversize"), CLEAN_DLQ[1]]
    assert not judge(truth(), seen(CLEAN_OUT, wrong_reason), max_duplicates=0).passed
    assert not judge(truth(), seen(CLEAN_OUT, CLEAN_DLQ, lag=3), max_duplicates=0).passed
    misrouted = [*CLEAN_DLQ, Copy("a", "invalid_fields")]
    assert not judge(truth(), seen(CLEAN_OUT, misrouted), max_duplicates=0).passed


def test_table_shows_every_scenario_and_its_problems() -> None:
    rows = [
        Result("F1", "baseline", PASS, 0, 0, True, None, 12.0),
        Result("F2", "kill", FAIL, 3, 0, False, 4.25, 30.0, problems=["3 lost"]),
        Result("F9", "zombie", NOT_IMPLEMENTED),
    ]
    text = table(rows)
    lines = text.splitlines()
    assert [c.strip() for c in lines[0].split(" | ")[:3]] == ["scenario", "title", "result"]
    assert "F9" in lines[4] and NOT_IMPLEMENTED in lines[4] and "pass" not in lines[4]
    assert "4.2" in lines[3] and "NO" in lines[3]
    assert lines[-1] == "  F2: 3 lost"


def test_an_operator_replay_is_allowed_under_both_guarantees() -> None:
    replay = [*CLEAN_OUT, *CLEAN_OUT]
    for guarantee in ("at_least_once", "exactly_once"):
        v = judge(truth(), seen(replay, CLEAN_DLQ), max_duplicates=0, guarantee=guarantee, replayed=2)
        assert v.passed and v.duplicates == 2
