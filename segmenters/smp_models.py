"""Closed-set segmenters built with segmentation-models-pytorch.

The default is DeepLabV3+ with a ResNet-18 encoder (``encoder_weights=None``: random init, no
network). Pretrained weights are only ever read from a local file the user names
(``weights_path``: a ``state_dict`` of the whole model, or of its encoder).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import segmentation_models_pytorch as smp
import torch

from owsbench.errors import BadInput
from owsbench.segmenters.base import Segmenter, SegmenterConfig, SegmenterOutput
from owsbench.segmenters.inputs import prepare_input, register_imagenet_stats
from owsbench.segmenters.weights import load_matching_weights, read_weights_file


class SmpSegmenter(Segmenter):
    """An smp model that takes ``[0, 1]`` RGB images and returns logits and features.

    Features: ``"encoder"`` (the deepest encoder stage) and ``"decoder"`` (the decoder output
    before the segmentation head, e.g. DeepLabV3+'s ASPP-fused features).
    """

    Config: ClassVar[type] = SegmenterConfig
    output_stride: ClassVar[int] = 32  # inputs are padded to a multiple of the deepest stage's
    feature_names: ClassVar[tuple[str, ...]] = ("encoder", "decoder")

    def __init__(self, config: SegmenterConfig, num_classes: int) -> None:
        super().__init__(config, num_classes)
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
        """A whole-model state_dict, or (no ``encoder.``/``decoder.`` keys) an encoder's."""
        state = read_weights_file(path)
        target = self.model
        if not any(k.removeprefix("module.").startswith(("encoder.", "decoder.")) for k in state):
            target = self.model.encoder
        load_matching_weights(target, state, f"{path} ({self.config.encoder})")

    def forward(self, images: torch.Tensor) -> SegmenterOutput:
        """Logits at the (scaled) input size; any input size works.

        Images are resized by ``config.input_scale`` (large frames: run a low-resolution model
        without tiling) and replicate-padded to a multiple of the encoder's output stride; the
        logits are cropped back, so they cover the scaled image exactly. Features keep the padded
        extent.
        """
        x, height, width = prepare_input(
            images, self.mean, self.std, self.config.input_scale, self.output_stride
        )
        features = self.model.encoder(x)
        decoded = self.model.decoder(features)
        logits = self.model.segmentation_head(decoded)[..., :height, :width]
        return SegmenterOutput(
            logits=logits, features={"encoder": features[-1], "decoder": decoded}
        )
