"""`metasft ls`: the experiment directories under a path (or one directory), what a checkout ships
(`--configs`: configs with their opening comment, the registered sources), and the tasks of a config."""
from __future__ import annotations

import importlib
import os
import textwrap
from pathlib import Path

import yaml

from metasft.config import Config
from metasft.data.sources import SOURCE_MODULES, describe_origin
from metasft.errors import MetasftError
from metasft.manifests import (STARTED, ExperimentManifest, TrainManifest, manifest_status, read_manifest,
                               stage_rank)
from metasft.rundir import CONFIG_FILE, EVAL_CONFIG, MANIFEST, REPORT_DIR, VERDICTS_FILE, dir_kind

WIDTH = 100  # descriptions are wrapped, never cut


def config_comment(path: Path) -> tuple[str, str]:
    """(command, description) from a YAML's opening comment block: its first line (the command that
    runs it, STYLE.md) and the first paragraph after it (up to an empty comment line), whole."""
    lines = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    paragraph = []
    for line in lines[1:]:
        if not line:
            break
        paragraph.append(line)
    return (lines[0] if lines else "", " ".join(paragraph))


def shipped_configs(root: Path) -> list[tuple[str, str, str]]:
    """(path relative to root's parent, command, description) for every YAML under `root`."""
    return [(str(p.relative_to(root.parent)), *config_comment(p)) for p in sorted(root.rglob("*.yaml"))]


def sources() -> list[tuple[str, str]]:
    """(name, first line of its module docstring) for every built-in source."""
    out = []
    for name, module in sorted(SOURCE_MODULES.items()):
        doc = importlib.import_module(f"metasft.data.sources.{module}").__doc__ or ""
        out.append((name, " ".join(doc.strip().split("\n\n")[0].split())))  # the docstring's first paragraph
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


def catalogue(config_root: Path) -> str:
    """The text `metasft ls --configs` prints: every shipped config (its command and description)
    and every built-in source."""
    parts = []
    if config_root.is_dir():
        parts.append(f"configs ({config_root}):")
        for rel, command, description in shipped_configs(config_root):
            parts.append(f"  {rel}")
            if command:
                parts.append(f"      {command}")
            parts += textwrap.wrap(description, WIDTH, initial_indent="      ", subsequent_indent="      ",
                               break_on_hyphens=False)
        parts.append("")
    parts.append("sources (data.tasks / data.eval_tasks `source:`; your own files: data.sources, see README):")
    width = max(len(n) for n, _ in sources())
    for name, doc in sources():
        parts += textwrap.wrap(doc, WIDTH, initial_indent=f"  {name:<{width}}  ",
                               subsequent_indent=" " * (width + 4), break_on_hyphens=False)
        parts += textwrap.wrap(f"from: {describe_origin(name)}", WIDTH, initial_indent=" " * (width + 4),
                               subsequent_indent=" " * (width + 10), break_on_hyphens=False)
    return "\n".join(parts)


def config_tasks(cfg: Config, config_name: str) -> str:
    """The text `metasft ls CONFIG` prints: the config's own sources and its tasks."""
    parts = [f"data.sources {s.name}: {s.path or s.hub} (columns {vars(s.columns)})" for s in cfg.data.sources]
    parts.append(f"tasks of {config_name}:")
    rows = tasks(cfg)
    parts.append(table(["kind", "task", "source", "subjects", "levels", "split", "sizes", "flags"], rows)
                 if rows else "  (none)")
    return "\n".join(parts)


# ------------------------------------------------------------------------------ output directories
KIND_NAMES = {"run": "experiment", "train": "training run", "eval": "evaluation", "data": "data build"}
_MAX_DEPTH = 4  # how far below the given path `metasft ls DIR` looks for output directories


def output_dirs(root: Path) -> list[Path]:
    """The directories a metasft command wrote (a manifest.json of a known kind, or an old evaluation)
    at or below `root`, at most _MAX_DEPTH levels down; nothing inside one of them (an experiment's
    runs/, dataset/, eval/ are its parts), no hidden directories."""
    found = []
    for here, dirs, _ in os.walk(root):
        here = Path(here)
        if dir_kind(here) is not None:
            found.append(here)
            dirs.clear()
            continue
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < _MAX_DEPTH else []
    return found


def _config_name(path: Path) -> str:
    """The `name:` of the directory's resolved config (config.yaml, or an evaluation's eval_config.yaml)."""
    for file in (CONFIG_FILE, EVAL_CONFIG):
        if (path / file).is_file():
            try:
                raw = yaml.safe_load((path / file).read_text())
            except (yaml.YAMLError, OSError):
                return f"({file} unreadable)"
            return str(raw["name"]) if isinstance(raw, dict) and "name" in raw else f"({file} has no name)"
    return "-"


def _status(path: Path, kind: str) -> str:
    """What is done: an experiment's finished stages (and those that are not), another directory's status."""
    if kind == "train":
        try:
            run = read_manifest(path, TrainManifest)
        except MetasftError as e:
            return "started, nothing recorded yet" if STARTED in str(e) else f"manifest unreadable: {e}"
        return f"arm {run.arm}, {run.status}"
    if kind != "run":  # a data build's or an evaluation's manifest is written when it is done
        if not (path / MANIFEST).is_file():
            return "results without a manifest"
        try:
            return "started, nothing recorded yet" if manifest_status(path) == STARTED else "written"
        except MetasftError as e:
            return f"manifest unreadable: {e}"
    try:
        manifest = read_manifest(path, ExperimentManifest)
    except MetasftError as e:
        return "started, nothing recorded yet" if STARTED in str(e) else f"manifest unreadable: {e}"
    stages = manifest.stages
    done = [n for n, s in stages.items() if s.status == "finished"]
    text = f"{len(done)} of {len(stages)} stages finished"
    rest = [f"{n} {s.status}" for n, s in stages.items() if s.status != "finished"]
    return text + (f" ({', '.join(rest)})" if rest else "")


def verdict_line(path: Path) -> str:
    """The primary claims' statuses on accuracy from report/verdicts.json, then how many exploratory
    claims were met: 'H1 inconclusive, H2 not met, H3 inconclusive; exploratory: 1 of 5 met'."""
    from metasft.stats.verdicts import PRIMARY, read_verdicts
    file = path / REPORT_DIR / VERDICTS_FILE
    if not file.is_file():
        return "no report yet"
    try:
        verdicts = [v for v in read_verdicts(file) if v.outcome == "accuracy"]
    except (ValueError, KeyError, TypeError, OSError) as e:
        return f"report/verdicts.json unreadable ({type(e).__name__})"
    primary = [f"{v.name} {v.status}" for v in verdicts if v.role == PRIMARY]
    other = [v for v in verdicts if v.role != PRIMARY]
    met = sum(v.status == "met" for v in other)
    return "; ".join(x for x in (", ".join(primary), f"exploratory: {met} of {len(other)} met" if other else "") if x)


def directories(root: Path) -> str:
    """The text `metasft ls DIR` prints: one row per output directory at or below DIR (path relative
    to DIR, what wrote it, its config's name, what is done, the verdict line); for DIR itself an
    experiment, also its stages and every verdict."""
    root = Path(root)
    found = output_dirs(root)
    if not found:
        return (f"{root}: no experiment directories here or below (none holds a metasft manifest.json); "
                f"`metasft ls --configs` lists the shipped configs")
    rows = []
    for path in found:
        kind = dir_kind(path)
        rows.append([str(path.relative_to(root)) if path != root else str(root), KIND_NAMES[kind], _config_name(path),
                     _status(path, kind), verdict_line(path) if kind == "run" else "-"])
    parts = [table(["directory", "kind", "config", "done", "verdicts (accuracy)"], rows)]
    if found == [root] and dir_kind(root) == "run":
        parts += ["", *_experiment_detail(root)]
    return "\n".join(parts)


def _experiment_detail(path: Path) -> list[str]:
    from metasft.stats.verdicts import read_verdicts, summary_lines
    lines = []
    try:
        stages = read_manifest(path, ExperimentManifest).stages
    except MetasftError:
        stages = {}
    if stages:
        lines.append("stages:")
        lines += [f"  {name:<24} {s.status}" + (f"  {s.seconds:,.0f} s" if s.seconds is not None else "")
                  for name, s in sorted(stages.items(), key=lambda kv: stage_rank(kv[0]))]
    if (path / REPORT_DIR / VERDICTS_FILE).is_file():
        lines.append("verdicts (status, the estimate behind it; details in report/report.html):")
        lines += ["  " + line for line in summary_lines(read_verdicts(path / REPORT_DIR / VERDICTS_FILE))]
    return lines
