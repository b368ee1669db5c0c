"""YAML training recipes -> typed sections, shared by the codec trainer (`recipes/train_codec.py`) and the audio-LM
trainer (`semanticodec_hf.lm.train`).

A recipe is a YAML mapping of sections (`model`, `data`, `train`, ...); each trainer describes its sections as
dataclasses and gets them back filled in and checked:

    data = read_recipe("recipes/codec_tiny_cpu.yaml", ["train.max_steps=20"])   # YAML + --set overrides
    recipe = build_recipe(CodecRecipe, data, "a codec recipe")                   # unknown keys / bad types: errors

Unknown sections or keys and values of the wrong type are errors that name the key, so a typo or
`learning_rate: fast` stops a run before it starts instead of being ignored or failing mid-way. A field whose
type is a dataclass (or an Optional one) is built from its nested mapping the same way. Numbers follow YAML 1.2
as far as recipes need it: `1e-3` is a float (PyYAML alone, YAML 1.1, reads it as a string).

Trainer-specific checks (value ranges, combinations of keys) stay with each trainer's own dataclasses.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml

__all__ = ["apply_overrides", "build_recipe", "build_section", "load_yaml", "read_recipe"]

# YAML 1.2 floats in exponent form without a dot (`1e-3`), which PyYAML (YAML 1.1) would read as strings.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _RecipeYAMLLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader plus the exponent-float rule (SafeLoader itself is left unchanged)."""


_RecipeYAMLLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, except that `1e-3` is the float 1e-3 (as in YAML 1.2 and Python), not the string '1e-3'."""
    return yaml.load(text, Loader=_RecipeYAMLLoader)


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """`section.key=value` strings (value parsed as YAML) applied in order to the recipe dict, e.g.
    `train.max_steps=20` or `data.synthetic.pattern=semantic_only`; an empty or null section becomes a mapping."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} is not of the form section.key=value (e.g. train.max_steps=20).")
        dotted, text = item.split("=", 1)
        keys = dotted.split(".")
        node = data
        for key in keys[:-1]:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise ValueError(f"Override {item!r}: {key!r} is not a section.")
        node[keys[-1]] = load_yaml(text)
    return data


def read_recipe(path: Union[str, Path], overrides: Optional[Sequence[str]] = None,
                example: Optional[str] = None) -> Dict[str, Any]:
    """A recipe file as a dict with the `--set` overrides applied; `example` (a recipe path) is named when the
    file is missing. Relative paths inside stay relative to the working directory, as on the command line."""
    path = Path(path)
    if not path.is_file():
        hint = f" (see {example} for an example)" if example else ""
        raise FileNotFoundError(f"Recipe {path} does not exist{hint}.")
    data = load_yaml(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"Recipe {path} must be a YAML mapping of sections (model, data, train, ...), "
                         f"not {type(data).__name__}.")
    return apply_overrides(data, list(overrides or []))


def build_recipe(cls: type, data: Dict[str, Any], what: str = "a recipe") -> Any:
    """A recipe dataclass whose fields are the sections (each a dataclass) from the nested dict; a missing or
    empty section takes its defaults. `what` names the recipe in the unknown-section error."""
    sections = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(sections))
    if unknown:
        names = list(sections)
        listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
        raise ValueError(f"Unknown recipe section(s) {unknown}; {what} has {listed}.")
    hints = typing.get_type_hints(cls)
    return cls(**{name: build_section(hints[name], data.get(name), name) for name in sections})


def build_section(cls: type, data: Optional[Dict[str, Any]], where: str) -> Any:
    """One recipe section (a dataclass) from its YAML mapping (None: all defaults). Unknown keys and values of the
    wrong type are errors that name the key (`where.key`); ints are accepted (and stored) as floats where a
    float is expected; nested dataclass fields are built from their mappings."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"Recipe section {where!r} must be a mapping of keys, got {data!r} ({type(data).__name__}).")
    data = dict(data)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in recipe section {where!r}; known keys: {sorted(known)}.")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if not _matches(value, hints[key]):
            raise ValueError(f"{where}.{key} must be {_type_name(hints[key])}, got {value!r} "
                             f"({type(value).__name__}).")
        nested = _dataclass_in(hints[key])
        if nested is not None and isinstance(value, dict):
            data[key] = build_section(nested, value, f"{where}.{key}")
        elif hints[key] is float and isinstance(value, int):
            data[key] = float(value)
    return cls(**data)


def _dataclass_in(annotation: Any) -> Optional[type]:
    """The dataclass of a `SomeSection` or `Optional[SomeSection]` annotation, else None."""
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return annotation
    if typing.get_origin(annotation) is Union:
        found = [arg for arg in typing.get_args(annotation) if dataclasses.is_dataclass(arg) and isinstance(arg, type)]
        return found[0] if len(found) == 1 else None
    return None


def _matches(value: Any, annotation: Any) -> bool:
    """Whether a YAML value fits a recipe field's annotation (int for float is fine; bool is not an int here)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return True
    if origin is Union:
        return any(_matches(value, arg) for arg in args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, List):
        return isinstance(value, list) and (all(_matches(item, args[0]) for item in value) if args else True)
    if origin in (dict, Dict):
        return isinstance(value, dict)
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, (dict, annotation))
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is None and hasattr(annotation, "__name__"):
        return annotation.__name__
    return str(annotation).replace("typing.", "")
