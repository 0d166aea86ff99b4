"""Statistics over evaluation results: clustered paired tests, learning curves, and the design's verdicts."""
from metasft.stats.compare import COMPARISON_COLUMNS, compare_models
from metasft.stats.curves import (
    accuracy_at,
    adaptation_gap,
    adaptation_speed,
    final_step,
    sample_efficiency,
    sample_efficiency_interpolated,
    summarize,
)
from metasft.stats.questions import ACC_AT_K, ACCURACY, LOSS, STEP_CORRECTNESS, Outcome, QuestionScores
from metasft.stats.significance import (TTest, cluster_bootstrap_ci, holm, paired_ttest, sign_flip_test,
                                        stars)
from metasft.stats.verdicts import INCONCLUSIVE, MET, NOT_MET, STATUSES, UNMEASURABLE, Verdict, verdicts

__all__ = [
    "ACC_AT_K", "ACCURACY", "COMPARISON_COLUMNS", "INCONCLUSIVE", "LOSS", "MET", "NOT_MET", "Outcome", "QuestionScores",
    "STEP_CORRECTNESS", "STATUSES", "TTest", "UNMEASURABLE", "Verdict", "accuracy_at", "adaptation_gap", "adaptation_speed",
    "cluster_bootstrap_ci", "compare_models", "final_step", "holm", "paired_ttest", "sample_efficiency",
    "sample_efficiency_interpolated", "sign_flip_test", "stars", "summarize", "verdicts",
]
