"""`metasft data stats`: the manifest's counts per task, split and level as a table, where each source
was read from, and whether each eval task's shots show working."""
from __future__ import annotations

from pathlib import Path

from metasft.data.records import DataError
from metasft.manifests import DataManifest, manifest_path, read_manifest
from metasft.rundir import DATASET_DIR


def stats_table(data_dir: Path) -> str:
    """A plain-text table: one row per (task, split) with the total and the count per level."""
    directory = Path(data_dir)
    if manifest_path(directory / DATASET_DIR).is_file():
        directory = directory / DATASET_DIR  # an experiment directory of `metasft run`
    if not manifest_path(directory).is_file():
        raise DataError(f"{manifest_path(directory)}: not found; expected a directory written by `metasft data build`")
    manifest = read_manifest(directory, DataManifest)
    rows = [(kind, name, task.source, split, counts.n, counts.levels)
            for kind, tasks in (("meta", manifest.tasks), ("eval", manifest.eval_tasks))
            for name, task in tasks.items() for split, counts in task.splits.items()]
    levels = sorted({lv for *_, lvs in rows for lv in lvs}, key=lambda x: (x == "none", x))
    header = ["kind", "task", "source", "split", "n"] + [f"L{lv}" if lv != "none" else "no level" for lv in levels]
    body = [[kind, name, src, split, str(n)] + [str(lvs.get(lv, 0)) for lv in levels]
            for kind, name, src, split, n, lvs in rows]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in body]
    removed = manifest.dedup_removed
    if removed:
        lines.append("")
        lines.append("removed as duplicates: " + ", ".join(f"{k}={v}" for k, v in removed.items()))
    if manifest.sources:
        lines.append("")
        lines += [f"{name}: {s.kind}" + (f" under {s.root}" if s.root else "") + (f": {', '.join(s.read)}" if s.read else "")
                  for name, s in manifest.sources.items()]
    worked = {name: t for name, t in manifest.eval_tasks.items() if t.shots_worked is not None}
    if worked:
        lines.append("")
        lines.append("shots that show working: " + ", ".join(
            f"{name} {t.shots_worked:.0%}" + ("" if t.shots_reason else " (answer-only)") for name, t in worked.items()))
    return "\n".join(lines)
