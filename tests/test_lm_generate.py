"""Generation: the pattern-forcing logits processor and prompt continuation to a waveform."""

import re

import numpy as np
import pytest
import soundfile as sf
import torch

from semanticodec_hf.lm.config import ModelRecipe
from semanticodec_hf.lm.generate import AudioContinuation, PatternLogitsProcessor, new_tokens_needed, prompt_ids
from semanticodec_hf.lm.modeling import build_model
from semanticodec_hf.audio_token_layout import PATTERNS, SemantiCodecVocabularyLayout
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
LAYOUT = SemantiCodecVocabularyLayout(16, 16)


def _random_lm(layout, seed=0, positions=512):
    torch.manual_seed(seed)
    return build_model(ModelRecipe(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=positions),
                       layout).eval()


def _generate(lm, prompts, processor, max_new_tokens, seed):
    tokenizer = SemantiCodecAudioTokenizer(layout=LAYOUT)
    batch = tokenizer.pad(prompts, padding_side="left")
    torch.manual_seed(seed)
    from transformers import LogitsProcessorList

    return lm.generate(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], do_sample=True, temperature=3.0,
        max_new_tokens=max_new_tokens, logits_processor=LogitsProcessorList([processor]),
        bos_token_id=LAYOUT.bos_token_id, eos_token_id=LAYOUT.eos_token_id, pad_token_id=LAYOUT.pad_token_id,
    )


@pytest.mark.parametrize("pattern", PATTERNS)
def test_every_generated_sequence_is_decodable(pattern):
    """A random LM sampled hot (temperature 3) writes ids of every kind; the processor keeps them decodable."""
    lm = _random_lm(LAYOUT)
    tokenizer = SemantiCodecAudioTokenizer(layout=LAYOUT, pattern=pattern)
    rng = np.random.default_rng(0)
    for trial in range(4):
        prompt_codes = [torch.from_numpy(np.stack([rng.integers(0, 16, n), rng.integers(0, 16, n)]))
                        for n in (int(rng.integers(1, 6)), int(rng.integers(1, 6)), 1)]
        target = int(rng.integers(7, 12))
        prompts = [prompt_ids(c, LAYOUT, pattern) for c in prompt_codes]
        processor = PatternLogitsProcessor(
            LAYOUT, pattern, target_frames=[target] * 3,
            forced_acoustic=[c[1].tolist() for c in prompt_codes] if pattern == "semantic_then_acoustic" else None,
        )
        needed = max(new_tokens_needed(pattern, c.shape[1], target) for c in prompt_codes)
        sequences = _generate(lm, prompts, processor, needed, seed=trial)
        for row, codes in enumerate(tokenizer.decode_ids(sequences)):
            assert codes.shape[-1] == target  # exactly the asked number of frames, then <eos>
            prompt_frames = prompt_codes[row].shape[1]
            rows = 1 if pattern == "semantic_only" else 2
            assert torch.equal(codes[:rows, :prompt_frames], prompt_codes[row][:rows])  # the prompt is kept
        assert (sequences == LAYOUT.eos_token_id).sum(dim=1).tolist() == [1, 1, 1]


@pytest.mark.parametrize("pattern", ["interleaved", "semantic_only"])
def test_without_a_target_eos_may_only_follow_a_whole_frame(pattern):
    lm = _random_lm(LAYOUT, seed=1)
    tokenizer = SemantiCodecAudioTokenizer(layout=LAYOUT, pattern=pattern)
    processor = PatternLogitsProcessor(LAYOUT, pattern)
    for seed in range(4):
        sequences = _generate(lm, [[LAYOUT.bos_token_id]] * 4, processor, 30, seed=seed)
        for row in sequences:
            ids = row.tolist()
            if LAYOUT.eos_token_id in ids:  # stopped by the model: everything before is whole frames
                tokenizer.decode_ids(ids)
            else:  # stopped by max_new_tokens: at most the last frame is cut
                tokenizer.decode_ids(ids[: len(ids) - (len(ids) - 1) % (2 if pattern == "interleaved" else 1)])


def test_processor_masks_exactly_what_the_pattern_allows():
    layout = LAYOUT
    interleaved = PatternLogitsProcessor(layout, "interleaved", target_frames=[2])
    bos = layout.bos_token_id
    allowed = lambda p, ids: set(torch.nonzero(p.allowed(0, np.array(ids))).flatten().tolist())  # noqa: E731
    semantic, acoustic = set(range(16)), set(range(16, 32))
    assert allowed(interleaved, [bos]) == semantic
    assert allowed(interleaved, [bos, 3]) == acoustic
    assert allowed(interleaved, [bos, 3, 19]) == semantic  # no early <eos> by default
    assert allowed(interleaved, [bos, 3, 19, 4, 20]) == {layout.eos_token_id}
    assert allowed(interleaved, [layout.pad_token_id, bos, 3, 19, 4, 20, layout.eos_token_id]) == {
        layout.eos_token_id, layout.pad_token_id}
    early = PatternLogitsProcessor(layout, "interleaved", target_frames=[2], allow_early_eos=True)
    assert allowed(early, [bos, 3, 19]) == semantic | {layout.eos_token_id}
    stacked = PatternLogitsProcessor(layout, "semantic_then_acoustic", target_frames=[2], forced_acoustic=[[5]])
    assert allowed(stacked, [bos, 3]) == semantic
    assert allowed(stacked, [bos, 3, 4]) == {16 + 5}  # the prompt's own acoustic id first
    assert allowed(stacked, [bos, 3, 4, 21]) == acoustic
    assert allowed(stacked, [bos, 3, 4, 21, 22]) == {layout.eos_token_id}
    scores = torch.zeros(1, layout.vocab_size)
    out = interleaved(torch.tensor([[bos, 3]]), scores)
    assert torch.isinf(out[0, :16]).all() and torch.isfinite(out[0, 16:32]).all()
    with pytest.raises(ValueError, match="needs target_frames"):
        PatternLogitsProcessor(layout, "semantic_then_acoustic")


@pytest.mark.parametrize("dtype", [torch.bfloat16, None])
def test_long_rows_are_counted_exactly_also_under_autocast(dtype):
    """Frame counts past bfloat16's exact integers (256): 399 of 400 frames written must still allow a semantic
    id, and the incremental path must agree with a fresh scan, under autocast as GPU generation often runs."""
    layout, bos = LAYOUT, LAYOUT.bos_token_id
    frames = [bos] + [3, 19] * 399
    processor = PatternLogitsProcessor(layout, "interleaved", target_frames=[400])
    scores = torch.zeros(1, layout.vocab_size)
    context = torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False)
    with context:
        first = processor(torch.tensor([frames]), scores)  # a fresh scan
        after = processor(torch.tensor([frames + [4]]), scores)  # the incremental step: one more semantic id
        last = processor(torch.tensor([frames + [4, 20]]), scores)
    assert torch.isfinite(first[0, :16]).all() and torch.isinf(first[0, 16:]).all()
    assert torch.isfinite(after[0, 16:32]).all() and torch.isinf(after[0, :16]).all()
    assert torch.isfinite(last[0]).sum() == 1 and torch.isfinite(last[0, layout.eos_token_id])


def test_continuation_has_the_requested_length_and_starts_with_the_prompt_reconstruction(tiny_tokenizer):
    engine = AudioContinuation(_random_lm(tiny_tokenizer.layout), tiny_tokenizer)
    rng = np.random.default_rng(0)
    prompts = [0.1 * rng.standard_normal(16000).astype(np.float32),
               0.1 * rng.standard_normal((2, 24000)).astype(np.float32)]  # stereo, 1.5 s
    out = engine.continue_audio([prompts[0], prompts[1]], 16000, seconds=2.0, num_inference_steps=5,
                                seed=3)
    for i, wave in enumerate(out["audio"]):
        assert wave.shape == (32000,)
        prompt = out["prompt_reconstruction"][i]
        assert prompt.shape == ((16000, 24000)[i],)
        assert torch.equal(wave[: prompt.shape[0]], prompt)
        assert out["codes"][i].shape[1] == out["target_frames"]
    # the same prompt alone, through the codec, reconstructs to the same audio (what `roundtrip` gives)
    alone = tiny_tokenizer.model.decode(tiny_tokenizer.encode_audio(prompts[0], 16000)[None], num_samples=[16000],
                                    num_inference_steps=5, seed=3).audio_values[0, 0]
    assert alone.pow(2).mean().sqrt() > 1e-2, "the tiny codec must be audible for this comparison to mean anything"
    torch.testing.assert_close(out["audio"][0][:16000], alone, rtol=1e-4, atol=1e-6)  # batch-size rounding only
    other_seed = tiny_tokenizer.model.decode(tiny_tokenizer.encode_audio(prompts[0], 16000)[None], num_samples=[16000],
                                         num_inference_steps=5, seed=4).audio_values[0, 0]
    assert (other_seed - alone).abs().max() > 0.1 * alone.abs().max()
    again = engine.continue_audio([prompts[0], prompts[1]], 16000, seconds=2.0, num_inference_steps=5,
                                  seed=3)
    assert torch.equal(again["ids"], out["ids"])  # seeded: the same batch gives the same continuation
    assert all(torch.equal(a, b) for a, b in zip(again["audio"], out["audio"]))
    with pytest.raises(ValueError, match="must exceed the prompt"):
        engine.continue_audio([prompts[0]], 16000, seconds=0.5)
    with pytest.raises(ValueError, match="longer context.*beam search cannot carry"):  # long-form needs no beams
        AudioContinuation(_random_lm(tiny_tokenizer.layout, positions=64), tiny_tokenizer).continue_audio(
            [prompts[0]], 16000, seconds=2.0, num_beams=2)


def test_continue_command_end_to_end(tmp_path, tiny_tokenizer):
    """Tokenizer layout saved with the LM, codec folder given on the command line, wav written."""
    from semanticodec_hf.cli import main as cli_main

    lm_dir, codec_dir = tmp_path / "lm", tmp_path / "codec"
    _random_lm(tiny_tokenizer.layout).save_pretrained(lm_dir)
    SemantiCodecAudioTokenizer(layout=tiny_tokenizer.layout).save_pretrained(lm_dir, save_codec=False)
    tiny_tokenizer.save_pretrained(codec_dir)
    prompt = tmp_path / "prompt.wav"
    sf.write(str(prompt), 0.1 * np.random.default_rng(1).standard_normal(8000), 8000)  # 1 s at 8 kHz
    out = tmp_path / "out.wav"
    code = cli_main(["continue", str(prompt), str(out), "--lm", str(lm_dir), "--codec", str(codec_dir),
                     "--seconds", "1.5", "--steps", "5"])
    assert code == 0
    audio, rate = sf.read(str(out))
    assert rate == 16000 and audio.shape == (24000,)
    # a codec of another variant is refused by layout, not silently decoded
    other = tmp_path / "other"
    SemantiCodecAudioTokenizer.tiny(seed=0, semantic_vocab_size=32).save_pretrained(other)
    assert cli_main(["continue", str(prompt), str(tmp_path / "x.wav"), "--lm", str(lm_dir), "--codec", str(other),
                     "--seconds", "1.5"]) == 2
    assert not (tmp_path / "x.wav").exists()
    assert cli_main(["continue", str(tmp_path / "missing.wav"), str(tmp_path / "y.wav"), "--lm", str(lm_dir),
                     "--codec", str(codec_dir), "--seconds", "1.5"]) == 2


def _reference_allowed(layout, pattern, ids, target, allow_early_eos, forced):
    """The rule of PatternLogitsProcessor for one row, written out plainly over Python lists."""
    ids = [int(i) for i in ids]
    starts = [i for i, token in enumerate(ids) if token in (layout.bos_token_id, layout.sep_token_id)]
    if starts:
        body = ids[starts[-1] + 1:]
    else:
        first = next((i for i, token in enumerate(ids) if token != layout.pad_token_id), 0)
        body = ids[first:]
    semantic_ids = set(range(layout.acoustic_offset))
    acoustic_ids = set(range(layout.acoustic_offset, layout.special_offset))
    if layout.eos_token_id in body:
        return {layout.pad_token_id, layout.eos_token_id}
    n_sem = sum(token < layout.acoustic_offset for token in body)
    n_ac = sum(layout.acoustic_offset <= token < layout.special_offset for token in body)
    if pattern == "semantic_then_acoustic":
        if n_ac == 0 and n_sem < target:
            return semantic_ids
        if n_ac < n_sem:
            if forced is not None and n_ac < len(forced):
                return {layout.acoustic_offset + forced[n_ac]}
            return acoustic_ids
        return {layout.eos_token_id} if n_sem >= 1 else set()
    if pattern == "interleaved" and n_sem > n_ac:
        return acoustic_ids
    more = target is None or n_sem < target
    allowed = set(semantic_ids) if more else set()
    if n_sem >= 1 and (not more or allow_early_eos or target is None):
        allowed.add(layout.eos_token_id)
    return allowed


def _random_rows(rng, layout, rows, length):
    """Left-padded rows of every kind of id, mostly well-formed (a <bos>, then pattern-like ids), some not."""
    batch = np.full((rows, length), layout.pad_token_id, dtype=np.int64)
    for row in range(rows):
        pad = int(rng.integers(0, length))
        body = []
        if rng.random() < 0.8:
            body.append(layout.bos_token_id)
        while len(body) < length - pad:
            kind = rng.random()
            if kind < 0.4:
                body.append(int(rng.integers(0, layout.acoustic_offset)))
            elif kind < 0.8:
                body.append(int(rng.integers(layout.acoustic_offset, layout.special_offset)))
            else:
                body.append(int(rng.choice([layout.bos_token_id, layout.eos_token_id, layout.sep_token_id,
                                            layout.pad_token_id])))
        batch[row, pad:] = body[: length - pad]
    return torch.from_numpy(batch)


@pytest.mark.parametrize("pattern,with_target,allow_early_eos", [
    (pattern, with_target, early) for pattern in PATTERNS for with_target in (True, False) for early in (False, True)
    if with_target or pattern != "semantic_then_acoustic"])  # semantic_then_acoustic needs target_frames
def test_processor_mask_equals_a_plain_per_row_reference(pattern, with_target, allow_early_eos):
    layout, rows, extra = LAYOUT, 6, 3  # the LM's vocabulary may be larger than the layout's: never allowed
    rng = np.random.default_rng([PATTERNS.index(pattern), with_target, allow_early_eos])
    targets = [int(t) for t in rng.integers(1, 6, rows)] if with_target else None
    forced = ([[int(c) for c in rng.integers(0, 16, int(rng.integers(0, 4)))] for _ in range(rows)]
              if pattern == "semantic_then_acoustic" else None)
    processor = PatternLogitsProcessor(layout, pattern, target_frames=targets, allow_early_eos=allow_early_eos,
                                       forced_acoustic=forced)

    def check(ids):
        out = processor(ids, torch.zeros(rows, layout.vocab_size + extra))
        for row in range(rows):
            expected = _reference_allowed(layout, pattern, ids[row].tolist(), targets and targets[row],
                                          allow_early_eos, forced and forced[row])
            assert set(torch.isfinite(out[row]).nonzero().flatten().tolist()) == expected, (row, ids[row].tolist())

    for trial in range(30):  # unrelated batches (some of consecutive lengths: the processor must not mix them up)
        check(_random_rows(rng, layout, rows, int(rng.integers(1, 14))))
    growing = _random_rows(rng, layout, rows, 4)
    check(growing)
    scans = []
    scan = processor._scan
    processor._scan = lambda ids: scans.append(ids.shape) or scan(ids)
    specials = [layout.bos_token_id, layout.eos_token_id, layout.sep_token_id, layout.pad_token_id]
    for step in range(40):  # one id per call, as in generate: each call only adds the new id to the row state
        kind = rng.random(rows)
        new = np.where(kind < 0.45, rng.integers(0, layout.acoustic_offset, rows),
                       np.where(kind < 0.9, rng.integers(layout.acoustic_offset, layout.special_offset, rows),
                                rng.choice(specials, rows)))
        growing = torch.cat([growing, torch.from_numpy(new)[:, None]], dim=1)
        check(growing)
    assert scans == []


def _save_lm(lm, layout, folder):
    lm.save_pretrained(folder)
    SemantiCodecAudioTokenizer(layout=layout).save_pretrained(folder, save_codec=False)  # records no codec
    return folder


def _prompt_file(path, seconds, rate=16000):
    sf.write(str(path), 0.1 * np.random.default_rng(2).standard_normal(int(seconds * rate)), rate)
    return path


def test_decode_settings_are_checked_before_any_generation(tiny_tokenizer, monkeypatch):
    engine = AudioContinuation(_random_lm(tiny_tokenizer.layout), tiny_tokenizer)
    monkeypatch.setattr(engine.lm, "generate", lambda **kwargs: pytest.fail("generation ran before the check"))
    prompt = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    with pytest.raises(ValueError, match=r"--steps 3 cannot be decoded with the ddim sampler.*Nearby valid"):
        engine.continue_audio([prompt], 16000, seconds=2.0, num_inference_steps=3)  # the original DDIM crashes on 3
    with pytest.raises(ValueError, match="Unknown sampler 'fast'"):
        engine.continue_audio([prompt], 16000, seconds=2.0, sampler="fast")
    with pytest.raises(ValueError, match="positive integer"):
        engine.continue_audio([prompt], 16000, seconds=2.0, num_inference_steps=0)
    default = tiny_tokenizer.model.config.num_inference_steps
    tiny_tokenizer.model.config.num_inference_steps = 37
    try:  # no --steps: the codec's default count is the one checked
        with pytest.raises(ValueError, match="--steps 37"):
            engine.continue_audio([prompt], 16000, seconds=2.0)
    finally:
        tiny_tokenizer.model.config.num_inference_steps = default


def test_too_long_a_request_names_the_seconds_that_fit(tiny_tokenizer):
    """Beam search cannot slide (long-form continuation), so past the LM's context it is refused with the
    longest `--seconds` that fits in one `generate` call (interleaved sampling would slide instead)."""
    import re

    engine = AudioContinuation(_random_lm(tiny_tokenizer.layout, positions=160), tiny_tokenizer)
    prompt = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)  # 1 s: 57 frames, 115 ids
    with pytest.raises(ValueError, match="longest that fits") as refused:
        engine.continue_audio([prompt], 16000, seconds=4.0, num_beams=2)
    fits = float(re.search(r"--seconds (\d+\.\d\d) is the longest", str(refused.value)).group(1))
    assert 1.0 < fits < 4.0
    with pytest.raises(ValueError, match="longest that fits"):
        engine.continue_audio([prompt], 16000, seconds=fits + 0.01, num_beams=2)
    out = engine.continue_audio([prompt], 16000, seconds=fits, num_inference_steps=5, num_beams=2)  # advice works
    assert out["audio"][0].shape == (int(round(fits * 16000)),) and out["slides"] == 0
    with pytest.raises(ValueError, match="prompts alone leave no room"):
        AudioContinuation(_random_lm(tiny_tokenizer.layout, positions=100), tiny_tokenizer).continue_audio(
            [prompt], 16000, seconds=2.0, num_beams=2)


def test_continue_cli_errors_name_the_prompt_once(tmp_path, tiny_tokenizer, capsys):
    from semanticodec_hf.cli import main as cli_main

    lm_dir = _save_lm(_random_lm(tiny_tokenizer.layout), tiny_tokenizer.layout, tmp_path / "lm")
    short = _prompt_file(tmp_path / "short.wav", 0.05)
    capsys.readouterr()
    assert cli_main(["continue", str(short), str(tmp_path / "out.wav"), "--lm", str(lm_dir), "--tiny",
                     "--seconds", "1.5"]) == 2
    err = capsys.readouterr().err
    assert f"continue: error: {short}: it lasts 0.050 s; the codec needs at least 0.16 s" in err
    assert "Audio item" not in err
    assert cli_main(["continue", str(_prompt_file(tmp_path / "p.wav", 1.0)), str(tmp_path / "out.wav"), "--lm",
                     str(lm_dir), "--tiny", "--steps", "3", "--seconds", "1.5"]) == 2
    assert "--steps 3 cannot be decoded" in capsys.readouterr().err
    assert cli_main(["continue", str(tmp_path / "p.wav"), str(tmp_path / "out.wav"), "--lm", str(lm_dir), "--tiny",
                     "--codec", str(tmp_path), "--seconds", "1.5"]) == 2
    assert "not both" in capsys.readouterr().err
    assert not (tmp_path / "out.wav").exists()


def test_continue_tiny_runs_the_smoke_test_and_early_eos_gives_shorter_audio(tmp_path, tiny_tokenizer, capsys):
    """--tiny: the random tiny codec in the tiny recipe's layout; --allow-early-eos: stop where the LM writes <eos>."""
    from semanticodec_hf.cli import main as cli_main
    from semanticodec_hf.feature_extraction_semanticodec import reference_frame_count
    from semanticodec_hf.long_audio import reference_output_samples

    layout = tiny_tokenizer.layout
    assert (layout.semantic_vocab_size, layout.acoustic_vocab_size) == (64, 128)  # = recipes/lm_tiny_cpu.yaml
    lm = _random_lm(layout)
    with torch.no_grad():  # an LM that writes <eos> whenever it may: the final norm emits v, and only <eos> aligns
        direction = torch.randn(lm.config.n_embd)
        lm.transformer.ln_f.weight.zero_()
        lm.transformer.ln_f.bias.copy_(direction)
        lm.transformer.wte.weight[layout.eos_token_id] = 100 * direction / direction.dot(direction)
    lm_dir = _save_lm(lm, layout, tmp_path / "lm")
    prompt = _prompt_file(tmp_path / "p.wav", 1.0)
    common = ["continue", str(prompt), "--lm", str(lm_dir), "--tiny", "--seconds", "1.5", "--steps", "5"]
    capsys.readouterr()
    assert cli_main(common[:2] + [str(tmp_path / "full.wav")] + common[2:]) == 0
    err = capsys.readouterr().err
    assert "WARNING: --tiny uses a small RANDOMLY INITIALISED codec" in err
    # progress on stderr: the LM's generation steps (2 ids per new frame + <eos>), then the decoder's steps
    steps = re.search(r"continue: 100%\|[^|]*\| (\d+)/(\d+)", err)
    assert steps and steps.group(1) == steps.group(2) and int(steps.group(1)) % 2 == 1, err[-800:]
    assert "DDIM: 100%" in err
    assert sf.read(str(tmp_path / "full.wav"))[0].shape == (24000,)  # <eos> is forbidden before 1.5 s
    assert cli_main(common[:2] + [str(tmp_path / "early.wav")] + common[2:] + ["--allow-early-eos", "--quiet"]) == 0
    assert "continue:" not in capsys.readouterr().err  # --quiet: no bars
    early, rate = sf.read(str(tmp_path / "early.wav"))
    # the LM stopped right after the prompt's frames: the output is the prompt's frames, not 1.5 s
    frames = reference_frame_count(16000, 100)
    assert rate == 16000 and early.shape == (min(24000, reference_output_samples(frames, 100)),) and early.shape[0] < 24000


def test_continue_output_has_the_same_file_mode_as_the_codec_commands_outputs(tmp_path, tiny_tokenizer):
    """The LM command writes through the shared `atomic_files` module: its output is not left at mkstemp's 0600."""
    import os
    import stat

    from semanticodec_hf.cli import main as cli_main

    lm_dir = _save_lm(_random_lm(tiny_tokenizer.layout), tiny_tokenizer.layout, tmp_path / "lm")
    prompt = _prompt_file(tmp_path / "p.wav", 1.0)
    assert cli_main(["continue", str(prompt), str(tmp_path / "lm_out.wav"), "--lm", str(lm_dir), "--tiny",
                     "--seconds", "1.5", "--steps", "5"]) == 0
    assert cli_main(["compress", str(prompt), str(tmp_path / "codec_out.sct"), "--tiny", "--quiet"]) == 0
    lm_mode, codec_mode = (stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in ("lm_out.wav", "codec_out.sct"))
    mask = os.umask(0o022)
    os.umask(mask)
    assert lm_mode == codec_mode == 0o666 & ~mask


def test_a_semantic_only_lm_continues_through_the_acoustic_stage(tmp_path, tiny_tokenizer, capsys):
    """`continue --acoustic-lm`: a semantic_only LM writes the semantic ids, the stage adds the acoustic ones after
    the prompt's own codes, and the codec decodes the whole."""
    from semanticodec_hf.cli import main as cli_main
    from semanticodec_hf.lm.acoustic_stage import AcousticStage

    layout = tiny_tokenizer.layout
    semantic_tokenizer = SemantiCodecAudioTokenizer(tiny_tokenizer.model, tiny_tokenizer.feature_extractor,
                                                    pattern="semantic_only")
    stage_tokenizer = SemantiCodecAudioTokenizer(tiny_tokenizer.model, tiny_tokenizer.feature_extractor)
    semantic_lm, stage_lm = _random_lm(layout, seed=0), _random_lm(layout, seed=1)
    engine = AudioContinuation(semantic_lm, semantic_tokenizer, acoustic_stage=AcousticStage(stage_lm, stage_tokenizer))
    prompt = 0.1 * np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    out = engine.continue_audio([prompt], 16000, seconds=1.5, num_inference_steps=5, seed=3)
    codes, prompt_codes = out["codes"][0], tiny_tokenizer.encode_audio(prompt, 16000)
    assert codes.shape == (2, out["target_frames"]) and out["audio"][0].shape == (24000,)
    assert torch.equal(codes[:, : prompt_codes.shape[1]], prompt_codes)  # the prompt's own codes first
    written = SemantiCodecAudioTokenizer(layout=layout, pattern="semantic_only").decode_ids(out["ids"][0])
    assert torch.equal(codes[0], written[0])  # the semantic row is exactly what the LM wrote
    acoustic = codes[1, prompt_codes.shape[1]:]
    assert acoustic.min() >= 0 and acoustic.max() < layout.acoustic_vocab_size and acoustic.unique().numel() > 1
    # the stage alone, given those semantic ids after the prompt, predicts the same acoustic ids
    alone = AcousticStage(stage_lm, stage_tokenizer).predict_acoustic(codes[0, prompt_codes.shape[1]:], prompt=prompt_codes)
    assert torch.equal(alone[1], acoustic)
    with pytest.raises(ValueError, match="Drop --acoustic-lm"):
        AudioContinuation(semantic_lm, stage_tokenizer, acoustic_stage=AcousticStage(stage_lm, stage_tokenizer))

    # the command line: refused without a stage (naming --acoustic-lm), written with one
    semantic_dir = tmp_path / "semantic_lm"
    semantic_lm.save_pretrained(semantic_dir)
    SemantiCodecAudioTokenizer(layout=layout, pattern="semantic_only").save_pretrained(semantic_dir, save_codec=False)
    stage_dir = _save_lm(stage_lm, layout, tmp_path / "stage_lm")
    prompt_path = _prompt_file(tmp_path / "p.wav", 1.0)
    common = ["continue", str(prompt_path), str(tmp_path / "out.wav"), "--lm", str(semantic_dir), "--tiny",
              "--seconds", "1.5", "--steps", "5", "--quiet"]
    assert cli_main(common) == 2
    assert "--acoustic-lm" in capsys.readouterr().err and not (tmp_path / "out.wav").exists()
    assert cli_main(common + ["--acoustic-lm", str(stage_dir)]) == 0
    assert sf.read(str(tmp_path / "out.wav"))[0].shape == (24000,)


def test_an_unwritable_output_is_one_line_and_exit_2(tmp_path, tiny_tokenizer, capsys):
    from semanticodec_hf.cli import main as cli_main

    lm_dir = _save_lm(_random_lm(tiny_tokenizer.layout), tiny_tokenizer.layout, tmp_path / "lm")
    prompts = [str(_prompt_file(tmp_path / name, 1.0)) for name in ("a.wav", "b.wav")]
    blocker = tmp_path / "out"
    blocker.write_text("a file where the output folder should go")
    capsys.readouterr()
    common = ["--lm", str(lm_dir), "--tiny", "--seconds", "1.5", "--steps", "5", "--quiet"]
    # a folder below a file: found only when writing (after generation), still one line
    assert cli_main(["continue", *prompts, str(blocker / "sub"), *common]) == 2
    err = capsys.readouterr().err
    assert f"continue: error: cannot write {blocker / 'sub' / 'a.wav'}" in err and "Traceback" not in err
    # the file itself as the folder of several outputs: refused before any work
    assert cli_main(["continue", *prompts, str(blocker), *common]) == 2
    assert f"several prompts need an output folder, but {blocker} is a file" in capsys.readouterr().err
    assert blocker.read_text() == "a file where the output folder should go"
