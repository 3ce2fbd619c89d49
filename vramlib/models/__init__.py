"""The book's own small models, readable end to end."""

from .nanogpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
