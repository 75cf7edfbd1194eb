"""The fake format's exporter: the shared pipeline's steps, then ``torch.jit.trace`` and an atomic save."""

import json

import torch

from lightexport.exporter.base import (
    ExportResult,
    Stopwatch,
    example_input,
    prepared_module,
    provenance,
    require_model,
)
from lightexport.fileio import atomic_outputs


def export(source, opts) -> ExportResult:
    loaded = require_model(source, opts.backend)
    clock = Stopwatch()
    module, reports = prepared_module(loaded, opts)
    with torch.no_grad():
        traced = torch.jit.trace(module, example_input(loaded, opts), check_trace=False)
    meta = provenance(loaded, opts, reports)
    files = opts.backend.files(opts.output)
    with atomic_outputs(files) as (tmp,):
        torch.jit.save(traced, str(tmp), _extra_files={"lightexport.json": json.dumps(meta)})
    return ExportResult(format=opts.backend.name, path=files[0], seconds=clock.seconds, precision=opts.precision,
                        files=files, metadata=meta, passes=reports, notes=[r.summary() for r in reports if r.count])


def naive_export(loaded, example, path):
    torch.jit.trace(loaded.module.eval(), example, check_trace=False).save(str(path))
    return path
