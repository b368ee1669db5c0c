"""Recipe files and `--set` overrides: numbers read as numbers, wrong types refused with the key's name."""

from pathlib import Path

import pytest

from semanticodec_hf.lm.config import load_recipe, load_yaml
from recipe_modules import import_recipe

REPO = Path(__file__).resolve().parent.parent


def test_exponent_floats_without_a_dot_are_floats():
    loaded = load_yaml("a: 1e-3\nb: 3.0e-4\nc: -2E+2\nd: 10\ne: 1e3x\nf: '1e-3'\ng: .5e1\nh: 1_000\n")
    assert loaded == {"a": 1e-3, "b": 3e-4, "c": -200.0, "d": 10, "e": "1e3x", "f": "1e-3", "g": 5.0, "h": 1000}
    assert isinstance(loaded["a"], float) and isinstance(loaded["d"], int)


def test_lm_recipe_overrides_take_exponent_floats_and_refuse_wrong_types():
    recipe = load_recipe(REPO / "recipes" / "lm_tiny_cpu.yaml", ["train.learning_rate=1e-3", "train.max_grad_norm=2"])
    assert recipe.train.learning_rate == 1e-3 and isinstance(recipe.train.max_grad_norm, float)
    with pytest.raises(ValueError, match=r"train\.learning_rate must be float, got 'fast'"):
        load_recipe(REPO / "recipes" / "lm_tiny_cpu.yaml", ["train.learning_rate=fast"])
    with pytest.raises(ValueError, match=r"train\.max_steps must be int, got 1\.5"):
        load_recipe(REPO / "recipes" / "lm_tiny_cpu.yaml", ["train.max_steps=1.5"])
    with pytest.raises(ValueError, match=r"data\.packing must be bool, got 'yes please'"):
        load_recipe(REPO / "recipes" / "lm_tiny_cpu.yaml", ["data.packing=yes please"])
    with pytest.raises(ValueError, match=r"train\.log_with must be List\[str\]"):
        load_recipe(REPO / "recipes" / "lm_tiny_cpu.yaml", ["train.log_with=tensorboard"])


def test_codec_recipe_overrides_take_exponent_floats_and_refuse_wrong_types(tmp_path):
    train_codec = import_recipe("train_codec")
    config = str(REPO / "recipes" / "codec_tiny_cpu.yaml")
    recipe = train_codec.load_recipe(config, [f"data.audio_dir={tmp_path}", "train.learning_rate=5e-4"])
    assert recipe.train.learning_rate == 5e-4
    with pytest.raises(ValueError, match=r"train\.batch_size must be int, got '2x'"):
        train_codec.load_recipe(config, [f"data.audio_dir={tmp_path}", "train.batch_size=2x"])
