"""Concatenate per-figure check tables into results/checks.csv and summarise them."""

import argparse
import sys

from ntk_repro.results import merge_checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ntk_repro.pipeline.merge_checks")
    parser.add_argument("--input", nargs="+", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    rows = merge_checks(args.input, args.output)
    failed = [r for r in rows if r["passed"] != "True"]
    print(f"{len(rows) - len(failed)} of {len(rows)} claims hold", file=sys.stderr)
    for r in failed:
        print(f"FAILED {r['experiment']}: {r['claim']} (measured {r['measured']}, "
              f"paper {r['paper_value']}, tolerance {r['tolerance']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
