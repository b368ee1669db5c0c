"""Codec quality metrics: mel distance, multi-resolution STFT distance, SI-SDR, PESQ-wb and STOI.

Each metric takes a reference, an estimate (1-D float waveforms, nominally in [-1, 1]) and their sample rate.
Codecs may return a few samples more or less than they were given, so **both signals are trimmed to the shorter
one** before scoring. Anything else that does not match is a `ValueError`: an empty signal, NaN/Inf samples,
several channels, or a reference and an estimate at different sample rates (pass `estimate_sample_rate=` to have
that checked; resample first, these metrics never resample one side silently). `CodecMetrics.compute` scores a
set of clips, with per-domain means, in the shape of the `evaluate` library's metrics, and `write_report`
writes them as markdown, CSV and a metric-vs-bitrate plot.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

MEL_BINS, MEL_N_FFT, MEL_HOP = 80, 1024, 256
MEL_FLOOR = 1e-5
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
SI_SDR_MAX_DB = 120.0  # an exact (scaled) copy scores this instead of +inf, so it can be averaged
METRIC_NAMES = ("mel_distance", "stft_distance", "si_sdr", "pesq_wb", "stoi")
LOWER_IS_BETTER = {"mel_distance": True, "stft_distance": True, "si_sdr": False, "pesq_wb": False, "stoi": False}


def _check_rate(sample_rate: Any, estimate_sample_rate: Any = None, required: bool = True) -> Optional[int]:
    """The sample rate as an int; a ValueError if it is not positive or the estimate's rate differs."""
    if sample_rate is None:
        if required:
            raise ValueError("A sample rate is required.")
        if estimate_sample_rate is not None:
            raise ValueError("estimate_sample_rate was given without the reference's sample_rate.")
        return None
    if isinstance(sample_rate, bool) or not float(sample_rate).is_integer() or sample_rate <= 0:
        raise ValueError(f"The sample rate must be a positive whole number of Hz; got {sample_rate!r}.")
    if estimate_sample_rate is not None and int(estimate_sample_rate) != int(sample_rate):
        raise ValueError(
            f"The reference is at {int(sample_rate)} Hz but the estimate at {int(estimate_sample_rate)} Hz; "
            "resample one of them (e.g. with soxr) so both share a rate."
        )
    return int(sample_rate)


def _pair(reference: Any, estimate: Any) -> Tuple[np.ndarray, np.ndarray]:
    """Validated float64 mono signals, both trimmed to the shorter length."""
    out = []
    for name, signal in (("reference", reference), ("estimate", estimate)):
        array = signal.detach().cpu().numpy() if torch.is_tensor(signal) else np.asarray(signal)
        if array.size == 0:
            raise ValueError(f"The {name} is empty (no samples).")
        array = np.squeeze(array)
        if array.ndim != 1:
            raise ValueError(f"The {name} must be one mono waveform; got shape {np.shape(signal)} (mix channels first).")
        if array.dtype.kind not in "fiu":
            raise ValueError(f"The {name} has dtype {array.dtype}; expected float samples.")
        if not np.isfinite(array).all():
            raise ValueError(f"The {name} contains NaN or Inf samples.")
        out.append(array.astype(np.float64))
    length = min(out[0].size, out[1].size)
    return out[0][:length], out[1][:length]


def _magnitude(signal: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """`[frames, n_fft // 2 + 1]` STFT magnitude, periodic Hann window, centred with reflect padding."""
    tensor = torch.from_numpy(signal)
    if tensor.numel() <= n_fft // 2:  # reflect padding needs more samples than the pad
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


def mel_distance(reference: Any, estimate: Any, sample_rate: int, estimate_sample_rate: Optional[int] = None) -> float:
    """Mean |log10 mel(ref) - log10 mel(est)| over 80-bin *power* mel spectrograms (1024-point FFT, hop 256,
    Slaney mel scale, values clamped to at least 1e-5). 0 for identical signals; lower is better.

    Both signals are trimmed to the shorter length first. Power mels scale with the square of the amplitude,
    so a gain g gives exactly |log10 g^2| in every bin where the clamp is not hit (0.5 -> |log10 0.25|).
    """
    rate = _check_rate(sample_rate, estimate_sample_rate)
    ref, est = _pair(reference, estimate)
    filters = _mel_filters(rate)
    ref_mel = np.log10(np.maximum(_magnitude(ref, MEL_N_FFT, MEL_HOP) ** 2 @ filters, MEL_FLOOR))
    est_mel = np.log10(np.maximum(_magnitude(est, MEL_N_FFT, MEL_HOP) ** 2 @ filters, MEL_FLOOR))
    return float(np.abs(ref_mel - est_mel).mean())


def multi_resolution_stft_distance(reference: Any, estimate: Any, sample_rate: Optional[int] = None,
                                   estimate_sample_rate: Optional[int] = None,
                                   resolutions: Sequence[Tuple[int, int]] = STFT_RESOLUTIONS) -> float:
    """Mean over (n_fft, hop) resolutions (512, 128), (1024, 256), (2048, 512) of the spectral convergence
    `||S_ref - S_est||_F / ||S_ref||_F` plus the mean |ln S_ref - ln S_est| of the STFT magnitudes (floor 1e-7):
    the usual codec-training loss, used as a metric. 0 for identical signals; lower is better.

    Both signals are trimmed to the shorter length first. `sample_rate` only serves the rate check (the
    resolutions are in samples).
    """
    _check_rate(sample_rate, estimate_sample_rate, required=False)
    ref, est = _pair(reference, estimate)
    totals = []
    for n_fft, hop in resolutions:
        ref_mag, est_mag = _magnitude(ref, n_fft, hop), _magnitude(est, n_fft, hop)
        convergence = np.linalg.norm(ref_mag - est_mag) / max(np.linalg.norm(ref_mag), 1e-12)
        log_distance = np.abs(np.log(np.maximum(ref_mag, 1e-7)) - np.log(np.maximum(est_mag, 1e-7))).mean()
        totals.append(convergence + log_distance)
    return float(np.mean(totals))


def si_sdr(reference: Any, estimate: Any, sample_rate: Optional[int] = None,
           estimate_sample_rate: Optional[int] = None) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019) of zero-mean signals; higher is
    better. The estimate is projected onto the reference: target = <est, ref> / ||ref||^2 * ref, and the ratio
    is ||target||^2 / ||est - target||^2. A gain on the estimate leaves it unchanged.

    Both signals are trimmed to the shorter length first. Energies get a floor of 1e-12 x the reference's
    energy, so an exact (scaled) copy scores about +120 dB instead of +inf, and a silent (constant) estimate
    exactly -120 dB. A silent (constant) reference is a ValueError. `sample_rate` only serves the rate check.
    """
    _check_rate(sample_rate, estimate_sample_rate, required=False)
    ref, est = _pair(reference, estimate)
    ref, est = ref - ref.mean(), est - est.mean()
    energy = float(np.dot(ref, ref))
    if energy == 0.0:
        raise ValueError("SI-SDR is undefined for a silent (constant) reference.")
    if not np.any(est):
        return -SI_SDR_MAX_DB  # a silent (constant) estimate: nothing of the reference survives
    target = (np.dot(est, ref) / energy) * ref
    noise = est - target
    floor = energy * 10.0 ** (-SI_SDR_MAX_DB / 10.0)
    return float(10.0 * np.log10((np.dot(target, target) + floor) / (np.dot(noise, noise) + floor)))


def _at_16k(signal: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == 16000:
        return signal
    import soxr

    return soxr.resample(signal, sample_rate, 16000, quality="HQ")


def pesq_wb(reference: Any, estimate: Any, sample_rate: int, estimate_sample_rate: Optional[int] = None) -> float:
    """Wide-band PESQ (ITU-T P.862.2, `pesq` package, mode "wb") at 16 kHz: about 1.04 (bad) to 4.64 (identical).
    Other rates are resampled to 16 kHz with soxr first. Speech only: it is meaningless on music or sound.

    Both signals are trimmed to the shorter length first. A clip PESQ cannot score (shorter than 1/4 s, or no
    speech-like activity in the reference) is a ValueError.
    """
    rate = _check_rate(sample_rate, estimate_sample_rate)
    try:
        from pesq import PesqError, pesq
    except ImportError:
        raise ImportError("PESQ needs the `pesq` package: pip install pesq (or semanticodec-hf[eval]).") from None
    ref, est = _pair(reference, estimate)
    ref, est = _at_16k(ref, rate), _at_16k(est, rate)
    if ref.size < 16000 // 4:
        raise ValueError(f"PESQ needs at least 0.25 s of audio; got {ref.size / 16000:.3f} s.")
    try:
        return float(pesq(16000, ref, est, "wb"))
    except PesqError as error:
        raise ValueError(f"PESQ cannot score this clip ({type(error).__name__}: {error}).") from None


def stoi(reference: Any, estimate: Any, sample_rate: int, estimate_sample_rate: Optional[int] = None,
         extended: bool = False) -> float:
    """Short-time objective intelligibility (`pystoi`, which resamples to 10 kHz itself): about 0 to 1, 1 for
    identical signals. Speech only. `extended=True` gives ESTOI.

    Both signals are trimmed to the shorter length first.
    """
    rate = _check_rate(sample_rate, estimate_sample_rate)
    try:
        from pystoi import stoi as compute_stoi
    except ImportError:
        raise ImportError("STOI needs the `pystoi` package: pip install pystoi (or semanticodec-hf[eval]).") from None
    ref, est = _pair(reference, estimate)
    return float(compute_stoi(ref, est, rate, extended=extended))


def score_clip(reference: Any, estimate: Any, sample_rate: int, speech: bool = False) -> Dict[str, Optional[float]]:
    """All metrics of one clip (trimmed to the shorter length); PESQ and STOI only for speech, None otherwise."""
    scores: Dict[str, Optional[float]] = {
        "mel_distance": mel_distance(reference, estimate, sample_rate),
        "stft_distance": multi_resolution_stft_distance(reference, estimate, sample_rate),
        "si_sdr": si_sdr(reference, estimate, sample_rate),
        "pesq_wb": None,
        "stoi": None,
    }
    if speech:
        scores["pesq_wb"] = pesq_wb(reference, estimate, sample_rate)
        scores["stoi"] = stoi(reference, estimate, sample_rate)
    return scores


def _means(rows: Sequence[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """Mean of each metric over the clips where it applies (None where it applies to none)."""
    means: Dict[str, Optional[float]] = {"clips": float(len(rows))}
    for name in METRIC_NAMES:
        values = [row[name] for row in rows if row.get(name) is not None and math.isfinite(row[name])]
        means[name] = float(np.mean(values)) if values else None
    return means


class CodecMetrics:
    """Score reconstructions against references, per clip and per domain (the `evaluate` library's shape).

        metric = CodecMetrics()
        results = metric.compute(references=originals, estimates=reconstructions, sample_rate=16000,
                                 domains=["speech", "music"], speech=[True, False])
        results = metric.compute(predictions=reconstructions, references=originals, sample_rate=16000)  # alias

    Returns `{"per_clip": [{"clip", "domain", metric: value, ...}], "per_domain": {domain: means},
    "overall": means}`. Each pair is trimmed to its shorter length. `speech` marks the clips that get PESQ and
    STOI (None elsewhere); left out, a clip counts as speech when its domain is "speech". Means skip clips
    where a metric does not apply. Without `domains` every clip is in the domain "all".
    """

    name = "semanticodec_codec_metrics"

    def compute(
        self,
        references: Optional[Sequence[Any]] = None,
        estimates: Optional[Sequence[Any]] = None,
        sample_rate: Optional[int] = None,
        domains: Optional[Sequence[str]] = None,
        speech: Optional[Sequence[bool]] = None,
        names: Optional[Sequence[str]] = None,
        *,
        predictions: Optional[Sequence[Any]] = None,
    ) -> Dict[str, Any]:
        if predictions is not None:
            if estimates is not None:
                raise ValueError("Pass the reconstructions once: as `estimates` or as `predictions`, not both.")
            estimates = predictions
        if references is None or estimates is None:
            raise ValueError("compute needs `references` and `estimates` (or `predictions`).")
        rate = _check_rate(sample_rate)
        if len(estimates) != len(references):
            raise ValueError(f"Got {len(estimates)} estimates for {len(references)} references.")
        count = len(references)
        domains = [str(d) for d in domains] if domains is not None else ["all"] * count
        speech = [bool(s) for s in speech] if speech is not None else [d == "speech" for d in domains]
        names = [str(n) for n in names] if names is not None else [str(i) for i in range(count)]
        if not len(domains) == len(speech) == len(names) == count:
            raise ValueError(f"domains, speech and names must have one entry per clip ({count}).")
        rows: List[Dict[str, Any]] = []
        for index in range(count):
            try:
                scores = score_clip(references[index], estimates[index], rate, speech[index])
            except ValueError as error:
                raise ValueError(f"Clip {names[index]!r}: {error}") from None
            rows.append({"clip": names[index], "domain": domains[index], **scores})
        per_domain = {domain: _means([r for r in rows if r["domain"] == domain]) for domain in dict.fromkeys(domains)}
        return {"per_clip": rows, "per_domain": per_domain, "overall": _means(rows)}

    __call__ = compute


def _format(value: Optional[float]) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


Number = Union[int, float]


def write_report(results: Mapping[str, Any], out_dir: Any,
                 bitrate: Optional[Union[Number, Mapping[str, Number]]] = None,
                 tokens_per_second: Optional[Union[Number, Mapping[str, Number]]] = None) -> Dict[str, str]:
    """Write `metrics.md` (a markdown table per system and domain), `metrics.csv` (one row per clip) and, when
    bitrates are given, `metrics.png` (each overall metric against bitrate, one point per system).

    `results` is one `CodecMetrics.compute` result (reported as system "codec") or a mapping
    `{system name: result}`; `bitrate` / `tokens_per_second` are one number (for a single result) or a mapping
    by system name. The plot needs matplotlib (Agg backend, imported only then). Returns the written paths by
    kind: "markdown", "csv" and, with bitrates, "plot".
    """
    import csv
    from pathlib import Path

    systems: Dict[str, Mapping[str, Any]] = dict({"codec": results} if "per_clip" in results else results)
    for system, result in systems.items():
        if not isinstance(result, Mapping) or not {"per_clip", "per_domain", "overall"} <= set(result):
            raise ValueError(f"results[{system!r}] is not a CodecMetrics.compute result.")

    def by_system(value: Any, what: str) -> Dict[str, float]:
        if value is None:
            return {}
        if isinstance(value, Mapping):
            return {str(k): float(v) for k, v in value.items() if v is not None}
        if len(systems) != 1:
            raise ValueError(f"{what} is one number but there are {len(systems)} systems; pass {{system: value}}.")
        return {next(iter(systems)): float(value)}

    bitrates, token_rates = by_system(bitrate, "bitrate"), by_system(tokens_per_second, "tokens_per_second")
    output = Path(out_dir)
    output.mkdir(parents=True, exist_ok=True)
    header = ["system", "domain", "clips", "bitrate_bps", "tokens_per_s", *METRIC_NAMES]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for system, result in systems.items():
        for domain, means in [*result["per_domain"].items(), ("ALL", result["overall"])]:
            cells = [system, domain, str(int(means["clips"])), _format(bitrates.get(system)),
                     _format(token_rates.get(system)), *(_format(means[m]) for m in METRIC_NAMES)]
            lines.append("| " + " | ".join(cells) + " |")
    (output / "metrics.md").write_text("\n".join(lines) + "\n")
    with open(output / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["system", "clip", "domain", *METRIC_NAMES])
        for system, result in systems.items():
            for row in result["per_clip"]:
                writer.writerow([system, row["clip"], row["domain"],
                                 *("" if row[m] is None else row[m] for m in METRIC_NAMES)])
    written = {"markdown": str(output / "metrics.md"), "csv": str(output / "metrics.csv")}
    plotted = [s for s in systems if s in bitrates]
    if plotted:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("The metric-vs-bitrate plot needs matplotlib: pip install matplotlib (or "
                              "semanticodec-hf[eval]), or call write_report without bitrates.") from None
        figure, axes = plt.subplots(1, len(METRIC_NAMES), figsize=(4 * len(METRIC_NAMES), 3.5))
        for axis, metric in zip(axes, METRIC_NAMES):
            points = sorted((bitrates[s], systems[s]["overall"][metric], s) for s in plotted
                            if systems[s]["overall"][metric] is not None)
            if points:
                axis.plot([p[0] for p in points], [p[1] for p in points], marker="o")
                for x, y, system in points:
                    axis.annotate(system, (x, y), fontsize=7)
            axis.set_xlabel("bitrate (bit/s)")
            axis.set_title(metric + (" (lower is better)" if LOWER_IS_BETTER[metric] else ""), fontsize=9)
        figure.tight_layout()
        figure.savefig(output / "metrics.png", dpi=100)
        plt.close(figure)
        written["plot"] = str(output / "metrics.png")
    return written


__all__ = ["CodecMetrics", "mel_distance", "multi_resolution_stft_distance", "si_sdr", "pesq_wb", "stoi",
           "score_clip", "write_report", "METRIC_NAMES"]
