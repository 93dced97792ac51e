"""ResNet-18 and Wide-ResNet-50-2 in plain torch, state_dict-compatible with torchvision.

The architecture is torchvision's ResNet "v1.5": a 7x7 stride-2 stem convolution, batch norm,
ReLU and a 3x3 stride-2 max pool (``stem``, output stride 4), then four stages ``layer1`` ..
``layer4`` (output strides 4, 8, 16, 32), global average pooling and a linear classifier
``fc``. ResNet-18 stacks two ``BasicBlock`` s (two 3x3 convolutions) per stage; Wide-ResNet-50-2
stacks 3, 4, 6, 3 ``Bottleneck`` s (1x1, 3x3, 1x1 convolutions, expansion 4) whose inner width
is doubled (``width_per_group=128``). A stage's first block downsamples with the stride on its
3x3 convolution (v1.5, not on the first 1x1 as in the original paper) and a 1x1 convolution plus
batch norm on the shortcut (``downsample.0``, ``downsample.1``).

Every parameter and buffer name and shape matches torchvision's modules (``conv1.weight``,
``bn1.running_mean``, ``layer2.0.downsample.0.weight``, ``fc.bias``, ...), so the official
ImageNet checkpoints load unchanged with ``model.load_state_dict(state_dict, strict=True)``:

- ``resnet18-f37072fd.pth`` (``resnet18``),
- ``wide_resnet50_2-95faca4d.pth`` (IMAGENET1K_V1) and ``wide_resnet50_2-9ba9bcbe.pth``
  (IMAGENET1K_V2) (``wide_resnet50_2``).

Checkpoints saved without the ``num_batches_tracked`` buffers (as the older files are) load
strictly too: torch's batch norm fills them in. This module never downloads weights; a freshly
built model has torchvision's random initialisation from the global torch generator, so seed
with ``torch.manual_seed`` first when random weights must repeat.

Inputs are (B, 3, H, W) float32 RGB normalised with ``IMAGENET_MEAN`` and ``IMAGENET_STD``
(see ``normalize``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "RESNET_CHANNELS",
    "STAGES",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "normalize",
    "resnet18",
    "resnet18_compact",
    "wide_resnet50_2",
]

#: ImageNet per-channel RGB mean and standard deviation of [0, 1] pixel values (torchvision's).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Names ``forward_features`` accepts, in the order they are computed.
STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")

#: Output channels of each stage, per architecture (the stem gives 64 for both).
RESNET_CHANNELS: dict[str, dict[str, int]] = {
    "resnet18": {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "wide_resnet50_2": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
    "resnet18_compact": {"layer1": 32, "layer2": 64, "layer3": 128},
}

#: Output stride (input pixels per feature-map cell) of each stage.
STAGE_STRIDES: dict[str, int] = {"stem": 4, "layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (batch norm follows)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False)


def _conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual shortcut (ResNet-18/34); expansion 1."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inplanes, H, W) -> (B, planes, H / stride, W / stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, v1.5), 1x1 expand by 4, with a residual shortcut."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        # Inner width: planes for ResNet-50, 2 * planes for Wide-ResNet-50-2 (base_width 128).
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = _conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = _conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, inplanes, H, W) -> (B, 4 * planes, H / stride, W / stride)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """ResNet with torchvision's module names; ``forward`` gives logits, features by stage."""

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        widths: Sequence[int] = (64, 128, 256, 512),
    ) -> None:
        super().__init__()
        if len(layers) not in (3, 4) or len(widths) != len(layers):
            raise ValueError(
                f"layers must give 3 or 4 block counts and widths one width each, got "
                f"{list(layers)} and {list(widths)}"
            )
        self.inplanes = int(widths[0])
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, widths[0], layers[0])
        self.layer2 = self._make_layer(block, widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, widths[2], layers[2], stride=2)
        #: A three-stage trunk (``resnet18_compact``) has no layer4 and no classifier.
        self.has_head = len(layers) == 4
        if self.has_head:
            self.layer4 = self._make_layer(block, widths[3], layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(widths[3] * block.expansion, num_classes)

        # torchvision's initialisation, so `weights: random` means the same thing here.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block: Block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        """One stage: ``blocks`` blocks, the first with the stride and a projection shortcut."""
        downsample: nn.Module | None = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        modules: list[nn.Module] = [
            block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)
        ]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            modules.append(
                block(self.inplanes, planes, groups=self.groups, base_width=self.base_width)
            )
        return nn.Sequential(*modules)

    def _stages(self) -> list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]:
        """The feature stages in order, as (name, module) pairs."""
        stages: list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]] = [
            ("stem", self._stem),
            ("layer1", self.layer1),
            ("layer2", self.layer2),
            ("layer3", self.layer3),
        ]
        if self.has_head:
            stages.append(("layer4", self.layer4))
        return stages

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1, bn1, ReLU, max pool: (B, 3, H, W) -> (B, 64, ceil(H / 4), ceil(W / 4))."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(
        self, x: torch.Tensor, layers: Sequence[str] = ("layer1", "layer2", "layer3")
    ) -> dict[str, torch.Tensor]:
        """Intermediate feature maps of (B, 3, H, W) normalised RGB, by stage name.

        ``layers`` names any of ``STAGES`` ("stem", "layer1" .. "layer4"); the result maps each
        to its (B, C, H / s, W / s) float map (C from ``RESNET_CHANNELS``, s from
        ``STAGE_STRIDES``, rounded up for sizes that are not multiples), in computation order.
        Nothing after the last requested stage is computed.
        """
        wanted = set(layers)
        unknown = wanted - set(STAGES)
        if unknown:
            raise ValueError(f"unknown layer(s) {sorted(unknown)}; choose from {list(STAGES)}")
        if not wanted:
            raise ValueError("layers must name at least one stage")
        last = max(STAGES.index(name) for name in wanted)
        if last >= len(self._stages()):
            raise ValueError(
                f"this trunk ends at {self._stages()[-1][0]}; it has no {STAGES[last]}"
            )
        out: dict[str, torch.Tensor] = {}
        for name, stage in self._stages()[: last + 1]:
            x = stage(x)
            if name in wanted:
                out[name] = x
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> (B, num_classes) logits, as torchvision's ResNet."""
        if not self.has_head:
            raise ValueError("a three-stage trunk has no classifier; use forward_features")
        for _, stage in self._stages():
            x = stage(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2), keys as torchvision's ``resnet18``; random weights."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet18_compact(**kwargs: Any) -> ResNet:
    """twincell's compact trunk: ResNet-18's first three stages (BasicBlock, 2-2-2) at half
    width (32, 64, 128 channels; 0.7 M parameters), no layer4 and no classifier. Keys follow
    torchvision's names (``conv1.weight``, ``layer3.1.bn2.running_var``, ...). Its weights
    are twincell's own, trained self-supervised on simulator renders (``twincell pretrain``);
    see ``detectors.pretrain``."""
    kwargs.setdefault("widths", (32, 64, 128))
    return ResNet(BasicBlock, [2, 2, 2], **kwargs)


def wide_resnet50_2(**kwargs: Any) -> ResNet:
    """Wide-ResNet-50-2 (Bottleneck 3-4-6-3, width x2), keys as torchvision's; random weights."""
    kwargs.setdefault("width_per_group", 64 * 2)
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


def normalize(rgb_uint8_batch: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32, scaled to [0, 1] and ImageNet-normalised.

    A single (H, W, 3) image is rejected rather than guessed at; add the batch axis first.
    The result is on the input tensor's device (CPU for numpy input) and contiguous.
    """
    if isinstance(rgb_uint8_batch, np.ndarray):
        if rgb_uint8_batch.dtype != np.uint8:
            raise TypeError(f"expected uint8 images, got {rgb_uint8_batch.dtype}")
        batch = torch.from_numpy(np.array(rgb_uint8_batch, copy=True, order="C"))
    else:
        batch = rgb_uint8_batch
        if batch.dtype != torch.uint8:
            raise TypeError(f"expected uint8 images, got {batch.dtype}")
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) images, got shape {tuple(batch.shape)}")
    x = batch.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()
