"""Codec quality metrics: mel distance, multi-resolution STFT distance, SI-SDR, PESQ-wb and STOI.

Each metric takes a reference and an estimate (1-D float waveforms in [-1, 1] at one sample rate). Codecs may
return a few samples more or less than they were given, so both signals are cut to the shorter one first;
anything else that does not match (empty, NaN/Inf, several channels) is an error. `CodecMetrics.compute` scores
a set of clips, with per-domain means, in the shape of the `evaluate` library's metrics.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

MEL_BINS, MEL_N_FFT, MEL_HOP = 80, 1024, 256
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
METRIC_NAMES = ("mel_distance", "stft_distance", "si_sdr", "pesq_wb", "stoi")
LOWER_IS_BETTER = {"mel_distance": True, "stft_distance": True, "si_sdr": False, "pesq_wb": False, "stoi": False}


def _pair(reference: Any, estimate: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Validated float64 mono signals cut to the shorter length."""
    out = []
    for name, signal in (("reference", reference), ("estimate", estimate)):
        array = signal.detach().cpu().numpy() if torch.is_tensor(signal) else np.asarray(signal)
        array = np.squeeze(array)
        if array.ndim != 1:
            raise ValueError(f"The {name} must be one mono waveform; got shape {np.shape(signal)} (mix channels first).")
        if array.size == 0:
            raise ValueError(f"The {name} is empty.")
        if array.dtype.kind not in "fiu":
            raise ValueError(f"The {name} has dtype {array.dtype}; expected float samples.")
        if not np.isfinite(array).all():
            raise ValueError(f"The {name} contains NaN or Inf samples.")
        out.append(array.astype(np.float64))
    length = min(out[0].size, out[1].size)
    return out[0][:length], out[1][:length]


def _magnitude(signal: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """`[frames, n_fft // 2 + 1]` STFT magnitude, Hann window, centred with reflect padding."""
    tensor = torch.from_numpy(signal)
    if tensor.numel() <= n_fft // 2:
        tensor = torch.nn.functional.pad(tensor, (0, n_fft // 2 + 1 - tensor.numel()))
    spectrum = torch.stft(tensor, n_fft=n_fft, hop_length=hop, window=torch.hann_window(n_fft, dtype=torch.float64),
                          center=True, pad_mode="reflect", return_complex=True)
    return spectrum.abs().t().numpy()


_MEL_FILTERS: Dict[int, np.ndarray] = {}


def _mel_filters(sample_rate: int) -> np.ndarray:
    if sample_rate not in _MEL_FILTERS:
        from transformers.audio_utils import mel_filter_bank

        _MEL_FILTERS[sample_rate] = mel_filter_bank(
            num_frequency_bins=MEL_N_FFT // 2 + 1, num_mel_filters=MEL_BINS, min_frequency=0.0,
            max_frequency=sample_rate / 2, sampling_rate=sample_rate, norm="slaney", mel_scale="slaney",
        ).astype(np.float64)
    return _MEL_FILTERS[sample_rate]


def mel_distance(reference: Any, estimate: Any, sample_rate: int) -> float:
    """Mean |log10 mel(ref) - log10 mel(est)| of 80-bin magnitude mels (1024 FFT, hop 256, floor 1e-5).

    Magnitude mels scale linearly with amplitude, so a gain g gives exactly |log10 g| where no bin hits the floor.
    """
    ref, est = _pair(reference, estimate)
    filters = _mel_filters(int(sample_rate))
    ref_mel = np.log10(np.maximum(_magnitude(ref, MEL_N_FFT, MEL_HOP) @ filters, 1e-5))
    est_mel = np.log10(np.maximum(_magnitude(est, MEL_N_FFT, MEL_HOP) @ filters, 1e-5))
    return float(np.abs(ref_mel - est_mel).mean())


def multi_resolution_stft_distance(reference: Any, estimate: Any, resolutions=STFT_RESOLUTIONS) -> float:
    """Mean over resolutions of spectral convergence `||S_ref - S_est||_F / ||S_ref||_F` plus the mean
    |ln S_ref - ln S_est| of the magnitudes (floor 1e-7): the usual codec-training distance, as a metric."""
    ref, est = _pair(reference, estimate)
    totals = []
    for n_fft, hop in resolutions:
        ref_mag, est_mag = _magnitude(ref, n_fft, hop), _magnitude(est, n_fft, hop)
        convergence = np.linalg.norm(ref_mag - est_mag) / max(np.linalg.norm(ref_mag), 1e-12)
        log_distance = np.abs(np.log(np.maximum(ref_mag, 1e-7)) - np.log(np.maximum(est_mag, 1e-7))).mean()
        totals.append(convergence + log_distance)
    return float(np.mean(totals))


def si_sdr(reference: Any, estimate: Any) -> float:
    """Scale-invariant SDR in dB (zero-mean signals); `inf` for an exact (scaled) copy, `-inf` for silence."""
    ref, est = _pair(reference, estimate)
    ref, est = ref - ref.mean(), est - est.mean()
    energy = float(np.dot(ref, ref))
    if energy == 0.0:
        raise ValueError("SI-SDR is undefined for a silent (constant) reference.")
    target = (np.dot(est, ref) / energy) * ref
    noise = est - target
    noise_energy, target_energy = float(np.dot(noise, noise)), float(np.dot(target, target))
    if noise_energy == 0.0:
        return math.inf
    if target_energy == 0.0:
        return -math.inf
    return float(10.0 * np.log10(target_energy / noise_energy))


def _at_16k(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == 16000:
        return signal
    import soxr

    return soxr.resample(signal, sample_rate, 16000, quality="HQ")


def pesq_wb(reference: Any, estimate: Any, sample_rate: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2) at 16 kHz (`pesq` package); other rates are resampled with soxr first."""
    try:
        from pesq import pesq
    except ImportError:
        raise ImportError("PESQ needs the `pesq` package: pip install pesq (or semanticodec-hf[eval]).") from None
    ref, est = _pair(reference, estimate)
    return float(pesq(16000, _at_16k(ref, sample_rate), _at_16k(est, sample_rate), "wb"))


def stoi(reference: Any, estimate: Any, sample_rate: int, extended: bool = False) -> float:
    """Short-time objective intelligibility (`pystoi`, resamples to 10 kHz internally)."""
    try:
        from pystoi import stoi as compute_stoi
    except ImportError:
        raise ImportError("STOI needs the `pystoi` package: pip install pystoi (or semanticodec-hf[eval]).") from None
    ref, est = _pair(reference, estimate)
    return float(compute_stoi(ref, est, int(sample_rate), extended=extended))


def score_clip(reference: Any, estimate: Any, sample_rate: int, speech: bool) -> Dict[str, Optional[float]]:
    """All metrics of one clip; PESQ and STOI only for speech (None otherwise)."""
    scores: Dict[str, Optional[float]] = {
        "mel_distance": mel_distance(reference, estimate, sample_rate),
        "stft_distance": multi_resolution_stft_distance(reference, estimate),
        "si_sdr": si_sdr(reference, estimate),
        "pesq_wb": None,
        "stoi": None,
    }
    if speech:
        scores["pesq_wb"] = pesq_wb(reference, estimate, sample_rate)
        scores["stoi"] = stoi(reference, estimate, sample_rate)
    return scores


def _means(rows: Sequence[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    means: Dict[str, Optional[float]] = {"clips": float(len(rows))}
    for name in METRIC_NAMES:
        values = [row[name] for row in rows if row.get(name) is not None and math.isfinite(row[name])]
        means[name] = float(np.mean(values)) if values else None
    return means


class CodecMetrics:
    """Score reconstructions against references, per clip and per domain (`evaluate`-style `compute`).

        metric = CodecMetrics()
        results = metric.compute(predictions=reconstructions, references=originals, sample_rate=16000,
                                 domains=["speech", "music"], speech=[True, False])

    Returns `{"per_clip": [...], "per_domain": {domain: means}, "overall": means}`; means skip clips where a
    metric does not apply (PESQ/STOI on non-speech) and non-finite values (SI-SDR of an exact copy is `inf`).
    """

    name = "semanticodec_codec_metrics"

    def compute(
        self,
        predictions: Sequence[Any],
        references: Sequence[Any],
        sample_rate: int,
        domains: Optional[Sequence[str]] = None,
        speech: Optional[Sequence[bool]] = None,
        names: Optional[Sequence[str]] = None,
    ) -> Dict[str, Any]:
        if len(predictions) != len(references):
            raise ValueError(f"Got {len(predictions)} predictions for {len(references)} references.")
        count = len(references)
        domains = list(domains) if domains is not None else ["all"] * count
        speech = list(speech) if speech is not None else [False] * count
        names = list(names) if names is not None else [str(i) for i in range(count)]
        if not len(domains) == len(speech) == len(names) == count:
            raise ValueError("domains, speech and names must have one entry per clip.")
        rows: List[Dict[str, Any]] = []
        for index in range(count):
            try:
                scores = score_clip(references[index], predictions[index], sample_rate, bool(speech[index]))
            except ValueError as error:
                raise ValueError(f"Clip {names[index]!r}: {error}") from None
            rows.append({"clip": names[index], "domain": domains[index], **scores})
        per_domain = {domain: _means([r for r in rows if r["domain"] == domain]) for domain in dict.fromkeys(domains)}
        return {"per_clip": rows, "per_domain": per_domain, "overall": _means(rows)}


def _format(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def write_report(systems: Dict[str, Dict[str, Any]], output_dir: Any, bitrates: Optional[Dict[str, float]] = None,
                 tokens_per_second: Optional[Dict[str, float]] = None) -> Dict[str, str]:
    """`metrics.md` (per system and domain), `metrics.csv` (per clip) and, when bitrates are known,
    `metrics.png` (each metric against bitrate, one point per system). Returns the written paths."""
    import csv
    from pathlib import Path

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    bitrates, tokens_per_second = dict(bitrates or {}), dict(tokens_per_second or {})
    header = ["system", "domain", "clips", "bitrate_bps", "tokens_per_s", *METRIC_NAMES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for system, results in systems.items():
        for domain, means in [*results["per_domain"].items(), ("ALL", results["overall"])]:
            cells = [system, domain, str(int(means["clips"])), _format(bitrates.get(system)),
                     _format(tokens_per_second.get(system)), *(_format(means[m]) for m in METRIC_NAMES)]
            lines.append("| " + " | ".join(cells) + " |")
    (output / "metrics.md").write_text("\n".join(lines) + "\n")
    with open(output / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["system", "clip", "domain", *METRIC_NAMES])
        for system, results in systems.items():
            for row in results["per_clip"]:
                writer.writerow([system, row["clip"], row["domain"], *("" if row[m] is None else row[m]
                                                                       for m in METRIC_NAMES)])
    written = {"markdown": str(output / "metrics.md"), "csv": str(output / "metrics.csv")}
    plotted = [s for s in systems if s in bitrates]
    if plotted:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("The plot needs matplotlib: pip install matplotlib (or semanticodec-hf[eval]).") from None
        figure, axes = plt.subplots(1, len(METRIC_NAMES), figsize=(4 * len(METRIC_NAMES), 3.5))
        for axis, metric in zip(axes, METRIC_NAMES):
            for system in plotted:
                value = systems[system]["overall"][metric]
                if value is not None and math.isfinite(value):
                    axis.scatter(bitrates[system], value)
                    axis.annotate(system, (bitrates[system], value), fontsize=7)
            axis.set_xlabel("bitrate (bit/s)")
            axis.set_title(metric + (" (lower is better)" if LOWER_IS_BETTER[metric] else ""), fontsize=9)
        figure.tight_layout()
        figure.savefig(output / "metrics.png", dpi=100)
        plt.close(figure)
        written["plot"] = str(output / "metrics.png")
    return written


__all__ = ["CodecMetrics", "mel_distance", "multi_resolution_stft_distance", "si_sdr", "pesq_wb", "stoi",
           "score_clip", "write_report", "METRIC_NAMES"]
