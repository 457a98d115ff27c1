"""The ``likelihood`` kind: the output distribution p(x | z) of a decoder."""

from __future__ import annotations

import abc

import torch
from torch import nn

from genzoo.io.validation import check_int


class OutputLikelihood(nn.Module, abc.ABC):
    """A per-pixel output distribution over discrete images, parameterized by a decoder head.

    Constructed with keywords ``image_chs`` (channels of the image) and ``num_bits`` (bit depth
    of the pixels; 1 for binary images), plus its own (``num_mixtures`` ...).

    Contract:

    - ``param_chs``: the number of channels the decoder head must produce.
    - Images ``x`` are float tensors ``(B, image_chs, H, W)`` in ``[0, 1]`` on the grid
      ``k / (2**num_bits - 1)``.
    - ``log_prob(params, x)`` returns ``log p(x | params)`` per example, ``(B,)`` in nats,
      summed over every pixel and channel of ``x``. Probabilities of all ``2**num_bits`` values of
      one pixel sum to one.
    - ``sample(params, temperature)`` draws images; a lower temperature means less noise, and
      ``temperature -> 0`` tends to the distribution's most likely component's centre.
    - ``mean(params)`` is a deterministic image for reconstructions (the mean or mode).
    """

    def __init__(self, *, image_chs: int, num_bits: int = 8) -> None:
        super().__init__()
        self.image_chs = check_int("image_chs", image_chs, 1)
        self.num_bits = check_int("num_bits", num_bits, 1, 16)

    @property
    @abc.abstractmethod
    def param_chs(self) -> int:
        """Channels of the parameter tensor the decoder head must output."""

    @abc.abstractmethod
    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``log p(x | params)`` per example, shape ``(B,)``."""

    @abc.abstractmethod
    def sample(self, params: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Images in ``[0, 1]``, shape ``(B, image_chs, H, W)``."""

    @abc.abstractmethod
    def mean(self, params: torch.Tensor) -> torch.Tensor:
        """A deterministic image in ``[0, 1]`` (mean or mode), shape ``(B, image_chs, H, W)``."""
