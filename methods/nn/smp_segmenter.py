"""Closed-set segmenters built with segmentation-models-pytorch.

The default is DeepLabV3+ with a ResNet-18 encoder (``encoder_weights=None``: random init, no
network). Pretrained weights are only ever read from a local file the user names
(``weights_path``: a ``state_dict`` of the whole model, or of its encoder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from owsbench.errors import BadInput
from owsbench.methods.base import SegmenterOutput
from owsbench.methods.nn.padding import prepare_input, read_weights_file, register_imagenet_stats

OUTPUT_STRIDE = 32  # inputs are padded to a multiple of this (the deepest encoder stage)


@dataclass(frozen=True)
class SegmenterConfig:
    """Architecture and training recipe of a closed-set segmenter (hashed into its cache key)."""

    arch: str = "deeplabv3plus"
    encoder: str = "resnet18"
    weights_path: str | None = None  # local state_dict file; never downloaded
    steps: int = 600
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1  # one-cycle schedule: linear warm-up, then cosine decay
    crop: tuple[int, int] | None = None  # training crop (h, w); None = the frame size
    scale_range: tuple[float, float] = (0.75, 1.5)
    hflip: bool = True
    color_jitter: float = 0.25  # max relative change of brightness and contrast
    input_scale: float = 1.0  # images are resized by this factor before the network


class SmpSegmenter(nn.Module):
    """An smp model that takes ``[0, 1]`` RGB images and returns logits and features.

    Features: ``"encoder"`` (the deepest encoder stage) and ``"decoder"`` (the decoder output
    before the segmentation head, e.g. DeepLabV3+'s ASPP-fused features).
    """

    Config = SegmenterConfig

    def __init__(self, config: SegmenterConfig, num_classes: int) -> None:
        super().__init__()
        self.config = config
        try:
            self.model = smp.create_model(
                config.arch, encoder_name=config.encoder, encoder_weights=None, classes=num_classes
            )
        except (KeyError, ValueError) as err:
            raise BadInput(f"cannot build segmenter {config.arch}/{config.encoder}: {err}") from err
        if config.weights_path:
            self._load_local_weights(Path(config.weights_path))
        register_imagenet_stats(self)

    def _load_local_weights(self, path: Path) -> None:
        state = read_weights_file(path)
        target = self.model
        if not any(k.startswith(("encoder.", "decoder.")) for k in state):
            target = self.model.encoder
        missing, _ = target.load_state_dict(state, strict=False)
        if len(missing) == len(target.state_dict()):
            raise BadInput(f"no parameter of {path} matches the {self.config.encoder} model")

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        """Logits at the (scaled) input size; any input size works.

        Images are resized by ``config.input_scale`` (large frames: run a low-resolution model
        without tiling) and replicate-padded to a multiple of the encoder's output stride; the
        logits are cropped back, so they cover the scaled image exactly. Features keep the padded
        extent.
        """
        x, height, width = prepare_input(
            images, self.mean, self.std, self.config.input_scale, OUTPUT_STRIDE
        )
        features = self.model.encoder(x)
        decoded = self.model.decoder(features)
        logits = self.model.segmentation_head(decoded)[..., :height, :width]
        return SegmenterOutput(
            logits=logits, features={"encoder": features[-1], "decoder": decoded}
        )
