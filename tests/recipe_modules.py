"""Import a script of `recipes/` as a module (the recipes are scripts, not a package)."""

import importlib
import sys
from pathlib import Path
from types import ModuleType

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def import_recipe(name: str) -> ModuleType:
    """`recipes/<name>.py` as a module, with `recipes/` on the import path only while it is imported."""
    sys.path.insert(0, str(RECIPES))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(RECIPES))
