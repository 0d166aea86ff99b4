"""The contracts between stages are defined once: no module restates the results schema."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import metasft
from conftest import CONFIGS
from metasft.config import NO_STAGE, Config, config_fields, load_config, used_by
from metasft.eval.results import CELL_COLUMNS, PREDICTION_COLUMNS

SRC = Path(metasft.__file__).parent
SCHEMA_MODULES = {"eval/results.py"}
COLUMNS = set(CELL_COLUMNS) | set(PREDICTION_COLUMNS)


def _column_lists(tree: ast.AST):
    """(line, names) of every list / tuple literal of 4+ strings that are all results columns (a key
    pair or triple in a groupby is a use, not a definition)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)) and len(node.elts) >= 4:
            names = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(names) == len(node.elts) and all(n in COLUMNS for n in names):
                yield node.lineno, names


def test_no_module_restates_the_results_columns():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in SCHEMA_MODULES:
            continue
        found += [f"{rel}:{line}: {names}" for line, names in _column_lists(ast.parse(path.read_text()))]
    assert not found, "results columns written out again (import them from metasft.eval.results):\n" + "\n".join(found)


def test_the_check_finds_a_restated_list():
    tree = ast.parse('COLS = ["model", "task", "n_shots", "accuracy"]\nKEYS = ["model", "task"]\n'
                     'HEADER = ("task", "model", "N-shot", "accuracy")\n')
    assert [line for line, _ in _column_lists(tree)] == [1]


def test_data_directory_paths_come_from_rundir():
    """The built data directory's file names are built in one place (rundir.meta_train_file /
    eval_task_file), not as f-strings in each stage."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "rundir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
                if "meta_train/" in text or "data/eval/" in text or text.endswith(".parquet"):
                    found.append(f"{rel}:{node.lineno}")
    assert not found, "data paths built outside rundir: " + ", ".join(found)


MANIFEST_MODULES = {"manifests.py", "rundir.py"}


def _manifest_reads(tree: ast.AST):
    """Lines that build a manifest path by hand (`d / "manifest.json"`) or read a manifest as a dict
    (`<a name with "manifest">.get(...)`; `manifest.stages.get` reads a typed field's dict)."""
    for node in ast.walk(tree):
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                and node.right.value == "manifest.json"):
            yield node.lineno
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            receiver = node.func.value
            name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
            if "manifest" in name.lower():
                yield node.lineno


def test_manifests_are_read_through_their_schema():
    """Every manifest is a typed dataclass read by metasft.manifests.read_manifest (a renamed key is
    an error there, not a silent default in the reader)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel not in MANIFEST_MODULES:
            found += [f"{rel}:{line}" for line in _manifest_reads(ast.parse(path.read_text()))]
    assert not found, "manifests read outside metasft.manifests: " + ", ".join(found)


def test_the_manifest_check_finds_a_raw_read():
    tree = ast.parse('m = json.loads((d / "manifest.json").read_text())\nx = data_manifest.get("files", {})\n'
                     'y = cfg.get("files")\nz = self.manifest.stages.get(name)\nw = "Source: manifest.json"\n')
    assert sorted(set(_manifest_reads(tree))) == [1, 2]


# ------------------------------------------------------------------- what each config field changes
@dataclass
class _Section:
    declared: int = field(default=1, metadata=used_by("eval"))
    undeclared: int = 2


@dataclass
class _ToyConfig:
    section: _Section = field(default_factory=_Section)
    top: str = "x"
    fine: str = field(default="y", metadata=NO_STAGE)


def undeclared(cls) -> list[str]:
    """The leaf config fields of `cls` that declare no `used_by` (what depends on them)."""
    return [key for key, f in config_fields(cls) if "used_by" not in f.metadata]


def test_every_config_field_declares_what_depends_on_it():
    """The stage fingerprints, the resume check and compare read config.used_by: a field without it
    would be in no fingerprint, and a rerun after changing it would not notice."""
    assert not undeclared(Config), "config fields without used_by(...) metadata: " + ", ".join(undeclared(Config))


def test_the_declaration_check_finds_an_undeclared_field():
    assert undeclared(_ToyConfig) == ["section.undeclared", "top"]


def test_a_stage_fingerprint_holds_exactly_its_declared_fields():
    """Changing a field changes the fingerprint of the stages that declare it, and of no other stage
    upstream of them (independently: flip each declared field, compare the plans)."""
    import dataclasses as dc
    from metasft.fingerprint import plan
    cfg = load_config(CONFIGS / "tiny" / "experiment.yaml")
    runs = [("fomaml", "fomaml", None), ("sft_mixed", "sft_mixed", "fomaml"), ("base", "base", None)]
    before = plan(cfg, runs, None)
    for key, value in (("eval.adaptation_lr", 0.5), ("eval.batch_size", 3), ("trainer.log_freq", 7),
                       ("eval.target_acc", 0.9), ("meta.inner_lr", 0.5)):
        section, name = key.split(".")
        changed = dc.replace(cfg, **{section: dc.replace(getattr(cfg, section), **{name: value})})
        after = plan(changed, runs, None)
        direct = {s for s in before if before[s].get(key) != after[s].get(key)}
        uses = dict(config_fields())[key].metadata["used_by"]
        expect = {s for s in before if s.split("/")[0] in uses or (s == "train/fomaml" and "train.meta" in uses)}
        assert direct == expect, (key, direct, expect)


# ---------------------------------------------------------------------------- the run directories' layout
TESTS = Path(__file__).parent
LAYOUT_MODULE = SRC / "rundir.py"


def layout_names() -> dict[str, str]:
    """{file or folder name: its constant} of the run-directory layout (metasft.rundir.LAYOUT_NAMES)."""
    from metasft import rundir
    return {value: name for name, value in vars(rundir).items()
            if name.isupper() and isinstance(value, str) and value in rundir.LAYOUT_NAMES}


def _restated(tree: ast.AST, names: dict[str, str]):
    """(line, name) of each layout name written out: a string constant equal to a name with a dot in
    it (`"results.sqlite"`), or any layout name as a path component (`out / "eval"`, `"eval" / x`)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "." in node.value and node.value in names:
            yield node.lineno, node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, str):
                    parts = [p for p in side.value.split("/") if p]
                    if any(p in names for p in parts) and "." not in side.value or side.value in names:
                        yield side.lineno, side.value


def test_run_directory_names_come_from_the_layout():
    names = layout_names()
    found = []
    for path in sorted([*SRC.rglob("*.py"), *TESTS.rglob("*.py")]):
        if path == LAYOUT_MODULE or path == Path(__file__):
            continue
        rel = path.relative_to(SRC.parent.parent if path.is_relative_to(SRC) else TESTS.parent).as_posix()
        found += [f"{rel}:{line}: {value!r} (metasft.rundir.{names.get(value, '')})"
                  for line, value in sorted(set(_restated(ast.parse(path.read_text()), names)))]
    assert not found, "run-directory names written out again (import them from metasft.rundir):\n" + "\n".join(found)


def test_the_layout_check_finds_a_restated_name():
    names = {"results.sqlite": "RESULTS_FILE", "eval": "EVAL_DIR", "manifest.json": "MANIFEST"}
    tree = ast.parse('a = out / "eval" / "results.sqlite"\nb = "results.sqlite"\nc = cfg.eval\n'
                     'd = {"eval": 1}\ne = "see eval/results.sqlite"\nf = out / "eval/x"\n')
    assert sorted(set(_restated(tree, names))) == [(1, "eval"), (1, "results.sqlite"), (2, "results.sqlite"),
                                                   (6, "eval/x")]
