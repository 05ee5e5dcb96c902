"""Fit the coefficients of the vector GELU in csrc/vec_gelu.h (run: python csrc/fit_gelu_erfc.py).

GELU(y) = y * Phi(y), and Phi comes from erfc(z), z = |y| / sqrt(2):  Phi = 1 - erfc(z)/2 for
y >= 0, erfc(z)/2 for y < 0, which keeps the relative accuracy of both tails. We write
erfc(z) = exp(-z^2) * R(t) with t = 1 / (1 + z/2) in (0, 1], and fit R as a degree-9 polynomial
in t by iteratively reweighted least squares on the relative error over z in [0, 9.5]
(exp(-z^2) underflows fp32 beyond). Evaluated in fp32 (Horner) the relative error of R is
about 3.5e-7; the script prints it and the C initializer.
"""
import math

import numpy as np

P, DEGREE, ZMAX = 0.5, 9, 9.5


def fit_r(p=P, degree=DEGREE, zmax=ZMAX, nodes=4000, rounds=30):
    t_min = 1 / (1 + p * zmax)
    u = np.cos(np.pi * (np.arange(nodes) + 0.5) / nodes)          # Chebyshev nodes
    t = t_min + (1 - t_min) * (u + 1) / 2
    z = (1 / t - 1) / p
    r = np.array([math.erfc(v) * math.exp(v * v) for v in z])
    basis = np.vander(t, degree + 1, increasing=True) / r[:, None]   # relative error
    weight = np.ones_like(r)
    coef = None
    for _ in range(rounds):                                         # push towards minimax
        coef, *_ = np.linalg.lstsq(basis * weight[:, None], weight, rcond=None)
        err = np.abs(basis @ coef - 1)
        weight = weight * np.sqrt(err / err.max() + 1e-3)
        weight /= weight.max()
    return coef


def r_fp32(coef, z, p=P):
    z = z.astype(np.float32)
    t = np.float32(1) / (np.float32(1) + np.float32(p) * z)
    acc = np.float32(coef[-1])
    for c in coef[-2::-1]:
        acc = acc * t + np.float32(c)
    return acc


if __name__ == "__main__":
    coef = fit_r()
    z = np.linspace(0, 9.3, 200001)
    exact = np.array([math.erfc(v) * math.exp(v * v) for v in z])
    print(f"max relative error of R in fp32: {np.abs(r_fp32(coef, z) / exact - 1).max():.3g}")
    print("{" + ", ".join(f"{c:.9e}f" for c in coef) + "}")
