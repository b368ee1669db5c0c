"""Callbacks run when a `SemantiCodecConfig` is built (stdlib only, so `import semanticodec_hf` stays light).

The installed package appends the registration of the Auto model classes here (`auto_registration`): building a
SemantiCodec config is the sign that the models will be wanted. A copy of the model code loaded with
`trust_remote_code=True` gets its own, empty list.
"""

from __future__ import annotations

ON_CONFIG_BUILT: list = []  # of callables without arguments (no `typing` import: see auto_registration)


def config_built() -> None:
    """Run the callbacks; one failing must not break building a config."""
    for callback in list(ON_CONFIG_BUILT):
        try:
            callback()
        except Exception:
            pass
