"""Old module path, kept for existing code: checkpoint loading lives in `mmduet_core.model.checkpoint` now
(`from mmduet_core.model import load_model`)."""

from .model.checkpoint import *  # noqa: F403
from .model.checkpoint import ASSETS, TOY_DIR, load_model, save_model  # noqa: F401
