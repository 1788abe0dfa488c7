"""The tree's layering (README, Layout): each package imports only those below it, and no module
imports itself back through others."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# package -> its layer: a package may import its own modules and those of lower layers only
LAYERS = {"utils": 0, "geometry": 1, "data": 2, "decoding": 2, "evaluation": 2, "models": 2, "ie": 3,
          "retrieval": 3, "criterions": 4, "tasks": 5}
# scripts run as `python dir/x.py` put the repository on sys.path themselves; nothing else may
ENTRY_POINT_FOLDERS = ("preprocess", "run_scripts", "benchmarks", "tests", ".ci")


def python_files(folder):
    for name in sorted(os.listdir(os.path.join(ROOT, folder))):
        if name.endswith(".py"):
            yield f"{folder}/{name}"


def imported_modules(path, roots=tuple(LAYERS)):
    """Every module under ``roots`` that ``path`` imports, at the top or inside functions."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    names += [f"{node.module}.{alias.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
              and node.level == 0 and node.module for alias in node.names]  # `from package import module`
    return {name for name in names if name.split(".")[0] in roots}


def module_graph(packages=tuple(LAYERS) + ("preprocess/demo_world",)):
    graph = {}
    for package in packages:
        for path in python_files(package):
            graph[path[:-3].replace("/", ".")] = imported_modules(path, tuple(LAYERS) + ("preprocess",))
    return graph


def test_packages_import_only_lower_layers():
    upward = [f"{module} imports {target}" for module, targets in module_graph(tuple(LAYERS)).items()
              for target in targets
              if LAYERS[target.split(".")[0]] > LAYERS[module.split(".")[0]]
              or (LAYERS[target.split(".")[0]] == LAYERS[module.split(".")[0]]
                  and target.split(".")[0] != module.split(".")[0])]
    assert upward == []


def test_no_module_imports_itself_back():
    graph = module_graph()
    done, on_path = set(), []

    def visit(module):
        if module in on_path:
            pytest.fail("import circle: " + " -> ".join(on_path[on_path.index(module):] + [module]))
        if module in done or module not in graph:
            return
        on_path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        on_path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_only_entry_points_change_sys_path():
    changing = []
    for folder, _, files in os.walk(ROOT):
        relative = os.path.relpath(folder, ROOT)
        if relative.startswith((".venv", ".git")) or relative.split(os.sep)[0] in ENTRY_POINT_FOLDERS:
            continue
        for name in files:
            path = os.path.join(relative, name) if relative != "." else name
            if not name.endswith(".py") or path in ("__init__.py", "train.py", "evaluate.py", "predict.py", "serve.py"):
                continue
            with open(os.path.join(ROOT, path), encoding="utf-8") as f:
                if "sys.path.insert" in f.read():
                    changing.append(path)
    assert changing == []
