"""`semanticodec-hf continue` / `python lm/generate.py` on a text+audio LM (`model.keep_text_vocab: true`): audio
prompts, `--text` before the audio span, or a text alone, written exactly as `JointAudioContinuation` makes them;
`--text` with an audio-only LM and the options that engine lacks refused by name, before any model work
(its long-form sliding: tests/test_joint_long_form.py).

One tiny joint LM per module: recipes/lm_joint_tiny_cpu.yaml (the random tiny codec's layout, so `--tiny`
decodes it) trained for 2 steps from recipes/make_tiny_text_lm.py's random text LM: no network, seconds."""

import re
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from recipe_modules import RECIPES, import_recipe
from semanticodec_hf.cli import main as cli_main
from semanticodec_hf.lm.codec_access import tiny_codec_tokenizer
from semanticodec_hf.lm.generate import AudioContinuation, main as continue_main
from semanticodec_hf.lm.joint_corpus import is_joint_folder
from semanticodec_hf.lm.joint_generation import JointAudioContinuation
from semanticodec_hf.processing_semanticodec import read_audio
from test_lm_generate import _prompt_file, _random_lm, _save_lm

pytestmark = pytest.mark.usefixtures("one_thread")
RATE = 16000
DECODE = ["--tiny", "--steps", "2", "--seed", "3"]  # a 2-step decode of the random tiny codec: fast


@pytest.fixture(scope="module")
def joint_lm(tmp_path_factory):
    """The final folder of a 2-step run of the tiny joint recipe (256 positions, 64/128 audio ids)."""
    from semanticodec_hf.lm.train import main as train_main

    root = tmp_path_factory.mktemp("joint")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        text_lm = import_recipe("make_tiny_text_lm").make_tiny_text_lm(root / "text")
        train_main(["--config", str(RECIPES / "lm_joint_tiny_cpu.yaml"), "--output-dir", str(root / "run"),
                    "--set", f"model.init_from={text_lm}", "train.max_steps=2", "train.eval_every=2",
                    "train.save_every=2", "train.warmup_steps=1", "train.global_batch_size=2",
                    "data.synthetic.num_clips=16", "train.log_with=[]"])
    finally:
        torch.set_num_threads(threads)
    final = root / "run" / "final"
    assert is_joint_folder(final)
    return final


@pytest.fixture(scope="module")
def audio_lm(tmp_path_factory, tiny_tokenizer):
    """An audio-only LM folder in the same (tiny codec) layout."""
    return _save_lm(_random_lm(tiny_tokenizer.layout), tiny_tokenizer.layout, tmp_path_factory.mktemp("audio") / "lm")


def _engine_wav(lm, path, prompts, seconds, texts):
    """What `JointAudioContinuation.continue_audio` gives for the CLI's settings (DECODE), written as the CLI
    writes (16-bit wav), read back."""
    engine = JointAudioContinuation.from_pretrained(lm, codec_tokenizer=tiny_codec_tokenizer())
    waves, rate = None, RATE
    if prompts:
        waves, rates = zip(*(read_audio(str(p)) for p in prompts))
        waves, rate = list(waves), rates[0]
    out = engine.continue_audio(waves, rate, seconds, texts=texts, seed=3, num_inference_steps=2)
    written = []
    for i, audio in enumerate(out["audio"]):
        sf.write(str(path / f"engine{i}.wav"), audio.numpy(), RATE, subtype="PCM_16")
        written.append(sf.read(str(path / f"engine{i}.wav"))[0])
    return written


@pytest.mark.parametrize("mode", ["audio", "text+audio", "text"])
def test_the_command_writes_what_the_joint_engine_makes(joint_lm, tmp_path, capsys, mode):
    prompt = _prompt_file(tmp_path / "p.wav", 0.4)
    prompts = [] if mode == "text" else [prompt]
    text = ["--text", "a dog barks"] if "text" in mode else []
    out = tmp_path / "out.wav"
    capsys.readouterr()
    assert cli_main(["continue", *map(str, prompts), str(out), "--lm", str(joint_lm), "--seconds", "0.8",
                     *text, *DECODE]) == 0
    err = capsys.readouterr().err
    assert re.search(r"continue: 100%\|[^|]*\| (\d+)/\1", err) and "DDIM: 100%" in err  # progress, as for audio LMs
    written, rate = sf.read(str(out))
    assert rate == RATE and written.shape == (int(0.8 * RATE),)
    expected = _engine_wav(joint_lm, tmp_path, prompts, 0.8, ["a dog barks"] if text else None)
    assert np.array_equal(written, expected[0])  # the command adds nothing of its own
    if mode == "text+audio":  # the text is read: the same prompt and seed without it continue differently
        assert continue_main([str(prompt), str(tmp_path / "plain.wav"), "--lm", str(joint_lm), "--seconds", "0.8",
                              "--quiet", *DECODE]) == 0
        assert not np.array_equal(written, sf.read(str(tmp_path / "plain.wav"))[0])


def test_several_prompts_take_one_text_each_or_one_for_all(joint_lm, tmp_path):
    prompts = [_prompt_file(tmp_path / name, seconds) for name, seconds in (("a.wav", 0.4), ("b.wav", 0.5))]
    out = tmp_path / "out"
    assert continue_main([*map(str, prompts), str(out), "--lm", str(joint_lm), "--seconds", "0.8", "--quiet",
                          "--text", "a dog barks", "--text", "hello world", *DECODE]) == 0
    expected = _engine_wav(joint_lm, tmp_path, prompts, 0.8, ["a dog barks", "hello world"])
    for name, wave in zip(("a.wav", "b.wav"), expected):
        assert np.array_equal(sf.read(str(out / name))[0], wave) and wave.shape == (int(0.8 * RATE),)
    assert continue_main([*map(str, prompts), str(tmp_path / "same"), "--lm", str(joint_lm), "--seconds", "0.8",
                          "--quiet", "--text", "a dog barks", *DECODE]) == 0
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == ["a.wav", "b.wav"]


def test_argument_rules_are_one_line_errors(joint_lm, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(JointAudioContinuation, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("the LM was loaded before the arguments were checked")))
    prompts = [str(_prompt_file(tmp_path / name, 0.4)) for name in ("a.wav", "b.wav")]
    out = str(tmp_path / "out.wav")
    cases = [
        ([out, "--text", "a", "--text", "b"], "with no prompt file, continue writes one clip from one --text, but "
                                              "--text was given 2 times; run it once per text."),
        ([*prompts, out, "--text", "a", "--text", "b", "--text", "c"],
         "--text was given 3 times for 2 prompt files; give it once"),
        ([out], "give at least one prompt file and an OUTPUT path (or --text TEXT and OUTPUT: this is a text+audio "
                "LM)."),
        ([prompts[0], out, "--text", "a", "--codec", str(tmp_path)], "give --codec PATH or --tiny"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert continue_main([*argv, "--lm", str(joint_lm), "--seconds", "0.8", "--tiny"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("continue: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.wav").exists()


def test_text_with_an_audio_only_lm_is_refused(audio_lm, tmp_path, capsys):
    prompt = str(_prompt_file(tmp_path / "p.wav", 0.4))
    for positional in ([prompt, str(tmp_path / "out.wav")], [str(tmp_path / "out.wav")]):
        capsys.readouterr()
        assert cli_main(["continue", *positional, "--lm", str(audio_lm), "--seconds", "0.8", "--text", "a dog barks",
                         *DECODE]) == 2
        assert capsys.readouterr().err == (
            f"continue: error: --text needs a text+audio LM (trained with model.keep_text_vocab: true); {audio_lm} "
            "is an audio-only LM, which reads no text: drop --text.\n")
    assert not (tmp_path / "out.wav").exists()


@pytest.mark.parametrize("option,value,why", [
    ("--acoustic-lm", "stage", "it has no acoustic stage"),
    ("--no-repeat-ngram-size", "2", "its n-gram rule is not implemented for joint ids"),
], ids=["acoustic-lm", "no-repeat-ngram-size"])
def test_options_the_joint_engine_lacks_are_refused_by_name(joint_lm, tmp_path, capsys, monkeypatch, option, value,
                                                            why):
    monkeypatch.setattr(JointAudioContinuation, "from_pretrained",
                        classmethod(lambda *a, **k: pytest.fail("the LM was loaded before the options were checked")))
    prompt = str(_prompt_file(tmp_path / "p.wav", 0.4))
    capsys.readouterr()
    assert continue_main([prompt, str(tmp_path / "out.wav"), "--lm", str(joint_lm), "--seconds", "0.8", option, value,
                          *DECODE]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"continue: error: {option} does not apply to a text+audio LM ({joint_lm}): {why}")
    assert err.endswith("; drop it.\n") and err.count("\n") == 1, err
    assert not (tmp_path / "out.wav").exists()


def test_refused_options_are_named_together(joint_lm, tmp_path, capsys):
    prompt = str(_prompt_file(tmp_path / "p.wav", 0.4))
    capsys.readouterr()
    assert continue_main([prompt, str(tmp_path / "out.wav"), "--lm", str(joint_lm), "--seconds", "0.8",
                          "--acoustic-lm", "stage", "--no-repeat-ngram-size", "2", *DECODE]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"continue: error: --acoustic-lm, --no-repeat-ngram-size do not apply to a text+audio LM "
                          f"({joint_lm}): --acoustic-lm: it has no acoustic stage") and err.endswith("; drop them.\n")


def test_beams_past_the_context_name_the_seconds_that_fit(joint_lm, tmp_path, capsys):
    """Beam search cannot slide: past the LM's 256 positions the command says how long fits in one generate call,
    and that works (sampling slides instead: tests/test_joint_long_form.py)."""
    prompt = str(_prompt_file(tmp_path / "p.wav", 0.4))
    capsys.readouterr()
    assert continue_main([prompt, str(tmp_path / "out.wav"), "--lm", str(joint_lm), "--seconds", "5", "--text",
                          "a dog barks", "--num-beams", "2", *DECODE]) == 2
    err = capsys.readouterr().err  # after the --tiny warning and the LM's loading bar: one error line
    fits = re.search(r"^continue: error: --seconds 5\.0 needs \d+ positions but the LM has 256 and this continuation "
                     r"cannot slide past them: beam search cannot carry its beams across a slide of the context "
                     r"\(long-form continuation\); use sampling or --greedy for longer audio, or ask for less "
                     r"\(--seconds (\d+\.\d\d) is the longest that fits in one generate call with these prompts\)\.\n\Z",
                     err, flags=re.M)
    assert fits and err.count("error") == 1, err
    assert not (tmp_path / "out.wav").exists()
    seconds = float(fits.group(1))
    assert 1.0 < seconds < 5.0
    assert continue_main([prompt, str(tmp_path / "out.wav"), "--lm", str(joint_lm), "--seconds", str(seconds),
                          "--text", "a dog barks", "--num-beams", "2", "--quiet", *DECODE]) == 0
    assert sf.read(str(tmp_path / "out.wav"))[0].shape == (int(round(seconds * RATE)),)


def test_text_is_refused_for_an_lm_trained_with_text_after_its_audio(joint_lm, tmp_path, capsys):
    after = shutil.copytree(joint_lm, tmp_path / "after")
    recipe = yaml.safe_load((after / "lm_recipe.yaml").read_text())
    recipe["data"].update(text_column="text", text_position="after")
    (after / "lm_recipe.yaml").write_text(yaml.safe_dump(recipe))
    capsys.readouterr()
    assert continue_main([str(tmp_path / "out.wav"), "--lm", str(after), "--seconds", "0.8", "--text", "a dog barks",
                          *DECODE]) == 2
    assert "continue: error: This LM was trained with data.text_position: after" in capsys.readouterr().err
    assert not (tmp_path / "out.wav").exists()


def test_the_python_api_of_audio_lms_still_points_at_the_joint_engine(joint_lm):
    with pytest.raises(ValueError, match=r"is a text\+audio LM .* load it with semanticodec_hf\.lm\.joint_generation"
                                         r"\.JointAudioContinuation \(the continue command does so itself\)"):
        AudioContinuation.from_pretrained(str(joint_lm))


def test_every_decoding_option_reaches_the_joint_engine(joint_lm, tmp_path, monkeypatch):
    """The options the joint engine takes are passed through as given (none dropped on the way)."""
    calls = []

    class Engine:
        tokenizer = type("T", (), {"audio_tokenizer": type("A", (), {"sampling_rate": RATE})()})()

        def generate_continuation(self, prompts, rate, seconds, **options):
            calls.append((prompts, rate, seconds, options))
            return {"streamed": False}

        def decode_result(self, result, progress=False):
            return {**result, "audio": [torch.zeros(RATE // 2)]}

    monkeypatch.setattr(JointAudioContinuation, "from_pretrained", classmethod(lambda *a, **k: Engine()))
    assert continue_main([str(tmp_path / "out.wav"), "--lm", str(joint_lm), "--seconds", "1.5", "--text", "hi",
                          "--greedy", "--num-beams", "2", "--repetition-penalty", "1.3", "--min-seconds", "0.7",
                          "--allow-early-eos", "--seed", "5", "--steps", "4", "--sampler", "dpmsolver++",
                          "--quiet"]) == 0
    assert calls == [(None, RATE, 1.5, dict(
        texts=["hi"], seed=5, num_inference_steps=4, sampler="dpmsolver++", min_seconds=0.7, allow_early_eos=True,
        progress=False, greedy=True, num_beams=2, temperature=None, top_k=None, top_p=None,
        repetition_penalty=1.3, extend_stride=None))]
    assert sf.read(str(tmp_path / "out.wav"))[0].shape == (RATE // 2,)
    calls.clear()  # (a new OUTPUT: with a text alone an existing one is refused, tests/test_continue_output_safety.py)
    assert continue_main([str(tmp_path / "out2.wav"), "--lm", str(joint_lm), "--seconds", "1.5", "--text", "hi",
                          "--temperature", "0.8", "--top-k", "20", "--top-p", "0.9", "--extend-stride", "0.5"]) == 0
    assert {k: calls[0][3][k] for k in ("temperature", "top_k", "top_p", "greedy", "num_beams", "progress",
                                        "extend_stride")} == dict(
        temperature=0.8, top_k=20, top_p=0.9, greedy=False, num_beams=1, progress=True, extend_stride=0.5)
