"""Teacher (two-branch RGB+NIR), student (RGB only), discriminator and projector; see ``registry``."""
from mmkd_ros.models.registry import MODELS, build_from_checkpoint, build_model, model_names

__all__ = ["MODELS", "build_from_checkpoint", "build_model", "model_names"]
