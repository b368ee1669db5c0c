"""`continue` with an LM trained on acoustic-BPE pieces (`data.acoustic_bpe`) and the semantic -> acoustic stage:
the prompt's semantic ids become pieces, the LM writes pieces until they cover the requested audio, the pieces are
decoded back to semantic ids (cut to the exact length), the stage adds the acoustic ids after the prompt's own
codes and the codec decodes. Both LMs are tiny and trained here by lm/train.py on synthetic corpora in seconds."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

pytest.importorskip("sentencepiece")

from semanticodec_hf.acoustic_bpe import AcousticBPE  # noqa: E402
from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout  # noqa: E402
from semanticodec_hf.lm.acoustic_stage import AcousticStage  # noqa: E402
from semanticodec_hf.lm.data import bpe_layout, synthetic_corpus  # noqa: E402
from semanticodec_hf.lm.generate import (  # noqa: E402
    AudioContinuation,
    PieceFramesLogitsProcessor,
    piece_frame_table,
)
from semanticodec_hf.lm.train import main as train_main  # noqa: E402
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
LAYOUT = SemantiCodecVocabularyLayout(64, 128)  # the random tiny codec's (what --tiny builds)
CLIPS, FRAMES = 40, 100  # the LM's synthetic corpus (seed 0, the trainer's seed)
POSITIONS = 64  # the BPE LM's context: 1 s from a 0.5 s prompt always fits (a piece covers >= 1 frame)


def _recipe(path: Path, pattern: str, positions: int, steps: int, **data) -> Path:
    recipe = {
        "model": {"architecture": "gpt2", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                  "max_position_embeddings": positions, "dropout": 0.0},
        "data": {"synthetic": {"num_clips": CLIPS, "frames": FRAMES, "semantic_vocab_size": 64,
                               "acoustic_vocab_size": 128, "pattern": pattern},
                 "block_size": positions, "eval_fraction": 0.0, **data},
        "train": {"output_dir": str(path.parent / (path.stem + "_run")), "max_steps": steps, "global_batch_size": 4,
                  "learning_rate": 3e-3, "warmup_steps": 2, "eval_every": steps, "save_every": steps,
                  "log_every": steps, "log_with": [], "seed": 0},
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(BPE LM final folder, stage final folder, the BPE model): trained once for the module (a few seconds)."""
    root = tmp_path_factory.mktemp("bpe_continuation")
    streams = [clip[1:-1] for clip in synthetic_corpus(LAYOUT, "semantic_only", CLIPS, FRAMES, seed=0)]
    bpe = AcousticBPE.train(streams, num_base_ids=LAYOUT.semantic_vocab_size, vocab_size=160)
    bpe.save(root / "bpe")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        lm = train_main(["--config", str(_recipe(root / "lm.yaml", "semantic_only", POSITIONS, 30,
                                                 acoustic_bpe=str(root / "bpe")))])
        stage = train_main(["--config", str(_recipe(root / "stage.yaml", "interleaved", 128, 10))])
    torch.set_num_threads(previous)
    return Path(lm["final"]), Path(stage["final"]), bpe


@pytest.fixture(scope="module")
def engine(runs):
    lm_dir, stage_dir, _ = runs
    return AudioContinuation.from_pretrained(str(lm_dir), codec_tokenizer=SemantiCodecAudioTokenizer.tiny(seed=0),
                                             acoustic_lm=str(stage_dir))


def _prompt(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))).astype(np.float32)


def _pieces(row: torch.Tensor, layout: SemantiCodecVocabularyLayout):
    """The pieces of one `ids` row (`<bos> pieces <eos> <pad>...`)."""
    ids = row.tolist()
    assert ids[0] == layout.bos_token_id
    body = ids[1:]
    return body[: body.index(layout.eos_token_id)]


def _check(out, engine, prompts, seconds):
    bpe, layout = engine.acoustic_bpe, engine.lm_layout
    for row, prompt in enumerate(prompts):
        codes, prompt_codes = out["codes"][row], out["prompt_codes"][row]
        frames = prompt_codes.shape[1]
        assert codes.shape == (2, out["target_frames"])
        assert out["audio"][row].shape == (int(round(seconds * 16000)),)
        assert torch.equal(codes[:, :frames], prompt_codes)  # the prompt's own codes first
        # the output starts with exactly the prompt's reconstruction (as in the semantic_only path)
        cut = prompt.shape[0]
        assert torch.equal(out["audio"][row][:cut], out["prompt_reconstruction"][row])
        pieces = _pieces(out["ids"][row], layout)
        prompt_pieces = bpe.encode(prompt_codes[0].tolist())
        healed = len(prompt_pieces) - 1  # token healing took the last prompt piece back ...
        assert pieces[:healed] == prompt_pieces[:healed]
        restated, taken_back = bpe.piece_ids(pieces[healed]), bpe.piece_ids(prompt_pieces[-1])
        assert restated[: len(taken_back)] == taken_back  # ... and the first new piece starts with its ids
        assert 0 not in pieces and max(pieces) < bpe.vocab_size  # pieces only, never <unk>
        semantic = bpe.decode(pieces)  # valid semantic ids, at least the target (the last piece may pass it)
        assert len(semantic) >= out["target_frames"] and 0 <= min(semantic) and max(semantic) < 64
        assert codes[0].tolist() == semantic[: out["target_frames"]]
        acoustic = codes[1, frames:]
        assert acoustic.numel() and 0 <= acoustic.min() and acoustic.max() < LAYOUT.acoustic_vocab_size


def test_a_bpe_lm_continues_through_the_stage_in_one_call_and_past_its_context(engine, runs):
    assert engine.acoustic_bpe is not None and engine.lm_layout == bpe_layout(runs[2], LAYOUT)
    prompts = [_prompt(0.5), _prompt(0.4, seed=1)]
    out = engine.continue_audio(prompts, 16000, seconds=1.0, num_inference_steps=2, seed=3)
    # 50 frames from prompts of 25 and 20: <bos> + <= 25 prompt pieces + <= 31 new ids fit in 64 positions
    assert out["slides"] == 0 and not out["streamed"]
    _check(out, engine, prompts, 1.0)
    # the stage alone, given the new semantic ids after the prompt's codes, predicts the same acoustic ids
    frames = out["prompt_codes"][0].shape[1]
    alone = engine.acoustic_stage.predict_acoustic(out["codes"][0][0, frames:], prompt=out["prompt_codes"][0])
    assert torch.equal(alone, out["codes"][0][:, frames:])
    # the same seed gives the same ids
    again = engine.generate_continuation(prompts, 16000, seconds=1.0, num_inference_steps=2, seed=3)
    assert torch.equal(again["ids"], out["ids"])
    # without token healing the prompt's pieces are kept whole, and the output still starts with the prompt
    plain = engine.generate_continuation(prompts, 16000, seconds=1.0, num_inference_steps=2, seed=3,
                                         token_healing=False)
    for row, codes in enumerate(plain["prompt_codes"]):
        prompt_pieces = engine.acoustic_bpe.encode(codes[0].tolist())
        assert _pieces(plain["ids"][row], engine.lm_layout)[: len(prompt_pieces)] == prompt_pieces
        assert torch.equal(plain["codes"][row][:, : codes.shape[1]], codes)
    # past the context (64 positions of pieces): the window slides, lengths still count audio
    prompts = [_prompt(1.0, seed=4)]
    long = engine.continue_audio(prompts, 16000, seconds=6.0, num_inference_steps=2, seed=3, extend_stride=0.3)
    assert long["slides"] > 0 and long["streamed"]
    _check(long, engine, prompts, 6.0)
    # a slid window: at most the LM's positions, no <bos>, and the ids it keeps are the ids written before
    calls = []
    generate = engine.lm.generate

    def recording(**kwargs):
        out = generate(**kwargs)
        calls.append((kwargs["input_ids"].clone(), out.clone(), kwargs["max_new_tokens"]))
        return out

    layout = engine.lm_layout
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(engine.lm, "generate", recording)
        default = engine.generate_continuation(prompts, 16000, seconds=6.0, num_inference_steps=2, seed=5)
    assert default["slides"] == len(calls) - 1 > 0 and default["codes"][0].shape == (2, default["target_frames"])
    pieces = _pieces(default["ids"][0], layout)
    for index, (window, out, new_tokens) in enumerate(calls):
        assert window.shape[1] + new_tokens <= POSITIONS and out.shape[1] <= POSITIONS
        kept = [i for i in window[0].tolist() if i != layout.pad_token_id]
        assert (kept[0] == layout.bos_token_id) == (index == 0)
        if index:  # the window and what the LM wrote after it are one stretch of the clip's pieces
            written = [i for i in out[0].tolist() if i not in (layout.pad_token_id, layout.eos_token_id)]
            assert any(pieces[k:k + len(written)] == written for k in range(len(pieces)))
    # greedy works too; beam search is refused when it might not fit in one call, naming what to use
    greedy = engine.generate_continuation(prompts, 16000, seconds=1.5, num_inference_steps=2, greedy=True)
    assert greedy["codes"][0].shape == (2, greedy["target_frames"])
    with pytest.raises(ValueError, match="use sampling or --greedy"):
        engine.generate_continuation(prompts, 16000, seconds=4.0, num_inference_steps=2, num_beams=2)
    with pytest.raises(ValueError, match="--no-repeat-ngram-size .* acoustic-BPE pieces"):
        engine.generate_continuation(prompts, 16000, seconds=1.5, no_repeat_ngram_size=3)


def test_the_piece_processor_counts_frames_not_positions(runs):
    bpe = runs[2]
    layout = bpe_layout(bpe, LAYOUT)
    table = piece_frame_table(bpe, layout)
    assert table[0] == 0 and table[layout.acoustic_offset:].sum() == 0
    assert all(table[p] == len(bpe.piece_ids(p)) for p in range(1, bpe.vocab_size))
    long_piece = int(table.argmax())
    assert table[long_piece] >= 2
    bos, eos, pad = layout.bos_token_id, layout.eos_token_id, layout.pad_token_id
    one = int((table == 1).nonzero()[0])
    target = int(table[long_piece]) + 1
    processor = PieceFramesLogitsProcessor(layout, table, [target, target, target])
    ids = torch.tensor([[pad, bos, long_piece],  # target - 1 frames: pieces, no <eos>
                        [bos, long_piece, one],  # the target: only <eos>
                        [long_piece, one, eos]])  # finished: left alone
    scores = processor(ids, torch.zeros(3, layout.vocab_size))
    assert torch.isinf(scores[0, 0]) and torch.isinf(scores[0, eos])
    assert torch.isfinite(scores[0, 1:bpe.vocab_size]).all()
    assert torch.isfinite(scores[1]).nonzero().flatten().tolist() == [eos]
    assert torch.isfinite(scores[2]).all()
    early = PieceFramesLogitsProcessor(layout, table, [target] * 3, allow_early_eos=True, min_frames=[1, 1, 1])
    assert torch.isfinite(early(ids, torch.zeros(3, layout.vocab_size))[0, eos])
    late = PieceFramesLogitsProcessor(layout, table, [target] * 3, allow_early_eos=True, min_frames=[target] * 3)
    assert torch.isinf(late(ids, torch.zeros(3, layout.vocab_size))[0, eos])


def test_continue_command_with_a_bpe_lm(runs, tmp_path, capsys):
    from semanticodec_hf.cli import main as cli_main

    lm_dir, stage_dir, _ = runs
    sf.write(str(tmp_path / "p.wav"), _prompt(1.0, seed=2), 16000)
    common = ["continue", str(tmp_path / "p.wav"), str(tmp_path / "out.wav"), "--lm", str(lm_dir), "--tiny",
              "--seconds", "1.5", "--steps", "2", "--quiet", "--threads", "1"]
    # without a stage: one line naming --acoustic-lm, no output
    assert cli_main(common) == 2
    err = capsys.readouterr().err
    assert "acoustic-BPE" in err and "--acoustic-lm PATH" in err and "Traceback" not in err
    assert not (tmp_path / "out.wav").exists()
    assert cli_main(common + ["--acoustic-lm", str(stage_dir)]) == 0
    audio, rate = sf.read(str(tmp_path / "out.wav"))
    assert rate == 16000 and audio.shape == (24000,)
    # long-form, streamed to the file
    long = common[:2] + [str(tmp_path / "long.wav")] + common[3:]
    long[long.index("1.5")] = "3.0"
    assert cli_main(long + ["--acoustic-lm", str(stage_dir), "--extend-stride", "0.4"]) == 0
    assert "slides, streamed" in capsys.readouterr().out
    assert sf.read(str(tmp_path / "long.wav"))[0].shape == (48000,)
    assert cli_main(common + ["--acoustic-lm", str(stage_dir), "--no-repeat-ngram-size", "3"]) == 2
    assert "--no-repeat-ngram-size" in capsys.readouterr().err
    assert cli_main(common + ["--acoustic-lm", str(stage_dir), "--no-token-healing"]) == 0


def test_a_bpe_lm_refuses_a_codec_of_another_vocabulary(runs):
    lm_dir, stage_dir, _ = runs
    other = SemantiCodecAudioTokenizer(layout=SemantiCodecVocabularyLayout(32, 128))  # ids only, no codec
    with pytest.raises(ValueError, match="use the codec variant the LM was trained with"):
        AudioContinuation.from_pretrained(str(lm_dir), codec_tokenizer=other, acoustic_lm=str(stage_dir))
