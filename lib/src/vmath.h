/*
 * vmath.h -- the library's own exp, log1p, log and sigmoid, written to vectorise.
 *
 * Branch-free (selects, not branches), no calls but fma, no integer<->float conversions the
 * SIMD instruction sets lack: a loop over these compiles to AVX2 or AVX-512 code (the kernels
 * are built once per instruction set, simd.h), and to the same bits on every path, because
 * the operations and their order do not depend on the vector width, fused multiply-adds are
 * explicit (correctly rounded everywhere) and nothing else is contracted (-ffp-contract=off).
 *
 * ml__expf and ml__log1pf (general float arguments) compute in double and round once: within
 * 0.5 ulp + 0.005 ulp of the exact value. The all-float and the double functions further down
 * are those of the kernels. tests/test_vmath.c measures each against a correctly rounded
 * reference (glibc's double functions for float, long double for double).
 */
#ifndef ML_VMATH_H
#define ML_VMATH_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#define ML__ALWAYS_INLINE __attribute__((always_inline))
#else
#define ML__ALWAYS_INLINE
#endif

static inline uint64_t ml__bits(double x)
{
    uint64_t u;
    memcpy(&u, &x, sizeof(u));
    return u;
}

static inline double ml__from_bits(uint64_t u)
{
    double x;
    memcpy(&x, &u, sizeof(x));
    return x;
}

/* e^x for float x, rounded once to float. NaN stays NaN; overflow gives +inf, underflow
 * the float subnormals and then +0. */
static inline ML__ALWAYS_INLINE float ml__expf(float xf)
{
    double x = (double)xf;
    /* Keep 2^n representable as a normal double; exp saturates long before. */
    double xc = x > 200.0 ? 200.0 : (x < -200.0 ? -200.0 : x);
    /* n = round(x / ln 2) with the 1.5 * 2^52 trick: n lands in the low mantissa bits. */
    const double shift = 0x1.8p52;
    double t = xc * 0x1.71547652b82fep0 + shift;
    double n = t - shift;
    /* The low 20 mantissa bits hold n mod 2^20; sign-extend them (|n| <= 289). */
    int64_t ni = (int64_t)((ml__bits(t) & 0xfffff) ^ 0x80000) - 0x80000;
    /* r = x - n ln 2 in two parts; |r| <= 0.347. */
    double r = (xc - n * 0x1.62e42fefa3800p-1) - n * 0x1.ef35793c7673p-45;
    /* e^r by its Taylor series to r^9 / 9!: relative error < 2e-11 on |r| <= 0.347. */
    double p = 1.0 / 362880;
    p = p * r + 1.0 / 40320;
    p = p * r + 1.0 / 5040;
    p = p * r + 1.0 / 720;
    p = p * r + 1.0 / 120;
    p = p * r + 1.0 / 24;
    p = p * r + 1.0 / 6;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    double scale = ml__from_bits((uint64_t)(ni + 1023) << 52);
    double y = p * scale;
    return x != x ? xf : (float)y;
}

/* log(1 + x) for float x, rounded once to float: -inf at -1, NaN below, x itself where
 * |x| < 2^-25 (so +-0 and subnormals keep their sign and value). */
static inline ML__ALWAYS_INLINE float ml__log1pf(float xf)
{
    double x = (double)xf;
    /* u = 1 + x is exact in double for every float x >= 2^-29; for smaller x the result is
     * x itself in float anyway. */
    double u = 1.0 + x;
    uint64_t ub = ml__bits(u);
    int64_t k = (int64_t)((ub >> 52) & 0x7ff) - 1023;
    double m = ml__from_bits((ub & 0x000fffffffffffffull) | 0x3ff0000000000000ull); /* [1,2) */
    /* Centre m on 1: m in [sqrt(1/2), sqrt(2)). */
    int big = m > 0x1.6a09e667f3bcdp0;
    m = big ? m * 0.5 : m;
    k = big ? k + 1 : k;
    /* k as a double without an int64 conversion: |k| < 2^20. */
    double kd = ml__from_bits(0x4330000000000000ull + (uint64_t)(k + 0x80000)) - (0x1p52 + 0x80000);
    /* log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716: the series to s^13 leaves
     * a relative error below 1e-12. */
    double s = (m - 1.0) / (m + 1.0);
    double s2 = s * s;
    double q = 1.0 / 13;
    q = q * s2 + 1.0 / 11;
    q = q * s2 + 1.0 / 9;
    q = q * s2 + 1.0 / 7;
    q = q * s2 + 1.0 / 5;
    q = q * s2 + 1.0 / 3;
    q = q * s2 + 1.0;
    double logm = 2.0 * s * q;
    double y = kd * 0x1.62e42fefa39efp-1 + logm;
    float r = (float)y;
    /* Edges by selection. */
    float ax = xf < 0 ? -xf : xf;
    r = ax < 0x1p-25f ? xf : r;
    r = xf == -1.0f ? -__builtin_inff() : r;
    r = xf < -1.0f ? __builtin_nanf("") : r;
    r = xf == __builtin_inff() ? xf : r;
    r = xf != xf ? xf : r;
    return r;
}

static inline uint32_t ml__bitsf(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    return u;
}

static inline float ml__from_bitsf(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof(x));
    return x;
}

/*
 * The all-float functions of the fused kernels: float only, so that a 512-bit vector holds
 * 16 of them, and fused multiply-adds (ML__FMAF) where they save an operation. fmaf is
 * correctly rounded by definition, so every path gives the same bits: the AVX2 and AVX-512
 * builds use the instruction, the baseline x86-64 build calls the C library's fmaf. The
 * polynomials are minimax fits (tools: a weighted least-squares Remez on Chebyshev nodes),
 * their errors far below a float ulp. Each function is measured against the double
 * reference in tests/test_vmath.c (every 31st float and the edges): at most 2 ulp from the
 * correctly rounded float.
 */
#if defined(__GNUC__)
#define ML__FMAF(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#include <math.h>
#define ML__FMAF(a, b, c) fmaf((a), (b), (c))
#endif

/* e^-a for a >= 0 (or NaN, which stays NaN): Cody-Waite reduction, e^r = 1 + r + r^2 q(r)
 * with q of degree 4 (relative error 3e-9 on |r| <= ln 2 / 2); subnormal results are
 * rounded once. */
static inline ML__ALWAYS_INLINE float ml__exp_negf(float a)
{
    /* exp(-104) is below every float. This form of the clamp is one min instruction, and
     * keeps a NaN. */
    float ac = a > 104.0f ? 104.0f : a;
    float t = -ac;
    /* kf = 1.5 * 2^23 + n, n = round(t / ln 2) in [-150, 0]: its bits are 0x4b400000 + n. */
    const float shift = 0x1.8p23f;
    float kf = ML__FMAF(t, 0x1.715476p0f, shift);
    float n = kf - shift;
    float r = ML__FMAF(n, -0x1.62e43p-1f, t);
    r = ML__FMAF(n, 0x1.05c61p-29f, r); /* |r| <= 0.347 */
    float q = 0x1.6a245p-10f;
    q = ML__FMAF(q, r, 0x1.1239d4p-7f);
    q = ML__FMAF(q, r, 0x1.5558f2p-5f);
    q = ML__FMAF(q, r, 0x1.555492p-3f);
    q = ML__FMAF(q, r, 0x1.fffffcp-2f);
    float p = 1.0f + ML__FMAF(r * r, q, r);
    /* p 2^(n + 64) is exact and normal; the final 2^-64 rounds once into the subnormals. */
    float scale = ml__from_bitsf((ml__bitsf(kf) - 0x4b400000u + 191u) << 23);
    return (p * scale) * 0x1p-64f;
}

/* log(1 + e) for 0 <= e <= 1 (or NaN): 2 atanh(s), s = e / (2 + e) in [0, 1/3], with
 * atanh(s) / s = 1 + s^2 g(s^2), g of degree 4 (relative error 1.1e-10); no 1 + e that
 * would lose e's low bits. */
static inline ML__ALWAYS_INLINE float ml__log1p_unitf(float e)
{
    /* The rounding dl of d = 2 + e is put back: s = (e / d)(1 - dl / d). dl / d is below
     * 2^-24, so 1 / d by a line through its ends (4% off) is plenty and saves a division. */
    float d = 2.0f + e;
    float dl = e - (d - 2.0f);
    float s0 = e / d;
    float sv = ML__FMAF(-s0, dl * ML__FMAF(e, -1.0f / 6, 0.5f), s0);
    float s2 = sv * sv;
    float g = 0x1.f1aefp-4f;
    g = ML__FMAF(g, s2, 0x1.b6d6ap-4f);
    g = ML__FMAF(g, s2, 0x1.250972p-3f);
    g = ML__FMAF(g, s2, 0x1.9996a8p-3f);
    g = ML__FMAF(g, s2, 0x1.555558p-2f);
    float tv = 2.0f * sv;
    /* Below 2^-24 this is e itself, exactly for normal e; a subnormal e may be 1 ulp off,
     * where e / 2 rounds. */
    return ML__FMAF(tv, s2 * g, tv);
}

/* log(1 + exp(-a)) for a >= 0: the softplus tail of the sigmoid family. */
static inline ML__ALWAYS_INLINE float ml__softplus_negf(float a)
{
    return ml__log1p_unitf(ml__exp_negf(a));
}

/* 1 / (1 + exp(-x)) without overflow, from e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e)
 * below. */
static inline ML__ALWAYS_INLINE float ml__sigmoid_ef(float x, float e)
{
    /* One division of a selected numerator, not two divisions and a select. */
    return (x >= 0 ? 1.0f : e) / (1.0f + e);
}

static inline ML__ALWAYS_INLINE float ml__sigmoidf(float x)
{
    float ax = x < 0 ? -x : x;
    return ml__sigmoid_ef(x, ml__exp_negf(ax));
}

/* log of xs 2^-kadj for a positive normal float xs: xs = m 2^k with m in
 * [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716, with
 * atanh(s) / s = 1 + s^2 g(s^2), g of degree 2 (relative error 8e-10). */
static inline ML__ALWAYS_INLINE float ml__log_core(float xs, int32_t kadj)
{
    uint32_t u = ml__bitsf(xs);
    int32_t k = (int32_t)(u >> 23) - 127 - kadj;
    float m = ml__from_bitsf((u & 0x7fffffu) | 0x3f800000u); /* [1, 2) */
    int big = m > 0x1.6a09e6p0f;
    m = big ? m * 0.5f : m;
    k = big ? k + 1 : k;
    float f = m - 1.0f; /* exact */
    /* d = m + 1 rounds; its error dl (exact) is put back, 1 / d by a line (2% off). */
    float d = m + 1.0f;
    float dl = m - (d - 1.0f);
    float s0 = f / d;
    float s = ML__FMAF(-s0, dl * ML__FMAF(d, -0.25f, 1.0f), s0);
    float s2 = s * s;
    float g = 0x1.31e412p-3f;
    g = ML__FMAF(g, s2, 0x1.995ebp-3f);
    g = ML__FMAF(g, s2, 0x1.55557ap-2f);
    float kf = (float)k;
    /* k ln 2 in two parts: k * 0x1.62e4p-1 is exact for |k| < 2^9. */
    float ts = 2.0f * s;
    return ML__FMAF(kf, 0x1.62e4p-1f, ts) + ML__FMAF(ts, s2 * g, kf * 0x1.7f7d1cp-20f);
}

/* log x for a positive normal float x (no special values): the bits of ml__logf there. */
static inline ML__ALWAYS_INLINE float ml__log_normalf(float x)
{
    return ml__log_core(x, 0);
}

/* log x: -inf at +-0, NaN below 0 and for NaN, +inf at +inf; subnormals are scaled into
 * the normals first. */
static inline ML__ALWAYS_INLINE float ml__logf(float x)
{
    int sub = x < 0x1p-126f;
    float y = ml__log_core(sub ? x * 0x1p23f : x, sub ? 23 : 0);
    y = x == 0.0f ? -__builtin_inff() : y;
    y = x < 0.0f ? __builtin_nanf("") : y;
    y = x == __builtin_inff() ? x : y;
    return x != x ? x : y;
}

/* b^g for an integer g in [0, 4], by multiplication (at most 1.5 ulp more than b^g's
 * rounding); ml__powi_small says which g qualify. */
static inline ML__ALWAYS_INLINE int ml__powi_small(float g)
{
    return g == 0.0f || g == 1.0f || g == 2.0f || g == 3.0f || g == 4.0f;
}

static inline ML__ALWAYS_INLINE float ml__powi4f(float b, float g)
{
    float b2 = b * b;
    float r = g == 1.0f ? b : 1.0f;
    r = g == 2.0f ? b2 : r;
    r = g == 3.0f ? b2 * b : r;
    return g == 4.0f ? b2 * b2 : r;
}

/* ml__powi4f(b, g) for b in [0, 1] (not NaN) and a small g (ml__powi_small) given by its
 * floors f[k]: 0 where bit k of g is set, else 1. b^g = max(b, f0) max(b^2, f1) max(b^4, f2),
 * multiplied in ml__powi4f's order (b b^2 for g = 3): its bits, with no comparison of a g that
 * varies per element (ASL's, by label), only maxima with the floors. All floors 1: 1. */
static inline ML__ALWAYS_INLINE float ml__powi4_unitf(float b, float f0, float f1, float f2)
{
    float b2 = b * b;
    float p0 = b > f0 ? b : f0, p1 = b2 > f1 ? b2 : f1, p2 = b2 * b2 > f2 ? b2 * b2 : f2;
    return (p0 * p1) * p2;
}

/*
 * The same functions in double, for the float64 kernels: the same reductions, longer
 * polynomials (minimax fits whose error, coefficients rounded, stays below 2.2e-18 relative:
 * scripts/vmath_fit.py, mpmath), fma from the C library
 * where the instruction set has none. Measured against long double references in
 * tests/test_vmath.c: at most 2 ulp from the correctly rounded double.
 */
#if defined(__GNUC__)
#define ML__FMA(a, b, c) __builtin_fma((a), (b), (c))
#else
#define ML__FMA(a, b, c) fma((a), (b), (c))
#endif

/*
 * The polynomials below: the two leading terms by Horner's rule, the tail beyond them by
 * Estrin's scheme (pairs c[2i] + c[2i+1] x, ML__P2, then pairs of those with x^2, x^4, x^8). A
 * loop of these functions is bound by the latency of its longest chain of dependent operations
 * (four cycles a fused multiply-add on current x86), not by their number: Horner's rule alone
 * chains n - 1 of them for n coefficients, which the out-of-order window cannot overlap across
 * iterations. The leading terms stay Horner's so that the sum is rounded about as often as
 * Horner rounds it (Estrin throughout added roundings of the size of the result: 0.1% more
 * results off the correctly rounded one). The order of the operations is fixed, so every
 * instruction set still gives the same bits.
 */
#define ML__P2(x, c0, c1) ML__FMA((c1), (x), (c0))

/* e^t = p 2^n for a clamped t: n = round(t / ln 2) as kf = 1.5 * 2^52 + n (its bits are
 * 0x4338000000000000 + n), p = e^r by the series. Shared by ml__exp_neg and ml__exp. */
static inline ML__ALWAYS_INLINE double ml__exp_parts(double t, double *kf)
{
    const double shift = 0x1.8p52;
    *kf = ML__FMA(t, 0x1.71547652b82fep0, shift);
    double n = *kf - shift;
    double r = ML__FMA(n, -0x1.62e42fefa39efp-1, t);
    r = ML__FMA(n, -0x1.abc9e3b39803fp-56, r);
    /* e^r = 1 + r + r^2 q(r), q = 1/2 + r q1(r), q1 the minimax fit of (e^r - 1 - r - r^2/2) / r^3
     * of degree 9 on |r| <= ln 2 / 2 (Chebyshev, mpmath): with its coefficients rounded to
     * double, within 1e-18 of e^r relative (Taylor's series to r^13 / 13!, before: 6e-18). */
    double r2 = r * r, r4 = r2 * r2, r8 = r4 * r4;
    double a0 = ML__P2(r, 0x1.5555555555555p-5, 0x1.11111111109b5p-7);
    double a1 = ML__P2(r, 0x1.6c16c16c167e2p-10, 0x1.a01a01a7c2f2cp-13);
    double a2 = ML__P2(r, 0x1.a01a01a47a5abp-16, 0x1.71de0db2eb873p-19);
    double a3 = ML__P2(r, 0x1.27e4e1f71bcbbp-22, 0x1.af389eea54156p-26);
    double tail =
        ML__FMA(0x1.1f66d957d0ef0p-29, r8, ML__P2(r4, ML__P2(r2, a0, a1), ML__P2(r2, a2, a3)));
    double q = ML__P2(r, 0.5, ML__P2(r, 0x1.5555555555556p-3, tail));
    return 1.0 + ML__FMA(r2, q, r);
}

static inline ML__ALWAYS_INLINE double ml__exp_neg(double a)
{
    double ac = a > 746.0 ? 746.0 : a;      /* exp(-746) rounds to 0 */
    double kf, p = ml__exp_parts(-ac, &kf); /* n in [-1077, 0] */
    /* p 2^(n + 512) is exact and normal; the final 2^-512 rounds once into the subnormals. */
    double scale = ml__from_bits((ml__bits(kf) - 0x4338000000000000ull + 1535u) << 52);
    return (p * scale) * 0x1p-512;
}

/* log(1 + e) for 0 <= e <= 1 (or NaN): 2 atanh(s), s = e / (2 + e) in [0, 1/3], atanh(s) / s
 * by a polynomial in s^2 (below). */
static inline ML__ALWAYS_INLINE double ml__log1p_unit(double e)
{
    /* s = s0 + sl in two parts: sl = (e - s0 (d + dl)) / (d + dl), from the division's exact
     * remainder and the rounding dl of d = 2 + e; 1 / d by a line (4% off) is plenty for a
     * term below 2^-53 s0. The result is then within a little more than half an ulp. */
    double d = 2.0 + e;
    double dl = e - (d - 2.0);
    double s0 = e / d;
    double rem = ML__FMA(-s0, d, e) - s0 * dl;
    double sl = rem * ML__FMA(e, -1.0 / 6, 0.5);
    double s2 = s0 * s0;
    /* g(s2) = (atanh(s) / s - 1) / s2 by its minimax fit of degree 10 on [0, 1/9] (Chebyshev,
     * mpmath): with its coefficients rounded to double, s2 g is within 2.2e-18 of atanh(s) / s
     * relative (the 1/3 rounded is most of it; the atanh series to s^33, before: 1.7e-18). */
    double t2 = s2 * s2, t4 = t2 * t2, t8 = t4 * t4;
    double a0 = ML__P2(s2, 0x1.2492492499d46p-3, 0x1.c71c71bedea97p-4);
    double a1 = ML__P2(s2, 0x1.745d19937b1fcp-4, 0x1.3b13515f6f9efp-4);
    double a2 = ML__P2(s2, 0x1.111abdc8abe16p-4, 0x1.e0a2d581ab68fp-5);
    double a3 = ML__P2(s2, 0x1.bc37f0140c19ep-5, 0x1.32e0d25c9c761p-5);
    double tail = ML__FMA(0x1.401d3e65cdc48p-4, t8, ML__P2(t4, ML__P2(t2, a0, a1), ML__P2(t2, a2, a3)));
    double g = ML__P2(s2, 0x1.5555555555555p-2, ML__P2(s2, 0x1.9999999999944p-3, tail));
    double tv = 2.0 * s0;
    /* tv s2 while g is computed, so that g meets one fma, not a product and then an fma: three
     * cycles fewer on the chain (the worst error and the share of correctly rounded results
     * are those of tv (s2 g) or slightly better: 0.678 -> 0.676 ulp, 4M-sample sweep). */
    return tv + ML__FMA(tv * s2, g, 2.0 * sl);
}

static inline ML__ALWAYS_INLINE double ml__softplus_neg(double a)
{
    return ml__log1p_unit(ml__exp_neg(a));
}

static inline ML__ALWAYS_INLINE double ml__sigmoid_e(double x, double e)
{
    return (x >= 0 ? 1.0 : e) / (1.0 + e);
}

static inline ML__ALWAYS_INLINE double ml__sigmoid(double x)
{
    return ml__sigmoid_e(x, ml__exp_neg(__builtin_fabs(x)));
}

/* log of xs 2^-kadj for a positive normal double xs: 2 atanh(s), |s| <= 0.1716, as in
 * ml__log1p_unit. k ln 2 in two parts, k * ln2_hi exact for |k| < 2^11. */
static inline ML__ALWAYS_INLINE double ml__log_core_d(double xs, int64_t kadj)
{
    uint64_t u = ml__bits(xs);
    int64_t k = (int64_t)(u >> 52) - 1023 - kadj;
    double m = ml__from_bits((u & 0x000fffffffffffffull) | 0x3ff0000000000000ull);
    int big = m > 0x1.6a09e667f3bcdp0;
    m = big ? m * 0.5 : m;
    k = big ? k + 1 : k;
    double f = m - 1.0;
    double d = m + 1.0;
    double dl = m - (d - 1.0);
    /* s = s0 + sl, as in ml__log1p_unit: sl from the division's exact remainder and dl. */
    double s0 = f / d;
    double sl = (ML__FMA(-s0, d, f) - s0 * dl) * ML__FMA(d, -0.25, 1.0);
    double s2 = s0 * s0;
    /* g as in ml__log1p_unit, fitted on [0, 0.1716^2] with degree 7: s2 g within 5.5e-19 of
     * atanh(s) / s relative (the series to s^23: 2e-20, both far below an ulp). Estrin. */
    double t2 = s2 * s2, t4 = t2 * t2;
    double a0 = ML__P2(s2, 0x1.2492492476bf2p-3, 0x1.c71c7201712d2p-4);
    double a1 = ML__P2(s2, 0x1.745cf8fa80a6ep-4, 0x1.3b1c377d3240fp-4);
    double a2 = ML__P2(s2, 0x1.0fbe5ca9fd6f9p-4, 0x1.0c05f222f1ac5p-4);
    double tail = ML__FMA(a2, t4, ML__P2(t2, a0, a1));
    double g = ML__P2(s2, 0x1.5555555555555p-2, ML__P2(s2, 0x1.9999999999a38p-3, tail));
    /* k as a double without an int64 conversion (|k| < 2^20), as ml__log1pf does. */
    double kd = ml__from_bits(0x4330000000000000ull + (uint64_t)(k + 0x80000)) - (0x1p52 + 0x80000);
    double ts = 2.0 * s0;
    return ML__FMA(kd, 0x1.62e42feep-1, ts) +
           ML__FMA(ts, s2 * g, ML__FMA(kd, 0x1.a39ef35793c76p-33, 2.0 * sl));
}

static inline ML__ALWAYS_INLINE double ml__log_normal(double x)
{
    return ml__log_core_d(x, 0);
}

static inline ML__ALWAYS_INLINE double ml__log(double x)
{
    int sub = x < 0x1p-1022;
    double y = ml__log_core_d(sub ? x * 0x1p52 : x, sub ? 52 : 0);
    y = x == 0.0 ? -__builtin_inf() : y;
    y = x < 0.0 ? __builtin_nan("") : y;
    y = x == __builtin_inf() ? x : y;
    return x != x ? x : y;
}

/* e^x for every double x (the kernels use ml__exp_neg): the same reduction and polynomial,
 * 2^n applied in two halves so that neither overflows or underflows early. +-inf and NaN
 * pass through as exp's limits. */
static inline ML__ALWAYS_INLINE double ml__exp(double x)
{
    double xc = x > 709.8 ? 709.8 : x; /* beyond, exp overflows to +inf anyway */
    xc = xc < -746.0 ? -746.0 : xc;    /* and rounds to 0 */
    const double shift = 0x1.8p52;
    double kf, p = ml__exp_parts(xc, &kf);
    double n = kf - shift; /* in [-1076, 1024] */
    /* n = n1 + n2, n1 = round(n / 2): both halves give normal powers of two. */
    double n1 = ML__FMA(n, 0.5, shift) - shift, n2 = n - n1;
    double s1 = ml__from_bits((ml__bits(n1 + shift) - 0x4338000000000000ull + 1023u) << 52);
    double s2 = ml__from_bits((ml__bits(n2 + shift) - 0x4338000000000000ull + 1023u) << 52);
    double y = (p * s1) * s2;
    return x != x ? x : y;
}

/* log(1 + x) for every double x: log(u) for u = 1 + x, plus c / u for the part c of x that
 * the rounding of u lost (exact: c = x - (u - 1)). -inf at -1, NaN below, x itself at +-0. */
static inline ML__ALWAYS_INLINE double ml__log1p(double x)
{
    double u = 1.0 + x;
    double c = x - (u - 1.0);
    double uc = u > 0x1p-1022 && u < __builtin_inf() ? u : 1.0; /* special u: see below */
    double y = ml__log_core_d(uc, 0) + c / uc;
    y = x == 0.0 ? x : y;
    y = x == -1.0 ? -__builtin_inf() : y;
    y = x < -1.0 ? __builtin_nan("") : y;
    y = x == __builtin_inf() ? x : y;
    return x != x ? x : y;
}

/* a b + c rounded once, by name for each type (formulas.h calls VM(ml__fma)). */
static inline ML__ALWAYS_INLINE float ml__fmaf(float a, float b, float c)
{
    return ML__FMAF(a, b, c);
}

static inline ML__ALWAYS_INLINE double ml__fma(double a, double b, double c)
{
    return ML__FMA(a, b, c);
}

static inline ML__ALWAYS_INLINE int ml__powi_small_d(double g)
{
    return g == 0.0 || g == 1.0 || g == 2.0 || g == 3.0 || g == 4.0;
}

static inline ML__ALWAYS_INLINE double ml__powi4(double b, double g)
{
    double b2 = b * b;
    double r = g == 1.0 ? b : 1.0;
    r = g == 2.0 ? b2 : r;
    r = g == 3.0 ? b2 * b : r;
    return g == 4.0 ? b2 * b2 : r;
}

static inline ML__ALWAYS_INLINE double ml__powi4_unit(double b, double f0, double f1, double f2)
{
    double b2 = b * b;
    double p0 = b > f0 ? b : f0, p1 = b2 > f1 ? b2 : f1, p2 = b2 * b2 > f2 ? b2 * b2 : f2;
    return (p0 * p1) * p2;
}

#endif /* ML_VMATH_H */
