"""The README and the docs site: a short README whose links resolve, an MkDocs site that builds with --strict,
and every command they show is one that the CLIs, the Makefile, scripts/stack or compose accept."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from trainer.__main__ import UsageError
from trainer.__main__ import build_parser as train_parser
from worker.__main__ import build_parser as worker_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
# Example values for the placeholders the reference blocks use.
PLACEHOLDERS = {
    "CONVERSATION_ID": "c-42",
    "NAME": "shop",
    "H": "127.0.0.1",
    "P": "8081",
    "VERSION": "3f9c2a71b0de",
}


def test_readme_is_short_and_its_links_resolve() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "make demo" in text and "make test" in text
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert links
    for link in links:
        if not link.startswith("http"):
            assert (ROOT / link).exists(), link


def test_mkdocs_builds_strict_with_every_page_in_the_nav(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = {next(iter(entry.values())) for entry in config["nav"]}
    assert in_nav == {p.name for p in DOCS.glob("*.md")}
    assert {"Model registry": "registry.md"} in config["nav"]
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "site" / "api" / "index.html").is_file()
    assert (tmp_path / "site" / "img" / "dashboard.png").is_file()


def shown_commands() -> Iterator[tuple[str, str]]:
    """(page, command) for each command in the pages' code blocks (continuations joined, comments cut)."""
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.DOTALL):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"\s+#\s.*$", "", line).strip()
                for command in line.split("&&"):
                    if command.strip():
                        yield page.name, " ".join(command.split())


def variants(command: str) -> list[list[str]]:
    """The command without its [optional] parts, and with them (first choice of a|b, placeholders filled)."""
    bare = re.sub(r"\s*\[[^\]]*\]", "", command)
    full = re.sub(r"\[([^\]]*)\]", r"\1", command)
    out = []
    for text in (bare, full):
        words = [PLACEHOLDERS.get(w, w.split("|")[0] if "|" in w else w) for w in shlex.split(text)]
        out.append(words)
    return out


def check_worker(args: list[str]) -> None:
    try:
        worker_parser().parse_args(args)
    except SystemExit as exc:
        pytest.fail(f"sentiment-worker rejects {args}: exit {exc.code}")


def check_train(args: list[str]) -> None:
    try:
        train_parser().parse_args(args)
    except UsageError as exc:
        pytest.fail(f"sentiment-train rejects {args}: {exc}")


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.MULTILINE))


def stack_commands() -> set[str]:
    text = (ROOT / "worker" / "stack" / "stack.sh").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z-]+)\)", text, re.MULTILINE))


def compose_names() -> tuple[set[str], set[str]]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    return set(services), {p for s in services.values() for p in s.get("profiles", [])}


def check(page: str, words: list[str]) -> bool:
    """Check one command; False when it is not one this test knows (the caller counts those)."""
    while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # VAR=value prefixes
        words = words[1:]
    head, args = words[0], words[1:]
    if head in ("sentiment-worker", ".venv/bin/sentiment-worker"):
        check_worker(args)
    elif head in ("sentiment-train", ".venv/bin/sentiment-train"):
        check_train(args)
    elif head == "make":
        targets = [a for a in args if "=" not in a]
        assert set(targets) <= make_targets(), (page, words)
    elif head in ("scripts/stack", "sentiment-stack"):
        assert args[0] in stack_commands(), (page, words)
    elif head == ".venv/bin/python" and args[0] == "-m":
        sys.path.insert(0, str(ROOT))
        try:
            assert importlib.util.find_spec(args[1]) is not None, (page, words)
        finally:
            sys.path.remove(str(ROOT))
    elif head == ".venv/bin/pytest":
        assert all((ROOT / a).exists() for a in args if not a.startswith("-") and a != "integration"), words
    elif head == "docker" and args[0] == "compose":
        services, profiles = compose_names()
        rest = args[1:]
        for flag in ("--profile",):
            while flag in rest:
                i = rest.index(flag)
                assert rest[i + 1] in profiles, (page, words)
                del rest[i : i + 2]
        named = [a for a in rest[1:] if not a.startswith("-")]
        assert set(named) <= services, (page, words)
    elif head.startswith(("bench/", "scripts/")):
        assert (ROOT / head).is_file(), (page, words)
    elif head in ("source", "curl"):
        pass  # shell plumbing; the API tests make the same requests with httpx
    else:
        return False
    return True


def test_every_command_the_docs_show_is_accepted() -> None:
    unknown = []
    seen = 0
    for page, command in shown_commands():
        for words in variants(command):
            if not check(page, words):
                unknown.append((page, command))
        seen += 1
    assert seen > 40
    assert unknown == [], "commands this test cannot check: add a rule, or do not show them"
