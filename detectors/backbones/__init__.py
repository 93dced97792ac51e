"""Frozen feature backbones for the learned detectors, in plain torch (no torchvision, no
timm), with state_dict keys matching the official releases so official checkpoints load
unchanged. torch is imported only by the modules that build a backbone.

``BACKBONES`` names each backbone, its builder (``module:function``) and the file names of
its official checkpoints; ``detectors.backbones.weights`` finds or refuses weights.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: its builder (``module:function``) and its official checkpoint files
    (the first is the one an error message asks for)."""

    name: str
    builder: str
    files: tuple[str, ...]
    #: Its checkpoint ships with twincell (assets/weights/) rather than being official.
    shipped: bool = False


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(
    name: str, builder: str, files: tuple[str, ...], shipped: bool = False
) -> None:
    """Name a backbone: ``builder`` is ``module:function``; ``files`` its official
    checkpoint file names, as published (the cache directories are searched for them);
    ``shipped`` when the first file ships with twincell in ``assets/weights/``."""
    BACKBONES[name] = BackboneSpec(name, builder, files, shipped)


# torchvision's ImageNet releases (IMAGENET1K_V1 first; V2 accepted for the wide ResNet).
register_backbone("resnet18", "detectors.backbones.resnet:resnet18", ("resnet18-f37072fd.pth",))
register_backbone(
    "wide_resnet50_2",
    "detectors.backbones.resnet:wide_resnet50_2",
    ("wide_resnet50_2-95faca4d.pth", "wide_resnet50_2-9ba9bcbe.pth"),
)
# twincell's own: ResNet-18's first three stages at half width, trained self-supervised on
# simulator renders by `twincell pretrain`; the file ships in assets/weights/.
register_backbone(
    "resnet18_compact",
    "detectors.backbones.resnet:resnet18_compact",
    ("resnet18_compact-twincell-ssl.pth",),
    shipped=True,
)
# facebookresearch/dinov2's hub checkpoint.
register_backbone(
    "dinov2_vits14",
    "detectors.backbones.vit:vit_small_patch14_dinov2",
    ("dinov2_vits14_pretrain.pth",),
)
