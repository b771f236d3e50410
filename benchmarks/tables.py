"""Rewrites (or checks) every generated table of README.md and docs/*.md from the JSON in
benchmarks/results/.

A generated table sits between two marker lines (each at the start of its line)::

    <!-- table:NAME -->
    ...
    <!-- /table:NAME -->

and ``TABLES[NAME](results_dir)`` makes its Markdown. ``python -m benchmarks.tables``
rewrites every marked block; ``python -m benchmarks.tables --check`` rewrites nothing and
exits 1, listing the stale blocks, when a committed table differs from what the JSON gives.
"""

import argparse
import glob
import os
import re
import sys

from benchmarks import family_tables as fam
from benchmarks import table_sources as src

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")

# The family benchmark rerun with today's default split rule (old_scale=0.7).
DEFAULT = "growth_families_old07.json"

TABLES = {
    "families_summary": lambda results: fam.families_summary(results, DEFAULT),
    "families_summary_earlier_rule": fam.families_summary,
    "families": fam.families,
    "families_checks": fam.families_checks,
    "families_budgets": fam.families_budgets,
    "families_screening": fam.families_screening,
    "families_frontier": fam.families_frontier,
    "families_reach": fam.families_reach,
    "eigen_exact": fam.eigen_exact,
    "surrogate_beta": fam.surrogate_beta,
    "estimation_size": fam.estimation_size,
    "families_old_scale": fam.families_old_scale,
    "families_old_scale_summary": fam.families_old_scale_summary,
    "families_weight_decay": fam.families_weight_decay,
    "families_default_checks": lambda results: fam.families_checks(results, DEFAULT),
    "families_default": lambda results: fam.families(results, DEFAULT),
    "families_default_frontier": lambda results: fam.families_frontier(
        results, DEFAULT, curve_from="growth_families.json"),
    "mbv1_45k": lambda results: fam.families(results, "growth_mbv1_45k.json"),
    "mbv1_45k_checks": lambda results: fam.families_checks(results, "growth_mbv1_45k.json"),
    "splitting_cost": src.splitting_cost,
    "data_throughput": src.data_throughput,
    "selection": src.selection,
    "keras_applications": src.keras_applications,
    "mbv1": src.mbv1,
    "mbv1_split_rules": src.mbv1_split_rules,
    "mbv1_eigen_tol": src.mbv1_eigen_tol,
    "mbv1_grow_every": src.mbv1_grow_every,
    "stage_cost": src.stage_cost,
    "eigen_tol": src.eigen_tol,
    "digits_demo": src.digits_demo,
    "digits_stages": src.digits_stages,
    "digits_protocols": src.digits_protocols,
    "multi_worker": src.multi_worker,
    "device_costs": src.device_costs,
    "device_costs_runs": src.device_costs_runs,
}

BLOCK = re.compile(r"^(<!-- table:([\w-]+) -->\n)(.*?)^(<!-- /table:\2 -->)", re.S | re.M)


def documents(root=ROOT):
    """README.md and every docs/*.md."""
    return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs",
                                                                             "*.md")))


def render(text, results=RESULTS, cache=None):
    """``(new_text, stale)``: every marked block of ``text`` remade from ``results``, and the
    names of the blocks whose content differed. An unknown name raises ``KeyError``."""
    cache = {} if cache is None else cache
    stale = []

    def remake(match):
        name = match.group(2)
        if name not in TABLES:
            raise KeyError(f"no table {name!r} in benchmarks.tables.TABLES: {sorted(TABLES)}")
        if name not in cache:
            cache[name] = TABLES[name](results).rstrip("\n") + "\n"
        if match.group(3) != cache[name]:
            stale.append(name)
        return match.group(1) + cache[name] + match.group(4)

    return BLOCK.sub(remake, text), stale


def check(paths=None, results=RESULTS):
    """``["path: name", ...]`` for every stale block (empty when all are current)."""
    cache, out = {}, []
    for path in paths or documents():
        with open(path, encoding="utf-8") as f:
            _, stale = render(f.read(), results, cache)
        out += [f"{os.path.relpath(path, ROOT)}: {name}" for name in stale]
    return out


def write(paths=None, results=RESULTS):
    """Rewrites every stale block in place; returns what ``check`` returned before."""
    cache, out = {}, []
    for path in paths or documents():
        with open(path, encoding="utf-8") as f:
            text, stale = render(f.read(), results, cache)
        if stale:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        out += [f"{os.path.relpath(path, ROOT)}: {name}" for name in stale]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="rewrite nothing; exit 1 listing the stale blocks")
    args = parser.parse_args(argv)
    if args.check:
        stale = check()
        for line in stale:
            print(f"stale: {line}")
        if stale:
            print("run `python -m benchmarks.tables` to regenerate them", file=sys.stderr)
            return 1
        print("every generated table is current")
        return 0
    for line in write():
        print(f"rewritten: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
