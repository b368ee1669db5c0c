"""datasets integration: `ds.map(SemantiCodecTokenizeFunction(...))` gives each clip exactly its ids alone, in
every input form, with num_proc, in streaming, with a cheap stable fingerprint; the tokenize recipe resumes."""

import importlib.util
import io
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Audio, Dataset, load_from_disk
from datasets.fingerprint import Hasher

from semanticodec_hf.datasets_utils import SemantiCodecTokenizeFunction, clear_tokenizer_cache, load_audio
from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ data
def speech_like(seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    return 0.4 * np.sin(2 * np.pi * (120 * t + 60 * t**2)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))


def music_like(seconds, rate):
    t = np.arange(int(seconds * rate)) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)) / 3
    return 0.5 * chord * np.exp(-((t % 0.5) * 3))


def silence(seconds, rate):
    return np.zeros(int(seconds * rate))


CLIPS = [  # (kind, sampling rate, seconds): 8k/16k/44.1k, 0.5-12 s
    (speech_like, 8000, 0.5),
    (music_like, 44100, 12.0),
    (silence, 16000, 2.0),
    (speech_like, 16000, 10.5),
    (music_like, 8000, 3.0),
    (speech_like, 44100, 1.2),
]


def make_clips():
    return [(kind(seconds, rate).astype(np.float32), rate) for kind, rate, seconds in CLIPS]


@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_tokenizer")
    SemantiCodecAudioTokenizer.tiny(seed=0).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tokenizer(codec_dir):
    return SemantiCodecAudioTokenizer.from_pretrained(codec_dir)


@pytest.fixture(scope="module")
def wav_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("wavs")
    for i, (audio, rate) in enumerate(make_clips()):
        sf.write(path / f"clip{i}.wav", audio, rate, subtype="FLOAT")  # float WAV: samples survive exactly
    return path


@pytest.fixture(scope="module")
def expected(tokenizer):
    """Each clip tokenized alone, straight through the tokenizer."""
    return [tokenizer(audio, sampling_rate=rate)["input_ids"] for audio, rate in make_clips()]


def array_dataset():
    audio = [{"array": a, "sampling_rate": r} for a, r in make_clips()]
    return Dataset.from_dict({"audio": audio, "id": list(range(len(CLIPS)))})


# ------------------------------------------------------------------------------------------------ map
def test_map_over_arrays_paths_and_bytes_equals_each_clip_alone(codec_dir, wav_dir, expected):
    fn = SemantiCodecTokenizeFunction(codec_dir, return_audio_codes=True, return_metadata=True)
    ds = array_dataset()
    out = ds.map(fn, batched=True, batch_size=4, remove_columns=["audio"],
                 features=fn.output_features(ds.features, remove=["audio"]), new_fingerprint=fn.new_fingerprint(ds))
    assert out["input_ids"] == expected
    assert out["id"] == list(range(len(CLIPS)))
    assert out["duration"] == pytest.approx([seconds for _, _, seconds in CLIPS], abs=1e-4)
    assert out["variant"][0] == "semanticodec_tokenrate_100_vocab_64" and out["path"][0] is None
    for ids, codes, frames in zip(out["input_ids"], out["audio_codes"], out["num_frames"]):
        assert len(codes[0]) == frames and len(ids) == 2 * frames + 2
        assert fn.load_tokenizer().codes_to_ids(torch.tensor(codes)) == ids
    assert len(set(out["input_ids"][1])) > 10, "informative tiny codebooks: ids vary"

    paths = sorted(str(p) for p in wav_dir.glob("*.wav"))
    by_path = Dataset.from_dict({"audio": paths}).map(fn, batched=True, batch_size=3)
    assert by_path["input_ids"] == expected and by_path["path"] == paths
    undecoded = Dataset.from_dict({"audio": paths}).cast_column("audio", Audio(decode=False))
    assert undecoded.map(fn, batched=True, batch_size=5)["input_ids"] == expected
    as_bytes = Dataset.from_dict({"audio": [{"bytes": Path(p).read_bytes(), "path": None} for p in paths]})
    assert as_bytes.map(fn, batched=True, batch_size=2)["input_ids"] == expected


def test_num_proc_2_equals_num_proc_1_and_streaming(codec_dir, expected):
    fn = SemantiCodecTokenizeFunction(codec_dir)
    ds = array_dataset()
    parallel = ds.map(fn, batched=True, batch_size=2, num_proc=2, remove_columns=["audio"],
                      new_fingerprint=fn.new_fingerprint(ds))
    assert parallel["input_ids"] == expected
    clear_tokenizer_cache()  # workers must load the codec themselves, from the path
    parallel = ds.map(fn, batched=True, batch_size=3, num_proc=2, remove_columns=["audio"])
    assert parallel["input_ids"] == expected
    streamed = ds.to_iterable_dataset(num_shards=2).map(fn, batched=True, batch_size=4, remove_columns=["audio"])
    assert [row["input_ids"] for row in streamed] == expected


def test_fingerprint_is_cheap_stable_and_specific(codec_dir, tmp_path):
    fn = SemantiCodecTokenizeFunction(codec_dir)
    fn.load_tokenizer()
    again = SemantiCodecTokenizeFunction(str(codec_dir))
    assert fn.fingerprint == again.fingerprint and len(fn.fingerprint) == 32
    assert Hasher.hash(fn) == Hasher.hash(again)  # datasets' own hash: the object holds no model
    assert len(pickle.dumps(fn)) < 10_000
    ds = array_dataset()
    assert fn.new_fingerprint(ds) == again.new_fingerprint(ds) != fn.new_fingerprint(ds.select([0, 1]))
    assert SemantiCodecTokenizeFunction(codec_dir, device="cuda:0").fingerprint == fn.fingerprint
    others = [
        SemantiCodecTokenizeFunction(codec_dir, pattern="semantic_only"),
        SemantiCodecTokenizeFunction(codec_dir, add_special_tokens=False),
        SemantiCodecTokenizeFunction(codec_dir, return_audio_codes=True),
    ]
    SemantiCodecAudioTokenizer.tiny(seed=0, token_rate=50).save_pretrained(tmp_path / "r50")
    others.append(SemantiCodecTokenizeFunction(tmp_path / "r50"))
    fingerprints = {fn.fingerprint} | {other.fingerprint for other in others}
    assert len(fingerprints) == 1 + len(others)
    assert others[-1].variant == "semanticodec_tokenrate_50_vocab_64"


def test_clear_errors(codec_dir, wav_dir):
    fn = SemantiCodecTokenizeFunction(codec_dir)
    with pytest.raises(ValueError, match="Could not read audio row 0 .*missing.wav"):
        fn({"audio": [str(wav_dir / "missing.wav")]})
    with pytest.raises(ValueError, match="Column 'audio' not in the batch"):
        fn({"speech": []})
    with pytest.raises(ValueError, match="batched=True"):
        fn({"audio": {"array": [0.0], "sampling_rate": 16000}})
    short = {"audio": [
        {"array": np.zeros(4000, np.float32), "sampling_rate": 16000},
        {"array": np.zeros(100, np.float32), "sampling_rate": 16000, "path": "x.wav"},
    ]}
    with pytest.raises(ValueError, match="Audio x.wav: .*0.16 s"):
        fn(short)
    assert SemantiCodecTokenizeFunction(codec_dir, short_audio="pad")(short)["num_frames"][1] > 0
    audio, rate = load_audio({"bytes": io.BytesIO(_wav_bytes()).getvalue(), "path": None})
    assert rate == 8000 and audio.shape == (1, 800)


def _wav_bytes():
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(800, np.float32), 8000, format="WAV")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ recipe
def _recipe():
    spec = importlib.util.spec_from_file_location("tokenize_dataset", REPO / "recipes" / "tokenize_dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_end_to_end_with_resume(wav_dir, tmp_path, capsys):
    recipe = _recipe()
    audio_dir = tmp_path / "audio"
    shutil.copytree(wav_dir, audio_dir / "nested")
    (audio_dir / "notes.txt").write_text("not audio")
    out = tmp_path / "tokens"
    base = ["--audio-dir", str(audio_dir), "--output", str(out), "--tiny", "--shard-size", "2", "--batch-size", "2"]

    partial = recipe.main(base + ["--stop-after-shards", "1"])
    assert not partial["complete"] and partial["clips"] == 2
    assert "RANDOM tiny" in capsys.readouterr().err
    # A shard that was written but never marked done (killed mid-save) is redone.
    (out / "shards" / "shard-00001").mkdir(parents=True)
    summary = recipe.main(base)
    assert summary["complete"] and summary["clips"] == len(CLIPS) and summary["clips_this_run"] == len(CLIPS) - 2
    assert "resuming: 1 finished shards skipped" in capsys.readouterr().err
    dataset = load_from_disk(str(out / "dataset"))
    assert dataset["path"] == [f"nested/clip{i}.wav" for i in range(len(CLIPS))]
    assert set(dataset["variant"]) == {"semanticodec_tokenrate_100_vocab_64"}
    assert summary["tokens"] == sum(len(ids) for ids in dataset["input_ids"])
    assert summary["hours"] == pytest.approx(sum(seconds for _, _, seconds in CLIPS) / 3600, rel=1e-4)

    tokenizer = SemantiCodecAudioTokenizer.from_pretrained(out / "tiny_codec_seed0")
    for row in dataset:
        audio, rate = load_audio(str(audio_dir / row["path"]))
        assert row["input_ids"] == tokenizer(audio, sampling_rate=rate)["input_ids"]
    index = json.loads((out / "index.json").read_text())
    assert len(index["shards"]) == 3

    rerun = recipe.main(base)  # everything done: nothing recomputed
    assert rerun["clips_this_run"] == 0 and load_from_disk(str(out / "dataset"))["input_ids"] == dataset["input_ids"]
    with pytest.raises(SystemExit, match="other settings"):
        recipe.main(base[:-4] + ["--shard-size", "3"])


def test_recipe_on_a_dataset_keeps_other_columns(wav_dir, tmp_path, expected):
    paths = sorted(wav_dir.glob("*.wav"))
    rows = {"audio": [{"bytes": p.read_bytes(), "path": p.name} for p in paths], "text": [p.stem for p in paths]}
    Dataset.from_dict(rows).to_parquet(str(tmp_path / "part-0.parquet"))
    out = tmp_path / "tokens"
    summary = _recipe().main([
        "--dataset", "parquet", "--data-files", str(tmp_path / "part-0.parquet"),
        "--cache-dir", str(tmp_path / "cache"), "--output", str(out),
        "--tiny", "--shard-size", "4", "--num-proc", "2", "--save-codes",
    ])
    assert summary["complete"] and summary["clips"] == len(CLIPS)
    dataset = load_from_disk(str(out / "dataset"))
    assert dataset["text"] == [p.stem for p in paths] and dataset["path"] == [p.name for p in paths]
    assert dataset["input_ids"] == expected  # the recipe's tiny codec is the fixture's (same seed)
    assert [len(codes[0]) for codes in dataset["audio_codes"]] == dataset["num_frames"]


def test_recipe_help_lists_examples(capsys):
    with pytest.raises(SystemExit):
        _recipe().parse_args(["--help"])
    assert "examples:" in capsys.readouterr().out


def test_benchmark_smoke(capsys):
    spec = importlib.util.spec_from_file_location("tokenize_throughput", REPO / "benchmarks" / "tokenize_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--clips", "2", "--clip-seconds", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("SUMMARY model=tiny ") and result["bs1"] > 0 and "speedup=" in last
