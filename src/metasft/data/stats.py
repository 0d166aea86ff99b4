"""`metasft data stats`: the manifest's counts per task, split and level as a table."""
from __future__ import annotations

from pathlib import Path

from metasft.data.records import DataError
from metasft.rundir import read_json


def stats_table(data_dir: Path) -> str:
    """A plain-text table: one row per (task, split) with the total and the count per level."""
    path = Path(data_dir) / "manifest.json"
    if (Path(data_dir) / "dataset" / "manifest.json").is_file():
        path = Path(data_dir) / "dataset" / "manifest.json"  # an experiment directory of `metasft run`
    if not path.is_file():
        raise DataError(f"{path}: not found; expected a directory written by `metasft data build`")
    try:
        manifest = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); expected a directory written by `metasft data build`") from None
    if not isinstance(manifest, dict) or "tasks" not in manifest or "eval_tasks" not in manifest:
        raise DataError(f"{path}: not a data manifest (no tasks / eval_tasks); expected a directory written by "
                        f"`metasft data build` or an experiment directory holding dataset/")
    rows = []
    for group in ("tasks", "eval_tasks"):
        for name, task in manifest[group].items():
            for split, info in task["splits"].items():
                rows.append((group.replace("_tasks", "").replace("tasks", "meta"), name, task["source"], split,
                             info["n"], info["levels"]))
    levels = sorted({lv for *_, lvs in rows for lv in lvs}, key=lambda x: (x == "none", x))
    header = ["kind", "task", "source", "split", "n"] + [f"L{lv}" if lv != "none" else "no level" for lv in levels]
    body = [[kind, name, src, split, str(n)] + [str(lvs.get(lv, 0)) for lv in levels]
            for kind, name, src, split, n, lvs in rows]
    widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    lines = [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in body]
    removed = manifest.get("dedup_removed") or {}
    if removed:
        lines.append("")
        lines.append("removed as duplicates: " + ", ".join(f"{k}={v}" for k, v in removed.items()))
    return "\n".join(lines)
