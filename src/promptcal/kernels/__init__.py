"""Numba kernels: arrays in, arrays out. No config objects, no logging."""
