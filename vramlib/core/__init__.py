"""Layer 1, ``core``: units, dtypes and the one component vocabulary, device selection,
recorded results (provenance), reproducibility, plot style and experiment scale.

Imports nothing else of vramlib.  The package itself imports nothing (each module loads on
use), so ``vramlib.core.units`` stays free of torch and matplotlib.
"""
