"""Channels-last convolutions for the decoder's networks on a CPU: the same maths on faster oneDNN kernels.

oneDNN's CPU convolutions are much faster on channels-last activations (NHWC, or NWC for 1-D signals) than on
PyTorch's default NCHW layout, for the HiFi-GAN vocoder and the VAE alike (how much depends on the CPU and the
dtype: `benchmarks/codec_speed.py` measures it; the README's "Speed and memory" has our numbers). The
products and sums are the same; only their order inside a kernel changes, so float32 results agree to rounding
(~1e-6 relative), far inside the parity bounds.

PyTorch has no channels-last layout for 3-D tensors, so a `Conv1d` / `ConvTranspose1d` runs here as the 2-D
convolution of a height-1 image: input `[N, C, T]` -> `[N, C, 1, T]` in channels-last order, which is a free
view when the 1-D activation is already laid out time-major (`stride(1) == 1`), as the vocoder's are once its
first convolution has produced one. Element-wise layers in between keep that layout, so the whole vocoder runs
in NWC without copies. 2-D convolutions get channels-last weights, and oneDNN then produces channels-last
outputs that the following layers keep.

Everything is scoped to a `with` block: the modules' own `forward` and parameters are untouched, so
`state_dict()`, `save_pretrained` and other devices see the usual layout.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List

import torch
from torch import nn
from torch.nn import functional as F

def _as_image(weight: torch.Tensor) -> torch.Tensor:
    """A 1-D convolution weight `[out, in, k]` as a channels-last 2-D weight `[out, in, 1, k]` (a copy)."""
    return weight.detach().unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _height_one(value, name: str):
    """A 1-D convolution setting as the 2-D setting of a height-1 image (`(0, p)`-style pairs)."""
    if isinstance(value, str):  # 'same' / 'valid' padding means the same in 2-D for a height-1 kernel
        return value
    pad_value = 0 if name in ("padding", "output_padding") else 1
    return (pad_value, value[0])


def _conv1d_forward(module: nn.Conv1d):
    weight = _as_image(module.weight)
    stride, padding, dilation = (_height_one(getattr(module, n), n) for n in ("stride", "padding", "dilation"))

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        image = hidden_states.unsqueeze(2)
        out = F.conv2d(image, weight, module.bias, stride, padding, dilation, module.groups)
        return out.squeeze(2)

    return forward


def _conv_transpose1d_forward(module: nn.ConvTranspose1d):
    weight = _as_image(module.weight)
    stride, padding, output_padding, dilation = (
        _height_one(getattr(module, n), n) for n in ("stride", "padding", "output_padding", "dilation")
    )

    def forward(hidden_states: torch.Tensor, output_size=None) -> torch.Tensor:
        if output_size is not None:  # never used by the decoder's networks; keep the module's own semantics
            return nn.ConvTranspose1d.forward(module, hidden_states, output_size)
        image = hidden_states.unsqueeze(2)
        out = F.conv_transpose2d(image, weight, module.bias, stride, padding, output_padding, module.groups, dilation)
        return out.squeeze(2)

    return forward


def _conv2d_forward(module: nn.Conv2d):
    weight = module.weight.detach().contiguous(memory_format=torch.channels_last)

    def forward(hidden_states: torch.Tensor) -> torch.Tensor:
        return module._conv_forward(hidden_states, weight, module.bias)

    return forward


def _patchable(module: nn.Module) -> bool:
    """Zero padding only (other modes pad in Python first), and no instance-level `forward` already (e.g. an
    accelerate offloading hook, which must keep running: such layers stay as they are)."""
    return getattr(module, "padding_mode", "zeros") == "zeros" and "forward" not in module.__dict__


@contextmanager
def channels_last_convolutions(network: nn.Module, conv1d: bool = True, conv2d: bool = True) -> Iterator[int]:
    """Run the zero-padded `Conv1d` / `ConvTranspose1d` (`conv1d`) and `Conv2d` (`conv2d`) layers of `network`
    on channels-last kernels until the block exits; yields the number of layers switched.

    The channels-last weights are copies made on entry (so one more copy of the convolution weights while the
    block runs).
    """
    patched: List[nn.Module] = []
    try:
        for module in network.modules():
            if not _patchable(module):
                continue
            if conv1d and type(module) is nn.ConvTranspose1d:
                forward = _conv_transpose1d_forward(module)
            elif conv1d and type(module) is nn.Conv1d:
                forward = _conv1d_forward(module)
            elif conv2d and type(module) is nn.Conv2d:
                forward = _conv2d_forward(module)
            else:
                continue
            module.forward = forward
            patched.append(module)
        yield len(patched)
    finally:
        for module in patched:
            del module.forward


__all__ = ["channels_last_convolutions"]
