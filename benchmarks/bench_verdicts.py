"""Verdict calibration (issue 19): each claim's error rates at its boundary and its power, by
simulated studies with planted truths (metasft.stats.calibration).

    python benchmarks/bench_verdicts.py --runs 1000

Prints one Markdown row per claim, outcome and regime: the runs, P(met | false at the boundary),
P(not met | true at the boundary), power at 0.10 beyond the boundary (accuracy points, or loss), the
claim's nominal one-sided error (0.025; the primary H1-H3 on accuracy 0.0083), and whether both errors
are within it + binomial noise (the 99.9% upper quantile of Binomial(runs, nominal));
the two training-run regimes plant the truth at the method's level, so the one-run regime shows what a
single checkpoint per arm does to the error rates.
"""
from __future__ import annotations

import argparse
import time

from metasft.stats.calibration import calibrate, limit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="simulated studies per claim, outcome and regime")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates of the speed claims")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = calibrate(args.runs, n_boot=args.n_boot, seed=args.seed)
    print("| claim | outcome | regime | runs | P(met \\| false) | P(not met \\| true) | power at +0.10 | "
          "nominal | within its bound |")
    print("|---|---|---|---|---|---|---|---|---|")
    failures = 0
    for r in rows:
        bound = limit(args.runs, r["level"])
        ok = r["met_if_false"] <= bound and r["not_met_if_true"] <= bound
        failures += not ok and not r["conditional"]
        extra = (f" (never reached: P(not met) {r['censored_not_met']:.3f}, P(met) {r['censored_power']:.3f})"
                 if "censored_power" in r else "")
        print(f"| {r['claim']} | {r['outcome']} | {r['regime']} | {r['runs']} | {r['met_if_false']:.3f} | "
              f"{r['not_met_if_true']:.3f} | {r['power']:.3f}{extra} | {r['level']:.4f} | "
              f"{f'yes (<= {bound:.3f})' if ok else 'no (one checkpoint per arm: not held to it)' if r['conditional'] else 'NO'} |")
    print(f"\n{len(rows)} rows, {failures} outside the bound (rows of one training run per arm whose runs differ "
          f"are shown, not held to it); {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
