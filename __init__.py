"""UniGround as a fairseq user dir: ``fairseq-train --user-dir . --task caption ...``.

fairseq imports a user dir under its folder name and then imports its
``tasks`` and ``models`` files again as ``<folder>.tasks.*``. The packages
here are imported once, as top-level ``tasks``, ``models`` and so on, and
aliased under the folder name, so each registry entry is made exactly once.
"""
import importlib
import os
import pkgutil
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

for _package in ("criterions", "models", "tasks"):
    _module = importlib.import_module(_package)
    sys.modules[f"{__name__}.{_package}"] = _module
    for _info in pkgutil.iter_modules(_module.__path__):
        sys.modules[f"{__name__}.{_package}.{_info.name}"] = importlib.import_module(f"{_package}.{_info.name}")

importlib.import_module("utils.fairseq_fixes").apply()
