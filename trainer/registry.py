"""The model registry: immutable version folders and two aliases in one file. The worker's only contract.

Layout (a folder; a shared volume in production)::

    DIR/versions/<version>/   a model folder as exported, plus manifest.json; never modified
    DIR/aliases.json          {"champion": version, "previous": version}, replaced whole by rename
    DIR/history.jsonl         one JSON line per registration, alias change and prune
    DIR/tmp/                  versions being copied; a crash leaves at most a folder here, never a version
    DIR/.lock                 flock() held while the aliases, the history or the versions change

version = the first 12 hex digits of sha256(name + bytes of each *.safetensors file, sorted by name): the id
the worker reports in every result, so a label names the weights that made it, and registering the same
weights twice is a no-op. A version folder appears only by rename, after its manifest (per-file sha256,
written last) is on disk, so a reader never sees a half-copied version.

Nothing here imports torch: register checks a folder as the worker would (safetensors weights whose headers
parse, config.json naming exactly negative/neutral/positive, a tokenizer that loads) without loading weights.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from trainer.models import sha256_file

LABELS = ("negative", "neutral", "positive")
ALIASES = ("champion", "previous")
MANIFEST = "manifest.json"
FORMAT = 1
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# transformers builds an empty tokenizer (a handful of special tokens) for a folder with none of these files.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model")


class RegistryError(ValueError):
    """A registry operation cannot be done; the message is one line for the user."""


# ------------------------------------------------------------------------------------------ pure helpers


def weights_version(folder: Path) -> str:
    """The worker's model version: first 12 hex of the sha256 over the *.safetensors files, sorted by name."""
    digest = hashlib.sha256()
    for w in sorted(folder.glob("*.safetensors")):
        digest.update(w.name.encode())
        with w.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


def next_aliases(aliases: dict[str, str], action: str, version: str | None = None) -> dict[str, str]:
    """The aliases after promote(version) or rollback; RegistryError when it cannot be done.

    promote: champion = version, previous = the old champion. rollback: champion and previous trade places,
    so a second rollback undoes the first.
    """
    champion = aliases.get("champion")
    if action == "promote":
        assert version is not None
        if version == champion:
            return dict(aliases)
        out = {"champion": version}
        if champion is not None:
            out["previous"] = champion
        return out
    if action == "rollback":
        previous = aliases.get("previous")
        if previous is None or champion is None:
            raise RegistryError("nothing to roll back to: the registry has no previous version")
        return {"champion": previous, "previous": champion}
    raise ValueError(f"unknown action {action!r}")


def prune_plan(versions: Sequence[tuple[str, float]], aliased: set[str], keep: int) -> list[str]:
    """Versions to remove: all but the `keep` newest (by registration time), never an aliased one."""
    newest = sorted(versions, key=lambda v: (v[1], v[0]), reverse=True)
    kept = {v for v, _ in newest[:keep]} | aliased
    return [v for v, _ in newest if v not in kept]


# ------------------------------------------------------------------------------------------ checks


def check_model_folder(folder: Path) -> list[str]:
    """Refuse what the worker would refuse; return the id2label names in id order."""
    if not folder.is_dir():
        raise RegistryError(f"model folder {folder} does not exist")
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise RegistryError(f"{folder} has no config.json, so it is not a model folder")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        if pickles:
            raise RegistryError(
                f"{folder} has only pickle weights ({', '.join(pickles)}); "
                "the registry takes safetensors only"
            )
        raise RegistryError(f"{folder} has no *.safetensors weights")
    for w in weights:
        _check_safetensors(w)
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"{config_path} is not valid JSON: {exc}") from None
    id2label = config.get("id2label") or {}
    names = [str(id2label[k]).strip().lower() for k in sorted(id2label, key=lambda k: int(k))]
    if sorted(names) != sorted(LABELS):
        raise RegistryError(
            f"{folder}: id2label must name exactly {', '.join(LABELS)}; got {names or 'nothing'}"
        )
    _check_tokenizer(folder)
    return names


def _check_safetensors(path: Path) -> None:
    """The header parses and the file holds every byte it announces (a truncated copy does not)."""
    try:
        with path.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 0 < size < 100 << 20:
                raise ValueError("bad header length")
            header = json.loads(f.read(size))
        end = max((int(t["data_offsets"][1]) for k, t in header.items() if k != "__metadata__"), default=0)
        if path.stat().st_size != 8 + size + end:
            raise ValueError(f"{path.stat().st_size} bytes, header says {8 + size + end}")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise RegistryError(f"{path} is not a complete safetensors file ({exc})") from None


def _check_tokenizer(folder: Path) -> None:
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise RegistryError(f"{folder}: the tokenizer does not load (none of {', '.join(TOKENIZER_FILES)})")
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise RegistryError(f"{folder}: the tokenizer does not load ({str(exc).splitlines()[0]})") from None


# ------------------------------------------------------------------------------------------ the registry


class Registry:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.aliases_path = self.root / "aliases.json"
        self.history_path = self.root / "history.jsonl"

    def _ensure(self) -> None:
        try:
            (self.root / "tmp").mkdir(parents=True, exist_ok=True)
            self.versions_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise RegistryError(f"cannot create registry {self.root}: {exc.strerror}") from None

    def _require(self) -> None:
        if not self.versions_dir.is_dir():
            raise RegistryError(f"{self.root} is not a model registry (no versions/ folder)")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---------------------------------------------------------------------------------------- reads

    def aliases(self) -> dict[str, str]:
        try:
            data = json.loads(self.aliases_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{self.aliases_path} is unreadable: {exc}") from None
        return {k: v for k, v in data.items() if k in ALIASES and isinstance(v, str)}

    def manifest(self, version: str) -> dict[str, Any]:
        path = self.versions_dir / version / MANIFEST
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RegistryError(f"no version {version!r} in {self.root}") from None
        except (OSError, ValueError) as exc:
            raise RegistryError(f"{path} is unreadable: {exc}") from None
        return data

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if (p / MANIFEST).is_file())

    def history(self) -> list[dict[str, Any]]:
        try:
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):  # a line cut by a crash mid-append
                out.append(json.loads(line))
        return out

    def describe(self) -> dict[str, Any]:
        self._require()
        aliases = self.aliases()
        versions = []
        for v in self.versions():
            m = self.manifest(v)
            versions.append(
                {
                    "version": v,
                    "name": m.get("name"),
                    "registered_at": m.get("registered_at"),
                    "parent": m.get("parent"),
                    "base_model": m.get("base_model"),
                    "metrics": m.get("metrics"),
                    "aliases": sorted(a for a, target in aliases.items() if target == v),
                }
            )
        versions.sort(key=lambda v: v["registered_at"] or "")
        history = self.history()
        return {"registry": str(self.root), "aliases": aliases, "versions": versions, "history": history}

    def verify(self, version: str) -> dict[str, Any]:
        """The manifest, after checking every file it lists against its sha256; RegistryError otherwise."""
        manifest = self.manifest(version)
        folder = self.versions_dir / version
        for rel, entry in manifest.get("files", {}).items():
            path = folder / rel
            if not path.is_file():
                raise RegistryError(f"version {version}: {rel} is missing")
            if sha256_file(path) != entry["sha256"]:
                raise RegistryError(f"version {version}: {rel} does not match its manifest sha256")
        return manifest

    # ---------------------------------------------------------------------------------------- writes

    def register(
        self,
        folder: str | os.PathLike[str],
        *,
        parent: str | None = None,
        hook: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Copy a model folder in as a new version; {"version", "registered": False when already there}.
        hook(point) is called once the copy is staged, before it is renamed into place (crash tests)."""
        src = Path(folder)
        labels = check_model_folder(src)
        version = weights_version(src)
        self._ensure()
        if (self.versions_dir / version / MANIFEST).is_file():
            return {"version": version, "registered": False, "path": str(self.versions_dir / version)}
        if parent is None:
            parent = self.aliases().get("champion")
        elif not (self.versions_dir / parent / MANIFEST).is_file():
            raise RegistryError(f"parent version {parent!r} is not in {self.root}")
        tmp = Path(tempfile.mkdtemp(prefix=f"{version}-", dir=self.root / "tmp"))
        try:
            staged = tmp / version
            shutil.copytree(src, staged, ignore=shutil.ignore_patterns(MANIFEST, "checkpoint-*"))
            if weights_version(staged) != version:
                raise RegistryError(f"{src} changed while it was being copied; register it again")
            manifest = _manifest(src, staged, version, labels, parent)
            _write_json(staged / MANIFEST, manifest)
            _fsync_tree(staged)
            _read_only(staged)
            if hook is not None:
                hook("registry_staged")
            with self._locked():
                target = self.versions_dir / version
                if target.exists():  # registered meanwhile by another process
                    return {"version": version, "registered": False, "path": str(target)}
                os.rename(staged, target)
                _fsync_dir(self.versions_dir)
                self._log({"action": "register", "version": version, "parent": parent, "source": str(src)})
        finally:
            _remove(tmp)
        return {"version": version, "registered": True, "path": str(self.versions_dir / version)}

    def promote(self, version: str) -> dict[str, Any]:
        self._require()
        self.manifest(version)  # exists, with a manifest; the worker checks the hashes before serving it
        return self._move("promote", version)

    def rollback(self) -> dict[str, Any]:
        self._require()
        return self._move("rollback")

    def _move(self, action: str, version: str | None = None) -> dict[str, Any]:
        with self._locked():
            before = self.aliases()
            after = next_aliases(before, action, version)
            if after != before:
                _write_json(self.aliases_path, after)
                _fsync_dir(self.root)
                self._log({"action": action, "from": before, "to": after})
        return {"action": action, "changed": after != before, "aliases": after}

    def prune(self, keep: int) -> dict[str, Any]:
        self._require()
        with self._locked():
            aliased = set(self.aliases().values())
            listed = [(v, self.versions_dir.joinpath(v, MANIFEST).stat().st_mtime) for v in self.versions()]
            removed = prune_plan(listed, aliased, keep)
            for v in removed:
                # Out of versions/ by one rename first, so a reader never sees a half-deleted version.
                doomed = Path(tempfile.mkdtemp(prefix=f"prune-{v}-", dir=self.root / "tmp"))
                os.rename(self.versions_dir / v, doomed / v)
                _remove(doomed)
            if removed:
                self._log({"action": "prune", "removed": removed, "keep": keep})
            for stale in (self.root / "tmp").iterdir():  # left by a crash mid-registration
                if time.time() - stale.stat().st_mtime > 3600:
                    _remove(stale)
        return {"removed": removed, "kept": self.versions()}

    def _log(self, entry: dict[str, Any]) -> None:
        line = json.dumps({"at": _now(), **entry}, sort_keys=True) + "\n"
        with self.history_path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------ internals


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _manifest(src: Path, staged: Path, version: str, labels: list[str], parent: str | None) -> dict[str, Any]:
    files = {
        str(p.relative_to(staged)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(staged.rglob("*"))
        if p.is_file()
    }
    args = _read_json(staged / "training_args.json")
    metrics = _read_json(staged / "metrics.json")
    config = args.get("config", {})
    validation = config.get("validation") or []
    # A folder from before several validation sets were allowed names one as a string.
    data = [*config.get("train", []), *([validation] if isinstance(validation, str) else validation)]
    return {
        "format": FORMAT,
        "version": version,
        "name": src.resolve().name,
        "registered_at": _now(),
        "source": str(src.resolve()),
        "parent": parent,
        "labels": labels,
        "base_model": config.get("base_model"),
        "max_length": config.get("max_length"),
        "truncation": config.get("truncation", "right"),
        "training_data": [_data_ref(d) for d in data],
        "metrics": metrics.get("validation"),
        "files": files,
    }


def _data_ref(ref: str) -> dict[str, Any]:
    path = Path(ref)
    if path.is_file():
        return {"path": str(path.resolve()), "sha256": sha256_file(path), "bytes": path.stat().st_size}
    return {"path": ref, "sha256": None}  # a hub set, or a file no longer here


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write through a temp file in the same folder and rename it over the target: readers see old or new."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
    for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        _fsync_dir(d)


def _read_only(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            p.chmod(0o444)


def _remove(path: Path) -> None:
    # Files are read-only but their folders are not, so rmtree can unlink them.
    shutil.rmtree(path, ignore_errors=True)
