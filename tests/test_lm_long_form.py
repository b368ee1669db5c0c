"""Long-form continuation: past the LM's context the window slides (at frame boundaries, no `<bos>`), the ids
stay decodable and are never rewritten, the decoding controls hold across slides, and the result is decoded and
written as a stream of bounded pieces."""

import numpy as np
import pytest
import soundfile as sf
import torch

from semanticodec_hf.lm.generate import (
    AudioContinuation,
    generate_sliding,
    splice,
    splice_pieces,
    stride_frames_for,
)
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer
from codec_recording import record_decodes
from fixed_score_lms import fixed_score_lm
from test_lm_generate import _random_lm

pytestmark = pytest.mark.usefixtures("one_thread")


def _prompt(seconds, seed=0):
    return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000)).astype(np.float32)


def _record_generate(monkeypatch, lm):
    """Wrap `lm.generate`: every call's input ids and output ids, in order."""
    calls = []
    generate = lm.generate

    def recording(**kwargs):
        out = generate(**kwargs)
        calls.append((kwargs["input_ids"].cpu().clone(), out.cpu().clone()))
        return out

    monkeypatch.setattr(lm, "generate", recording)
    return calls


def _body(ids, layout):
    """Audio ids of one row: after `<bos>`, before `<eos>`, no `<pad>`."""
    ids = [int(i) for i in ids if int(i) != layout.pad_token_id]
    ids = ids[ids.index(layout.bos_token_id) + 1:] if layout.bos_token_id in ids else ids
    return ids[: ids.index(layout.eos_token_id)] if layout.eos_token_id in ids else ids


# ---------------------------------------------------------------------------------------------- the ids
def test_three_contexts_of_ids_obey_the_pattern_and_a_slide_rewrites_nothing(tiny_tokenizer, monkeypatch):
    layout = tiny_tokenizer.layout
    limit = 96  # 48 frames: 0.96 s of context
    engine = AudioContinuation(_random_lm(layout, seed=3, positions=limit), tiny_tokenizer)
    calls = _record_generate(monkeypatch, engine.lm)
    prompts = [_prompt(0.32, 1), _prompt(0.2, 2)]  # two lengths: left padding in the first window
    seconds = 2.9  # ~145 frames: three contexts' worth
    out = engine.generate_continuation(prompts, 16000, seconds, seed=5, extend_stride=0.2)  # 10 frames a slide
    assert out["target_frames"] * 2 >= 3 * limit and out["slides"] >= 3 and out["streamed"]
    codes = tiny_tokenizer.decode_ids(out["ids"])  # every position of the whole sequence obeys the pattern
    for row, prompt in enumerate(prompts):
        assert codes[row].shape[-1] == out["target_frames"]
        assert torch.equal(codes[row][:, : out["prompt_codes"][row].shape[-1]], out["prompt_codes"][row])
    assert len(calls) == out["slides"] + 1
    finals = [_body(row, layout) for row in out["ids"]]
    written = [_body(out["ids"][row][: 1 + out["prompt_codes"][row].shape[-1] * 2], layout) for row in range(2)]
    active = [0, 1]  # the rows of each call: those not finished yet
    for number, (window, result) in enumerate(calls):
        assert result.shape[1] <= limit  # the KV cache never holds more than the LM's positions
        for call_row, row in enumerate(list(active)):
            ids = [int(i) for i in window[call_row] if int(i) != layout.pad_token_id]
            if number:  # after a slide: the last frames written, unchanged, starting on a semantic id
                assert layout.bos_token_id not in ids and ids[0] < layout.acoustic_offset
                assert ids == written[row][-2 * (limit // 2 - 10):]  # the context less one stride (10 frames)
            new = [int(i) for i in result[call_row, window.shape[1]:]]
            if layout.eos_token_id in new:
                new = new[: new.index(layout.eos_token_id)]
                active.remove(row)
            written[row] += new
    assert active == [] and written == finals  # the final ids are every call's ids, none rewritten

    # A run that stops before the first slide writes, with the same seed, exactly the long run's first ids:
    # a slide (and the longer target) changes nothing that was written before it.
    short_seconds = 0.5  # 32 frames: fits
    short = engine.generate_continuation(prompts, 16000, short_seconds, seed=5)
    assert short["slides"] == 0
    for row in range(len(prompts)):
        head = _body(short["ids"][row], layout)
        assert finals[row][: len(head)] == head


def test_default_stride_is_a_quarter_of_the_context_and_bad_strides_are_refused(tiny_tokenizer, monkeypatch):
    config = tiny_tokenizer.model.config  # 100 tokens/s: 50 frames/s
    assert stride_frames_for(None, 256, config) == 32  # 128 frames of context
    assert stride_frames_for(0.2, 256, config) == 10
    for value, message in [(0, "--extend-stride must be a positive number"),
                           (-1.0, "--extend-stride must be a positive number"),
                           (float("nan"), "--extend-stride must be a positive number"),
                           (0.005, "less than one frame"),
                           (2.56, r"must be smaller than the LM's context \(2.56 s, 256 positions\)"),
                           (9.0, "must be smaller than the LM's context")]:
        with pytest.raises(ValueError, match=message):
            stride_frames_for(value, 256, config)
    engine = AudioContinuation(_random_lm(tiny_tokenizer.layout, positions=256), tiny_tokenizer)
    monkeypatch.setattr(engine.lm, "generate", lambda **kwargs: pytest.fail("generation ran before the check"))
    monkeypatch.setattr(tiny_tokenizer, "encode_audio", lambda *a, **k: pytest.fail("encoded before the check"))
    with pytest.raises(ValueError, match="--extend-stride 3.0 must be smaller"):
        engine.continue_audio([_prompt(0.5)], 16000, seconds=10.0, extend_stride=3.0)


def test_bad_extend_stride_on_the_command_line(tmp_path, tiny_tokenizer, capsys):
    from semanticodec_hf.cli import main as cli_main

    lm_dir = tmp_path / "lm"
    _random_lm(tiny_tokenizer.layout, positions=64).save_pretrained(lm_dir)
    SemantiCodecAudioTokenizer(layout=tiny_tokenizer.layout).save_pretrained(lm_dir, save_codec=False)
    prompt = tmp_path / "p.wav"
    sf.write(str(prompt), _prompt(0.3), 16000)
    for value, message in [("0", "--extend-stride must be a positive number of seconds, got 0.0"),
                           ("0.64", "--extend-stride 0.64 must be smaller than the LM's context (0.64 s, 64 "
                                    "positions)")]:
        capsys.readouterr()
        assert cli_main(["continue", str(prompt), str(tmp_path / "o.wav"), "--lm", str(lm_dir), "--tiny",
                         "--seconds", "3", "--extend-stride", value]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o.wav").exists()


def test_beams_and_semantic_then_acoustic_are_refused_past_the_context(tiny_tokenizer):
    engine = AudioContinuation(_random_lm(tiny_tokenizer.layout, positions=64), tiny_tokenizer)
    with pytest.raises(ValueError, match="beam search cannot carry its beams across a slide"):
        engine.continue_audio([_prompt(0.3)], 16000, seconds=2.0, num_beams=2)
    pattern = tiny_tokenizer.pattern
    tiny_tokenizer.pattern = "semantic_then_acoustic"
    try:
        with pytest.raises(ValueError, match="needs the interleaved pattern; semantic_then_acoustic writes every "
                                             "acoustic id after all semantic ids"):
            engine.continue_audio([_prompt(0.3)], 16000, seconds=2.0)
    finally:
        tiny_tokenizer.pattern = pattern
    with pytest.raises(ValueError, match="beam search cannot be carried across a slide"):
        generate_sliding(engine.lm, tiny_tokenizer.layout, [[tiny_tokenizer.layout.bos_token_id, 1, 70]], 90, 64, 8,
                         {"num_beams": 2, "do_sample": False})


def test_a_prompt_longer_than_the_context_is_seen_through_its_last_frames(tiny_tokenizer, monkeypatch):
    layout = tiny_tokenizer.layout
    engine = AudioContinuation(_random_lm(layout, positions=64), tiny_tokenizer)
    calls = _record_generate(monkeypatch, engine.lm)
    out = engine.generate_continuation([_prompt(1.0)], 16000, seconds=1.5, seed=1)  # 57 frames: 115 positions
    keep = 32 - stride_frames_for(None, 64, tiny_tokenizer.model.config)
    prompt_ids = out["ids"][0, 1: 1 + 2 * out["prompt_codes"][0].shape[-1]].tolist()
    assert calls[0][0][0].tolist() == prompt_ids[-2 * keep:]  # its last frames, no <bos>, no padding
    codes = tiny_tokenizer.decode_ids(out["ids"])[0]
    assert codes.shape[-1] == out["target_frames"] and out["slides"] == len(calls)
    assert torch.equal(codes[:, : out["prompt_codes"][0].shape[-1]], out["prompt_codes"][0])


# ---------------------------------------------------------------------------------------------- controls
def test_rows_stop_at_their_min_seconds_across_slides(tiny_tokenizer):
    """An LM that wants `<eos>` at once: with --min-seconds past the context, each row (prompts of different
    lengths, so they slide with different frame counts) stops exactly at the minimum, counted over the whole
    clip, not over its window."""
    layout, config = tiny_tokenizer.layout, tiny_tokenizer.model.config
    eager = fixed_score_lm(layout, {layout.eos_token_id: 5.0, 3: 1.0, 70: 1.0}, positions=64)
    engine = AudioContinuation(eager, tiny_tokenizer)
    out = engine.generate_continuation([_prompt(0.3, 1), _prompt(0.5, 2)], 16000, seconds=3.0, min_seconds=1.5,
                                       greedy=True)
    minimum = config.frame_budget(24000)
    assert out["slides"] >= 2
    assert [c.shape[-1] for c in out["codes"]] == [minimum, minimum] and minimum < out["target_frames"]
    early = engine.generate_continuation([_prompt(0.3, 1)], 16000, seconds=3.0, allow_early_eos=True, greedy=True)
    assert early["slides"] == 0 and early["codes"][0].shape[-1] == early["prompt_codes"][0].shape[-1]


def test_greedy_and_no_repeat_ngram_hold_over_the_whole_clip(tiny_tokenizer):
    """A repeater LM (semantic 3 / acoustic 70 forever), greedy, three contexts long: greedy gives the same ids
    for every seed, and the semantic no-repeat rule sees the ids that slid out of the window too."""
    layout = tiny_tokenizer.layout
    repeater = fixed_score_lm(layout, {3: 5.0, 7: 4.0, 70: 5.0, 71: 4.0, layout.eos_token_id: -10.0}, positions=64)
    engine = AudioContinuation(repeater, tiny_tokenizer)
    common = dict(seconds=2.0, greedy=True, no_repeat_ngram_size=2)
    out = engine.generate_continuation([_prompt(0.3)], 16000, seed=0, **common)
    assert out["slides"] >= 3
    assert torch.equal(engine.generate_continuation([_prompt(0.3)], 16000, seed=9, **common)["ids"], out["ids"])
    generated = out["codes"][0][0, out["prompt_codes"][0].shape[-1]:].tolist()
    bigrams = list(zip(generated, generated[1:]))
    assert len(bigrams) > 64 and len(set(bigrams)) == len(bigrams), generated


# ---------------------------------------------------------------------------------------------- audio
def test_splice_of_pieces_equals_the_splice_of_the_whole():
    rng = np.random.default_rng(0)
    for trial in range(20):
        total = int(rng.integers(300, 900))
        cut = int(rng.integers(1, total))
        full, prompt = torch.from_numpy(rng.standard_normal(total)), torch.from_numpy(rng.standard_normal(cut))
        bounds = np.sort(rng.choice(np.arange(1, total), size=int(rng.integers(0, 8)), replace=False))
        pieces = [full[a:b] for a, b in zip([0, *bounds], [*bounds, total])]
        joined = torch.cat(list(splice_pieces(prompt, pieces, 16000, total)))
        assert torch.equal(joined, splice(prompt, full, 16000)), (total, cut, bounds)


def test_a_streamed_result_is_the_batch_decode_up_to_rounding(tiny_tokenizer):
    """The streamed path (each row alone, in pieces) gives what one batched decode gives: the same per-row seed
    (`seed + row`, as a batch decode uses), the same spliced prompt reconstruction."""
    engine = AudioContinuation(_random_lm(tiny_tokenizer.layout, positions=64), tiny_tokenizer)
    engine.windows_per_chunk = 1
    result = engine.generate_continuation([_prompt(0.3, 1), _prompt(0.5, 2)], 16000, seconds=1.5, seed=4,
                                          num_inference_steps=5)
    assert result["streamed"] and result["slides"] > 0
    streamed = engine.decode_result(dict(result))
    batched = engine.decode_result(dict(result, streamed=False))
    for row in range(2):
        assert streamed["audio"][row].shape == batched["audio"][row].shape == (24000,)
        torch.testing.assert_close(streamed["audio"][row], batched["audio"][row], rtol=1e-4, atol=1e-5)
        cut = result["prompt_samples"][row]
        assert torch.equal(streamed["audio"][row][:cut], streamed["prompt_reconstruction"][row])
    assert (streamed["audio"][1] - streamed["audio"][0][:24000]).abs().max() > 1e-3  # rows differ: a real check


def test_long_output_is_decoded_and_written_in_pieces_of_bounded_size(tmp_path, tiny_tokenizer, monkeypatch):
    """11 s from an LM of 2.56 s: the codec decodes one window at a time (no piece longer than a decode window,
    however long the clip), never the whole codes in one call, and the wav is written piece by piece."""
    from semanticodec_hf.cli import main as cli_main

    layout, model = tiny_tokenizer.layout, tiny_tokenizer.model
    config = model.config
    lm_dir = tmp_path / "lm"
    _random_lm(layout, positions=256).save_pretrained(lm_dir)
    SemantiCodecAudioTokenizer(layout=layout).save_pretrained(lm_dir, save_codec=False)
    prompt = tmp_path / "p.wav"
    sf.write(str(prompt), _prompt(0.5), 16000)
    monkeypatch.setattr(AudioContinuation, "windows_per_chunk", 1)
    monkeypatch.setattr("semanticodec_hf.lm.generate.tiny_codec_tokenizer", lambda: tiny_tokenizer)
    batch_frames, pieces = record_decodes(monkeypatch, model)
    writes, write = [], sf.SoundFile.write
    monkeypatch.setattr(sf.SoundFile, "write", lambda self, data: writes.append(len(data)) or write(self, data))
    out = tmp_path / "out.wav"
    assert cli_main(["continue", str(prompt), str(out), "--lm", str(lm_dir), "--tiny", "--seconds", "11",
                     "--steps", "5"]) == 0
    audio, rate = sf.read(str(out))
    assert rate == 16000 and audio.shape == (11 * 16000,)
    window = config.output_num_samples(config.frames_per_window)
    assert sum(pieces) == sum(writes) == audio.shape[0] and len(pieces) >= 2 and len(writes) == len(pieces)
    assert max(pieces) <= window < audio.shape[0]  # a piece is bounded by one window, not by the clip
    assert batch_frames and max(batch_frames) <= config.frame_budget(8000)  # only the prompt, alone
