"""Training recipes for audio LMs: one YAML file with `model`, `data` and `train` sections, typed and checked.

A recipe says everything that changes the result (sizes, data, schedule, seed); where it runs (CPU, GPUs,
nodes, mixed precision backend) is accelerate's business, so the same recipe runs everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

ARCHITECTURES = ("gpt2", "llama")


@dataclass
class ModelRecipe:
    """A decoder-only transformer from transformers; the vocabulary comes from the tokenizer layout."""

    architecture: str = "gpt2"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: Optional[int] = None  # default 4 x hidden_size
    max_position_embeddings: int = 2048
    dropout: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)  # passed to the transformers config as is


@dataclass
class SyntheticCorpus:
    """A learnable id corpus with no audio at all (tests, demos): see `semanticodec_hf.lm.data.synthetic_corpus`."""

    num_clips: int = 64
    frames: int = 48
    semantic_vocab_size: int = 64
    acoustic_vocab_size: int = 128
    pattern: str = "interleaved"


@dataclass
class DataRecipe:
    """Where the ids come from and how they become fixed-size blocks.

    `tokenized_dir`: an output folder of `recipes/tokenize_dataset.py` (its `dataset/` and `tokenizer/`);
    `synthetic`: a generated corpus (no codec needed). `packing`: concatenate clips and cut into full blocks
    (best use of compute) or pad each clip to `block_size` (clips longer than a block are split).
    `acoustic_bpe`: train on sentencepiece pieces of the semantic stream instead of raw ids (semantic_only
    corpora; see `semanticodec_hf.acoustic_bpe`), for shorter sequences.
    """

    tokenized_dir: Optional[str] = None
    synthetic: Optional[SyntheticCorpus] = None
    acoustic_bpe: Optional[str] = None  # folder of a trained AcousticBPE: semantic_only ids become its pieces
    block_size: int = 256
    packing: bool = True
    eval_fraction: float = 0.05
    max_eval_blocks: int = 256


@dataclass
class TrainRecipe:
    """Optimisation, schedule, checkpoints and logging.

    `global_batch_size` is counted in blocks per optimizer step over all processes; the per-process batch
    is derived from it, so 1 or N processes see the same global batches and reach the same weights.
    """

    output_dir: str = "runs/audio-lm"
    seed: int = 0
    max_steps: int = 100
    global_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 3e-4
    weight_decay: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    warmup_steps: int = 10
    min_learning_rate_ratio: float = 0.1
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto: bf16 where the GPU has it, otherwise full precision
    eval_every: int = 50
    save_every: int = 50
    log_every: int = 10
    keep_checkpoints: int = 2
    log_with: List[str] = field(default_factory=lambda: ["tensorboard"])
    num_workers: int = 0


@dataclass
class LMRecipe:
    model: ModelRecipe = field(default_factory=ModelRecipe)
    data: DataRecipe = field(default_factory=DataRecipe)
    train: TrainRecipe = field(default_factory=TrainRecipe)

    def validate(self) -> "LMRecipe":
        if self.model.architecture not in ARCHITECTURES:
            raise ValueError(f"model.architecture must be one of {list(ARCHITECTURES)}, got {self.model.architecture!r}.")
        if self.model.hidden_size % self.model.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.model.hidden_size}) must be a multiple of model.num_heads "
                f"({self.model.num_heads})."
            )
        if (self.data.tokenized_dir is None) == (self.data.synthetic is None):
            raise ValueError("Give exactly one of data.tokenized_dir (a tokenize_dataset.py output) or data.synthetic.")
        if self.data.block_size < 4 or self.data.block_size % 2:
            raise ValueError(f"data.block_size must be an even number >= 4, got {self.data.block_size}.")
        if self.data.block_size > self.model.max_position_embeddings:
            raise ValueError(
                f"data.block_size ({self.data.block_size}) exceeds model.max_position_embeddings "
                f"({self.model.max_position_embeddings})."
            )
        if not 0.0 <= self.data.eval_fraction < 1.0:
            raise ValueError(f"data.eval_fraction must be in [0, 1), got {self.data.eval_fraction}.")
        train = self.train
        for name in ("max_steps", "global_batch_size", "gradient_accumulation_steps", "eval_every", "save_every",
                     "log_every", "keep_checkpoints"):
            if getattr(train, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(train, name)}.")
        if train.global_batch_size % train.gradient_accumulation_steps:
            raise ValueError(
                f"train.global_batch_size ({train.global_batch_size}) must be a multiple of "
                f"train.gradient_accumulation_steps ({train.gradient_accumulation_steps})."
            )
        if train.mixed_precision not in ("auto", "no", "fp16", "bf16"):
            raise ValueError(f"train.mixed_precision must be auto, no, fp16 or bf16, got {train.mixed_precision!r}.")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


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
        return isinstance(value, list) and all(_matches(item, args[0]) for item in value) if args else isinstance(value, list)
    if origin in (dict, Dict):
        return isinstance(value, dict)
    if dataclasses.is_dataclass(annotation):
        return isinstance(value, (dict, annotation))
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is None and hasattr(annotation, "__name__"):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def build_section(cls: type, data: Optional[Dict[str, Any]], where: str) -> Any:
    """One recipe section (a dataclass) from its YAML mapping: unknown keys and values of the wrong type are errors
    that name the key, so a typo or `learning_rate: fast` stops the run before it starts instead of mid-way."""
    data = dict(data or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"Unknown key(s) {unknown} in recipe section {where!r}; known keys: {sorted(known)}.")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if not _matches(value, hints[key]):
            raise ValueError(f"{where}.{key} must be {_type_name(hints[key])}, got {value!r} "
                             f"({type(value).__name__}).")
        if hints[key] is float and isinstance(value, int):
            data[key] = float(value)
    return cls(**data)


def recipe_from_dict(data: Dict[str, Any]) -> LMRecipe:
    """Nested dict (as in the YAML file) -> validated `LMRecipe`; unknown keys are errors, not silently ignored."""
    unknown = sorted(set(data) - {"model", "data", "train"})
    if unknown:
        raise ValueError(f"Unknown recipe section(s) {unknown}; a recipe has model, data and train.")
    data_section = dict(data.get("data") or {})
    if data_section.get("synthetic") is not None:
        data_section["synthetic"] = build_section(SyntheticCorpus, data_section["synthetic"], "data.synthetic")
    return LMRecipe(
        model=build_section(ModelRecipe, data.get("model"), "model"),
        data=build_section(DataRecipe, data_section, "data"),
        train=build_section(TrainRecipe, data.get("train"), "train"),
    ).validate()


# YAML 1.2 floats in exponent form without a dot (`1e-3`), which PyYAML (YAML 1.1) would read as strings.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


@functools.lru_cache(maxsize=None)
def _recipe_loader() -> type:
    """PyYAML's SafeLoader plus the exponent-float rule (built once; yaml is imported only when recipes are read)."""
    import yaml

    class RecipeLoader(yaml.SafeLoader):
        pass

    RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))
    return RecipeLoader


def load_yaml(text: str) -> Any:
    """`yaml.safe_load`, except that `1e-3` is the float 1e-3 (as in YAML 1.2 and Python), not the string '1e-3'."""
    import yaml

    return yaml.load(text, Loader=_recipe_loader())


def apply_overrides(data: Dict[str, Any], overrides: List[str]) -> Dict[str, Any]:
    """`section.key=value` strings (value parsed as YAML) applied to the recipe dict, e.g. `train.max_steps=20`."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} is not of the form section.key=value (e.g. train.max_steps=20).")
        dotted, text = item.split("=", 1)
        keys = dotted.split(".")
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {item!r}: {key!r} is not a section.")
        node[keys[-1]] = load_yaml(text)
    return data


def load_recipe(path: Union[str, Path], overrides: Optional[List[str]] = None) -> LMRecipe:
    """Read a YAML recipe; relative data paths stay relative to the working directory (as on the command line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {path} does not exist (see recipes/lm_tiny_cpu.yaml for an example).")
    data = load_yaml(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"Recipe {path} must be a YAML mapping with model/data/train sections.")
    return recipe_from_dict(apply_overrides(data, list(overrides or [])))
