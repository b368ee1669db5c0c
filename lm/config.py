"""Training recipes for audio LMs: one YAML file with `model`, `data` and `train` sections, typed and checked.

A recipe says everything that changes the result (sizes, data, schedule, seed); where it runs (CPU, GPUs,
nodes, mixed precision backend) is accelerate's business, so the same recipe runs everywhere.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

# The YAML reading, `--set` overrides and section checks are shared with the codec trainer; `load_yaml`,
# `apply_overrides` and `build_section` stay importable from here.
from semanticodec_hf.recipe_loading import (  # noqa: F401 (apply_overrides, build_section, load_yaml: re-exported)
    apply_overrides,
    build_recipe,
    build_section,
    load_yaml,
    read_recipe,
)

ARCHITECTURES = ("gpt2", "llama")
# How a synthetic corpus derives each frame's acoustic id (`semanticodec_hf.lm.data.synthetic_corpus`).
ACOUSTIC_RULES = ("frame_index", "previous_semantic")
TEXT_POSITIONS = ("before", "after")  # where data.text_column goes relative to a clip's audio


@dataclass
class ModelRecipe:
    """A decoder-only transformer from transformers; the vocabulary comes from the tokenizer layout.

    `init_from` (a folder or Hub id of a pretrained causal LM) warm-starts from a text LM: its weights are kept
    and its vocabulary is replaced by the audio one (`semanticodec_hf.lm.modeling.warm_start_model`). The
    architecture then comes from that model: the fields below left at their defaults are ignored, and any set to
    another value must equal the loaded model's (checked when it is loaded). `extra` overrides the loaded
    config (e.g. `{resid_pdrop: 0.0}`). With `keep_text_vocab` the text vocabulary stays: the text LM's tokenizer
    (from `init_from`, or `text_tokenizer`) is extended with the audio tokens, the audio rows are appended after
    the text rows, and the corpus is trained on as joint text+audio sequences (`semanticodec_hf.lm.joint_corpus`).
    """

    architecture: str = "gpt2"
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: Optional[int] = None  # default 4 x hidden_size
    max_position_embeddings: int = 2048
    dropout: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)  # passed to the transformers config as is
    init_from: Optional[str] = None  # a pretrained causal LM (folder or Hub id) to warm-start from
    keep_text_vocab: bool = False  # with init_from: keep the text rows and append the audio ones
    text_tokenizer: Optional[str] = None  # with keep_text_vocab: the text tokenizer, if not in init_from


# Model keys stored in a recipe's dict only when set: checkpoints written before they existed do not record them,
# and a resume compares the stored recipe key by key.
OPTIONAL_MODEL_KEYS = {"init_from": None, "keep_text_vocab": False, "text_tokenizer": None}
OPTIONAL_DATA_KEYS = {"text_column": None, "text_position": "before"}
# The same for `data.synthetic`: a recipe that keeps today's corpus stores the dict it always stored.
OPTIONAL_SYNTHETIC_KEYS = {"acoustic_rule": "frame_index", "noise": 0.0}


@dataclass
class SyntheticCorpus:
    """A learnable id corpus with no audio at all (tests, demos): see `semanticodec_hf.lm.data.synthetic_corpus`.

    `acoustic_rule` says how each frame's acoustic id follows from the semantic stream (`ACOUSTIC_RULES`): `frame_index` (the default, the corpus every earlier recipe trained on) or `previous_semantic`,
    where it depends on the previous frame's semantic id too: a corpus for the semantic->acoustic stage
    (`semanticodec_hf.lm.acoustic_stage`) that no per-frame map can learn. `noise` replaces that fraction of the
    semantic ids by random ones; with 1.0 a clip's repeating motif is gone, so a model cannot predict an acoustic
    id by copying the one a motif period earlier and must learn the rule itself.
    """

    num_clips: int = 64
    frames: int = 48
    semantic_vocab_size: int = 64
    acoustic_vocab_size: int = 128
    pattern: str = "interleaved"
    acoustic_rule: str = "frame_index"
    noise: float = 0.0  # fraction of semantic ids replaced by random ones (1.0: no motif left to copy)


@dataclass
class DataRecipe:
    """Where the ids come from and how they become fixed-size blocks.

    `tokenized_dir`: an output folder of `recipes/tokenize_dataset.py` (its `dataset/` and `tokenizer/`);
    `synthetic`: a generated corpus (no codec needed). `packing`: concatenate clips and cut into full blocks
    (best use of compute) or pad each clip to `block_size` (clips longer than a block are split).
    `acoustic_bpe`: train on sentencepiece pieces of the semantic stream instead of raw ids (semantic_only
    corpora; see `semanticodec_hf.acoustic_bpe`), for shorter sequences. With `model.keep_text_vocab`,
    `text_column` (a column of the tokenized dataset, e.g. transcripts) is written `before` or `after` each clip's
    audio (`text_position`).
    """

    tokenized_dir: Optional[str] = None
    synthetic: Optional[SyntheticCorpus] = None
    acoustic_bpe: Optional[str] = None  # folder of a trained AcousticBPE: semantic_only ids become its pieces
    block_size: int = 256
    packing: bool = True
    eval_fraction: float = 0.05
    max_eval_blocks: int = 256
    text_column: Optional[str] = None  # with model.keep_text_vocab: text placed beside each clip's audio
    text_position: str = "before"  # before | after the audio


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
        model = self.model
        if model.init_from is not None and (not isinstance(model.init_from, str) or not model.init_from.strip()):
            raise ValueError(f"model.init_from must be a folder or Hub id of a causal LM, got {model.init_from!r}.")
        if not isinstance(model.keep_text_vocab, bool):
            raise ValueError(f"model.keep_text_vocab must be true or false, got {model.keep_text_vocab!r}.")
        if model.keep_text_vocab and model.init_from is None:
            raise ValueError("model.keep_text_vocab only applies with model.init_from (a text LM to start from).")
        if model.text_tokenizer is not None and not model.keep_text_vocab:
            raise ValueError("model.text_tokenizer only applies with model.keep_text_vocab: true (the replaced "
                             "vocabulary needs no text tokenizer).")
        data = self.data
        if data.text_column is not None:
            if not model.keep_text_vocab:
                raise ValueError(f"data.text_column ({data.text_column!r}) needs model.keep_text_vocab: true: text "
                                 "can only be trained on with the text LM's vocabulary kept.")
            if data.tokenized_dir is None:
                raise ValueError("data.text_column names a column of a tokenized dataset (data.tokenized_dir); a "
                                 "synthetic corpus has no text.")
        if data.text_position not in TEXT_POSITIONS:
            raise ValueError(f"data.text_position must be one of {list(TEXT_POSITIONS)}, got {data.text_position!r}.")
        if model.keep_text_vocab and data.acoustic_bpe is not None:
            raise ValueError("model.keep_text_vocab with data.acoustic_bpe is not supported: BPE pieces have no "
                             "token strings in the text vocabulary. Train on raw ids (drop data.acoustic_bpe).")
        if self.model.architecture not in ARCHITECTURES:
            raise ValueError(f"model.architecture must be one of {list(ARCHITECTURES)}, got {self.model.architecture!r}.")
        if self.model.hidden_size % self.model.num_heads:
            raise ValueError(
                f"model.hidden_size ({self.model.hidden_size}) must be a multiple of model.num_heads "
                f"({self.model.num_heads})."
            )
        synthetic = self.data.synthetic
        if synthetic is not None:
            if synthetic.acoustic_rule not in ACOUSTIC_RULES:
                raise ValueError(f"data.synthetic.acoustic_rule must be one of {list(ACOUSTIC_RULES)}, got "
                                 f"{synthetic.acoustic_rule!r}.")
            if not 0.0 <= synthetic.noise <= 1.0:
                raise ValueError(f"data.synthetic.noise must be a fraction in [0, 1], got {synthetic.noise}.")
        if (self.data.tokenized_dir is None) == (self.data.synthetic is None):
            raise ValueError("Give exactly one of data.tokenized_dir (a tokenize_dataset.py output) or data.synthetic.")
        if self.data.block_size < 4 or self.data.block_size % 2:
            raise ValueError(f"data.block_size must be an even number >= 4, got {self.data.block_size}.")
        # with init_from the loaded model's positions count instead (lm/train.py checks them once it is loaded)
        if model.init_from is None and self.data.block_size > self.model.max_position_embeddings:
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
        """The recipe as nested dicts; the optional model and synthetic-corpus keys only when set, so that the recipe of a run that
        does not use them equals the one stored by checkpoints older than those keys (a resume compares them)."""
        data = dataclasses.asdict(self)
        for section, optional in (("model", OPTIONAL_MODEL_KEYS), ("data", OPTIONAL_DATA_KEYS)):
            for key, default in optional.items():
                if data[section][key] == default:
                    del data[section][key]
        if data["data"]["synthetic"] is not None:
            for key, default in OPTIONAL_SYNTHETIC_KEYS.items():
                if data["data"]["synthetic"][key] == default:
                    del data["data"]["synthetic"][key]
        return data


def recipe_from_dict(data: Dict[str, Any]) -> LMRecipe:
    """Nested dict (as in the YAML file) -> validated `LMRecipe`; unknown keys are errors, not silently ignored."""
    return build_recipe(LMRecipe, data, "a recipe").validate()


def load_recipe(path: Union[str, Path], overrides: Optional[List[str]] = None) -> LMRecipe:
    """Read a YAML recipe; relative data paths stay relative to the working directory (as on the command line)."""
    return recipe_from_dict(read_recipe(path, overrides, example="recipes/lm_tiny_cpu.yaml"))
