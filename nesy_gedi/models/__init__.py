"""Neural backbones (all output logits)."""
from nesy_gedi.models.backbones import BACKBONE_NAMES, MLP, MNISTNet, ResNetSmall, build_backbone

__all__ = ["BACKBONE_NAMES", "MLP", "MNISTNet", "ResNetSmall", "build_backbone"]
