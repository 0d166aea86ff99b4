"""The design's hypotheses (H1-H3) and success criteria (C1-C5), judged from a run's results.

Each claim is a statement about a quantity (a difference of accuracies, a ratio of adaptation steps)
and gets one of four statuses:
- **met** / **not met**: the 95% interval of the quantity lies entirely on one side of the claimed
  value (an interval that touches it is not on one side);
- **inconclusive**: the interval holds both the claimed value and its negation, or both models sit at
  the floor (or ceiling) of the outcome, where a difference cannot show;
- **not measurable**: the run lacks the cells the claim needs; the verdict names them.
Intervals are bootstraps over test questions, the unit of independence (`metasft.stats.significance`).
Learning-curve claims are judged per task on that task's own shot levels (interpolating only between
levels it ran), then over the tasks where they could be judged by their macro mean (a bootstrap
stratified by task); the tasks where a claim could not be judged are named. Each claim is judged on
accuracy (the design's outcome) and, as a secondary outcome with more power at small scale, on the
token-mean loss of the reference solutions (lower is better).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from metasft.rundir import strict_json
from metasft.stats.compare import assumed_sd, paired_row
from metasft.stats.curves import CELL_COLUMNS, check_columns, sample_efficiency_interpolated
from metasft.stats.questions import ACCURACY, Outcome, QuestionScores, aligned
from metasft.stats.significance import ALPHA, cluster_bootstrap_ci, holm, mde

MET = "met"
NOT_MET = "not met"
INCONCLUSIVE = "inconclusive"
UNMEASURABLE = "not measurable"
STATUSES = (MET, NOT_MET, INCONCLUSIVE, UNMEASURABLE)

DESIGN_TARGET_ACC = 0.7  # the design's "70% target accuracy" (H3, C4)
SPEED_RATIO = 2.0        # C4: "at least 50% fewer steps"
H1_RATIO, C1_RATIO = 5, 3

STATEMENTS = {
    "H1": "FOMAML-SFT at 5-10 shots matches SFT-Mixed at 50-100 shots (5-10x sample efficiency).",
    "H2": "On unseen tasks, zero-shot accuracy orders FOMAML-SFT > SFT-Mixed > Base.",
    "H3": "FOMAML-SFT reaches the target accuracy in ~20-50 adaptation steps vs ~100-200 for "
          "SFT-Mixed (at most half the steps).",
    "C1": "Sample efficiency > 3x: FOMAML-SFT at 10 shots >= SFT-Mixed at 30 shots.",
    "C2": "Zero-shot transfer: FOMAML-SFT beats SFT-Mixed by more than 5 accuracy points on unseen tasks.",
    "C3": "FOMAML-SFT's advantage is significant (p < 0.05) consistently across evaluation tasks.",
    "C4": "Adaptation speed > 2x: FOMAML-SFT needs at least 50% fewer steps to reach the target accuracy.",
    "C5": "Cross-domain: FOMAML-SFT beats SFT-Mixed on the science (MMLU-STEM-like) tasks.",
}
LOSS_STATEMENTS = {
    "H1": "FOMAML-SFT's loss at 5-10 shots is at most SFT-Mixed's at 5x the shots.",
    "H2": "On unseen tasks, zero-shot loss orders FOMAML-SFT < SFT-Mixed < Base.",
    "H3": "Adaptation speed on the loss (the design gives no target loss).",
    "C1": "FOMAML-SFT's loss at 10 shots is at most SFT-Mixed's at 30 shots.",
    "C2": "On unseen tasks, FOMAML-SFT's zero-shot loss is lower than SFT-Mixed's.",
    "C3": "FOMAML-SFT's lower loss is significant (p < 0.05) consistently across evaluation tasks.",
    "C4": "Adaptation speed on the loss (the design gives no target loss).",
    "C5": "Cross-domain: FOMAML-SFT's loss is lower than SFT-Mixed's on the science tasks.",
}


@dataclass(frozen=True)
class Verdict:
    """One claim judged on one outcome. `estimate` [`ci_lo`, `ci_hi`] is the quantity the status is
    read from (`quantity` says what it is, `threshold` the claimed value); `mde`, the smallest effect
    on it this run detects with 80% power; `evidence`, the numbers per task."""

    name: str
    outcome: str
    statement: str
    status: str
    explanation: str = ""
    quantity: str = ""
    estimate: float = math.nan
    ci_lo: float = math.nan
    ci_hi: float = math.nan
    threshold: float = math.nan
    mde: float = math.nan
    evidence: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name if self.outcome == ACCURACY.name else f"{self.name} ({self.outcome})"

    def to_dict(self) -> dict:
        """Plain, strict-JSON values: non-finite numbers become None (NaN) or "inf" / "-inf"."""
        return strict_json(asdict(self) | {"label": self.label})


def decide(lo: float, hi: float, threshold: float) -> str:
    """met when the interval lies above `threshold`, not met when below, else inconclusive."""
    if lo > threshold:
        return MET
    if hi < threshold:
        return NOT_MET
    return INCONCLUSIVE


def _interval(estimate: float, lo: float, hi: float, digits: int = 3) -> str:
    if not math.isfinite(lo):
        return f"{estimate:+.{digits}f} (no interval)"
    return f"{estimate:+.{digits}f} [95% CI {lo:+.{digits}f}, {hi:+.{digits}f}]"


def _brackets(levels: Sequence[int], x: float) -> bool:
    return bool(levels) and min(levels) <= x <= max(levels)


class _Judge:
    """The claims over one outcome's question scores."""

    def __init__(self, scores: QuestionScores, fomaml: str, sft: str, base: str, n_boot: int, seed: int = 0):
        self.s, self.o = scores, scores.outcome
        self.fomaml, self.sft, self.base = fomaml, sft, base
        self.n_boot, self.seed = n_boot, seed
        self.points = "accuracy points" if self.o is ACCURACY else "loss (lower is better; advantage = the other's minus FOMAML-SFT's)"

    def verdict(self, name: str, status: str, explanation: str, **kw) -> Verdict:
        statements = STATEMENTS if self.o is ACCURACY else LOSS_STATEMENTS
        return Verdict(name, self.o.name, statements[name], status, explanation, **kw)

    def has(self, model: str, task: str, n_shots: int) -> bool:
        return n_shots in self.s.shots(model, task)

    # ------------------------------------------------------------------ macro judgement
    def macro(self, name: str, quantity: str, advantages: dict[str, np.ndarray], raw: dict[str, list],
              threshold: float, not_judged: dict[str, str], extra: dict | None = None) -> Verdict:
        """Judge the mean over tasks of per-question advantages against `threshold`."""
        per_task = {}
        for task, adv in advantages.items():
            est, lo, hi = cluster_bootstrap_ci([adv], n_boot=self.n_boot, seed=self.seed)
            bound = self.o.at_bound(*raw[task])
            per_task[task] = dict(estimate=est, ci=[lo, hi], n_questions=len(adv), at_bound=bound,
                                  status=INCONCLUSIVE if bound else decide(lo, hi, threshold))
        est, lo, hi = cluster_bootstrap_ci(list(advantages.values()), n_boot=self.n_boot, seed=self.seed)
        pooled = np.concatenate([np.concatenate(r) for r in raw.values()])
        n_min = min(len(a) for a in advantages.values())
        effect = mde(list(advantages.values()), sd_floor=assumed_sd(self.o, pooled, n_min))
        bounds = {t: p["at_bound"] for t, p in per_task.items()}
        if all(bounds.values()):
            status, why = INCONCLUSIVE, f"both models at {', '.join(sorted(set(bounds.values())))} on every task judged"
        else:
            status, why = decide(lo, hi, threshold), ""
        explanation = (f"{quantity}: {_interval(est, lo, hi)} over {len(advantages)} task(s) "
                       f"({', '.join(advantages)}); claim: > {threshold:+g}; MDE {effect:.3f}."
                       + (f" Inconclusive: {why}." if why else "")
                       + (f" Not judged: {'; '.join(f'{t}: {r}' for t, r in not_judged.items())}." if not_judged else ""))
        return self.verdict(name, status, explanation, quantity=quantity, estimate=est, ci_lo=lo, ci_hi=hi,
                            threshold=threshold, mde=effect,
                            evidence=dict(per_task=per_task, not_judged=not_judged, **(extra or {})))

    def unmeasurable(self, name: str, why: str, **evidence) -> Verdict:
        return self.verdict(name, UNMEASURABLE, why, evidence=evidence)

    # ------------------------------------------------------------------ H1, C1: shots for shots
    def _interpolated(self, model: str, task: str, x: float) -> pd.Series:
        """Each question's score at x shots, linear between the two levels around x."""
        levels = self.s.shots(model, task)
        lower, upper = max(n for n in levels if n <= x), min(n for n in levels if n >= x)
        if lower == upper:
            return self.s.final(model, task, lower)
        a, b = self.s.final(model, task, lower), self.s.final(model, task, upper)
        w = (x - lower) / (upper - lower)
        common = a.index.intersection(b.index)
        return (1 - w) * a.loc[common] + w * b.loc[common]

    def efficiency(self, name: str, tasks: Sequence[str], refs: Sequence[int], multiple: int) -> Verdict:
        """FOMAML-SFT at r shots vs SFT-Mixed at multiple x r shots, r the first of `refs` a task can judge."""
        pairs = [(r, r * multiple) for r in refs]
        if not self.s.available:
            return self.unmeasurable(name, f"No per-question scores: {self.s.why_unavailable}.")
        advantages, raw, not_judged, used = {}, {}, {}, {}
        for task in tasks:
            f_levels, s_levels = self.s.shots(self.fomaml, task), self.s.shots(self.sft, task)
            pick = next(((r, x) for r, x in pairs if r in f_levels and _brackets(s_levels, x)), None)
            if pick is None:
                needs = " or ".join(f"FOMAML-SFT at {r} and SFT-Mixed at levels spanning {x}" for r, x in pairs)
                not_judged[task] = f"needs {needs}; ran FOMAML-SFT {f_levels}, SFT-Mixed {s_levels}"
                continue
            r, x = pick
            f, s = aligned(self.s.final(self.fomaml, task, r), self._interpolated(self.sft, task, x))
            advantages[task], raw[task] = self.o.advantage(f, s), [f, s]
            sign = 1 if self.o.higher_is_better else -1
            curve = {n: sign * float(self.s.final(self.sft, task, n).mean()) for n in s_levels}
            needed = sample_efficiency_interpolated(curve, sign * float(f.mean()))
            used[task] = dict(fomaml_shots=r, sft_shots=x, sft_shots_to_match=needed, ratio=needed / r)
        if not advantages:
            return self.unmeasurable(name, "No task ran the shot levels this claim compares: "
                                     + "; ".join(f"{t}: {r}" for t, r in not_judged.items()) + ".",
                                     not_judged=not_judged)
        quantity = f"FOMAML-SFT at r shots minus SFT-Mixed at {multiple}r shots (r per task below), {self.points}"
        return self.macro(name, quantity, advantages, raw, 0.0, not_judged, dict(shots=used))

    # ------------------------------------------------------------------ H2, C2: zero-shot transfer
    def zero_shot(self, tasks: Sequence[str], models: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        ok = [t for t in tasks if all(self.has(m, t, 0) for m in models)]
        return ok, {t: "no 0-shot results for " + ", ".join(m for m in models if not self.has(m, t, 0))
                    for t in tasks if t not in ok}

    def h2(self, unseen: Sequence[str]) -> Verdict:
        if not self.s.available:
            return self.unmeasurable("H2", f"No per-question scores: {self.s.why_unavailable}.")
        tasks, not_judged = self.zero_shot(unseen, [self.fomaml, self.sft, self.base])
        if not tasks:
            return self.unmeasurable("H2", "No unseen task has 0-shot results for FOMAML-SFT, SFT-Mixed and Base.",
                                     not_judged=not_judged, unseen_tasks=list(unseen))
        parts, raw = [], {}
        for upper, lower in ((self.fomaml, self.sft), (self.sft, self.base)):
            adv = {}
            for t in tasks:
                a, b = aligned(self.s.final(upper, t, 0), self.s.final(lower, t, 0))
                adv[t] = self.o.advantage(a, b)
                raw.setdefault(t, []).extend([a, b])
            parts.append(cluster_bootstrap_ci(list(adv.values()), n_boot=self.n_boot, seed=self.seed))
        (e1, lo1, hi1), (e2, lo2, hi2) = parts
        if all(self.o.at_bound(*raw[t]) for t in tasks):
            status = INCONCLUSIVE
        elif lo1 > 0 and lo2 > 0:
            status = MET
        elif hi1 < 0 or hi2 < 0:
            status = NOT_MET
        else:
            status = INCONCLUSIVE
        explanation = (f"Advantage on {len(tasks)} unseen task(s), {self.points}: FOMAML-SFT over SFT-Mixed "
                       f"{_interval(e1, lo1, hi1)}; SFT-Mixed over Base {_interval(e2, lo2, hi2)}; claim: both > 0."
                       + (f" Not judged: {not_judged}." if not_judged else ""))
        return self.verdict("H2", status, explanation, quantity="FOMAML-SFT minus SFT-Mixed, 0-shot",
                            estimate=e1, ci_lo=lo1, ci_hi=hi1, threshold=0.0,
                            evidence=dict(tasks=tasks, fomaml_over_sft=[e1, lo1, hi1], sft_over_base=[e2, lo2, hi2],
                                          not_judged=not_judged))

    def c2(self, unseen: Sequence[str]) -> Verdict:
        if not self.s.available:
            return self.unmeasurable("C2", f"No per-question scores: {self.s.why_unavailable}.")
        tasks, not_judged = self.zero_shot(unseen, [self.fomaml, self.sft])
        if not tasks:
            return self.unmeasurable("C2", "No unseen task has 0-shot results for FOMAML-SFT and SFT-Mixed.",
                                     not_judged=not_judged, unseen_tasks=list(unseen))
        advantages, raw = {}, {}
        for t in tasks:
            a, b = aligned(self.s.final(self.fomaml, t, 0), self.s.final(self.sft, t, 0))
            advantages[t], raw[t] = self.o.advantage(a, b), [a, b]
        # The design's "5%" read as 5 accuracy points; the loss has no such threshold: lower is the claim.
        threshold = 0.05 if self.o is ACCURACY else 0.0
        return self.macro("C2", f"FOMAML-SFT minus SFT-Mixed, 0-shot, {self.points}", advantages, raw,
                          threshold, not_judged)

    # ------------------------------------------------------------------ C3: significance, one family
    def c3(self, tasks: Sequence[str]) -> Verdict:
        if not self.s.available:
            return self.unmeasurable("C3", f"No per-question scores: {self.s.why_unavailable}.")
        rows = [row for t in tasks for n in self.s.shots(self.fomaml, t) if n >= 5
                for row in [paired_row(self.s, self.fomaml, self.sft, t, n, self.n_boot, self.seed)] if row]
        if not rows:
            return self.unmeasurable("C3", "No task was run at 5 or more shots by both models.", tasks=list(tasks))
        p_holm = holm([r["p"] for r in rows])
        sign = 1 if self.o.higher_is_better else -1
        family, per_task = [], {}
        for r, ph in zip(rows, p_holm):
            adv = sign * r["diff"]
            lo, hi = sorted([sign * r["ci_lo"], sign * r["ci_hi"]])
            entry = dict(task=r["task"], n_shots=r["n_shots"], advantage=adv, ci=[lo, hi], p=r["p"], p_holm=ph,
                         n_questions=r["n_questions"], n_seeds=r["n_seeds"], at_bound=r["at_bound"], mde=r["mde"])
            family.append(entry)
            per_task.setdefault(r["task"], []).append(entry)
        significant = [t for t, es in per_task.items() if any(e["advantage"] > 0 and e["p_holm"] < ALPHA for e in es)]
        excluded = [t for t, es in per_task.items() if all(e["ci"][1] < 0 for e in es)]
        at_bound = [t for t, es in per_task.items() if all(e["at_bound"] for e in es)]
        others = [t for t in per_task if t not in significant and t not in excluded]
        if len(significant) == len(per_task):
            status = MET
        elif excluded:
            status = NOT_MET
        else:
            status = INCONCLUSIVE
        explanation = (f"Family: {len(family)} comparisons (every task x shot level >= 5 of {', '.join(per_task)}), "
                       f"sign-flip test over questions, Holm-corrected over the family. Significantly better: "
                       f"{', '.join(significant) or 'none'}; worse at every level (interval below 0): "
                       f"{', '.join(excluded) or 'none'}; undecided: {', '.join(others) or 'none'}"
                       + (f" (both at floor/ceiling: {', '.join(at_bound)})" if at_bound else "") + ".")
        return self.verdict("C3", status, explanation, quantity="tasks with a significant advantage",
                            estimate=float(len(significant)), threshold=float(len(per_task)),
                            mde=max(e["mde"] for e in family),
                            evidence=dict(family=family, significant=significant, worse=excluded, undecided=others))

    # ------------------------------------------------------------------ C5: cross-domain
    def c5(self, cross: Sequence[str]) -> Verdict:
        if not self.s.available:
            return self.unmeasurable("C5", f"No per-question scores: {self.s.why_unavailable}.")
        advantages, raw, not_judged, levels = {}, {}, {}, {}
        for t in cross:
            shared = sorted(set(self.s.shots(self.fomaml, t)) & set(self.s.shots(self.sft, t)))
            if not shared:
                not_judged[t] = "no shot level run by both models"
                continue
            per_level = []
            for n in shared:
                seeds = sorted(set(self.s.seeds(self.fomaml, t, n)) & set(self.s.seeds(self.sft, t, n)))
                per_level.append((self.s.final(self.fomaml, t, n, seeds), self.s.final(self.sft, t, n, seeds)))
            common = per_level[0][0].index
            for a, b in per_level:
                common = common.intersection(a.index).intersection(b.index)
            f = np.mean([a.loc[common].to_numpy(float) for a, _ in per_level], axis=0)
            s = np.mean([b.loc[common].to_numpy(float) for _, b in per_level], axis=0)
            advantages[t], raw[t], levels[t] = self.o.advantage(f, s), [f, s], shared
        if not advantages:
            return self.unmeasurable("C5", "No cross-domain task has results for both models.",
                                     cross_domain_tasks=list(cross), not_judged=not_judged)
        return self.macro("C5", f"FOMAML-SFT minus SFT-Mixed on cross-domain tasks, mean over each task's shot "
                                f"levels, {self.points}", advantages, raw, 0.0, not_judged, dict(shot_levels=levels))

    # ------------------------------------------------------------------ H3, C4: adaptation speed
    def _speed_task(self, task: str, target: float) -> dict | str:
        """Steps to `target` of both models at the task's largest shot level with an adaptation curve,
        their ratio and its bootstrap interval over questions; or why there is none."""
        shared = sorted(set(self.s.shots(self.fomaml, task)) & set(self.s.shots(self.sft, task)), reverse=True)
        for n in (n for n in shared if n > 0):
            seeds = sorted(set(self.s.seeds(self.fomaml, task, n)) & set(self.s.seeds(self.sft, task, n)))
            f, s = self.s.by_step(self.fomaml, task, n, seeds), self.s.by_step(self.sft, task, n, seeds)
            if f.shape[1] >= 2 and s.shape[1] >= 2:
                break
        else:
            return "no shot level with 2+ recorded adaptation steps for both models"
        common = f.index.intersection(s.index)
        fv, sv = f.loc[common].to_numpy(float), s.loc[common].to_numpy(float)
        f_steps, s_steps = np.asarray(f.columns, float), np.asarray(s.columns, float)
        observed = _steps_ratio(_first_reach(fv.mean(0, keepdims=True), f_steps, target),
                                _first_reach(sv.mean(0, keepdims=True), s_steps, target))
        f_obs = float(_first_reach(fv.mean(0, keepdims=True), f_steps, target)[0])
        s_obs = float(_first_reach(sv.mean(0, keepdims=True), s_steps, target)[0])
        idx = np.random.default_rng(self.seed).integers(0, len(common), size=(self.n_boot, len(common)))
        ratios = _steps_ratio(_first_reach(np.nanmean(fv[idx], axis=1), f_steps, target),
                              _first_reach(np.nanmean(sv[idx], axis=1), s_steps, target))
        # an undefined replicate (neither reaches) widens the interval both ways
        lo = float(np.quantile(np.where(np.isnan(ratios), -np.inf, ratios), ALPHA / 2, method="inverted_cdf"))
        hi = float(np.quantile(np.where(np.isnan(ratios), np.inf, ratios), 1 - ALPHA / 2, method="inverted_cdf"))
        ratio = float(observed[0])
        if math.isnan(ratio):
            status = INCONCLUSIVE  # neither reaches the target
        elif lo >= SPEED_RATIO and ratio >= SPEED_RATIO:
            status = MET  # a ratio of recorded steps: an interval at exactly 2x supports "at least 2x"
        elif hi < SPEED_RATIO:
            status = NOT_MET
        else:
            status = INCONCLUSIVE
        return dict(n_shots=n, fomaml_steps=f_obs, sft_steps=s_obs, ratio=ratio, ci=[lo, hi], status=status,
                    fomaml_curve=dict(zip(f_steps.tolist(), fv.mean(0).tolist())),
                    sft_curve=dict(zip(s_steps.tolist(), sv.mean(0).tolist())), n_questions=len(common))

    def speed(self, name: str, tasks: Sequence[str], target: float) -> Verdict:
        if not self.s.available:
            return self.unmeasurable(name, f"No per-question scores: {self.s.why_unavailable}.")
        if self.o is not ACCURACY:
            return self.unmeasurable(name, "The design states adaptation speed as steps to a target accuracy; "
                                           "no target loss is defined.")
        judged, not_judged = {}, {}
        for t in tasks:
            result = self._speed_task(t, target)
            (judged if isinstance(result, dict) else not_judged)[t] = result
        evidence = dict(target_accuracy=target, per_task=judged, not_judged=not_judged)
        if name == "H3":
            evidence["design_ranges"] = {t: dict(fomaml_in_20_50=20 <= r["fomaml_steps"] <= 50,
                                                 sft_in_100_200=100 <= r["sft_steps"] <= 200) for t, r in judged.items()}
        if not judged:
            return self.unmeasurable(name, "No task has an adaptation curve (2+ recorded steps) for both models: "
                                     + "; ".join(f"{t}: {r}" for t, r in not_judged.items()) + ".", **evidence)
        statuses = {t: r["status"] for t, r in judged.items()}
        status = (MET if all(s == MET for s in statuses.values())
                  else NOT_MET if all(s == NOT_MET for s in statuses.values()) else INCONCLUSIVE)
        weakest = min(judged, key=lambda t: -math.inf if math.isnan(judged[t]["ratio"]) else judged[t]["ratio"])
        w = judged[weakest]
        shown = "; ".join(f"{t} at {r['n_shots']} shots: FOMAML-SFT {r['fomaml_steps']:g} vs SFT-Mixed "
                          f"{r['sft_steps']:g} steps, ratio {r['ratio']:.2g} [95% CI {r['ci'][0]:.2g}, {r['ci'][1]:.2g}]"
                          f" ({r['status']})" for t, r in judged.items())
        never = all(math.isnan(r["ratio"]) for r in judged.values())
        explanation = (f"Steps to accuracy {target:g}, SFT-Mixed's over FOMAML-SFT's (claim: >= {SPEED_RATIO:g}x): "
                       f"{shown}." + (" Neither model reaches the target on any task: a lower eval.target_acc, set "
                                      "before looking at test results, would measure speed." if never else "")
                       + (f" Not judged: {not_judged}." if not_judged else ""))
        return self.verdict(name, status, explanation, quantity=f"steps ratio on {weakest} (the weakest task)",
                            estimate=w["ratio"], ci_lo=w["ci"][0], ci_hi=w["ci"][1], threshold=SPEED_RATIO,
                            evidence=evidence)


def _first_reach(curves: np.ndarray, steps: np.ndarray, target: float) -> np.ndarray:
    """(R, S) accuracy curves at `steps` -> (R,) the first step reaching `target`, inf if none."""
    reached = curves >= target
    return np.where(reached.any(axis=1), steps[np.argmax(reached, axis=1)], np.inf)


def _steps_ratio(fomaml: np.ndarray, sft: np.ndarray) -> np.ndarray:
    """SFT-Mixed's steps over FOMAML-SFT's: inf when only FOMAML-SFT reaches the target (or at step
    0), 0 when only SFT-Mixed does, 1 when both start there, NaN when neither reaches it."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = sft / fomaml
    ratio = np.where(np.isinf(fomaml) & np.isfinite(sft), 0.0, ratio)
    ratio = np.where((fomaml == 0) & (sft == 0), 1.0, ratio)
    ratio = np.where((fomaml == 0) & (sft > 0), np.inf, ratio)
    return np.where(np.isinf(fomaml) & np.isinf(sft), np.nan, ratio)


def few_shot_tasks_of(scores: QuestionScores, fomaml: str, sft: str) -> list[str]:
    """Tasks both models ran at some n_shots > 0."""
    return [t for t in scores.tasks(fomaml)
            if any(n > 0 for n in scores.shots(fomaml, t)) and any(n > 0 for n in scores.shots(sft, t))]


def verdicts(
    cells: pd.DataFrame,
    predictions: pd.DataFrame | None,
    *,
    fomaml: str = "fomaml",
    sft: str = "sft_mixed",
    base: str = "base",
    unseen_tasks: Sequence[str] = (),
    cross_domain_tasks: Sequence[str] = (),
    few_shot_tasks: Sequence[str] | None = None,
    target_acc: float | None = None,
    n_boot: int = 10_000,
    outcome: Outcome = ACCURACY,
) -> list[Verdict]:
    """H1, H2, H3, C1..C5 for one run on one outcome (ACCURACY, the design's; or LOSS).

    few_shot_tasks: the tasks of the learning-curve claims (H1, H3, C1, C3, C4); None = every task
    FOMAML-SFT and SFT-Mixed both ran with n_shots > 0. target_acc: the accuracy H3 and C4 time;
    None = the design's 0.7.
    """
    check_columns(cells, CELL_COLUMNS, "cells")
    scores = QuestionScores(cells, predictions, outcome)
    judge = _Judge(scores, fomaml, sft, base, n_boot)
    if few_shot_tasks is None:
        tasks = few_shot_tasks_of(scores, fomaml, sft)
    else:
        tasks = [t for t in few_shot_tasks if t in few_shot_tasks_of(scores, fomaml, sft)]
    target = DESIGN_TARGET_ACC if target_acc is None else target_acc
    h3 = judge.speed("H3", tasks, target)
    return [
        judge.efficiency("H1", tasks, [10, 5], H1_RATIO),
        judge.h2(unseen_tasks),
        h3,
        judge.efficiency("C1", tasks, [10], C1_RATIO),
        judge.c2(unseen_tasks),
        judge.c3(tasks),
        judge.speed("C4", tasks, target),
        judge.c5(cross_domain_tasks),
    ]



def read_verdicts(path) -> list[Verdict]:
    """The verdicts `metasft report` wrote to `report/verdicts.json` (the inverse of `to_dict`)."""
    import json
    from dataclasses import fields
    from pathlib import Path

    names = {f.name for f in fields(Verdict)}

    def number(value):  # to_dict wrote NaN as None and infinities as "inf" / "-inf"
        return math.nan if value is None else float(value)

    out = []
    for row in json.loads(Path(path).read_text()):
        row = {k: v for k, v in row.items() if k in names}
        for key in ("estimate", "ci_lo", "ci_hi", "threshold", "mde"):
            if key in row:
                row[key] = number(row[key])
        out.append(Verdict(**row))
    return out


def summary_lines(verdicts: Sequence[Verdict]) -> list[str]:
    """One line per claim for a terminal: `H1           inconclusive    +0.012 [95% CI -0.050, +0.071]  (quantity)`."""
    width = max((len(v.label) for v in verdicts), default=0)
    lines = []
    for v in verdicts:
        number = _interval(v.estimate, v.ci_lo, v.ci_hi) if math.isfinite(v.estimate) else "-"
        tail = f"  ({v.quantity})" if v.quantity and math.isfinite(v.estimate) else ""
        lines.append(f"{v.label:<{width}}  {v.status:<15} {number}{tail}")
    return lines
