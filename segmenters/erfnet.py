"""ERFNet: an efficient residual factorized ConvNet for real-time segmentation, in pure torch.

Source: E. Romera, J. M. Alvarez, L. M. Bergasa, R. Arroyo, "ERFNet: Efficient Residual
Factorized ConvNet for Real-Time Semantic Segmentation", IEEE T-ITS 19(1), 2018; the official
code is ``Eromera/erfnet_pytorch``, ``train/erfnet.py`` (commit ``d4a46fa``). The layout follows
that file block by block (written anew here, module names kept so its state_dict keys match):

- ``DownsamplerBlock(c_in, c_out)``: concat(3x3 stride-2 conv to ``c_out - c_in`` channels,
  2x2 max-pool of the input) -> BN (eps 1e-3) -> ReLU.
- ``non_bottleneck_1d`` (NonBottleneck-1D, also ContMAV's encoder/decoder block): 3x1 conv ->
  ReLU -> 1x3 conv -> BN -> ReLU -> dilated 3x1 -> ReLU -> dilated 1x3 -> BN -> Dropout2d ->
  ReLU(x + input). Convs have biases.
- Encoder: Downsampler 3->16 (1/2), Downsampler 16->64 (1/4), 5x NB1D(64, dilation 1,
  dropout 0.03), Downsampler 64->128 (1/8), 2x [NB1D(128) with dilations 2, 4, 8, 16,
  dropout 0.3]. Output stride 8.
- Decoder: Upsampler 128->64 (3x3 transposed conv, stride 2, BN, ReLU), 2x NB1D(64),
  Upsampler 64->16, 2x NB1D(16) (no dropout), then a 2x2 stride-2 transposed conv 16->K to the
  full input resolution.

Deviations from the official code:

- No ImageNet-pretrained encoder (the official one is a download); random init (PyTorch
  defaults), or a local ``weights_path`` state_dict: this model's own, or the official
  ``erfnet_pretrained.pth`` (``module.`` prefix stripped; tensors whose shape differs, e.g. the
  output conv when K != 20, stay at their init).
- The encoder-only ``output_conv`` (used by the official two-stage training, encoder first) is
  left out: owsbench trains the whole network end to end with the shared recipe
  (``train_segmenter``: AdamW, one-cycle schedule, unweighted cross-entropy) instead of Adam
  with lr 5e-4, poly decay, class weighting and 150+150 epochs.
- Inputs are ``[0, 1]`` RGB normalised with the ImageNet mean/std inside the model (the
  official training feeds ``[0, 1]`` tensors unnormalised), resized by ``input_scale`` and
  replicate-padded to a multiple of 8 (the official model needs sizes divisible by 8); logits
  are cropped back to the (scaled) input size.
- Dropout rates are configurable (``dropout``: (stage 1/4, stage 1/8), default the official
  (0.03, 0.3)).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from owsbench.errors import BadInput
from owsbench.segmenters.base import Segmenter, SegmenterConfig, SegmenterOutput
from owsbench.segmenters.inputs import prepare_input, register_imagenet_stats
from owsbench.segmenters.weights import load_matching_weights, read_weights_file

BN_EPS = 1e-3  # as in the official code


@dataclass(frozen=True)
class ERFNetConfig(SegmenterConfig):
    """ERFNet architecture options plus the shared training recipe of ``SegmenterConfig``.

    ``encoder`` is fixed to the ERFNet encoder; ``dropout`` is the Dropout2d rate of the
    non-bottleneck blocks at 1/4 and 1/8 resolution (official: 0.03 and 0.3).
    """

    arch: str = "erfnet"
    encoder: str = "erfnet"
    dropout: tuple[float, float] = (0.03, 0.3)


class DownsamplerBlock(nn.Module):
    """Concatenate a stride-2 3x3 conv and a 2x2 max-pool, then BN and ReLU (halves H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels - in_channels, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class NonBottleneck1D(nn.Module):
    """Residual block of two factorised 3x3 convs (3x1 then 1x3); the second pair is dilated."""

    def __init__(
        self, channels: int, dropout: float = 0.0, dilation: int = 1, bn_eps: float = BN_EPS
    ) -> None:
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0))
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1))
        self.bn1 = nn.BatchNorm2d(channels, eps=bn_eps)
        self.conv3x1_2 = nn.Conv2d(channels, channels, (3, 1), padding=(d, 0), dilation=(d, 1))
        self.conv1x3_2 = nn.Conv2d(channels, channels, (1, 3), padding=(0, d), dilation=(1, d))
        self.bn2 = nn.BatchNorm2d(channels, eps=bn_eps)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv3x1_1(x))
        out = F.relu(self.bn1(self.conv1x3_1(out)))
        out = F.relu(self.conv3x1_2(out))
        out = self.bn2(self.conv1x3_2(out))
        if self.dropout.p != 0:
            out = self.dropout(out)
        return F.relu(out + x)


class UpsamplerBlock(nn.Module):
    """3x3 transposed conv with stride 2 (doubles H, W), BN, ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(
            in_channels, out_channels, 3, stride=2, padding=1, output_padding=1
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    """3 -> 16 -> 64 (5 NB1D) -> 128 (2x NB1D with dilations 2, 4, 8, 16); output stride 8."""

    def __init__(self, dropout: tuple[float, float]) -> None:
        super().__init__()
        self.initial_block = DownsamplerBlock(3, 16)
        layers: list[nn.Module] = [DownsamplerBlock(16, 64)]
        layers += [NonBottleneck1D(64, dropout[0], 1) for _ in range(5)]
        layers.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            layers += [NonBottleneck1D(128, dropout[1], d) for d in (2, 4, 8, 16)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial_block(x)
        for layer in self.layers:
            x = layer(x)
        return x


class Decoder(nn.Module):
    """128 -> 64 (2 NB1D) -> 16 (2 NB1D) at 1/2 resolution; ``output_conv`` -> K at full size."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                UpsamplerBlock(128, 64),
                NonBottleneck1D(64, 0.0, 1),
                NonBottleneck1D(64, 0.0, 1),
                UpsamplerBlock(64, 16),
                NonBottleneck1D(16, 0.0, 1),
                NonBottleneck1D(16, 0.0, 1),
            ]
        )
        self.output_conv = nn.ConvTranspose2d(16, num_classes, 2, stride=2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_conv(self.features(x))


class ERFNetSegmenter(Segmenter):
    """ERFNet that takes ``[0, 1]`` RGB images and returns logits and features.

    Features: ``"encoder"`` (the encoder output, 128 channels at 1/8) and ``"decoder"`` (the
    last decoder block before ``output_conv``, 16 channels at 1/2); both keep the padded extent.
    """

    Config: ClassVar[type] = ERFNetConfig
    output_stride: ClassVar[int] = 8  # three stride-2 downsamplers
    feature_names: ClassVar[tuple[str, ...]] = ("encoder", "decoder")

    def __init__(self, config: SegmenterConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
        dropout = getattr(config, "dropout", ERFNetConfig.dropout)
        if len(dropout) != 2 or not all(0.0 <= p < 1.0 for p in dropout):
            raise BadInput(f"erfnet dropout must be two rates in [0, 1), got {dropout!r}")
        self.encoder = Encoder(tuple(dropout))
        self.decoder = Decoder(num_classes)
        if config.weights_path:
            self._load_local_weights(Path(config.weights_path))
        register_imagenet_stats(self)

    def _load_local_weights(self, path: Path) -> None:
        load_matching_weights(self, read_weights_file(path), f"{path} (ERFNet)")

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        """Logits at the (scaled) input size; any input size works (see ``prepare_input``)."""
        x, height, width = prepare_input(
            images, self.mean, self.std, self.config.input_scale, self.output_stride
        )
        encoded = self.encoder(x)
        decoded = self.decoder.features(encoded)
        logits = self.decoder.output_conv(decoded)[..., :height, :width]
        return SegmenterOutput(logits=logits, features={"encoder": encoded, "decoder": decoded})
