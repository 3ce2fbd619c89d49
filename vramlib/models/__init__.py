"""Layer 4, ``models``: the book's own small models, readable end to end (``nanogpt``), and
the trained model zoo (``zoo``).  Imports core and hardware only."""

from .nanogpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
