"""The suite's progress on a terminal: one line per artifact build, then a bar over the cells naming the current one.

The bar is live only while the profile workers run (their output is piped, so nothing else
writes to the terminal then); during the builds NNCF draws its own rich bars, which would
fight a live bar of ours, so each build is announced by a plain line above them instead.
Piped, there is no bar at all: a line per build and per cell, and NNCF's bars are dropped.
"""

from __future__ import annotations

import contextlib
import os

from rich.console import Console


class SuiteProgress:
    def __init__(self, cells: int, console: Console, err_console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console, self.err_console = console, err_console
        self.tty = err_console.is_terminal
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=err_console, transient=True, disable=not self.tty)
        self.cells, self.done, self.task = cells, 0, None

    def __enter__(self) -> SuiteProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def step(self, text: str) -> None:
        if text.startswith("cell") and self.tty:
            if self.task is None:
                self.task = self.progress.add_task(text, total=self.cells, completed=self.done)
                self.progress.start()
            self.progress.update(self.task, description=text)
        else:
            self.err_console.print(text, markup=False, highlight=False, soft_wrap=True)

    def result(self, _result: dict) -> None:
        self.done += 1
        if self.task is not None:
            self.progress.update(self.task, completed=self.done)

    def quiet_third_party(self):
        """Piped output gets no bars: NNCF's (drawn on stdout by rich) go to /dev/null."""
        if self.tty and self.console.is_terminal:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
        return stack
