"""Codec quality metrics: mel distance, multi-resolution STFT distance, SI-SDR, PESQ-wb and STOI.

Each metric takes a reference, an estimate (1-D float waveforms, nominally in [-1, 1]) and their sample rate.
Codecs may return a few samples more or less than they were given (frame padding: EnCodec and DAC ~12 ms,
SpeechTokenizer 20 ms, Mimi up to 80 ms; SemantiCodec trims to the input), so both signals are trimmed to the
shorter one, **as long as their lengths differ by at most max(0.1 s, 1 % of the reference)**. A larger difference
is a `ValueError`: scored on the overlap alone, a reconstruction cut to half its length would look perfect. Pass
`max_length_difference=` (seconds) to allow more. Anything else that does not match is a `ValueError` too: an
empty signal, NaN/Inf samples, several channels, or a reference and an estimate at different sample rates (pass
`estimate_sample_rate=` to have that checked; resample first, these metrics never resample one side silently).
PESQ and STOI raise `MetricNotApplicable` (a `ValueError`) on clips they cannot score (too short, no speech
activity); `score_clip` and `CodecMetrics.compute` record None there with a note and score the rest.
`CodecMetrics.compute` scores a set of clips, with per-domain means, in the shape of the `evaluate` library's
metrics, and `write_report` writes them as markdown, CSV and a metric-vs-bitrate plot. `load_codec_metric()` gives
the same numbers as an `evaluate` metric (`evaluate.load` of the script shipped in `semanticodec_hf/evaluation/`).
PESQ and STOI need the optional packages `pesq` and `pystoi` (`pip install "semanticodec-hf[eval]"`).
"""

from __future__ import annotations

import csv
import importlib
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

MEL_BINS, MEL_N_FFT, MEL_HOP = 80, 1024, 256
MEL_FLOOR = 1e-5
STFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))
SI_SDR_MAX_DB = 120.0  # an exact (scaled) copy scores this instead of +inf, so it can be averaged
METRIC_NAMES = ("mel_distance", "stft_distance", "si_sdr", "pesq_wb", "stoi")
LOWER_IS_BETTER = {"mel_distance": True, "stft_distance": True, "si_sdr": False, "pesq_wb": False, "stoi": False}
# Default length check: reference and estimate may differ by this much (the larger of the two) before scoring.
LENGTH_TOLERANCE_SECONDS = 0.1  # more than one frame of padding of common codecs (Mimi's 80 ms frames included)
LENGTH_TOLERANCE_FRACTION = 0.01  # long files from codecs that work in chunks
PESQ_MIN_SECONDS = 0.25
CLIP_COLUMNS = ("length_ratio", "length_difference_s", "note")  # per-clip extras of score_clip / the CSV
MIN_SAMPLE_RATE = 1000  # Hz; below it a rate was most likely given in kHz (16 for 16000)
EVAL_EXTRA = 'pip install "semanticodec-hf[eval]"'
# The optional package each speech metric needs: {metric: (import name, pip name, metric's display name)}
SPEECH_METRIC_PACKAGES = {"pesq_wb": ("pesq", "pesq", "PESQ"), "stoi": ("pystoi", "pystoi", "STOI")}
# The `evaluate` metric script: a folder holding a script of the same name is what `evaluate.load` expects.
CODEC_METRIC_DIR = Path(__file__).resolve().parent / "evaluation" / "semanticodec_codec_metrics"


class MetricNotApplicable(ValueError):
    """A metric cannot score this clip (PESQ or STOI on a clip too short, or without speech activity): not bad
    input, so `score_clip` records None for that metric and keeps the others."""


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
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"A sample rate of {sample_rate!r} Hz is below {MIN_SAMPLE_RATE} Hz: give it in Hz, not kHz "
                         f"(16000, not 16).")
    if estimate_sample_rate is not None and int(estimate_sample_rate) != int(sample_rate):
        raise ValueError(
            f"The reference is at {int(sample_rate)} Hz but the estimate at {int(estimate_sample_rate)} Hz; "
            "resample one of them (e.g. with soxr) so both share a rate."
        )
    return int(sample_rate)


def allowed_length_difference(reference_samples: int, sample_rate: Optional[int],
                              max_length_difference: Optional[float] = None) -> float:
    """Samples by which an estimate may be longer or shorter than its reference: `max_length_difference` seconds
    when given, else max(0.1 s, 1 % of the reference) (only the 1 % without a sample rate)."""
    if max_length_difference is not None:
        if max_length_difference < 0:
            raise ValueError(f"max_length_difference must be >= 0 seconds, got {max_length_difference!r}.")
        if math.isinf(max_length_difference):
            return math.inf
        if sample_rate is None:
            raise ValueError("max_length_difference is in seconds: pass sample_rate too.")
        return max_length_difference * sample_rate
    absolute = LENGTH_TOLERANCE_SECONDS * sample_rate if sample_rate is not None else 0.0
    return max(absolute, LENGTH_TOLERANCE_FRACTION * reference_samples)


def _pair(reference: Any, estimate: Any, sample_rate: Optional[int] = None,
          max_length_difference: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Validated float64 mono signals, both trimmed to the shorter length (a ValueError if the lengths differ by
    more than `allowed_length_difference`)."""
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
    reference_samples, estimate_samples = out[0].size, out[1].size
    allowed = allowed_length_difference(reference_samples, sample_rate, max_length_difference)
    if abs(estimate_samples - reference_samples) > allowed:
        def when(samples: int) -> str:
            return f"{samples} samples" + (f" ({samples / sample_rate:.3f} s)" if sample_rate else "")

        rule = (f"{max_length_difference:g} s" if max_length_difference is not None else
                f"max({LENGTH_TOLERANCE_SECONDS:g} s, {100 * LENGTH_TOLERANCE_FRACTION:g} % of the reference)"
                if sample_rate else f"{100 * LENGTH_TOLERANCE_FRACTION:g} % of the reference")
        raise ValueError(
            f"The estimate has {when(estimate_samples)} but the reference {when(reference_samples)}: they differ by "
            f"more than {rule}, so this is not a reconstruction of the whole reference (scored on the overlap, a "
            "truncated copy would look perfect). Reconstruct the whole clip, or pass max_length_difference= "
            "(seconds) to score the overlap anyway.")
    length = min(reference_samples, estimate_samples)
    return out[0][:length], out[1][:length]


def _import_optional(metric: str) -> Any:
    """The module a speech metric needs (`pesq` or `pystoi`), or an ImportError naming the `[eval]` extra. The one
    place that says how to install them: `pesq_wb`, `stoi`, `CodecMetrics` and the `evaluate` metric all use it."""

    module, package, display = SPEECH_METRIC_PACKAGES[metric]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{display} needs the optional `{package}` package: {EVAL_EXTRA} (or pip install "
                          f"{package}).") from None


def require_speech_metrics() -> None:
    """Check that PESQ and STOI can run (an ImportError naming the `[eval]` extra if not), before any scoring."""
    for metric in SPEECH_METRIC_PACKAGES:
        _import_optional(metric)


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


def mel_distance(reference: Any, estimate: Any, sample_rate: int, estimate_sample_rate: Optional[int] = None,
                 max_length_difference: Optional[float] = None) -> float:
    """Mean |log10 mel(ref) - log10 mel(est)| over 80-bin *power* mel spectrograms (1024-point FFT, hop 256,
    Slaney mel scale, values clamped to at least 1e-5). 0 for identical signals; lower is better.

    Both signals are trimmed to the shorter length first (see the module's length rule). Power mels scale with
    the square of the amplitude, so a gain g gives exactly |log10 g^2| in every bin where the clamp is not hit
    (0.5 -> |log10 0.25|).
    """
    rate = _check_rate(sample_rate, estimate_sample_rate)
    ref, est = _pair(reference, estimate, rate, max_length_difference)
    filters = _mel_filters(rate)
    ref_mel = np.log10(np.maximum(_magnitude(ref, MEL_N_FFT, MEL_HOP) ** 2 @ filters, MEL_FLOOR))
    est_mel = np.log10(np.maximum(_magnitude(est, MEL_N_FFT, MEL_HOP) ** 2 @ filters, MEL_FLOOR))
    return float(np.abs(ref_mel - est_mel).mean())


def multi_resolution_stft_distance(reference: Any, estimate: Any, sample_rate: Optional[int] = None,
                                   estimate_sample_rate: Optional[int] = None,
                                   resolutions: Sequence[Tuple[int, int]] = STFT_RESOLUTIONS,
                                   max_length_difference: Optional[float] = None) -> float:
    """Mean over (n_fft, hop) resolutions (512, 128), (1024, 256), (2048, 512) of the spectral convergence
    `||S_ref - S_est||_F / ||S_ref||_F` plus the mean |ln S_ref - ln S_est| of the STFT magnitudes (floor 1e-7):
    the usual codec-training loss, used as a metric. 0 for identical signals; lower is better.

    Both signals are trimmed to the shorter length first (see the module's length rule). `sample_rate` serves
    the rate and length checks only (the resolutions are in samples).
    """
    rate = _check_rate(sample_rate, estimate_sample_rate, required=False)
    ref, est = _pair(reference, estimate, rate, max_length_difference)
    totals = []
    for n_fft, hop in resolutions:
        ref_mag, est_mag = _magnitude(ref, n_fft, hop), _magnitude(est, n_fft, hop)
        convergence = np.linalg.norm(ref_mag - est_mag) / max(np.linalg.norm(ref_mag), 1e-12)
        log_distance = np.abs(np.log(np.maximum(ref_mag, 1e-7)) - np.log(np.maximum(est_mag, 1e-7))).mean()
        totals.append(convergence + log_distance)
    return float(np.mean(totals))


def si_sdr(reference: Any, estimate: Any, sample_rate: Optional[int] = None,
           estimate_sample_rate: Optional[int] = None, max_length_difference: Optional[float] = None) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019) of zero-mean signals; higher is
    better. The estimate is projected onto the reference: target = <est, ref> / ||ref||^2 * ref, and the ratio
    is ||target||^2 / ||est - target||^2. A gain on the estimate leaves it unchanged.

    Both signals are trimmed to the shorter length first (see the module's length rule). Energies get a floor
    of 1e-12 x the reference's energy, so an exact (scaled) copy scores about +120 dB instead of +inf, and a
    silent (constant) estimate exactly -120 dB. A silent (constant) reference is a ValueError. `sample_rate`
    serves the rate and length checks only.
    """
    rate = _check_rate(sample_rate, estimate_sample_rate, required=False)
    ref, est = _pair(reference, estimate, rate, max_length_difference)
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


def pesq_wb(reference: Any, estimate: Any, sample_rate: int, estimate_sample_rate: Optional[int] = None,
            max_length_difference: Optional[float] = None) -> float:
    """Wide-band PESQ (ITU-T P.862.2, `pesq` package, mode "wb") at 16 kHz: about 1.04 (bad) to 4.64 (identical).
    Other rates are resampled to 16 kHz with soxr first. Speech only: it is meaningless on music or sound.

    Both signals are trimmed to the shorter length first (see the module's length rule). A clip PESQ cannot
    score (shorter than 1/4 s, or no speech-like activity in the reference) raises `MetricNotApplicable`.
    """
    rate = _check_rate(sample_rate, estimate_sample_rate)
    pesq_module = _import_optional("pesq_wb")
    pesq, PesqError = pesq_module.pesq, pesq_module.PesqError
    ref, est = _pair(reference, estimate, rate, max_length_difference)
    ref, est = _at_16k(ref, rate), _at_16k(est, rate)
    if ref.size < 16000 * PESQ_MIN_SECONDS:
        raise MetricNotApplicable(f"PESQ needs at least {PESQ_MIN_SECONDS} s of audio; got {ref.size / 16000:.3f} s.")
    try:
        return float(pesq(16000, ref, est, "wb"))
    except PesqError as error:
        raise MetricNotApplicable(f"PESQ cannot score this clip ({type(error).__name__}: {error}).") from None


def stoi(reference: Any, estimate: Any, sample_rate: int, estimate_sample_rate: Optional[int] = None,
         extended: bool = False, max_length_difference: Optional[float] = None) -> float:
    """Short-time objective intelligibility (`pystoi`, which resamples to 10 kHz itself): about 0 to 1, 1 for
    identical signals. Speech only. `extended=True` gives ESTOI.

    Both signals are trimmed to the shorter length first (see the module's length rule). pystoi needs 30 frames
    of 25.6 ms (about 0.4 s) of non-silent reference and otherwise returns a placeholder 1e-5 with a warning;
    that case raises `MetricNotApplicable` here instead of passing the placeholder on as a score.
    """
    rate = _check_rate(sample_rate, estimate_sample_rate)
    compute_stoi = _import_optional("stoi").stoi
    ref, est = _pair(reference, estimate, rate, max_length_difference)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(compute_stoi(ref, est, rate, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise MetricNotApplicable(
            f"STOI needs about 0.4 s of non-silent speech (30 frames of 25.6 ms); this clip lasts "
            f"{ref.size / rate:.3f} s, silent frames included.")
    for w in caught:  # anything else pystoi warns about stays visible
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return value


def score_clip(reference: Any, estimate: Any, sample_rate: int, speech: bool = False,
               max_length_difference: Optional[float] = None) -> Dict[str, Any]:
    """All metrics of one clip (trimmed to the shorter length, see the module's length rule); PESQ and STOI only
    for speech, None otherwise, and None with a `note` on a clip they cannot score. Also `length_ratio`
    (estimate / reference samples) and `length_difference_s` (estimate minus reference, seconds)."""
    rate = _check_rate(sample_rate)
    lengths = [int(np.squeeze(np.asarray(x.detach().cpu() if torch.is_tensor(x) else x)).size)
               for x in (reference, estimate)]
    scores: Dict[str, Any] = {
        "mel_distance": mel_distance(reference, estimate, rate, max_length_difference=max_length_difference),
        "stft_distance": multi_resolution_stft_distance(reference, estimate, rate,
                                                        max_length_difference=max_length_difference),
        "si_sdr": si_sdr(reference, estimate, rate, max_length_difference=max_length_difference),
        "pesq_wb": None,
        "stoi": None,
        "length_ratio": lengths[1] / lengths[0],
        "length_difference_s": (lengths[1] - lengths[0]) / rate,
        "note": None,
    }
    if speech:
        notes = []
        for name, metric in (("pesq_wb", pesq_wb), ("stoi", stoi)):
            try:
                scores[name] = metric(reference, estimate, rate, max_length_difference=max_length_difference)
            except MetricNotApplicable as error:
                notes.append(f"{name} not scored: {error}")
        scores["note"] = "; ".join(notes) or None
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

    Returns `{"per_clip": [{"clip", "domain", metric: value, ..., "length_ratio", "length_difference_s",
    "note"}], "per_domain": {domain: means}, "overall": means}`. Each pair is trimmed to its shorter length when
    the lengths differ by at most max(0.1 s, 1 %) or `max_length_difference` seconds (else a ValueError naming
    the clip). `speech` marks the clips that get PESQ and STOI (None elsewhere, and None with a `note` on clips
    they cannot score): one bool per clip, or one bool for all; left out, a clip counts as speech when its domain
    is "speech". PESQ and STOI need the `[eval]` extra: when any clip is speech and it is missing, an ImportError
    says so before anything is scored. Means skip clips where a metric does not apply. Without `domains` every
    clip is in the domain "all". `estimate_sample_rate`, when given, must equal `sample_rate` (these metrics never
    resample one side). `on_clip(name)` is called after each clip is scored (progress reporting).

    The same numbers as an `evaluate` metric: `load_codec_metric()` (see `semanticodec_hf/evaluation/`).
    """

    name = "semanticodec_codec_metrics"

    def compute(
        self,
        references: Optional[Sequence[Any]] = None,
        estimates: Optional[Sequence[Any]] = None,
        sample_rate: Optional[int] = None,
        domains: Optional[Sequence[str]] = None,
        speech: Optional[Union[bool, Sequence[bool]]] = None,
        names: Optional[Sequence[str]] = None,
        *,
        predictions: Optional[Sequence[Any]] = None,
        max_length_difference: Optional[float] = None,
        estimate_sample_rate: Optional[int] = None,
        on_clip: Optional[Callable[[str], None]] = None,
    ) -> Dict[str, Any]:
        if predictions is not None:
            if estimates is not None:
                raise ValueError("Pass the reconstructions once: as `estimates` or as `predictions`, not both.")
            estimates = predictions
        if references is None or estimates is None:
            raise ValueError("compute needs `references` and `estimates` (or `predictions`).")
        rate = _check_rate(sample_rate, estimate_sample_rate)
        if len(estimates) != len(references):
            raise ValueError(f"Got {len(estimates)} estimates for {len(references)} references.")
        count = len(references)
        domains = [str(d) for d in domains] if domains is not None else ["all"] * count
        if isinstance(speech, (bool, np.bool_)):
            speech = [bool(speech)] * count
        speech = [bool(s) for s in speech] if speech is not None else [d == "speech" for d in domains]
        names = [str(n) for n in names] if names is not None else [str(i) for i in range(count)]
        if not len(domains) == len(speech) == len(names) == count:
            raise ValueError(f"domains, speech and names must have one entry per clip ({count}).")
        if any(speech):
            require_speech_metrics()
        rows: List[Dict[str, Any]] = []
        for index in range(count):
            try:
                scores = score_clip(references[index], estimates[index], rate, speech[index],
                                    max_length_difference=max_length_difference)
            except ValueError as error:
                raise ValueError(f"Clip {names[index]!r}: {error}") from None
            rows.append({"clip": names[index], "domain": domains[index], **scores})
            if on_clip is not None:  # e.g. a progress bar's update: PESQ/STOI of many clips take minutes
                on_clip(names[index])
        per_domain = {domain: _means([r for r in rows if r["domain"] == domain]) for domain in dict.fromkeys(domains)}
        return {"per_clip": rows, "per_domain": per_domain, "overall": _means(rows)}

    __call__ = compute


def _format(value: Optional[float], missing: str = "-") -> str:
    if value is None:
        return missing
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


Number = Union[int, float]


def write_report(results: Mapping[str, Any], out_dir: Any,
                 bitrate: Optional[Union[Number, Mapping[str, Number]]] = None,
                 tokens_per_second: Optional[Union[Number, Mapping[str, Number]]] = None) -> Dict[str, str]:
    """Write `metrics.md` (a markdown table per system and domain), `metrics.csv` (one row per clip, with the
    length ratio / difference and notes) and, when bitrates are given, `metrics.png` (each overall metric against
    bitrate: one labelled marker series per system, never a line joining different systems).

    `results` is one `CodecMetrics.compute` result (reported as system "codec") or a mapping
    `{system name: result}`; `bitrate` / `tokens_per_second` are one number (for a single result) or a mapping
    by system name; a system without one shows "n/a". The plot needs matplotlib (Agg backend, imported only then).
    Returns the written paths by kind: "markdown", "csv" and, with bitrates, "plot".
    """

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
            cells = [system, domain, str(int(means["clips"])), _format(bitrates.get(system), "n/a"),
                     _format(token_rates.get(system), "n/a"), *(_format(means[m]) for m in METRIC_NAMES)]
            lines.append("| " + " | ".join(cells) + " |")
    noted = [(system, row) for system, result in systems.items() for row in result["per_clip"] if row.get("note")]
    if noted:
        lines += ["", f"{len(noted)} clip(s) with metrics not scored (means skip them; notes in metrics.csv):"]
        lines += [f"- {system} / {row['clip']}: {row['note']}" for system, row in noted[:10]]
        if len(noted) > 10:
            lines.append(f"- ... and {len(noted) - 10} more")
    (output / "metrics.md").write_text("\n".join(lines) + "\n")
    with open(output / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["system", "clip", "domain", *METRIC_NAMES, *CLIP_COLUMNS])
        for system, result in systems.items():
            for row in result["per_clip"]:
                writer.writerow([system, row["clip"], row["domain"],
                                 *("" if row.get(m) is None else row[m] for m in (*METRIC_NAMES, *CLIP_COLUMNS))])
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
        markers = "osD^v<>ph*"
        for axis, metric in zip(axes, METRIC_NAMES):
            for index, system in enumerate(plotted):  # one series per system: points of different codecs unjoined
                value = systems[system]["overall"][metric]
                if value is not None:
                    axis.plot([bitrates[system]], [value], marker=markers[index % len(markers)], linestyle="none",
                              color=f"C{index % 10}", label=system)
            axis.set_xlabel("bitrate (bit/s)")
            axis.set_title(metric + (" (lower is better)" if LOWER_IS_BETTER[metric] else ""), fontsize=9)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=7)
            figure.tight_layout(rect=(0, 0.12, 1, 1))
        else:
            figure.tight_layout()
        figure.savefig(output / "metrics.png", dpi=100)
        plt.close(figure)
        written["plot"] = str(output / "metrics.png")
    return written


def load_codec_metric(**kwargs: Any):
    """`evaluate.load` of the metric shipped with this package (`CODEC_METRIC_DIR`): `CodecMetrics` as an
    `evaluate` module, `compute(predictions=..., references=..., sampling_rate=...)`. `kwargs` go to
    `evaluate.load` (`keep_in_memory=True`, `cache_dir=`, `num_process=` / `process_id=` ...)."""
    try:
        import evaluate
    except ImportError:
        raise ImportError("load_codec_metric needs the `evaluate` library: pip install evaluate") from None
    return evaluate.load(str(CODEC_METRIC_DIR), **kwargs)


__all__ = ["CodecMetrics", "MetricNotApplicable", "mel_distance", "multi_resolution_stft_distance", "si_sdr",
           "pesq_wb", "stoi", "score_clip", "write_report", "allowed_length_difference", "METRIC_NAMES",
           "load_codec_metric", "require_speech_metrics", "CODEC_METRIC_DIR"]
