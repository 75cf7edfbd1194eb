"""The README's table of artifact formats, generated from the format records so it cannot drift from the code.

    python benchmarks/format_table.py                 # print the table
    python benchmarks/format_table.py --write-readme  # replace it in README.md between the markers
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lightexport.backends import BACKENDS
from lightexport.fileio import atomic_output
from lightexport.precision import Precision

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- format-table:start -->", "<!-- format-table:end -->"


def render() -> str:
    lines = ["| `--format` | files | runtime | precisions | runs on | judged in | from | install |",
             "|---|---|---|---|---|---|---|---|"]
    for b in BACKENDS.values():
        files = " + ".join(f"`{f.name.replace('model', 'NAME', 1)}`" for f in b.files(Path(f"model{b.suffix}")))
        precisions = ", ".join(p.value for p in b.precisions)
        refused = [p.value for p in Precision if p in b.not_offered]
        if refused:
            precisions += f" (not {', '.join(refused)}: see below)"
        emulated = b.aarch64_wheels or b.aarch64_setup
        where = "x86 + arm64 (emulated)" if emulated else "this CPU" if b.cpu else "NVIDIA GPU"
        judged = "pinned + runtime default" if b.settings else "as made"
        source = "PyTorch, ONNX" if b.accepts_onnx else "PyTorch"
        lines.append(f"| `{b.name}` | {files} | {b.label} | {precisions} | {where} | {judged} | {source} "
                     f"| `{b.install_hint.removeprefix('pip install ')}` |")
    return "\n".join(lines)


def readme_table(readme: Path = README) -> str:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} lacks the markers {START} ... {END}")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme(table: str, readme: Path = README) -> None:
    text = readme.read_text()
    readme_table(readme)
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    with atomic_output(readme) as tmp:
        Path(tmp).write_text(f"{head}{START}\n{table}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-readme", action="store_true", help=f"replace the table in {README.name}")
    args = parser.parse_args()
    table = render()
    print(table)
    if args.write_readme:
        write_readme(table)


if __name__ == "__main__":
    main()
