"""The ``lightexport`` command: options in, calls into the library, tables and exit codes out.

No logic lives here beyond turning options into arguments: the export commands are generated
from the format records (:mod:`lightexport.cli.export`), the others parse and print
(:mod:`lightexport.cli.commands`). Every user mistake arrives as a ``LightExportError`` and
leaves as one line on stderr with a distinct exit code; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys

import click

from lightexport import __version__
from lightexport.cli.commands import arm64_setup_cmd, bench_cmd, list_cmd, parity_cmd, suite_cmd, triton_cmd
from lightexport.cli.common import PARITY_INPUTS, console, err_console
from lightexport.cli.export import export_commands
from lightexport.errors import did_you_mean

#: click 8.2's error for a group called with nothing (its message is the help); older clicks print the help themselves
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


class Commands(click.Group):
    """The export commands are made from the format table when they are looked up, not at import: a format
    registered later (a plug-in, see ``lightexport.backends.load_plugins``) has its ``--format`` entry, its
    options and its help like the built-in ones."""

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return export_commands().get(name) or super().get_command(ctx, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *export_commands()})

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError:
            if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
                raise click.UsageError(f"no command {args[0]!r}{did_you_mean(args[0], self.list_commands(ctx))} "
                                       f"(commands: {', '.join(self.list_commands(ctx))})", ctx) from None
            raise

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """click's own usage errors (a bad choice, a missing argument) as one line, like lightexport's: click
        prints them as a usage block, a hint and the error, four lines a script's log has to piece together."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except _NO_ARGS as exc:  # bare `lightexport`: the help itself, as click shows it
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


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
