"""The contracts between stages are defined once: no module restates the results schema."""
from __future__ import annotations

import ast
from pathlib import Path

import metasft
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
