#!/usr/bin/env python
"""k-means backends for recipes/build_semantic_codebook.py at equal work: faiss (full-batch Lloyd, the recipe's
default) vs sklearn MiniBatchKMeans (partial_fit over chunks, the recipe's `--backend sklearn`), the same passes
over the same AudioMAE-sized data. faiss uses every frame (its default would train on at most 256 per cluster).

    python benchmarks/kmeans_backends.py [--frames 20000] [--dim 768] [--clusters 1024] [--passes 3]

Prints seconds per backend, the mean squared quantisation error each reaches, and one summary line:
    KMEANS sklearn_s=... faiss_s=... faiss_over_sklearn_time=... sklearn_mse=... faiss_mse=...
"""

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--clusters", type=int, default=1024)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=8192)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters * 2, args.dim)).astype(np.float32)
    data = centres[rng.integers(0, len(centres), args.frames)] + 0.5 * rng.standard_normal(
        (args.frames, args.dim)).astype(np.float32)

    def mse(centroids):
        d = (data ** 2).sum(1, keepdims=True) + (centroids ** 2).sum(1) - 2 * data @ centroids.T
        return float(np.maximum(d.min(1), 0).mean())

    from sklearn.cluster import MiniBatchKMeans

    started = time.perf_counter()
    kmeans = MiniBatchKMeans(args.clusters, batch_size=4096, n_init=1, random_state=0)
    for _ in range(args.passes):
        for start in range(0, args.frames, args.chunk):
            kmeans.partial_fit(data[start:start + args.chunk])
    sklearn_s = time.perf_counter() - started
    sklearn_mse = mse(kmeans.cluster_centers_)
    print(f"sklearn MiniBatchKMeans: {sklearn_s:.1f} s, MSE {sklearn_mse:.3f}")
    try:
        import faiss
    except ImportError:
        print("faiss not installed (pip install faiss-cpu): nothing to compare")
        return
    started = time.perf_counter()
    index = faiss.Kmeans(args.dim, args.clusters, niter=args.passes, seed=0, verbose=False,
                         max_points_per_centroid=-(-args.frames // args.clusters))  # all frames, as the recipe
    index.train(data)
    faiss_s = time.perf_counter() - started
    faiss_mse = mse(index.centroids)
    print(f"faiss Kmeans           : {faiss_s:.1f} s, MSE {faiss_mse:.3f}")
    print(f"KMEANS sklearn_s={sklearn_s:.2f} faiss_s={faiss_s:.2f} faiss_over_sklearn_time={faiss_s / sklearn_s:.2f} "
          f"sklearn_mse={sklearn_mse:.4f} faiss_mse={faiss_mse:.4f}")


if __name__ == "__main__":
    main()
