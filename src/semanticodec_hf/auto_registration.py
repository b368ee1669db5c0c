"""Registration of the `semanticodec` model type with the transformers Auto classes, without importing
transformers, torch or diffusers before the user does.

Each Auto class is registered when the user's code first reaches it, with only what it needs:

- `AutoConfig` once `transformers.models.auto.configuration_auto` is imported (our config module is cheap);
- `AutoFeatureExtractor` / `AutoProcessor` once their auto modules are imported;
- `AutoModel` / `AutoModelForAudioTokenization` once the modeling auto module is imported AND a SemantiCodec
  config has been built or our modeling module imported: the model pulls in diffusers, which a process that only
  uses other models should not pay for.

`install()` runs when `semanticodec_hf` is imported, and the package's startup hook (`semanticodec_hf.pth`,
installed beside the package; `SEMANTICODEC_HF_AUTOLOAD=0` turns it off) imports the package at interpreter start,
so `AutoModel.from_pretrained(folder)` works in a fresh process that never imports `semanticodec_hf` itself.
"""

from __future__ import annotations

import sys
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:  # for static analysers only
    from typing import Any, Callable, List, Tuple

# No `typing` / `importlib.abc` imports: this module runs at every interpreter start (the startup hook), and
# annotations stay strings (`from __future__ import annotations`).

PACKAGE = __name__.rpartition(".")[0]
AUTO = "transformers.models.auto."


def _register_config() -> None:
    from transformers import AutoConfig

    from .configuration_semanticodec import SemantiCodecConfig

    AutoConfig.register(SemantiCodecConfig.model_type, SemantiCodecConfig, exist_ok=True)


def _register_feature_extractor() -> None:
    from transformers import AutoFeatureExtractor

    from .configuration_semanticodec import SemantiCodecConfig
    from .feature_extraction_semanticodec import SemantiCodecFeatureExtractor

    AutoFeatureExtractor.register(SemantiCodecConfig, SemantiCodecFeatureExtractor, exist_ok=True)


def _register_processor() -> None:
    from transformers import AutoProcessor

    from .configuration_semanticodec import SemantiCodecConfig
    from .processing_semanticodec import SemantiCodecProcessor

    AutoProcessor.register(SemantiCodecConfig, SemantiCodecProcessor, exist_ok=True)


def _register_models() -> None:
    from transformers import AutoModel, AutoModelForAudioTokenization

    from .configuration_semanticodec import SemantiCodecConfig
    from .modeling_semanticodec import SemantiCodecModel

    AutoModel.register(SemantiCodecConfig, SemantiCodecModel, exist_ok=True)
    AutoModelForAudioTokenization.register(SemantiCodecConfig, SemantiCodecModel, exist_ok=True)


def register_auto_classes() -> None:
    """Make every transformers Auto class resolve `model_type="semanticodec"` now (idempotent)."""
    for _, step in _STEPS:
        step()


def _models_wanted() -> bool:
    return AUTO_REGISTRATION.config_built or f"{PACKAGE}.modeling_semanticodec" in sys.modules


# (condition, registration): a step runs once its condition holds, at the end of the outermost watched import.
_STEPS: Tuple[Tuple[Callable[[], bool], Callable[[], None]], ...] = (
    (lambda: AUTO + "configuration_auto" in sys.modules, _register_config),
    (lambda: AUTO + "feature_extraction_auto" in sys.modules, _register_feature_extractor),
    (lambda: AUTO + "processing_auto" in sys.modules, _register_processor),
    (lambda: AUTO + "modeling_auto" in sys.modules and _models_wanted(), _register_models),
)


class _AutoRegistration:
    """A `sys.meta_path` finder that runs the registration steps whose trigger module got imported.

    Installed first in `sys.meta_path`, it finds nothing: for `transformers`, `diffusers` and our own submodules
    it wraps the loader's `exec_module`, and when the outermost of those imports finishes it runs the pending
    steps. A step imports our code, which imports transformers (and for the model, diffusers); doing so while one
    of them is half-initialised could fail, hence "outermost". A failed step is retried at the next such import,
    on attribute access of the package and when a config is built; the finder removes itself once all ran.
    """

    _WATCHED = ("transformers", "diffusers", PACKAGE)

    def __init__(self) -> None:
        self.done: List[Callable[[], None]] = []
        self.config_built = False
        self._depth = 0
        self._busy = False
        self._lock = threading.RLock()

    @property
    def complete(self) -> bool:
        return len(self.done) == len(_STEPS)

    def _watched(self, fullname: str) -> bool:
        return any(fullname == name or fullname.startswith(name + ".") for name in self._WATCHED)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if self.complete or not self._watched(fullname):
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

    def note_config_built(self) -> None:
        """Called by `SemantiCodecConfig.__init__`: the user works with SemantiCodec, so register the models."""
        if not self.config_built:
            self.config_built = True
            self.try_register()

    def try_register(self) -> None:
        """Run the steps whose condition holds if no watched import is still running; never raises."""
        with self._lock:
            if self.complete or self._busy or self._depth:
                return
            self._busy = True
        try:
            progress = True
            while progress:  # a step's imports can make another step due (the model imports processing_auto)
                progress = False
                for condition, step in _STEPS:
                    if step in self.done or not condition():
                        continue
                    try:
                        step()
                    except Exception:  # e.g. a half-initialised module: retried at the next watched import
                        continue
                    self.done.append(step)
                    progress = True
            if self.complete and self in sys.meta_path:
                sys.meta_path.remove(self)
        finally:
            self._busy = False


AUTO_REGISTRATION = _AutoRegistration()


def install() -> None:
    """Run the steps already due (transformers imported before us), and watch imports for the others."""
    from . import config_events

    if AUTO_REGISTRATION.note_config_built not in config_events.ON_CONFIG_BUILT:
        config_events.ON_CONFIG_BUILT.append(AUTO_REGISTRATION.note_config_built)
    AUTO_REGISTRATION.try_register()
    if not AUTO_REGISTRATION.complete and AUTO_REGISTRATION not in sys.meta_path:
        sys.meta_path.insert(0, AUTO_REGISTRATION)
