"""One options record for every export, validated once at the door, and every number option's range.

``api.export(model, "onnx", fusee=True)`` and ``lightexport onnx --fp16 --int8`` are user
mistakes, not tracebacks: an unknown option is a usage error naming the close match, and
conflicting or out-of-range values are refused before any work starts. Which options a
format takes beyond the common ones, with their types and ranges, is data in its backend
record; the record built here is what the exporter receives (``exporter(source, opts)``).

The ranges of every number a user can give (here and in the CLI's types) live in
:data:`BOUNDS`, so a count of 0, a negative seed or a billion classes is refused in one
place with one sentence, before torch or NumPy sees it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from lightexport.backends import DEFAULT_KEEP, Backend, artifact_path  # DEFAULT_KEEP: most formats' --int8-keep
from lightexport.errors import UsageError
from lightexport.precision import Precision

#: Largest square input side lightexport builds or feeds: 4096^2 RGB float32 is 200 MB per image.
MAX_INPUT_SIZE = 4096
MIN_INPUT_SIZE = 32
MAX_BATCH = 1024

#: Inclusive ranges of every integer option, by its keyword (the CLI flag is the same with dashes).
BOUNDS: dict[str, tuple[int, int]] = {
    "input_size": (MIN_INPUT_SIZE, MAX_INPUT_SIZE),
    "batch": (1, MAX_BATCH),
    # calibration statistics settle after a few hundred images (ranges: 32+ images average per-image extremes);
    # 20000 keeps the decode cache of uint8 crops (150 kB each at 224 px) within a few GB
    "calib_size": (1, 20000),
    "num_classes": (1, 100_000),  # 100k classes at 1280 features is a 0.5 GB head: beyond any vision classifier
    "seed": (0, 2**32 - 1),  # NumPy's and torch's seed range
    "runs": (1, 100_000),
    "warmup": (0, 10_000),
    "threads": (1, 1024),
    "inputs": (1, 10_000),
    "images": (1, 5000),
    "int8_keep": (0, 10_000),
    "max_batch": (0, MAX_BATCH),  # Triton's max_batch_size; 0 turns its batching off
    "instances": (1, 64),
    "load_requests": (1, 100_000),
    "queue_delay_us": (0, 10_000_000),
}

#: The logit cosine ``--int8-keep auto`` reaches on calibration images (see exporter.keep_search).
AUTO_TARGET = 0.9975


@dataclass(frozen=True)
class Search:
    """What one searching ``--int8-keep`` word tries: its counts (None: ``exporter.keep_search.AUTO_STEPS`` as it
    is when searched) and the count tried first (the search walks from it: ``keep_search.auto_search_order``)."""

    steps: tuple[int, ...] | None = None
    start: int = DEFAULT_KEEP


#: The ``--int8-keep`` words that search over leading counts on calibration images (a format with a search of
#: its own, ExecuTorch's and LiteRT's regions at both ends, passes its steps itself). ``lean`` starts from none:
#: where keeping none reaches the target, that is the answer after one quantization.
SEARCHES: dict[str, Search] = {"auto": Search(), "lean": Search((0, DEFAULT_KEEP), start=0)}
KEEP_SEARCHES = tuple(SEARCHES)


def is_search(keep: object) -> bool:
    """Whether a parsed ``--int8-keep`` is a searching word (not a count or module names)."""
    return isinstance(keep, str) and keep in SEARCHES


def check_int(name: str, value: Any, what: str | None = None) -> int:
    """``value`` if it is an integer in ``BOUNDS[name]``; a usage error naming the option and range otherwise."""
    low, high = BOUNDS[name]
    label = what or f"--{name.replace('_', '-')}"
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UsageError(f"{label} must be an integer from {low} to {high}, got {value!r}")
    return value


def check_input_size(size: int | None, what: str = "input size") -> int | None:
    """``size`` if it is a usable square side (or None: the model's default); a usage error otherwise."""
    return None if size is None else check_int("input_size", size, what)


def check_batch(batch: int) -> int:
    return check_int("batch", batch, "batch")


def parse_keep(value: int | str | list[str] | tuple[str, ...] | None) -> int | str | tuple[str, ...]:
    """``--int8-keep``: a count of leading convolutions, a search (``auto``, ``lean``), or module names
    (comma-separated or a list)."""
    if value is None:
        return DEFAULT_KEEP
    if isinstance(value, bool):
        raise UsageError(f"--int8-keep takes N, auto, lean or module names, got {value!r}")
    if isinstance(value, int):
        return check_int("int8_keep", value)
    if isinstance(value, str):
        text = value.strip()
        if text in KEEP_SEARCHES:
            return text
        if text.lstrip("+-").isdigit():  # "-1" is a count out of range, not a module name
            return check_int("int8_keep", int(text))
        value = [part for part in text.split(",")]
    names = tuple(str(v).strip() for v in value)
    if not names or any(not n for n in names):
        raise UsageError(f"--int8-keep takes N, auto, lean or comma-separated module names, got {value!r}")
    return names


#: The fields every format takes; anything else must be one of the format's own options.
@dataclass(frozen=True)
class ExportOptions:
    """What every exporter takes; ``extra`` holds the options only some formats take (opset, profile ...)."""

    output: Path | None = None
    fuse: bool = False
    passes: tuple[str, ...] | None = None
    input_size: int | None = None
    batch: int = 1
    dynamic: bool = False
    precision: Precision = Precision.FP32
    calib: Path | None = None
    calib_size: int = 300
    int8_keep: int | str | tuple[str, ...] = DEFAULT_KEEP
    extra: dict[str, Any] = field(default_factory=dict)
    #: the format these options were validated for (its record holds the defaults of ``extra``)
    backend: Backend | None = field(default=None, compare=False, repr=False)

    @classmethod
    def common_names(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in ("extra", "backend")]

    @classmethod
    def build(cls, backend: Backend, **options: Any) -> ExportOptions:
        """Validate ``options`` for ``backend``: unknown names, conflicts and ranges are usage errors."""
        common = cls.common_names()
        own = {o.name: o for o in backend.options}
        allowed = [*common, *own]
        unknown = [name for name in options if name not in allowed]
        if unknown:
            name = unknown[0]
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise UsageError(f"unknown option {name!r} for {backend.name} export{hint} "
                             f"(options: {', '.join(sorted(set(allowed)))})")
        given = {k: v for k, v in options.items() if k in common and v is not None}
        extra = {k: own[k].validate(v, backend.name) for k, v in options.items() if k in own and v is not None}
        asked = Precision.parse(given.pop("precision", None))
        if asked in backend.not_offered:
            raise UsageError(backend.not_offered[asked])
        precision = Precision.parse(asked, backend.precisions, what=f"{backend.name} precision")
        calib = given.pop("calib", None)
        if calib is not None:
            if not str(calib):
                raise UsageError("--calib names an empty path")
            calib = Path(calib)
        if calib is not None and precision is not Precision.INT8:
            raise UsageError("--calib goes with --int8 (calibration images set int8 activation ranges)")
        asked_keep = given.pop("int8_keep", None)
        keep = backend.int8_keep_default if asked_keep is None else parse_keep(asked_keep)
        if isinstance(keep, str) and keep not in backend.int8_searches:
            offered = " or ".join(backend.int8_searches)
            raise UsageError(f"--int8-keep {keep} is not offered for {backend.name}: give a count "
                             f"({backend.int8_keep_default} by default), module names" +
                             (f", or {offered}" if offered else ""))
        if keep != backend.int8_keep_default and precision is not Precision.INT8:
            raise UsageError("--int8-keep goes with --int8")
        for name, value in extra.items():
            needs = own[name].needs
            if needs is not None and value and value != own[name].default and precision is not needs:
                raise UsageError(f"{own[name].cli_flag or name} goes with --{needs.value}")
        passes = given.pop("passes", None)
        if isinstance(passes, str):
            passes = [passes]
        output = given.pop("output", None)
        if output is not None and not str(output):
            raise UsageError("-o/--output names an empty path")
        for flag in ("fuse", "dynamic"):
            if flag in given and not isinstance(given[flag], bool):
                raise UsageError(f"{flag} is True or False, got {given[flag]!r}")
        return cls(
            output=artifact_path(backend, output) if output is not None else None,
            passes=tuple(passes) if passes else None,
            input_size=check_input_size(given.pop("input_size", None)),
            batch=check_batch(given.pop("batch", 1)),
            precision=precision,
            calib=calib,
            calib_size=check_int("calib_size", given.pop("calib_size", 300), "calibration size"),
            int8_keep=keep,
            extra=extra,
            backend=backend,
            **given,
        )

    def get(self, name: str) -> Any:
        """A format option's value: as given, else its record's default."""
        if name in self.extra:
            return self.extra[name]
        option = self.backend.option(name) if self.backend else None
        return option.default if option else None

    @property
    def applies_passes(self) -> bool:
        return self.fuse or bool(self.passes)

    def require_calibration(self, what: str) -> None:
        """int8 from a float source needs images; ``what`` names the source in the message."""
        if self.precision is Precision.INT8 and self.calib is None:
            raise UsageError(f"--int8 needs --calib DIR (a folder of representative images) to quantize {what}")

    def derive(self, backend: Backend, **changes: Any) -> ExportOptions:
        """These options re-validated for another format (an intermediate ONNX of a TensorRT or MNN build).

        The common fields carry over (passes, sizes, batch) unless ``changes`` replaces them; of
        ``extra``, only what the other format also takes. Deriving instead of re-listing fields is
        what keeps an intermediate export from silently dropping one (``passes`` once was).
        """
        base = {name: getattr(self, name) for name in self.common_names()}
        base.update({k: v for k, v in self.extra.items() if backend.option(k) is not None})
        base.update(changes)
        return ExportOptions.build(backend, **base)

    def with_output(self, output: Path) -> ExportOptions:
        return replace(self, output=Path(output))
