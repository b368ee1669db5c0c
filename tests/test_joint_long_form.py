"""Long-form continuation of a text+audio LM (`model.keep_text_vocab: true`): past the LM's context the window
slides as for an audio LM, the windows after the first hold the last audio frames only (no bos, text or
`<|audio_start|>`, as the training blocks after a clip's first), the ids once written never change, every
stream and length rule holds over the whole clip, and the command line takes `--extend-stride` for it.

One tiny joint LM of 64 positions (32 frames, 0.64 s of the tiny codec's audio) per module, from
`recipe_modules.train_tiny_joint_lm`: 2 training steps, no network, seconds."""

import numpy as np
import pytest
import soundfile as sf
import torch

from codec_recording import record_decodes
from fixed_score_lms import fixed_score_lm
from recipe_modules import train_tiny_joint_lm
from semanticodec_hf.lm.codec_access import tiny_codec_tokenizer
from semanticodec_hf.lm.generate import main as continue_main, stride_frames_for
from semanticodec_hf.lm.joint_generation import ContextOverflow, JointAudioContinuation
from semanticodec_hf.processing_semanticodec import read_audio
from test_lm_generate import _prompt_file
from test_lm_long_form import _prompt, _record_generate

pytestmark = pytest.mark.usefixtures("one_thread")
RATE = 16000
LIMIT = 64  # positions of the module's LM
DECODE = ["--tiny", "--steps", "2", "--seed", "3", "--quiet"]


@pytest.fixture(scope="module")
def short_joint_lm(tmp_path_factory):
    return train_tiny_joint_lm(tmp_path_factory.mktemp("joint-short"), positions=LIMIT)


@pytest.fixture(scope="module")
def engine(short_joint_lm):
    engine = JointAudioContinuation.from_pretrained(short_joint_lm, codec_tokenizer=tiny_codec_tokenizer())
    assert engine.context == LIMIT
    return engine


def _encode(engine, *prompts):
    return list(engine.tokenizer.audio_tokenizer.encode_audio(list(prompts), RATE))


def _real(ids, pad):
    return [int(i) for i in ids if int(i) != pad]


# ---------------------------------------------------------------------------------------------- the ids
def test_slid_windows_hold_the_last_audio_frames_only_and_nothing_is_rewritten(engine, monkeypatch):
    layout = engine.tokenizer.layout
    calls = _record_generate(monkeypatch, engine.lm)
    prompts = _encode(engine, _prompt(0.3, 1), _prompt(0.2, 2))  # two lengths: left padding in the first window
    texts = ["a dog barks", None]
    target = 100  # 2 s: three contexts' worth
    out = engine.generate_codes(prompts, target, texts=texts, seed=5, extend_stride=0.2)  # 10 frames a slide
    assert out["slides"] >= 3 and len(calls) == out["slides"] + 1
    keep = LIMIT // 2 - stride_frames_for(0.2, LIMIT, engine.tokenizer.audio_tokenizer.model.config)
    heads = [engine.prompt_ids(None, t) for t in texts]  # [bos] [text] <|audio_start|>
    written = [engine.prompt_ids(c, t)[len(h):] for c, t, h in zip(prompts, texts, heads)]  # prompt audio ids
    active = [0, 1]
    for number, (window, result) in enumerate(calls):
        assert result.shape[1] <= LIMIT  # every generate call's input and output fit in the positions
        for call_row, row in enumerate(list(active)):
            ids = _real(window[call_row], layout.pad_token_id)
            if number == 0:  # the prompt as the corpus wrote it: text before the audio span
                assert ids == heads[row] + written[row]
            else:  # the last frames written, unchanged: audio ids only, from a semantic id, whole frames
                assert layout.audio_start_id not in ids and layout.bos_token_id not in ids
                assert all(layout.semantic_offset <= i < layout.special_offset for i in ids)
                assert ids[0] < layout.acoustic_offset and len(ids) % 2 == 0
                assert ids == written[row][-2 * keep:]
            new = [int(i) for i in result[call_row, window.shape[1]:]]
            if layout.audio_end_id in new:
                new = new[: new.index(layout.audio_end_id)]
                active.remove(row)
            written[row] += new
    assert active == []
    for row, codes in enumerate(out["codes"]):  # the returned ids are every call's ids, none rewritten
        assert _real(out["ids"][row], layout.pad_token_id) == heads[row] + written[row] + [layout.audio_end_id]
        semantic, acoustic = written[row][0::2], written[row][1::2]  # the right stream at every position
        assert all(layout.semantic_offset <= i < layout.acoustic_offset for i in semantic)
        assert all(layout.acoustic_offset <= i < layout.special_offset for i in acoustic)
        assert codes.shape == (2, target)
        assert torch.equal(codes[:, : prompts[row].shape[1]], prompts[row])
        assert 0 <= int(codes[0].min()) and int(codes[0].max()) < layout.semantic_vocab_size
        assert 0 <= int(codes[1].min()) and int(codes[1].max()) < layout.acoustic_vocab_size

    again = engine.generate_codes(prompts, target, texts=texts, seed=5, extend_stride=0.2)
    assert torch.equal(again["ids"], out["ids"]) and again["slides"] == out["slides"]  # same seed, same output
    # a run that fits in one call writes, with the same seed, the long run's first ids: a slide rewrites nothing
    short = engine.generate_codes(prompts, 24, texts=texts, seed=5)
    assert short["slides"] == 0
    for row in range(2):
        assert torch.equal(short["codes"][row], out["codes"][row][:, :24])


def test_an_audio_prompt_longer_than_the_context_is_seen_through_its_last_frames(engine, monkeypatch):
    """With no text nothing is lost by sliding at once: the first window is the prompt's last frames."""
    layout = engine.tokenizer.layout
    calls = _record_generate(monkeypatch, engine.lm)
    prompt = _encode(engine, _prompt(1.0))[0]  # 57 frames: more than the 32 of the context
    frames = prompt.shape[1]
    out = engine.generate_codes([prompt], frames + 10, seed=1)
    keep = LIMIT // 2 - stride_frames_for(None, LIMIT, None)
    audio = engine.prompt_ids(prompt)[2:]  # after [bos] <|audio_start|>
    assert _real(calls[0][0][0], layout.pad_token_id) == audio[-2 * keep:]
    assert out["slides"] == len(calls) and out["codes"][0].shape == (2, frames + 10)
    assert torch.equal(out["codes"][0][:, :frames], prompt)


def test_min_frames_and_early_ends_count_over_the_whole_clip(engine):
    """An LM that wants `<|audio_end|>` at once: with a minimum past the context, rows of different prompt lengths
    (so different frames slid out) stop exactly at the minimum, counted over the whole clip."""
    layout = engine.tokenizer.layout
    eager = fixed_score_lm(layout, {layout.audio_end_id: 5.0, layout.semantic_offset + 3: 1.0,
                                    layout.acoustic_offset + 6: 1.0}, positions=LIMIT)
    joint = JointAudioContinuation(eager, engine.tokenizer)
    prompts = _encode(engine, _prompt(0.3, 1), _prompt(0.2, 2))
    out = joint.generate_codes(prompts, 150, texts=[None, "hello world"], min_frames=75, greedy=True)
    assert out["slides"] >= 2 and [c.shape[1] for c in out["codes"]] == [75, 75]
    early = joint.generate_codes(prompts, 150, allow_early_eos=True, greedy=True)
    assert early["slides"] == 0 and [c.shape[1] for c in early["codes"]] == [p.shape[1] for p in prompts]


# ---------------------------------------------------------------------------------------------- refusals
def test_what_cannot_slide_is_refused_with_what_to_do(engine, monkeypatch):
    prompts = _encode(engine, _prompt(0.3))
    with pytest.raises(ContextOverflow, match="beam search cannot carry its beams across a slide"):
        engine.generate_codes(prompts, 80, num_beams=2)
    with pytest.raises(ValueError, match=r"--seconds 2\.0 needs \d+ positions but the LM has 64 and this continuation "
                                         r"cannot slide past them: beam search .* \(--seconds 0\.\d\d is the longest "
                                         r"that fits in one generate call with these prompts\)\."):
        engine.continue_audio([_prompt(0.3)], RATE, 2.0, num_beams=2, num_inference_steps=2)
    long_text = "qzx " * 40  # bytes the tiny tokenizer never merged: one id each
    assert len(engine.tokenizer.text_ids(long_text)) > LIMIT - 2 * prompts[0].shape[1]
    with pytest.raises(ContextOverflow, match=r"the text is read by the first window only .* needs \d+ positions; "
                                              r"use a shorter text or prompt"):
        engine.generate_codes(prompts, 80, texts=[long_text])
    monkeypatch.setattr(engine.lm, "generate", lambda **kwargs: pytest.fail("generation ran before the check"))
    monkeypatch.setattr(engine.tokenizer.audio_tokenizer, "encode_audio",
                        lambda *a, **k: pytest.fail("encoded before the check"))
    for value, message in [(0.64, r"--extend-stride 0.64 must be smaller than the LM's context \(0.64 s, 64 "
                                   r"positions\)"), (-1, "--extend-stride must be a positive number")]:
        with pytest.raises(ValueError, match=message):
            engine.continue_audio([_prompt(0.3)], RATE, 2.0, extend_stride=value, num_inference_steps=2)


# ---------------------------------------------------------------------------------------------- audio
def test_long_output_is_the_exact_length_and_decoded_as_a_stream(engine, monkeypatch):
    model = engine.tokenizer.audio_tokenizer.model
    batch_frames, pieces = record_decodes(monkeypatch, model)
    monkeypatch.setattr(engine, "windows_per_chunk", 1)
    out = engine.continue_audio([_prompt(0.3, 1), _prompt(0.2, 2)], RATE, 1.5, texts=["a dog barks"] * 2, seed=4,
                                num_inference_steps=2)
    assert out["slides"] > 0 and out["streamed"]
    assert [a.shape for a in out["audio"]] == [(24000,), (24000,)] and sum(pieces) == 48000
    assert batch_frames == [] and len(pieces) >= 2  # each row streamed, never in one batched decode call
    processor = engine.tokenizer.audio_tokenizer.processor
    batched = processor.decode_codes(model, out["codes"], seed=4, num_inference_steps=2)
    for row in range(2):  # the streamed decode is the batch decode (its seed per row) up to float32 rounding
        torch.testing.assert_close(out["audio"][row], batched[row][:24000], rtol=1e-4, atol=1e-5)


def test_the_command_slides_a_joint_lm_with_extend_stride(short_joint_lm, tmp_path, capsys):
    prompt = _prompt_file(tmp_path / "p.wav", 0.3)
    out = tmp_path / "out.wav"
    assert continue_main([str(prompt), str(out), "--lm", str(short_joint_lm), "--seconds", "1.5", "--text",
                          "a dog barks", "--extend-stride", "0.2", *DECODE]) == 0
    assert "slides, streamed" in capsys.readouterr().out  # written piece by piece, as for audio-only LMs
    written, rate = sf.read(str(out))
    assert rate == RATE and written.shape == (24000,) and np.abs(written).max() > 0
    engine = JointAudioContinuation.from_pretrained(short_joint_lm, codec_tokenizer=tiny_codec_tokenizer())
    expected = engine.continue_audio([read_audio(str(prompt))[0]], RATE, 1.5, texts=["a dog barks"], seed=3,
                                     num_inference_steps=2, extend_stride=0.2)
    assert expected["slides"] > 0
    sf.write(str(tmp_path / "engine.wav"), expected["audio"][0].numpy(), RATE, subtype="PCM_16")
    assert np.array_equal(written, sf.read(str(tmp_path / "engine.wav"))[0])  # the command adds nothing
    capsys.readouterr()
    assert continue_main([str(prompt), str(tmp_path / "bad.wav"), "--lm", str(short_joint_lm), "--seconds", "1.5",
                          "--extend-stride", "0.7", *DECODE]) == 2
    assert "--extend-stride 0.7 must be smaller than the LM's context (0.64 s, 64 positions)" in \
        capsys.readouterr().err
    assert not (tmp_path / "bad.wav").exists()
