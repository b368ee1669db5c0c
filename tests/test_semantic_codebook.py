"""recipes/build_semantic_codebook.py: features -> k-means -> a codebook the codec loads and encodes with."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from recipe_modules import import_recipe

REPO = Path(__file__).resolve().parent.parent
recipe = import_recipe("build_semantic_codebook")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Speech-like (modulated harmonics), music-like (chords), noise and a silent-tailed clip, mixed rates."""
    folder = tmp_path_factory.mktemp("corpus")
    rng = np.random.default_rng(0)
    for i in range(6):
        rate = (16000, 22050, 8000)[i % 3]
        t = np.arange(int(rate * (1.0 + 0.5 * i))) / rate
        if i % 3 == 0:
            wave = np.sin(2 * np.pi * 140 * t * (1 + 0.1 * np.sin(3 * t))) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
        elif i % 3 == 1:
            wave = sum(np.sin(2 * np.pi * f * t) for f in (262, 330, 392)) / 3
        else:
            wave = rng.standard_normal(t.size)
        wave[-rate // 4:] = 0
        sub = folder / ("speech" if i % 3 == 0 else "other")
        sub.mkdir(exist_ok=True)
        sf.write(str(sub / f"clip{i}.wav"), (0.3 * wave).astype(np.float32), rate)
    return folder


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_codebook_has_the_asked_size_and_the_codec_encodes_with_it(corpus, tmp_path, backend):
    pytest.importorskip({"faiss": "faiss", "sklearn": "sklearn"}[backend])
    output = tmp_path / "out"
    report = recipe.main(["--audio-dir", str(corpus), "--tiny", "--vocab-sizes", "16", "32", "--output", str(output),
                          "--backend", backend, "--save-models", "--chunk-size", "256"])
    assert report["backend"] == backend and report["clips"] == 6
    for vocab in (16, 32):
        stats = report["codebooks"][str(vocab)]
        path = output / "codebook_idx" / "combine_512_audioset_dominate" / f"codebook_{vocab // 2}_0.npy"
        assert stats["file"] == str(path.relative_to(output))
        centroids = np.load(path)
        assert centroids.shape == (vocab, 32) and centroids.dtype == np.float32  # tiny, 100 tokens/s: D = 32
        assert 1 < stats["used_clusters"] <= vocab and stats["frames"] == report["frames"]
        # the converter's loader reads it as an official codebook
        from semanticodec_hf.convert_semanticodec_original_to_hf import load_semantic_codebook

        np.testing.assert_array_equal(load_semantic_codebook(path), centroids)
        # the saved codec uses it: ids are the nearest new centroid of the frozen AudioMAE features
        from transformers import AutoModel

        import semanticodec_hf  # noqa: F401  (registers the Auto classes)
        from semanticodec_hf import SemantiCodecFeatureExtractor

        model = AutoModel.from_pretrained(output / f"model_vocab{vocab}").eval()
        assert model.config.semantic_vocab_size == vocab
        torch.testing.assert_close(model.quantizer.semantic.centroids, torch.from_numpy(centroids))
        audio, rate = sf.read(str(corpus / "speech" / "clip0.wav"), dtype="float32")
        features = SemantiCodecFeatureExtractor()(audio, sampling_rate=rate)
        codes = model.encode(features["input_features"], num_samples=features["num_samples"]).audio_codes[0]
        assert codes[0].max() < vocab and len(codes[0].unique()) > 1
        frames = recipe.AudioMAEFeatures(str(output / f"model_vocab{vocab}"), None, 0).clip_features(audio, rate, 0)
        nearest = ((torch.from_numpy(frames)[:, None] - torch.from_numpy(centroids)[None]) ** 2).sum(-1).argmin(-1)
        n = min(len(nearest), codes.shape[1])
        assert (nearest[:n] == codes[0, :n]).float().mean() > 0.95  # same assignment up to float ties


def test_bad_requests_are_refused(corpus, tmp_path):
    with pytest.raises(SystemExit, match="exceed"):
        recipe.main(["--audio-dir", str(corpus), "--tiny", "--vocab-sizes", "100000", "--output", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="even numbers"):
        recipe.main(["--audio-dir", str(corpus), "--tiny", "--vocab-sizes", "15", "--output", str(tmp_path / "b")])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no .* files"):
        recipe.main(["--audio-dir", str(empty), "--tiny", "--output", str(tmp_path / "c")])


@pytest.mark.parametrize("token_rate", [50, 25])
def test_tiny_token_rates_give_the_features_the_encoder_quantizes(corpus, tmp_path, token_rate):
    """With 1x2 / 2x2 pooling, the recipe's features are the encoder's pre-quantizer frames: assigned with the
    saved codec's own quantizer they give exactly the ids `model.encode` returns."""
    from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel

    output = tmp_path / "out"
    report = recipe.main(["--audio-dir", str(corpus), "--tiny", "--token-rate", str(token_rate), "--vocab-sizes",
                          "16", "--output", str(output), "--backend", "sklearn", "--save-models"])
    assert report["token_rate"] == token_rate
    model = SemantiCodecModel.from_pretrained(output / "model_vocab16").eval()
    pooled = 32 * {50: 2, 25: 4}[token_rate]  # tiny hidden size 32 x patches concatenated per frame
    assert model.config.token_rate == token_rate and np.load(output / report["codebooks"]["16"]["file"]).shape == (
        16, pooled)
    extractor = SemantiCodecFeatureExtractor.from_pretrained(output / "model_vocab16")
    features = recipe.AudioMAEFeatures(str(output / "model_vocab16"), None, 0)
    for name in ("speech/clip0.wav", "other/clip1.wav"):  # 16 kHz and 22.05 kHz
        audio, rate = sf.read(str(corpus / name), dtype="float32")
        inputs = extractor(audio, sampling_rate=rate)
        codes = model.encode(inputs["input_features"], num_samples=inputs["num_samples"]).audio_codes[0, 0]
        frames = torch.from_numpy(features.clip_features(audio, rate, 0))
        assert frames.shape[1] == pooled
        ids = model.quantizer.semantic(frames)
        n = min(len(ids), len(codes))
        assert n >= 10  # (the recipe drops what the encoder marks as padding: here the silent tail too)
        assert torch.equal(ids[:n], codes[:n]), (name, (ids[:n] != codes[:n]).sum())
    with pytest.raises(SystemExit):
        recipe.main(["--audio-dir", str(corpus), "--model", str(output / "model_vocab16"), "--token-rate", "50",
                     "--output", str(tmp_path / "x")])


def test_short_and_empty_clips_are_skipped_and_named(corpus, tmp_path, capsys):
    folder = tmp_path / "audio"
    folder.mkdir()
    for name in ("speech/clip0.wav", "other/clip1.wav"):
        audio, rate = sf.read(str(corpus / name), dtype="float32")
        sf.write(str(folder / Path(name).name), audio, rate)
    sf.write(str(folder / "blip.wav"), np.full(800, 0.1, dtype=np.float32), 16000)  # 0.05 s
    sf.write(str(folder / "empty.wav"), np.zeros(0, dtype=np.float32), 16000)
    report = recipe.main(["--audio-dir", str(folder), "--tiny", "--vocab-sizes", "8", "--output",
                          str(tmp_path / "out"), "--backend", "sklearn", "--chunk-size", "64"])
    assert report["clips"] == 2 and report["frames"] > 8
    assert sorted(Path(p).name for p in report["skipped"]) == ["blip.wav", "empty.wav"]
    assert "shorter than one 0.16 s AudioMAE patch" in report["skipped"][str(folder / "blip.wav")]
    assert report["skipped"][str(folder / "empty.wav")] == "empty"
    err = capsys.readouterr().err
    assert "warning: skipped 2 of 4 audio files" in err
    assert f"{folder / 'blip.wav'}: 0.050 s" in err and f"{folder / 'empty.wav'}: empty" in err
    assert "AudioMAE features" in err and "k-means V=8" in err and "epoch 5/5" in err  # the progress bars
    # --quiet: no bars and no summary; the warnings about skipped files still print
    recipe.main(["--audio-dir", str(folder), "--tiny", "--vocab-sizes", "8", "--output", str(tmp_path / "q"),
                 "--backend", "sklearn", "--chunk-size", "64", "--quiet"])
    err = capsys.readouterr().err
    assert "k-means" not in err and "AudioMAE features" not in err and "feature frames in" not in err
    assert "warning: skipped 2 of 4 audio files" in err
    # nothing usable at all is an error, not an empty codebook
    only_short = tmp_path / "short_only"
    only_short.mkdir()
    sf.write(str(only_short / "blip.wav"), np.full(800, 0.1, dtype=np.float32), 16000)
    with pytest.raises(SystemExit, match="the only file under .* gave no features"):
        recipe.main(["--audio-dir", str(only_short), "--tiny", "--output", str(tmp_path / "o2")])


def test_saved_codec_config_names_the_new_codebook(corpus, tmp_path):
    """No stale provenance: the official codebook's file name and digest are replaced by the new file's."""
    import hashlib

    from semanticodec_hf import SemantiCodecConfig
    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    tokenizer = SemantiCodecAudioTokenizer.tiny(seed=0)
    old = "codebook_idx/combine_512_audioset_dominate/codebook_32_0.npy"
    tokenizer.model.config.semantic_codebook_file = old
    tokenizer.model.config.original_checkpoint_sha256 = {"encoder.ckpt": "e" * 64, "decoder.ckpt": "d" * 64,
                                                         "codebook_32_0.npy": "c" * 64}
    tokenizer.save_pretrained(tmp_path / "converted")
    output = tmp_path / "out"
    report = recipe.main(["--audio-dir", str(corpus), "--model", str(tmp_path / "converted"), "--vocab-sizes", "16",
                          "--output", str(output), "--backend", "sklearn", "--save-models"])
    config = SemantiCodecConfig.from_pretrained(output / "model_vocab16")
    written = report["codebooks"]["16"]["file"]
    assert config.semantic_codebook_file == written != old
    assert config.semantic_codebook_sha256 == hashlib.sha256((output / written).read_bytes()).hexdigest()
    assert config.original_checkpoint_sha256 == {"encoder.ckpt": "e" * 64, "decoder.ckpt": "d" * 64}
    assert config.semantic_vocab_size == 16


def test_faiss_trains_on_every_frame_unless_asked(corpus, tmp_path, monkeypatch, capsys):
    faiss = pytest.importorskip("faiss")
    made = []
    original = faiss.Kmeans

    class Recording(original):
        def __init__(self, d, k, **kwargs):
            made.append(kwargs)
            super().__init__(d, k, **kwargs)

    monkeypatch.setattr(faiss, "Kmeans", Recording)
    report = recipe.main(["--audio-dir", str(corpus), "--tiny", "--vocab-sizes", "2", "--output", str(tmp_path / "a"),
                          "--backend", "faiss", "--kmeans-iterations", "7"])
    frames = report["frames"]
    assert frames > 256 * 2  # faiss' default bound would have subsampled this corpus
    assert made[-1]["niter"] == 7 and made[-1]["max_points_per_centroid"] * 2 >= frames
    assert "faiss trains on a random" not in capsys.readouterr().err
    recipe.main(["--audio-dir", str(corpus), "--tiny", "--vocab-sizes", "2", "--output", str(tmp_path / "b"),
                 "--backend", "faiss", "--max-points-per-centroid", "100"])
    assert made[-1]["max_points_per_centroid"] == 100 and made[-1]["niter"] == 25
    assert f"V=2: faiss trains on a random 200 of the {frames} frames" in capsys.readouterr().err
