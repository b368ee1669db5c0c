"""The 12 committed model cards: what the generator renders, valid Hub metadata (parsed by huggingface_hub, offline),
and the right numbers and usage for each variant."""

import math
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from semanticodec_hf.configuration_semanticodec import SemantiCodecConfig
from semanticodec_hf.model_cards import card_repo_name, render_model_card, write_all_cards

CARDS = Path(__file__).resolve().parent.parent / "model_cards"
# The published variants, written out here rather than taken from the package, so a lost variant shows.
VARIANTS = [(rate, vocab) for rate in (25, 50, 100) for vocab in (4096, 8192, 16384, 32768)]
ACOUSTIC_CODES = 8192


def _card_path(rate, vocab):
    return CARDS / f"semanticodec-{rate}tps-{vocab}.md"


def test_the_committed_cards_are_what_the_generator_writes(tmp_path):
    assert sorted(p.name for p in CARDS.glob("*.md")) == sorted(_card_path(r, v).name for r, v in VARIANTS)
    written = write_all_cards(tmp_path)
    assert sorted(p.name for p in written) == sorted(p.name for p in CARDS.glob("*.md"))
    for rate, vocab in VARIANTS:
        committed = _card_path(rate, vocab).read_text(encoding="utf-8")
        assert committed == render_model_card(SemantiCodecConfig.from_variant(rate, vocab)), (
            f"{_card_path(rate, vocab).name} is stale: run `python -m semanticodec_hf.model_cards model_cards`")
        assert (tmp_path / _card_path(rate, vocab).name).read_text(encoding="utf-8") == committed


@pytest.mark.parametrize("rate, vocab", VARIANTS)
def test_each_card_parses_with_hub_metadata(rate, vocab):
    path = _card_path(rate, vocab)
    card = ModelCard.load(path)  # a local file: no network
    assert ModelCard(path.read_text(encoding="utf-8")).data.to_dict() == card.data.to_dict()
    data = card.data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "audio-to-audio"
    # upstream: code MIT (its setup.py), weights without a stated licence -> "other", pointing to the upstream repo
    assert data.license == "other" and data.license_name == "semanticodec-upstream"
    assert data.license_link == "https://github.com/haoheliu/SemantiCodec-inference"
    assert {"audio", "audio-tokenization", "codec", "semanticodec"} <= set(data.tags)
    assert len(set(data.tags)) == len(data.tags)
    assert data.base_model == "haoheliu/SemantiCodec" and data.datasets == ["agkphysics/AudioSet"]

    # this variant's numbers, computed here: two streams per frame, log2(vocab) + 13 bits per frame
    frames = rate / 2
    bitrate = frames * (math.log2(vocab) + math.log2(ACOUSTIC_CODES))
    text = card.text
    assert text.startswith(f"\n# SemantiCodec, {rate} tokens/s, semantic vocabulary {vocab} ")
    assert f"**{rate} tokens/s, {bitrate:g} bit/s**" in text
    assert f"| token rate (both streams) | {rate} tokens/s |" in text
    assert f"| frames per second | {frames:g} |" in text
    assert f"| semantic vocabulary | {vocab} ({math.log2(vocab):g} bits) |" in text
    assert f"| bitrate | {bitrate:g} bit/s |" in text
    lm_vocab = vocab + ACOUSTIC_CODES + 4  # semantic, shifted acoustic, <bos> <eos> <pad> <sep>
    assert f"| LM vocabulary (processor) | {lm_vocab} ids: {vocab} semantic + {ACOUSTIC_CODES} acoustic" in text
    assert f"acoustic ids are\nshifted by {vocab}," in text
    assert f"semanticodec-hf convert --token-rate {rate} --semantic-vocab-size {vocab} " in text
    assert f"semanticodec_tokenrate_{rate}/encoder.ckpt" in text


@pytest.mark.parametrize("rate, vocab", VARIANTS)
def test_each_card_shows_the_processor(rate, vocab):
    text = _card_path(rate, vocab).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1
    snippet = blocks[0]
    compile(snippet, "usage", "exec")  # valid Python
    repo = card_repo_name(rate, vocab)
    assert repo == f"semanticodec-{rate}tps-{vocab}"
    for line in (
        "from transformers import AutoModel, AutoProcessor",
        f'model = AutoModel.from_pretrained("{repo}", trust_remote_code=True)',
        f'processor = AutoProcessor.from_pretrained("{repo}", trust_remote_code=True)',
        "inputs = processor(audio.T, sampling_rate=sampling_rate, return_tensors=\"pt\")",
        "encoded = model.encode(**inputs)",
        "ids = processor.codes_to_ids(encoded.audio_codes, encoded.audio_codes_lengths)",
        "codes = processor.ids_to_codes(ids)",
        "model.decode(**codes, seed=0)",
    ):
        assert line in snippet, line
    assert "import semanticodec_hf" in snippet  # the alternative to trust_remote_code is named
    assert f"--model {repo}`" in text
