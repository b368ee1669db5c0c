"""Audio ids as text tokens: the audio vocabulary as a plain `AutoTokenizer`, and audio tokens added to a text
tokenizer (joint ids <-> codes, text untouched, mixed sequences split). Text tokenizers are built here from a few
sentences: no network."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout
from semanticodec_hf.joint_vocabulary import (
    AUDIO_END,
    AUDIO_START,
    AudioSpan,
    JointVocabulary,
    TextSpan,
    audio_token_strings,
    build_audio_fast_tokenizer,
    extend_text_tokenizer,
)
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer
from recipe_modules import import_recipe

LAYOUT = SemantiCodecVocabularyLayout(64, 128)
SENTENCES = ["hello world, this is a tiny corpus.", "audio tokens live beside text tokens!",
             "listen to this clip and describe it", "numbers 12 and 345 are text too"] * 10


# A small byte-level BPE text tokenizer trained locally (the kind GPT-2 / Llama 3 / Qwen use): the one the joint
# training demo builds, recipes/make_tiny_text_lm.py.
text_tokenizer = import_recipe("make_tiny_text_lm").build_text_tokenizer


def random_codes(frames: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, LAYOUT.semantic_vocab_size, (frames,), generator=generator),
                        torch.randint(0, LAYOUT.acoustic_vocab_size, (frames,), generator=generator)])


# ------------------------------------------------------------------------------------ the audio vocabulary alone
def test_the_audio_fast_tokenizer_has_the_layouts_ids():
    fast = build_audio_fast_tokenizer(LAYOUT)
    strings = audio_token_strings(LAYOUT)
    assert len(fast) == LAYOUT.vocab_size == len(strings) == len(set(strings))
    assert fast("".join(strings), add_special_tokens=False).input_ids == list(range(LAYOUT.vocab_size))
    assert [fast.bos_token_id, fast.eos_token_id, fast.pad_token_id, fast.sep_token_id] == [
        LAYOUT.bos_token_id, LAYOUT.eos_token_id, LAYOUT.pad_token_id, LAYOUT.sep_token_id]
    ids = SemantiCodecAudioTokenizer(layout=LAYOUT).codes_to_ids(random_codes(9))
    assert fast(fast.decode(ids), add_special_tokens=False).input_ids == ids  # decode -> encode is exact
    assert fast.decode(ids).startswith("<|audio_bos|><|s_")


def test_a_saved_audio_tokenizer_folder_loads_with_auto_tokenizer_in_a_fresh_process(tmp_path):
    tokenizer = SemantiCodecAudioTokenizer(layout=LAYOUT, pattern="interleaved")
    folder = tmp_path / "lm"
    tokenizer.save_pretrained(folder)  # ids-only: audio_tokenizer_config.json + tokenizer.json
    ids = tokenizer.codes_to_ids(random_codes(7, seed=3))
    text = tokenizer.fast_tokenizer().decode(ids)
    code = (
        "import json, sys\n"
        "from transformers import AutoTokenizer, PreTrainedTokenizerFast\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "print(json.dumps({'ids': tok(sys.argv[2], add_special_tokens=False).input_ids, 'fast': isinstance(tok, PreTrainedTokenizerFast),\n"
        "    'loaded': sorted(m for m in sys.modules if m.startswith('semanticodec_hf'))}))\n"
    )
    env = dict(os.environ, SEMANTICODEC_HF_AUTOLOAD="0")  # the folder must load without this package's code
    result = subprocess.run([sys.executable, "-c", code, str(folder), text], capture_output=True, text=True,
                            env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["ids"] == ids and seen["fast"] and seen["loaded"] == []
    # and the audio tokenizer still loads from the same folder
    assert SemantiCodecAudioTokenizer.from_pretrained(folder, load_codec=False).layout == LAYOUT


# ------------------------------------------------------------------------------------ a text tokenizer, extended
def test_extending_keeps_every_text_tokenization_and_adds_the_audio_tokens():
    text = text_tokenizer()
    before = [text(sentence).input_ids for sentence in SENTENCES[:4]] + [text("<|s_3|> looks like audio").input_ids]
    size = len(text)
    joint = extend_text_tokenizer(text, LAYOUT)
    assert len(text) == size + LAYOUT.special_offset + 2 and len(joint) == LAYOUT.special_offset + 2
    assert [text(sentence).input_ids for sentence in SENTENCES[:4]] == before[:4]  # text survives unchanged
    assert text("<|s_3|> looks like audio").input_ids[0] == joint.audio_to_joint[3]  # now one audio token
    for sentence in SENTENCES[:4]:
        assert text.decode(text(sentence).input_ids) == sentence
    assert sorted(joint.audio_to_joint.tolist()) == list(range(size, size + LAYOUT.special_offset))
    # extending twice adds nothing and gives the same mapping
    again = extend_text_tokenizer(text, LAYOUT)
    assert len(text) == size + LAYOUT.special_offset + 2
    assert np.array_equal(again.audio_to_joint, joint.audio_to_joint)


@pytest.mark.parametrize("pattern", ["interleaved", "semantic_only"])
def test_codes_to_joint_ids_and_back_is_exact(pattern):
    text = text_tokenizer()
    joint = extend_text_tokenizer(text, LAYOUT, pattern=pattern)
    codes = random_codes(23, seed=1)
    ids = joint.codes_to_ids(codes)
    assert ids[0] == joint.audio_start_id and ids[-1] == joint.audio_end_id
    assert len(ids) == 2 + (2 if pattern == "interleaved" else 1) * 23
    expected = codes if pattern == "interleaved" else codes[:1]
    assert torch.equal(joint.ids_to_codes(ids), expected)
    assert torch.equal(joint.ids_to_codes(ids[1:-1]), expected)  # markers optional
    # as text: the tokenizer turns the string form into exactly these ids
    assert text(joint.codes_to_text(codes), add_special_tokens=False).input_ids == ids


def test_a_mixed_sequence_splits_into_text_and_decodable_audio():
    text = text_tokenizer()
    joint = extend_text_tokenizer(text, LAYOUT)
    first, second = random_codes(5, seed=2), random_codes(3, seed=4)
    sentence = f"listen {joint.codes_to_text(first)} and then {joint.codes_to_text(second)} done"
    spans = joint.split(text(sentence, add_special_tokens=False).input_ids)
    assert [type(span) for span in spans] == [TextSpan, AudioSpan, TextSpan, AudioSpan, TextSpan]
    assert text.decode(spans[0].ids) == "listen " and text.decode(spans[2].ids) == " and then "
    assert text.decode(spans[4].ids) == " done"
    assert torch.equal(spans[1].codes, first) and torch.equal(spans[3].codes, second)
    assert spans[1].complete and spans[3].complete
    # generation stopped inside a span, after half a frame: the whole frames are kept, marked incomplete
    ids = text("hi", add_special_tokens=False).input_ids + joint.codes_to_ids(first)[:-2]
    *head, tail = joint.split(ids)
    assert not tail.complete and torch.equal(tail.codes, first[:, :4])


def test_misplaced_markers_and_text_inside_audio_are_named():
    text = text_tokenizer()
    joint = extend_text_tokenizer(text, LAYOUT)
    word = text("hello", add_special_tokens=False).input_ids[0]
    audio = joint.codes_to_ids(random_codes(2))
    with pytest.raises(ValueError, match="<\\|audio_end\\|> at position 1 closes no audio span"):
        joint.split([word, joint.audio_end_id])
    with pytest.raises(ValueError, match=f"id {word} at position 2 is inside an audio span"):
        joint.split(audio[:2] + [word] + audio[2:])
    with pytest.raises(ValueError, match="opens a span inside another one"):
        joint.split(audio[:3] + audio)
    with pytest.raises(ValueError, match="semantic at position|acoustic"):
        joint.ids_to_codes([audio[0], audio[2], audio[1], audio[-1]])  # acoustic where a semantic id belongs
    with pytest.raises(ValueError, match="semantic_then_acoustic has no frame boundary"):
        JointVocabulary(LAYOUT, joint.audio_to_joint, joint.audio_start_id, joint.audio_end_id,
                        "semantic_then_acoustic")


def test_a_saved_extended_tokenizer_gives_the_same_joint_vocabulary(tmp_path):
    text = text_tokenizer()
    joint = extend_text_tokenizer(text, LAYOUT)
    text.save_pretrained(tmp_path / "joint")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "joint")
    again = JointVocabulary.from_tokenizer(reloaded, LAYOUT)
    assert np.array_equal(again.audio_to_joint, joint.audio_to_joint)
    assert (again.audio_start_id, again.audio_end_id) == (joint.audio_start_id, joint.audio_end_id)
    with pytest.raises(ValueError, match="lacks 194 audio tokens .*extend_text_tokenizer"):
        JointVocabulary.from_tokenizer(text_tokenizer(), LAYOUT)
    assert AUDIO_START in reloaded.get_vocab() and AUDIO_END in reloaded.get_vocab()
