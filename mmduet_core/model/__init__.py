"""The model: `DuetModel` (LLaVA-OneVision plus two heads and a streaming frame encoder, modeling.py), loading
every published checkpoint layout (checkpoint.py), and the duet chat template (template.py)."""

from .checkpoint import LoadReport, load_model, save_model
from .modeling import IGNORE_INDEX, DuetModel, DuetOutput, positive_probability

__all__ = ["IGNORE_INDEX", "DuetModel", "DuetOutput", "LoadReport", "load_model", "positive_probability", "save_model"]
