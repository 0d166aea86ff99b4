"""The arms of the study, declared once: each arm's name, display style, training routine, budget rule
and the config settings it overrides. matrix, train, plan and report read them from here; adding an
arm is one entry in `ARMS` plus its training routine.

    kind      "meta": a meta-learning run (support + query per task, outer steps; the matrix pairs it
              with an SFT-Mixed run at its example budget); "sft": plain SFT on a pool; "none": trains
              nothing (the base model's fresh LoRA)
    routine   "module:function" of its training routine, called by metasft.train.run with
              (cfg, out, model, named, save_adapter, data_dir, tokenizer, specs, val_sets, record) and
              returning (Budget, manifest extras); None for kind "none"
    budget    "meta": total_steps x tasks x examples per task; "matched": a meta run's examples (x
              data.budget_scale); "epochs": total_epochs over its own pool; "none"
    overrides dotted config keys the arm sets on its run whatever the config says
    zero_shot_only  evaluated 0-shot only: the report reads no other cell of it (Baseline 2, the upper
              reference, is scored as trained)
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Arm:
    name: str
    label: str                 # the display name in the report and figures
    color: str
    marker: str
    linestyle: str | tuple
    kind: str                  # meta | sft | none
    routine: str | None
    budget: str                # meta | matched | epochs | none
    overrides: dict = field(default_factory=dict)
    zero_shot_only: bool = False


# Okabe-Ito colours (distinguishable with the common colour-vision deficiencies); markers and line
# styles differ too, so arms that coincide (all at accuracy 0) stay told apart in grey print.
ARMS: dict[str, Arm] = {a.name: a for a in (
    Arm("fomaml", "FOMAML-SFT", "#D55E00", "o", "-", "meta", "metasft.train.run:run_meta", "meta"),
    Arm("sft_mixed", "SFT-Mixed", "#0072B2", "s", "--", "sft", "metasft.train.run:run_sft", "matched"),
    Arm("base", "Base", "#666666", "^", ":", "none", None, "none"),
    Arm("reptile", "Reptile-SFT", "#E69F00", "D", "-.", "meta", "metasft.train.run:run_meta", "meta",
        {"meta.algorithm": "reptile"}),
    Arm("sft_task", "SFT-Task", "#009E73", "v", (0, (5, 1, 1, 1)), "sft", "metasft.train.run:run_sft", "epochs",
        zero_shot_only=True),
)}


def names() -> tuple[str, ...]:
    """Every arm's name, in declaration order."""
    return tuple(ARMS)


def of_kind(kind: str) -> tuple[str, ...]:
    """The names of the arms of `kind` (meta | sft | none)."""
    return tuple(a.name for a in ARMS.values() if a.kind == kind)


def setting(arm: str, key: str, value):
    """The value of dotted config `key` on a run of `arm`: the arm's override, else the config's `value`."""
    spec = ARMS.get(arm)
    return spec.overrides.get(key, value) if spec is not None else value
