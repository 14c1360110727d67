/*
 * ref.h -- an independent reference for the tests: the frameworks' documented formulas
 * (TensorFlow, Keras, PyTorch) written the plain (textbook) way in long double, without the stable rewrites the library uses.
 * Inputs in the tests are kept moderate so that the plain forms are accurate to ~1e-16.
 */
#ifndef ML_TEST_REF_H
#define ML_TEST_REF_H

#include <math.h>
#include <stdint.h>

typedef long double ld;

static inline ld ref_sigmoid(ld x)
{
    return 1.0L / (1.0L + expl(-x));
}

/* -(z log s + (1 - z) log(1 - s)), s = sigmoid(x); pos weight q on the positive term. */
static inline ld ref_bce_logits(ld z, ld x, ld q)
{
    ld s = ref_sigmoid(x);
    return -(q * z * logl(s) + (1 - z) * logl(1 - s));
}

static inline ld ref_clip(ld p, ld lo, ld hi)
{
    return p < lo ? lo : (p > hi ? hi : p);
}

/* Keras binary cross-entropy on probabilities (eps 1e-7; keras2 adds eps in the logs). */
static inline ld ref_keras_bce_probs(ld y, ld p, int keras2)
{
    const ld eps = 1e-7L;
    ld o = ref_clip(p, eps, 1 - eps);
    ld e = keras2 ? eps : 0;
    return -(y * logl(o + e) + (1 - y) * logl(1 - o + e));
}

/* log softmax of row element c. */
static inline ld ref_log_softmax(const double *x, int len, int c)
{
    ld m = x[0];
    for (int i = 1; i < len; i++)
        if (x[i] > m)
            m = x[i];
    ld s = 0;
    for (int i = 0; i < len; i++)
        s += expl((ld)x[i] - m);
    return (ld)x[c] - m - logl(s);
}

/* Deterministic pseudo-random numbers (xorshift64*). */
struct rng {
    uint64_t s;
};

static inline uint64_t rng_next(struct rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 2685821657736338717ULL;
}

/* Uniform in [lo, hi). */
static inline double rng_uniform(struct rng *r, double lo, double hi)
{
    return lo + (hi - lo) * (double)(rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

static inline int rng_int(struct rng *r, int lo, int hi_inclusive)
{
    return lo + (int)(rng_next(r) % (uint64_t)(hi_inclusive - lo + 1));
}

/*
 * The accuracy workload: n float32 labels {0,1}, logits in [-8, 8) and a 0/1 mask from
 * `seed`; returns the masked mean of sigmoid cross-entropy over those float32 inputs,
 * evaluated in long double.
 */
static inline ld ref_masked_sce_inputs(uint64_t seed, long long n, float *z, float *x, float *m)
{
    struct rng r = {seed};
    ld num = 0, cnt = 0;
    for (long long i = 0; i < n; i++) {
        z[i] = (float)rng_int(&r, 0, 1);
        x[i] = (float)rng_uniform(&r, -8, 8);
        m[i] = (float)rng_int(&r, 0, 1);
        ld xi = x[i];
        num += ((xi > 0 ? xi : 0) - xi * z[i] + log1pl(expl(-fabsl(xi)))) * m[i];
        cnt += m[i] != 0;
    }
    return num / cnt;
}

#endif /* ML_TEST_REF_H */
