"""Kill rate per module of the last mutation run (``mutmut run``; docs/testing.md).

Run from the repository root after ``mutmut run``::

    python tests/support/mutation_report.py              # one line per module
    python tests/support/mutation_report.py --survivors  # and every surviving mutant's diff
    python tests/support/mutation_report.py --sample 80  # names of 80 seeded random mutants per module,
                                                 # for `mutmut run NAME...` on a busy machine

Reads mutmut's per-file results (``mutants/<path>.meta``). A mutant counts as killed when a test
failed on it or it timed out. Surviving mutants that match a rule in :data:`EQUIVALENT` (a change
that cannot alter behaviour, each with its reason) are reported as equivalent; the kill rate is
killed / (mutants run - equivalent), so after a sampled run it estimates the module's rate.
Exits 1 when a module is below ``--target`` (default 0.9) or has mutants not run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

#: The modules under mutation testing ([tool.mutmut] only_mutate in pyproject.toml).
MODULES = ("cage/engine/effects.py", "cage/engine/nulls.py", "analysis/stats.py",
           "analysis/robustness.py", "mturk/ledger.py")

#: mutmut's exit codes (mutmut.stats.status_by_exit_code) that mean the mutant was detected.
KILLED = {1, 3, 24, -24, 36, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}

#: Mutations judged equivalent: (module or "*", text before, text after, why). A surviving mutant
#: matches when each changed line becomes the mutated one by replacing one ``before`` with ``after``.
EQUIVALENT = (
    ("cage/engine/effects.py", "batch_size: int = 4096", "batch_size: int = 4097",
     "a default batch size bounds memory only; results are batch-size invariant (tested)"),
    ("cage/engine/effects.py", "return ARROW_12 if delta > 0", "return ARROW_12 if delta >= 0",
     "delta == 0 has already returned '?' two lines above"),
    ("cage/engine/effects.py", "np.asarray(shifts, dtype=np.float64)",
     "np.asarray(shifts, dtype=None)",
     "the product with the float64 alpha grid promotes the shifts to float64 anyway"),
    ("cage/engine/effects.py", "np.asarray(shifts, dtype=np.float64)", "np.asarray(shifts, )",
     "the product with the float64 alpha grid promotes the shifts to float64 anyway"),
    ("cage/engine/effects.py", "np.asarray(alphas, dtype=np.float64)",
     "np.asarray(alphas, dtype=None)",
     "the product with the float64 shifts promotes the alphas to float64 anyway"),
    ("cage/engine/effects.py", "torch.ones((), dtype=dtype)", "torch.ones((), dtype=None)",
     "a 0-d tensor does not change the dtype of addcmul's result"),
    ("cage/engine/effects.py", "block = max(1, BLOCK_ELEMENTS", "block = max(2, BLOCK_ELEMENTS",
     "the block size bounds memory only (and differs only beyond 4 million latents)"),
    ("cage/engine/effects.py", "BLOCK_ELEMENTS // max(k, 1))", "BLOCK_ELEMENTS // max(k, 2))",
     "the block size bounds memory only"),
    ("cage/engine/nulls.py", "dtype=torch.float32)", "dtype=None)",
     "float64 instead of float32 products: the same normals, only slower"),
    ("cage/engine/nulls.py", ", dtype=torch.float32)", ", )",
     "fit_logreg_batched's default is float64: the same normals, only slower"),
    ("*", 'float("nan")', 'float("NAN")', "float() ignores case"),
    ("*", "strict=True)", ")", "zip over two columns of one frame: the lengths always agree"),
    ("*", "strict=True)", "strict=None)", "zip over two columns of one frame: the lengths always agree"),
    ("analysis/stats.py", 'null_p, alternative="two-sided")', "null_p, )",
     "two-sided is binomtest's default"),
    ("analysis/stats.py", '"k": cause.astype(np.int64)', '"k": cause.astype(None)',
     "the float sums are cast back to int64 before they are used"),
    ("analysis/stats.py", 'correction: str = "bonferroni"', 'correction: str = "BONFERRONI"',
     "multipletests lower-cases the method name"),
    ("analysis/stats.py", 'cells["n"].where(cells["n"] > 0)', 'cells["n"].where(cells["n"] >= 0)',
     "0 / 0 is NaN either way"),
    ("analysis/robustness.py", "np.asarray(s, dtype=float)", "np.asarray(s, )",
     "integer counts are promoted to float by the first arithmetic with mu"),
    ("analysis/robustness.py", "np.asarray(n, dtype=float)", "np.asarray(n, )",
     "integer counts are promoted to float by the first arithmetic with mu"),
    ("analysis/robustness.py", "done = abs(new - mu) < tol", "done = abs(new - mu) <= tol",
     "a step of exactly 1e-12 is as converged as a smaller one"),
    ("analysis/robustness.py", "if nobs == 0 or", "if nobs == 1 or",
     "nobs == 0 and nobs == 1 both imply s.sum() in (0, nobs), the clause after it"),
    ("analysis/robustness.py", "n = n.astype(np.int64)", "n = n.astype(None)",
     "float64 counts compare and subtract exactly like int64 ones"),
    ("analysis/robustness.py", 'np.errstate(divide="ignore", invalid="ignore")',
     'np.errstate(invalid="ignore")',
     "fleiss_kappa can only reach 0/0 (invalid), never x/0 (divide)"),
    ("analysis/robustness.py", 'kind="stable"', 'kind="STABLE"', "numpy ignores the case of kind"),
    ("mturk/ledger.py", "sqlite3.connect(str(tmp), isolation_level=None)",
     "sqlite3.connect(str(tmp), )",
     "create() opens its transaction with an explicit BEGIN and ends it with COMMIT either way"),
    ("mturk/ledger.py", "cls.open(run_dir, environment=environment,",
     "cls.open(run_dir, environment=None,",
     "the ledger create() has just written holds that environment: the check cannot fail"),
    ("analysis/robustness.py", "binomial_test(n_top, n_pos, 0.5)", "binomial_test(n_top, n_pos, )",
     "0.5 is binomial_test's default null"),
)
_QUOTED = re.compile(r"'[^']*'")


def _changed_lines(diff: str) -> list[tuple[str, str]]:
    minus = [ln[1:] for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    return list(zip(minus, plus, strict=False)) if len(minus) == len(plus) else []


def equivalence(module: str, diff: str) -> str | None:
    """Why a surviving mutant is equivalent, or None."""
    changed = _changed_lines(diff)
    if not changed:
        return None
    if module == "mturk/ledger.py" and all(
            a.lower() == b.lower() and _QUOTED.findall(a) == _QUOTED.findall(b)
            for a, b in changed):
        return ("letter case of SQL keywords, identifiers or sqlite3.Row keys, which SQLite and "
                "sqlite3.Row ignore (quoted values unchanged)")
    for mod, before, after, why in EQUIVALENT:
        if mod in (module, "*") and all(_replaced_once(a, b, before, after) for a, b in changed):
            return why
    return None


def _replaced_once(a: str, b: str, before: str, after: str) -> bool:
    """Whether ``b`` is ``a`` with one occurrence of ``before`` replaced by ``after``."""
    starts = [m.start() for m in re.finditer(re.escape(before), a)]
    return any(a[:i] + after + a[i + len(before):] == b for i in starts)


def module_results(root: Path, module: str) -> dict[str, int | None]:
    """``{mutant name: exit code}`` for one module (None: not run yet)."""
    meta = root / "mutants" / (module + ".meta")
    if not meta.is_file():
        return {}
    return json.loads(meta.read_text())["exit_code_by_key"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--survivors", action="store_true",
                        help="list every surviving mutant with its diff or equivalence reason")
    parser.add_argument("--target", type=float, default=0.9, help="required kill rate")
    parser.add_argument("--sample", type=int, metavar="N",
                        help="print N seeded random mutant names per module and exit")
    args = parser.parse_args(argv)
    if args.sample:
        import random

        rng = random.Random(0)
        for module in MODULES:
            names = sorted(module_results(Path.cwd(), module))
            print("\n".join(rng.sample(names, min(args.sample, len(names)))))
        return 0
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    print(f"{'module':<24} {'mutants':>7} {'killed':>7} {'survived':>8} {'equivalent':>10} "
          f"{'no tests':>8} {'not run':>7} {'kill rate':>9}")
    below, details = [], []
    for module in MODULES:
        codes = module_results(Path.cwd(), module)
        killed = sum(1 for c in codes.values() if c in KILLED)
        survived = sorted(k for k, c in codes.items() if c in SURVIVED)
        no_tests = sum(1 for c in codes.values() if c in NO_TESTS)
        not_run = sum(1 for c in codes.values() if c is None)
        equivalent = 0
        for name in survived:
            diff = get_diff_for_mutant(name, path=module)
            why = equivalence(module, diff)
            equivalent += why is not None
            details.append((name, why, diff))
        counted = len(codes) - not_run - equivalent
        rate = killed / counted if counted else float("nan")
        if not counted or not_run or rate < args.target:
            below.append(module)
        print(f"{module:<24} {len(codes):>7} {killed:>7} {len(survived) - equivalent:>8} "
              f"{equivalent:>10} {no_tests:>8} {not_run:>7} {rate:>9.1%}")
    if args.survivors:
        for name, why, diff in details:
            print(f"\n{name}: " + (f"equivalent: {why}" if why else "survived"))
            if not why:
                print("\n".join(ln for ln in diff.splitlines()
                                if ln[:1] in "+-" and ln[:3] not in ("---", "+++")))
    if below:
        print(f"below {args.target:.0%} (or not run): {', '.join(below)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
