"""Audio from a text LM that kept its text vocabulary (`model.keep_text_vocab: true`): continue an audio prompt,
write audio after a text prompt, or both, and decode it with the codec.

    from semanticodec_hf.lm.joint_generation import JointAudioContinuation

    engine = JointAudioContinuation.from_pretrained("runs/lm-joint/final", codec_path="./semanticodec-100tps")
    out = engine.continue_audio([wave], sampling_rate=16000, seconds=8)            # audio prompt
    out = engine.continue_audio(None, 16000, seconds=4, texts=["a dog barks"])   # text prompt, audio out

The prompt is `[bos] [text] <|audio_start|> [prompt audio ids]`, as the corpus wrote it (text before the audio);
the LM continues the audio span under `PatternLogitsProcessor`, the constraint engine of audio-only generation,
run on the span's ids translated into the audio layout (`JointPatternLogitsProcessor`): every position gets the
right stream, text ids are never written inside the span and `<|audio_end|>` closes it after a whole frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LogitsProcessorList

from semanticodec_hf.audio_token_layout import codes_to_ids
from semanticodec_hf.processing_semanticodec import AudioItemError

from .codec_access import check_decode_settings
from .generate import PromptError, decoding_arguments, left_pad, min_frames_for, new_tokens_needed
from .joint_corpus import JointAudioTextTokenizer
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


class JointAudioContinuation:
    """A joint text+audio LM plus the codec it was trained for."""

    def __init__(self, lm, tokenizer: JointAudioTextTokenizer, device: str = "cpu"):
        self.lm = lm.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
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
                                 "codec_path (a converted SemantiCodec folder).")
            from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

            codec_tokenizer = SemantiCodecAudioTokenizer.from_pretrained(source, pattern=audio.pattern, device=device)
        if codec_tokenizer.layout != audio.layout:
            raise ValueError(f"The LM was trained on ids of layout {audio.layout.to_dict()} but the codec has "
                             f"{codec_tokenizer.layout.to_dict()}; use the codec variant the LM was trained with.")
        codec_tokenizer.pattern = audio.pattern
        tokenizer.audio_tokenizer = codec_tokenizer
        return cls(AutoModelForCausalLM.from_pretrained(str(lm_path)), tokenizer, device)

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
                       min_frames: Optional[int] = None, allow_early_eos: bool = False,
                       **decoding: Any) -> Dict[str, Any]:
        """Continue each row's audio span to `target_frames` frames (prompt frames included); returns `ids` (the
        joint sequences) and `codes` (each row's whole audio span, prompt included, `[2, F]`). `decoding`:
        `greedy`, `num_beams`, `temperature`, `top_k`, `top_p`, `repetition_penalty` (as `continue`)."""
        tokenizer, pattern = self.tokenizer, self.tokenizer.pattern
        texts = list(texts) if texts is not None else [None] * len(prompt_codes)
        if len(texts) != len(prompt_codes):
            raise ValueError(f"{len(texts)} texts for {len(prompt_codes)} prompts; give one (or None) per prompt.")
        arguments = decoding_arguments(**decoding)
        frames = [0 if c is None else int(c.shape[1]) for c in prompt_codes]
        if any(f >= target_frames for f in frames):
            raise ValueError(f"target_frames {target_frames} must exceed every prompt's frames ({max(frames)}).")
        rows = [self.prompt_ids(c, t) for c, t in zip(prompt_codes, texts)]
        batch = left_pad(rows, tokenizer.layout.pad_token_id)  # the text pad, or eos when it has none
        needed = max(new_tokens_needed(pattern, f, target_frames) for f in frames)
        beams = arguments["num_beams"]
        processor = JointPatternLogitsProcessor(
            tokenizer, target_frames=[target_frames] * (len(rows) * beams),
            allow_early_eos=allow_early_eos or min_frames is not None,
            min_frames=None if min_frames is None else [min_frames] * (len(rows) * beams))
        torch.manual_seed(seed)
        with torch.no_grad():
            sequences = self.lm.generate(
                input_ids=batch["input_ids"].to(self.device), attention_mask=batch["attention_mask"].to(self.device),
                max_new_tokens=needed, logits_processor=LogitsProcessorList([processor]),
                eos_token_id=tokenizer.layout.audio_end_id, pad_token_id=tokenizer.layout.pad_token_id,
                **arguments).cpu()
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
                       min_seconds: Optional[float] = None, **decoding: Any) -> Dict[str, Any]:
        """Audio of `seconds` in total per row: each audio prompt (or none: `prompts=None` with `texts`) continued
        after its text, then decoded by the codec. Returns `audio` (16 kHz tensors, the prompt's reconstruction
        first), `codes` and `ids`."""
        audio_tokenizer = self.tokenizer.audio_tokenizer
        if audio_tokenizer.model is None:
            raise ValueError("This engine has no codec (an ids-only tokenizer); load it with a codec to make audio.")
        if self.tokenizer.pattern != "interleaved":
            raise ValueError(f"A joint LM on {self.tokenizer.pattern!r} ids writes no acoustic ids, which the codec "
                             "needs; use generate_codes and an acoustic stage (lm/acoustic_stage.py).")
        config = audio_tokenizer.model.config
        check_decode_settings(audio_tokenizer.model, num_inference_steps, sampler)
        if prompts is None:
            if not texts:
                raise ValueError("Give audio prompts, texts, or both.")
            prompt_codes: List[Optional[torch.Tensor]] = [None] * len(texts)
        else:
            try:
                prompt_codes = list(audio_tokenizer.encode_audio(list(prompts), sampling_rate))
            except AudioItemError as error:
                raise PromptError(error.index, error.message) from None
        target_samples = int(round(seconds * config.sampling_rate))
        target_frames = config.frame_budget(target_samples)
        result = self.generate_codes(prompt_codes, target_frames, texts=texts, seed=seed,
                                     min_frames=min_frames_for(min_seconds, seconds, config), **decoding)
        decode = dict(num_inference_steps=num_inference_steps, seed=seed)
        if sampler is not None:
            decode["sampler"] = sampler
        waves = audio_tokenizer.processor.decode_codes(audio_tokenizer.model, result["codes"], **decode)
        result["audio"] = [w[: min(target_samples, config.output_num_samples(c.shape[1]))]
                           for w, c in zip(waves, result["codes"])]
        return result


__all__ = ["JointAudioContinuation", "JointPatternLogitsProcessor"]
