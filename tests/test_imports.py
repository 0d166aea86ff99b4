"""The import graph of src/metasft, imports inside functions included (an `if TYPE_CHECKING:` block is
an annotation, not an import): no circles, no module importing a layer above its own, no private
name (or private module) imported from outside its owner."""
from __future__ import annotations

import ast
from pathlib import Path

import metasft

SRC = Path(metasft.__file__).parent

# Lowest first. A module may import its own layer or one below; the longest matching prefix decides.
LAYERS = [
    ("metasft", "metasft.errors", "metasft.arms", "metasft.heap"),
    ("metasft.rundir", "metasft.manifests", "metasft.data.records", "metasft.answers", "metasft.progress"),
    ("metasft.data.sources", "metasft.data.cot", "metasft.data.formats", "metasft.data.tasks", "metasft.data.store",
     "metasft.data.stats"),
    ("metasft.config",),
    ("metasft.budget", "metasft.matrix", "metasft.models", "metasft.data.build"),
    ("metasft.train",),
    ("metasft.eval",),
    ("metasft.stats",),
    ("metasft.report",),
    ("metasft.fingerprint", "metasft.pipeline", "metasft.compare", "metasft.plan", "metasft.catalog",
     "metasft.launch", "metasft.rehearse"),
    ("metasft.cli", "metasft.__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    best = max(((len(p), i) for i, prefixes in enumerate(LAYERS) for p in prefixes
                if module == p or module.startswith(p + ".")), default=None)
    assert best is not None, f"{module} has no layer in tests/test_imports.py LAYERS"
    return best[1]


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside `if TYPE_CHECKING:` blocks."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def imports(module: str, source: str, modules: set[str]) -> list[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) of every metasft import in `source`."""
    tree = ast.parse(source)
    skip = _type_checking_only(tree)
    package = module if module in _packages(modules) else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names if a.name.split(".")[0] == "metasft"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "metasft":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((node.lineno, sub, None) if sub in modules else (node.lineno, target, a.name))
    return out


def _packages(modules: set[str]) -> set[str]:
    return {m for m in modules if (SRC.parent / m.replace(".", "/") / "__init__.py").is_file()}


def graph() -> dict[str, list[tuple[int, str, str | None]]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    return {m: imports(m, p.read_text(), set(files)) for m, p in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def private(module: str, target: str, name: str | None) -> bool:
    """Whether importing `name` from `target` (or module `target`) reaches into someone else's privates."""
    def is_private(part):
        return part.startswith("_") and not (part.startswith("__") and part.endswith("__"))
    if name is not None and is_private(name) and target != module:
        return True
    parts = target.split(".")
    for i, part in enumerate(parts):
        if is_private(part):
            owner = ".".join(parts[:i])  # a private module is its package's own
            return not (module == owner or module.startswith(owner + "."))
    return False


def test_no_import_cycles():
    g = graph()
    edges = {m: {t for _, t, _ in imps if t != m and t in g} for m, imps in g.items()}
    assert not cycles(edges), f"import cycles: {cycles(edges)}"


def test_no_upward_imports():
    found = [f"{m}:{line} imports {t} (layer {layer(t)} above {layer(m)})"
             for m, imps in graph().items() for line, t, _ in imps if layer(t) > layer(m)]
    assert not found, "\n".join(found)


def test_no_private_names_across_modules():
    found = [f"{m}:{line} imports {t}{'.' + n if n else ''}"
             for m, imps in graph().items() for line, t, n in imps if private(m, t, n)]
    assert not found, "\n".join(found)


def test_the_checks_find_a_cycle_an_upward_import_and_a_private_name():
    mods = {"metasft.config", "metasft.matrix", "metasft.train.loss", "metasft.eval.grid_eval"}
    src = "def f():\n    from metasft.matrix import check\nif TYPE_CHECKING:\n    from metasft.cli import main\n"
    assert imports("metasft.config", src, mods) == [(2, "metasft.matrix", "check")]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer("metasft.report.load") < layer("metasft.pipeline")  # report.load -> pipeline would be upward
    assert private("metasft.eval.grid_eval", "metasft.train.loss", "_decoder_and_head")
    assert private("metasft.data.build", "metasft.data.sources._files", None)
    assert not private("metasft.data.sources.math", "metasft.data.sources._files", None)
    assert not private("metasft.cli", "metasft", "__version__")
