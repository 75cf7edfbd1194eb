"""The ``lightexport`` command: options in, calls into the library, tables and exit codes out.

No logic lives here beyond turning options into arguments: the export commands are generated
from the format records (:mod:`lightexport.cli.export`), the others parse and print
(:mod:`lightexport.cli.commands`). Every user mistake arrives as a ``LightExportError`` and
leaves as one line on stderr with a distinct exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import click

from lightexport import __version__
from lightexport.cli.commands import arm64_setup_cmd, bench_cmd, list_cmd, parity_cmd, suite_cmd, triton_cmd
from lightexport.cli.common import PARITY_INPUTS, console, err_console
from lightexport.cli.export import export_commands


class Commands(click.Group):
    """The export commands are made from the format table when they are looked up, not at import: a format
    registered later (a plug-in, see ``lightexport.backends.load_plugins``) has its ``--format`` entry, its
    options and its help like the built-in ones."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return export_commands().get(name) or super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *export_commands()})


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="lightexport")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
def cli(debug: bool) -> None:
    """Export lightweight vision backbones to verified inference artifacts, and prove parity.

    \b
    Examples:
      lightexport list
      lightexport onnx fasternet_s --fuse --check
      lightexport export mobilenet_v2 --format openvino --fuse --check
      lightexport parity fasternet_s.onnx
    """


for _command in (list_cmd, parity_cmd, triton_cmd, suite_cmd, arm64_setup_cmd, bench_cmd):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="lightexport")


__all__ = ["PARITY_INPUTS", "cli", "console", "err_console", "main"]
