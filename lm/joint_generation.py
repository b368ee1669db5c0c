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

A continuation that fits in the LM's positions is one `generate` call. A longer one is generated long-form, as
for audio LMs (`generate_sliding`, `extend_stride` seconds per slide): each later window is the row's last audio
frames only, without `[bos] [text] <|audio_start|>`, which is how the training blocks after a clip's first look
(see `JointAudioContinuation.generate_codes`); codes too long for one decode call are decoded as a stream. So the
text conditions the first window only. There is no acoustic stage or n-gram rule (the command line refuses
`--acoustic-lm` and `--no-repeat-ngram-size`).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
import yaml
from transformers import AutoModelForCausalLM, LogitsProcessorList

from semanticodec_hf.audio_token_layout import codes_to_ids
from semanticodec_hf.processing_semanticodec import AudioItemError
from semanticodec_hf.progress import progress_bar

from .codec_access import check_decode_settings
from .generate import (
    AudioContinuation,
    GenerationProgress,
    PromptError,
    check_extend_stride,
    check_seconds,
    decoding_arguments,
    generate_sliding,
    left_pad,
    longest_fitting_seconds,
    min_frames_for,
    new_tokens_needed,
    prompt_lengths,
    stream_decode_row,
    stride_frames_for,
)
from .joint_corpus import JointAudioTextTokenizer
from .masked_generate import generate_with_mask
from .pattern_logits import PatternLogitsProcessor


class JointPatternLogitsProcessor:
    """`PatternLogitsProcessor` for joint text+audio ids: the ids after each row's last `<|audio_start|>` are
    translated into the audio layout (start -> `<bos>`, audio ids -> their layout ids, `<|audio_end|>` ->
    `<eos>`, text -> `<pad>`, which the engine skips), the engine's mask is computed there, and the allowed
    semantic/acoustic ids and `<|audio_end|>` are mapped back; every other joint id (all text) is blocked.

    A long-form window after a slide holds no `<|audio_start|>` (only audio ids, left-padded with the text pad):
    its ids translate to audio ids after `<pad>`, and the engine then counts from the first non-`<pad>` id
    (`body_mask`), as for an audio LM's window without `<bos>`; the caller shifts `target_frames` / `min_frames`
    by the frames that slid out."""

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
    """A continuation longer than the LM's positions (`positions` needed, `limit` there) that cannot slide past
    them; `why` says why not and what to do (beam search, a pattern other than interleaved, or texts and prompts
    that leave the first window no room for a frame). `prompt_positions` / `prompt_frames` let a caller name the
    longest length that fits in one `generate` call."""

    def __init__(self, positions: int, limit: int, prompt_positions: int, prompt_frames: Sequence[int],
                 why: str = ""):
        super().__init__(f"The continuation needs {positions} positions but the LM has {limit}: {why}")
        self.positions, self.limit, self.why = positions, limit, why
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
                       extend_stride: Optional[float] = None, **decoding: Any) -> Dict[str, Any]:
        """Continue each row's audio span to `target_frames` frames (prompt frames included); returns `ids` (the
        joint sequences, left-padded), `codes` (each row's whole audio span, prompt included, `[2, F]`),
        `target_frames` and `slides` (0: one `generate` call). `decoding`: `greedy`, `num_beams`, `temperature`,
        `top_k`, `top_p`, `repetition_penalty` (as `continue`); `progress`: a bar over generation steps on stderr
        (not with beam search, which takes no streamer).

        Past the LM's positions the continuation slides (`generate_sliding`; `extend_stride` seconds dropped per
        slide, default a quarter of the context). Each window after the first is the row's last audio frames
        only, starting on a semantic id, without `[bos] [text] <|audio_start|>`: lm/train.py cuts every joint
        clip (packed or not) into blocks between frames and adds nothing, so the blocks after a clip's first
        start inside its audio with none of them. An `<|audio_start|>` there would tell the LM a new span starts,
        and a text before mid-clip audio is a form it never saw. So the text is read by the first window only:
        texts need the first window (`[bos] [text] <|audio_start|>`, the prompt and one new frame) to fit in the
        context. Targets and `min_frames` count over the whole clip (shifted by the frames that slid out).
        Raises `ContextOverflow` past the positions for beam search, a pattern other than interleaved, or texts
        whose first window does not fit."""
        tokenizer, pattern, layout = self.tokenizer, self.tokenizer.pattern, self.tokenizer.layout
        texts = list(texts) if texts is not None else [None] * len(prompt_codes)
        if len(texts) != len(prompt_codes):
            raise ValueError(f"{len(texts)} texts for {len(prompt_codes)} prompts; give one (or None) per prompt.")
        self.check_texts(texts)
        arguments = decoding_arguments(**decoding)
        check_extend_stride(extend_stride)
        frames = [0 if c is None else int(c.shape[1]) for c in prompt_codes]
        if any(f >= target_frames for f in frames):
            raise ValueError(f"target_frames {target_frames} must exceed every prompt's frames ({max(frames)}).")
        rows = [self.prompt_ids(c, t) for c, t in zip(prompt_codes, texts)]
        batch = left_pad(rows, layout.pad_token_id)  # the text pad, or eos when it has none
        needed = max(new_tokens_needed(pattern, f, target_frames) for f in frames)
        width, limit = batch["input_ids"].shape[1], self.context
        beams = arguments["num_beams"]
        sliding = limit is not None and width + needed > limit  # past it GPT-2 fails on a position index, RoPE drifts
        if sliding:
            self._check_slidable(width + needed, limit, width, frames, any(texts), beams)
            stride_frames = self.stride_frames(extend_stride, limit)
        show = progress and beams == 1
        bar = progress_bar(total=needed, desc="continue", unit="step", quiet=not show)
        streamer = GenerationProgress(bar) if show else None
        slides = 0
        if sliding:
            torch.manual_seed(seed)
            out, slides = generate_sliding(
                self.lm, layout, rows, target_frames, limit, stride_frames, arguments,
                allow_early_eos=allow_early_eos, min_frames=min_frames, device=self.device, streamer=streamer,
                head_lengths=[len(row) - 2 * f for row, f in zip(rows, frames)],  # ids before the audio
                pattern_processor=partial(JointPatternLogitsProcessor, tokenizer), eos_token_id=layout.audio_end_id)
            sequences = left_pad(out, layout.pad_token_id)["input_ids"]
        else:
            processor = JointPatternLogitsProcessor(
                tokenizer, target_frames=[target_frames] * (len(rows) * beams),
                allow_early_eos=allow_early_eos or min_frames is not None,
                min_frames=None if min_frames is None else [min_frames] * (len(rows) * beams))
            torch.manual_seed(seed)
            sequences = generate_with_mask(
                self.lm, batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device),
                max_new_tokens=needed, logits_processor=LogitsProcessorList([processor]),
                eos_token_id=layout.audio_end_id, pad_token_id=layout.pad_token_id, streamer=streamer,
                **arguments).cpu()
        bar.close()
        codes = [self.span_codes(row) for row in sequences]
        return {"ids": sequences, "codes": codes, "target_frames": target_frames, "slides": slides}

    def _check_slidable(self, positions: int, limit: int, width: int, frames: Sequence[int], texts: bool,
                        beams: int) -> None:
        """Raise `ContextOverflow` for a continuation past the context that cannot slide: beams, a pattern other
        than interleaved, or texts whose first window (`width` ids: text, prompt) leaves no room for a frame."""
        pattern = self.tokenizer.pattern
        why = None
        if beams > 1:
            why = ("beam search cannot carry its beams across a slide of the context (long-form continuation); use "
                   "sampling or --greedy for longer audio, or ask for less")
        elif pattern != "interleaved":
            why = (f"long-form continuation (sliding the context) needs the interleaved pattern; {pattern} writes "
                   "every acoustic id after all semantic ids, so no window of it can be continued; ask for less")
        elif texts and width + 2 > limit:
            why = (f"the text is read by the first window only (the windows after a slide hold audio only, as the "
                   f"training blocks after a clip's first do), and the first window ([bos] text <|audio_start|>, "
                   f"the prompt and one new frame, for the batch's longest row) needs {width + 2} positions; use "
                   f"a shorter text or prompt (or batch long prompts apart from texts), or no text")
        if why is not None:
            raise ContextOverflow(positions, limit, width, frames, why)

    def stride_frames(self, extend_stride: Optional[float], limit: int) -> int:
        """Frames one slide drops (`stride_frames_for`): `extend_stride` seconds at the codec's frame rate, or a
        quarter of the context when None (which needs no codec)."""
        model = self.tokenizer.audio_tokenizer.model
        if extend_stride is not None and model is None:
            raise ValueError("extend_stride is in seconds, which needs the codec's frame rate, and this engine has "
                             "no codec (an ids-only tokenizer); load it with its codec, or leave extend_stride None "
                             "(a quarter of the context).")
        return stride_frames_for(extend_stride, limit, None if model is None else model.config)

    def span_codes(self, joint_ids: torch.Tensor) -> torch.Tensor:
        """The codes of the last audio span of a generated row (padding after `<|audio_end|>` dropped)."""
        layout = self.tokenizer.layout
        ids = joint_ids.tolist()
        start = len(ids) - 1 - ids[::-1].index(layout.audio_start_id)
        end = ids.index(layout.audio_end_id, start) if layout.audio_end_id in ids[start:] else len(ids)
        return self.tokenizer.joint.ids_to_codes(ids[start:end + 1] if end < len(ids) else ids[start:])

    # ------------------------------------------------------------------------------------ audio
    def generate_continuation(self, prompts: Optional[Sequence[np.ndarray]], sampling_rate: int, seconds: float,
                       texts: Optional[Sequence[Optional[str]]] = None, seed: int = 0,
                       num_inference_steps: Optional[int] = None, sampler: Optional[str] = None,
                       min_seconds: Optional[float] = None, allow_early_eos: bool = False, progress: bool = False,
                       extend_stride: Optional[float] = None, **decoding: Any) -> Dict[str, Any]:
        """The LM half of `continue_audio` (same arguments): checks, encodes the prompts and generates; returns
        `codes`, `ids`, `slides`, `streamed`, `target_samples` and `decode` (the codec decoder's settings), no
        audio yet: `decode_result` adds it, or, for a `streamed` result, write `audio_pieces` row by row as they
        come (the command line does), so minutes of output are never held whole.

        Checked before any audio is encoded: the decoder settings, `seconds`, the decoding choice and
        `extend_stride` (against the context too), the texts against the LM's corpus (`check_texts`), each
        prompt's length (`prompt_lengths`); after encoding, what cannot slide (`ContextOverflow`: its message
        names the longest `--seconds` that fits in one generate call)."""
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
        check_extend_stride(extend_stride)
        if self.context is not None:
            self.stride_frames(extend_stride, self.context)  # a stride past the context: refused before encoding
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
                                         allow_early_eos=allow_early_eos, progress=progress,
                                         extend_stride=extend_stride, **decoding)
        except ContextOverflow as error:
            fits = longest_fitting_seconds(self.tokenizer.pattern, error.prompt_positions, error.prompt_frames,
                                           max(prompt_samples), config, error.limit)
            one_call = "" if fits is None else (f" (--seconds {fits:.2f} is the longest that fits in one generate "
                                                "call with these prompts)")
            raise ValueError(f"--seconds {seconds} needs {error.positions} positions but the LM has {error.limit} and "
                             f"this continuation cannot slide past them: {error.why}{one_call}.") from None
        decode = dict(num_inference_steps=num_inference_steps, seed=seed)
        if sampler is not None:
            decode["sampler"] = sampler
        codes = result["codes"]
        streamed = result["slides"] > 0 or any(audio_tokenizer.processor.streams_decode(config, c.shape[1])
                                               for c in codes)
        result.update(target_samples=target_samples, decode=decode, streamed=streamed)
        return result

    def decode_result(self, result: Dict[str, Any], progress: bool = False) -> Dict[str, Any]:
        """Add `audio` to a `generate_continuation` result: one batched codec decode, or for a `streamed` result
        each row's `audio_pieces` joined (the decoder's memory bounded; only the waveforms are held)."""
        audio_tokenizer = self.tokenizer.audio_tokenizer
        config, codes, decode = audio_tokenizer.model.config, result["codes"], result["decode"]
        target_samples = result["target_samples"]
        if result["streamed"]:
            result["audio"] = [torch.cat(list(progress_bar(self.audio_pieces(result, row), desc="decode",
                                                           unit="piece", quiet=not progress)))
                               for row in range(len(codes))]
        else:
            waves = audio_tokenizer.processor.decode_codes(audio_tokenizer.model, codes, progress=progress, **decode)
            result["audio"] = [w[: min(target_samples, config.output_num_samples(c.shape[1]))]
                               for w, c in zip(waves, codes)]
        return result

    def continue_audio(self, prompts: Optional[Sequence[np.ndarray]], sampling_rate: int, seconds: float,
                       texts: Optional[Sequence[Optional[str]]] = None, seed: int = 0,
                       num_inference_steps: Optional[int] = None, sampler: Optional[str] = None,
                       min_seconds: Optional[float] = None, allow_early_eos: bool = False, progress: bool = False,
                       extend_stride: Optional[float] = None, **decoding: Any) -> Dict[str, Any]:
        """Audio of `seconds` in total per row: each audio prompt (or none: `prompts=None` with `texts`) continued
        after its text, then decoded by the codec (`generate_continuation`, then `decode_result`). Returns `audio`
        (16 kHz tensors: each row's whole span, prompt codes included; unlike `AudioContinuation` no separate
        prompt reconstruction is spliced in front), `codes`, `ids`, `slides`, `streamed`, `target_samples` and
        `decode`. `allow_early_eos` / `min_seconds` let a row end early, as for `continue`; `progress`: bars over
        generation and decoding steps on stderr. Past the LM's context the continuation slides (`extend_stride`
        seconds per slide); after a slide, or for codes longer than one decode call takes
        (`processor.streams_decode`), each row is decoded as a stream (`audio_pieces`) and joined."""
        result = self.generate_continuation(
            prompts, sampling_rate, seconds, texts=texts, seed=seed, num_inference_steps=num_inference_steps,
            sampler=sampler, min_seconds=min_seconds, allow_early_eos=allow_early_eos, progress=progress,
            extend_stride=extend_stride, **decoding)
        return self.decode_result(result, progress=progress)

    windows_per_chunk = AudioContinuation.windows_per_chunk  # decode windows per piece of a streamed decode

    def audio_pieces(self, result: Dict[str, Any], row: int) -> Iterator[torch.Tensor]:
        """Row `row` of a `continue_audio` result as consecutive waveform pieces (16 kHz): the codec's streamed
        decode (`windows_per_chunk` decode windows a piece, so memory does not grow with the length), equal to
        the batch decode up to float32 rounding (same seed per row: `seed + row`)."""
        return stream_decode_row(self.tokenizer.audio_tokenizer, result, row, self.windows_per_chunk)[0]


__all__ = ["ContextOverflow", "JointAudioContinuation", "JointPatternLogitsProcessor", "trained_text_position"]
