"""Training MMDuet: upstream's stream datasets and collator (`streams`), and the transformers `Trainer` wiring
with LoRA, both heads and the toy model's recipe (`trainer`)."""

from .streams import DuetCollator, build_mixture
from .trainer import TOY_TRAIN, TrainConfig, build_toy_model, train, train_toy

__all__ = ["TOY_TRAIN", "DuetCollator", "TrainConfig", "build_mixture", "build_toy_model", "train", "train_toy"]
