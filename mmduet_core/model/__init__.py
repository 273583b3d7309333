"""The model: `DuetModel` (LLaVA-OneVision plus two heads and a streaming frame encoder, modeling.py), loading
every published checkpoint layout (checkpoint.py), and the duet chat template (template.py). Names are loaded
on first use, so reading the template's constants does not import torch."""

_EXPORTS = {
    "DuetModel": "modeling", "DuetOutput": "modeling", "IGNORE_INDEX": "modeling", "positive_probability": "modeling",
    "LoadReport": "checkpoint", "load_model": "checkpoint", "save_model": "checkpoint",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
