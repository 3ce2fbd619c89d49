"""Layer 6, ``compress``: quantization, quantized storage, pruning, distillation, low-rank
factorization, LoRA, the calibrated LLM methods (:mod:`vramlib.compress.llm`: GPTQ, AWQ,
SmoothQuant, SparseGPT, Wanda), and the one module-surgery helper (:mod:`vramlib.compress.surgery`).
May import every layer below.  Modules load on use.
"""
