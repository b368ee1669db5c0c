"""Audio from a text LM that kept its text vocabulary (`model.keep_text_vocab: true`): continue an audio prompt,
write audio after a text prompt, or both, and decode it with the codec. The command line does this too
(`semanticodec-hf continue` / `python lm/generate.py` on such a folder, text with `--text`); from Python:

    from semanticodec_hf.lm.joint_generation import JointAudioContinuation

    engine = JointAudioContinuation.from_pretrained("runs/lm-joint/final", codec_path="./semanticodec-100tps")
    out = engine.continue_audio([wave], sampling_rate=16000, seconds=8)            # audio prompt
    out = engine.continue_audio(None, 16000, seconds=4, texts=["a dog barks"])   # text prompt, audio out

The prompt is `[bos] [text] <|audio_start|> [prompt audio ids]`, as the corpus wrote it (text before the audio);
the LM continues the audio span under `PatternLogitsProcessor`, the constraint engine of audio-only generation,
run on the span's ids translated into the audio layout (`JointPatternLogitsProcessor`): every position gets the
right stream, text ids are never written inside the span and `<|audio_end|>` closes it after a whole frame.

The whole continuation is one `generate` call, so it must fit in the LM's positions (no long-form sliding: a
window cut out of a joint sequence would drop its text); there is no acoustic stage, n-gram rule or streamed
decode either (the command line refuses `--extend-stride`, `--acoustic-lm` and `--no-repeat-ngram-size`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
import yaml
from transformers import AutoModelForCausalLM, LogitsProcessorList

from semanticodec_hf.audio_token_layout import codes_to_ids
from semanticodec_hf.processing_semanticodec import AudioItemError
from semanticodec_hf.progress import progress_bar

from .codec_access import check_decode_settings
from .generate import (
    GenerationProgress,
    PromptError,
    check_seconds,
    decoding_arguments,
    left_pad,
    longest_fitting_seconds,
    min_frames_for,
    new_tokens_needed,
    prompt_lengths,
)
from .joint_corpus import JointAudioTextTokenizer
from .masked_generate import generate_with_mask
from .pattern_logits import PatternLogitsProcessor


class JointPatternLogitsProcessor:
    """`PatternLogitsProcessor` for joint text+audio ids: the ids after each row's last `<|audio_start|>` are
    translated into the audio layout (start -> `<bos>`, audio ids -> their layout ids, `<|audio_end|>` ->
    `<eos>`, text -> `<pad>`, which the engine skips), the engine's mask is computed there, and the allowed
    semantic/acoustic ids and `<|audio_end|>` are mapped back; every other joint id (all text) is blocked."""

    def __init__(self, tokenizer: JointAudioTextTokenizer, **pattern_options: Any):
        layout, audio = tokenizer.layout, tokenizer.audio_layout
        self.inner = PatternLogitsProcessor(audio, tokenizer.pattern, **pattern_options)
        self.layout, self.audio = layout, audio
        to_audio = torch.full((layout.vocab_size,), audio.pad_token_id, dtype=torch.long)
        to_audio[layout.semantic_offset: layout.special_offset] = torch.arange(audio.special_offset)
        to_audio[layout.audio_start_id] = audio.bos_token_id
        to_audio[layout.audio_end_id] = audio.eos_token_id
        self.to_audio = to_audio  # joint id -> layout id
        # layout id -> the joint column holding its score (bos/pad/sep: a column that is blocked in the end anyway)
        to_joint = torch.full((audio.vocab_size,), layout.audio_start_id, dtype=torch.long)
        to_joint[: audio.special_offset] = torch.arange(layout.semantic_offset, layout.special_offset)
        to_joint[audio.eos_token_id] = layout.audio_end_id
        self.to_joint = to_joint
        # the layout ids a joint row may write inside a span (semantic, acoustic, <eos>) and their joint columns
        self.writable = torch.cat([torch.arange(audio.special_offset), torch.tensor([audio.eos_token_id])])
        self.writable_columns = to_joint[self.writable]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        device = input_ids.device
        width = scores.shape[-1]
        if width < self.layout.vocab_size:
            raise ValueError(f"The LM scores {width} ids but the joint vocabulary has {self.layout.vocab_size}.")
        ids = input_ids.clamp(max=self.layout.vocab_size - 1)  # a padded vocabulary's extra rows: never written
        inner = self.inner(self.to_audio.to(device)[ids], scores[:, self.to_joint.to(device)])
        out = torch.full_like(scores, float("-inf"))  # text ids (and a padded vocabulary's extra rows): blocked
        out[:, self.writable_columns.to(device)] = inner[:, self.writable.to(device)]
        return out


class ContextOverflow(ValueError):
    """A continuation longer than the LM's positions (`positions` needed, `limit` there); a joint LM has no
    long-form sliding. `prompt_positions` / `prompt_frames` let a caller name the longest length that fits."""

    def __init__(self, positions: int, limit: int, prompt_positions: int, prompt_frames: Sequence[int]):
        super().__init__(f"The continuation needs {positions} positions but the LM has {limit}; a text+audio LM "
                         "continues in one generate call (no sliding past its context): ask for fewer frames, or "
                         "give shorter prompts or texts.")
        self.positions, self.limit = positions, limit
        self.prompt_positions, self.prompt_frames = prompt_positions, list(prompt_frames)


def trained_text_position(lm_path: Union[str, Path]) -> Optional[str]:
    """Where the LM's corpus put each clip's text (`data.text_position` of the `lm_recipe.yaml` that lm/train.py
    saves with the model: "before" or "after"); None when the folder holds no recipe or the recipe no text."""
    recipe_file = Path(lm_path) / "lm_recipe.yaml"
    if not recipe_file.is_file():
        return None
    data = (yaml.safe_load(recipe_file.read_text()) or {}).get("data") or {}
    if data.get("text_column") is None:
        return None
    return data.get("text_position", "before")


class JointAudioContinuation:
    """A joint text+audio LM plus the codec it was trained for.

    `text_position`: where the LM's corpus put its texts (`trained_text_position`; None: unknown or no text
    column). Text prompts go before the audio span, so an LM trained with texts after its audio refuses them."""

    def __init__(self, lm, tokenizer: JointAudioTextTokenizer, device: str = "cpu",
                 text_position: Optional[str] = None):
        self.lm = lm.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.text_position = text_position
        rows = int(lm.get_input_embeddings().weight.shape[0])
        if rows < tokenizer.layout.vocab_size:
            raise ValueError(f"The LM has {rows} embedding rows but the joint vocabulary {tokenizer.layout.vocab_size} "
                             "ids; the tokenizer belongs to another model.")

    @classmethod
    def from_pretrained(cls, lm_path: Union[str, Path], codec_path: Optional[str] = None, device: str = "cpu",
                        codec_tokenizer: Any = None) -> "JointAudioContinuation":
        """Load an LM folder of a `keep_text_vocab` run and its codec (`codec_path`, else the one the corpus was
        tokenized with; `codec_tokenizer`: an already loaded `SemantiCodecAudioTokenizer`, layout checked)."""
        tokenizer = JointAudioTextTokenizer.from_pretrained(lm_path)
        audio = tokenizer.audio_tokenizer
        if codec_tokenizer is None:
            source = codec_path or audio.codec_name_or_path
            if source is None:
                raise ValueError(f"{lm_path} does not record its codec (it was trained on a synthetic corpus); pass "
                                 "codec_path (a converted SemantiCodec folder; --codec PATH on the command line, or "
                                 "--tiny for the tiny recipe's random codec).")
            from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

            codec_tokenizer = SemantiCodecAudioTokenizer.from_pretrained(source, pattern=audio.pattern, device=device)
        if codec_tokenizer.layout != audio.layout:
            raise ValueError(f"The LM was trained on ids of layout {audio.layout.to_dict()} but the codec has "
                             f"{codec_tokenizer.layout.to_dict()}; use the codec variant the LM was trained with.")
        codec_tokenizer.pattern = audio.pattern
        tokenizer.audio_tokenizer = codec_tokenizer
        return cls(AutoModelForCausalLM.from_pretrained(str(lm_path)), tokenizer, device,
                   text_position=trained_text_position(lm_path))

    @property
    def context(self) -> Optional[int]:
        """The LM's positions (`max_position_embeddings` / `n_positions`), None when its config names none."""
        config = self.lm.config
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        return None if limit is None else int(limit)

    def check_texts(self, texts: Optional[Sequence[Optional[str]]]) -> None:
        """Refuse texts for an LM whose corpus put its texts after the audio: it never saw text before audio,
        which is where a text prompt goes (`[bos] [text] <|audio_start|> ...`)."""
        if self.text_position == "after" and texts is not None and any(texts):
            raise ValueError("This LM was trained with data.text_position: after (each clip's text after its audio, "
                             "see its lm_recipe.yaml), so it never saw text before audio, where a text prompt goes; "
                             "continue it without text, or train with data.text_position: before.")

    # ------------------------------------------------------------------------------------ ids
    def prompt_ids(self, codes: Optional[torch.Tensor] = None, text: Optional[str] = None) -> List[int]:
        """`[bos] [text] <|audio_start|> [audio ids of codes]`, left open for the LM."""
        layout = self.tokenizer.layout
        head = [] if layout.bos_token_id is None else [layout.bos_token_id]
        audio: List[int] = []
        if codes is not None:
            body = codes_to_ids(codes, self.tokenizer.audio_layout, self.tokenizer.pattern)
            audio = self.tokenizer.joint.audio_to_joint[body].tolist()
        return head + self.tokenizer.text_ids(text) + [layout.audio_start_id] + audio

    def generate_codes(self, prompt_codes: Sequence[Optional[torch.Tensor]], target_frames: int,
                       texts: Optional[Sequence[Optional[str]]] = None, seed: int = 0,
                       min_frames: Optional[int] = None, allow_early_eos: bool = False, progress: bool = False,
                       **decoding: Any) -> Dict[str, Any]:
        """Continue each row's audio span to `target_frames` frames (prompt frames included); returns `ids` (the
        joint sequences) and `codes` (each row's whole audio span, prompt included, `[2, F]`). `decoding`:
        `greedy`, `num_beams`, `temperature`, `top_k`, `top_p`, `repetition_penalty` (as `continue`);
        `progress`: a bar over generation steps on stderr (not with beam search, which takes no streamer).
        Raises `ContextOverflow` when the prompts and the continuation do not fit in the LM's positions."""
        tokenizer, pattern = self.tokenizer, self.tokenizer.pattern
        texts = list(texts) if texts is not None else [None] * len(prompt_codes)
        if len(texts) != len(prompt_codes):
            raise ValueError(f"{len(texts)} texts for {len(prompt_codes)} prompts; give one (or None) per prompt.")
        self.check_texts(texts)
        arguments = decoding_arguments(**decoding)
        frames = [0 if c is None else int(c.shape[1]) for c in prompt_codes]
        if any(f >= target_frames for f in frames):
            raise ValueError(f"target_frames {target_frames} must exceed every prompt's frames ({max(frames)}).")
        rows = [self.prompt_ids(c, t) for c, t in zip(prompt_codes, texts)]
        batch = left_pad(rows, tokenizer.layout.pad_token_id)  # the text pad, or eos when it has none
        needed = max(new_tokens_needed(pattern, f, target_frames) for f in frames)
        width, limit = batch["input_ids"].shape[1], self.context
        if limit is not None and width + needed > limit:  # past it GPT-2 fails on a position index, RoPE drifts
            raise ContextOverflow(width + needed, limit, width, frames)
        beams = arguments["num_beams"]
        processor = JointPatternLogitsProcessor(
            tokenizer, target_frames=[target_frames] * (len(rows) * beams),
            allow_early_eos=allow_early_eos or min_frames is not None,
            min_frames=None if min_frames is None else [min_frames] * (len(rows) * beams))
        show = progress and beams == 1
        bar = progress_bar(total=needed, desc="continue", unit="step", quiet=not show)
        torch.manual_seed(seed)
        sequences = generate_with_mask(
            self.lm, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
            max_new_tokens=needed, logits_processor=LogitsProcessorList([processor]),
            eos_token_id=tokenizer.layout.audio_end_id, pad_token_id=tokenizer.layout.pad_token_id,
            streamer=GenerationProgress(bar) if show else None, **arguments).cpu()
        bar.close()
        codes = [self.span_codes(row) for row in sequences]
        return {"ids": sequences, "codes": codes, "target_frames": target_frames}

    def span_codes(self, joint_ids: torch.Tensor) -> torch.Tensor:
        """The codes of the last audio span of a generated row (padding after `<|audio_end|>` dropped)."""
        layout = self.tokenizer.layout
        ids = joint_ids.tolist()
        start = len(ids) - 1 - ids[::-1].index(layout.audio_start_id)
        end = ids.index(layout.audio_end_id, start) if layout.audio_end_id in ids[start:] else len(ids)
        return self.tokenizer.joint.ids_to_codes(ids[start:end + 1] if end < len(ids) else ids[start:])

    # ------------------------------------------------------------------------------------ audio
    def continue_audio(self, prompts: Optional[Sequence[np.ndarray]], sampling_rate: int, seconds: float,
                       texts: Optional[Sequence[Optional[str]]] = None, seed: int = 0,
                       num_inference_steps: Optional[int] = None, sampler: Optional[str] = None,
                       min_seconds: Optional[float] = None, allow_early_eos: bool = False, progress: bool = False,
                       **decoding: Any) -> Dict[str, Any]:
        """Audio of `seconds` in total per row: each audio prompt (or none: `prompts=None` with `texts`) continued
        after its text, then decoded by the codec. Returns `audio` (16 kHz tensors: each row's whole span, prompt
        codes included, decoded in one call; unlike `AudioContinuation` no separate prompt reconstruction is
        spliced in front), `codes` and `ids`. `allow_early_eos` / `min_seconds` let a row end early, as for
        `continue`; `progress`: bars over generation and decoding steps on stderr.

        Checked before any audio is encoded: the decoder settings, `seconds` and the decoding choice, the texts
        against the LM's corpus (`check_texts`), each prompt's length (`prompt_lengths`); the LM's context after
        encoding (its message names the longest `--seconds` that fits)."""
        audio_tokenizer = self.tokenizer.audio_tokenizer
        if audio_tokenizer.model is None:
            raise ValueError("This engine has no codec (an ids-only tokenizer); load it with a codec to make audio.")
        if self.tokenizer.pattern != "interleaved":
            raise ValueError(f"A joint LM on {self.tokenizer.pattern!r} ids writes no acoustic ids, which the codec "
                             "needs; use generate_codes and an acoustic stage (lm/acoustic_stage.py).")
        config = audio_tokenizer.model.config
        check_decode_settings(audio_tokenizer.model, num_inference_steps, sampler)
        check_seconds(seconds)
        decoding_arguments(**decoding)  # a typo costs no encoding (generate_codes uses them)
        min_frames = min_frames_for(min_seconds, seconds, config)
        self.check_texts(texts)
        if prompts is None:
            if not texts:
                raise ValueError("Give audio prompts, texts, or both.")
            prompt_codes: List[Optional[torch.Tensor]] = [None] * len(texts)
            prompt_samples = [0] * len(texts)
        else:
            prompt_samples, _ = prompt_lengths(prompts, sampling_rate, seconds, config)
            try:
                prompt_codes = list(audio_tokenizer.encode_audio(list(prompts), sampling_rate))
            except AudioItemError as error:
                raise PromptError(error.index, error.message) from None
        target_samples = int(round(seconds * config.sampling_rate))
        target_frames = config.frame_budget(target_samples)
        try:
            result = self.generate_codes(prompt_codes, target_frames, texts=texts, seed=seed, min_frames=min_frames,
                                         allow_early_eos=allow_early_eos, progress=progress, **decoding)
        except ContextOverflow as error:
            fits = longest_fitting_seconds(self.tokenizer.pattern, error.prompt_positions, error.prompt_frames,
                                           max(prompt_samples), config, error.limit)
            advice = (f"--seconds {fits:.2f} is the longest that fits with these prompts" if fits is not None else
                      "the prompts alone leave no room for a continuation; use shorter prompts or texts")
            raise ValueError(f"--seconds {seconds} needs {error.positions} positions but the LM has {error.limit}: "
                             f"{advice}. A text+audio LM continues in one generate call (no long-form sliding past "
                             "its context).") from None
        decode = dict(num_inference_steps=num_inference_steps, seed=seed)
        if sampler is not None:
            decode["sampler"] = sampler
        waves = audio_tokenizer.processor.decode_codes(audio_tokenizer.model, result["codes"], progress=progress,
                                                       **decode)
        result["audio"] = [w[: min(target_samples, config.output_num_samples(c.shape[1]))]
                           for w, c in zip(waves, result["codes"])]
        return result


__all__ = ["ContextOverflow", "JointAudioContinuation", "JointPatternLogitsProcessor", "trained_text_position"]
