"""A text LM continued on audio with its text vocabulary kept (`model.keep_text_vocab: true`): text rows kept bit
for bit and audio rows appended, the corpus written as joint text+audio sequences (optionally with a text
column), training that runs and resumes exactly, a saved folder that `AutoTokenizer` loads, and generation whose
audio spans always decode. Text LMs and tokenizers are built here (recipes/make_tiny_text_lm.py): no network."""

import json
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from recipe_modules import import_recipe
from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout, codes_to_ids
from semanticodec_hf.joint_vocabulary import AudioSpan, TextSpan
from semanticodec_hf.lm.config import LMRecipe, ModelRecipe, recipe_from_dict
from semanticodec_hf.lm.joint_corpus import JointAudioTextTokenizer, is_joint_folder
from semanticodec_hf.lm.joint_generation import JointAudioContinuation, JointPatternLogitsProcessor
from semanticodec_hf.lm.modeling import build_model, token_losses
from semanticodec_hf.lm.train import load_corpus, main
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer
from semanticodec_hf.training_utils import checkpoints

pytestmark = pytest.mark.usefixtures("one_thread")
make_tiny_text_lm = import_recipe("make_tiny_text_lm").make_tiny_text_lm
LAYOUT = SemantiCodecVocabularyLayout(16, 16)  # the synthetic corpus of the recipes below
VOCABULARY = {"gpt2": ("transformer.wte.weight", "lm_head.weight"),
              "llama": ("model.embed_tokens.weight", "lm_head.weight")}


def _joint(layout=LAYOUT, pattern="interleaved"):
    text = import_recipe("make_tiny_text_lm").build_text_tokenizer()
    return JointAudioTextTokenizer(text, SemantiCodecAudioTokenizer(layout=layout, pattern=pattern))


def _recipe(tmp_path, source, **data):
    recipe = {"model": {"init_from": str(source), "keep_text_vocab": True},
              "data": {"synthetic": {"num_clips": 24, "frames": 20, "semantic_vocab_size": 16,
                                     "acoustic_vocab_size": 16}, "block_size": 64, "eval_fraction": 0.1, **data},
              "train": {"output_dir": str(tmp_path / "run"), "max_steps": 6, "global_batch_size": 4,
                        "learning_rate": 3e-3, "warmup_steps": 2, "eval_every": 3, "save_every": 3, "log_every": 1,
                        "log_with": []}}
    path = tmp_path / "joint.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


# ------------------------------------------------------------------------------------------------ the weights
@pytest.mark.parametrize("architecture,extra_rows", [("gpt2", 0), ("llama", 0), ("gpt2", 100)])
def test_text_rows_are_kept_and_audio_rows_appended(tmp_path, architecture, extra_rows):
    source_dir = make_tiny_text_lm(tmp_path / "text", architecture, extra_rows=extra_rows)
    source = AutoModelForCausalLM.from_pretrained(source_dir).state_dict()
    joint = JointAudioTextTokenizer.extend(source_dir, SemantiCodecAudioTokenizer(layout=LAYOUT))
    text_size = joint.layout.semantic_offset
    assert text_size == 400 and joint.layout.vocab_size == 400 + LAYOUT.special_offset + 2
    torch.manual_seed(0)
    model = build_model(ModelRecipe(init_from=str(source_dir), keep_text_vocab=True), joint.layout)
    weights = model.state_dict()
    assert weights.keys() == source.keys()
    rows = max(joint.layout.vocab_size, 400 + extra_rows)  # a padded vocabulary that fits keeps its size
    for name in source:
        if name in VOCABULARY[architecture]:
            assert weights[name].shape == (rows, 32), name
            assert torch.equal(weights[name][:text_size], source[name][:text_size]), name  # text rows: bit for bit
            audio = weights[name][text_size: joint.layout.vocab_size]
            if extra_rows:  # the padding rows the audio ids took over were drawn afresh, not kept
                assert not torch.equal(audio, source[name][text_size: joint.layout.vocab_size]), name
            assert 0.005 < audio.std() < 0.05, name  # fresh N(0, 0.02) rows
        else:
            assert torch.equal(weights[name], source[name]), name
    assert model.config.eos_token_id == joint.layout.eos_token_id  # the text LM's specials stay


def test_a_tokenizer_of_another_model_is_refused(tmp_path):
    source_dir = make_tiny_text_lm(tmp_path / "text")
    model = AutoModelForCausalLM.from_pretrained(source_dir)
    model.resize_token_embeddings(100)
    model.save_pretrained(tmp_path / "small")
    joint = JointAudioTextTokenizer.extend(source_dir, SemantiCodecAudioTokenizer(layout=LAYOUT))
    with pytest.raises(ValueError, match="has 100 embedding rows but its tokenizer 400 tokens"):
        build_model(ModelRecipe(init_from=str(tmp_path / "small"), keep_text_vocab=True), joint.layout)


# ------------------------------------------------------------------------------------------------ the corpus
@pytest.mark.parametrize("pattern", ["interleaved", "semantic_only"])
def test_a_clip_becomes_text_and_one_decodable_audio_span(pattern):
    joint = _joint(pattern=pattern)
    rng = np.random.default_rng(0)
    codes = torch.from_numpy(np.stack([rng.integers(0, 16, 9), rng.integers(0, 16, 9)]))
    clip = [LAYOUT.bos_token_id, *codes_to_ids(codes, LAYOUT, pattern).tolist(), LAYOUT.eos_token_id]
    text = "listen to this clip"
    words = joint.text_tokenizer(text, add_special_tokens=False).input_ids
    before = joint.clip_to_joint(clip, text)
    after = joint.clip_to_joint(clip, text, text_position="after")
    layout = joint.layout
    assert before[0] == layout.bos_token_id and before[-1] == layout.eos_token_id
    assert before[1:1 + len(words)] == words and after[-1 - len(words):-1] == words
    for ids in (before, after):
        spans = joint.joint.split(ids[1:-1])
        audio = [s for s in spans if isinstance(s, AudioSpan)]
        assert [type(s) for s in spans].count(TextSpan) == 1 and len(audio) == 1
        rows = 1 if pattern == "semantic_only" else 2
        assert torch.equal(audio[0].codes, codes[:rows])
    assert joint.text_tokenizer.decode(words) == text  # text ids are the text tokenizer's own
    with pytest.raises(ValueError, match=r"Clip holds id 35 inside its audio \(special token <sep>"):
        joint.clip_to_joint([LAYOUT.bos_token_id, 1, 17, LAYOUT.sep_token_id, LAYOUT.eos_token_id])


def test_losses_are_reported_per_stream_with_text_apart():
    joint = _joint()
    layout = joint.layout
    labels = torch.tensor([[layout.bos_token_id, 5, 6, layout.audio_start_id, layout.semantic_offset + 3,
                            layout.acoustic_offset + 2, layout.audio_end_id, layout.eos_token_id]])
    logits = torch.zeros(1, labels.shape[1], layout.vocab_size)
    losses = token_losses(logits, labels, layout)
    # targets are labels[1:]: text 5, 6, </s>; markers start, end; one semantic; one acoustic
    assert [int(losses[f"{s}_tokens"]) for s in ("text", "special", "semantic", "acoustic")] == [3, 2, 1, 1]


def _tokenized_corpus(tmp_path, texts):
    """A tokenize_dataset.py-shaped folder: dataset/ (input_ids + a text column) and tokenizer/."""
    rng = np.random.default_rng(1)
    clips = []
    for _ in texts:
        codes = np.stack([rng.integers(0, 16, 12), rng.integers(0, 16, 12)])
        clips.append([LAYOUT.bos_token_id, *codes_to_ids(codes, LAYOUT, "interleaved").tolist(), LAYOUT.eos_token_id])
    datasets.Dataset.from_dict({"input_ids": clips, "text": texts}).save_to_disk(str(tmp_path / "tokens" / "dataset"))
    SemantiCodecAudioTokenizer(layout=LAYOUT).save_pretrained(tmp_path / "tokens" / "tokenizer", save_codec=False)
    return clips


def test_a_text_column_goes_before_or_after_each_clips_audio(tmp_path):
    source_dir = make_tiny_text_lm(tmp_path / "text")
    texts = [f"a dog barks {i} times" for i in range(8)]
    clips = _tokenized_corpus(tmp_path, texts)
    base = {"model": {"init_from": str(source_dir), "keep_text_vocab": True},
            "data": {"tokenized_dir": str(tmp_path / "tokens"), "text_column": "text", "block_size": 64,
                     "packing": False, "eval_fraction": 0.0}}
    for position in ("before", "after"):
        base["data"]["text_position"] = position
        train_blocks, _, tokenizer = load_corpus(recipe_from_dict(base))
        rows = train_blocks.take(range(len(train_blocks)))
        expected = [tokenizer.clip_to_joint(c, t, position) for c, t in zip(clips, texts)]
        assert rows == expected  # one clip per block (no packing), text where asked
        words = tokenizer.text_ids(texts[0])
        assert (rows[0][1:1 + len(words)] if position == "before" else rows[0][-1 - len(words):-1]) == words
    base["data"]["text_column"] = "caption"
    with pytest.raises(ValueError, match=r"data.text_column 'caption' is not a column of .* \(it has \['input_ids', 'text'\]\)"):
        load_corpus(recipe_from_dict(base))


def test_recipe_rules_for_the_kept_vocabulary(tmp_path):
    source = str(make_tiny_text_lm(tmp_path / "text"))
    synthetic = {"synthetic": {"num_clips": 4}}
    with pytest.raises(ValueError, match="data.text_column .* needs model.keep_text_vocab: true"):
        recipe_from_dict({"model": {"init_from": source}, "data": {"tokenized_dir": "x", "text_column": "text"}})
    with pytest.raises(ValueError, match="a synthetic corpus has no text"):
        recipe_from_dict({"model": {"init_from": source, "keep_text_vocab": True},
                          "data": {**synthetic, "text_column": "text"}})
    with pytest.raises(ValueError, match="data.text_position must be one of"):
        recipe_from_dict({"model": {}, "data": {**synthetic, "text_position": "middle"}})
    with pytest.raises(ValueError, match="keep_text_vocab with data.acoustic_bpe is not supported"):
        recipe_from_dict({"model": {"init_from": source, "keep_text_vocab": True},
                          "data": {**synthetic, "acoustic_bpe": "bpe"}})
    with pytest.raises(ValueError, match="model.text_tokenizer only applies with model.keep_text_vocab"):
        recipe_from_dict({"model": {"init_from": source, "text_tokenizer": source}, "data": synthetic})
    # new keys are stored only when set: the recipes of older checkpoints compare equal
    stored = LMRecipe().to_dict()
    assert "text_column" not in stored["data"] and "text_position" not in stored["data"]
    assert "text_tokenizer" not in stored["model"]
    # a text LM folder without its tokenizer: the error says where to point
    AutoModelForCausalLM.from_pretrained(source).save_pretrained(tmp_path / "bare")
    recipe = recipe_from_dict({"model": {"init_from": str(tmp_path / "bare"), "keep_text_vocab": True},
                               "data": synthetic})
    with pytest.raises(ValueError, match="needs the text LM's tokenizer, .*model.text_tokenizer"):
        load_corpus(recipe)
    recipe.model.text_tokenizer = source
    assert load_corpus(recipe)[2].layout.semantic_offset == 400


# ------------------------------------------------------------------------------------------------ training
def test_joint_run_trains_resumes_exactly_and_saves_a_loadable_folder(tmp_path):
    source_dir = make_tiny_text_lm(tmp_path / "text")
    config = _recipe(tmp_path, source_dir)
    straight = main(["--config", str(config), "--output-dir", str(tmp_path / "straight")])
    assert straight["steps"] == 6 and straight["train/loss"] < np.log(434)  # ln(vocab) for a model that knows nothing
    step_3 = dict(checkpoints(tmp_path / "straight"))[3]
    resumed = main(["--config", str(config), "--output-dir", str(tmp_path / "resumed"), "--resume", str(step_3)])
    assert resumed["resumed_from"] == 3
    final = tmp_path / "straight" / "final"
    a = AutoModelForCausalLM.from_pretrained(final).state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "resumed" / "final").state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert is_joint_folder(final) and not is_joint_folder(tmp_path / "text")
    assert a["transformer.wte.weight"].shape[0] == 434
    # the folder's tokenizer is the extended text tokenizer, for AutoTokenizer in a fresh process
    script = ("from transformers import AutoTokenizer; t = AutoTokenizer.from_pretrained(%r); "
              "print(len(t), t.convert_tokens_to_ids('<|s_3|>'), t('hello world').input_ids[:2])" % str(final))
    printed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    loaded = JointAudioTextTokenizer.from_pretrained(final)
    assert printed.split()[:2] == ["434", str(loaded.layout.semantic_offset + 3)]
    assert loaded.layout == _joint().layout and loaded.pattern == "interleaved"
    assert loaded.audio_layout == LAYOUT


def test_a_joint_lm_learns_the_synthetic_audio(tmp_path):
    """Signal: a short warm-started run learns the corpus (ln 434 = 6.07 per id for a model that knows nothing)
    and the acoustic rule on held-out clips (better than uniform over the 16 acoustic ids, ln 16 = 2.77, which
    a model that had not told the streams apart could not reach); the text stream (bos/eos here) is scored apart."""
    source_dir = make_tiny_text_lm(tmp_path / "text")
    config = _recipe(tmp_path, source_dir)
    main(["--config", str(config), "--set", "train.max_steps=300", "train.eval_every=300", "train.save_every=300",
          "train.learning_rate=0.01", "train.warmup_steps=20", "data.synthetic.num_clips=48"])
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = [m for m in metrics if "eval/loss" in m][-1]
    assert final["eval/acoustic_loss"] < 2.0 and "eval/text_loss" in final, final
    assert [m["train/loss"] for m in metrics if "train/loss" in m][-1] < 1.5


# ------------------------------------------------------------------------------------------------ generation
def _random_joint_lm(tmp_path, joint):
    source_dir = make_tiny_text_lm(tmp_path / "text")
    torch.manual_seed(0)
    return build_model(ModelRecipe(init_from=str(source_dir), keep_text_vocab=True), joint.layout).eval()


def test_generated_audio_spans_always_decode(tmp_path):
    """A random LM sampled hot writes text ids too; inside the audio span the processor allows only the right
    stream, and closes the span after exactly the asked frames."""
    joint = _joint()
    lm = _random_joint_lm(tmp_path, joint)
    engine = JointAudioContinuation(lm, joint)
    rng = np.random.default_rng(0)
    prompts = [torch.from_numpy(np.stack([rng.integers(0, 16, n), rng.integers(0, 16, n)])) for n in (3, 5)]
    for seed in range(3):
        out = engine.generate_codes(prompts + [None], target_frames=9, texts=[None, "hello", "a dog barks"],
                                    seed=seed, temperature=3.0)
        for row, codes in enumerate(out["codes"]):
            assert codes.shape == (2, 9)
            if row < 2:
                assert torch.equal(codes[:, : prompts[row].shape[1]], prompts[row])
        assert (out["ids"] == joint.layout.audio_end_id).sum(dim=1).tolist() == [1, 1, 1]
    greedy = [engine.generate_codes(prompts, 8, greedy=True)["codes"] for _ in range(2)]
    assert all(torch.equal(x, y) for x, y in zip(*greedy))
    beams = engine.generate_codes(prompts, 8, num_beams=3)["codes"]
    assert [c.shape for c in beams] == [(2, 8), (2, 8)]


def test_the_processor_is_the_audio_engine_on_translated_ids():
    joint = _joint()
    layout = joint.layout
    processor = JointPatternLogitsProcessor(joint, target_frames=[2])
    ids = torch.tensor([[layout.bos_token_id, 7, layout.audio_start_id, layout.semantic_offset + 4]])
    allowed = torch.isfinite(processor(ids, torch.zeros(1, layout.vocab_size)))[0]
    assert allowed.nonzero().flatten().tolist() == list(range(layout.acoustic_offset, layout.special_offset))
    ids = torch.cat([ids, torch.tensor([[layout.acoustic_offset + 1, layout.semantic_offset + 2,
                                         layout.acoustic_offset + 3]])], dim=1)
    allowed = torch.isfinite(processor(ids, torch.zeros(1, layout.vocab_size)))[0]
    assert allowed.nonzero().flatten().tolist() == [layout.audio_end_id]  # two frames: the span must close


def test_continue_audio_from_an_audio_or_a_text_prompt(tmp_path, tiny_tokenizer):
    text = import_recipe("make_tiny_text_lm").build_text_tokenizer()
    joint = JointAudioTextTokenizer(text, SemantiCodecAudioTokenizer(layout=tiny_tokenizer.layout))
    lm = _random_joint_lm(tmp_path, joint)
    joint.audio_tokenizer = tiny_tokenizer
    engine = JointAudioContinuation(lm, joint)
    rate = 16000
    prompt = (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(0.4 * rate)) / rate)).astype(np.float32)
    out = engine.continue_audio([prompt], rate, seconds=0.8, num_inference_steps=2, temperature=1.5)
    assert out["audio"][0].shape[-1] == int(0.8 * rate)
    assert torch.isfinite(out["audio"][0]).all() and out["audio"][0].abs().max() > 0
    prompt_codes = tiny_tokenizer.encode_audio([prompt], rate)[0]
    assert torch.equal(out["codes"][0][:, : prompt_codes.shape[1]], prompt_codes)
    spoken = engine.continue_audio(None, rate, seconds=0.5, texts=["a dog barks"], num_inference_steps=2)
    assert spoken["audio"][0].shape[-1] == int(0.5 * rate)
    with pytest.raises(ValueError, match="Give audio prompts, texts, or both"):
        engine.continue_audio(None, rate, seconds=0.5)


def test_the_evaluation_suite_refuses_a_joint_lm_by_name(tmp_path):
    from semanticodec_hf.lm.evaluate import load_lm

    source_dir = make_tiny_text_lm(tmp_path / "text")
    main(["--config", str(_recipe(tmp_path, source_dir)), "--set", "train.max_steps=3"])
    for path in (tmp_path / "run" / "final", dict(checkpoints(tmp_path / "run"))[3]):
        with pytest.raises(ValueError, match="keep_text_vocab: true .* scores audio-only LMs"):
            load_lm(path)


def test_the_readme_commands_run_as_written(tmp_path, monkeypatch):
    """`python recipes/make_tiny_text_lm.py runs/tiny-text-lm` then `lm/train.py --config
    recipes/lm_joint_tiny_cpu.yaml` (shortened here by --set) from a fresh working directory."""
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(tmp_path)
    import_recipe("make_tiny_text_lm").main(["runs/tiny-text-lm"])
    summary = main(["--config", str(repo / "recipes" / "lm_joint_tiny_cpu.yaml"), "--set", "train.max_steps=3",
                    "train.eval_every=3", "train.save_every=3", "data.synthetic.num_clips=40", "train.log_with=[]"])
    assert summary["steps"] == 3
    final = tmp_path / "runs" / "lm-joint-tiny-cpu" / "final"
    assert is_joint_folder(final)
    assert JointAudioTextTokenizer.from_pretrained(final).audio_layout == SemantiCodecVocabularyLayout(64, 128)


def test_the_acoustic_stage_refuses_a_joint_lm_by_name(tmp_path):
    """(`continue` takes a joint LM: tests/test_joint_continue_cli.py.)"""
    source_dir = make_tiny_text_lm(tmp_path / "text")
    main(["--config", str(_recipe(tmp_path, source_dir)), "--set", "train.max_steps=2"])
    from semanticodec_hf.lm.acoustic_stage import AcousticStage

    with pytest.raises(ValueError, match="is a text\\+audio LM .* the acoustic stage is an audio-only LM"):
        AcousticStage.from_pretrained(tmp_path / "run" / "final")
