"""The `evaluate` metric script of `semanticodec_hf.metrics.CodecMetrics` (load it with `evaluate.load` of this
folder, or `semanticodec_hf.metrics.load_codec_metric()`; importing this package gives nothing)."""
