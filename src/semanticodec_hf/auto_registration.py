"""Registration of the `semanticodec` model type with the transformers Auto classes, without importing
transformers (or torch) before the user does: `import semanticodec_hf` stays light for `semanticodec-hf info`.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from typing import Any

PACKAGE = __name__.rpartition(".")[0]


def register_auto_classes() -> None:
    """Make the transformers Auto classes resolve `model_type="semanticodec"` (idempotent)."""
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioTokenization

    from .configuration_semanticodec import SemantiCodecConfig
    from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor
    from .modeling_semanticodec import SemantiCodecModel

    AutoConfig.register(SemantiCodecConfig.model_type, SemantiCodecConfig, exist_ok=True)
    AutoFeatureExtractor.register(SemantiCodecConfig, SemantiCodecFeatureExtractor, exist_ok=True)
    AutoModel.register(SemantiCodecConfig, SemantiCodecModel, exist_ok=True)
    AutoModelForAudioTokenization.register(SemantiCodecConfig, SemantiCodecModel, exist_ok=True)


class _AutoRegistration(importlib.abc.MetaPathFinder):
    """Registers the Auto classes once transformers is imported, without importing it (or torch) ourselves.

    Installed first in `sys.meta_path`, it finds nothing itself: for `transformers`, `diffusers` and our own
    submodules it wraps the loader's `exec_module`, and when the outermost of those imports finishes it calls
    `register_auto_classes`. Registering imports our modeling code, which imports diffusers and transformers;
    doing so while one of them is half-initialised (e.g. diffusers importing transformers) could fail, hence
    "outermost". A failed attempt is retried at the next such import and on attribute access; the finder
    removes itself once registration succeeded.
    """

    _WATCHED = ("transformers", "diffusers", PACKAGE)

    def __init__(self) -> None:
        self.done = False
        self._depth = 0
        self._busy = False
        self._lock = threading.RLock()

    def _watched(self, fullname: str) -> bool:
        return any(fullname == name or fullname.startswith(name + ".") for name in self._WATCHED)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if self.done or not self._watched(fullname):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        original = getattr(loader, "exec_module", None)
        if original is None:
            return spec

        def exec_module(module: Any) -> None:
            with self._lock:
                self._depth += 1
            try:
                original(module)
            finally:
                with self._lock:
                    self._depth -= 1
            self.try_register()

        try:
            loader.exec_module = exec_module
        except AttributeError:  # a loader with __slots__: leave it alone (registration is retried elsewhere)
            pass
        return spec

    def try_register(self) -> None:
        """Register if transformers is imported and no watched import is still running; never raises."""
        with self._lock:
            if self.done or self._busy or self._depth or "transformers" not in sys.modules:
                return
            self._busy = True
        try:
            register_auto_classes()
        except Exception:  # e.g. a half-initialised module: retried at the next watched import
            return
        else:
            self.done = True
            if self in sys.meta_path:
                sys.meta_path.remove(self)
        finally:
            self._busy = False


AUTO_REGISTRATION = _AutoRegistration()


def install() -> None:
    """Register now if transformers is already imported (as the eager package did), else when it is."""
    if "transformers" in sys.modules:
        AUTO_REGISTRATION.try_register()
    if not AUTO_REGISTRATION.done and AUTO_REGISTRATION not in sys.meta_path:
        sys.meta_path.insert(0, AUTO_REGISTRATION)
