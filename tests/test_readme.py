"""Issue #11 item 24: every README snippet runs as written, or at least names real commands and options.

Python blocks run in a fresh interpreter in an empty folder (they must create what they use).
Shell blocks are too costly to run in full (an export, a suite, a Triton server); each
``lightexport`` command in them is parsed by the CLI itself (its subcommand, every option,
option values such as choices and ranges), each ``python SCRIPT`` has its options checked
against the script's ``--help``, and files the commands build from (Dockerfiles) must exist.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from lightexport.cli import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", README, re.S | re.M)]
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang in ("bash", "sh")]


def _commands(code: str) -> list[list[str]]:
    """Each simple command of a shell block, as words (comments dropped, && and line continuations split)."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in ("&&", ";", "||"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(word)
    return commands


def test_readme_has_snippets():
    assert len(PYTHON) >= 2 and len(SHELL) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("code", PYTHON, ids=[f"python{i}" for i in range(len(PYTHON))])
def test_python_snippets_run_as_written(code, tmp_path):
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _check_lightexport(words: list[str]) -> None:
    group_ctx = cli.make_context("lightexport", [], resilient_parsing=True)
    name, rest = words[1], words[2:]
    command = cli.get_command(group_ctx, name)
    assert command is not None, f"lightexport has no command {name!r}: {' '.join(words)}"
    try:
        command.make_context(name, list(rest), parent=group_ctx)  # parses and validates; runs nothing
    except click.exceptions.Exit:
        pass
    except click.UsageError as exc:
        raise AssertionError(f"{' '.join(words)}: {exc.format_message()}") from exc


def _check_script(words: list[str]) -> None:
    script = ROOT / words[1]
    assert script.is_file(), f"{words[1]} does not exist"
    help_text = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True,
                               timeout=120).stdout
    for word in words[2:]:
        if word.startswith("-"):
            assert word.split("=")[0] in help_text, f"{words[1]} has no option {word}"


@pytest.mark.parametrize("code", SHELL, ids=[f"shell{i}" for i in range(len(SHELL))])
def test_shell_snippets_name_real_commands_and_options(code):
    for words in _commands(code):
        if words[0] == "lightexport":
            _check_lightexport(words)
        elif words[0] in ("python", "python3") and words[1].endswith(".py"):
            _check_script(words)
        elif words[0] == "docker" and "-f" in words:
            assert (ROOT / words[words.index("-f") + 1]).is_file()
