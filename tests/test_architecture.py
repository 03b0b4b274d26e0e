"""The package's layers, in one place, and the rules that keep them: a module imports only
modules of its own layer or lower ones, the import graph has no cycle, and outside the
command line no function body imports a module of the package (such an import hides a
cycle or an upward dependency)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nesy_gedi"

# Lowest first; the data's path: logic file -> parse -> ground -> compile -> circuit -> loss,
# images -> augment -> backbone -> objective, then one engine, then the commands.
LAYERS = [
    ("errors", ["errors"]),
    ("logic", ["logic", "logic.syntax", "logic.ground", "logic.brute_force"]),
    ("compiler", ["decimal_text", "sdd_text", "circuit_cache", "compiler", "reasoning"]),
    ("circuit", ["circuit"]),
    ("symbolic analysis", ["shortcuts"]),
    ("components", ["data", "data.augment", "data.files", "data.mnist", "data.natural", "data.fake", "data.folder",
                    "data.arrays", "data.images", "data.toy", "models", "models.backbones", "objectives",
                    "objectives.barlow", "objectives.entropy", "objectives.gedi", "objectives.semantic",
                    "objectives.swav", "naming", "naming.score", "naming.search", "naming.near",
                    "naming.cluster_map", "sgld", "metrics", "plots", "clustering"]),
    ("config", ["config", "config.schema", "config.reader", "config.overrides", "config.validate", "config.paths",
                "config.load"]),
    ("assembly", ["data.tasks", "data.unlabeled", "selfsup", "builders", "runs", "distributed", "optim",
                  "tracking"]),
    ("engine", ["guards", "engine"]),
    ("commands", ["train", "pretrain", "evaluate", "count_shortcuts", "diagnose"]),
    ("command line", ["cli", "__main__", ""]),
]
LAYER_OF = {module: index for index, (_, modules) in enumerate(LAYERS) for module in modules}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def is_package(name: str) -> bool:
    return (PACKAGE / Path(*name.split(".")) / "__init__.py").exists() if name else True


def imports_of(path: Path) -> list[tuple[str, bool, int]]:
    """(imported package module, inside a function body, line) for every import in `path`."""
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")


def imports_in(source: str, name: str, is_init: bool) -> list[tuple[str, bool, int]]:
    here = name if is_init else name.rpartition(".")[0]
    tree = ast.parse(source)
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = here.split(".") if here else []
                    base = base[: len(base) - (child.level - 1)] if child.level > 1 else base
                    target = ".".join(base + ([child.module] if child.module else []))
                elif child.module and (child.module == "nesy_gedi" or child.module.startswith("nesy_gedi.")):
                    target = child.module[len("nesy_gedi."):] if child.module != "nesy_gedi" else ""
                else:
                    continue
                for alias in child.names:
                    submodule = f"{target}.{alias.name}" if target else alias.name
                    found.append((submodule if submodule in LAYER_OF else target, in_function, child.lineno))
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name == "nesy_gedi" or alias.name.startswith("nesy_gedi."):
                        found.append((alias.name[len("nesy_gedi."):] if "." in alias.name else "", in_function,
                                      child.lineno))
            visit(child, nested)

    visit(tree, False)
    return [(target, in_function, line) for target, in_function, line in found if target != name]


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def test_every_module_has_a_layer():
    assert sorted(set(MODULES) - set(LAYER_OF)) == []
    assert sorted(set(LAYER_OF) - set(MODULES)) == []


def test_no_module_imports_a_higher_layer():
    upward = [f"{name} ({LAYERS[LAYER_OF[name]][0]}) imports {target} ({LAYERS[LAYER_OF[target]][0]}) "
              f"at line {line}"
              for name, path in MODULES.items() for target, _, line in imports_of(path)
              if LAYER_OF[target] > LAYER_OF[name]]
    assert upward == []


def test_only_the_command_line_imports_inside_functions():
    hidden = [f"{name}:{line} imports {target}" for name, path in MODULES.items()
              for target, in_function, line in imports_of(path) if in_function and name != "cli"]
    assert hidden == []


def test_the_import_graph_has_no_cycle():
    graph = {name: sorted({target for target, _, _ in imports_of(path)}) for name, path in MODULES.items()}
    state: dict[str, str] = {}
    cycles = []

    def walk(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for target in graph.get(node, []):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                walk(target, trail + [target])
        state[node] = "done"

    for node in graph:
        if node not in state:
            walk(node, [node])
    assert cycles == []


def test_the_checker_sees_relative_absolute_and_nested_imports():
    """The rules above are only as good as `imports_in`: check it on a module with every form."""
    source = ("from ..circuit import KnowledgeCircuit\nfrom nesy_gedi import engine\nimport nesy_gedi.train\n"
              "from . import images\ndef f():\n    from .images import to_float\n")
    assert imports_in(source, "data.augment", False) == [
        ("circuit", False, 1), ("engine", False, 2), ("train", False, 3), ("data.images", False, 4),
        ("data.images", True, 6)]
