"""`evaluate` modules shipped with semanticodec-hf.

`semanticodec_codec_metrics/semanticodec_codec_metrics.py` is `semanticodec_hf.metrics.CodecMetrics` as an
`evaluate.Metric`: `evaluate.load(CODEC_METRIC_DIR)` (or `load_codec_metric()`) finds it because the script has
its folder's name. The folders are packages only so that they are installed with the wheel; `evaluate` copies the
script into its own module cache and imports it from there.
"""

from ..metrics import CODEC_METRIC_DIR, load_codec_metric

__all__ = ["CODEC_METRIC_DIR", "load_codec_metric"]
