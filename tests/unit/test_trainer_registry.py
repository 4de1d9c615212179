"""The model registry: registration, refusals, atomic aliases, rollback, prune, the CLI's one-line errors."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from trainer.__main__ import main
from trainer.registry import (
    Registry,
    RegistryError,
    next_aliases,
    prune_plan,
    weights_version,
)
from worker.classifier import check_model_dir, model_ref
from worker.registry import verify


def test_version_is_the_id_the_worker_reports(tiny_model: Callable[..., Path]) -> None:
    folder = tiny_model(1)
    assert weights_version(folder) == model_ref(folder, check_model_dir(folder)).version


def test_register_copies_writes_a_manifest_and_is_a_no_op_the_second_time(
    tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    reg = Registry(tmp_path / "reg")
    first = reg.register(tiny_model(1))
    again = reg.register(tiny_model(1))
    assert first["registered"] and not again["registered"] and first["version"] == again["version"]
    v = first["version"]
    manifest = reg.manifest(v)
    assert manifest["labels"] == ["negative", "neutral", "positive"] and manifest["name"] == "tiny-bert"
    assert set(manifest["files"]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert verify(reg.root, v).name == "tiny-bert"  # the worker's reader accepts what the trainer wrote
    assert list((reg.root / "tmp").iterdir()) == []
    assert [e["action"] for e in reg.history()] == ["register"]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize(
    ("spoil", "needle"),
    [
        ("pickle", "only pickle weights"),
        ("labels", "id2label must name exactly"),
        ("tokenizer", "tokenizer does not load"),
        ("truncated", "not a complete safetensors file"),
        ("no_config", "no config.json"),
    ],
)
def test_register_refuses_a_folder_the_worker_would_refuse(
    tmp_path: Path, tiny_model: Callable[..., Path], spoil: str, needle: str
) -> None:
    folder = _copy(tiny_model(1), tmp_path / "bad")
    weights = folder / "model.safetensors"
    if spoil == "pickle":
        weights.rename(folder / "pytorch_model.bin")
    elif spoil == "labels":
        config = json.loads((folder / "config.json").read_text())
        config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
        (folder / "config.json").write_text(json.dumps(config))
    elif spoil == "tokenizer":
        for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            (folder / name).unlink(missing_ok=True)
    elif spoil == "truncated":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    else:
        (folder / "config.json").unlink()
    reg = Registry(tmp_path / "reg")
    with pytest.raises(RegistryError, match=needle):
        reg.register(folder)
    assert reg.versions() == []


def test_promote_and_rollback_move_both_aliases_and_log_each_change(
    tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    reg = Registry(tmp_path / "reg")
    a, b = reg.register(tiny_model(1))["version"], reg.register(tiny_model(2))["version"]
    assert reg.promote(a)["aliases"] == {"champion": a}
    assert reg.promote(b)["aliases"] == {"champion": b, "previous": a}
    assert not reg.promote(b)["changed"]
    assert reg.rollback()["aliases"] == {"champion": a, "previous": b}
    assert reg.rollback()["aliases"] == {"champion": b, "previous": a}
    assert [e["action"] for e in reg.history()] == ["register"] * 2 + ["promote"] * 2 + ["rollback"] * 2
    assert reg.manifest(b)["parent"] is None  # registered before a champion existed
    with pytest.raises(RegistryError, match="no version 'nope'"):
        reg.promote("nope")


def test_next_aliases_is_a_pure_rule() -> None:
    assert next_aliases({}, "promote", "a") == {"champion": "a"}
    assert next_aliases({"champion": "a"}, "promote", "b") == {"champion": "b", "previous": "a"}
    assert next_aliases({"champion": "a", "previous": "b"}, "rollback") == {"champion": "b", "previous": "a"}
    with pytest.raises(RegistryError, match="nothing to roll back"):
        next_aliases({"champion": "a"}, "rollback")


def _promote_many(root: str, versions: list[str], rounds: int) -> None:
    reg = Registry(root)
    for i in range(rounds):
        reg.promote(versions[i % len(versions)])


def test_concurrent_promotes_keep_one_valid_alias_file_and_every_change_logged(
    tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    reg = Registry(tmp_path / "reg")
    versions = [reg.register(tiny_model(s))["version"] for s in (1, 2)]
    ctx = multiprocessing.get_context("fork")  # the children only write files
    procs = [
        ctx.Process(target=_promote_many, args=(str(reg.root), versions[::step], 25)) for step in (1, -1)
    ]
    for p in procs:
        p.start()
    for _ in range(200):  # a reader never sees a partial file
        assert reg.aliases().get("champion") in (None, *versions)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    aliases = reg.aliases()
    assert aliases["champion"] in versions and aliases["previous"] in versions
    assert aliases["champion"] != aliases["previous"]
    moves = [e for e in reg.history() if e["action"] == "promote"]
    # Each logged move starts from the state the one before it left: no two promotes interleaved.
    for before, after in itertools.pairwise(moves):
        assert after["from"] == before["to"]
    assert moves[-1]["to"] == aliases
    assert [p.name for p in reg.root.iterdir() if p.name.startswith(".aliases")] == []


def test_prune_keeps_the_newest_and_every_aliased_version(
    tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    reg = Registry(tmp_path / "reg")
    versions = [reg.register(tiny_model(s))["version"] for s in (1, 2, 3)]
    reg.promote(versions[0])
    out = reg.prune(1)
    assert sorted(out["kept"]) == sorted([versions[0], versions[2]])
    assert out["removed"] == [versions[1]]
    assert reg.history()[-1]["action"] == "prune"


def test_prune_plan_never_removes_an_aliased_version() -> None:
    listed = [("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 4.0)]
    assert prune_plan(listed, {"a"}, 2) == ["b"]
    assert prune_plan(listed, {"a", "b"}, 1) == ["c"]
    assert prune_plan(listed, set(), 10) == []


def test_cli_prints_one_json_line_and_fails_in_one_line(
    tmp_path: Path, tiny_model: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    reg = str(tmp_path / "reg")
    main(["register", "--registry", reg, str(tiny_model(1))])
    version = json.loads(capsys.readouterr().out.strip())["version"]
    main(["promote", "--registry", reg, version])
    assert json.loads(capsys.readouterr().out)["aliases"] == {"champion": version}
    main(["registry", "--registry", reg])
    listing = json.loads(capsys.readouterr().out)
    assert listing["aliases"] == {"champion": version}
    assert [v["aliases"] for v in listing["versions"]] == [["champion"]]
    for args, needle in [
        (["rollback", "--registry", reg], "nothing to roll back"),
        (["promote", "--registry", str(tmp_path / "none"), version], "is not a model registry"),
        (["register", "--registry", reg, str(tmp_path / "missing")], "does not exist"),
        (["prune", "--registry", reg, "--keep", "0"], "must be >= 1"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("sentiment-train: error:") and needle in err[0], err
