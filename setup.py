"""Package definition for semanticodec-hf (src layout)."""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

# One line run at interpreter start (site-packages .pth): it imports the light `semanticodec_hf` package, which
# registers the `semanticodec` model type with the transformers Auto classes when they are first used, so that
# `AutoModel.from_pretrained(folder)` works without `import semanticodec_hf`. SEMANTICODEC_HF_AUTOLOAD=0 disables it.
STARTUP_HOOK = os.path.join("src", "semanticodec_hf.pth")


class BuildPyWithStartupHook(build_py):
    """build_py that also puts the startup hook at the top of the installed tree (beside the package)."""

    def run(self) -> None:
        super().run()
        self.copy_file(STARTUP_HOOK, os.path.join(self._hook_directory(), os.path.basename(STARTUP_HOOK)))

    def _hook_directory(self) -> str:
        # An editable install (PEP 660) links the packages and installs what lies in the install command's
        # `install_lib` (its unpacked wheel) as is; a regular wheel takes `build_lib`.
        if getattr(self, "editable_mode", False):
            return self.get_finalized_command("install").install_lib
        return self.build_lib

    def get_outputs(self, include_bytecode: bool = True) -> list:
        hook = os.path.join(self._hook_directory(), os.path.basename(STARTUP_HOOK))
        return super().get_outputs(include_bytecode) + [hook]


setup(
    name="semanticodec-hf",
    version="0.1.0.dev0",
    description="SemantiCodec (ultra-low-bitrate semantic audio codec) as Hugging Face software, "
    "plus an audio language-model toolkit on its tokens.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # The codec lives in src/; the audio-LM toolkit lives in the top-level lm/ folder (product layout) and
    # installs as the subpackage `semanticodec_hf.lm` (no top-level `lm` name that other projects may use).
    package_dir={"": "src", "semanticodec_hf.lm": "lm"},
    packages=find_packages("src") + ["semanticodec_hf.lm"],
    install_requires=[
        # Ranges, so that the package installs beside a user's own stack: each floor is the oldest release with
        # the API we use (tests/compat/lower_bounds.py installs the floors and runs tests on them), each cap the
        # next major. constraints.txt pins today's known-good set (the README's and CI's install use it).
        # torch: 2.6 brings torch.accelerator; only 2.13.0 is tested (a CPU wheel; other CPU builds are not
        # installable here, and PyPI's Linux torch pulls gigabytes of CUDA packages).
        "torch>=2.6,<3",
        "transformers>=5.0,<6",  # the audio-tokenizer API is in 4.53+, but 4.x needs huggingface_hub<1
        "diffusers>=0.35.2,<1",  # 0.35.1 and older import a name that transformers 5 removed
        "accelerate>=1.2,<2",  # accelerate.utils.load; transformers 5.0 imports get_module_size_with_ties (1.2)
        "datasets>=4.0,<6",  # datasets.List
        "huggingface_hub>=1.3,<3",  # what transformers 5.0 requires
        "evaluate>=0.2,<1",  # the codec metrics as an evaluate metric (semanticodec_hf/evaluation/); 0.1 fails
        "safetensors>=0.4",
        "numpy>=1.24",
        "soundfile>=0.12",
        "soxr>=0.3",
        "tqdm>=4.60",
        "tokenizers>=0.20,<1",  # joint_vocabulary (WordLevel, Split(Regex), Fuse); transformers pins it tighter
        "pyyaml>=6",  # LM recipes
    ],
    extras_require={
        "bpe": ["sentencepiece>=0.2"],  # optional acoustic BPE over the semantic stream
        "lm": ["tensorboard>=2.10"],  # the LM trainer's default tracker (it warns and goes on without it)
        "eval": ["pesq>=0.0.4", "pystoi>=0.4", "matplotlib>=3.7"],  # codec metrics: PESQ/STOI, plots
        "codebook": ["faiss-cpu>=1.8", "scikit-learn>=1.3"],  # semantic k-means (faiss; sklearn streams)
        "dev": ["pytest>=7", "hypothesis>=6", "sentencepiece>=0.2", "tensorboard>=2.10", "pesq>=0.0.4",
                "pystoi>=0.4", "matplotlib>=3.7", "faiss-cpu>=1.8", "scikit-learn>=1.3"],
    },
    entry_points={
        "console_scripts": ["semanticodec-hf=semanticodec_hf.cli:main"],
        # the LM toolkit adds `semanticodec-hf continue` here, so the codec's CLI never imports the toolkit
        "semanticodec_hf.commands": [
            "continue=semanticodec_hf.lm.generate:register_continue_command",
            "decode-semantic=semanticodec_hf.lm.acoustic_stage:register_decode_semantic_command",
        ],
    },
    cmdclass={"build_py": BuildPyWithStartupHook},
)
