#!/usr/bin/env python
"""Our codec against the original implementation, side by side in one process on this machine.

Both load the SAME weights: the parity recipe (tests/parity_weights.py) is written out in the official
layout (`encoder.ckpt`, `decoder.ckpt`, codebook `.npy`), the original loads those files and ours loads
them through our converter. Speed does not depend on the values; using the same ones lets the benchmark
also check that the codes are identical and the decoded waveforms agree.

The original is not a dependency of this project: pass a checkout of
https://github.com/haoheliu/SemantiCodec-inference with `--original-repo`, in an environment that has its
extra packages (`pip install einops vector-quantize-pytorch librosa` and `pip install --no-deps timm torchvision`),
best a separate virtual environment: a torchvision whose C ops do not load with this torch breaks `transformers`
imports (this script defines the two op schemas it needs before importing anything else).
torchaudio does not load with this project's torch, so when it is missing the original gets a stand-in
module whose `compliance.kaldi.fbank` is our (parity-tested) Kaldi fbank and whose `load` reads with
soundfile; every clip here is 16 kHz already, so no resampling is involved. Both sides therefore share
the front end, which is a small part of the cost; everything after the fbank is the original's own code.

What is measured (one run, same machine, same thread count):
  encode: the original's `encode(path)` one clip at a time (its only mode) vs our feature extractor +
          `encode` over all clips in batches of `--batch`; codes must be identical.
  decode: the original's `decode(tokens)` (DDIM, `--decode-steps`, cfg 2.0) vs our `decode` with the same
          sampler, steps, guidance and seed, per second of audio; then our fast preset; then both again with our
          decoder's networks in bfloat16 (`set_decoder_dtype`, opt-in, not the original's precision; its waveform
          is compared with our float32 one from the same noise).
One parseable summary line:

    VERSUS_ORIGINAL token_rate=100 clips=8 enc_orig_x=... enc_ours_x=... enc_speedup=... codes_identical=1
        dec_orig_s_per_s=... dec_ours_s_per_s=... dec_speedup=... fast_s_per_s=... fast_speedup=... wave_max_abs_diff=...
        dec_bf16_speedup=... fast_bf16_speedup=... bf16_wave_rel_diff=...

example (about 10 minutes on 2 CPU cores):
  python benchmarks/versus_original.py --original-repo ~/src/SemantiCodec-inference --clips 8
"""

from __future__ import annotations

import argparse
import importlib.machinery
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import List

import numpy as np
import soundfile as sf
import torch


def _let_torchvision_import_without_its_ops() -> None:
    """timm (the original's AudioMAE blocks) imports torchvision; a torchvision wheel whose C ops do not load
    with this torch still imports once the two op schemas it registers fake kernels for exist."""
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return  # not installed: timm will say so
    except RuntimeError:
        library = torch.library.Library("torchvision", "DEF")
        library.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        library.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _let_torchvision_import_without_its_ops.library = library  # keep the definitions alive
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        print("original: torchvision's C ops do not load with this torch; defined the two schemas timm needs")


_let_torchvision_import_without_its_ops()  # before transformers, which also imports torchvision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import parity_weights  # noqa: E402  the deterministic weight recipe, in the official layout
from tokenize_throughput import synthetic_clips  # noqa: E402

from semanticodec_hf import SemantiCodecFeatureExtractor, SemantiCodecModel  # noqa: E402
from semanticodec_hf.cpu_info import describe_cpu  # noqa: E402
from semanticodec_hf.convert_semanticodec_original_to_hf import codebook_relative_path, convert_to_folder  # noqa: E402
from semanticodec_hf.kaldi_fbank import kaldi_fbank  # noqa: E402

SR = 16000
# The original's fixed fbank settings; the stand-in refuses anything else rather than compute it wrongly.
_FBANK_SETTINGS = dict(htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
                       num_mel_bins=128, dither=0.0, frame_shift=10)


def _torchaudio_stand_in() -> types.ModuleType:
    """A minimal `torchaudio` for the original's encode path: Kaldi fbank (ours) and soundfile loading."""

    def fbank(waveform: torch.Tensor, **settings) -> torch.Tensor:
        if settings != _FBANK_SETTINGS:
            raise NotImplementedError(f"stand-in fbank only implements {_FBANK_SETTINGS}, got {settings}")
        return kaldi_fbank(waveform)[0]

    def load(path: str):
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), rate

    def resample(*args, **kwargs):
        raise NotImplementedError("the benchmark feeds 16 kHz audio; no resampling in the stand-in")

    module = types.ModuleType("torchaudio")
    module.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    module.load = load
    module.compliance = types.SimpleNamespace(kaldi=types.SimpleNamespace(fbank=fbank))
    module.functional = types.SimpleNamespace(resample=resample)
    return module


def import_original(repo: Path):
    """`semanticodec.SemantiCodec` from a checkout, with the torchaudio stand-in when torchaudio cannot load."""
    if not (repo / "semanticodec" / "main.py").is_file():
        raise SystemExit(f"--original-repo {repo} is not a SemantiCodec-inference checkout (no semanticodec/main.py)")
    try:
        import torchaudio  # noqa: F401
        print("original: using the installed torchaudio")
    except Exception:  # not installed, or installed but broken with this torch
        sys.modules["torchaudio"] = _torchaudio_stand_in()
        print("original: torchaudio unavailable; stand-in with our Kaldi fbank and soundfile loading")
    sys.path.insert(0, str(repo))
    from semanticodec.main import SemantiCodec

    return SemantiCodec


def write_official_files(root: Path, token_rate: int, vocab: int) -> Path:
    """The parity recipe's weights in the Hub layout; returns the variant's subfolder (the original's path)."""
    variant = root / f"semanticodec_tokenrate_{token_rate}"
    codebook = variant / codebook_relative_path(token_rate, vocab)
    codebook.parent.mkdir(parents=True)
    torch.save(parity_weights.build_encoder_state_dict(token_rate), variant / "encoder.ckpt")
    torch.save(parity_weights.build_decoder_state_dict(token_rate), variant / "decoder.ckpt")
    np.save(codebook, parity_weights.build_semantic_centroids(vocab, token_rate))
    return variant


def timed(fn, repeats: int = 1):
    """`(result, seconds)`: the fastest of `repeats` calls (the result of the last one)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return result, best


def main(argv: List[str] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original-repo", type=Path, required=True, help="checkout of SemantiCodec-inference")
    parser.add_argument("--token-rate", type=int, default=100, choices=[25, 50, 100])
    parser.add_argument("--semantic-vocab-size", type=int, default=8192)
    parser.add_argument("--clips", type=int, default=8, help="clips encoded by both sides")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (10 s = one decoder window)")
    parser.add_argument("--batch", type=int, default=8, help="our encode batch size")
    parser.add_argument("--decode-steps", type=int, default=50, help="DDIM steps for both decoders")
    parser.add_argument("--fast", default="dpmsolver++:10", help="our fast preset, sampler:steps")
    parser.add_argument("--skip-decode", action="store_true")
    parser.add_argument("--repeats", type=int, default=1,
                        help="time each decode this many times and keep the fastest (machines with noisy neighbours)")
    parser.add_argument("--no-bfloat16", action="store_true",
                        help="skip our bfloat16-decoder timings (opt-in precision, not the original's)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--lstm-kernel", default="auto", choices=["auto", "aten", "onednn"],
                        help="our encoder's CPU LSTM kernel (default: measured per machine and batch)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"CPU: {describe_cpu()}", flush=True)
    SemantiCodec = import_original(args.original_repo.expanduser().resolve())

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print("writing the parity recipe's weights in the official layout and converting them ...", flush=True)
        variant = write_official_files(tmp / "official", args.token_rate, args.semantic_vocab_size)
        ours_dir = convert_to_folder(tmp / "ours", args.token_rate, args.semantic_vocab_size,
                                     checkpoint_dir=tmp / "official")
        ours = SemantiCodecModel.from_pretrained(ours_dir).eval()
        ours.encoder.lstm_kernel = args.lstm_kernel
        extractor = SemantiCodecFeatureExtractor.from_pretrained(ours_dir)
        original = SemantiCodec(args.token_rate, args.semantic_vocab_size, ddim_sample_step=args.decode_steps,
                                cfg_scale=2.0, checkpoint_path=str(variant)).eval()

        clips = synthetic_clips(args.clips, args.seconds, SR)
        paths = []
        for i, clip in enumerate(clips):
            paths.append(str(tmp / f"clip{i}.wav"))
            sf.write(paths[-1], clip, SR, subtype="FLOAT")
        audio_seconds = args.clips * args.seconds

        # ---------------------------------------------------------------- encode
        with torch.inference_mode():
            original.encode(paths[0])  # warm-up, both sides
            # at the timed batch size, so that an "auto" kernel choice is measured (once per machine) here
            ours.encode(**extractor(clips[:args.batch], sampling_rate=SR, return_tensors="pt"))
            original_codes, t_original = timed(lambda: [original.encode(p) for p in paths])

            def encode_ours():
                out = []
                for start in range(0, len(clips), args.batch):
                    features = extractor(clips[start:start + args.batch], sampling_rate=SR, return_tensors="pt")
                    encoded = ours.encode(**features)
                    out += [c[:, :n] for c, n in zip(encoded.audio_codes, encoded.audio_codes_lengths)]
                return out

            our_codes, t_ours = timed(encode_ours)
        # The original's tokens are [1, frames, 2] (semantic, acoustic); ours [2, frames] per item.
        identical = all(torch.equal(o[0].T, c) for o, c in zip(original_codes, our_codes))
        enc_orig_x, enc_ours_x = audio_seconds / t_original, audio_seconds / t_ours
        print(f"encode {args.clips} x {args.seconds} s: original {t_original:.1f} s ({enc_orig_x:.2f}x real time), "
              f"ours batch {args.batch} {t_ours:.1f} s ({enc_ours_x:.2f}x); speed-up {t_original / t_ours:.2f}; "
              f"codes identical: {identical}; our LSTM kernel: {ours.encoder.last_lstm_kernel} "
              f"(requested {args.lstm_kernel})", flush=True)
        summary = dict(token_rate=args.token_rate, clips=args.clips, enc_orig_x=enc_orig_x, enc_ours_x=enc_ours_x,
                       enc_speedup=t_original / t_ours, codes_identical=int(identical),
                       lstm_kernel=ours.encoder.last_lstm_kernel)

        # ---------------------------------------------------------------- decode
        if not args.skip_decode:
            tokens = original_codes[0]
            reps = args.repeats

            def original_decode():
                torch.manual_seed(0)
                return original.decode(tokens)

            with torch.inference_mode():
                wave_original, d_original = timed(original_decode, reps)
                codes = our_codes[0].unsqueeze(0)
                ours.decode(codes, num_inference_steps=1, seed=0)  # warm-up: first-call kernel set-up, not per clip
                wave_ours, d_ours = timed(lambda: ours.decode(codes, num_inference_steps=args.decode_steps,
                                                              guidance_scale=2.0, seed=0).audio_values, reps)
                sampler, steps = args.fast.split(":")
                _, d_fast = timed(lambda: ours.decode(codes, num_inference_steps=int(steps), sampler=sampler,
                                                      guidance_scale=2.0, seed=0), reps)
            a = torch.as_tensor(np.asarray(wave_original), dtype=torch.float32).reshape(-1)  # the original returns numpy
            b = wave_ours.reshape(-1).float()
            n = min(a.numel(), b.numel())
            decoded_seconds = b.numel() / SR
            diff = (a[:n] - b[:n]).abs().max().item()
            print(f"decode {decoded_seconds:.2f} s of audio, DDIM {args.decode_steps} cfg 2.0: original {d_original:.1f} s, "
                  f"ours {d_ours:.1f} s (speed-up {d_original / d_ours:.2f}); fast preset {args.fast} {d_fast:.1f} s "
                  f"(speed-up {d_original / d_fast:.2f}); waveforms {a.numel()} vs {b.numel()} samples, "
                  f"max |difference| {diff:.2e}", flush=True)
            summary.update(dec_orig_s_per_s=d_original / decoded_seconds, dec_ours_s_per_s=d_ours / decoded_seconds,
                           dec_speedup=d_original / d_ours, fast_s_per_s=d_fast / decoded_seconds,
                           fast_speedup=d_original / d_fast, wave_max_abs_diff=diff)
            if not args.no_bfloat16:  # the same calls with our decoder's networks in bfloat16 (last: lossy in place)
                ours.set_decoder_dtype("bfloat16")
                with torch.inference_mode():
                    ours.decode(codes, num_inference_steps=1, seed=0)  # warm-up of the bfloat16 kernels
                    wave_bf16, d_bf16 = timed(lambda: ours.decode(codes, num_inference_steps=args.decode_steps,
                                                                  guidance_scale=2.0, seed=0).audio_values, reps)
                    _, d_fast_bf16 = timed(lambda: ours.decode(codes, num_inference_steps=int(steps), sampler=sampler,
                                                               guidance_scale=2.0, seed=0), reps)
                c = wave_bf16.reshape(-1).float()
                relative = ((c - b).norm() / b.norm()).item()
                print(f"bfloat16 decoder: DDIM {args.decode_steps} {d_bf16:.1f} s (speed-up {d_original / d_bf16:.2f}), "
                      f"fast preset {d_fast_bf16:.1f} s (speed-up {d_original / d_fast_bf16:.2f}); waveform vs our "
                      f"float32 decode (same noise): relative L2 difference {relative:.2e}", flush=True)
                summary.update(dec_bf16_speedup=d_original / d_bf16, fast_bf16_speedup=d_original / d_fast_bf16,
                               bf16_wave_rel_diff=relative)
    print("VERSUS_ORIGINAL " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                         for k, v in summary.items()))
    return summary


if __name__ == "__main__":
    main()
