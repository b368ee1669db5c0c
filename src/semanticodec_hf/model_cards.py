"""Model cards for the converted variants: one template, so the 12 cards in `model_cards/` and the card
the converter writes next to the weights never disagree. `python -m semanticodec_hf.model_cards DIR`
regenerates the folder; tests/test_model_cards.py checks that the committed cards equal what this module renders
and that they parse with `huggingface_hub.ModelCard`.

The YAML header is what a Hub page shows: `library_name`, `pipeline_tag`, `tags`, `license` (`other`, pointing
to the upstream repository: its code is MIT but the official weights state no licence), `datasets` and
`base_model`."""

from __future__ import annotations

import sys
from pathlib import Path

from .audio_token_layout import SemantiCodecVocabularyLayout
from .configuration_semanticodec import PUBLISHED_SEMANTIC_VOCAB_SIZES, PUBLISHED_TOKEN_RATES, SemantiCodecConfig

# Hub tags of every card: the task (audio tokenization, codec) and the project.
CARD_TAGS = ("audio", "audio-tokenization", "codec", "audio-codec", "audio-tokenizer", "semanticodec",
             "semanticodec-hf")


def card_repo_name(token_rate: int, semantic_vocab_size: int) -> str:
    return f"semanticodec-{token_rate}tps-{semantic_vocab_size}"


def render_model_card(config: SemantiCodecConfig) -> str:
    """The Hub model card (YAML metadata + usage, conversion note, licence provenance, citation)."""
    rate, vocab = config.token_rate, config.semantic_vocab_size
    kbps = config.bitrate / 1000
    repo = card_repo_name(rate, vocab)
    layout = SemantiCodecVocabularyLayout.from_config(config)
    tags = "\n".join(f"- {tag}" for tag in CARD_TAGS)
    lm_vocabulary = (f"{layout.vocab_size} ids: {vocab} semantic + {layout.acoustic_vocab_size} acoustic + "
                     f"{layout.num_special_tokens} special")
    return f"""---
library_name: transformers
pipeline_tag: audio-to-audio
license: other
license_name: semanticodec-upstream
license_link: https://github.com/haoheliu/SemantiCodec-inference
tags:
{tags}
datasets:
- agkphysics/AudioSet
base_model: haoheliu/SemantiCodec
---

# SemantiCodec, {rate} tokens/s, semantic vocabulary {vocab} ({kbps:.3g} kbps)

SemantiCodec (Liu et al., 2024) compresses 16 kHz speech, music and general sound into two token
streams: semantic ids (k-means centroids of AudioMAE features, vocabulary {vocab}) and acoustic ids
(vector quantiser, {config.acoustic_codebook_size} codes), one of each per frame, {config.frame_rate:g}
frames per second: **{config.tokens_per_second:g} tokens/s, {config.bitrate:g} bit/s**. A latent
diffusion decoder (UNet, VAE, HiFi-GAN) turns the tokens back into audio.

| | |
|---|---|
| token rate (both streams) | {config.tokens_per_second:g} tokens/s |
| frames per second | {config.frame_rate:g} |
| semantic vocabulary | {vocab} ({config.semantic_bits:g} bits) |
| acoustic codebook | {config.acoustic_codebook_size} ({config.acoustic_bits:g} bits) |
| bitrate | {config.bitrate:g} bit/s |
| sampling rate | {config.sampling_rate} Hz |
| decoding | DDIM, {config.num_inference_steps} steps, classifier-free guidance {config.guidance_scale:g}, 10.24 s windows |
| LM vocabulary (processor) | {lm_vocabulary} |

## Usage

```python
import soundfile as sf
from transformers import AutoModel, AutoProcessor

# trust_remote_code runs the model code saved in this repo; or `import semanticodec_hf` first and drop the flag
model = AutoModel.from_pretrained("{repo}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)
audio, sampling_rate = sf.read("input.wav", dtype="float32", always_2d=True)
inputs = processor(audio.T, sampling_rate=sampling_rate, return_tensors="pt")  # feature-extractor inputs
encoded = model.encode(**inputs)                    # audio_codes: (batch, 2, frames), {config.frame_rate:g} frames/s
ids = processor.codes_to_ids(encoded.audio_codes, encoded.audio_codes_lengths)  # LM ids (interleaved layout)
codes = processor.ids_to_codes(ids)                 # back to (audio_codes, audio_codes_lengths)
audio_values = model.decode(**codes, seed=0).audio_values  # 16 kHz audio, from these ids or ids an LM generated
```

The processor wraps the feature extractor (`AutoFeatureExtractor` loads it alone) and maps codes to one flat
vocabulary of {layout.vocab_size} ids for language models: semantic ids keep their values, acoustic ids are
shifted by {layout.acoustic_offset}, and `<bos>`, `<eos>`, `<pad>`, `<sep>` follow; interleaved, a clip takes
{config.tokens_per_second:g} ids per second (plus `<bos>` and `<eos>`).

Or from the command line: `semanticodec-hf roundtrip input.wav output.wav --model {repo}`.

Decoding samples stochastically like the original (DDIM with eta = 1); pass `seed` for
reproducible output. It costs about 100 UNet evaluations per 10.24 s window: a GPU is recommended.

## Conversion

Converted with semanticodec-hf from the official files of
[haoheliu/SemantiCodec](https://huggingface.co/haoheliu/SemantiCodec):
`semanticodec_tokenrate_{rate}/encoder.ckpt`, `semanticodec_tokenrate_{rate}/decoder.ckpt` and
`{config.semantic_codebook_file}`:

```bash
semanticodec-hf convert --token-rate {rate} --semantic-vocab-size {vocab} --output {repo}
```

The conversion is strict (every original tensor is mapped or on a documented drop list: the unused
MAE decoder, the UNet's EMA copy, VQ training statistics and the recomputed diffusion schedule) and
every stage is tested against the original implementation's outputs. The checkpoints' SHA-256
digests are recorded in `config.json` (`original_checkpoint_sha256`).

## Licence

The original code is released under the MIT licence; the licence of the official weights is not
stated upstream. Check [the upstream repository](https://github.com/haoheliu/SemantiCodec-inference)
before any use beyond research.

## Citation

```bibtex
@article{{liu2024semanticodec,
  title   = {{SemantiCodec: An Ultra Low Bitrate Semantic Audio Codec for General Sound}},
  author  = {{Liu, Haohe and Xu, Xuenan and Yuan, Yi and Wu, Mengyue and Wang, Wenwu and Plumbley, Mark D.}},
  journal = {{arXiv preprint arXiv:2405.00233}},
  year    = {{2024}}
}}
```
"""


def write_all_cards(directory: Path) -> list:
    """Write the card of every published variant to `directory/<repo name>.md`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for rate in PUBLISHED_TOKEN_RATES:
        for vocab in PUBLISHED_SEMANTIC_VOCAB_SIZES:
            path = directory / f"{card_repo_name(rate, vocab)}.md"
            path.write_text(render_model_card(SemantiCodecConfig.from_variant(rate, vocab)), encoding="utf-8")
            written.append(path)
    return written


if __name__ == "__main__":
    write_all_cards(Path(sys.argv[1] if len(sys.argv) > 1 else "model_cards"))
