"""The claims table: merge the per-figure checks into results/checks.csv, and gate on it.

    python -m ntk_repro.claims merge --input results/checks/*.csv --output results/checks.csv
    python -m ntk_repro.claims gate results/checks.csv [--summary results/claims.txt]

``gate`` prints "N of M claims hold (K not evaluated at this preset)" and one line per failing
claim with its measured value and tolerance, and exits 1 when any evaluated claim fails (or
the table is empty or malformed), so a broken result fails the run, ``make reproduce`` and CI.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ntk_repro.results import CHECK_COLUMNS, STATUSES, merge_checks


def read_claims(path) -> list[dict]:
    """The rows of a checks table; ValueError naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no checks table (did the run finish?)")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        columns = reader.fieldnames or []
    missing = [c for c in CHECK_COLUMNS if c not in columns]
    if missing:
        raise ValueError(f"{path}: not a checks table, columns {missing} are missing")
    for r in rows:
        if r["status"] not in STATUSES:
            raise ValueError(f"{path}: claim {r['claim']!r} has status {r['status']!r}")
    return rows


def summary_lines(rows: list[dict]) -> list[str]:
    """'N of M claims hold (K not evaluated at this preset)', then each failing claim."""
    evaluated = [r for r in rows if r["status"] != "not_evaluated"]
    failed = [r for r in evaluated if r["status"] != "pass"]
    lines = [
        f"{len(evaluated) - len(failed)} of {len(evaluated)} claims hold "
        f"({len(rows) - len(evaluated)} not evaluated at this preset)"
    ]
    for r in failed:
        lines.append(
            f"FAILED {r['experiment']}: {r['claim']} — measured {r['measured']}, "
            f"paper/theory {r['paper_value']}, tolerance {r['tolerance']} "
            f"({r['comparison']})"
        )
    return lines


def gate(path, summary=None) -> int:
    """Print the summary; 0 if every evaluated claim holds, else 1."""
    try:
        rows = read_claims(path)
    except ValueError as err:
        print(f"claims gate: {err}")
        return 1
    lines = summary_lines(rows)
    print("\n".join(lines))
    ok = bool(rows) and not any(r["status"] == "fail" for r in rows)
    if not rows:
        print(f"claims gate: {path} holds no claim")
    if ok and summary:
        Path(summary).write_text("\n".join(lines) + "\n")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntk_repro.claims")
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("merge", help="concatenate per-figure check tables")
    merge.add_argument("--input", nargs="+", required=True)
    merge.add_argument("--output", required=True)
    check = commands.add_parser("gate", help="summarise; exit 1 if an evaluated claim fails")
    check.add_argument("table", help="results/checks.csv")
    check.add_argument("--summary", help="file to write the summary to when every claim holds")
    args = parser.parse_args(argv)
    if args.command == "gate":
        return gate(args.table, args.summary)
    rows = merge_checks(args.input, args.output)
    print("\n".join(summary_lines(rows)), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
