"""loom's imports run downward: no module imports another that imports it back (at any depth,
lazy imports inside functions included), and every import between loom's parts goes to a lower
layer. Read from the source with `ast`, so nothing is imported to check it."""

import ast
from pathlib import Path

import loom

PACKAGE = Path(loom.__file__).parent

# loom's parts, lowest first. A part may import its own modules and the parts of lower layers;
# parts in one layer know nothing of each other.
LAYERS = [
    {"loom", "errors"},
    {"util"},
    {"tokenizer", "model", "sandbox"},
    {"data", "chat"},  # chat: conversations and the chat template, over the tokenizer
    {"config"},  # its defaults and checks take the data stage's tables (quality, dedup, sources)
    {"checkpoint"},  # reading and writing checkpoints, below everything that loads a model
    {"train"},
    {"eval"},
    {"reason", "serve", "export"},  # export: runs as Hugging Face checkpoints
    {"pipeline", "doctor", "launch"},  # launch: hands runs to Slurm or Ray, reads their status
    {"cli"},
    {"__main__"},
]
RANK = {part: rank for rank, layer in enumerate(LAYERS) for part in layer}
UPPER_STAGES = {"data", "train", "eval", "reason", "serve", "launch", "export"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("loom", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The loom modules `name` imports. `from P import N` imports module P.N when N is one, else
    P itself (a package's __init__ is not counted as imported by its own submodules' imports)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def part_of(module: str) -> str:
    return module.split(".")[1] if "." in module else "loom"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "loom.model.moe" in graph["loom.model.gpt"]  # a top-level import
    assert "loom.data.card" in graph["loom.data.build"]  # imported inside a function
    assert "loom.data.dedup" in graph["loom.data.clean"]  # `from loom.data import dedup`: the module
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_itself_back():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_part_of_loom_has_a_layer():
    unknown = sorted({part_of(m) for m in import_graph()} - set(RANK))
    assert not unknown, f"add {unknown} to LAYERS in {__file__}"


def test_imports_between_parts_run_downward():
    wrong = [f"{m} -> {d}" for m, deps in import_graph().items() for d in sorted(deps)
             if part_of(m) != part_of(d) and RANK.get(part_of(d), -1) >= RANK.get(part_of(m), -1)]
    assert not wrong, "imports that do not go to a lower layer:\n  " + "\n  ".join(wrong)


def test_the_model_knows_nothing_of_the_stages_above_it():
    wrong = [f"{m} -> {d}" for m, deps in import_graph().items() if part_of(m) == "model"
             for d in deps if part_of(d) in UPPER_STAGES | {"config", "checkpoint", "pipeline", "cli"}]
    assert not wrong
