"""Decoding controls of audio continuation: greedy, beam search, repetition penalty, the semantic no-repeat-n-gram
rule and a minimum length, each under the pattern constraint that keeps every sequence decodable."""

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor

from semanticodec_hf.lm.generate import (
    AudioContinuation,
    decoding_arguments,
    min_frames_for,
    new_tokens_needed,
    prompt_ids,
)
from semanticodec_hf.lm.pattern_logits import PatternLogitsProcessor, SemanticNoRepeatNGramLogitsProcessor
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer
from fixed_score_lms import fixed_score_lm
from test_lm_generate import LAYOUT, _random_lm

pytestmark = pytest.mark.usefixtures("one_thread")


def _generate(lm, rows, processors, max_new_tokens, **decoding):
    batch = SemantiCodecAudioTokenizer(layout=LAYOUT).pad(rows, padding_side="left")
    with torch.no_grad():
        return lm.generate(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=max_new_tokens,
            logits_processor=LogitsProcessorList(processors), bos_token_id=LAYOUT.bos_token_id,
            eos_token_id=LAYOUT.eos_token_id, pad_token_id=LAYOUT.pad_token_id, **decoding,
        )


def _streams_are_right(ids, layout, pattern):
    """Every id after `<bos>` is of the stream the pattern puts there, then one `<eos>`, then only `<pad>`."""
    ids = [int(i) for i in ids]
    body = ids[ids.index(layout.bos_token_id) + 1:]
    end = body.index(layout.eos_token_id)
    assert all(i == layout.pad_token_id for i in body[end + 1:])
    body = body[:end]
    semantic = [i < layout.acoustic_offset for i in body]
    if pattern == "interleaved":
        assert semantic == [k % 2 == 0 for k in range(len(body))], body
    else:  # semantic_then_acoustic: n semantic ids, then n acoustic ones
        half = len(body) // 2
        assert semantic == [True] * half + [False] * half, body
    assert all(i < layout.special_offset for i in body)


# ---------------------------------------------------------------------------------------------- argument checks
def test_decoding_arguments_map_onto_generate_and_refuse_bad_values():
    assert decoding_arguments() == {"num_beams": 1, "do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
    assert decoding_arguments(greedy=True) == {"num_beams": 1, "do_sample": False}
    assert decoding_arguments(num_beams=4, repetition_penalty=1.5) == {"num_beams": 4, "do_sample": False,
                                                                      "repetition_penalty": 1.5}
    for kwargs, message in [
        (dict(num_beams=0), "--num-beams must be a positive integer"),
        (dict(num_beams=2.5), "--num-beams must be a positive integer"),
        (dict(temperature=0.0), "--temperature must be > 0"),
        (dict(temperature=float("nan")), "--temperature must be > 0"),
        (dict(top_k=-1), "--top-k must be a non-negative integer"),
        (dict(top_p=0.0), r"--top-p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"--top-p must be in \(0, 1\]"),
        (dict(repetition_penalty=0.0), "--repetition-penalty must be > 0"),
        (dict(greedy=True, temperature=0.7), "--temperature applies only to sampling; drop it or drop --greedy"),
        (dict(num_beams=3, top_k=5, top_p=0.9),
         "--top-k, --top-p apply only to sampling; drop them or drop --num-beams"),
        (dict(greedy="yes"), "greedy must be True or False"),
    ]:
        with pytest.raises(ValueError, match=message):
            decoding_arguments(**kwargs)
    with pytest.raises(ValueError, match="no_repeat_ngram_size must be a positive integer"):
        SemanticNoRepeatNGramLogitsProcessor(LAYOUT, 0)
    with pytest.raises(ValueError, match="min_frames 5 exceeds target_frames 4"):
        PatternLogitsProcessor(LAYOUT, "interleaved", target_frames=[4], min_frames=[5])


def test_min_seconds_maps_to_frames_like_seconds(tiny_tokenizer):
    config = tiny_tokenizer.model.config
    assert min_frames_for(None, 2.0, config) is None
    assert min_frames_for(1.5, 2.0, config) == config.frame_budget(24000)
    assert min_frames_for(2.0, 2.0, config) == config.frame_budget(32000)  # as --seconds 2.0 maps
    with pytest.raises(ValueError, match="--min-seconds 2.5 exceeds --seconds 2.0"):
        min_frames_for(2.5, 2.0, config)
    with pytest.raises(ValueError, match="--min-seconds must be >= 0"):
        min_frames_for(-1.0, 2.0, config)


# ---------------------------------------------------------------------------------------------- greedy
def test_greedy_continuation_is_deterministic_and_is_the_argmax_under_the_pattern(tiny_tokenizer):
    engine = AudioContinuation(_random_lm(tiny_tokenizer.layout, seed=2), tiny_tokenizer)
    rng = np.random.default_rng(0)
    prompts = [0.1 * rng.standard_normal(8000).astype(np.float32) for _ in range(2)]  # same length: no padding
    out = engine.continue_audio(prompts, 16000, seconds=0.8, greedy=True, num_inference_steps=5, seed=0)
    again = engine.continue_audio(prompts, 16000, seconds=0.8, greedy=True, num_inference_steps=5, seed=7)
    assert torch.equal(out["ids"], again["ids"])  # the seed only reaches the codec's decoder (sampling would differ)

    layout, target = tiny_tokenizer.layout, out["target_frames"]
    prompt_length = 1 + 2 * tiny_tokenizer.encode_audio(prompts[0], 16000).shape[-1]
    ids = out["ids"][:, :prompt_length]
    processor = PatternLogitsProcessor(layout, "interleaved", target_frames=[target] * 2)
    with torch.no_grad():  # by hand: the whole sequence through the LM at every step, the argmax of what is allowed
        while ids.shape[1] < out["ids"].shape[1]:
            scores = processor(ids, engine.lm(input_ids=ids).logits[:, -1, :].float())
            ids = torch.cat([ids, scores.argmax(dim=-1, keepdim=True)], dim=1)
    assert torch.equal(ids, out["ids"])
    assert (ids[:, -1] == layout.eos_token_id).all()


# ---------------------------------------------------------------------------------------------- beams
@pytest.mark.parametrize("pattern", ["interleaved", "semantic_then_acoustic"])
def test_every_beam_search_result_is_decodable(pattern):
    lm = _random_lm(LAYOUT, seed=3)
    tokenizer = SemantiCodecAudioTokenizer(layout=LAYOUT, pattern=pattern)
    rng = np.random.default_rng(1)
    beams = 3
    for trial in range(3):
        prompt_codes = [torch.from_numpy(np.stack([rng.integers(0, 16, n), rng.integers(0, 16, n)]))
                        for n in (1, 3, 5)]  # different lengths: left padding, rows finishing at other steps
        target = int(rng.integers(6, 10))
        forced = ([c[1].tolist() for c in prompt_codes for _ in range(beams)]
                  if pattern == "semantic_then_acoustic" else None)
        processor = PatternLogitsProcessor(LAYOUT, pattern, target_frames=[target] * (3 * beams),
                                           forced_acoustic=forced)
        needed = max(new_tokens_needed(pattern, c.shape[1], target) for c in prompt_codes)
        sequences = _generate(lm, [prompt_ids(c, LAYOUT, pattern) for c in prompt_codes], [processor], needed,
                              **decoding_arguments(num_beams=beams))
        assert sequences.shape[0] == 3
        for row, codes in enumerate(tokenizer.decode_ids(sequences)):
            _streams_are_right(sequences[row], LAYOUT, pattern)
            assert codes.shape[-1] == target
            frames = prompt_codes[row].shape[1]
            assert torch.equal(codes[:, :frames], prompt_codes[row])  # each row kept its own prompt (beams too)


def test_beam_search_continuation_keeps_each_prompt(tiny_tokenizer):
    """Through `continue_audio`: per-row settings (the forced acoustic ids of semantic_then_acoustic) are
    repeated per beam in generate's order, so every row keeps its own prompt."""
    engine = AudioContinuation(_random_lm(tiny_tokenizer.layout, seed=4), tiny_tokenizer)
    rng = np.random.default_rng(3)
    prompts = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (8000, 4800)]
    pattern = tiny_tokenizer.pattern
    tiny_tokenizer.pattern = "semantic_then_acoustic"
    try:
        out = engine.continue_audio(prompts, 16000, seconds=0.8, num_beams=2, num_inference_steps=5)
        for row, prompt in enumerate(prompts):
            expected = tiny_tokenizer.encode_audio(prompt, 16000)
            assert torch.equal(out["codes"][row][:, : expected.shape[-1]], expected)
            assert out["codes"][row].shape[-1] == out["target_frames"]
            _streams_are_right(out["ids"][row], tiny_tokenizer.layout, "semantic_then_acoustic")
    finally:
        tiny_tokenizer.pattern = pattern


# ---------------------------------------------------------------------------------------------- anti-repeat
def _repeater():
    """Greedily writes semantic 3 / acoustic 20 forever; 7 / 21 are the runners-up."""
    return fixed_score_lm(LAYOUT, {3: 5.0, 7: 4.0, 20: 5.0, 21: 4.0, LAYOUT.eos_token_id: -10.0})


def _open_rows(rows=1):
    """`<bos>` and one frame (1, 17); no target: the LM writes until max_new_tokens."""
    return [[LAYOUT.bos_token_id, 1, 17]] * rows


def test_repetition_penalty_lowers_repeats():
    lm = _repeater()
    pattern = PatternLogitsProcessor(LAYOUT, "interleaved")
    plain = _generate(lm, _open_rows(), [pattern], 20, **decoding_arguments(greedy=True))[0, 3:]
    assert set(plain[0::2].tolist()) == {3} and set(plain[1::2].tolist()) == {20}  # the repeater repeats
    penalised = _generate(lm, _open_rows(), [pattern], 20,
                          **decoding_arguments(greedy=True, repetition_penalty=2.0))[0, 3:]
    semantic = penalised[0::2].tolist()
    # 3 once (5), then 7 (4 > 5 / 2), then both are seen: 5 / 2 > 4 / 2 -> 3 again: no longer one id forever
    assert semantic[:3] == [3, 7, 3]
    assert sum(a == b for a, b in zip(semantic, semantic[1:])) < sum(
        a == b for a, b in zip(plain[0::2].tolist(), plain[0::2].tolist()[1:]))


def _ngrams(values, n):
    return [tuple(values[i:i + n]) for i in range(len(values) - n + 1)]


@pytest.mark.parametrize("n", [2, 3])
def test_no_repeat_ngram_rule_holds_on_the_semantic_stream_and_ignores_acoustic_ids(n):
    lm = _repeater()
    rule = SemanticNoRepeatNGramLogitsProcessor(LAYOUT, n)
    pattern = PatternLogitsProcessor(LAYOUT, "interleaved")
    for name, decoding in (("greedy", decoding_arguments(greedy=True)), ("beams", decoding_arguments(num_beams=2)),
                           ("sampling", decoding_arguments(temperature=0.3))):
        torch.manual_seed(0)
        out = _generate(lm, _open_rows(2), [pattern, rule], 40, **decoding)
        for row in out:
            body = row[1:].tolist()  # the prompt frame counts too
            if LAYOUT.eos_token_id in body:  # a beam may have ended (after a whole frame)
                body = body[: body.index(LAYOUT.eos_token_id)]
            assert len(body) >= 8
            semantic, acoustic = body[0::2], body[1::2]
            assert len(set(_ngrams(semantic, n))) == len(_ngrams(semantic, n)), semantic  # no n-gram twice
            if name == "greedy":  # the acoustic stream is left alone: the repeater's acoustic id every time
                assert acoustic[1:] == [20] * (len(acoustic) - 1)
    # transformers' rule over all ids would also have banned acoustic ids (20 after 3 ...): not what we want
    everything = _generate(lm, _open_rows(), [pattern, NoRepeatNGramLogitsProcessor(n)], 40,
                           **decoding_arguments(greedy=True))[0, 1:].tolist()
    assert set(everything[1::2][1:]) != {20}


def test_no_repeat_rule_reads_only_semantic_ids_and_gives_way_when_nothing_is_left():
    rule = SemanticNoRepeatNGramLogitsProcessor(LAYOUT, 2)
    bos = LAYOUT.bos_token_id
    # semantic stream 1 2 1 (acoustic ids between): the bigram (1, 2) exists, so 2 may not follow the last 1
    ids = torch.tensor([[bos, 1, 17, 2, 17, 1, 18]])
    assert rule.banned(ids[0]).tolist() == [2]
    out = rule(ids, torch.zeros(1, LAYOUT.vocab_size))
    assert torch.isinf(out[0, 2]) and torch.isfinite(out[0, torch.arange(LAYOUT.vocab_size) != 2]).all()
    # acoustic ids repeating (17, 17) ban nothing; n-grams across streams are not n-grams here
    assert rule.banned(torch.tensor([bos, 1, 17, 3, 17, 5, 17])).tolist() == []
    # only id 2 is still allowed by the scores and it is banned: the rule gives way instead of leaving -inf
    scores = torch.full((1, LAYOUT.vocab_size), float("-inf"))
    scores[0, 2] = 0.0
    assert torch.equal(rule(ids, scores), scores)


# ---------------------------------------------------------------------------------------------- minimum length
def test_min_frames_forbid_early_eos():
    eager = fixed_score_lm(LAYOUT, {LAYOUT.eos_token_id: 5.0, 3: 1.0, 20: 1.0})  # wants to stop at once
    target, minimum = 12, 7
    for allow in (True, False):  # min_frames forbids <eos> whether or not early <eos> is otherwise allowed
        processor = PatternLogitsProcessor(LAYOUT, "interleaved", target_frames=[target, target],
                                           allow_early_eos=allow, min_frames=[minimum, 2])
        out = _generate(eager, _open_rows(2), [processor], 2 * target, **decoding_arguments(greedy=True))
        tokenizer = SemantiCodecAudioTokenizer(layout=LAYOUT)
        frames = [codes.shape[-1] for codes in tokenizer.decode_ids(out)]
        assert frames == ([minimum, 2] if allow else [target, target])


def test_min_seconds_continuation_stops_no_earlier(tiny_tokenizer):
    layout = tiny_tokenizer.layout
    engine = AudioContinuation(fixed_score_lm(layout, {layout.eos_token_id: 5.0, 3: 1.0, 70: 1.0}), tiny_tokenizer)
    prompt = 0.1 * np.random.default_rng(5).standard_normal(4000).astype(np.float32)
    out = engine.continue_audio([prompt], 16000, seconds=1.0, min_seconds=0.6, num_inference_steps=5)
    config = tiny_tokenizer.model.config
    assert out["codes"][0].shape[-1] == config.frame_budget(int(0.6 * 16000)) < out["target_frames"]
    assert out["audio"][0].shape[-1] == min(16000, config.output_num_samples(out["codes"][0].shape[-1]))
    with pytest.raises(ValueError, match="--min-seconds 1.5 exceeds --seconds 1.0"):
        engine.continue_audio([prompt], 16000, seconds=1.0, min_seconds=1.5)


def test_continue_command_takes_the_decoding_options(tmp_path, tiny_tokenizer, capsys):
    import soundfile as sf

    from semanticodec_hf.cli import main as cli_main

    lm_dir = tmp_path / "lm"
    _random_lm(tiny_tokenizer.layout).save_pretrained(lm_dir)
    SemantiCodecAudioTokenizer(layout=tiny_tokenizer.layout).save_pretrained(lm_dir, save_codec=False)
    prompt = tmp_path / "prompt.wav"
    sf.write(str(prompt), 0.1 * np.random.default_rng(1).standard_normal(8000), 16000)
    common = ["continue", str(prompt), str(tmp_path / "out.wav"), "--lm", str(lm_dir), "--tiny", "--seconds", "0.8",
              "--steps", "5", "--threads", "1"]
    assert cli_main(common + ["--num-beams", "2", "--repetition-penalty", "1.2", "--no-repeat-ngram-size", "3",
                              "--min-seconds", "0.6"]) == 0
    assert (tmp_path / "out.wav").exists()
    for extra, message in [(["--greedy", "--temperature", "0.5"], "--temperature applies only to sampling"),
                           (["--num-beams", "0"], "--num-beams must be a positive integer"),
                           (["--min-seconds", "2"], "--min-seconds 2.0 exceeds --seconds 0.8"),
                           (["--no-repeat-ngram-size", "-1"], "--no-repeat-ngram-size must be a positive integer"),
                           (["--repetition-penalty", "-1"], "--repetition-penalty must be > 0")]:
        capsys.readouterr()
        assert cli_main(common + extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert message in err[-1] and err[-1].startswith("continue: error:"), err
