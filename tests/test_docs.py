"""The README and docs/ stay short and truthful: every command they show exists with the options
shown, and every file they link to is there."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from textitsr.cli import app

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_README_LINES = 300

#: Documents that other work adds; linked already, checked as soon as they exist.
LINKED_AHEAD = frozenset({"docs/architecture.md", "docs/reliability.md"})

_FENCE = re.compile(r"```(?:bash|sh)?\n(.*?)```", re.S)
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _shell_lines(text: str) -> list[str]:
    """Commands in the fenced blocks, continuation lines joined, comments dropped."""
    lines: list[str] = []
    for block in _FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.split(" #")[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line]


def _textitsr_calls(text: str) -> list[list[str]]:
    """Each `textitsr SUBCOMMAND ...` call shown, as its words (brackets of optional parts removed)."""
    calls = []
    for line in _shell_lines(text):
        words = line.replace("[", " ").replace("]", " ").split()
        for i, word in enumerate(words):
            if word.endswith("textitsr") and i + 1 < len(words) and not words[i + 1].startswith("-"):
                calls.append(words[i + 1 :])
    return calls


def _options(command: Any) -> set[str]:
    """Every spelling of the command's options (`--kind` and `--source`, `--resume`/`--no-resume`)."""
    return {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines (at most {MAX_README_LINES})"


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_every_command_shown_exists_with_its_options(doc: Path) -> None:
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    calls = _textitsr_calls(doc.read_text(encoding="utf-8"))
    for words in calls:
        name, args = words[0], words[1:]
        assert name in commands, f"{doc.name}: `textitsr {name}` is not a command"
        known = _options(commands[name])
        for arg in args:
            if arg.startswith("--"):
                assert arg.split("=")[0] in known, f"{doc.name}: `textitsr {name}` has no option {arg}"
            if arg in ("&", "|", "&&", ";"):
                break


def test_the_readme_shows_the_main_commands() -> None:
    shown = {words[0] for words in _textitsr_calls(README.read_text(encoding="utf-8"))}
    assert {"demo", "search", "serve", "api", "ingest", "index", "train", "evaluate", "check"} <= shown


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.name)
def test_every_linked_file_exists(doc: Path) -> None:
    for target in _LINK.findall(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target):
            continue
        path = (doc.parent / target).resolve()
        relative = path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else str(path)
        if relative in LINKED_AHEAD and not path.exists():
            continue
        assert path.exists(), f"{doc.name} links to {target}, which does not exist"


def test_results_files_state_date_commit_machine_and_load_at_the_top() -> None:
    for results in sorted((REPO / "benchmarks" / "results").glob("*.md")):
        top = " ".join(results.read_text(encoding="utf-8").split("\n\n")[:2])
        for field in ("Date:", "commit:", "machine:", "load:"):
            assert field in top, f"{results.name}: no '{field}' at the top"


def test_no_issue_numbers_or_process_words_in_user_documents() -> None:
    pattern = re.compile(r"\bissue \d+|\bhelpers?\b|\bsessions?\b|this (afternoon|morning|evening)", re.I)
    results = sorted((REPO / "benchmarks" / "results").glob("*.md"))
    for doc in [README, *DOCS, *results]:
        found = pattern.search(doc.read_text(encoding="utf-8"))
        assert found is None, f"{doc.relative_to(REPO)}: '{found.group(0)}'"
