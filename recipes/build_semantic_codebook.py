#!/usr/bin/env python
"""Build SemantiCodec semantic codebooks: AudioMAE features over a corpus -> k-means at the asked vocab sizes.

1. Features: every clip goes through the codec's own front end and frozen AudioMAE, pooled per token rate
   (none / 1x2 / 2x2 for 100 / 50 / 25 tokens/s) exactly as the encoder does before its semantic quantizer;
   padding frames are dropped. This runs as `datasets.map(batched=True)` (cached, `--num-proc` workers). Clips
   shorter than one AudioMAE patch (0.16 s, the codec's shortest input) or empty are skipped; a warning at the end
   names them and counts them.
2. k-means per vocab size with faiss (full-batch Lloyd, `--kmeans-iterations` iterations over all the features,
   held in memory: faiss's default would silently train on a random 256 x V of them; `--max-points-per-centroid`
   asks for that subsampling explicitly, and it is then logged).
   At equal passes over the same data faiss was much faster than scikit-learn's MiniBatchKMeans and reached a
   lower quantisation error, so it is the default (`benchmarks/kmeans_backends.py` compares them; the README
   has the numbers).
   `--backend sklearn` streams the Arrow feature table through `partial_fit` in chunks (`--epochs` passes), for
   corpora whose features do not fit in memory (or machines without faiss).
3. Output per vocab size V: the centroids `[V, D]` float32 at the official relative path
   `codebook_idx/combine_{W}_audioset_dominate/codebook_{V/2}_0.npy` (so `semanticodec-hf convert
   --checkpoint-dir` picks it up next to official checkpoints), cluster-usage statistics in `stats.json`, and
   with `--save-models` a copy of the codec using the new codebook (`OUTPUT/model_vocab{V}`; its config names
   the new file and its SHA-256, and drops the replaced official codebook's digest).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from semanticodec_hf.codec_timing import PATCH_SECONDS, SAMPLING_RATE, padded_min_samples
from semanticodec_hf.cpu_threads import add_threads_option, use_threads
from semanticodec_hf.progress import progress_bar

EXAMPLES = """examples:
  # smoke test on any folder with a RANDOM tiny codec and small vocabularies (--token-rate 100, 50 or 25)
  python recipes/build_semantic_codebook.py --audio-dir ./clips --tiny --vocab-sizes 16 32 --output ./codebooks

  # the published vocab sizes for the 50 tokens/s codec, 8 feature workers
  python recipes/build_semantic_codebook.py --audio-dir /data/audio --model ./semanticodec-50tps-8192 \\
      --output ./codebooks-50 --num-proc 8 --max-frames-per-clip 200 --save-models
"""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio-dir", required=True, help="folder searched recursively for audio files")
    codec = parser.add_mutually_exclusive_group(required=True)
    codec.add_argument("--model", help="converted SemantiCodec folder (its AudioMAE and token rate are used)")
    codec.add_argument("--tiny", action="store_true", help="RANDOM tiny codec: pipeline tests only")
    parser.add_argument("--token-rate", type=int, choices=[25, 50, 100], default=None,
                        help="token rate of the --tiny codec (its pooling: none / 1x2 / 2x2); default 100. A "
                        "--model brings its own.")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--vocab-sizes", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    parser.add_argument("--max-frames-per-clip", type=int, default=None,
                        help="random subset of each clip's frames (seeded); bounds the feature table")
    parser.add_argument("--backend", choices=["auto", "faiss", "sklearn"], default="auto",
                        help="auto: faiss when installed (faster here), else scikit-learn (streams from disk)")
    parser.add_argument("--epochs", type=int, default=5, help="sklearn: passes over the features")
    parser.add_argument("--kmeans-iterations", type=int, default=25,
                        help="faiss: Lloyd iterations over all features (default 25, faiss's own default)")
    parser.add_argument("--max-points-per-centroid", type=int, default=None,
                        help="faiss: train on at most this many frames per cluster (a logged random subsample); "
                        "default: all frames")
    parser.add_argument("--chunk-size", type=int, default=65536, help="feature rows per partial_fit call")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per feature-extraction map batch")
    parser.add_argument("--num-proc", type=int, default=1, help="feature-extraction worker processes")
    parser.add_argument("--extensions", default="wav,flac,ogg")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-models", action="store_true", help="also write the codec with each new codebook")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bars (feature extraction, k-means) or summaries on stderr")
    add_threads_option(parser)
    args = parser.parse_args(argv)
    if args.token_rate is not None and not args.tiny:
        parser.error("--token-rate configures the --tiny codec; a --model brings its own token rate.")
    for name in ("epochs", "kmeans_iterations", "max_points_per_centroid", "chunk_size", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}.")
    return args


# ---------------------------------------------------------------------------------------------- features
_CODEC_CACHE: Dict[str, Any] = {}
FEATURES_VERSION = 2  # part of the map fingerprint: bump when the table's columns change (2: `skipped`)
# Clips the codec cannot encode (its front end needs one AudioMAE patch, 0.16 s = 2560 samples at 16 kHz; one
# sample of margin covers the resamplers' rounding) are skipped rather than aborting the whole corpus.
MIN_CLIP_SAMPLES_16K = padded_min_samples(SAMPLING_RATE)  # 2561


def unusable_reason(num_samples: int, sampling_rate: int) -> Optional[str]:
    """Why a clip of this length cannot give features (None when it can)."""
    if num_samples == 0:
        return "empty"
    if num_samples * SAMPLING_RATE / sampling_rate < MIN_CLIP_SAMPLES_16K:
        return f"{num_samples / sampling_rate:.3f} s, shorter than one {PATCH_SECONDS} s AudioMAE patch"
    return None


class AudioMAEFeatures:
    """`datasets.map(batched=True)` function: audio paths -> pooled AudioMAE frame features (padding dropped).

    The codec is loaded once per process; the fingerprint names only the codec location and settings, never
    its weights, so the map cache is cheap to check.
    """

    def __init__(self, model_path: str, max_frames_per_clip: Optional[int], seed: int):
        self.model_path, self.max_frames_per_clip, self.seed = model_path, max_frames_per_clip, seed

    def _codec(self):
        if self.model_path not in _CODEC_CACHE:
            from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel

            _CODEC_CACHE[self.model_path] = (SemantiCodecModel.from_pretrained(self.model_path).eval(),
                                             SemantiCodecFeatureExtractor.from_pretrained(self.model_path))
        return _CODEC_CACHE[self.model_path]

    def clip_features(self, audio, sampling_rate: int, row: int):
        import numpy as np
        import torch

        from semanticodec_hf.modeling_semanticodec_encoder import frames_kept, padding_cut

        model, feature_extractor = self._codec()
        config = model.config
        features = feature_extractor(audio, sampling_rate=sampling_rate, return_tensors="pt")["input_features"]
        windows = features.reshape(-1, config.window_frames, config.num_mel_bins)
        with torch.inference_mode():
            frames = model.encoder.pool(model.encoder.audiomae_features(windows))
            kept = frames_kept(padding_cut(windows), config.window_frames, config.frames_per_window)
        rows = torch.cat([frames[w, : int(kept[w])] for w in range(frames.shape[0])]).numpy().astype(np.float32)
        if self.max_frames_per_clip is not None and rows.shape[0] > self.max_frames_per_clip:
            pick = np.random.default_rng([self.seed, row]).choice(rows.shape[0], self.max_frames_per_clip,
                                                                   replace=False)
            rows = rows[np.sort(pick)]
        return rows

    def __call__(self, batch: Dict[str, List[Any]], indices: List[int]) -> Dict[str, List[Any]]:
        from semanticodec_hf.datasets_utils import load_audio

        out: Dict[str, List[Any]] = {"features": [], "num_frames": [], "skipped": []}
        for path, row in zip(batch["path"], indices):
            audio, rate = load_audio(path, row=row)
            reason = unusable_reason(audio.shape[-1], rate)
            if reason is None:
                rows = self.clip_features(audio, rate, row)
            else:  # an empty [0, D] block: Arrow needs the same nesting as the other rows of the batch
                import numpy as np

                rows = np.zeros((0, self._codec()[0].quantizer.semantic.centroids.shape[1]), np.float32)
            out["features"].append(rows)
            out["num_frames"].append(len(rows))
            out["skipped"].append(reason or "")
        return out


def extract_features(paths: List[str], model_path: str, args: argparse.Namespace):
    """The corpus' feature table (`features [frames, D]` per clip), cached by `datasets`."""
    import datasets

    function = AudioMAEFeatures(model_path, args.max_frames_per_clip, args.seed)
    fingerprint = datasets.fingerprint.Hasher.hash(
        {"model": model_path, "files": paths, "max_frames": args.max_frames_per_clip, "seed": args.seed,
         "version": FEATURES_VERSION})
    table = datasets.Dataset.from_dict({"path": paths})
    # explicit output types: a batch of skipped clips alone would otherwise be typed as lists of nulls
    features = datasets.Features({"path": datasets.Value("string"),
                                  "features": datasets.List(datasets.List(datasets.Value("float32"))),
                                  "num_frames": datasets.Value("int64"), "skipped": datasets.Value("string")})
    # the feature-extraction bar is datasets.map's own: --quiet turns it off for this call only
    bars_were_on = datasets.is_progress_bar_enabled()
    if args.quiet:
        datasets.disable_progress_bars()
    try:
        return table.map(function, batched=True, batch_size=args.batch_size, with_indices=True, features=features,
                         num_proc=args.num_proc if args.num_proc > 1 else None, new_fingerprint=fingerprint,
                         desc="AudioMAE features")
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()


def feature_chunks(table, chunk_size: int, order):
    """Feature rows `[n, D]` float32, `chunk_size` rows at a time, clips in the given order."""
    import numpy as np

    pending, count = [], 0
    for start in range(0, len(order), 64):
        for clip in table.select(order[start:start + 64]).with_format("numpy")["features"]:
            if len(clip) == 0:  # a skipped clip
                continue
            clip = np.asarray(clip, dtype=np.float32)
            if clip.ndim == 1:  # numpy formatting gives an object array of rows for ragged lists
                clip = np.stack(clip).astype(np.float32)
            pending.append(clip)
            count += clip.shape[0]
            if count >= chunk_size:
                joined = np.concatenate(pending)
                yield joined[:chunk_size]
                pending, count = [joined[chunk_size:]], joined.shape[0] - chunk_size
    if count:
        yield np.concatenate(pending)


# ---------------------------------------------------------------------------------------------- k-means
def kmeans_sklearn(table, vocab_size: int, args: argparse.Namespace):
    import numpy as np
    from sklearn.cluster import MiniBatchKMeans

    chunk_size = max(args.chunk_size, 3 * vocab_size)  # k-means++ needs a first chunk well above V
    kmeans = MiniBatchKMeans(n_clusters=vocab_size, batch_size=min(chunk_size, 4096), random_state=args.seed,
                             n_init=1, init="k-means++", reassignment_ratio=0.01)
    rng = np.random.default_rng(args.seed)
    frames = int(sum(table["num_frames"]))
    with progress_bar(total=args.epochs * frames, desc=f"k-means V={vocab_size}", unit="frame", unit_scale=True,
                      quiet=args.quiet) as bar:
        for epoch in range(args.epochs):
            bar.set_postfix_str(f"epoch {epoch + 1}/{args.epochs}")
            for chunk in feature_chunks(table, chunk_size, rng.permutation(len(table)).tolist()):
                if not hasattr(kmeans, "cluster_centers_") and chunk.shape[0] < vocab_size:
                    raise ValueError(f"the first feature chunk has {chunk.shape[0]} frames, fewer than {vocab_size} "
                                     "clusters; raise --chunk-size or use more audio.")
                kmeans.partial_fit(chunk)
                bar.update(chunk.shape[0])
    return kmeans.cluster_centers_.astype(np.float32)


def kmeans_faiss(table, vocab_size: int, args: argparse.Namespace):
    import numpy as np

    try:
        import faiss
    except ImportError:
        raise SystemExit("error: --backend faiss needs `pip install faiss-cpu` (or faiss-gpu); "
                         "or use --backend sklearn.") from None
    data = np.concatenate(list(feature_chunks(table, args.chunk_size, list(range(len(table))))))
    # faiss trains on a random max_points_per_centroid x V of the frames (its default: 256) and says so only in
    # a console warning; by default the bound is set so that every frame is used.
    limit = args.max_points_per_centroid or -(-data.shape[0] // vocab_size)
    if limit * vocab_size < data.shape[0]:
        print(f"V={vocab_size}: faiss trains on a random {limit * vocab_size} of the {data.shape[0]} frames "
              f"(--max-points-per-centroid {limit})", file=sys.stderr)
    # faiss trains in one call: its own verbose mode prints each iteration (time, objective) as progress
    kmeans = faiss.Kmeans(data.shape[1], vocab_size, niter=args.kmeans_iterations, seed=args.seed,
                          verbose=not args.quiet, max_points_per_centroid=limit)
    kmeans.train(data)
    return kmeans.centroids.astype(np.float32)


def usage_statistics(table, centroids, chunk_size: int) -> Dict[str, Any]:
    """How the corpus' frames spread over the clusters, assigned with the codec's own quantizer."""
    import numpy as np
    import torch

    from semanticodec_hf.modeling_semanticodec_quantizer import SemanticQuantizer

    quantizer = SemanticQuantizer(*centroids.shape)
    quantizer.centroids.copy_(torch.from_numpy(centroids))
    counts = np.zeros(centroids.shape[0], dtype=np.int64)
    squared_error = 0.0
    for chunk in feature_chunks(table, chunk_size, list(range(len(table)))):
        features = torch.from_numpy(chunk)
        ids = quantizer(features)
        counts += np.bincount(ids.numpy(), minlength=centroids.shape[0])
        squared_error += float(((features - quantizer.embed(ids)) ** 2).sum())
    total = int(counts.sum())
    share = counts[counts > 0] / total
    return {
        "vocab_size": int(centroids.shape[0]), "feature_dim": int(centroids.shape[1]), "frames": total,
        "used_clusters": int((counts > 0).sum()), "used_fraction": float((counts > 0).mean()),
        "perplexity": float(np.exp(-(share * np.log(share)).sum())),
        "largest_cluster_share": float(counts.max() / total), "mean_squared_error": squared_error / total,
    }


def codebook_path(output: Path, frames_per_window: int, vocab_size: int) -> Path:
    """The official layout (`combine_{W}_audioset_dominate/codebook_{V/2}_0.npy`: the file number is V/2)."""
    return output / "codebook_idx" / f"combine_{frames_per_window}_audioset_dominate" / f"codebook_{vocab_size // 2}_0.npy"


def save_model_with_codebook(model_path: str, centroids, target: Path, codebook_file: Optional[Path] = None,
                             codebook_name: Optional[str] = None) -> None:
    """A copy of the codec whose semantic quantizer uses `centroids` (the decoder only sees centroid vectors,
    so nothing else changes). Its config's provenance follows: `semantic_codebook_file` names the new file
    (`codebook_name`, else None), `semantic_codebook_sha256` is its digest, and the digest of the official
    codebook it replaces is dropped from `original_checkpoint_sha256` (the encoder/decoder digests still hold)."""
    import torch

    from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel

    model = SemantiCodecModel.from_pretrained(model_path)
    if centroids.shape[1] != model.quantizer.semantic.centroids.shape[1]:
        raise ValueError(f"codebook width {centroids.shape[1]} does not match the codec's feature dimension "
                         f"{model.quantizer.semantic.centroids.shape[1]}.")
    model.quantizer.semantic.centroids = torch.from_numpy(centroids).clone()
    config = model.config
    replaced = config.semantic_codebook_file
    config.semantic_vocab_size = int(centroids.shape[0])
    config.semantic_codebook_file = codebook_name
    config.semantic_codebook_sha256 = hashlib.sha256(Path(codebook_file).read_bytes()).hexdigest() \
        if codebook_file is not None else None
    digests = getattr(config, "original_checkpoint_sha256", None)
    if isinstance(digests, dict) and replaced:
        config.original_checkpoint_sha256 = {name: digest for name, digest in digests.items()
                                             if name not in (replaced, Path(replaced).name)}
    model.save_pretrained(target)
    SemantiCodecFeatureExtractor.from_pretrained(model_path).save_pretrained(target)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    use_threads(args.threads)
    import numpy as np

    audio_dir, output = Path(args.audio_dir), Path(args.output)
    if not audio_dir.is_dir():
        raise SystemExit(f"error: --audio-dir {audio_dir} is not a folder.")
    bad = [v for v in args.vocab_sizes if v < 2 or v % 2]
    if bad:
        raise SystemExit(f"error: vocab sizes must be even numbers >= 2 (the file is named after V/2), got {bad}.")
    wanted = {"." + e.lower().lstrip(".") for e in args.extensions.split(",")}
    paths = sorted(str(p) for p in audio_dir.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
    if not paths:
        raise SystemExit(f"error: no {sorted(wanted)} files under {audio_dir}.")
    output.mkdir(parents=True, exist_ok=True)
    model_path = args.model
    if args.tiny:
        print("*** --tiny: a RANDOM tiny codec; its features and codebooks are meaningless (pipeline test).",
              file=sys.stderr)
        from semanticodec_hf.tokenization_semanticodec import SemantiCodecAudioTokenizer

        rate = args.token_rate or 100
        model_path = str(output / f"tiny_codec_{rate}tps_seed{args.seed}")
        if not (Path(model_path) / "config.json").is_file():
            SemantiCodecAudioTokenizer.tiny(seed=args.seed, token_rate=rate).save_pretrained(model_path)
    started = time.perf_counter()
    table = extract_features(paths, model_path, args)
    frames = int(sum(table["num_frames"]))
    skipped = {path: reason for path, reason in zip(table["path"], table["skipped"]) if reason}
    used = len(paths) - len(skipped)
    if not args.quiet:
        print(f"{used} clips -> {frames} feature frames in {time.perf_counter() - started:.1f} s"
              + (f" ({len(skipped)} skipped, listed at the end)" if skipped else ""), file=sys.stderr)
    if not frames:
        found = (f"the only file under {audio_dir} gave no features (empty" if len(paths) == 1 else
                 f"none of the {len(paths)} files under {audio_dir} gave features (all empty")
        raise SystemExit(f"error: {found} or shorter than 0.16 s); use longer audio.")
    too_big = [v for v in args.vocab_sizes if v > frames]
    if too_big:
        raise SystemExit(f"error: vocab size(s) {too_big} exceed the {frames} feature frames; use more audio.")
    from semanticodec_hf import SemantiCodecConfig

    config = SemantiCodecConfig.from_pretrained(model_path)
    if args.backend == "auto":
        try:
            import faiss  # noqa: F401

            args.backend = "faiss"
        except ImportError:
            print("faiss not installed (pip install faiss-cpu): using scikit-learn's MiniBatchKMeans", file=sys.stderr)
            args.backend = "sklearn"
    report: Dict[str, Any] = {"model": model_path, "token_rate": config.token_rate, "clips": used,
                              "frames": frames, "backend": args.backend, "skipped": skipped, "codebooks": {}}
    for vocab_size in args.vocab_sizes:
        started = time.perf_counter()
        fit = kmeans_faiss if args.backend == "faiss" else kmeans_sklearn
        centroids = fit(table, vocab_size, args)
        path = codebook_path(output, config.frames_per_window, vocab_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, centroids)
        stats = usage_statistics(table, centroids, args.chunk_size)
        stats.update(file=str(path.relative_to(output)), seconds=round(time.perf_counter() - started, 2))
        if args.save_models:
            target = output / f"model_vocab{vocab_size}"
            save_model_with_codebook(model_path, centroids, target, path, str(path.relative_to(output)))
            stats["model"] = str(target)
        report["codebooks"][str(vocab_size)] = stats
        print(f"V={vocab_size}: {stats['used_clusters']}/{vocab_size} clusters used, perplexity "
              f"{stats['perplexity']:.1f}, largest cluster {100 * stats['largest_cluster_share']:.1f} % of frames, "
              f"MSE {stats['mean_squared_error']:.4g} -> {path}")
    (output / "stats.json").write_text(json.dumps(report, indent=2) + "\n")
    if skipped:
        print(f"warning: skipped {len(skipped)} of {len(paths)} audio files (too short or empty for the codec):",
              file=sys.stderr)
        for path, reason in skipped.items():
            print(f"  {path}: {reason}", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
