"""LM evaluation: the continuation statistics by hand, likelihood probes on an LM whose answer is known by
construction, the trainer's held-out loss, continuations, the generative-perplexity plumbing, and the recipe."""

import csv
import json
import math

import datasets
import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from transformers import GPT2Config, GPT2LMHeadModel

from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout
from semanticodec_hf.lm.evaluate import (
    auto_bleu,
    clips_of_blocks,
    continuation_statistics,
    corpus_for,
    decode_sequences,
    distinct_n,
    expand_lm_paths,
    generate_continuations,
    generative_perplexity,
    heldout_loss,
    likelihood_probe_audio,
    likelihood_probe_ids,
    load_lm,
    pair_ids,
    read_pair_dataset,
    read_pair_folder,
    semantic_ids,
    sequence_log_likelihoods,
    text_perplexity,
    unigram_entropy,
)
from semanticodec_hf.lm.train import main as train_main
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer
from fixed_score_lms import fixed_score_lm
from recipe_modules import import_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
LAYOUT = SemantiCodecVocabularyLayout(16, 16)
FAVOURED = list(range(8))  # semantic ids the fixed-preference LM likes
TINY_LAYOUT = (64, 128)  # the tiny codec's: the run below uses it so that --tiny can tokenize probe clips


# ---------------------------------------------------------------------------------------------- statistics
def test_unigram_entropy_pools_all_sequences():
    assert unigram_entropy([[1, 1, 2, 2]]) == pytest.approx(1.0)
    assert unigram_entropy([[0, 0, 1], [2]]) == pytest.approx(1.5)  # p = 1/2, 1/4, 1/4
    assert unigram_entropy([[5, 5, 5]]) == 0.0
    assert unigram_entropy([[], []]) is None


def test_distinct_n_counts_within_sequences_only():
    sequences = [[1, 2, 1, 2], [1, 2]]
    assert distinct_n(sequences, 1) == pytest.approx(2 / 6)
    assert distinct_n(sequences, 2) == pytest.approx(2 / 4)  # (1,2) three times, (2,1) once
    assert distinct_n(sequences, 3) == pytest.approx(2 / 2)
    assert distinct_n(sequences, 4) == 1.0
    assert distinct_n(sequences, 5) is None
    assert distinct_n([[1], [1]], 2) is None  # no bigram spans the two sequences
    with pytest.raises(ValueError, match="n must be >= 1"):
        distinct_n(sequences, 0)


def test_auto_bleu_matches_hand_computed_values():
    assert auto_bleu([1, 2, 1, 2], max_n=2) == pytest.approx(math.sqrt(2 / 3))  # p1 = 4/4, p2 = 2/3
    assert auto_bleu([1, 2, 1, 2, 1], max_n=3) == pytest.approx((2 / 3) ** (1 / 3))  # p1 = p2 = 1, p3 = 2/3
    assert auto_bleu([1, 2, 1, 2, 1], max_n=4) == 0.0  # (1,2,1,2) and (2,1,2,1) occur once each
    assert auto_bleu([7, 7, 7, 7, 7]) == pytest.approx(1.0)  # every n-gram of every order repeats
    assert auto_bleu([1, 2, 3, 4, 5]) == 0.0
    assert auto_bleu([1, 1, 1, 1]) is None  # shorter than max_n + 1
    assert auto_bleu([3, 3], max_n=1) == pytest.approx(1.0)


def test_continuation_statistics_and_semantic_ids():
    stats = continuation_statistics([[1, 2, 1, 2], [3]], [True, False], max_n=2)
    entropy = -(2 * 0.4 * math.log2(0.4) + 0.2 * math.log2(0.2))
    assert stats["entropy_bits"] == pytest.approx(entropy)
    assert stats["distinct_1"] == pytest.approx(3 / 5) and stats["distinct_2"] == pytest.approx(2 / 3)
    assert stats["auto_bleu"] == pytest.approx(math.sqrt(2 / 3))  # [3] is too short to count
    assert stats["eos_fraction"] == 0.5 and stats["mean_length"] == 2.5 and stats["sequences"] == 2
    with pytest.raises(ValueError, match="1 <eos> flags for 2 sequences"):
        continuation_statistics([[1], [2]], [True])
    bos, eos = LAYOUT.bos_token_id, LAYOUT.eos_token_id
    assert semantic_ids([bos, 3, 19, 4, 20, eos], LAYOUT) == [3, 4]


# ---------------------------------------------------------------------------------------------- probes
def _preference(layout, favoured=FAVOURED, weight=4.0, eos=0.0):
    preference = torch.zeros(layout.vocab_size)
    preference[favoured] = weight
    preference[layout.eos_token_id] = eos
    return preference


def _known_pairs(rng, count):
    bos = LAYOUT.bos_token_id
    good = [[bos, *rng.choice(FAVOURED, int(rng.integers(3, 12))).tolist()] for _ in range(count)]
    bad = [[bos, *rng.integers(8, 16, int(rng.integers(3, 12))).tolist()] for _ in range(count)]
    return good, bad


def test_log_likelihoods_are_exact_and_do_not_depend_on_batching():
    preference = _preference(LAYOUT)
    model = fixed_score_lm(LAYOUT, preference, positions=64)
    log_p = torch.log_softmax(preference.double(), dim=0)
    good, bad = _known_pairs(np.random.default_rng(0), 5)
    sequences = good + bad
    expected = [(float(log_p[s[1:]].sum()), len(s) - 1) for s in sequences]
    for batch_size in (1, 3, 16):
        got = sequence_log_likelihoods(model, sequences, LAYOUT.pad_token_id, batch_size=batch_size)
        assert [n for _, n in got] == [n for _, n in expected]
        assert [v for v, _ in got] == pytest.approx([v for v, _ in expected], abs=1e-4)
    with pytest.raises(ValueError, match="Sequence 1 has 70 ids but the LM attends over 64 positions"):
        sequence_log_likelihoods(model, [[0, 1], [0] * 70], LAYOUT.pad_token_id)
    with pytest.raises(ValueError, match="Sequence 0 holds id 99, outside"):
        sequence_log_likelihoods(model, [[0, 99]], LAYOUT.pad_token_id)


def test_probe_accuracy_is_one_on_known_pairs_zero_swapped_and_chance_on_identical():
    model = fixed_score_lm(LAYOUT, _preference(LAYOUT), positions=64)
    good, bad = _known_pairs(np.random.default_rng(1), 12)
    # the same length for both members, so the summed score decides as the per-id one does
    bad = [b[:len(g)] + [8] * (len(g) - len(b)) for g, b in zip(good, bad)]
    result = likelihood_probe_ids(model, good, bad, LAYOUT.pad_token_id, batch_size=5)
    assert result["pairs"] == 12 and result["accuracy"] == 1.0 and result["normalized_accuracy"] == 1.0
    assert result["mean_margin"] == pytest.approx(4.0, abs=1e-4)  # favoured ids are e^4 times likelier
    swapped = likelihood_probe_ids(model, bad, good, LAYOUT.pad_token_id)
    assert swapped["accuracy"] == 0.0 and swapped["mean_margin"] == pytest.approx(-4.0, abs=1e-4)
    torch.manual_seed(0)
    random_lm = GPT2LMHeadModel(GPT2Config(vocab_size=LAYOUT.vocab_size, n_embd=16, n_layer=1, n_head=2,
                                           n_positions=64)).eval()
    identical = likelihood_probe_ids(random_lm, good, good, LAYOUT.pad_token_id, batch_size=7)
    assert identical["accuracy"] == 0.5 and identical["normalized_accuracy"] == 0.5


def test_length_normalised_accuracy_differs_from_the_summed_one():
    """A long likely clip has the lower sum but the higher per-id score than a short unlikely one."""
    model = fixed_score_lm(LAYOUT, _preference(LAYOUT), positions=64)
    bos = LAYOUT.bos_token_id
    result = likelihood_probe_ids(model, [[bos] + [1] * 12], [[bos, 12]], LAYOUT.pad_token_id, names=["long"])
    assert result["accuracy"] == 0.0 and result["normalized_accuracy"] == 1.0
    assert result["per_pair"][0]["pair"] == "long" and result["per_pair"][0]["good_ids"] == 12
    with pytest.raises(ValueError, match="2 good and 1 bad"):
        likelihood_probe_ids(model, [[bos, 1], [bos, 2]], [[bos, 3]], LAYOUT.pad_token_id)


def _write(path, seconds, seed, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate)), rate)
    return path


def test_audio_pairs_from_a_folder_and_a_dataset_score_as_their_ids(tmp_path, tiny_tokenizer):
    folder = tmp_path / "pairs"
    for index, name in enumerate(["a", "b"]):
        _write(folder / "good" / f"{name}.wav", 0.3, seed=index)
        _write(folder / "bad" / f"{name}.wav", 0.3, seed=10 + index)
    pairs = read_pair_folder(folder)
    assert [p.name for p in pairs] == ["a", "b"]
    rows = {"good": [{"array": p.good.reshape(-1).tolist(), "sampling_rate": 16000} for p in pairs],  # arrays
            "bad": [str(folder / "bad" / "a.wav"), str(folder / "bad" / "b.wav")]}  # paths
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "ds"))
    from_dataset = read_pair_dataset(tmp_path / "ds")
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=tiny_tokenizer.vocab_size, n_embd=16, n_layer=1, n_head=2,
                                    n_positions=256)).eval()
    names, good, bad = pair_ids(pairs, tiny_tokenizer, batch_size=3)
    assert good[0] == tiny_tokenizer(pairs[0].good.reshape(-1), sampling_rate=16000)["input_ids"]
    expected = likelihood_probe_ids(lm, good, bad, tiny_tokenizer.pad_token_id, names)
    for source in (pairs, from_dataset):
        result = likelihood_probe_audio(lm, source, tiny_tokenizer)
        assert [r["good_log_likelihood"] for r in result["per_pair"]] == pytest.approx(
            [r["good_log_likelihood"] for r in expected["per_pair"]], abs=1e-4)
        assert [r["bad_log_likelihood"] for r in result["per_pair"]] == pytest.approx(
            [r["bad_log_likelihood"] for r in expected["per_pair"]], abs=1e-4)
    _write(folder / "good" / "lonely.wav", 0.3, seed=5)
    with pytest.raises(ValueError, match="1 clip\\(s\\) .* no twin.*lonely"):
        read_pair_folder(folder)


# ---------------------------------------------------------------------------------------------- a trained run
def _run_recipe(tmp_path, semantic, acoustic):
    recipe = {
        "model": {"architecture": "gpt2", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                  "max_position_embeddings": 64, "dropout": 0.0},
        "data": {"synthetic": {"num_clips": 24, "frames": 20, "semantic_vocab_size": semantic,
                               "acoustic_vocab_size": acoustic},
                 "block_size": 32, "eval_fraction": 0.1},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 4, "global_batch_size": 4,
                  "learning_rate": 3e-3, "warmup_steps": 1, "eval_every": 2, "save_every": 2, "log_every": 1,
                  "keep_checkpoints": 5, "log_with": []},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A 4-step run of a tiny LM on a synthetic corpus in the tiny codec's layout: checkpoints at steps 2 and 4,
    then final/ (the trainer logged eval/loss at both steps)."""
    folder = tmp_path_factory.mktemp("lm_eval_run")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_main(["--config", str(_run_recipe(folder, *TINY_LAYOUT))])
    finally:
        torch.set_num_threads(previous)
    return folder / "run"


def _logged_eval_losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row["eval/loss"] for row in rows if "eval/loss" in row}


def test_checkpoints_load_and_score_the_trainers_held_out_loss(trained_run):
    paths = expand_lm_paths([trained_run])
    assert [p.name for p in paths] == ["step_00000002", "step_00000004", "final"]
    logged = _logged_eval_losses(trained_run)
    scores = {}
    for path in paths:
        lm = load_lm(path)
        _, blocks, tokenizer = corpus_for(lm.recipe)
        scores[lm.name] = heldout_loss(lm.model, blocks, tokenizer.layout, lm.recipe.data.block_size, batch_size=3)
        assert lm.step == (4 if path.name == "final" else int(path.name.split("_")[1]))
    assert scores["run/step_00000002"]["eval/loss"] == pytest.approx(logged[2], rel=1e-6)
    assert scores["run/step_00000004"]["eval/loss"] == pytest.approx(logged[4], rel=1e-6)
    assert scores["run/final"] == pytest.approx(scores["run/step_00000004"], rel=1e-6)  # the same weights
    assert scores["run/step_00000002"]["eval/loss"] != pytest.approx(logged[4], rel=1e-6)
    with pytest.raises(ValueError, match="neither an LM folder"):
        expand_lm_paths([trained_run / "metrics.jsonl"])


def test_clips_of_blocks_give_back_the_held_out_clips(trained_run):
    lm = load_lm(trained_run / "final")
    _, blocks, tokenizer = corpus_for(lm.recipe)
    clips = clips_of_blocks(blocks, tokenizer.layout)
    assert len(clips) == 2  # 10 % of 24 clips
    for clip in clips:
        assert clip[0] == tokenizer.bos_token_id and clip[-1] == tokenizer.eos_token_id and len(clip) == 42
        assert tokenizer.decode_ids(clip).shape == (2, 20)


def test_clips_of_blocks_join_blocks_and_drop_unfinished_clips():
    bos, eos, pad = LAYOUT.bos_token_id, LAYOUT.eos_token_id, LAYOUT.pad_token_id
    blocks = [[bos, 1, 17], [2, 18, eos, pad], [bos, 4, bos, 5, 21, eos], [bos, 6]]
    assert clips_of_blocks(blocks, LAYOUT) == [[bos, 1, 17, 2, 18, eos], [bos, 5, 21, eos]]


def _clips(rng, count, frames):
    bos, eos = LAYOUT.bos_token_id, LAYOUT.eos_token_id
    clips = []
    for _ in range(count):
        codes = np.stack([rng.integers(0, 16, frames), rng.integers(0, 16, frames)])
        clips.append([bos, *np.stack([codes[0], codes[1] + 16], axis=1).reshape(-1).tolist(), eos])
    return clips


@pytest.mark.parametrize("pattern", ["interleaved", "semantic_only"])
def test_eos_fraction_and_length_follow_the_lm(pattern):
    """An LM that always wants <eos> stops right after the prompt; one that never does writes exactly the real
    continuation's length. Prompts keep their ids and every sequence decodes."""
    tokenizer = SemantiCodecAudioTokenizer(layout=LAYOUT, pattern=pattern)
    clips = _clips(np.random.default_rng(0), 5, 12)
    if pattern == "semantic_only":
        clips = [[i for i in clip if i < 16 or i >= 32] for clip in clips]
    stopper = fixed_score_lm(LAYOUT, _preference(LAYOUT, eos=30.0), positions=64)
    stopped = generate_continuations(stopper, tokenizer, clips, num_prompts=3, prompt_frames=4, batch_size=2)
    assert stopped["prompts_used"] == 3
    assert stopped["model"]["eos_fraction"] == 1.0 and stopped["model"]["mean_length"] == 0.0
    assert stopped["model"]["entropy_bits"] is None
    runner = fixed_score_lm(LAYOUT, _preference(LAYOUT, eos=-30.0), positions=64)
    ran = generate_continuations(runner, tokenizer, clips, num_prompts=3, prompt_frames=4, batch_size=2)
    assert ran["model"]["eos_fraction"] == 0.0 and ran["model"]["mean_length"] == 8.0
    assert ran["reference"]["mean_length"] == 8.0 and ran["reference"]["eos_fraction"] == 1.0
    real = [tokenizer.decode_ids(clip)[0, 4:].tolist() for clip in clips[:3]]
    assert ran["reference"]["distinct_1"] == pytest.approx(distinct_n(real, 1))
    for clip, sequence in zip(clips, ran["sequences"]):
        codes = tokenizer.decode_ids(sequence)
        assert codes.shape[1] == 12 and torch.equal(codes[:, :4], tokenizer.decode_ids(clip)[:, :4])
        assert set(codes[0, 4:].tolist()) <= set(FAVOURED)  # what the LM prefers, not the real ids
    with pytest.raises(ValueError, match="None of the 5 held-out clips is longer than its prompt"):
        generate_continuations(runner, tokenizer, clips, prompt_frames=12)


# ---------------------------------------------------------------------------------------------- generative ppl
def _tiny_text_lm(folder):
    """A random character-level GPT-2 and its tokenizer, saved to `folder`."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate("abcdefgh |'")}
    vocab.update({"<unk>": len(vocab), "<s>": len(vocab) + 1})
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>", bos_token="<s>", eos_token="<s>")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_embd=16, n_layer=1, n_head=2, n_positions=512,
                               bos_token_id=vocab["<s>"], eos_token_id=vocab["<s>"])).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _tiny_asr(folder):
    """A random wav2vec2 CTC model with a letter vocabulary, its tokenizer and feature extractor: a complete
    transformers automatic-speech-recognition pipeline that loads from `folder` with no network."""
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, "<unk>": 1, "|": 2, **{c: i + 3 for i, c in enumerate("abcdefgh")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                         word_delimiter_token="|").save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    torch.manual_seed(0)
    config = Wav2Vec2Config(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8),
                            num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, pad_token_id=0)
    Wav2Vec2ForCTC(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def speech_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speech_models")
    return _tiny_asr(folder / "asr"), _tiny_text_lm(folder / "text")


def test_generative_perplexity_with_a_local_asr_pipeline_and_text_lm(tiny_tokenizer, speech_models):
    asr, text = speech_models
    layout = tiny_tokenizer.layout
    tokenizer = SemantiCodecAudioTokenizer(layout=layout)
    clips = [tiny_tokenizer(0.1 * np.random.default_rng(s).standard_normal(4800).astype(np.float32),
                            sampling_rate=16000)["input_ids"] for s in range(2)]
    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=layout.vocab_size, n_embd=16, n_layer=1, n_head=2,
                                    n_positions=128)).eval()
    continued = generate_continuations(lm, tokenizer, clips, num_prompts=2)
    waves = decode_sequences(tiny_tokenizer, continued["sequences"], num_inference_steps=5)
    assert len(waves) == 2 and all(w.ndim == 1 and w.numel() > 0 for w in waves)
    result = generative_perplexity(waves, tiny_tokenizer.sampling_rate, asr, text)
    assert len(result["transcripts"]) == 2 and all(isinstance(t, str) for t in result["transcripts"])
    assert result["scored"] >= 1 and math.isfinite(result["gen_perplexity"]) and result["gen_perplexity"] > 1.0


def test_text_perplexity_of_stub_transcripts_is_the_text_lms_own(speech_models):
    """A callable transcriber is used as is; empty transcripts are not scored; the number is the text LM's
    exp(mean token loss) with the bos token as context."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, text = speech_models
    stub = iter(["abc", "   ", "h a"])
    result = generative_perplexity([np.zeros(160)] * 3, 16000, lambda audio: {"text": next(stub)}, text)
    assert result["transcripts"] == ["abc", "   ", "h a"] and result["scored"] == 2
    model, tokenizer = AutoModelForCausalLM.from_pretrained(text), AutoTokenizer.from_pretrained(text)
    losses, count = 0.0, 0
    for sentence in ("abc", "h a"):
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(sentence, add_special_tokens=False)["input_ids"]]])
        with torch.no_grad():
            losses += float(model(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    assert result["gen_perplexity"] == pytest.approx(math.exp(losses / count), rel=1e-4)
    assert text_perplexity(["", " "], text) == (None, 0)


# ---------------------------------------------------------------------------------------------- the recipe
def test_recipe_writes_one_row_per_checkpoint_with_probes_and_a_reference_row(trained_run, tmp_path, capsys):
    evaluate_lm = import_recipe("evaluate_lm")
    pairs = tmp_path / "pairs"
    for index in range(2):
        _write(pairs / "good" / f"p{index}.wav", 0.25, seed=index)
        _write(pairs / "bad" / f"p{index}.wav", 0.25, seed=index)  # identical twins: chance by construction
    out = tmp_path / "report"
    result = evaluate_lm.main([str(trained_run), "--output", str(out), "--pairs", str(pairs), "--tiny",
                               "--num-prompts", "2", "--batch-size", "2", "--threads", "1"])
    err = capsys.readouterr().err
    assert "checkpoints: 100%" in err and "probe pairs" in err and "continuations" in err
    with open(out / "lm_eval.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["name"], r["kind"], r["step"]) for r in rows] == [
        ("run/step_00000002", "model", "2"), ("run/step_00000004", "model", "4"), ("run/final", "model", "4"),
        ("real continuations (held-out synthetic corpus)", "reference", "")]
    logged = _logged_eval_losses(trained_run)
    assert float(rows[0]["eval_loss"]) == pytest.approx(logged[2]) and float(rows[1]["eval_loss"]) == pytest.approx(
        logged[4])
    assert all(float(r["probe_accuracy"]) == 0.5 for r in rows[:3])
    assert all(r["probe_accuracy"] == "" and r["eval_loss"] == "" for r in rows[3:])
    assert all(0.0 <= float(r["distinct_1"]) <= 1.0 and r["auto_bleu"] != "" for r in rows)
    assert float(rows[3]["eos_fraction"]) == 1.0 and float(rows[3]["mean_length"]) == 10.0
    markdown = (out / "lm_eval.md").read_text()
    assert markdown.count("\n| run/") == 3 and "| real continuations" in markdown
    assert (out / "lm_eval.png").stat().st_size > 10_000 and (out / "lm_eval.png").read_bytes()[:4] == b"\x89PNG"
    with open(out / "probe_pairs.csv") as handle:
        assert len(list(csv.DictReader(handle))) == 6  # 2 pairs x 3 checkpoints
    assert result["written"]["plot"] == str(out / "lm_eval.png")

    quiet = tmp_path / "quiet"
    evaluate_lm.main([str(trained_run / "final"), "--output", str(quiet), "--num-prompts", "1", "--quiet",
                      "--no-plot", "--threads", "1"])
    captured = capsys.readouterr()
    assert "checkpoints:" not in captured.err and "continuations" not in captured.err
    assert "it/s" not in captured.err and "written:" not in captured.err  # nor transformers' loading bar
    assert "| run/final | model | 4 |" in captured.out  # the report itself still prints
    assert not (quiet / "lm_eval.png").exists() and (quiet / "lm_eval.csv").is_file()


def test_recipe_on_a_saved_lm_without_recipe_uses_held_out_data_given_with_data(tmp_path, capsys):
    """--data (a tokenize_dataset.py output: dataset/ + tokenizer/) is the held-out set of an LM folder that
    records no training recipe; without it that LM gets no loss and no continuations, and says why."""
    from semanticodec_hf.lm.data import synthetic_corpus

    layout = SemantiCodecVocabularyLayout(*TINY_LAYOUT)
    data = tmp_path / "tokens"
    datasets.Dataset.from_dict({"input_ids": synthetic_corpus(layout, "interleaved", 3, 20, seed=1)}).save_to_disk(
        str(data / "dataset"))
    SemantiCodecAudioTokenizer(layout=layout).save_pretrained(data / "tokenizer", save_codec=False)
    torch.manual_seed(0)
    lm_dir = tmp_path / "plain_lm"
    GPT2LMHeadModel(GPT2Config(vocab_size=layout.vocab_size, n_embd=16, n_layer=1, n_head=2,
                               n_positions=64)).save_pretrained(lm_dir)
    SemantiCodecAudioTokenizer(layout=layout).save_pretrained(lm_dir, save_codec=False)
    evaluate_lm = import_recipe("evaluate_lm")
    result = evaluate_lm.main([str(lm_dir), "--output", str(tmp_path / "r"), "--data", str(data), "--num-prompts",
                               "3", "--quiet", "--no-plot"])
    model, reference = result["rows"]
    assert model["name"] == "plain_lm" and model["step"] is None and model["prompts"] == 3
    assert math.isfinite(model["eval_loss"]) and model["eval_loss"] > 4.0  # a random LM: about ln(196) = 5.3
    assert reference["name"] == f"real continuations (--data {data})" and reference["mean_length"] == 10.0
    bare = evaluate_lm.main([str(lm_dir), "--output", str(tmp_path / "r2"), "--quiet", "--no-plot"])
    assert set(bare["rows"][0]) == {"name", "kind", "step"}
    assert "records no training recipe; give --data" in capsys.readouterr().err


def test_recipe_generative_perplexity_and_argument_errors(trained_run, tmp_path, speech_models, capsys):
    evaluate_lm = import_recipe("evaluate_lm")
    asr, text = speech_models
    out = tmp_path / "gen"
    evaluate_lm.main([str(trained_run / "final"), "--output", str(out), "--tiny", "--num-prompts", "2",
                      "--asr", str(asr), "--text-lm", str(text), "--steps", "5", "--quiet", "--no-plot"])
    with open(out / "lm_eval.csv") as handle:
        row = next(csv.DictReader(handle))
    assert math.isfinite(float(row["gen_perplexity"]))
    assert len(json.loads((out / "transcripts.json").read_text())["run/final"]) == 2
    with pytest.raises(SystemExit):
        evaluate_lm.main([str(trained_run), "--output", str(out), "--asr", str(asr)])
    assert "--asr and --text-lm go together" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="neither an LM folder"):
        evaluate_lm.main([str(tmp_path), "--output", str(out)])
    with pytest.raises(SystemExit) as done:
        evaluate_lm.main(["--help"])
    assert done.value.code == 0 and "--threads N" in capsys.readouterr().out


def test_continuation_sampling_settings_are_checked_as_continue_checks_them():
    from semanticodec_hf.lm.evaluate import generate_continuations

    for settings, message in (({"temperature": 0.0}, "--temperature must be > 0"),
                              ({"top_p": 1.5}, r"--top-p must be in \(0, 1\]"),
                              ({"top_k": -1}, "--top-k must be a non-negative integer")):
        with pytest.raises(ValueError, match=message):
            generate_continuations(None, None, [], **settings)
