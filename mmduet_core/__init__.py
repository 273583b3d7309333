"""mmduet_core: MMDuet ("VideoLLM Knows When to Speak") on transformers LLaVA-OneVision."""

__version__ = "0.1.0"
