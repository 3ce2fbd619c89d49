"""Layer 2, ``hardware``: the GPU catalogue, the one timing helper, microbenchmarks and
low-bit kernels.  Imports only :mod:`vramlib.core`.  Modules load on use.
"""
