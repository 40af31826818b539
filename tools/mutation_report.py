"""Mutation scores per module from mutmut's results (``make mutate`` prints this).

Reads ``mutants/**/*.py.meta`` (mutmut 3) and prints, per mutated module, how many
mutants were killed, survived, had no test, or timed out, and the score
``killed / (killed + survived + no tests)``. ``--survivors`` lists the surviving mutants
(``mutmut show NAME`` prints one as a diff).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

KILLED = {1, 3, 37}  # a failing test, a pytest internal error, or the type checker
SURVIVED = {0}
NO_TESTS = {5, 33}
TIMEOUT = {36, 24, -24, 152, 255}


def results(root: Path) -> dict[str, dict[str, int | None]]:
    """Every mutated module's exit code per mutant."""
    found: dict[str, dict[str, int | None]] = {}
    for meta in sorted(root.rglob("*.py.meta")):
        module = str(meta.relative_to(root))[: -len(".meta")]
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        if codes:
            found[module] = codes
    return found


def classify(code: int | None) -> str:
    """mutmut's exit code as one of killed, survived, no tests, timeout, not run."""
    if code is None:
        return "not run"
    for name, codes in (
        ("killed", KILLED),
        ("survived", SURVIVED),
        ("no tests", NO_TESTS),
        ("timeout", TIMEOUT),
    ):
        if code in codes:
            return name
    return "suspicious"


def main() -> None:
    """Print the table (and the survivors with ``--survivors``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants")
    args = parser.parse_args()
    console = Console(width=120)
    found = results(args.mutants)
    if not found:
        console.print(f"no mutmut results under {args.mutants}/: run `make mutate` first")
        raise SystemExit(2)
    table = Table(title="mutation score per module")
    for column in ("module", "mutants", "killed", "survived", "no tests", "timeout", "not run"):
        table.add_column(column, justify="left" if column == "module" else "right")
    table.add_column("score", justify="right")
    survivors: list[str] = []
    for module, codes in found.items():
        counts = Counter(classify(code) for code in codes.values())
        judged = counts["killed"] + counts["survived"] + counts["no tests"]
        score = f"{counts['killed'] / judged:.0%}" if judged else "-"
        table.add_row(
            module,
            str(len(codes)),
            *(str(counts[k]) for k in ("killed", "survived", "no tests", "timeout", "not run")),
            score,
        )
        survivors += [name for name, code in codes.items() if classify(code) == "survived"]
    console.print(table)
    if args.survivors:
        for name in survivors:
            console.print(name, markup=False)


if __name__ == "__main__":
    main()
