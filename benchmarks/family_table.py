"""The README's table of registered families, generated from the registry so it cannot drift from the code.

Per family: its models (aliases in parentheses), parameters and GMACs of each at its default
input size (counted on the meta device by :func:`lightexport.model_defs.complexity.complexity`),
the input size, and the checkpoint layouts ``--weights`` accepts. No parity is measured here.

    python benchmarks/family_table.py                 # print the table
    python benchmarks/family_table.py --write-readme  # replace it in README.md between the markers
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightexport.fileio import atomic_output
from lightexport.model_defs import get_spec, list_models
from lightexport.model_defs.complexity import complexity

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- family-table:start -->", "<!-- family-table:end -->"
TITLES = {
    "fasternet": "FasterNet (Chen et al., 2023)",
    "mobilenetv1": "MobileNetV1 (Howard et al., 2017)",
    "mobilenetv2": "MobileNetV2 (Sandler et al., 2018)",
    "mobilenetv3": "MobileNetV3 (Howard et al., 2019)",
    "shufflenetv2": "ShuffleNetV2 (Ma et al., 2018)",
    "efficientnetv2": "EfficientNetV2 (Tan & Le, 2021)",
    "efficientnet_lite": "EfficientNet-Lite (TF release, 2020)",
    "ghostnetv2": "GhostNetV2 (Tang et al., 2022)",
    "inception": "GoogLeNet / Inception v3 (Szegedy et al., 2015/2016)",
    "mobilenext": "MobileNeXt (Zhou et al., 2020)",
    "shufflenetv1": "ShuffleNetV1 (Zhang et al., 2018)",
    "xception": "Xception (Chollet, 2017)",
    "blazeface": "BlazeFace backbone (Bazarevsky et al., 2019)",
}


def family_rows() -> list[dict]:
    """One record per family, models in registration order, with the registry's own counts."""
    families: dict[str, dict] = {}
    for name in list_models():
        spec = get_spec(name)
        params, gmacs = complexity(spec)
        row = families.setdefault(spec.family, {"family": spec.family, "models": [], "sources": []})
        row["models"].append({"name": name, "aliases": list(spec.aliases), "params": params, "gmacs": gmacs,
                              "input_size": spec.input_size, "backbone_only": spec.backbone_only})
        row["sources"] += [s for s in spec.checkpoints if s not in row["sources"]]
    return list(families.values())


def params_cell(params: int) -> str:
    return f"{params / 1e6:.2f}"


def gmacs_cell(gmacs: float) -> str:
    return f"{gmacs:.3f}"


def render(rows: list[dict]) -> str:
    lines = ["| family | models (aliases) | params (M) | GMACs | input | checkpoints `--weights` takes |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        models = row["models"]
        names = ", ".join(f"`{m['name']}`" + (f" (`{'`, `'.join(m['aliases'])}`)" if m["aliases"] else "")
                          for m in models)
        # one size when all share it, else one per model in the models' order (a sorted set of three sizes
        # beside nine models said nothing about which model takes which)
        sizes = [m["input_size"] for m in models] if len({m["input_size"] for m in models}) > 1 else \
            [models[0]["input_size"]]
        suffix = " (backbone only)" if any(m["backbone_only"] for m in models) else ""
        lines.append(
            f"| {TITLES.get(row['family'], row['family'])}{suffix} | {names} "
            f"| {', '.join(params_cell(m['params']) for m in models)} "
            f"| {', '.join(gmacs_cell(m['gmacs']) for m in models)} "
            f"| {', '.join(map(str, sizes))} | {'; '.join(row['sources']) or 'lightexport state dicts'} |"
        )
    return "\n".join(lines)


def readme_table(readme: Path = README) -> str:
    """The table currently between the README's markers."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} lacks the markers {START} ... {END}")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme(table: str, readme: Path = README) -> None:
    text = readme.read_text()
    readme_table(readme)  # checks the markers
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with atomic_output(readme) as tmp:
        Path(tmp).write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-readme", action="store_true", help=f"replace the table in {README.name}")
    args = parser.parse_args()
    table = render(family_rows())
    print(table)
    if args.write_readme:
        write_readme(table)


if __name__ == "__main__":
    main()
