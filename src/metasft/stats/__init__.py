"""Statistics over evaluation results: paired tests, learning curves, and the design's verdicts."""
from metasft.stats.compare import compare_models
from metasft.stats.curves import (
    accuracy_at,
    adaptation_gap,
    adaptation_speed,
    final_step,
    sample_efficiency,
    sample_efficiency_interpolated,
    summarize,
)
from metasft.stats.significance import holm, paired_bootstrap_ci, paired_ttest, stars
from metasft.stats.verdicts import MET, NOT_MET, UNMEASURABLE, Verdict, verdicts

__all__ = [
    "MET", "NOT_MET", "UNMEASURABLE", "Verdict", "accuracy_at", "adaptation_gap", "adaptation_speed",
    "compare_models", "final_step", "holm", "paired_bootstrap_ci", "paired_ttest", "sample_efficiency",
    "sample_efficiency_interpolated", "stars", "summarize", "verdicts",
]
