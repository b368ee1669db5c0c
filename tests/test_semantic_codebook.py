"""recipes/build_semantic_codebook.py: features -> k-means -> a codebook the codec loads and encodes with."""

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "recipes"))
import build_semantic_codebook as recipe  # noqa: E402

sys.path.remove(str(REPO / "recipes"))
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
        torch.testing.assert_close(model.encoder.semantic_quantizer.centroids, torch.from_numpy(centroids))
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
