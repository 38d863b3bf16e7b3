"""Scalar formulas and the fused kernels built from them (internal)."""
