"""Evaluate an audio LM beyond its training loss: held-out loss, likelihood-pair probes, continuation statistics
and a generative-perplexity hook, for one LM folder or every checkpoint of a run (`recipes/evaluate_lm.py` is the
command line and writes the report).

- **Held-out loss** and per-stream perplexity are the trainer's own numbers (`semanticodec_hf.lm.train.evaluate`
  on the recipe's held-out blocks), so a report agrees with what training logged.
- **Likelihood-pair probes** ask whether the LM gives a `good` clip more probability than its `bad` twin (e.g. a
  real utterance against a shuffled one). Each clip becomes ids through the codec tokenizer and is scored with
  the sum of its next-token log-likelihoods; the length-normalised score divides by the number of scored ids.
- **Continuation statistics** compare what the LM writes after a prompt with the real continuation of the same
  prompt: semantic-id unigram entropy, distinct-n, Auto-BLEU, how often `<eos>` was written, length.
- **Generative perplexity** decodes continuations to audio, transcribes them with any ASR pipeline and scores
  the transcripts with any text LM (optional: needs a codec, an ASR model and a text LM).

Everything runs on one process and in full precision; every loop a user waits on has a progress bar on stderr
(`quiet=True` turns them off).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, LogitsProcessorList

from semanticodec_hf.audio_token_ids import AudioTokenIds
from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout
from semanticodec_hf.datasets_utils import load_audio
from semanticodec_hf.lm.config import LMRecipe, recipe_from_dict
from semanticodec_hf.lm.data import AudioLMDataCollator
from semanticodec_hf.lm.generate import decoding_arguments, new_tokens_needed, prompt_ids
from semanticodec_hf.lm.joint_corpus import is_joint_folder
from semanticodec_hf.lm.masked_generate import generate_with_mask
from semanticodec_hf.lm.modeling import build_model, context_length
from semanticodec_hf.lm.pattern_logits import PatternLogitsProcessor
from semanticodec_hf.lm.train import Blocks, EvalBatches, evaluate, load_corpus
from semanticodec_hf.processing_semanticodec import read_audio
from semanticodec_hf.progress import progress_bar
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer
from semanticodec_hf.training_utils import CHECKPOINT_PREFIX, TRAINER_STATE, checkpoints

MAX_N = 4  # distinct-n and Auto-BLEU use n = 1 .. MAX_N
TIE_TOLERANCE = 1e-5  # relative: scores closer than this count as a tie (half a point) in probe accuracy
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")

IdSequences = Sequence[Sequence[int]]


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedLM:
    """One LM to evaluate: a `save_pretrained` folder (e.g. OUTPUT/final) or a trainer checkpoint."""

    name: str  # run/checkpoint, as reported
    path: Path
    step: Optional[int]  # training step, when known (x axis of the learning curves)
    model: Any
    tokenizer: SemantiCodecAudioTokenizer  # ids only: the LM's layout and pattern
    recipe: Optional[LMRecipe]  # the training recipe, when the folder records it


def expand_lm_paths(paths: Iterable[Union[str, Path]]) -> List[Path]:
    """Folders to evaluate, in order: an LM folder or a checkpoint as given; a run folder (lm/train.py's output)
    becomes each of its complete checkpoints, oldest first, then its `final` folder."""
    found: List[Path] = []
    for given in paths:
        path = Path(given)
        if (path / TRAINER_STATE).is_file() or (path / "config.json").is_file():
            found.append(path)
            continue
        final = [path / "final"] if (path / "final" / "config.json").is_file() else []
        run = [p for _, p in checkpoints(path)] + final
        if not run:
            raise ValueError(
                f"{path} is neither an LM folder (config.json), a checkpoint ({CHECKPOINT_PREFIX}N/{TRAINER_STATE}) "
                "nor a run folder of lm/train.py (checkpoints/ or final/); pass those folders instead."
            )
        found.extend(run)
    return found


def _load_checkpoint_weights(model: Any, weights: Path) -> None:
    """Load accelerate's `model.safetensors`; weights tied to a loaded one (GPT-2's lm_head) are not stored."""
    if not weights.is_file():
        raise ValueError(f"{weights.parent} has no model.safetensors; is it a checkpoint of lm/train.py?")
    missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    model.tie_weights()
    stored = {p.data_ptr() for name, p in model.state_dict().items() if name not in missing}
    untied = [name for name in missing if model.state_dict()[name].data_ptr() not in stored]
    if untied or unexpected:
        raise ValueError(f"{weights} does not fit the recipe's model: missing {untied}, unexpected {unexpected}; "
                         "was the checkpoint written by another recipe?")


def load_lm(path: Union[str, Path], device: str = "cpu") -> LoadedLM:
    """Load an LM folder written by `lm/train.py` (OUTPUT/final, or any `save_pretrained` folder with the LM
    tokenizer's `audio_tokenizer_config.json`) or one of its checkpoints (OUTPUT/checkpoints/step_N: the model
    is rebuilt from the recipe stored in its trainer state)."""
    path = Path(path)
    joint = ("an LM trained with model.keep_text_vocab: true (text + audio vocabulary); the evaluation suite scores "
             "audio-only LMs. lm/train.py logs its held-out loss per stream (text apart); generate with "
             "semanticodec_hf.lm.joint_generation.")
    if is_joint_folder(path):
        raise ValueError(f"{path} is {joint}")
    if (path / TRAINER_STATE).is_file():
        state = json.loads((path / TRAINER_STATE).read_text())
        if "recipe" not in state:
            raise ValueError(f"{path / TRAINER_STATE} holds no recipe; it is not a checkpoint of lm/train.py.")
        recipe = recipe_from_dict(state["recipe"])
        if recipe.model.keep_text_vocab:
            raise ValueError(f"{path} is a checkpoint of {joint}")
        final = path.parent.parent / "final"
        if (final / "audio_tokenizer_config.json").is_file():  # the run's own record of its vocabulary
            tokenizer = SemantiCodecAudioTokenizer.from_pretrained(final, load_codec=False)
        else:
            tokenizer = corpus_for(recipe)[2]
        torch.manual_seed(0)  # the weights are overwritten; a fixed seed keeps building cheap and reproducible
        model = build_model(recipe.model, tokenizer.layout)
        _load_checkpoint_weights(model, path / "model.safetensors")
        name, step = f"{path.parent.parent.name}/{path.name}", int(state["step"])
    elif (path / "config.json").is_file():
        if not (path / "audio_tokenizer_config.json").is_file():
            raise ValueError(f"{path} has no audio_tokenizer_config.json, so its vocabulary layout is unknown; save "
                             "the LM with its tokenizer (lm/train.py does) or evaluate its checkpoints.")
        tokenizer = SemantiCodecAudioTokenizer.from_pretrained(path, load_codec=False)
        model = AutoModelForCausalLM.from_pretrained(path)
        recipe_file = path / "lm_recipe.yaml"
        recipe = recipe_from_dict(yaml.safe_load(recipe_file.read_text())) if recipe_file.is_file() else None
        step = recipe.train.max_steps if recipe is not None and path.name == "final" else None
        name = f"{path.parent.name}/{path.name}" if path.name == "final" else path.name
    else:
        raise ValueError(f"{path} is not an LM folder (no config.json) nor a checkpoint (no {TRAINER_STATE}).")
    if int(model.config.vocab_size) < tokenizer.layout.vocab_size:
        raise ValueError(f"{path}: the LM has {model.config.vocab_size} ids but its layout needs "
                         f"{tokenizer.layout.vocab_size}; the folder mixes two models.")
    return LoadedLM(name, path, step, model.to(device).eval(), tokenizer, recipe)


_CORPORA: Dict[str, Tuple[Blocks, Blocks, SemantiCodecAudioTokenizer]] = {}


def corpus_for(recipe: LMRecipe) -> Tuple[Blocks, Blocks, SemantiCodecAudioTokenizer]:
    """`load_corpus(recipe)` (train blocks, held-out blocks, tokenizer), computed once per data section and seed:
    every checkpoint of a run shares them."""
    key = json.dumps([recipe.to_dict()["data"], recipe.train.seed], sort_keys=True, default=str)
    if key not in _CORPORA:
        _CORPORA[key] = load_corpus(recipe)
    return _CORPORA[key]


# ---------------------------------------------------------------------------------------------- held-out loss
class _OneProcess:
    """What `train.evaluate` needs of an accelerator, for one process in full precision: no autocast, and the
    sum over one process is the value itself."""

    def __init__(self, device: Union[str, torch.device]):
        self.device = torch.device(device)

    def autocast(self):
        return nullcontext()

    def reduce(self, value: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return value


class _CountedBatches(torch.utils.data.Dataset):
    """Eval batches that advance a progress bar as the trainer's loop fetches them."""

    def __init__(self, batches: EvalBatches, bar: Any):
        self.batches, self.bar = batches, bar

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        self.bar.update(1)
        return self.batches[index]


def heldout_loss(model: Any, blocks: Union[Blocks, IdSequences], layout: SemantiCodecVocabularyLayout,
                 block_size: int, batch_size: int = 8, max_blocks: int = 256, device: str = "cpu",
                 quiet: bool = True) -> Dict[str, float]:
    """Mean next-token loss and per-stream perplexity over the first `max_blocks` held-out blocks: the trainer's
    `evaluate` (keys `eval/loss`, `eval/semantic_perplexity`, `eval/acoustic_perplexity`, ...), so the numbers
    are the ones training logged for the same weights."""
    if batch_size < 1 or max_blocks < 1:
        raise ValueError(f"batch_size and max_blocks must be >= 1, got {batch_size} and {max_blocks}.")
    blocks = blocks if isinstance(blocks, Blocks) else Blocks(list(blocks))
    if len(blocks) == 0:
        raise ValueError("There are no held-out blocks to score; give held-out data (a tokenized folder) or a "
                         "recipe with data.eval_fraction > 0.")
    batches = EvalBatches(blocks, AudioLMDataCollator(layout, block_size), batch_size, max_blocks, rank=0, world=1)
    with progress_bar(total=len(batches), desc="held-out loss", unit="batch", quiet=quiet) as bar:
        return evaluate(_OneProcess(device), model, _CountedBatches(batches, bar), layout)


# ---------------------------------------------------------------------------------------------- likelihoods
def sequence_log_likelihoods(model: Any, sequences: IdSequences, pad_token_id: int, batch_size: int = 8,
                             device: str = "cpu", quiet: bool = True, desc: str = "log-likelihood"
                             ) -> List[Tuple[float, int]]:
    """(summed log-likelihood in nats, scored ids) of each sequence under the LM: the sum over positions
    1..L-1 of log p(id_t | ids before t). The first id (`<bos>` for the tokenizer's sequences) is context only.

    Sequences are batched by length (right-padded, masked), so the result does not depend on `batch_size` beyond
    float rounding. A sequence longer than the LM's context is an error (scores past it would be meaningless)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    rows = [[int(i) for i in sequence] for sequence in sequences]
    limit, vocab = context_length(model.config), int(model.config.vocab_size)
    for index, row in enumerate(rows):
        if len(row) < 2:
            raise ValueError(f"Sequence {index} has {len(row)} id(s); scoring needs at least 2 (a context id and "
                             "one to predict).")
        if limit is not None and len(row) > limit:
            raise ValueError(f"Sequence {index} has {len(row)} ids but the LM attends over {limit} positions; use "
                             "shorter clips (or an LM with a longer context).")
        if min(row) < 0 or max(row) >= vocab:
            raise ValueError(f"Sequence {index} holds id {max(row) if max(row) >= vocab else min(row)}, outside the "
                             f"LM's vocabulary [0, {vocab}); the ids come from another layout.")
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    results: List[Tuple[float, int]] = [(0.0, 0)] * len(rows)
    was_training = model.training
    model.eval()
    with progress_bar(total=len(rows), desc=desc, unit="clip", quiet=quiet) as bar, torch.no_grad():
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            longest = len(rows[chosen[0]])
            ids = torch.full((len(chosen), longest), pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chosen), longest), dtype=torch.long)
            for r, index in enumerate(chosen):
                ids[r, :len(rows[index])] = torch.tensor(rows[index])
                mask[r, :len(rows[index])] = 1
            ids, mask = ids.to(device), mask.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            picked = F.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            valid = mask[:, 1:].bool()
            sums = picked.masked_fill(~valid, 0.0).double().sum(dim=1)
            for r, index in enumerate(chosen):
                results[index] = (float(sums[r]), int(valid[r].sum()))
            bar.update(len(chosen))
    model.train(was_training)
    return results


def preference(good: float, bad: float) -> float:
    """1 when `good` scores higher, 0 when lower, 0.5 for a tie (within `TIE_TOLERANCE`, relative): identical
    clips then score exactly chance."""
    if abs(good - bad) <= TIE_TOLERANCE * max(1.0, abs(good), abs(bad)):
        return 0.5
    return 1.0 if good > bad else 0.0


def likelihood_probe_ids(model: Any, good: IdSequences, bad: IdSequences, pad_token_id: int,
                         names: Optional[Sequence[str]] = None, batch_size: int = 8, device: str = "cpu",
                         quiet: bool = True) -> Dict[str, Any]:
    """Probe on id sequences: pair i is (`good[i]`, `bad[i]`).

    Returns `accuracy` (share of pairs whose good member has the higher summed log-likelihood; ties count half),
    `normalized_accuracy` (the same on log-likelihood per scored id, fairer when members differ in length),
    `mean_margin` (mean of good - bad per-id log-likelihood, nats) and `per_pair` rows."""
    if len(good) != len(bad):
        raise ValueError(f"Got {len(good)} good and {len(bad)} bad sequences; pairs need one of each.")
    if not good:
        raise ValueError("The probe has no pairs.")
    names = list(names) if names is not None else [f"pair{i:05d}" for i in range(len(good))]
    if len(names) != len(good):
        raise ValueError(f"Got {len(names)} names for {len(good)} pairs.")
    scores = sequence_log_likelihoods(model, list(good) + list(bad), pad_token_id, batch_size, device, quiet,
                                      desc="probe pairs")
    per_pair = []
    for i, name in enumerate(names):
        (good_sum, good_count), (bad_sum, bad_count) = scores[i], scores[len(good) + i]
        per_pair.append({"pair": name, "good_log_likelihood": good_sum, "bad_log_likelihood": bad_sum,
                         "good_ids": good_count, "bad_ids": bad_count,
                         "good_per_id": good_sum / good_count, "bad_per_id": bad_sum / bad_count})
    return {
        "pairs": len(per_pair),
        "accuracy": float(np.mean([preference(r["good_log_likelihood"], r["bad_log_likelihood"]) for r in per_pair])),
        "normalized_accuracy": float(np.mean([preference(r["good_per_id"], r["bad_per_id"]) for r in per_pair])),
        "mean_margin": float(np.mean([r["good_per_id"] - r["bad_per_id"] for r in per_pair])),
        "per_pair": per_pair,
    }


@dataclass
class AudioPair:
    """One probe pair: the `good` clip and its `bad` twin, as audio arrays with their sampling rates."""

    name: str
    good: np.ndarray
    good_rate: int
    bad: np.ndarray
    bad_rate: int


def _audio_files(folder: Path) -> Dict[str, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    by_name: Dict[str, Path] = {}
    for path in files:
        if path.stem in by_name:
            raise ValueError(f"{by_name[path.stem].name} and {path.name} in {folder} have the same name; keep one.")
        by_name[path.stem] = path
    return by_name


def read_pair_folder(folder: Union[str, Path]) -> List[AudioPair]:
    """`folder/good/NAME.wav` + `folder/bad/NAME.wav` (any of `AUDIO_SUFFIXES`), matched by NAME; a clip
    without its twin is an error, so no pair is silently dropped."""
    root = Path(folder)
    if not (root / "good").is_dir() or not (root / "bad").is_dir():
        raise ValueError(f"{root} must hold good/ and bad/ folders of clips with the same names.")
    good, bad = _audio_files(root / "good"), _audio_files(root / "bad")
    lonely = sorted(set(good) ^ set(bad))
    if lonely:
        raise ValueError(f"{len(lonely)} clip(s) in {root} have no twin in the other folder: "
                         f"{', '.join(lonely[:5])}; every good/NAME needs a bad/NAME.")
    if not good:
        raise ValueError(f"No audio files ({', '.join(AUDIO_SUFFIXES)}) in {root / 'good'}.")
    pairs = []
    for name in sorted(good):
        good_audio, good_rate = read_audio(str(good[name]))
        bad_audio, bad_rate = read_audio(str(bad[name]))
        pairs.append(AudioPair(name, good_audio, good_rate, bad_audio, bad_rate))
    return pairs


def read_pair_dataset(path: Union[str, Path], split: Optional[str] = None,
                      name_column: Optional[str] = None) -> List[AudioPair]:
    """A `datasets` dataset saved with `save_to_disk` with `good` and `bad` columns of file paths (relative ones
    are taken from the dataset folder) or `{array, sampling_rate}` dicts; `name_column` names the pairs (default
    row000000, ...). Plain columns: `datasets.Audio` decoding is not used (it needs torchcodec)."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None and len(loaded) == 1:
            loaded = next(iter(loaded.values()))
        elif split not in loaded:
            raise ValueError(f"{path} has splits {sorted(loaded)}; choose one with --pairs-split.")
        else:
            loaded = loaded[split]
    missing = [c for c in ("good", "bad", *([name_column] if name_column else [])) if c not in loaded.column_names]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; its columns are {loaded.column_names}.")
    pairs = []
    for index, row in enumerate(loaded):
        good_audio, good_rate = load_audio(row["good"], row=index, root=str(path))
        bad_audio, bad_rate = load_audio(row["bad"], row=index, root=str(path))
        name = str(row[name_column]) if name_column else f"row{index:06d}"
        pairs.append(AudioPair(name, good_audio, good_rate, bad_audio, bad_rate))
    if not pairs:
        raise ValueError(f"{path} has no rows.")
    return pairs


def read_pairs(source: Union[str, Path], split: Optional[str] = None) -> List[AudioPair]:
    """A pair folder (good/ + bad/) or a `save_to_disk` dataset folder."""
    source = Path(source)
    if (source / "good").is_dir():
        return read_pair_folder(source)
    if source.is_dir():
        return read_pair_dataset(source, split)
    raise ValueError(f"--pairs {source} is not a folder: give good/ + bad/ folders or a datasets.save_to_disk folder.")


def pair_ids(pairs: Sequence[AudioPair], codec_tokenizer: SemantiCodecAudioTokenizer, batch_size: int = 8,
             quiet: bool = True) -> Tuple[List[str], List[List[int]], List[List[int]]]:
    """Audio pairs -> (names, good ids, bad ids) with the codec tokenizer (`<bos> ... <eos>` in its pattern).
    Done once per codec and pattern: the ids are the same for every checkpoint."""
    clips = [(p.good, p.good_rate) for p in pairs] + [(p.bad, p.bad_rate) for p in pairs]
    ids: List[List[int]] = []
    with progress_bar(total=len(clips), desc="tokenize probe clips", unit="clip", quiet=quiet) as bar:
        for start in range(0, len(clips), batch_size):
            chunk = clips[start:start + batch_size]
            ids.extend(codec_tokenizer([a for a, _ in chunk], sampling_rate=[r for _, r in chunk])["input_ids"])
            bar.update(len(chunk))
    return [p.name for p in pairs], ids[:len(pairs)], ids[len(pairs):]


def likelihood_probe_audio(model: Any, pairs: Sequence[AudioPair], codec_tokenizer: SemantiCodecAudioTokenizer,
                           batch_size: int = 8, device: str = "cpu", quiet: bool = True) -> Dict[str, Any]:
    """`likelihood_probe_ids` on audio pairs: audio -> codes -> ids with `codec_tokenizer` (set its pattern to the
    LM's first), then the same scoring."""
    names, good, bad = pair_ids(pairs, codec_tokenizer, batch_size, quiet)
    return likelihood_probe_ids(model, good, bad, codec_tokenizer.pad_token_id, names, batch_size, device, quiet)


# ---------------------------------------------------------------------------------------------- statistics
def semantic_ids(ids: Sequence[int], layout: SemantiCodecVocabularyLayout) -> List[int]:
    """The semantic ids of an id sequence, in order (acoustic and special ids dropped)."""
    return [int(i) for i in ids if 0 <= int(i) < layout.acoustic_offset]


def _ngrams(sequence: Sequence[int], n: int) -> List[Tuple[int, ...]]:
    return [tuple(sequence[i:i + n]) for i in range(len(sequence) - n + 1)]


def unigram_entropy(sequences: IdSequences) -> Optional[float]:
    """Entropy in bits of the unigram distribution of all ids of all sequences pooled (None without ids).
    Low values: the LM keeps to few ids (e.g. silence or one repeated unit)."""
    counts = Counter(int(i) for sequence in sequences for i in sequence)
    total = sum(counts.values())
    if not total:
        return None
    return float(-sum(c / total * math.log2(c / total) for c in counts.values()))


def distinct_n(sequences: IdSequences, n: int) -> Optional[float]:
    """Distinct n-grams / all n-grams, counted over all sequences pooled (n-grams never span two sequences);
    None when no sequence is n long. 1.0: nothing repeats; near 0: the same few n-grams over and over."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    grams = [g for sequence in sequences for g in _ngrams(list(sequence), n)]
    return len(set(grams)) / len(grams) if grams else None


def auto_bleu(sequence: Sequence[int], max_n: int = MAX_N) -> Optional[float]:
    """Self-repetition of one sequence: BLEU of each of its n-grams against the rest of the same sequence.

    For n = 1..`max_n`, p_n = (n-gram occurrences whose n-gram also occurs at another position of the sequence)
    / (all n-gram occurrences); overlapping occurrences count, an occurrence never matches itself. Auto-BLEU is
    the geometric mean (p_1 ... p_max_n) ** (1 / max_n), with no brevity penalty and no smoothing (0 once some
    p_n is 0). None for a sequence shorter than `max_n` + 1 ids (its top order would have at most one n-gram,
    which has nothing to repeat). 0: no n-gram repeats; 1: every n-gram of every order repeats.
    Example: [1, 2, 1, 2] with max_n=2: p_1 = 4/4, p_2 = 2/3 ((1,2) twice, (2,1) once), Auto-BLEU = sqrt(2/3).
    """
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}.")
    sequence = list(sequence)
    if len(sequence) < max_n + 1:
        return None
    log_sum = 0.0
    for n in range(1, max_n + 1):
        grams = _ngrams(sequence, n)
        counts = Counter(grams)
        matched = sum(1 for g in grams if counts[g] > 1)
        if matched == 0:
            return 0.0
        log_sum += math.log(matched / len(grams))
    return math.exp(log_sum / max_n)


def continuation_statistics(sequences: IdSequences, ended_with_eos: Sequence[bool],
                            max_n: int = MAX_N) -> Dict[str, Optional[float]]:
    """The statistics of a set of continuations, given as their semantic ids: `sequences` (how many),
    `entropy_bits` (`unigram_entropy`), `distinct_1`..`distinct_{max_n}` (`distinct_n`), `auto_bleu` (mean
    `auto_bleu` over the sequences long enough for it), `eos_fraction` (share of `ended_with_eos`) and
    `mean_length` (semantic ids per continuation)."""
    if len(ended_with_eos) != len(sequences):
        raise ValueError(f"Got {len(ended_with_eos)} <eos> flags for {len(sequences)} sequences.")
    scores = [s for s in (auto_bleu(seq, max_n) for seq in sequences) if s is not None]
    stats: Dict[str, Optional[float]] = {"sequences": float(len(sequences)), "entropy_bits": unigram_entropy(sequences)}
    stats.update({f"distinct_{n}": distinct_n(sequences, n) for n in range(1, max_n + 1)})
    stats["auto_bleu"] = float(np.mean(scores)) if scores else None
    stats["eos_fraction"] = float(np.mean(ended_with_eos)) if len(sequences) else None
    stats["mean_length"] = float(np.mean([len(s) for s in sequences])) if len(sequences) else None
    return stats


# ---------------------------------------------------------------------------------------------- continuations
def clips_of_blocks(blocks: Union[Blocks, IdSequences], layout: SemantiCodecVocabularyLayout) -> List[List[int]]:
    """The whole `<bos> ... <eos>` clips in a sequence of blocks: blocks in order are the packed (or split) clip
    stream, so joining them and cutting at `<bos>`/`<eos>` gives the clips back (the trainer's held-out clips
    from its held-out blocks). Padding and ids outside a complete clip are dropped."""
    blocks = blocks if isinstance(blocks, Blocks) else Blocks(list(blocks))
    clips, current = [], None
    for start in range(0, len(blocks), 256):
        for block in blocks.take(range(start, min(start + 256, len(blocks)))):
            for token in block:
                token = int(token)
                if token == layout.bos_token_id:
                    current = [token]
                elif current is not None and token == layout.eos_token_id:
                    clips.append(current + [token])
                    current = None
                elif current is not None and token != layout.pad_token_id:
                    current.append(token)
    return clips


@dataclass
class _Prompt:
    ids: List[int]
    prompt_frames: int
    target_frames: int
    real: List[int]  # semantic ids of the real continuation (prompt end .. target)
    real_eos: bool
    forced_acoustic: Optional[List[int]]


def _prepare_prompt(clip: Sequence[int], tokenizer: AudioTokenIds, prompt_frames: Optional[int],
                    limit: Optional[int]) -> Optional[_Prompt]:
    """A held-out clip -> its prompt (the first `prompt_frames` frames, default half) and real continuation,
    cut to what fits the LM's context; None when no continuation fits."""
    layout, pattern = tokenizer.layout, tokenizer.pattern
    codes = tokenizer.decode_ids(list(clip))
    frames = int(codes.shape[1])
    head = max(1, frames // 2) if prompt_frames is None else int(prompt_frames)
    if frames <= head:
        return None
    if pattern == "semantic_only":
        ids = [layout.bos_token_id, *codes[0, :head].tolist()]
    else:
        ids = prompt_ids(codes[:, :head], layout, pattern)
    target = frames
    while limit is not None and target > head and len(ids) + new_tokens_needed(pattern, head, target) > limit:
        target -= 1
    if target <= head:
        return None
    forced = codes[1, :head].tolist() if pattern == "semantic_then_acoustic" else None
    return _Prompt(ids, head, target, codes[0, head:target].tolist(), target == frames, forced)


def generate_continuations(model: Any, tokenizer: AudioTokenIds, clips: IdSequences, num_prompts: int = 16,
                           prompt_frames: Optional[int] = None, temperature: float = 1.0,
                           top_k: Optional[int] = None, top_p: Optional[float] = None, seed: int = 0,
                           batch_size: int = 8, device: str = "cpu", quiet: bool = True) -> Dict[str, Any]:
    """Continue the first `num_prompts` usable held-out clips and compare with their real continuations.

    Each prompt is the clip's first `prompt_frames` frames (default: half the clip); the LM samples (temperature,
    top-k/top-p) up to the length of the real continuation, cut to the LM's context, with `PatternLogitsProcessor`
    keeping every sequence decodable; a continuation never has more frames than the real one. Without a length
    target the LM may write `<eos>` after any whole frame: `eos_fraction` is how often it chose to stop within
    the real length. (semantic_then_acoustic needs a target
    to switch streams, so there `<eos>` is forced at the real length and the fraction is 1 by construction.)

    Returns `model` and `reference` statistics (`continuation_statistics` on semantic ids of the continuations
    only, prompts excluded), `sequences` (each prompt + its continuation, `<bos> ... <eos>`, whole frames only:
    what `generative_perplexity` decodes), `prompts_used` and `skipped` (clips too short for a continuation)."""
    sampling = decoding_arguments(temperature=temperature, top_k=top_k, top_p=top_p)  # checked as `continue` does
    if num_prompts < 1 or batch_size < 1:
        raise ValueError(f"num_prompts and batch_size must be >= 1, got {num_prompts} and {batch_size}.")
    if prompt_frames is not None and prompt_frames < 1:
        raise ValueError(f"prompt_frames must be >= 1, got {prompt_frames}.")
    layout, pattern = tokenizer.layout, tokenizer.pattern
    limit = context_length(model.config)
    prompts, skipped = [], 0
    for clip in clips:
        if len(prompts) == num_prompts:
            break
        prompt = _prepare_prompt(clip, tokenizer, prompt_frames, limit)
        if prompt is None:
            skipped += 1
        else:
            prompts.append(prompt)
    if not prompts:
        raise ValueError(f"None of the {skipped} held-out clips is longer than its prompt (prompt_frames="
                         f"{prompt_frames}) within the LM's {limit} positions; use a shorter prompt.")
    # Rows of one generate call share a budget: no row runs past its own real length.
    groups: Dict[Tuple[int, int], List[int]] = {}
    for index, prompt in enumerate(prompts):
        budget = new_tokens_needed(pattern, prompt.prompt_frames, prompt.target_frames)
        groups.setdefault((budget, len(prompt.ids)), []).append(index)
    generated: List[List[int]] = [[] for _ in prompts]
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    with progress_bar(total=len(prompts), desc="continuations", unit="prompt", quiet=quiet) as bar:
        for (budget, _), members in sorted(groups.items()):
            for start in range(0, len(members), batch_size):
                rows = members[start:start + batch_size]
                batch = tokenizer.pad([prompts[i].ids for i in rows], padding_side="left")
                stacked = pattern == "semantic_then_acoustic"
                processor = PatternLogitsProcessor(
                    layout, pattern, target_frames=[prompts[i].target_frames for i in rows] if stacked else None,
                    allow_early_eos=True,
                    forced_acoustic=[prompts[i].forced_acoustic for i in rows] if stacked else None)
                out = generate_with_mask(
                    model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                    max_new_tokens=budget, **sampling,
                    logits_processor=LogitsProcessorList([processor]), bos_token_id=layout.bos_token_id,
                    eos_token_id=layout.eos_token_id, pad_token_id=layout.pad_token_id).cpu()
                width = batch["input_ids"].shape[1]
                for r, index in enumerate(rows):
                    generated[index] = out[r, width:].tolist()
                bar.update(len(rows))
    model.train(was_training)
    new_semantic, ended, sequences = [], [], []
    for prompt, new in zip(prompts, generated):
        eos = layout.eos_token_id in new
        body = new[:new.index(layout.eos_token_id)] if eos else new
        body = [i for i in body if i != layout.pad_token_id]
        if pattern != "semantic_then_acoustic":  # the budget's <eos> slot may hold one more id: whole frames only
            frames = prompt.target_frames - prompt.prompt_frames
            body = body[:2 * frames] if pattern == "interleaved" else body[:frames]
            body = body[:len(body) // 2 * 2] if pattern == "interleaved" else body
        ended.append(eos)
        new_semantic.append(semantic_ids(body, layout))
        sequences.append([layout.bos_token_id, *prompt.ids[1:], *body, layout.eos_token_id])
    return {
        "model": continuation_statistics(new_semantic, ended),
        "reference": continuation_statistics([p.real for p in prompts], [p.real_eos for p in prompts]),
        "sequences": sequences,
        "prompts_used": len(prompts),
        "skipped": skipped,
    }


# ---------------------------------------------------------------------------------------------- generative perplexity
Transcriber = Callable[[Dict[str, Any]], Any]  # {"raw": array, "sampling_rate": int} -> str or {"text": str}


def load_transcriber(asr: Union[str, Path, Transcriber], device: str = "cpu") -> Transcriber:
    """`asr` as a transcriber: a model id or path becomes a transformers `automatic-speech-recognition`
    pipeline; a callable (a pipeline, or any function taking `{"raw": array, "sampling_rate": rate}` and returning
    a string or `{"text": ...}`) is returned as is."""
    if callable(asr):
        return asr
    from transformers import pipeline

    return pipeline("automatic-speech-recognition", model=str(asr), device=torch.device(device))


def transcribe(transcriber: Transcriber, audio: np.ndarray, sampling_rate: int) -> str:
    """One clip's transcript, whichever of the two result shapes the transcriber gives."""
    result = transcriber({"raw": np.asarray(audio, dtype=np.float32).reshape(-1), "sampling_rate": int(sampling_rate)})
    text = result["text"] if isinstance(result, Mapping) else result
    if not isinstance(text, str):
        raise ValueError(f"The transcriber returned {type(text).__name__}; it must give a string or {{'text': ...}}.")
    return text


def text_perplexity(texts: Sequence[str], text_lm: Union[str, Path, Any], text_tokenizer: Any = None,
                    device: str = "cpu", quiet: bool = True) -> Tuple[Optional[float], int]:
    """(perplexity, texts scored) of `texts` under a causal text LM: exp(total negative log-likelihood / total
    predicted tokens) over all non-empty texts, each scored after the tokenizer's bos (or eos) token when it has
    one, so the first word counts too. `text_lm` is a model id, a path or a loaded model (then give
    `text_tokenizer`). (None, 0) when every text is empty."""
    from transformers import AutoTokenizer

    if isinstance(text_lm, (str, Path)):
        text_tokenizer = text_tokenizer or AutoTokenizer.from_pretrained(str(text_lm))
        text_lm = AutoModelForCausalLM.from_pretrained(str(text_lm))
    if text_tokenizer is None:
        raise ValueError("A loaded text LM needs its text_tokenizer.")
    text_lm = text_lm.to(device).eval()
    start = text_tokenizer.bos_token_id if text_tokenizer.bos_token_id is not None else text_tokenizer.eos_token_id
    total, count, scored = 0.0, 0, 0
    with progress_bar(texts, desc="text LM", unit="text", quiet=quiet) as bar, torch.no_grad():
        for text in bar:
            ids = text_tokenizer(text.strip(), add_special_tokens=False)["input_ids"] if text.strip() else []
            ids = ([start] if start is not None and (not ids or ids[0] != start) else []) + list(ids)
            if len(ids) < 2:
                continue
            limit = context_length(text_lm.config)
            ids = ids[:limit] if limit else ids
            tensor = torch.tensor([ids], device=device)
            logits = text_lm(input_ids=tensor).logits[0, :-1].float()
            total += float(F.cross_entropy(logits, tensor[0, 1:], reduction="sum"))
            count += len(ids) - 1
            scored += 1
    return (math.exp(min(total / count, 50.0)) if count else None), scored


def decode_sequences(codec_tokenizer: SemantiCodecAudioTokenizer, sequences: IdSequences,
                     num_inference_steps: Optional[int] = None, seed: int = 0,
                     quiet: bool = True) -> List[torch.Tensor]:
    """Continuation ids -> waveforms (the codec's `ids_to_audio`, one clip at a time with a seed each, so a
    clip's audio does not depend on its neighbours)."""
    waves = []
    for index, sequence in enumerate(progress_bar(sequences, desc="decode continuations", unit="clip", quiet=quiet)):
        waves.append(codec_tokenizer.ids_to_audio(list(sequence), num_inference_steps=num_inference_steps,
                                                  seed=seed + index))
    return waves


def generative_perplexity(audio: Sequence[Any], sampling_rate: int, transcriber: Union[str, Path, Transcriber],
                          text_lm: Union[str, Path, Any], text_tokenizer: Any = None, device: str = "cpu",
                          quiet: bool = True) -> Dict[str, Any]:
    """Transcribe each clip and score the transcripts with a text LM: `gen_perplexity` (lower: the speech reads
    as more plausible text), `transcripts` (one per clip) and `scored` (non-empty transcripts)."""
    transcriber = load_transcriber(transcriber, device)
    transcripts = []
    for wave in progress_bar(audio, desc="transcribe", unit="clip", quiet=quiet):
        wave = wave.detach().cpu().numpy() if torch.is_tensor(wave) else np.asarray(wave)
        transcripts.append(transcribe(transcriber, wave, sampling_rate))
    perplexity, scored = text_perplexity(transcripts, text_lm, text_tokenizer, device, quiet)
    return {"gen_perplexity": perplexity, "transcripts": transcripts, "scored": scored}


# ---------------------------------------------------------------------------------------------- report
REPORT_COLUMNS = (
    ("prompts", "prompts continued"), ("eval_loss", "held-out loss (nats/id)"),
    ("semantic_perplexity", "semantic perplexity"),
    ("acoustic_perplexity", "acoustic perplexity"), ("probe_accuracy", "probe accuracy (summed)"),
    ("probe_normalized_accuracy", "probe accuracy (per id)"), ("entropy_bits", "semantic unigram entropy (bits)"),
    *((f"distinct_{n}", f"distinct-{n}") for n in range(1, MAX_N + 1)), ("auto_bleu", "Auto-BLEU"),
    ("eos_fraction", "<eos> fraction"), ("mean_length", "continuation length (semantic ids)"),
    ("gen_perplexity", "generative perplexity"),
)
TABLE_ONLY = ("prompts",)  # reported, not plotted


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.4f}"
    return str(value)


def write_lm_report(rows: Sequence[Mapping[str, Any]], out_dir: Union[str, Path], plot: bool = True,
                    pair_rows: Sequence[Mapping[str, Any]] = ()) -> Dict[str, str]:
    """Write `lm_eval.md` (one table row per checkpoint, reference rows last), `lm_eval.csv` (the same, every
    column), `probe_pairs.csv` (per pair and checkpoint, when given) and `lm_eval.png` (each statistic against
    the training step: one line over the checkpoints, the real continuations as a dashed line). Rows hold `name`,
    `kind` ("model" or "reference"), `step` and any of `REPORT_COLUMNS`; matplotlib (Agg) is imported only to plot.
    Returns the written paths by kind."""
    output = Path(out_dir)
    output.mkdir(parents=True, exist_ok=True)
    columns = [key for key, _ in REPORT_COLUMNS if any(row.get(key) is not None for row in rows)]
    header = ["name", "kind", "step", *columns]
    ordered = [r for r in rows if r.get("kind") != "reference"] + [r for r in rows if r.get("kind") == "reference"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row.get(key)) for key in header) + " |" for row in ordered]
    (output / "lm_eval.md").write_text("\n".join(lines) + "\n")
    with open(output / "lm_eval.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([["" if row.get(key) is None else row[key] for key in header] for row in ordered])
    written = {"markdown": str(output / "lm_eval.md"), "csv": str(output / "lm_eval.csv")}
    if pair_rows:
        keys = list(pair_rows[0])
        with open(output / "probe_pairs.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(pair_rows)
        written["pairs"] = str(output / "probe_pairs.csv")
    models = [r for r in rows if r.get("kind") != "reference"]
    plotted = [key for key in columns if key not in TABLE_ONLY]
    if plot and plotted and models:
        written["plot"] = _plot(models, [r for r in rows if r.get("kind") == "reference"], plotted,
                                output / "lm_eval.png")
    return written


def _plot(models: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]], columns: Sequence[str],
          target: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("The per-checkpoint plot needs matplotlib: pip install matplotlib, or pass --no-plot "
                          "(plot=False).") from None
    by_step = all(row.get("step") is not None for row in models)
    xs = [row["step"] if by_step else index for index, row in enumerate(models)]
    titles = dict(REPORT_COLUMNS)
    width = min(4, len(columns))
    height = math.ceil(len(columns) / width)
    figure, axes = plt.subplots(height, width, figsize=(4 * width, 3 * height), squeeze=False)
    for axis, column in zip(axes.flat, columns):
        points = [(x, row[column]) for x, row in zip(xs, models) if row.get(column) is not None]
        if points:
            axis.plot(*zip(*points), marker="o", color="C0", label="LM checkpoints")
        for reference in references:
            if reference.get(column) is not None:
                axis.axhline(reference[column], color="C1", linestyle="--", label="real continuations")
        axis.set_title(titles[column], fontsize=9)
        axis.set_xlabel("training step" if by_step else "checkpoint (in the order given)", fontsize=8)
        if not by_step:
            axis.set_xticks(xs)
            axis.set_xticklabels([row["name"] for row in models], rotation=30, ha="right", fontsize=6)
    for axis in list(axes.flat)[len(columns):]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    if handles:
        figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
        figure.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return str(target)


__all__ = [
    "AudioPair", "LoadedLM", "MAX_N", "REPORT_COLUMNS", "auto_bleu", "clips_of_blocks", "continuation_statistics",
    "corpus_for", "decode_sequences", "distinct_n", "expand_lm_paths", "generate_continuations",
    "generative_perplexity", "heldout_loss", "likelihood_probe_audio", "likelihood_probe_ids", "load_lm",
    "load_transcriber", "pair_ids", "preference", "read_pair_dataset", "read_pair_folder", "read_pairs",
    "semantic_ids", "sequence_log_likelihoods", "text_perplexity", "transcribe", "unigram_entropy", "write_lm_report",
]
