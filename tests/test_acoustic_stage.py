"""The semantic -> acoustic stage: a tiny interleaved LM trained by lm/train.py on the stage recipe predicts the
acoustic ids of held-out semantic ids far above the baselines, its output always decodes, the semantic ids are
exactly the given ones, long clips go in windows, the command writes a wav, and a resumed stage run is exact."""

import argparse
import os
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout, codes_to_ids
from semanticodec_hf.lm.acoustic_stage import (
    AcousticStage,
    ForcedSemanticLogitsProcessor,
    read_semantic_codes,
    register_decode_semantic_command,
)
from semanticodec_hf.lm.config import ModelRecipe, load_recipe
from semanticodec_hf.lm.data import synthetic_acoustic, synthetic_corpus, synthetic_corpus_from_spec
from semanticodec_hf.lm.modeling import build_model
from semanticodec_hf.lm.train import main as train_main
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer
from semanticodec_hf.training_utils import checkpoints
from recipe_modules import run_killed_after_step

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "acoustic_stage_tiny_cpu.yaml"
LAYOUT = SemantiCodecVocabularyLayout(64, 128)  # the stage recipe's, and the tiny codec's
pytestmark = pytest.mark.usefixtures("one_thread")


def _held_out_semantic(clips: int, frames: int, seed: int = 12345):
    """Semantic streams the stage never saw (another seed than training's 0), drawn as the recipe's are."""
    corpus = synthetic_corpus(LAYOUT, "semantic_only", clips, frames, seed=seed, noise=1.0)
    return [np.asarray(clip[1:-1], dtype=np.int64) for clip in corpus]


def _truth(semantic):
    return synthetic_acoustic(semantic, LAYOUT.acoustic_vocab_size, "previous_semantic", LAYOUT.semantic_vocab_size)


def _write_tokenized(spec, folder: Path, seed: int = 0) -> Path:
    """The recipe's synthetic corpus as a tokenize_dataset-style folder (`dataset/`, `tokenizer/`). The stage runs
    below train from it: lm/train.py does not yet pass `acoustic_rule`/`noise` on to the corpus (see
    `test_the_trainer_builds_the_corpus_the_recipe_describes`)."""
    clips = synthetic_corpus_from_spec(spec, seed=seed)
    datasets.Dataset.from_dict({"input_ids": clips}).save_to_disk(str(folder / "dataset"))
    layout = SemantiCodecVocabularyLayout(spec.semantic_vocab_size, spec.acoustic_vocab_size)
    SemantiCodecAudioTokenizer(layout=layout, pattern=spec.pattern).save_pretrained(folder / "tokenizer",
                                                                                     save_codec=False)
    return folder


def _stage_args(tokens: Path, output: Path, *overrides: str):
    return ["--config", str(RECIPE), "--output-dir", str(output), "--set", "data.synthetic=null",
            f"data.tokenized_dir={tokens}", "train.log_with=[]", *overrides]


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory):
    """The stage recipe trained once for this module (about 20-40 s on one thread); returns (final folder, train
    clips)."""
    root = tmp_path_factory.mktemp("stage")
    spec = load_recipe(RECIPE).data.synthetic
    tokens = _write_tokenized(spec, root / "tokens")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        train_main(_stage_args(tokens, root / "run"))
    torch.set_num_threads(previous)
    return root / "run" / "final", synthetic_corpus_from_spec(spec, seed=0)


@pytest.fixture(scope="module")
def stage(stage_run):
    return AcousticStage.from_pretrained(stage_run[0])


# ---------------------------------------------------------------------------------------------- learning
def test_the_stage_predicts_held_out_acoustic_ids_far_above_the_baselines(stage, stage_run):
    _, train_clips = stage_run
    semantic = _held_out_semantic(16, 63)
    codes = stage.predict_acoustic(semantic)
    assert [tuple(c.shape) for c in codes] == [(2, 63)] * 16
    for given, predicted in zip(semantic, codes):
        assert np.array_equal(predicted[0].numpy(), given)  # the semantic row is exactly the input
    truth = np.concatenate([_truth(s) for s in semantic])
    accuracy = float((np.concatenate([c[1].numpy() for c in codes]) == truth).mean())
    # baselines from the training corpus: the most frequent acoustic id, and the best map from the current
    # semantic id alone (what a per-frame classifier could reach; the rule needs the previous id too)
    pairs = np.concatenate([np.asarray(clip[1:-1]).reshape(-1, 2) for clip in train_clips])
    train_semantic, train_acoustic = pairs[:, 0], pairs[:, 1] - LAYOUT.acoustic_offset
    majority = float((truth == np.bincount(train_acoustic).argmax()).mean())
    per_frame_map = np.array([np.bincount(train_acoustic[train_semantic == s], minlength=128).argmax()
                              for s in range(64)])
    per_frame = float((per_frame_map[np.concatenate(semantic)] == truth).mean())
    print(f"held-out accuracy {accuracy:.4f}; majority {majority:.4f}; current-id-only map {per_frame:.4f}")
    assert majority < 0.05 and per_frame < 0.65
    assert accuracy >= 0.95, (accuracy, majority, per_frame)
    # one clip alone: the same prediction as in the batch, given back as one tensor
    alone = stage.predict_acoustic(torch.from_numpy(semantic[3])[None])
    assert torch.is_tensor(alone) and torch.equal(alone, codes[3])


def test_clips_longer_than_the_lm_are_predicted_in_windows(stage):
    assert stage.max_frames == 63  # 128 positions: <bos> + 63 frames
    semantic = _held_out_semantic(4, 150, seed=777)  # windows of 63, then 3 x 32 new frames after 31 known ones
    calls = []
    real = stage.lm.generate
    stage.lm.generate = lambda **kw: calls.append(kw["input_ids"].shape[1] + kw["max_new_tokens"]) or real(**kw)
    try:
        codes = stage.predict_acoustic(semantic)
    finally:
        del stage.lm.generate
    assert len(calls) == 4 and max(calls) <= stage.positions
    truth = np.concatenate([_truth(s) for s in semantic])
    accuracy = float((np.concatenate([c[1].numpy() for c in codes]) == truth).mean())
    assert accuracy >= 0.95, accuracy
    # a window without any context frame misses its first frame's previous semantic id
    blind = stage.predict_acoustic(semantic, context_frames=0)
    blind_accuracy = float((np.concatenate([c[1].numpy() for c in blind]) == truth).mean())
    assert blind_accuracy < accuracy


def test_a_prompt_is_continued_and_not_repeated(stage):
    semantic = _held_out_semantic(2, 40, seed=31)
    prompt = np.stack([semantic[0][:10], _truth(semantic[0])[:10]])
    rest = semantic[0][10:]
    rng_state = torch.get_rng_state()
    codes = stage.predict_acoustic(rest, prompt=prompt)
    assert torch.equal(torch.get_rng_state(), rng_state)  # greedy: the caller's random stream is left alone
    assert tuple(codes.shape) == (2, 30) and np.array_equal(codes[0].numpy(), rest)
    # with the prompt, the first new frame knows its previous semantic id (semantic[0][9]): the rule holds
    assert np.array_equal(codes[1].numpy(), _truth(semantic[0])[10:])
    # rows with prompts of different lengths (left-padded together) give what each gives alone
    other = _held_out_semantic(1, 30, seed=32)[0]
    batch = stage.predict_acoustic([rest, other[:13], other[5:]],
                                   prompt=[prompt, None, np.stack([other[:5], _truth(other)[:5]])])
    assert torch.equal(batch[0], codes)
    assert torch.equal(batch[1], stage.predict_acoustic(other[:13]))
    assert np.array_equal(batch[2][1].numpy(), _truth(other)[5:])
    with pytest.raises(ValueError, match="2 prompts for 1 clips"):
        stage.predict_acoustic([rest], prompt=[prompt, prompt])
    with pytest.raises(ValueError, match="prompt of clip 0"):
        stage.predict_acoustic(rest, prompt=prompt[:1])


# ---------------------------------------------------------------------------------------------- constraints
def _random_stage(layout=LAYOUT, positions=64, pattern="interleaved"):
    torch.manual_seed(0)
    model = build_model(ModelRecipe(hidden_size=32, num_layers=1, num_heads=2, max_position_embeddings=positions),
                        layout)
    return AcousticStage(model, SemantiCodecAudioTokenizer(layout=layout, pattern=pattern))


def test_an_untrained_sampling_stage_still_writes_the_given_semantic_ids_and_decodable_codes():
    stage = _random_stage()
    semantic = _held_out_semantic(3, 50, seed=5)
    semantic[1] = semantic[1][:17]  # rows of different lengths in one batch
    codes = stage.predict_acoustic(semantic, temperature=1.5, top_k=50, seed=3)
    ids_only = SemantiCodecAudioTokenizer(layout=LAYOUT)
    for given, out in zip(semantic, codes):
        assert np.array_equal(out[0].numpy(), given)
        assert out[1].min() >= 0 and out[1].max() < LAYOUT.acoustic_vocab_size
        ids = [LAYOUT.bos_token_id, *codes_to_ids(out, LAYOUT, "interleaved").tolist(), LAYOUT.eos_token_id]
        assert torch.equal(ids_only.decode_ids(ids), out)
    again = stage.predict_acoustic(semantic, temperature=1.5, top_k=50, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(codes, again))  # seeded


def test_the_forcing_processor_forces_only_semantic_positions():
    layout = SemantiCodecVocabularyLayout(4, 4)
    bos, pad, off = layout.bos_token_id, layout.pad_token_id, layout.acoustic_offset
    processor = ForcedSemanticLogitsProcessor(layout, [[2, 1, 3], [0]])
    ids = torch.tensor([[bos, 2, off + 1], [pad, pad, bos]])  # row 0: frame 1 is due; row 1: frame 0 is due
    scores = processor(ids, torch.zeros(2, layout.vocab_size))
    assert torch.isfinite(scores[0]).nonzero().flatten().tolist() == [1]
    assert torch.isfinite(scores[1]).nonzero().flatten().tolist() == [0]
    open_frame = torch.tensor([[bos, 2, off + 1, 1], [pad, bos, 0, off]])  # row 0: acoustic due; row 1: past its ids
    untouched = torch.randn(2, layout.vocab_size)
    assert torch.equal(processor(open_frame, untouched), untouched)
    with pytest.raises(ValueError, match="not a semantic id in 0..3"):
        ForcedSemanticLogitsProcessor(layout, [[4]])


# ---------------------------------------------------------------------------------------------- errors
def test_bad_inputs_and_mismatched_lms_are_refused_with_clear_messages(stage_run):
    stage = _random_stage()
    with pytest.raises(ValueError, match=r"semantic code 64 at frame 1 is outside 0..63"):
        stage.predict_acoustic(np.array([3, 64, 2]))
    with pytest.raises(ValueError, match="no semantic codes"):
        stage.predict_acoustic(np.zeros(0, dtype=np.int64))
    with pytest.raises(ValueError, match="No clips given"):
        stage.predict_acoustic([])
    with pytest.raises(ValueError, match=r"shape \[F\] or \[1, F\]"):
        stage.predict_acoustic(np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="must be integers"):
        stage.predict_acoustic(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"context_frames must be an integer in 0..30"):
        stage.predict_acoustic(np.array([1, 2]), context_frames=31)
    with pytest.raises(ValueError, match="needs sampling"):
        stage.predict_acoustic(np.array([1, 2]), top_k=5)
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        stage.predict_acoustic(np.array([1, 2]), temperature=0.0)
    # an LM of another layout, or trained on another pattern
    with pytest.raises(ValueError, match="The LM has 36 ids but the layout 64 semantic / 128 acoustic has 196"):
        AcousticStage(_random_stage(SemantiCodecVocabularyLayout(16, 16)).lm, SemantiCodecAudioTokenizer(layout=LAYOUT))
    with pytest.raises(ValueError, match="trained on 'semantic_only' ids"):
        _random_stage(pattern="semantic_only")
    with pytest.raises(ValueError, match="use the codec variant the LM was trained with"):
        AcousticStage.from_pretrained(stage_run[0],
                                      codec_tokenizer=SemantiCodecAudioTokenizer(layout=SemantiCodecVocabularyLayout(16, 16)))


# ---------------------------------------------------------------------------------------------- command
def _parser():
    parser = argparse.ArgumentParser(prog="semanticodec-hf")
    commands = parser.add_subparsers(dest="command")
    register_decode_semantic_command(lambda name, help_text, description: commands.add_parser(
        name, help=help_text, description=description))
    return parser


def test_decode_semantic_command_writes_the_wav_of_the_predicted_codes(stage_run, tmp_path, capsys):
    final, _ = stage_run
    semantic = _held_out_semantic(1, 40, seed=99)[0]
    np.save(tmp_path / "semantic.npy", semantic)
    full = np.stack([semantic, np.zeros_like(semantic)])  # [2, F]: the acoustic row is ignored
    np.save(tmp_path / "full.npy", full)
    parser = _parser()
    common = ["--acoustic-lm", str(final), "--tiny", "--steps", "2", "--seed", "1", "--threads", "1"]
    args = parser.parse_args(["decode-semantic", str(tmp_path / "semantic.npy"), str(tmp_path / "a.wav"), *common])
    assert args.func(args) == 0
    assert "40 frames" in capsys.readouterr().out
    args = parser.parse_args(["decode-semantic", str(tmp_path / "full.npy"), str(tmp_path / "b.wav"), *common])
    assert args.func(args) == 0
    audio, rate = sf.read(str(tmp_path / "a.wav"))
    assert rate == 16000 and audio.ndim == 1
    # the tiny codec's output for the codes the stage predicts, decoded with the same seed and steps
    tiny = SemantiCodecAudioTokenizer.tiny(seed=0)
    codes = AcousticStage.from_pretrained(final).predict_acoustic(semantic)
    assert np.array_equal(codes[1].numpy(), _truth(semantic))
    expected = tiny.processor.decode_codes(tiny.model, [codes], seed=1, num_inference_steps=2)[0].numpy()
    assert audio.shape == expected.shape
    assert np.abs(audio - expected).max() < 2e-4 + 1e-3 * np.abs(expected).max()  # PCM_16 rounding
    assert np.array_equal(sf.read(str(tmp_path / "b.wav"))[0], audio)  # [2, F] input: row 0 only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "b.wav", "full.npy", "semantic.npy"]


def test_decode_semantic_command_refuses_bad_input_and_leaves_no_output(stage_run, tmp_path, capsys):
    final, _ = stage_run
    parser = _parser()
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2), dtype=np.int64))
    np.save(tmp_path / "big.npy", np.array([1, 2, 99]))
    cases = [("cube.npy", ["--tiny"], "expected [F], [1, F] or [2, F]"),
             ("big.npy", ["--tiny"], "semantic code 99 at frame 2 is outside 0..63"),
             ("big.npy", ["--tiny", "--codec", "x"], "not both")]
    for name, extra, message in cases:
        args = parser.parse_args(["decode-semantic", str(tmp_path / name), str(tmp_path / "out.wav"),
                                  "--acoustic-lm", str(final), "--steps", "2", *extra])
        assert args.func(args) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out.wav").exists()
    with pytest.raises(ValueError, match="as a .npy file"):
        read_semantic_codes(tmp_path / "codes.txt")


# ---------------------------------------------------------------------------------------------- recipe
def test_killed_and_resumed_stage_run_ends_with_the_same_weights(tmp_path):
    spec = load_recipe(RECIPE).data.synthetic
    tokens = _write_tokenized(spec, tmp_path / "tokens")
    short = ["train.max_steps=6", "train.save_every=3", "train.eval_every=3"]
    train_main(_stage_args(tokens, tmp_path / "straight", *short))
    crashed = run_killed_after_step("semanticodec_hf.lm.train", 4, _stage_args(tokens, tmp_path / "killed", *short),
                                    tmp_path)
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    assert [step for step, _ in checkpoints(tmp_path / "killed")] == [3]
    assert train_main(_stage_args(tokens, tmp_path / "killed", *short))["resumed_from"] == 3
    straight = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "final" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_the_new_corpus_options_are_opt_in_and_checked(tmp_path):
    old = load_recipe(REPO / "recipes" / "lm_tiny_cpu.yaml")
    # a recipe without the new keys stores the dict it stored before they existed (a resume compares it)
    assert set(old.to_dict()["data"]["synthetic"]) == {"num_clips", "frames", "semantic_vocab_size",
                                                      "acoustic_vocab_size", "pattern"}
    stage_dict = load_recipe(RECIPE).to_dict()["data"]["synthetic"]
    assert stage_dict["acoustic_rule"] == "previous_semantic" and stage_dict["noise"] == 1.0
    with pytest.raises(ValueError, match=r"data\.synthetic\.acoustic_rule must be one of \['frame_index', "
                                         r"'previous_semantic'\], got 'next'"):
        load_recipe(RECIPE, ["data.synthetic.acoustic_rule=next"])
    with pytest.raises(ValueError, match=r"data\.synthetic\.noise must be a fraction in \[0, 1\], got 1.5"):
        load_recipe(RECIPE, ["data.synthetic.noise=1.5"])
    # the default corpus is the one of every earlier version; the stage's follows its rule
    layout = SemantiCodecVocabularyLayout(16, 32)
    for clip in synthetic_corpus(layout, "interleaved", 3, 12, seed=4):
        pairs = np.asarray(clip[1:-1]).reshape(-1, 2)
        assert np.array_equal(pairs[:, 1] - 16, (pairs[:, 0] * 7 + np.arange(12) % 3) % 32)
    for clip in synthetic_corpus(layout, "interleaved", 3, 12, seed=4, acoustic_rule="previous_semantic"):
        pairs = np.asarray(clip[1:-1]).reshape(-1, 2)
        previous = np.concatenate([[0], pairs[:-1, 0]])
        assert np.array_equal(pairs[:, 1] - 16, (pairs[:, 0] + 16 * (previous % 2)) % 32)
    with pytest.raises(ValueError, match="Unknown acoustic_rule 'x'"):
        synthetic_corpus(layout, "interleaved", 1, 4, acoustic_rule="x")


def test_the_trainer_builds_the_corpus_the_recipe_describes():
    from semanticodec_hf.lm.train import load_corpus

    recipe = load_recipe(RECIPE, ["data.eval_fraction=0"])
    blocks, _, _ = load_corpus(recipe)
    expected = synthetic_corpus_from_spec(recipe.data.synthetic, seed=recipe.train.seed)
    assert sorted(map(tuple, blocks.take(range(len(blocks))))) == sorted(map(tuple, expected))
