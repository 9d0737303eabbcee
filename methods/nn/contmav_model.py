"""ContMAV's network (Sodano et al., CVPR 2024): one encoder, a semantic and a contrastive decoder.

Follows ``PRBonn/ContMAV`` ``src/models/model_one_modality.py`` (``OWSNetwork``, ESANet layout),
``src/models/model.py`` (``Decoder``) and ``src/models/context_modules.py`` (``appm-1-2-4-8``).

- Encoder: ResNet-34 layout ``[3, 4, 6, 3]`` built with ``smp`` ``get_encoder("resnet34")``
  (BasicBlocks; the official encoder uses ERFNet NonBottleneck1D blocks whose ImageNet weights are
  a Google-Drive download, so this is a documented deviation). Random init unless the caller
  loads weights.
- Context module: adaptive pyramid pooling with bins (1, 2, 4, 8) on the 1/32 features; each
  branch is a 1x1 ConvBNAct 512 -> 128, upsampled and concatenated with the input, then a 1x1
  ConvBNAct back to 512 channels.
- Skip connections (computed once and fed to both decoders, as ``OWSNetwork.forward`` passes
  ``[out, skip3, skip2, skip1]`` to each; ``encoder_decoder_fusion="add"``): 1x1 ConvBNAct
  projections layer3 -> 512, layer2 -> 256, layer1 -> 128, added after each decoder upsampling.
- When the first decoder width differs from 512 (the CPU-sized default), a 1x1 ConvBNAct
  maps the context output to it (absent at the official width).
- Two decoders with separate weights, each: three modules (ConvBNAct 3x3, ``blocks`` x
  NonBottleneck1D, learned x2 upsample, + skip) with channels (512, 256, 128), then ``conv_out``
  3x3 -> ``out_channels`` and two learned x2 upsamples to the input resolution.
- ``forward(images in [0, 1]) -> (z, f)``: semantic logits ``z`` ``(B, K, H, W)`` and the
  contrastive embedding ``f`` ``(B, K, H, W)`` (the same width as the logits, as in the official
  code, because ``f`` is compared with class means taken in logit space).

Inputs are ImageNet-normalised and replicate-padded to a multiple of 32 (``padding.prepare_input``);
the outputs are cropped back to the input size.
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from owsbench.segmenters.erfnet import NonBottleneck1D
from owsbench.segmenters.inputs import prepare_input, register_imagenet_stats

OUTPUT_STRIDE = 32  # inputs are padded to a multiple of this (the deepest encoder stage)


CONTMAV_BN_EPS = 1e-5  # torch's default, as these decoder blocks have always used


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class LearnedUpsample(nn.Module):
    """x2 nearest upsampling then a depthwise 3x3 conv initialised to a bilinear kernel
    (ESANet's ``learned-3x3-zeropad``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        kernel = torch.tensor(
            [[0.0625, 0.125, 0.0625], [0.125, 0.25, 0.125], [0.0625, 0.125, 0.0625]]
        )
        with torch.no_grad():
            self.conv.weight.copy_(kernel.expand(channels, 1, 3, 3))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class PyramidPooling(nn.Module):
    """Adaptive pyramid pooling (``appm``): pooled branches concatenated with the input."""

    def __init__(self, channels: int, bins: tuple[int, ...], branch_channels: int = 128) -> None:
        super().__init__()
        self.bins = bins
        self.branches = nn.ModuleList(ConvBNAct(channels, branch_channels, 1) for _ in bins)
        self.fuse = ConvBNAct(channels + branch_channels * len(bins), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        outs = [x]
        for bin_size, branch in zip(self.bins, self.branches, strict=True):
            pooled = F.adaptive_avg_pool2d(x, (min(bin_size, size[0]), min(bin_size, size[1])))
            outs.append(
                F.interpolate(branch(pooled), size=size, mode="bilinear", align_corners=False)
            )
        return self.fuse(torch.cat(outs, dim=1))


class DecoderModule(nn.Module):
    """ConvBNAct 3x3 -> ``blocks`` x NonBottleneck1D -> learned x2 upsample."""

    def __init__(self, cin: int, cout: int, blocks: int) -> None:
        super().__init__()
        self.conv = ConvBNAct(cin, cout, 3)
        self.blocks = nn.Sequential(
            *(NonBottleneck1D(cout, bn_eps=CONTMAV_BN_EPS) for _ in range(blocks))
        )
        self.up = LearnedUpsample(cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.up(self.blocks(self.conv(x))) + skip


class Decoder(nn.Module):
    """Three decoder modules, ``conv_out`` 3x3 and two learned x2 upsamples (1/32 -> 1/1)."""

    def __init__(self, cin: int, channels: tuple[int, ...], blocks: int, out_channels: int) -> None:
        super().__init__()
        ins = (cin, *channels[:-1])
        self.modules_ = nn.ModuleList(
            DecoderModule(i, o, blocks) for i, o in zip(ins, channels, strict=True)
        )
        self.conv_out = nn.Conv2d(channels[-1], out_channels, 3, padding=1)
        self.up1 = LearnedUpsample(out_channels)
        self.up2 = LearnedUpsample(out_channels)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for module, skip in zip(self.modules_, skips, strict=True):
            x = module(x, skip)
        return self.up2(self.up1(self.conv_out(x)))


class ContMAVNet(nn.Module):
    """``OWSNetwork``: shared encoder, context module and skips; semantic + contrastive decoders."""

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet34",
        decoder_channels: tuple[int, int, int] = (512, 256, 128),
        decoder_blocks: int = 3,
        context_bins: tuple[int, ...] = (1, 2, 4, 8),
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.encoder = smp.encoders.get_encoder(encoder, weights=None)
        enc = self.encoder.out_channels  # (3, 64, 64, 128, 256, 512) for resnet34
        self.context = PyramidPooling(enc[-1], context_bins)
        self.head: nn.Module = nn.Identity()
        if enc[-1] != decoder_channels[0]:
            self.head = ConvBNAct(enc[-1], decoder_channels[0], 1)
        # skips for the outputs of decoder modules 1..3: layer3 (1/16), layer2 (1/8), layer1 (1/4)
        self.skips = nn.ModuleList(
            ConvBNAct(enc[-2 - i], decoder_channels[i], 1) for i in range(len(decoder_channels))
        )
        chans = tuple(decoder_channels)
        self.decoder_ss = Decoder(decoder_channels[0], chans, decoder_blocks, num_classes)
        self.decoder_ow = Decoder(decoder_channels[0], chans, decoder_blocks, num_classes)
        register_imagenet_stats(self)
        self._init_weights()

    @classmethod
    def from_config(cls, config: Any) -> ContMAVNet:
        """The network of a ContMAV config's architecture fields (``num_classes``, ``encoder``,
        ``decoder_channels``, ``decoder_blocks``, ``context_bins``)."""
        return cls(
            config.num_classes,
            encoder=config.encoder,
            decoder_channels=tuple(config.decoder_channels),
            decoder_blocks=config.decoder_blocks,
            context_bins=tuple(config.context_bins),
        )

    def _init_weights(self) -> None:
        """He init (``kaiming_normal_``, fan-out, ReLU) of the conv weights outside the encoder,
        as the official ``src/build_model.py`` (``--he_init``): output layers (convs with the
        class count or 19 output channels, and every decoder's ``conv_out``) and depthwise convs
        (the learned upsamples, which keep their bilinear kernels) are skipped and keep
        PyTorch's default init; biases are left at PyTorch's default; batch norms get weight 1,
        bias 0. The random smp encoder keeps torchvision's ResNet init (already He fan-out)."""
        outputs = {id(m.conv_out) for m in self.modules() if isinstance(m, Decoder)}
        for name, module in self.named_modules():
            if name.startswith("encoder"):
                continue
            if isinstance(module, nn.Conv2d):
                skip = module.out_channels in (self.num_classes, 19) or id(module) in outputs
                if skip or module.groups == module.in_channels:
                    continue
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], int, int]:
        """The shared part of every decoder's input: ``images`` ``(B, 3, H, W)`` in ``[0, 1]``
        -> ``(x, skips, H, W)``, the context output at 1/32 of the padded input, the projected
        skips (1/16, 1/8, 1/4) and the input size to crop decoder outputs back to."""
        x, height, width = prepare_input(images, self.mean, self.std, 1.0, OUTPUT_STRIDE)
        feats = self.encoder(x)
        x = self.head(self.context(feats[-1]))
        skips = [proj(feats[-2 - i]) for i, proj in enumerate(self.skips)]
        return x, skips, height, width

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` ``(B, 3, H, W)`` in ``[0, 1]`` -> ``(z, f)``, both ``(B, K, H, W)``."""
        x, skips, height, width = self.encode(images)
        z = self.decoder_ss(x, skips)[..., :height, :width]
        f = self.decoder_ow(x, skips)[..., :height, :width]
        return z, f
