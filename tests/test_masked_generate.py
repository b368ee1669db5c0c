"""The toolkit's generate calls pass their mask and do not print transformers' false "pass an attention_mask"
warning; the same call made directly on `lm.generate` does (so the test sees the filter, not a quiet model)."""

import pytest
import torch
from transformers import LogitsProcessorList
from transformers.testing_utils import CaptureLogger
from transformers.utils import logging as transformers_logging

from fixed_score_lms import fixed_score_lm
from semanticodec_hf.audio_token_layout import SemantiCodecVocabularyLayout
from semanticodec_hf.lm.generate import decoding_arguments
from semanticodec_hf.lm.masked_generate import FALSE_PADDING_WARNING, generate_with_mask
from semanticodec_hf.lm.pattern_logits import PatternLogitsProcessor

LAYOUT = SemantiCodecVocabularyLayout(semantic_vocab_size=16, acoustic_vocab_size=32)


def _batch_where_one_row_ends_first():
    """Two unpadded rows (an all-ones mask, which transformers drops); row 1 may end after 1 frame, row 0 not
    before 6, so row 1 is fed `<pad>` while row 0 goes on."""
    lm = fixed_score_lm(LAYOUT, {LAYOUT.eos_token_id: 5.0, 3: 1.0, 20: 1.0})
    rows = torch.tensor([[LAYOUT.bos_token_id, 1, 17]] * 2)
    processor = PatternLogitsProcessor(LAYOUT, "interleaved", target_frames=[8, 8], allow_early_eos=True,
                                       min_frames=[6, 1])
    kwargs = dict(max_new_tokens=16, logits_processor=LogitsProcessorList([processor]),
                  bos_token_id=LAYOUT.bos_token_id, eos_token_id=LAYOUT.eos_token_id,
                  pad_token_id=LAYOUT.pad_token_id, **decoding_arguments(greedy=True))
    return lm, rows, torch.ones_like(rows), kwargs


def _captured(call) -> str:
    transformers_logging.warning_once.cache_clear()  # "once" per process: other tests may have used it up
    logger = transformers_logging.get_logger("transformers.modeling_utils")
    with CaptureLogger(logger) as captured:
        result = call()
    return captured.out, result


def test_the_toolkit_call_is_silent_where_a_direct_call_warns():
    lm, ids, mask, kwargs = _batch_where_one_row_ends_first()
    with torch.no_grad():
        direct_log, direct = _captured(lambda: lm.generate(input_ids=ids, attention_mask=mask, **kwargs))
    assert FALSE_PADDING_WARNING in direct_log  # the condition is real with this transformers
    assert LAYOUT.pad_token_id in direct[1].tolist()  # row 1 finished and was padded

    ours_log, ours = _captured(lambda: generate_with_mask(lm, ids, mask, **kwargs))
    assert FALSE_PADDING_WARNING not in ours_log
    assert torch.equal(ours, direct)  # the same generation
    assert transformers_logging.get_logger("transformers.modeling_utils").filters == []  # the filter is gone


def test_only_that_warning_is_filtered():
    """Inside the call, another warning of the same logger still shows; the false one does not."""
    logger = transformers_logging.get_logger("transformers.modeling_utils")

    class WarningLM:
        def generate(self, input_ids, attention_mask, **kwargs):
            logger.warning("something else went wrong")
            logger.warning(FALSE_PADDING_WARNING + " since your input_ids may be padded.")
            return input_ids

    ids = torch.tensor([[1, 2]])
    log, out = _captured(lambda: generate_with_mask(WarningLM(), ids, torch.ones_like(ids)))
    assert "something else went wrong" in log and FALSE_PADDING_WARNING not in log and out is ids


def test_a_missing_mask_is_refused():
    lm, ids, _, kwargs = _batch_where_one_row_ends_first()
    with pytest.raises(ValueError, match="needs the prompt rows' attention_mask"):
        generate_with_mask(lm, ids, None, **kwargs)
