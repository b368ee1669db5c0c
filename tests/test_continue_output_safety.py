"""`continue` never destroys a file: an output that is a prompt, two prompts with one output name, and, with a text
alone, an OUTPUT that exists (a forgotten OUTPUT would make the meant prompt the output) are refused before any
model is loaded; the prompt files keep their bytes."""

import os

import numpy as np
import pytest
import soundfile as sf

from semanticodec_hf.lm.generate import main as continue_main
from semanticodec_hf.lm.joint_corpus import JOINT_VOCABULARY_NAME


@pytest.fixture
def prompt(tmp_path):
    path = tmp_path / "prompt.wav"
    sf.write(str(path), 0.1 * np.random.default_rng(0).standard_normal(8000), 16000)
    return path


def _run(args, capsys):
    code = continue_main([str(a) for a in args] + ["--seconds", "1", "--tiny"])
    return code, capsys.readouterr().err


def _joint_folder(tmp_path):
    """Enough of a text+audio LM folder for the command to take that path (refused before it is loaded)."""
    folder = tmp_path / "joint"
    folder.mkdir()
    (folder / JOINT_VOCABULARY_NAME).write_text("{}")
    return folder


def test_an_output_that_is_the_prompt_is_refused(tmp_path, prompt, capsys):
    before = prompt.read_bytes()
    code, err = _run([prompt, tmp_path / "." / "prompt.wav", "--lm", tmp_path / "missing-lm"], capsys)
    assert code == 2 and "is the input file" in err and "destroy" in err
    link = tmp_path / "link.wav"
    os.link(prompt, link)
    code, err = _run([prompt, link, "--lm", tmp_path / "missing-lm"], capsys)
    assert code == 2 and "is the input file" in err
    assert prompt.read_bytes() == before


def test_prompts_written_into_their_own_folder_are_refused(tmp_path, prompt, capsys):
    other = tmp_path / "other.wav"
    sf.write(str(other), np.zeros(8000), 16000)
    code, err = _run([prompt, other, tmp_path, "--lm", tmp_path / "missing-lm"], capsys)
    assert code == 2 and "is the input file" in err


def test_two_prompts_with_one_name_are_refused(tmp_path, prompt, capsys):
    (tmp_path / "sub").mkdir()
    twin = tmp_path / "sub" / "prompt.wav"
    sf.write(str(twin), np.zeros(8000), 16000)
    code, err = _run([prompt, twin, tmp_path / "out", "--lm", tmp_path / "missing-lm"], capsys)
    assert code == 2 and "would both be written to" in err and str(tmp_path / "out" / "prompt.wav") in err
    assert not (tmp_path / "out").exists()


def test_several_prompts_into_a_file_are_refused(tmp_path, prompt, capsys):
    other = tmp_path / "other.wav"
    sf.write(str(other), np.zeros(8000), 16000)
    existing = tmp_path / "existing.wav"
    sf.write(str(existing), np.zeros(8000), 16000)
    code, err = _run([prompt, other, existing, "--lm", tmp_path / "missing-lm"], capsys)
    assert code == 2 and "need an output folder" in err


def test_a_text_alone_never_writes_over_an_existing_file(tmp_path, prompt, capsys):
    before = prompt.read_bytes()
    code, err = _run([prompt, "--text", "a dog barks", "--lm", _joint_folder(tmp_path)], capsys)
    assert code == 2 and "that path is OUTPUT" in err and "give an OUTPUT after it" in err
    assert prompt.read_bytes() == before
