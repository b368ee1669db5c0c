"""Hostile code files (issue 16): checksum-valid `.sct` headers and `.pt` dicts with absurd sample counts, token
rates, flags or original sampling rates are refused at read time with a message naming the file, the field, the
value and the allowed range; in a multi-file `decompress`/`decode` the bad files are reported and the good ones
are still written; `SemantiCodecModel.decode` refuses absurd `num_samples` with a ValueError, not an overflow."""

import numpy as np
import pytest
import soundfile as sf
import torch

from semanticodec_hf.cli import PT_FORMAT_TAG
from semanticodec_hf.cli import main as cli_main
from semanticodec_hf.long_audio import reference_output_samples
from semanticodec_hf.modeling_semanticodec import _check_num_samples
from semanticodec_hf.sct_format import _HEADER, HEADER_SIZE, _checksum, num_samples_span, read_sct

TINY = ["--tiny", "--quiet"]
DECODE = TINY + ["--steps", "2", "--batch-size", "8"]
# the header fields by name, in `_HEADER` order
FIELDS = ["magic", "version", "flags", "token_rate", "semantic", "acoustic", "frames", "samples", "rate", "crc", "size"]


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def tone(path, seconds, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), rate, subtype="PCM_16")
    return path


def with_header(data: bytes, **changes) -> bytes:
    """`data` (a `.sct` file) with header fields replaced and the checksum recomputed: a file that passes its CRC."""
    values = dict(zip(FIELDS, _HEADER.unpack_from(data)))
    values.update(changes, crc=0)
    payload = data[HEADER_SIZE:]
    values["crc"] = _checksum(_HEADER.pack(*values.values()), payload)
    return _HEADER.pack(*values.values()) + payload


@pytest.fixture(scope="module")
def good_sct(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    sct = folder / "good.sct"
    assert cli_main(["compress", str(tone(folder / "good.wav", 0.7, rate=22050)), str(sct)] + TINY) == 0
    return sct.read_bytes()


def hostile_files(good: bytes):
    """name -> (bytes, what the error must say): each is checksum-valid, so only the header bounds catch it."""
    low, high = num_samples_span(_HEADER.unpack_from(good)[6], 100)
    return {
        "samples_2_63.sct": (with_header(good, samples=2**63), "the sample count (num_samples) 9223372036854775808 "
                                                                f"is outside [{low}, {high}]"),
        "samples_max.sct": (with_header(good, samples=2**64 - 1),
                            "the sample count (num_samples) 18446744073709551615"),
        "samples_1.sct": (with_header(good, samples=1), "the sample count (num_samples) 1 is outside"),
        "rate_16mhz.sct": (with_header(good, rate=16_000_000), "the original sampling rate (original_sampling_rate) "
                                                               "16000000 Hz is outside [1, 384000] Hz"),
        "token_rate_7.sct": (with_header(good, token_rate=7), "the token rate (token_rate) 7 is not one of "
                                                              "[25, 50, 100]"),
        "flags.sct": (with_header(good, flags=4), "the reserved flags byte (offset 5) is 0x04"),
    }


def test_one_hostile_sct_among_good_ones_is_reported_and_the_good_ones_are_written(good_sct, tmp_path, capsys):
    src, out = tmp_path / "sct", tmp_path / "wav"
    src.mkdir()
    (src / "a.sct").write_bytes(good_sct)
    (src / "z.sct").write_bytes(good_sct)
    hostile = hostile_files(good_sct)
    for name, (data, _) in hostile.items():
        (src / name).write_bytes(data)
    # one group for all files (the case that aborted the whole run), resampling to the declared rate
    assert cli_main(["decompress", str(src), str(out), "--original-rate"] + DECODE) == 2
    err = capsys.readouterr().err
    for name, (_, message) in hostile.items():
        assert f"{src / name}: {message}" in err, (name, err)
    assert "re-create it from the audio" in err
    assert f"{len(hostile)} of {len(hostile) + 2} files failed" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "z.wav"]
    header = read_sct(src / "a.sct")[0]
    audio, rate = sf.read(out / "a.wav")
    assert rate == 22050 and abs(len(audio) - header.num_samples * 22050 / 16000) <= 2


def test_info_refuses_a_hostile_header_instead_of_printing_an_absurd_bitrate(good_sct, tmp_path, capsys):
    for name, (data, message) in hostile_files(good_sct).items():
        (tmp_path / name).write_bytes(data)
        assert cli_main(["info", str(tmp_path / name)]) == 2
        captured = capsys.readouterr()
        assert message in captured.err and "bit/s" not in captured.out, name


def read_sct_codes(good: bytes, folder):
    (folder / "g.sct").write_bytes(good)
    return read_sct(folder / "g.sct")[1]


def _pt(path, codes, **fields):
    torch.save({"format": PT_FORMAT_TAG, "audio_codes": torch.as_tensor(codes), "token_rate": 100,
                "semantic_vocab_size": 64, "acoustic_codebook_size": 128, **fields}, path)
    return path


def test_pt_code_files_are_bounded_like_sct_headers(good_sct, tmp_path, capsys):
    codes = read_sct_codes(good_sct, tmp_path)
    low, high = num_samples_span(codes.shape[1], 100)
    src, out = tmp_path / "pt", tmp_path / "wav"
    src.mkdir()
    good_samples = read_sct(tmp_path / "g.sct")[0].num_samples
    _pt(src / "good.pt", codes, num_samples=good_samples, original_sampling_rate=22050)
    _pt(src / "tensor.pt", codes, num_samples=torch.tensor(good_samples), original_sampling_rate=torch.tensor(22050))
    cases = {
        "huge.pt": (dict(num_samples=2**64), f"the sample count (num_samples) {2**64} is outside [{low}, {high}]"),
        "past_int64.pt": (dict(num_samples=2**63), f"the sample count (num_samples) {2**63} is outside"),
        "negative.pt": (dict(num_samples=-5), "the sample count (num_samples) -5 is outside"),
        "float.pt": (dict(num_samples=1.5), "num_samples must be an integer, got float 1.5"),
        "text.pt": (dict(num_samples="16000"), "num_samples must be an integer, got str '16000'"),
        "float_tensor.pt": (dict(num_samples=torch.tensor(16000.0)), "num_samples must be an integer, got Tensor"),
        "rate.pt": (dict(num_samples=good_samples, original_sampling_rate=16_000_000),
                    "the original sampling rate (original_sampling_rate) 16000000 Hz is outside [1, 384000] Hz"),
        "rate_zero.pt": (dict(original_sampling_rate=0), "the original sampling rate (original_sampling_rate) 0 Hz"),
    }
    for name, (fields, _) in cases.items():
        _pt(src / name, codes, **fields)
    np.save(src / "bare.npy", codes)
    assert cli_main(["decode", str(src), str(out), "--original-rate"] + DECODE) == 2
    err = capsys.readouterr().err
    for name, (_, message) in cases.items():
        assert f"{src / name}: {message}" in err, (name, err)
    assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["bare.wav", "good.wav", "tensor.wav"]
    assert np.array_equal(sf.read(out / "good.wav")[0], sf.read(out / "tensor.wav")[0])


# ------------------------------------------------------------------------------ the model's own checks
@pytest.mark.parametrize(
    "num_samples,message",
    [
        ([2**64], "num_samples\\[0\\] is 18446744073709551616, outside \\[1, 9223372036854775807\\]"),
        ([2**63], "num_samples\\[0\\] is 9223372036854775808, outside"),
        ([0], "num_samples\\[0\\] is 0, outside"),
        ([1.5], "num_samples\\[0\\] must be an integer number of 16 kHz samples, got 1.5"),
        (torch.tensor([1.5]), "num_samples must be integer lengths, got a torch.float32 tensor"),
        ([True], "num_samples\\[0\\] must be an integer"),
        ([5, 6], "one positive length per item \\(1\\)"),
    ],
)
def test_decode_refuses_absurd_num_samples_with_a_value_error(tiny, num_samples, message):
    codes = torch.zeros(1, 2, 16, dtype=torch.long)
    with pytest.raises(ValueError, match=message):
        tiny.decode(codes, num_samples=num_samples, num_inference_steps=1)
    if isinstance(num_samples, list) and len(num_samples) == 1:
        with pytest.raises(ValueError, match=message.replace("\\[0\\]", "")):
            next(tiny.decode_stream(codes[0], num_samples=num_samples[0], num_inference_steps=1))


def test_decode_still_takes_every_integer_form_of_num_samples(tiny):
    for num_samples in ([3000], (3000,), torch.tensor([3000]), torch.tensor([3000], dtype=torch.int32),
                        np.array([3000]), [np.int64(3000)], [torch.tensor(3000)], 3000):
        assert _check_num_samples(num_samples, 1) == [3000], num_samples
    codes = torch.zeros(2, 2, 16, dtype=torch.long)
    # a length past what the frames give (16 x 320 samples) is trimmed to them, as documented
    out = tiny.decode(codes, num_samples=np.array([3000, 2**62]), num_inference_steps=1, seed=0)
    assert out.audio_values_lengths.tolist() == [3000, reference_output_samples(16, 100)]


# ------------------------------------------------------------------------ hostile training checkpoints (item 4)
class _RunsCode:
    """Unpickling this creates `path`: the stand-in for arbitrary code in a planted checkpoint file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def _training_pieces(tmp_path):
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel
    from transformers import get_cosine_schedule_with_warmup

    accelerator = Accelerator(cpu=True, project_dir=str(tmp_path))
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    scheduler = get_cosine_schedule_with_warmup(optimizer, 2, 10)
    model, optimizer = accelerator.prepare(model, optimizer)
    ema = EMAModel(model.parameters(), decay=0.9)
    return accelerator, model, optimizer, {"scheduler": scheduler, "ema": ema}


def _train(model, optimizer, objects, steps):
    for _ in range(steps):
        model(torch.randn(4, 3)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        objects["scheduler"].step()
        objects["ema"].step(model.parameters())


def _checkpoint(tmp_path):
    from semanticodec_hf.training_utils import save_checkpoint

    accelerator, model, optimizer, objects = _training_pieces(tmp_path)
    torch.manual_seed(0)
    _train(model, optimizer, objects, 3)
    path = save_checkpoint(accelerator, tmp_path, 3, {"recipe": {"lr": 0.1}}, keep=2, objects=objects)
    return path, objects


def test_resume_restores_scheduler_ema_and_rng_without_pickle(tmp_path):
    from semanticodec_hf.training_utils import load_checkpoint

    path, saved = _checkpoint(tmp_path)
    assert not list(path.glob("custom_checkpoint_*")) and (path / "custom_state.pt").is_file()
    expected_rng = torch.get_rng_state()
    expected = {name: obj.state_dict() for name, obj in saved.items()}
    expected = {"scheduler": dict(expected["scheduler"]),
                "ema": {**expected["ema"], "shadow_params": [p.clone() for p in expected["ema"]["shadow_params"]]}}
    torch.manual_seed(123)  # a fresh process: other RNG, untrained objects
    accelerator, model, optimizer, objects = _training_pieces(tmp_path / "fresh")
    assert load_checkpoint(accelerator, path, objects) == 3
    assert torch.equal(torch.get_rng_state(), expected_rng)
    restored = {name: obj.state_dict() for name, obj in objects.items()}
    assert restored["scheduler"] == expected["scheduler"]
    assert objects["scheduler"].get_last_lr() == saved["scheduler"].get_last_lr()
    ema, want = restored["ema"], expected["ema"]
    settings = [k for k in want if k != "shadow_params"]
    assert [ema[k] for k in settings] == [want[k] for k in settings]
    assert all(torch.equal(a, b) for a, b in zip(ema["shadow_params"], want["shadow_params"]))
    assert isinstance(ema["min_decay"], float) and isinstance(ema["optimization_step"], int)


@pytest.mark.parametrize("planted", ["custom_checkpoint_0.pkl", "optimizer.bin", "random_states_0.pkl",
                                     "custom_state.pt"])
def test_resume_never_unpickles_a_planted_file(tmp_path, planted):
    from semanticodec_hf.training_utils import load_checkpoint

    path, _ = _checkpoint(tmp_path)
    marker = tmp_path / "code-ran"
    torch.save({"state": _RunsCode(marker)}, path / planted)
    accelerator, _, _, objects = _training_pieces(tmp_path / "fresh")
    with pytest.raises(ValueError, match=f"Cannot resume {path}.*(pickle|random states)") as caught:
        load_checkpoint(accelerator, path, objects)
    assert not marker.exists()
    assert "--resume no" in str(caught.value) or "start over" in str(caught.value)
    if planted == "custom_checkpoint_0.pkl":
        assert "custom_checkpoint_0.pkl" in str(caught.value) and "register_for_checkpointing" in str(caught.value)


def test_objects_registered_with_accelerate_are_refused_before_training(tmp_path):
    from semanticodec_hf.training_utils import start_run

    accelerator, _, _, objects = _training_pieces(tmp_path)
    accelerator.register_for_checkpointing(objects["scheduler"])
    try:
        with pytest.raises(ValueError, match="register_for_checkpointing.*Pass them as `objects`"):
            start_run(accelerator, tmp_path, "auto", "test", {"lr": 0.1})
    finally:
        accelerator._custom_objects.clear()


def test_custom_states_round_trip_their_python_types_and_name_missing_ones(tmp_path):
    from semanticodec_hf.training_utils import load_custom_states, save_custom_states

    class Holder:
        def __init__(self, state):
            self.state = state

        def state_dict(self):
            return self.state

        def load_state_dict(self, state):
            self.state = state

    state = {"lr": [0.1, float("inf")], "pair": (1, 2.5), "t": torch.arange(3.0), "flag": True, "none": None}
    save_custom_states({"h": Holder(state)}, tmp_path)
    loaded = Holder(None)
    load_custom_states({"h": loaded}, tmp_path)
    assert loaded.state["pair"] == (1, 2.5) and loaded.state["lr"] == [0.1, float("inf")]
    assert torch.equal(loaded.state["t"], state["t"]) and loaded.state["flag"] is True and loaded.state["none"] is None
    with pytest.raises(ValueError, match="lacks the states of other"):
        load_custom_states({"other": Holder(None)}, tmp_path)
    with pytest.raises(ValueError, match="has no custom_state.pt"):
        load_custom_states({"h": Holder(None)}, tmp_path / "elsewhere")