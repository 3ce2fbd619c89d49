"""The one vocabulary of memory components, shared by the estimator, the simulator, the
Part I formulas and the figures' colours.

The estimator (:mod:`vramlib.estimate`) reports :data:`COMPONENTS` and :data:`OVERHEADS`;
the simulator (:mod:`vramlib.measure.simulate`) labels storages with the finer
:data:`CATEGORIES` (it can tell buffers from parameters); :data:`CATEGORY_COMPONENT` says
which component each category is drawn and compared as.

Defined in Part I, "Anatomy of memory" (the components).
"""

from __future__ import annotations

__all__ = ["COMPONENTS", "OVERHEADS", "CATEGORIES", "CATEGORY_COMPONENT"]

#: Tensor components, in stacking order: the estimator's lines and the figures' colours.
COMPONENTS = ("weights", "master weights", "gradients", "optimizer states", "activations",
              "logits", "kv cache", "temporaries")

#: Framework overhead lines, reported apart from the tensors.
OVERHEADS = ("cuda context", "allocator reserve")

#: The simulator's storage categories, in order of precedence (a storage keeps the first
#: one it is ever given).
CATEGORIES = ("parameters", "buffers", "gradients", "optimizer", "kv_cache", "activations",
              "temporaries")

#: Simulator category -> the component it is drawn as.  Buffers (norm statistics, masks,
#: rotary tables) are state kept beside the weights that no optimizer updates; the
#: estimator has no line of their own, and figures draw them in the shade next to the
#: weights', the "master weights" colour.
CATEGORY_COMPONENT = {
    "parameters": "weights", "buffers": "master weights", "gradients": "gradients",
    "optimizer": "optimizer states", "kv_cache": "kv cache", "activations": "activations",
    "temporaries": "temporaries",
}
