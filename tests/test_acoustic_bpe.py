"""Acoustic BPE over the semantic stream: lossless for every id (seen or not), compresses repetitive streams."""

import numpy as np
import pytest

pytest.importorskip("sentencepiece")

from semanticodec_hf.acoustic_bpe import (  # noqa: E402
    UNICODE_OFFSET,
    AcousticBPE,
    ids_to_text,
    semantic_stream,
    text_to_ids,
)


def markov_streams(vocab, count, length, stay=0.6, seed=0):
    """Streams where an id often repeats and a few bigrams recur: what merges can exploit."""
    motifs = np.random.default_rng(1234).integers(0, vocab, (8, 3))  # the same "sounds" in every split
    rng = np.random.default_rng(seed)
    streams = []
    for _ in range(count):
        stream = []
        while len(stream) < length:
            if rng.random() < 0.3:
                stream.extend(motifs[rng.integers(8)].tolist())
            elif stream and rng.random() < stay:
                stream.append(stream[-1])
            else:
                stream.append(int(rng.integers(vocab)))
        streams.append(stream[:length])
    return streams


def test_character_mapping_avoids_surrogates_and_round_trips():
    ids = [0, 1, 4095, 32767]
    text = ids_to_text(ids, 32768)
    assert [ord(c) for c in text] == [UNICODE_OFFSET + i for i in ids]
    assert all(not 0xD800 <= ord(c) <= 0xDFFF for c in text) and text.encode("utf-8").decode("utf-8") == text
    assert text_to_ids(text, 32768) == ids
    with pytest.raises(ValueError, match="Id 32768 at position 1"):
        ids_to_text([0, 32768], 32768)


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_round_trip_is_lossless_and_compresses(model_type, tmp_path):
    vocab = 256
    train = markov_streams(vocab, 60, 400, seed=1)
    bpe = AcousticBPE.train(train, num_base_ids=vocab, vocab_size=600, model_type=model_type)
    held_out = markov_streams(vocab, 10, 300, seed=2) + [[vocab - 1, 0, vocab - 1], [7], []]
    unseen = sorted(set(range(vocab)) - {i for s in train for i in s})
    held_out.append(unseen + list(range(vocab)))
    for stream in held_out:
        pieces = bpe.encode(stream)
        assert 0 not in pieces, "no <unk>"
        assert bpe.decode(pieces) == stream
    ratio = bpe.compression_ratio(held_out[:10])
    assert ratio > 1.2, ratio
    bpe.save(tmp_path)
    loaded = AcousticBPE.load(tmp_path)
    assert loaded.encode(held_out[0]) == bpe.encode(held_out[0]) and loaded.vocab_size == bpe.vocab_size
    merged = max(range(1, bpe.vocab_size), key=lambda p: len(bpe.piece_ids(p)))
    assert len(bpe.piece_ids(merged)) > 1


def test_published_vocab_size_with_unseen_ids():
    streams = markov_streams(32768, 20, 200, seed=3)
    bpe = AcousticBPE.train(streams, num_base_ids=32768, vocab_size=32768 + 200)
    everything = list(range(32768))
    assert bpe.decode(bpe.encode(everything)) == everything


def test_on_codec_semantic_stream():
    from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

    tokenizer = SemantiCodecAudioTokenizer.tiny()
    t = np.arange(32000) / 16000
    audio = [(0.4 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (200, 440, 880)]
    streams = [semantic_stream(c.numpy()) for c in tokenizer.encode_audio(audio, 16000)]
    bpe = AcousticBPE.train(streams, num_base_ids=tokenizer.layout.semantic_vocab_size, vocab_size=120)
    assert all(bpe.decode(bpe.encode(s)) == s for s in streams)


def test_errors():
    with pytest.raises(ValueError, match="no room for merges"):
        AcousticBPE.train([[1, 2]], num_base_ids=10, vocab_size=11)
    with pytest.raises(ValueError, match="model_type"):
        AcousticBPE.train([[1, 2]], num_base_ids=10, vocab_size=40, model_type="wordpiece")
    bpe = AcousticBPE.train(markov_streams(16, 5, 50), num_base_ids=16, vocab_size=40)
    with pytest.raises(ValueError, match="Piece id 0 at position 1"):
        bpe.decode([1, 0])
