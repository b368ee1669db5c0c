"""`benchmarks/sequence_lengths.py --tiny` tokenizes generated clips with the random tiny codec and prints one
parseable line per pattern and per BPE vocabulary size, consistent with the codec's token rate and each other."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from sequence_lengths import speech_like_clips, vocab_sizes  # noqa: E402


def test_tiny_run_prints_every_pattern_and_bpe_row():
    pytest.importorskip("sentencepiece")
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "sequence_lengths.py"), "--tiny", "--clips", "4",
         "--clip-seconds", "2", "--bpe-vocab-sizes", "2x", "+100000", "--threads", "1"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    number = r"([\d.e+-]+)"
    rows = {pattern: (float(ids), float(special), float(frames), int(clips), float(seconds))
            for pattern, ids, special, frames, clips, seconds in re.findall(
                rf"^SEQLEN pattern=(\w+) ids_per_second={number} ids_per_second_with_special={number} "
                rf"frames_per_second={number} clips=(\d+) seconds={number}$", out, flags=re.M)}
    assert set(rows) == {"interleaved", "semantic_then_acoustic", "semantic_only"}
    interleaved, stacked, semantic = rows["interleaved"], rows["semantic_then_acoustic"], rows["semantic_only"]
    assert semantic[3] == 4 and semantic[4] == pytest.approx(8.0)
    # the tiny codec: 100 tokens/s, i.e. 50 frames (semantic ids) per second, up to its per-clip token budget
    assert semantic[0] == pytest.approx(semantic[2]) and 50 <= semantic[0] <= 55
    assert interleaved[0] == pytest.approx(2 * semantic[0], rel=1e-5)  # two ids per frame
    assert stacked[0] == pytest.approx(interleaved[0], rel=1e-5)
    # <bos> and <eos>: two ids per clip more
    assert interleaved[1] - interleaved[0] == pytest.approx(2 * 4 / 8.0, rel=1e-4)
    bpe = re.findall(rf"^SEQLEN pattern=semantic_only\+bpe vocab=(\d+) ids_per_second={number} "
                     rf"ids_per_second_with_special={number} frames_per_second={number} r={number} r_train={number} "
                     rf"measured_on=heldout clips=1 seconds={number}$", out, flags=re.M)
    assert [int(b[0]) for b in bpe] == [128]
    ids, _, frames, r, r_train, _ = map(float, bpe[0][1:])
    assert r >= 1 and r_train >= 1 and ids == pytest.approx(frames / r, rel=1e-4)  # pieces/s = frames/s / r
    assert re.search(r"^SEQLEN_SKIP pattern=semantic_only\+bpe vocab=100064 reason=\"the training clips support at "
                     r"most \d+ pieces\"$", out, flags=re.M)
    assert "| `semantic_only` + acoustic BPE, 128 pieces |" in out and "RANDOM tiny codec" in out


def test_generated_clips_are_deterministic_and_vocab_sizes_parse():
    a, b = speech_like_clips(2, 1.5, seed=3), speech_like_clips(2, 1.5, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and [x.shape for x in a] == [(24000,)] * 2
    assert not np.array_equal(a[0], speech_like_clips(2, 1.5, seed=4)[0])
    assert np.abs(a[0]).max() == pytest.approx(0.5) and (np.abs(a[0]) < 0.01).mean() > 0.01  # some near-silence
    assert vocab_sizes(["2x", "+256", "500", "4x", "2x"], 64) == [128, 256, 320, 500]
