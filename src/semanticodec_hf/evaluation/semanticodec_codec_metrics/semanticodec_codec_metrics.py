"""Codec reconstruction metrics of semanticodec-hf (mel distance, multi-resolution STFT distance, SI-SDR, PESQ-wb,
STOI) as an `evaluate` metric.

`evaluate.load` copies this script into its module cache and imports it from there, so it imports the installed
package absolutely and holds no metric code of its own: every number comes from
`semanticodec_hf.metrics.CodecMetrics`, the one implementation.
"""

import datasets
import evaluate

from semanticodec_hf.metrics import CodecMetrics

_DESCRIPTION = """\
Scores codec reconstructions (`predictions`) against the original audio (`references`), one mono waveform per
clip, both at `sampling_rate` Hz:

- mel_distance: mean |log10 difference| of 80-bin power mel spectrograms (lower is better, 0 for a copy);
- stft_distance: spectral convergence + log-magnitude L1 at 512/1024/2048-point FFTs (lower is better);
- si_sdr: scale-invariant signal-to-distortion ratio in dB, capped at 120 dB for an exact copy (higher is better);
- pesq_wb: wide-band PESQ (ITU-T P.862.2), about 1.04 to 4.64, speech clips only (higher is better);
- stoi: short-time objective intelligibility, 0 to 1, speech clips only (higher is better).

The values are those of `semanticodec_hf.metrics.CodecMetrics` on the same audio; the inputs are stored as
float32 on the way (the `evaluate` library writes them to an Arrow table), so float64 audio is rounded to
float32 first. Each pair is trimmed to its shorter length when the lengths differ by at most max(0.1 s, 1 % of
the reference) (`max_length_difference=` allows more); a larger difference, an empty or non-finite signal, a
silent reference (SI-SDR) or a bad sampling rate is a ValueError naming the clip. PESQ and STOI need the optional
packages `pesq` and `pystoi`: pip install "semanticodec-hf[eval]".
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 1-D float arrays): the reconstructions, one mono waveform per clip.
    references (`list` of 1-D float arrays): the original clips, in the same order.
    sampling_rate (`int`): the rate of both, in Hz (required; `sample_rate=` is accepted as an alias).
    predictions_sampling_rate (`int`, optional): the reconstructions' rate when it may differ; it must equal
        `sampling_rate` (resample first: these metrics never resample one side).
    speech (`bool` or `list` of `bool`, optional): the clips scored with PESQ-wb and STOI (all or none with one
        bool). Default: the clips whose domain is "speech", so none without `domains`.
    domains (`list` of `str`, optional): each clip's domain (e.g. "speech", "music", "sound").
    names (`list` of `str`, optional): each clip's name, used in error messages and per-clip rows.
    max_length_difference (`float`, optional): seconds by which a reconstruction may be longer or shorter than
        its reference (default max(0.1 s, 1 % of the reference)).
    detailed (`bool`, default False): return the full `CodecMetrics.compute` result instead of the means.
    on_clip (callable, optional): called with each clip's name once it is scored (a progress bar's update).

Returns:
    The means over all clips (`CodecMetrics.compute(...)["overall"]`): `clips` (their number), `mel_distance`,
    `stft_distance`, `si_sdr`, `pesq_wb`, `stoi`; a mean skips the clips a metric does not apply to and is None
    when it applies to none (PESQ-wb and STOI without speech clips). With `detailed=True`:
    `{"per_clip": [rows], "per_domain": {domain: means}, "overall": means}`, what
    `semanticodec_hf.metrics.write_report` takes.

Examples:
    >>> import numpy as np
    >>> from semanticodec_hf.metrics import load_codec_metric
    >>> metric = load_codec_metric()  # or evaluate.load(semanticodec_hf.metrics.CODEC_METRIC_DIR)
    >>> reference = (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32)
    >>> results = metric.compute(predictions=[0.5 * reference], references=[reference], sampling_rate=16000)
    >>> round(results["mel_distance"], 4)  # a gain of 0.5 is |log10 0.25| on power mels
    0.6021
    >>> results["si_sdr"] > 100, results["pesq_wb"]  # scale-invariant; no speech clips, so no PESQ
    (True, None)
"""

_CITATION = """\
@inproceedings{le_roux2019sdr,
  title     = {SDR -- Half-baked or Well Done?},
  author    = {Le Roux, Jonathan and Wisdom, Scott and Erdogan, Hakan and Hershey, John R.},
  booktitle = {ICASSP 2019 - IEEE International Conference on Acoustics, Speech and Signal Processing},
  pages     = {626--630},
  year      = {2019}
}
@misc{itu2007p8622,
  title        = {Wideband extension to Recommendation P.862 for the assessment of wideband telephone networks
                  and speech codecs},
  author       = {{ITU-T}},
  howpublished = {Recommendation P.862.2},
  year         = {2007}
}
@article{taal2011stoi,
  title   = {An Algorithm for Intelligibility Prediction of Time-Frequency Weighted Noisy Speech},
  author  = {Taal, Cees H. and Hendriks, Richard C. and Heusdens, Richard and Jensen, Jesper},
  journal = {IEEE Transactions on Audio, Speech, and Language Processing},
  volume  = {19},
  number  = {7},
  pages   = {2125--2136},
  year    = {2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SemanticodecCodecMetrics(evaluate.Metric):
    """`semanticodec_hf.metrics.CodecMetrics` as an `evaluate.Metric`."""

    def _info(self):
        waveform = datasets.Sequence(datasets.Value("float32"))
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": waveform, "references": waveform}),
            homepage="https://github.com/haoheliu/SemantiCodec-inference",
            reference_urls=["https://arxiv.org/abs/1811.02508", "https://www.itu.int/rec/T-REC-P.862.2",
                            "https://doi.org/10.1109/TASL.2011.2114881"],
        )

    def _compute(self, predictions, references, sampling_rate=None, predictions_sampling_rate=None, speech=None,
                 domains=None, names=None, max_length_difference=None, detailed=False, sample_rate=None,
                 on_clip=None):
        if sample_rate is not None:
            if sampling_rate is not None and sampling_rate != sample_rate:
                raise ValueError(f"sampling_rate={sampling_rate!r} and sample_rate={sample_rate!r} disagree; "
                                 "give the rate once, as sampling_rate.")
            sampling_rate = sample_rate
        if sampling_rate is None:
            raise ValueError("compute needs sampling_rate= (in Hz), the rate of both predictions and references; "
                             "resample them to one rate first.")
        results = CodecMetrics().compute(
            references=references, predictions=predictions, sample_rate=sampling_rate, domains=domains,
            speech=speech, names=names, max_length_difference=max_length_difference,
            estimate_sample_rate=predictions_sampling_rate, on_clip=on_clip)
        return results if detailed else results["overall"]
