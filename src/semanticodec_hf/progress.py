"""The one style of progress bar for long work (commands, recipes, the LM toolkit): tqdm on stderr, so stdout
stays clean for results; off with `quiet` (`--quiet`)."""

from __future__ import annotations

import sys
from typing import Any, Iterable, Optional

from tqdm.auto import tqdm


def progress_bar(iterable: Optional[Iterable[Any]] = None, *, total: Optional[float] = None, desc: str = "",
                 unit: str = "it", quiet: bool = False, leave: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar over `iterable` (or a manual one with `total`) that writes to stderr and is disabled by
    `quiet`. `bar.set_postfix_str(...)` names what runs now (e.g. the system being evaluated)."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=quiet, leave=leave, file=sys.stderr,
                dynamic_ncols=True, **kwargs)
