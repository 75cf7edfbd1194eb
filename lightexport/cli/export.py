"""``lightexport export SOURCE --format FORMAT`` and its aliases, generated from the format records.

One command serves every format: its formats, suffixes, precisions and per-format options
come from :mod:`lightexport.backends`, so a new format is a record, not a new command.
A format whose record names a command of its own (``onnx``, ``openvino``, ``trt``) gets the same
command with the format fixed, listing only that format's options. An option that belongs to
other formats is refused with the formats it belongs to, not silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from lightexport.backends import BACKENDS, Backend, Option, is_interchange
from lightexport.cli.common import (
    MODEL_KEYS,
    bounded,
    guard,
    handle_errors,
    json_option,
    load_source,
    model_options,
    print_export,
    run_parity,
    write_json,
)
from lightexport.errors import ParityFailure, UsageError
from lightexport.options import AUTO_TARGET, DEFAULT_KEEP, ExportOptions
from lightexport.precision import Precision

PRECISION_FLAGS = {Precision.FP16: "--fp16", Precision.BF16: "--bf16", Precision.INT8: "--int8"}
_GENERIC_HELP = {Precision.FP16: "fp16 (what it means per format: see the list above).",
                 Precision.BF16: "bf16 execution (OpenVINO).", Precision.INT8: "int8 (needs --calib DIR)."}


def _click_option(option: Option, formats: list[str], show_default: bool) -> Callable:
    """A click option for a record's option; its default stays None so only what the user gave reaches the API."""
    where = "" if len(formats) == len(BACKENDS) else f" [{', '.join(formats)}]"
    help_text = option.help + where
    default_text = None
    if show_default and option.default is not None and option.kind != "flag":
        default_text = str(option.default)
    flag = option.cli_flag
    if option.kind == "flag":
        return click.option(flag, option.name, is_flag=True, flag_value=not option.inverted, default=None,
                            help=help_text)
    kinds = {"int": click.IntRange(option.low, option.high), "float": click.FloatRange(option.low, option.high),
             "str": str, "path": click.Path(dir_okay=False), "choice": click.Choice(option.choices)}
    return click.option(flag, option.name, type=kinds[option.kind], default=None, help=help_text,
                        metavar=option.metavar, show_default=default_text)


def _format_options(backends: list[Backend], show_default: bool) -> tuple[list[Callable], dict[str, list[str]]]:
    """One click option per distinct option name among ``backends``, and which formats take each."""
    owners: dict[str, list[str]] = {}
    first: dict[str, Option] = {}
    for backend in backends:
        for option in backend.options:
            if option.cli_flag is None:
                continue
            owners.setdefault(option.name, []).append(backend.name)
            first.setdefault(option.name, option)
    return [_click_option(first[n], owners[n], show_default) for n in first], owners


def _targets() -> str:
    """``auto``'s cosine target, with the formats whose records set their own (``int8_auto_target``)."""
    own = [f"{b.name} {b.int8_auto_target}" for b in BACKENDS.values() if b.int8_auto_target is not None]
    return f"{AUTO_TARGET}" + (f" ({', '.join(own)})" if own else "")


def _common_options(precisions: list[Precision], precision_help: dict[Precision, str]) -> list[Callable]:
    return [
        click.option("-o", "--output", type=click.Path(dir_okay=False),
                     help="Output file (default: MODEL[_PRECISION].SUFFIX in the working directory)."),
        click.option("--fuse", is_flag=True, help="Apply every reparameterization pass before export."),
        click.option("--input-size", type=bounded("input_size"), help="Square input side (default: the model's)."),
        click.option("--batch", type=bounded("batch"), default=1, show_default=True),
        click.option("--dynamic", is_flag=True, help="Dynamic batch, height and width."),
        *[click.option(PRECISION_FLAGS[p], p.value, is_flag=True, help=precision_help.get(p, "")) for p in precisions],
        click.option("--calib", type=click.Path(file_okay=False), help="Folder of representative images for --int8."),
        click.option("--calib-size", type=bounded("calib_size"), default=300, show_default=True,
                     help="Number of calibration images (fewer if the folder holds fewer)."),
        click.option("--int8-keep", metavar="N|auto|lean|MODULES", default=str(DEFAULT_KEEP),
                     help="Layers int8 leaves in float: the first N convs, 'auto' (the fewest whose int8 model "
                          f"reaches an output cosine of {_targets()} on calibration images), 'lean' (auto's rule "
                          f"over {DEFAULT_KEEP} and none: {DEFAULT_KEEP} unless keeping none does as well) or "
                          "comma-separated module names. Default: " + ", ".join(
                              [str(DEFAULT_KEEP)] + [f"{b.name} {b.int8_keep_default}" for b in BACKENDS.values()
                                                     if b.int8_keep_default != DEFAULT_KEEP]) + "."),
        click.option("--check", is_flag=True, help="Run parity against the unfused PyTorch model after export."),
    ]


def _load_source(source: str, model: dict[str, Any], backend: Backend):
    """An ONNX file passes through as a path (formats that convert ONNX); anything else names a model to load."""
    if is_interchange(source):
        if not backend.accepts_onnx:
            raise UsageError(f"{backend.name} export takes a PyTorch model (a registered name, a checkpoint or your "
                             f"code), not the ONNX file {source}")
        if any(model[k] for k in MODEL_KEYS if k != "trust_checkpoint"):
            raise UsageError("--weights, --num-classes, --features and the model-from-code options apply to PyTorch "
                             "models, not to an ONNX input")
        return Path(source)
    return load_source(source, model)


def run_export(fmt: str, source: str, values: dict[str, Any], given: set[str], owners: dict[str, list[str]]) -> None:
    """The one export flow behind every export command: validate, load, guard, export, show, check, report."""
    from lightexport import api
    from lightexport.backends import get_backend

    backend = get_backend(fmt)
    foreign = sorted(n for n in given if n in owners and n not in {o.name for o in backend.options})
    if foreign:
        name = foreign[0]
        flag = next(o.cli_flag for b in BACKENDS.values() for o in b.options if o.name == name)
        raise UsageError(f"{flag} applies to --format {', '.join(owners[name])}, not {backend.name}")
    chosen = [p for p in PRECISION_FLAGS if values.pop(p.value, False)]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(PRECISION_FLAGS[p] for p in chosen)} conflict: an artifact has one precision")
    model = {k: values.pop(k) for k in MODEL_KEYS}
    check, json_out = values.pop("check"), values.pop("json_out")
    options = {k: v for k, v in values.items() if k not in owners or k in given}
    options["precision"] = chosen[0] if chosen else Precision.FP32
    if "int8_keep" not in given:
        options.pop("int8_keep", None)
    if "batch" not in given:  # a user's --input-shape, or an ONNX source, says the batch; else 1
        options.pop("batch", None)
    ExportOptions.build(backend, **options)  # every option checked before the model loads
    loaded = _load_source(source, model, backend)
    outputs, inputs = api.planned_export(loaded, fmt, **options)
    guard([*outputs, ("--json", json_out)], inputs)
    result = api.export(loaded, fmt, **options)
    print_export(result)
    payload: dict[str, Any] = {"export": result.to_dict()}
    if not result.built:
        write_json(json_out, {"plan": result.plan})
        result.raise_problem()
        return
    report = None
    if check:
        reference = loaded if not isinstance(loaded, Path) else api.reference_for(
            loaded, weights=model["weights"], trust=model["trust_checkpoint"])
        report = run_parity(result.path, reference, precision=result.precision)
        payload["parity"] = report.to_dict()
    write_json(json_out, payload)
    if report is not None and not report.passed:
        raise ParityFailure(f"{result.path} fails parity: {'; '.join(report.all_failures)}")


def _formats_help(backends: list[Backend]) -> str:
    lines = ["\b", "Formats (--format), from lightexport's format table:"]
    for b in backends:
        flags = ", ".join(o.cli_flag for o in b.options if o.cli_flag)
        precisions = "/".join(p.value for p in b.precisions)
        lines.append(f"  {b.name:<10} {', '.join(b.suffixes):<16} {precisions:<20} {b.description}")
        if flags:
            lines.append(f"  {'':<10} options: {flags}")
    return "\n".join(lines)


def make_export_command(fmt: str | None, name: str, summary: str, examples: list[str]) -> click.Command:
    """The export command for one format (an alias: ``onnx``), or for all of them (``export --format``)."""
    backends = [BACKENDS[fmt]] if fmt else list(BACKENDS.values())
    precisions = [p for p in PRECISION_FLAGS if any(p in b.precisions for b in backends)]
    precision_help = backends[0].precision_help if fmt else _GENERIC_HELP
    format_options, owners = _format_options(backends, show_default=fmt is not None)

    def command(source: str, **values: Any) -> None:
        ctx = click.get_current_context()
        given = {k for k in values if ctx.get_parameter_source(k) not in (None, click.core.ParameterSource.DEFAULT)}
        run_export(values.pop("format", None) or fmt, source, values, given, owners)

    doc = [summary, "", _formats_help(backends) if not fmt else "", "", "\b", "Examples:",
           *(f"  {e}" for e in examples)]
    command.__doc__ = "\n".join(doc)
    wrapped = handle_errors(command)
    decorators = [click.argument("source"), *([] if fmt else [
        click.option("-f", "--format", "format", required=True, type=click.Choice(list(BACKENDS)),
                     help="The artifact format (see the list above).")]),
        model_options, *_common_options(precisions, precision_help), *format_options, json_option]
    for decorator in reversed(decorators):
        wrapped = decorator(wrapped)
    return click.command(name, help=command.__doc__)(wrapped)


_EXPORT_EXAMPLES = ["lightexport export fasternet_s --format onnx --fuse --check",
                    "lightexport export mobilenet_v2 --weights mv2.pth --fuse --format openvino --int8 --calib photos/",
                    "lightexport export t0.onnx --format tensorrt --fp16 --dry-run"]
_made: dict[tuple, dict[str, click.Command]] = {}


def export_commands() -> dict[str, click.Command]:
    """``export`` and the aliases, made for the formats registered now (cached while the table is unchanged)."""
    key = tuple(id(b) for b in BACKENDS.values())
    if key not in _made:
        commands = {"export": make_export_command(None, "export", "Export SOURCE (a registered model name, a "
                                                  "checkpoint, or an ONNX file) to --format.", _EXPORT_EXAMPLES)}
        for record in BACKENDS.values():  # formats with a command of their own (lightexport onnx, trt)
            if record.command:
                source = "a registered model name, a checkpoint" + (", or an ONNX file" if record.accepts_onnx else "")
                commands[record.command] = make_export_command(
                    record.name, record.command, f"Export SOURCE ({source}) to {record.description}.",
                    list(record.examples))
        _made.clear()
        _made[key] = commands
    return _made[key]
