"""Audio language models on SemantiCodec tokens: training (`lm.train`) and generation to waveform (`lm.generate`)."""
