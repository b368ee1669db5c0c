"""Warm start from a text LM (`model.init_from`): every weight but the vocabulary is kept, the vocabulary is the
audio one, and a warm-started run trains, resumes bit for bit and has its recipe checked like any other."""

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout
from semanticodec_hf.lm.config import LMRecipe, ModelRecipe, recipe_from_dict
from semanticodec_hf.lm.modeling import build_model
from semanticodec_hf.lm.train import main
from semanticodec_hf.training_utils import checkpoints
from test_lm_train import _recipe, _weights

pytestmark = pytest.mark.usefixtures("one_thread")
LAYOUT = SemantiCodecVocabularyLayout(16, 16)  # the layout of test_lm_train's synthetic corpus: 36 ids
# the vocabulary matrices of each architecture (GPT-2 ties its output to its input embedding)
VOCABULARY = {"gpt2": ("transformer.wte.weight", "lm_head.weight"), "llama": ("model.embed_tokens.weight",
                                                                           "lm_head.weight")}


def _text_lm(architecture, folder, seed=0):
    """A tiny RANDOM text LM (100-word vocabulary, 64 positions) saved to `folder`: no network."""
    torch.manual_seed(seed)
    if architecture == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=64,
                                           bos_token_id=98, eos_token_id=99))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=48,
                                             num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                             max_position_embeddings=64, tie_word_embeddings=False,
                                             bos_token_id=1, eos_token_id=2))
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_warm_start_keeps_every_weight_but_the_vocabulary(tmp_path, architecture):
    source_dir = _text_lm(architecture, tmp_path / "text")
    source = AutoModelForCausalLM.from_pretrained(source_dir).state_dict()
    torch.manual_seed(0)
    model = build_model(ModelRecipe(init_from=str(source_dir)), LAYOUT)
    weights = model.state_dict()
    assert weights.keys() == source.keys()
    vocabulary = VOCABULARY[architecture]
    for name in source:
        if name not in vocabulary:
            assert torch.equal(weights[name], source[name]), name  # bit for bit
    hidden = 32
    for name in vocabulary:
        assert weights[name].shape == (LAYOUT.vocab_size, hidden), name
        assert 0.005 < weights[name].std() < 0.05  # freshly drawn rows, N(0, 0.02), not zeros or old rows
    embedding, output = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert (embedding is output) == (architecture == "gpt2")  # GPT-2 stays tied, Llama stays untied
    for config in (model.config, model.generation_config):
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (
            LAYOUT.bos_token_id, LAYOUT.eos_token_id, LAYOUT.pad_token_id)
    assert model.config.vocab_size == LAYOUT.vocab_size
    logits = model(input_ids=torch.tensor([[LAYOUT.bos_token_id, 3, 20]])).logits
    assert logits.shape == (1, 3, LAYOUT.vocab_size)
    model.save_pretrained(tmp_path / "audio")  # what lm/generate.py loads back
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "audio")
    assert all(torch.equal(again.state_dict()[name], weights[name]) for name in weights)


def test_warm_start_recipe_checks(tmp_path):
    source_dir = str(_text_lm("gpt2", tmp_path / "text"))
    build_model(ModelRecipe(init_from=source_dir, hidden_size=32, num_layers=2), LAYOUT)  # matching: accepted
    with pytest.raises(ValueError, match=r"model\.hidden_size=64 but .* has 32; model\.num_heads=8 but .* has 2"):
        build_model(ModelRecipe(init_from=source_dir, hidden_size=64, num_heads=8), LAYOUT)
    with pytest.raises(ValueError, match=r"model\.architecture='llama' but .* has 'gpt2'"):
        build_model(ModelRecipe(init_from=source_dir, architecture="llama"), LAYOUT)
    # keep_text_vocab (tests/test_joint_training.py) is accepted with a source to keep the vocabulary of
    recipe_from_dict({"model": {"init_from": source_dir, "keep_text_vocab": True},
                      "data": {"synthetic": {"num_clips": 4}}})
    with pytest.raises(ValueError, match="keep_text_vocab only applies with model.init_from"):
        recipe_from_dict({"model": {"keep_text_vocab": True}, "data": {"synthetic": {"num_clips": 4}}})
    with pytest.raises(ValueError, match="model.init_from must be a folder or Hub id"):
        recipe_from_dict({"model": {"init_from": ""}, "data": {"synthetic": {"num_clips": 4}}})
    # block_size is checked against the loaded model's 64 positions, not the recipe's (ignored) default
    recipe_from_dict({"model": {"init_from": source_dir}, "data": {"synthetic": {}, "block_size": 128}})
    # the new keys appear in a stored recipe only when set: older checkpoints' recipes still compare equal
    assert "init_from" not in LMRecipe().to_dict()["model"] and "keep_text_vocab" not in LMRecipe().to_dict()["model"]
    assert recipe_from_dict({"model": {"init_from": source_dir}, "data": {"synthetic": {}}}).to_dict()["model"][
        "init_from"] == source_dir


def _warm_recipe(tmp_path, source_dir):
    """test_lm_train's tiny recipe with the architecture keys left out and `model.init_from` instead."""
    recipe = yaml.safe_load(_recipe(tmp_path).read_text())
    recipe["model"] = {"init_from": str(source_dir)}
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_warm_started_run_trains_and_resumes_exactly(tmp_path, architecture):
    source_dir = _text_lm(architecture, tmp_path / "text")
    config = _warm_recipe(tmp_path, source_dir)
    straight = main(["--config", str(config), "--output-dir", str(tmp_path / "straight")])
    assert straight["steps"] == 6 and straight["train/loss"] < 3.7  # it ran (ln 36 = 3.58 at the start)
    final = AutoModelForCausalLM.from_pretrained(tmp_path / "straight" / "final")
    assert final.config.vocab_size == LAYOUT.vocab_size and final.config.model_type == architecture
    step_3 = dict(checkpoints(tmp_path / "straight"))[3]
    resumed = main(["--config", str(config), "--output-dir", str(tmp_path / "resumed"), "--resume", str(step_3)])
    assert resumed["resumed_from"] == 3
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the stored recipe records the source: resuming from another one is refused like any recipe change
    other = _text_lm(architecture, tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match=r"model\.init_from: \".*text\" -> \".*other\""):
        main(["--config", str(config), "--output-dir", str(tmp_path / "straight"), "--set",
              f"model.init_from={other}"])
    # and the loaded model's positions bound the block size
    with pytest.raises(ValueError, match=r"data\.block_size \(128\) exceeds the 64 positions of model\.init_from"):
        main(["--config", str(config), "--output-dir", str(tmp_path / "long"), "--set", "data.block_size=128"])
