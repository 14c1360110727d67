#!/usr/bin/python3
"""The float64 polynomials of lib/src/vmath.h: minimax-like fits (mpmath.chebyfit) and their
error once the coefficients are rounded to double, weighted as each enters its function.

    python3 scripts/vmath_fit.py      (needs python3-mpmath)

Prints each polynomial's coefficients, lowest degree first, as C hex literals.
"""
import mpmath as mp

mp.mp.dps = 50


def exp_q1(r):
    """(e^r - 1 - r - r^2/2) / r^3: ml__exp_parts's q = 1/2 + r q1(r)."""
    if abs(r) < mp.mpf("1e-10"):
        return mp.mpf(1) / 6 + r / 24 + r * r / 120
    return (mp.exp(r) - 1 - r - r * r / 2) / r**3


def atanh_g(t):
    """(atanh(s) / s - 1) / s^2 for t = s^2: ml__log1p_unit's and ml__log_core_d's g."""
    if t < mp.mpf("1e-12"):
        return mp.mpf(1) / 3 + t / 5 + t * t / 7
    s = mp.sqrt(t)
    return (mp.atanh(s) / s - 1) / t


def fit(name, f, lo, hi, degree, weight):
    c = mp.chebyfit(f, [lo, hi], degree + 1)[::-1]  # lowest degree first
    cd = [float(x) for x in c]  # rounded to nearest
    worst = mp.mpf(0)
    for i in range(4001):
        x = lo + (hi - lo) * i / 4000
        p = mp.mpf(0)
        for k in reversed(range(len(cd))):
            p = p * x + mp.mpf(cd[k])
        worst = max(worst, abs(p - f(x)) * weight(x))
    print(f"{name}: degree {degree}, relative error {mp.nstr(worst, 3)}")
    print("    " + ", ".join(x.hex() for x in cd))


R = mp.log(2) / 2 * (1 + mp.mpf(2) ** -20)  # |r| after the reduction, with its rounding
fit("exp q1 (|r| <= ln 2 / 2)", exp_q1, -R, R, 9, lambda r: abs(r) ** 3 / mp.exp(r))
fit("log1p_unit g (s^2 in [0, 1/9])", atanh_g, mp.mpf(0), mp.mpf(1) / 9, 10, lambda t: t)
fit("log_core_d g (s^2 in [0, 0.1716^2])", atanh_g, mp.mpf(0), mp.mpf("0.1716") ** 2, 7,
    lambda t: t)
