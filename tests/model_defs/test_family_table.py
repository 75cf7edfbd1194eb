"""The README's family table is what benchmarks/family_table.py makes from the registry today (no parity rerun)."""

import importlib.util
from pathlib import Path

from lightexport.model_defs import get_spec, list_models
from lightexport.model_defs.complexity import measure

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "family_table.py"


def _module():
    spec = importlib.util.spec_from_file_location("family_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_current():
    table = _module()
    rows = table.family_rows()
    assert table.readme_table() == table.render(rows), "run: python benchmarks/family_table.py --write-readme"
    listed = {m["name"]: m for row in rows for m in row["models"]}
    assert list(listed) == list_models()  # every registered model, once
    for name in ("mobilenext_100", "shufflenet_v1_g3_100", "xception", "blazeface_backbone", "fasternet_t0"):
        params, gmacs = measure(get_spec(name))  # counted afresh here, not read from complexity.json
        assert listed[name]["params"] == params and listed[name]["gmacs"] == round(gmacs, 6)
        line = next(line for line in table.readme_table().splitlines() if f"`{name}`" in line)
        assert table.params_cell(params) in line and table.gmacs_cell(gmacs) in line
