"""Layer 4, ``models``: the book's own small models, readable end to end (``nanogpt``), and
the trained model zoo (``zoo``) and the LLM-scale model pretrained on CPython's standard
library (``stdlib_lm``).  Imports core and hardware only."""

from .nanogpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
