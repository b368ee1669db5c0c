"""The accelerate trainer: it learns, it resumes bit for bit, and 1 or 2 processes or accumulation agree."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from semanticodec_hf.lm.train import main
from semanticodec_hf.training_utils import checkpoints
from recipe_modules import import_recipe, run_killed_after_step

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(tmp_path, name="recipe.yaml", **train):
    recipe = {
        "model": {"architecture": "gpt2", "hidden_size": 32, "num_layers": 2, "num_heads": 2,
                  "max_position_embeddings": 64, "dropout": 0.1},
        "data": {"synthetic": {"num_clips": 24, "frames": 20, "semantic_vocab_size": 16, "acoustic_vocab_size": 16},
                 "block_size": 32, "eval_fraction": 0.1},
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 6, "global_batch_size": 4, "learning_rate": 3e-3,
                  "warmup_steps": 2, "eval_every": 3, "save_every": 3, "log_every": 1, "log_with": []},
    }
    recipe["train"].update(train)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def _metrics(output):
    return [json.loads(line) for line in (Path(output) / "metrics.jsonl").read_text().splitlines()]


def _train_losses(output):
    return {m["step"]: m["train/loss"] for m in _metrics(output) if "train/loss" in m}


def _weights(output):
    return load_file(str(Path(output) / "final" / "model.safetensors"))


def test_tiny_model_overfits_a_tiny_corpus(tmp_path):
    config = _recipe(tmp_path)
    summary = main(["--config", str(config), "--set", "train.max_steps=80", "train.learning_rate=0.01",
                    "train.eval_every=80", "train.save_every=80", "train.log_every=1", "model.dropout=0.0",
                    "model.hidden_size=64", "data.synthetic.num_clips=4", "data.eval_fraction=0"])
    losses = _train_losses(tmp_path / "run")
    assert losses[1] > 3.0  # ln(36) = 3.58 for a model that knows nothing
    assert summary["train/loss"] < 0.1, losses  # 4 clips memorised
    final = tmp_path / "run" / "final"
    assert {"config.json", "model.safetensors", "audio_tokenizer_config.json", "lm_recipe.yaml"} <= {
        p.name for p in final.iterdir()}
    from transformers import AutoModelForCausalLM

    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    model = AutoModelForCausalLM.from_pretrained(final)
    layout = SemantiCodecAudioTokenizer.from_pretrained(final, load_codec=False).layout
    assert model.config.vocab_size == layout.vocab_size == 36


def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path):
    config = _recipe(tmp_path)
    main(["--config", str(config), "--output-dir", str(tmp_path / "straight")])
    # A real process that dies (os._exit from a step callback, no clean-up) after step 4; its newest checkpoint
    # is step 3.
    crashed = run_killed_after_step("semanticodec_hf.lm.train", 4,
                                    ["--config", str(config), "--output-dir", str(tmp_path / "killed")], tmp_path)
    assert crashed.returncode == 137, crashed.stderr[-2000:]
    assert [step for step, _ in checkpoints(tmp_path / "killed")] == [3]
    assert not (tmp_path / "killed" / "final").exists()
    summary = main(["--config", str(config), "--output-dir", str(tmp_path / "killed")])
    assert summary["resumed_from"] == 3
    straight, resumed = _weights(tmp_path / "straight"), _weights(tmp_path / "killed")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    # the log is continuous too: what the killed run wrote after its checkpoint was replaced, not duplicated
    timeless = lambda rows: [{k: v for k, v in m.items() if k != "train/tokens_per_second"} for m in rows]  # noqa: E731
    assert timeless(_metrics(tmp_path / "killed")) == timeless(_metrics(tmp_path / "straight"))


def test_step_callbacks_run_after_each_complete_step(tmp_path):
    config = _recipe(tmp_path)
    seen = []

    def record(step):  # the step's checkpoint, when one was due, is already written
        seen.append((step, [saved for saved, _ in checkpoints(tmp_path / "run")]))

    main(["--config", str(config), "--set", "train.max_steps=4", "model.dropout=0.0"], callbacks=[record])
    assert seen == [(1, []), (2, []), (3, [3]), (4, [3, 4])]
    seen.clear()
    assert main(["--config", str(config), "--set", "train.max_steps=4", "model.dropout=0.0", "--resume",
                 str(checkpoints(tmp_path / "run")[0][1]), "--output-dir", str(tmp_path / "again")],
                callbacks=[record])["resumed_from"] == 3
    assert [step for step, _ in seen] == [4]  # a resumed run calls back for the steps it runs


def test_gradient_accumulation_gives_the_same_training(tmp_path):
    config = _recipe(tmp_path)
    main(["--config", str(config), "--output-dir", str(tmp_path / "one"), "--set", "model.dropout=0.0"])
    main(["--config", str(config), "--output-dir", str(tmp_path / "two"), "--set", "model.dropout=0.0",
          "train.gradient_accumulation_steps=2"])
    one, two = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert one.keys() == two.keys()
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5, abs=1e-6)


def test_two_cpu_processes_agree_with_one(tmp_path):
    config = _recipe(tmp_path)
    common = ["--config", str(config), "--set", "model.dropout=0.0"]
    main(common + ["--output-dir", str(tmp_path / "single")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # no PYTHONPATH: the script imports the installed package
    launched = subprocess.run(  # torchrun: 2 gloo processes on this CPU, as documented in lm/train.py
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "lm" / "train.py"), *common, "--output-dir", str(tmp_path / "double")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert "2 process(es)" in launched.stdout + launched.stderr
    single, double = _metrics(tmp_path / "single"), _metrics(tmp_path / "double")
    assert [m["step"] for m in single] == [m["step"] for m in double]
    for a, b in zip(single, double):
        for key in a:
            if key.startswith(("train/loss", "eval/")):
                assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)


def test_trainer_reads_a_tokenize_dataset_output(tmp_path):
    import numpy as np
    import soundfile as sf

    clips = tmp_path / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        sf.write(str(clips / f"c{i}.wav"), (0.1 * rng.standard_normal(8000 * (2 + i % 2))).astype("float32"), 16000)
    tokenize_dataset = import_recipe("tokenize_dataset")
    tokenize_dataset.main(["--audio-dir", str(clips), "--output", str(tmp_path / "tokens"), "--tiny"])
    config = _recipe(tmp_path)
    summary = main(["--config", str(config), "--output-dir", str(tmp_path / "run"), "--set", "data.synthetic=null",
                    f"data.tokenized_dir={tmp_path / 'tokens'}", "data.eval_fraction=0.2", "train.max_steps=2"])
    assert summary["steps"] == 2
    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    saved = SemantiCodecAudioTokenizer.from_pretrained(tmp_path / "run" / "final", load_codec=False)
    assert saved.layout.vocab_size == 196 and saved.codec_name_or_path == str(tmp_path / "tokens" / "tiny_codec_seed0")
    with pytest.raises(FileNotFoundError, match="tokenize_dataset"):
        main(["--config", str(config), "--set", "data.synthetic=null", f"data.tokenized_dir={tmp_path / 'nothing'}"])


def test_tensorboard_tracker_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    config = _recipe(tmp_path)
    main(["--config", str(config), "--set", "train.max_steps=2", "train.log_with=[tensorboard]"])
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents.*"))


def test_trainer_uses_acoustic_bpe_pieces(tmp_path):
    pytest.importorskip("sentencepiece")
    from semanticodec_hf.lm.data import synthetic_corpus
    from semanticodec_hf.acoustic_bpe import AcousticBPE
    from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout
    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    layout = SemantiCodecVocabularyLayout(16, 16)
    # the same corpus the trainer generates (seed 0), so the BPE model fits it
    streams = [clip[1:-1] for clip in synthetic_corpus(layout, "semantic_only", 24, 20, seed=0)]
    bpe = AcousticBPE.train(streams, num_base_ids=16, vocab_size=40)
    bpe.save(tmp_path / "bpe")
    config = _recipe(tmp_path)
    common = ["--config", str(config), "--set", "data.synthetic.pattern=semantic_only", "train.max_steps=2"]
    plain = main(common + ["--output-dir", str(tmp_path / "plain")])
    pieces = main(common + [f"data.acoustic_bpe={tmp_path / 'bpe'}", "--output-dir", str(tmp_path / "pieces")])
    assert pieces["parameters"] > plain["parameters"]  # a larger vocabulary (40 pieces instead of 16 ids)
    saved = SemantiCodecAudioTokenizer.from_pretrained(tmp_path / "pieces" / "final", load_codec=False)
    assert saved.layout.semantic_vocab_size == bpe.vocab_size and saved.pattern == "semantic_only"
    assert AcousticBPE.load(tmp_path / "pieces" / "final" / "acoustic_bpe").vocab_size == bpe.vocab_size
    with pytest.raises(ValueError, match="semantic_only corpus"):
        main(["--config", str(config), "--set", f"data.acoustic_bpe={tmp_path / 'bpe'}", "train.max_steps=1",
              "--output-dir", str(tmp_path / "wrong")])


def test_resume_refuses_a_changed_recipe_and_accepts_changed_intervals(tmp_path, capsys):
    config = _recipe(tmp_path)
    main(["--config", str(config)])
    run = tmp_path / "run"
    logged = (run / "metrics.jsonl").read_text()
    # rerunning into the finished run with other settings must not "resume" it silently
    with pytest.raises(ValueError) as refused:
        main(["--config", str(config), "--set", "train.learning_rate=0.5", "data.synthetic.num_clips=30"])
    message = str(refused.value)
    assert "train.learning_rate: 0.003 -> 0.5" in message and "data.synthetic.num_clips: 24 -> 30" in message
    assert "--resume no" in message and "output" in message
    with pytest.raises(ValueError, match=r"train\.max_steps: 6 -> 8"):  # the cosine schedule depends on it
        main(["--config", str(config), "--set", "train.max_steps=8"])
    assert (run / "metrics.jsonl").read_text() == logged  # a refused resume leaves the run as it was
    # where things go and how often they are reported does not change the trajectory
    summary = main(["--config", str(config), "--set", "train.log_every=2", "train.eval_every=2", "train.save_every=2",
                    "train.keep_checkpoints=1", "train.num_workers=1", "data.max_eval_blocks=1", "train.log_with=[]"])
    assert summary["resumed_from"] == 6
    # --resume no starts over in the same folder: the old run's checkpoints and log are moved aside, not lost
    capsys.readouterr()
    summary = main(["--config", str(config), "--resume", "no", "--set", "train.learning_rate=0.5",
                    "train.max_steps=4", "train.save_every=2"])
    assert summary["resumed_from"] is None
    assert "moved to" in capsys.readouterr().err
    assert [step for step, _ in checkpoints(run)] == [2, 4]
    (previous,) = (run / "previous-runs").iterdir()
    assert checkpoints(previous)[-1][0] == 6  # the old run, intact
    assert json.loads((previous / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 6
    assert main(["--config", str(config), "--set", "train.learning_rate=0.5", "train.max_steps=4",
                 "train.save_every=2"])["resumed_from"] == 4


def test_a_checkpoint_without_a_stored_recipe_still_resumes_with_a_warning(tmp_path, capsys):
    config = _recipe(tmp_path)
    main(["--config", str(config), "--set", "train.max_steps=3"])
    state_file = checkpoints(tmp_path / "run")[-1][1] / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["recipe"]  # as written before recipes were stored
    state_file.write_text(json.dumps(state))
    capsys.readouterr()
    summary = main(["--config", str(config), "--set", "train.max_steps=3", "train.learning_rate=0.5"])
    assert summary["resumed_from"] == 3
    assert "does not record the recipe" in capsys.readouterr().err


def test_dataloader_workers_give_the_same_training_and_resume_exactly(tmp_path, monkeypatch):
    import semanticodec_hf.lm.train as lm_train

    config = _recipe(tmp_path)  # dropout 0.1: the RNG stream matters too
    main(["--config", str(config), "--output-dir", str(tmp_path / "straight")])
    made = []
    real_loader = lm_train._loader
    monkeypatch.setattr(lm_train, "_loader", lambda dataset, workers, device: made.append(
        (type(dataset).__name__, workers)) or real_loader(dataset, workers, device))
    step_3 = dict(checkpoints(tmp_path / "straight"))[3]
    # resume the straight run's step-3 checkpoint into another folder with 2 DataLoader worker processes
    summary = main(["--config", str(config), "--output-dir", str(tmp_path / "workers"), "--resume", str(step_3),
                    "--set", "train.num_workers=2"])
    assert summary["resumed_from"] == 3
    assert set(made) == {("MicroBatches", 2), ("EvalBatches", 2)}  # train.num_workers reaches both loaders
    straight, workers = _weights(tmp_path / "straight"), _weights(tmp_path / "workers")
    assert straight.keys() == workers.keys()
    for name in straight:
        assert torch.equal(straight[name], workers[name]), name
    evals = lambda output: [m for m in _metrics(output) if "eval/loss" in m and m["step"] > 3]  # noqa: E731
    assert evals(tmp_path / "workers") == evals(tmp_path / "straight")  # eval batches through workers too


def test_recipe_differences_ignore_only_the_neutral_keys():
    from semanticodec_hf.training_utils import recipe_differences

    codec = {"model": {"init": "tiny"}, "data": {"val_clips": 2},
             "train": {"output_dir": "a", "batch_size": 2, "val_steps": 5, "eval_every": 50, "log_with": ["x"]}}
    changed = {"model": {"init": "tiny"}, "data": {"val_clips": 3},
               "train": {"output_dir": "b", "batch_size": 4, "val_steps": 10, "eval_every": 10, "log_with": []}}
    assert recipe_differences(codec, changed) == [("data.val_clips", 2, 3), ("train.batch_size", 2, 4)]
    assert recipe_differences(codec, codec) == []
    added = recipe_differences({"train": {"seed": 0}}, {"train": {"seed": 0, "new_key": 1}})
    assert [(key, new) for key, _, new in added] == [("train.new_key", 1)]  # a key on one side only differs
