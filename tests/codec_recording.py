"""Recording which decode path a codec took in a test: batch `decode` calls (their frame counts) and streamed
`decode_stream` pieces (their sample counts), the calls still going through."""

from typing import Any, List, Tuple


def record_decodes(monkeypatch: Any, model: Any) -> Tuple[List[int], List[int]]:
    """Patch `model.decode` / `model.decode_stream` for the test; returns the two lists they fill."""
    batch_frames: List[int] = []
    pieces: List[int] = []
    decode, decode_stream = model.decode, model.decode_stream
    monkeypatch.setattr(model, "decode", lambda codes, *a, **k: batch_frames.append(codes.shape[-1]) or
                        decode(codes, *a, **k))

    def stream(*args, **kwargs):
        for piece in decode_stream(*args, **kwargs):
            pieces.append(piece.shape[-1])
            yield piece

    monkeypatch.setattr(model, "decode_stream", stream)
    return batch_frames, pieces
