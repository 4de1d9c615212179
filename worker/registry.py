"""Read a model registry (written by ``sentiment-train register``/``promote``): resolve an alias, verify.

The registry's files are the contract between trainer and worker (they share no code)::

    DIR/aliases.json               {"champion": "<version>", "previous": "<version>"}, replaced by rename
    DIR/versions/<version>/        an exported model folder plus manifest.json, never modified
        manifest.json              {"version", "name", "labels", "files": {relpath: {"sha256", "bytes"}}, ...}

A version is served only after every file its manifest lists matches its sha256 and the weights hash to the
version's own name (the same id the worker reports in every result).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


class RegistryError(Exception):
    """The registry, alias or version cannot be used; the message is one line for the operator."""


@dataclass(frozen=True, slots=True)
class Version:
    version: str
    name: str  # the model folder's name when it was registered: results report it
    path: Path


def resolve(registry: Path, alias: str) -> str:
    """The version an alias points at; RegistryError when the registry or the alias is missing."""
    path = registry / "aliases.json"
    try:
        aliases = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not (registry / "versions").is_dir():
            raise RegistryError(f"{registry} is not a model registry (no versions/ folder)") from None
        raise RegistryError(f"registry {registry} has no aliases yet: promote a version first") from None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read {path}: {exc}") from None
    version = aliases.get(alias) if isinstance(aliases, dict) else None
    if not isinstance(version, str) or not version:
        raise RegistryError(f"registry {registry} has no alias {alias!r}")
    return version


def verify(registry: Path, version: str) -> Version:
    """Check a version folder against its manifest; RegistryError naming the first thing that is wrong."""
    folder = registry / "versions" / version
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RegistryError(f"version {version} is not in {registry} (no manifest)") from None
    except (OSError, ValueError) as exc:
        raise RegistryError(f"version {version}: unreadable manifest: {exc}") from None
    files = manifest.get("files")
    if manifest.get("version") != version or not isinstance(files, dict) or not files:
        raise RegistryError(f"version {version}: the manifest does not describe this version")
    for rel, entry in files.items():
        path = folder / rel
        if not path.is_file():
            raise RegistryError(f"version {version}: {rel} is missing")
        if path.stat().st_size != entry.get("bytes") or _sha256(path) != entry.get("sha256"):
            raise RegistryError(f"version {version}: {rel} does not match the manifest")
    unlisted = sorted(p.name for p in folder.glob("*.safetensors") if p.name not in files)
    if unlisted:
        raise RegistryError(f"version {version}: weights not in the manifest: {', '.join(unlisted)}")
    return Version(version=version, name=str(manifest.get("name") or version), path=folder)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
