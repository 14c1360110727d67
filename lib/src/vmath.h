/*
 * vmath.h -- exp and log1p for float32 elementwise work, written to vectorise.
 *
 * Branch-free (selects, not branches), no calls, no integer<->float conversions the SIMD
 * instruction sets lack: a loop over these compiles to AVX2 or AVX-512 code (kernels built
 * with target_clones), and to the same bits on every path, because the float operations and
 * their order do not depend on the vector width and kernels are compiled without FMA
 * contraction (-ffp-contract=off).
 *
 * The float result is computed in double and rounded once: the double approximation's
 * relative error is below 3e-10, so the float result is within 0.5 ulp + 0.005 ulp of the
 * exact value (tests/test_vmath.c measures it against glibc's double functions over every
 * 31st float and the edges).
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
 * 16 of them. Each is measured against the double reference in tests/test_vmath.c (every
 * 31st float and the edges): at most 2 ulp from the correctly rounded float.
 */

/* e^-a for a >= 0 (or NaN, which stays NaN): Cody-Waite reduction and a degree-7
 * polynomial; subnormal results are rounded once. */
static inline ML__ALWAYS_INLINE float ml__exp_negf(float a)
{
    float t = a > 104.0f ? -104.0f : -a; /* exp(-104) is below every float */
    /* n = round(t / ln 2) with the 1.5 * 2^23 trick; the low 22 bits hold n. */
    const float shift = 0x1.8p23f;
    float kf = t * 0x1.715476p0f + shift;
    float n = kf - shift;
    int32_t ni = (int32_t)((ml__bitsf(kf) & 0x3fffffu) ^ 0x200000u) - 0x200000;
    float r = (t - n * 0x1.62e4p-1f) - n * 0x1.7f7d1cp-20f; /* |r| <= 0.347 */
    /* e^r = 1 + (r + r^2 q(r)): the small terms summed first, 1 added last. */
    float q = 1.0f / 5040;
    q = q * r + 1.0f / 720;
    q = q * r + 1.0f / 120;
    q = q * r + 1.0f / 24;
    q = q * r + 1.0f / 6;
    q = q * r + 0.5f;
    float p = 1.0f + (r + (r * r) * q);
    /* p 2^n in two steps (n <= 0), so that 2^-150 < e < 2^-126 rounds once into the
     * subnormals. */
    int32_t n1 = ni / 2, n2 = ni - n1;
    return p * ml__from_bitsf((uint32_t)(n1 + 127) << 23) * ml__from_bitsf((uint32_t)(n2 + 127) << 23);
}

/* log(1 + e) for 0 <= e <= 1 (or NaN): 2 atanh(s), s = e / (2 + e) in [0, 1/3], by its
 * series; no 1 + e that would lose e's low bits. */
static inline ML__ALWAYS_INLINE float ml__log1p_unitf(float e)
{
    /* The rounding dl of d = 2 + e is put back: s = (e / d)(1 - dl / d). dl / d is below
     * 2^-24, so 1 / d by a line through its ends (4% off) is plenty and saves a division. */
    float d = 2.0f + e;
    float dl = e - (d - 2.0f);
    float s0 = e / d;
    float sv = s0 - s0 * (dl * (0.5f - e * (1.0f / 6)));
    float s2 = sv * sv;
    float g = 1.0f / 17;
    g = g * s2 + 1.0f / 15;
    g = g * s2 + 1.0f / 13;
    g = g * s2 + 1.0f / 11;
    g = g * s2 + 1.0f / 9;
    g = g * s2 + 1.0f / 7;
    g = g * s2 + 1.0f / 5;
    g = g * s2 + 1.0f / 3;
    float r1 = 2.0f * sv + 2.0f * sv * (s2 * g);
    /* Below 2^-25 log1p(e) rounds to e (and e / 2 would lose a subnormal's last bit). */
    return e < 0x1p-25f ? e : r1;
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
    float d = 1.0f + e;
    return x >= 0 ? 1.0f / d : e / d;
}

static inline ML__ALWAYS_INLINE float ml__sigmoidf(float x)
{
    float ax = x < 0 ? -x : x;
    return ml__sigmoid_ef(x, ml__exp_negf(ax));
}

/* log x: -inf at +-0, NaN below 0 and for NaN, +inf at +inf. x = m 2^k with m in
 * [sqrt(1/2), sqrt(2)), log m = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716. */
static inline ML__ALWAYS_INLINE float ml__logf(float x)
{
    /* Subnormals are scaled into the normals first. */
    int sub = x < 0x1p-126f;
    float xs = sub ? x * 0x1p23f : x;
    uint32_t u = ml__bitsf(xs);
    int32_t k = (int32_t)(u >> 23) - 127 - (sub ? 23 : 0);
    float m = ml__from_bitsf((u & 0x7fffffu) | 0x3f800000u); /* [1, 2) */
    int big = m > 0x1.6a09e6p0f;
    m = big ? m * 0.5f : m;
    k = big ? k + 1 : k;
    float f = m - 1.0f; /* exact */
    /* d = m + 1 rounds; its error dl (exact) is put back, 1 / d by a line (2% off). */
    float d = m + 1.0f;
    float dl = m - (d - 1.0f);
    float s0 = f / d;
    float s = s0 - s0 * (dl * (1.0f - 0.25f * d));
    float s2 = s * s;
    float g = 1.0f / 11;
    g = g * s2 + 1.0f / 9;
    g = g * s2 + 1.0f / 7;
    g = g * s2 + 1.0f / 5;
    g = g * s2 + 1.0f / 3;
    float kf = (float)k;
    /* k ln 2 in two parts: k * 0x1.62e4p-1 is exact for |k| < 2^9. */
    float y = (kf * 0x1.62e4p-1f + 2.0f * s) + (2.0f * s * (s2 * g) + kf * 0x1.7f7d1cp-20f);
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

#endif /* ML_VMATH_H */
