"""What every command shares: the consoles, one-line errors with their exit codes, bounded option types,
the model options, the output guard for ``--json``, and the tables of an export.

Nothing here imports PyTorch or a runtime: ``lightexport --help`` stays fast on any machine.
"""

from __future__ import annotations

import functools
import json
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lightexport.errors import LightExportError
from lightexport.options import BOUNDS

# lightexport.parity.inputs.PARITY_INPUTS, repeated so that --help does not import torch (a test keeps them equal)
PARITY_INPUTS = 8

# Pipes and CI logs get a fixed, wide layout instead of rich's 80-column fallback.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def fail(message: str, code: int) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(code)


class Terminated(BaseException):
    """SIGTERM (timeout, docker stop, CI cancellation) unwinds like Ctrl-C, so staging folders are removed."""


def _terminate(signum, frame) -> None:
    raise Terminated


_shown: set[str] = set()


def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    text = str(message)
    if text in _shown:  # the same warning from two steps of one command (calibration read twice) is said once
        return
    _shown.add(text)
    err_console.print(f"[yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn library errors into one-line messages and their exit codes, and warnings into one line each."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        debug = click.get_current_context().find_root().params.get("debug", False)
        if not debug:
            warnings.showwarning = _warn_one_line
        _shown.clear()
        previous = signal.signal(signal.SIGTERM, _terminate)
        try:
            return fn(*args, **kwargs)
        except LightExportError as exc:
            if debug:
                raise
            fail(str(exc), int(exc.exit_code))
        except KeyboardInterrupt as exc:
            fail(f"interrupted; {_kept(exc)}", 130)
        except Terminated as exc:
            fail(f"terminated (SIGTERM); {_kept(exc)}", 143)
        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def _kept(exc: BaseException) -> str:
    """What an interrupted command kept: the note it added (the suite's partial report), else nothing."""
    notes = getattr(exc, "__notes__", None)
    return notes[-1] if notes else "no partial output was kept"


def bounded(name: str) -> click.IntRange:
    """The CLI type of an integer option: its range from :data:`lightexport.options.BOUNDS`."""
    low, high = BOUNDS[name]
    return click.IntRange(low, high)


def json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "json_out", type=click.Path(dir_okay=False),
                        help="Write the report as JSON (checked before any work).")(fn)


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that builds a PyTorch model shares (a registered model's, then a user's model's)."""
    options = [
        click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint: official, timm, or wrapped."),
        click.option("--trust-checkpoint", is_flag=True,
                     help="Allow full unpickling (can run code from the file): whole-model checkpoints need it."),
        click.option("--num-classes", type=bounded("num_classes"),
                     help="Classifier width (default: from the checkpoint, else 1000)."),
        click.option("--features", is_flag=True, help="Backbone mode: export the four normalized feature maps."),
        click.option("--model-arg", "model_args", multiple=True, metavar="KEY=VALUE",
                     help="An argument of your factory (file.py:factory), a Python literal; repeat per argument."),
        click.option("--input-shape", metavar="NxCxHxW",
                     help="Your model's input (default: its input_shape attribute), e.g. 1x3x640x640."),
        click.option("--preprocess", type=click.Choice(["imagenet", "unit", "none"]),
                     help="Your model's input: ImageNet mean/std, [0, 1] pixels (YOLO), or not an image "
                          "(default: its preprocess attribute, else imagenet)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def load_source(source: str, model: dict[str, Any]):
    """The PyTorch model the model options describe (see :func:`model_options`)."""
    from lightexport.loading import load_model
    from lightexport.usercode import parse_model_args

    return load_model(source, model["weights"], num_classes=model["num_classes"], features=model["features"],
                      trust=model["trust_checkpoint"], model_args=parse_model_args(model["model_args"]) or None,
                      input_shape=model["input_shape"], preprocess=model["preprocess"])


MODEL_KEYS = ("weights", "trust_checkpoint", "num_classes", "features", "model_args", "input_shape", "preprocess")


def guard(outputs: Sequence[tuple[str, str | Path | None]], inputs: Sequence[tuple[str, str | Path | None]] = ()
          ) -> None:
    """The output guard (:func:`lightexport.fileio.guard_outputs`) over the outputs that are given."""
    from lightexport.fileio import guard_outputs

    guard_outputs([(role, path) for role, path in outputs if path is not None], inputs)


def write_json(path: str | None, payload: dict) -> None:
    if path:
        from lightexport.fileio import write_text

        write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError


def print_export(result) -> None:
    """What an export wrote (files, size, precision, time, ops, notes), or what a plan found."""
    if not result.built:
        for line in result.plan_lines:
            # soft_wrap: never break a line at the terminal's width, so a printed command copies whole
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("[bold]file[/]", ", ".join(str(f) for f in result.files or [result.path]))
    table.add_row("[bold]size[/]", human_size(result.size_bytes))
    table.add_row("[bold]precision[/]", str(result.precision))
    table.add_row("[bold]time[/]", f"{result.seconds:.2f} s")
    if result.op_histogram:
        ops = ", ".join(f"{op} {n}" for op, n in result.op_histogram.most_common())
        table.add_row("[bold]ops[/]", ops)
    for note in result.notes:
        table.add_row("", f"[dim]{escape(note)}[/]")
    console.print(table)


def run_parity(artifact: Path, reference, inputs: int = PARITY_INPUTS, precision: str | None = None,
               threads: int | None = None, seed: int = 0, images: int | None = None):
    from lightexport.api import verify

    report = verify(artifact, reference, inputs=inputs, images=images, precision=precision, threads=threads,
                    seed=seed)
    report.render(console)
    return report
