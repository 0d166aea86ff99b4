"""`metasft ls`: what a checkout ships (configs with their opening comment), the registered sources,
and the tasks of a data config."""
from __future__ import annotations

import importlib
from pathlib import Path

from metasft.config import Config
from metasft.data.sources import SOURCE_MODULES, describe_origin


def config_comment(path: Path) -> tuple[str, str]:
    """(command, description) from a YAML's opening comment block: its first line (the command that
    runs it, STYLE.md) and the next comment line, if any."""
    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return (lines[0] if lines else "", lines[1] if len(lines) > 1 else "")


def shipped_configs(root: Path) -> list[tuple[str, str, str]]:
    """(path relative to root's parent, command, description) for every YAML under `root`."""
    return [(str(p.relative_to(root.parent)), *config_comment(p)) for p in sorted(root.rglob("*.yaml"))]


def sources() -> list[tuple[str, str]]:
    """(name, first line of its module docstring) for every built-in source."""
    out = []
    for name, module in sorted(SOURCE_MODULES.items()):
        doc = importlib.import_module(f"metasft.data.sources.{module}").__doc__ or ""
        first = " ".join(doc.strip().split("\n\n")[0].split())  # the docstring's first paragraph
        out.append((name, first if len(first) <= 100 else first[:99] + "…"))
    return out


def tasks(cfg: Config) -> list[list[str]]:
    """Rows [kind, name, source, subjects, levels, splits, shots / sizes, flags] of a config's tasks."""
    rows = []
    for t in cfg.data.tasks:
        subjects = [t.subject] if t.subject else t.subjects
        counts = ", ".join(f"{k}={v}" for k, v in (("support", t.support_max_samples), ("query", t.query_max_samples),
                                                     ("size", t.size)) if v is not None)
        rows.append(["meta", t.name, t.source, ",".join(subjects) or "all", ",".join(map(str, t.levels)) or "all",
                     t.split, counts or "ratios", ""])
    for t in cfg.data.eval_tasks:
        subjects = [t.subject] if t.subject else t.subjects
        levels = t.levels or ([t.level] if t.level else [])
        flags = ",".join(f for f, on in (("unseen", t.unseen), ("cross_domain", t.cross_domain)) if on)
        rows.append(["eval", t.name, t.source, ",".join(subjects) or "all", ",".join(map(str, levels)) or "all",
                     f"{t.split}/{t.shots_split}", f"shots {t.n_shots}, test {t.test_size}", flags])
    return rows


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def listing(config_root: Path, cfg: Config | None = None, config_name: str = "") -> str:
    """The text `metasft ls [DATA_CONFIG]` prints."""
    parts = []
    if config_root.is_dir():
        parts.append(f"configs ({config_root}):")
        for rel, command, description in shipped_configs(config_root):
            parts.append(f"  {rel}" + (f"  {description}" if description else ""))
            if command:
                parts.append(f"      {command}")
    parts.append("")
    parts.append("sources (data.tasks / data.eval_tasks `source:`; your own files: data.sources, see README):")
    width = max(len(n) for n, _ in sources())
    for name, doc in sources():
        parts += [f"  {name:<{width}}  {doc}", f"  {'':<{width}}  from: {describe_origin(name)}"]
    if cfg is not None:
        parts.append("")
        for s in cfg.data.sources:
            parts.append(f"data.sources {s.name}: {s.path or s.hub} (columns {vars(s.columns)})")
        parts.append(f"tasks of {config_name}:")
        rows = tasks(cfg)
        parts.append(table(["kind", "task", "source", "subjects", "levels", "split", "sizes", "flags"], rows)
                     if rows else "  (none)")
    return "\n".join(parts)
