"""Recipe files and `--set` overrides: numbers read as numbers, wrong types refused with the key's name."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest

from semanticodec_hf.lm.config import load_recipe, load_yaml
from semanticodec_hf.recipe_loading import apply_overrides, build_recipe
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


def test_both_trainers_read_recipes_with_the_shared_loader_and_the_codec_side_never_imports_the_lm(tmp_path):
    """One loader (`semanticodec_hf.recipe_loading`) for both trainers: the same errors on both sides, and
    training the codec does not import the audio-LM toolkit."""
    train_codec = import_recipe("train_codec")
    config = str(REPO / "recipes" / "codec_tiny_cpu.yaml")
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['learning_rat'\] in recipe section 'train'"):
        train_codec.load_recipe(config, [f"data.audio_dir={tmp_path}", "train.learning_rat=1e-3"])
    with pytest.raises(ValueError, match=r"Unknown recipe section\(s\) \['optim'\]; a codec recipe has model, data"):
        train_codec.load_recipe(config, [f"data.audio_dir={tmp_path}", "optim.lr=1"])
    with pytest.raises(FileNotFoundError, match="does not exist.*codec_tiny_cpu.yaml"):
        train_codec.load_recipe(str(tmp_path / "missing.yaml"), [])
    (tmp_path / "list.yaml").write_text("- model\n- data\n")
    with pytest.raises(ValueError, match="must be a YAML mapping"):
        train_codec.load_recipe(str(tmp_path / "list.yaml"), [])
    with pytest.raises(ValueError, match="section 'train' must be a mapping"):
        load_recipe(REPO / "recipes" / "lm_tiny_cpu.yaml", ["train=5"])
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(REPO / 'recipes')!r})\n"
        "import train_codec\n"
        f"recipe = train_codec.load_recipe({config!r}, ['data.audio_dir=clips'])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('semanticodec_hf.lm'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_shared_loader_builds_nested_sections_and_names_nested_keys():
    @dataclass
    class Inner:
        size: int = 1
        rate: float = 0.5

    @dataclass
    class Section:
        inner: Optional[Inner] = None
        names: List[str] = field(default_factory=list)

    @dataclass
    class Recipe:
        model: Section = field(default_factory=Section)

    data = apply_overrides(load_yaml("model:\n  inner: {size: 3}\n"), ["model.inner.rate=2", "model.names=[a]"])
    recipe = build_recipe(Recipe, data)
    assert recipe.model.inner == Inner(size=3, rate=2.0) and isinstance(recipe.model.inner.rate, float)
    assert recipe.model.names == ["a"] and build_recipe(Recipe, {"model": None}).model == Section()
    with pytest.raises(ValueError, match=r"model\.inner\.size must be int, got 'big'"):
        build_recipe(Recipe, {"model": {"inner": {"size": "big"}}})
    with pytest.raises(ValueError, match=r"Unknown key\(s\) \['width'\] in recipe section 'model\.inner'"):
        build_recipe(Recipe, {"model": {"inner": {"width": 3}}})
    # an override into an empty (null) section makes it a mapping; into a value it is an error
    assert apply_overrides({"model": None}, ["model.inner.size=2"]) == {"model": {"inner": {"size": 2}}}
    with pytest.raises(ValueError, match="'names' is not a section"):
        apply_overrides({"model": {"names": ["a"]}}, ["model.names.first=b"])
