"""`generate` on left-padded prompt rows, without transformers' false "pass an attention_mask" warning.

Every generate call of the toolkit passes the padding mask of its prompt rows. When that mask is all ones,
transformers drops it before decoding (it cannot matter there); once a row of the batch has finished, generate
feeds it `<pad>` and the model, seeing a pad id and no mask, warns "We strongly recommend passing in an
`attention_mask`". A finished row's further ids are discarded, so the warning only alarms users; it is filtered
for the toolkit's own calls and nowhere else.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers.utils import logging as transformers_logging

FALSE_PADDING_WARNING = "We strongly recommend passing in an `attention_mask`"
_WARNING_LOGGER = "transformers.modeling_utils"  # where `warn_if_padding_and_no_attention_mask` logs


class _DropFalsePaddingWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return FALSE_PADDING_WARNING not in record.getMessage()


def generate_with_mask(lm: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """`lm.generate(input_ids=..., attention_mask=..., **kwargs)` without gradients, the false padding warning
    filtered (see the module docstring; transformers shows it once per process, so a later call of the user's own
    without a mask may then stay silent)."""
    if attention_mask is None:
        raise ValueError("generate_with_mask needs the prompt rows' attention_mask (it only silences the warning "
                         "about a missing one).")
    logger = transformers_logging.get_logger(_WARNING_LOGGER)
    quiet = _DropFalsePaddingWarning()
    logger.addFilter(quiet)
    try:
        with torch.no_grad():
            return lm.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    finally:
        logger.removeFilter(quiet)
