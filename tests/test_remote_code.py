"""Loading saved folders the ways a Hugging Face user does, each in a fresh process:

- with `trust_remote_code=True` and `semanticodec_hf` NOT importable: the code that travels in the folder gives the
  same codes and the same decoded waveform as the installed package;
- without the flag and without the package: transformers' refusal names `trust_remote_code=True`;
- with the package installed but never imported: its startup hook registers the model type, so the Auto classes
  load the folder natively (and `import transformers` alone pulls in neither diffusers nor our model code).
"""

import ast
import json
import os
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import transformers
from packaging.version import Version

from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel, SemantiCodecProcessor

SEED, STEPS = 3, 2
REMOTE_FILES = {"configuration_semanticodec.py", "modeling_semanticodec.py", "feature_extraction_semanticodec.py",
                "processing_semanticodec.py", "modeling_semanticodec_quantizer.py"}

# Blocks every import of the package, as in an environment where it is not installed.
BLOCK_PACKAGE = textwrap.dedent("""
    import sys
    class _Blocked:
        def find_spec(self, name, path=None, target=None):
            if name == "semanticodec_hf" or name.startswith("semanticodec_hf."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
    sys.meta_path.insert(0, _Blocked())
""")

ENCODE_AND_DECODE = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from transformers import (AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioTokenization,
                              AutoProcessor)
    folder, out, trust = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    kwargs = {"trust_remote_code": True} if trust else {}
    config = AutoConfig.from_pretrained(folder, **kwargs)
    model = AutoModel.from_pretrained(folder, **kwargs).eval()
    for_tokenization = AutoModelForAudioTokenization.from_pretrained(folder, **kwargs)
    feature_extractor = AutoFeatureExtractor.from_pretrained(folder, **kwargs)
    processor = AutoProcessor.from_pretrained(folder, **kwargs)
    audio = np.load(out + ".in.npy")
    with torch.no_grad():
        inputs = processor(audio, sampling_rate=16000, return_tensors="pt")
        encoded = model.encode(**inputs)
        ids = processor.codes_to_ids(encoded.audio_codes, encoded.audio_codes_lengths)
        decoded = model.decode(**processor.ids_to_codes(ids), seed=%d, num_inference_steps=%d)
    np.savez(out, codes=encoded.audio_codes.numpy(), audio=decoded.audio_values.numpy(),
             ids=np.asarray(ids[0]), features=feature_extractor(audio, sampling_rate=16000)["input_features"])
    modules = {name: type(obj).__module__ for name, obj in [("config", config), ("model", model),
               ("for_tokenization", for_tokenization), ("feature_extractor", feature_extractor),
               ("processor", processor)]}
    loaded = sorted(m for m in sys.modules if m == "semanticodec_hf" or m.startswith("semanticodec_hf."))
    print(json.dumps({"modules": modules, "package_modules": loaded}))
""" % (SEED, STEPS))


def run_python(code: str, *args: str, env_overrides: dict = None, cwd: Path = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SEMANTICODEC_LSTM_KERNEL="aten")
    env.pop("PYTHONPATH", None)
    env.update(env_overrides or {})
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory) -> Path:
    """A tiny model saved as a user would: model, then processor (which writes the feature extractor too)."""
    folder = tmp_path_factory.mktemp("remote") / "semanticodec-tiny"
    model = SemantiCodecModel.tiny(seed=SEED)
    model.save_pretrained(folder)
    SemantiCodecProcessor.from_codec(model, SemantiCodecFeatureExtractor()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def test_audio() -> np.ndarray:
    rng = np.random.default_rng(11)
    t = np.arange(16000 * 3) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t * (1 + t)) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def installed_result(saved_folder, test_audio, tmp_path_factory):
    """Codes, ids and waveform from the installed package imported as usual, in a fresh process with the same
    environment as the others (thread count and kernels fixed, so the waveforms are comparable bit for bit)."""
    tmp_path = tmp_path_factory.mktemp("installed")
    result, npz = run_encode_and_decode(saved_folder, test_audio, tmp_path, trust=False, block=False,
                                        import_package=True)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith("semanticodec_hf.") for module in report["modules"].values()), report
    return dict(np.load(npz))


def run_encode_and_decode(folder: Path, audio: np.ndarray, tmp_path: Path, trust: bool, block: bool,
                          import_package: bool = False):
    out = tmp_path / "result"
    np.save(str(out) + ".in.npy", audio)
    code = (BLOCK_PACKAGE if block else "") + ("import semanticodec_hf\n" if import_package else "") + ENCODE_AND_DECODE
    overrides = {"HF_MODULES_CACHE": str(tmp_path / "modules")}
    if block:
        overrides["SEMANTICODEC_HF_AUTOLOAD"] = "0"  # the startup hook would import the package before the block
    result = run_python(code, str(folder), str(out), "1" if trust else "0", env_overrides=overrides, cwd=tmp_path)
    return result, out.with_suffix(".npz")


def assert_same_result(got: dict, expected: dict) -> None:
    assert np.array_equal(got["codes"], expected["codes"])
    assert np.array_equal(got["ids"], expected["ids"])
    np.testing.assert_allclose(got["features"], expected["features"], rtol=1e-6, atol=1e-6)
    scale = float(np.abs(expected["audio"]).max())
    assert scale > 1e-3  # audible output, or the comparison below proves nothing
    np.testing.assert_allclose(got["audio"], expected["audio"], rtol=1e-5, atol=1e-6 * scale)


# ------------------------------------------------------------------------------------ what the folder carries
def test_saved_folder_carries_auto_map_and_self_contained_code(saved_folder):
    config = json.loads((saved_folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_semanticodec.SemantiCodecConfig",
        "AutoModel": "modeling_semanticodec.SemantiCodecModel",
        "AutoModelForAudioTokenization": "modeling_semanticodec.SemantiCodecModel",
    }
    preprocessor = json.loads((saved_folder / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"]["AutoFeatureExtractor"] == \
        "feature_extraction_semanticodec.SemantiCodecFeatureExtractor"
    processor = json.loads((saved_folder / "processor_config.json").read_text())
    assert processor["auto_map"] == {"AutoProcessor": "processing_semanticodec.SemantiCodecProcessor"}
    assert (processor["semantic_vocab_size"], processor["acoustic_vocab_size"]) == (64, 128)
    assert processor["pattern"] == "interleaved" and processor["add_special_tokens"] is True

    code_files = {p.name for p in saved_folder.glob("*.py")}
    assert REMOTE_FILES <= code_files
    for path in saved_folder.glob("*.py"):  # flat and self-contained: relative imports stay inside the folder
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module, f"{path.name}: `from {'.' * node.level}{node.module or ''}`"
                assert f"{node.module}.py" in code_files, f"{path.name} imports .{node.module}, which is not copied"
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert not name.startswith("semanticodec_hf"), f"{path.name} imports {name}: it cannot travel"


# ------------------------------------------------------------------------------------ trust_remote_code
# Before 5.10.1, transformers copied only the DIRECT relative imports of a local folder's module into its module
# cache (Hub repos were copied recursively), so our module tree does not load from a local folder there.
LOCAL_FOLDERS_COPY_ALL_IMPORTS = Version(transformers.__version__) >= Version("5.10.1")


@pytest.mark.skipif(not LOCAL_FOLDERS_COPY_ALL_IMPORTS,
                    reason="transformers < 5.10.1 copies only direct relative imports of a local folder (README)")
def test_trust_remote_code_without_the_package_gives_the_same_codes_and_waveform(
        saved_folder, test_audio, installed_result, tmp_path):
    result, npz = run_encode_and_decode(saved_folder, test_audio, tmp_path, trust=True, block=True)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["package_modules"] == []  # nothing of the installed package ran
    assert all(module.startswith("transformers_modules.") for module in report["modules"].values()), report
    assert_same_result(dict(np.load(npz)), installed_result)


def test_without_the_flag_or_the_package_transformers_asks_for_trust_remote_code(saved_folder, test_audio, tmp_path):
    result, _ = run_encode_and_decode(saved_folder, test_audio, tmp_path, trust=False, block=True)
    assert result.returncode != 0
    assert "ValueError" in result.stderr and "trust_remote_code=True" in result.stderr
    assert "does not recognize this architecture" not in result.stderr  # not the generic unknown-model error


# ------------------------------------------------------------------------------------ the startup hook
def test_installed_package_loads_natively_in_a_fresh_process_without_being_imported(
        saved_folder, test_audio, installed_result, tmp_path):
    hooks = [Path(d) / "semanticodec_hf.pth" for d in site.getsitepackages() + [site.getusersitepackages()]]
    assert any(h.exists() for h in hooks), f"startup hook missing (reinstall the package): {hooks}"
    result, npz = run_encode_and_decode(saved_folder, test_audio, tmp_path, trust=False, block=False)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(module.startswith("semanticodec_hf.") for module in report["modules"].values()), report
    assert_same_result(dict(np.load(npz)), installed_result)


def test_startup_hook_keeps_transformers_light_and_can_be_turned_off(tmp_path):
    probe = ("import sys; import transformers; from transformers import AutoConfig, AutoModel; "
             "print(sorted(m for m in ('torch', 'diffusers', 'semanticodec_hf', 'semanticodec_hf.modeling_semanticodec')"
             " if m in sys.modules)); print(type(AutoConfig.for_model('semanticodec')).__name__)")
    result = run_python(probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "diffusers" not in lines[0] and "modeling_semanticodec" not in lines[0]
    assert lines[1] == "SemantiCodecConfig"

    off = run_python(probe, env_overrides={"SEMANTICODEC_HF_AUTOLOAD": "0"}, cwd=tmp_path)
    assert off.returncode != 0 and "semanticodec" in off.stderr  # transformers does not know the type then
    assert "'semanticodec_hf'" not in off.stdout


def test_model_classes_register_when_a_config_is_built(tmp_path):
    """`AutoModel.from_config` works after building a config, without importing the model module first."""
    probe = ("import sys; from transformers import AutoModel; import semanticodec_hf; "
             "assert 'semanticodec_hf.modeling_semanticodec' not in sys.modules; "
             "config = semanticodec_hf.SemantiCodecConfig.tiny(); "
             "print(type(AutoModel.from_config(config)).__name__)")
    result = run_python(probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "SemantiCodecModel"
