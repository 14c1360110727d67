/*
 * test_vmath.c -- the library's own float32 exp and log1p against a correctly rounded
 * reference: glibc's double exp and log1p (errors below 1 double ulp, so rounding their
 * result to float is off from the exact value by at most 0.5 float ulp plus 2^-29 ulp).
 * Every 31st float bit pattern is tried (138 million inputs over both signs), plus the
 * edges: +-0, subnormals, the overflow and underflow thresholds, -1, infinities, NaN.
 * exp and log1p: at most 1 ulp from the reference value, so within 2 ulp of the correctly
 * rounded one (measured: 0.5). The all-float softplus of the fused kernels: at most 2 whole
 * ulp from the correctly rounded float.
 */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "../lib/src/vmath.h"

/* The sweeps' density. The plain build's pass is the accuracy evidence (the worst ulps it
 * prints are README "Accuracy"'s): every 31st float. Under AddressSanitizer (make test's second
 * pass) THIN times sparser: that pass looks for memory and undefined-behaviour errors, which the
 * same code paths show at any density, and the full sweeps took it about 100 s of CI's 15
 * minutes. The edges and special values are tried in both. */
#if defined(__SANITIZE_ADDRESS__)
#define THIN 37
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define THIN 37
#endif
#endif
#ifndef THIN
#define THIN 1
#endif
#define STRIDE (31 * THIN) /* every 31st float bit pattern, or every 1147th */

static float from_u32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

/* |got - ref| in units of the float ulp at ref (ulp of the smallest subnormal at 0). */
static double ulps(float got, double ref)
{
    if (isnan(ref))
        return isnan(got) ? 0 : INFINITY;
    if (isinf(ref) || fabs(ref) > FLT_MAX) {
        double rounded = (double)(float)ref; /* what correct rounding gives: inf or FLT_MAX */
        return (double)got == rounded ? 0 : INFINITY;
    }
    int e;
    frexp(ref, &e);
    double ulp = ldexp(1.0, (e - 24 < -149) ? -149 : e - 24);
    return fabs((double)got - ref) / ulp;
}

struct worst {
    double ulps;
    float x;
    float got;
    double ref;
};

static void try_one(struct worst *w, float x, float got, double ref)
{
    double u = ulps(got, ref);
    if (u > w->ulps) {
        w->ulps = u;
        w->x = x;
        w->got = got;
        w->ref = ref;
    }
}

static void test_expf(void **state)
{
    (void)state;
    struct worst w = {0, 0, 0, 0};
    for (uint64_t u = 0; u <= 0xffffffffu; u += STRIDE) {
        float x = from_u32((uint32_t)u);
        try_one(&w, x, ml__expf(x), exp((double)x));
    }
    static const float edges[] = {0.0f,        -0.0f,    1e-45f,     -1e-45f,     88.72283f,
                                  88.72284f,   88.7229f, -87.33654f, -103.27893f, -103.972076f,
                                  -103.97208f, -104.0f,  1e30f,      -1e30f,      INFINITY,
                                  -INFINITY,   FLT_MIN,  -FLT_MAX,   FLT_MAX};
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
        try_one(&w, edges[i], ml__expf(edges[i]), exp((double)edges[i]));
    printf("expf: worst %.3f ulp at x = %a (got %a, reference %a)\n", w.ulps, (double)w.x,
           (double)w.got, w.ref);
    assert_true(w.ulps <= 1.0);
    assert_true(isnan(ml__expf(NAN)));
    assert_true(ml__expf(-INFINITY) == 0.0f && !signbit(ml__expf(-INFINITY)));
    assert_true(ml__expf(INFINITY) == INFINITY);
    assert_true(ml__expf(0.0f) == 1.0f && ml__expf(-0.0f) == 1.0f);
}

static void test_log1pf(void **state)
{
    (void)state;
    struct worst w = {0, 0, 0, 0};
    for (uint64_t u = 0; u <= 0xffffffffu; u += STRIDE) {
        float x = from_u32((uint32_t)u);
        try_one(&w, x, ml__log1pf(x), log1p((double)x));
    }
    static const float edges[] = {
        0.0f,  -0.0f,       1e-45f,  -1e-45f,  0x1p-25f,  -0x1p-25f, 0x1.fffffep-26f, -0.99999994f,
        -1.0f, -1.0000001f, FLT_MAX, INFINITY, -INFINITY, 1.0f,      0.41421357f,     -0.29289323f};
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
        try_one(&w, edges[i], ml__log1pf(edges[i]), log1p((double)edges[i]));
    printf("log1pf: worst %.3f ulp at x = %a (got %a, reference %a)\n", w.ulps, (double)w.x,
           (double)w.got, w.ref);
    assert_true(w.ulps <= 1.0);
    assert_true(signbit(ml__log1pf(-0.0f)) && ml__log1pf(-0.0f) == 0.0f);
    assert_true(ml__log1pf(-1.0f) == -INFINITY);
    assert_true(isnan(ml__log1pf(-2.0f)) && isnan(ml__log1pf(NAN)));
}

/* log(1 + exp(-a)) for every 31st non-negative float, against the double formula. */
static void test_softplus_negf(void **state)
{
    (void)state;
    /* This one is not correctly rounded: count whole ulps to the correctly rounded float
     * (the double reference rounded once), which must be at most 2. */
    struct worst w = {0, 0, 0, 0};
    int worst_cr = 0;
    for (uint64_t u = 0; u <= 0x7f800000u; u += STRIDE) {
        float a = from_u32((uint32_t)u);
        double ref = log1p(exp(-(double)a));
        float got = ml__softplus_negf(a), cr = (float)ref;
        try_one(&w, a, got, ref);
        uint32_t ug, uc;
        memcpy(&ug, &got, 4);
        memcpy(&uc, &cr, 4);
        int d = (int)(ug > uc ? ug - uc : uc - ug); /* both non-negative: bit distance = ulps */
        if (d > worst_cr)
            worst_cr = d;
    }
    static const float edges[] = {0.0f,     1e-45f, 0x1p-25f, 0.34657359f, 0.6931472f,
                                  1.0f,     17.3f,  17.4f,    17.5f,       87.0f,
                                  87.3365f, 88.0f,  103.0f,   103.97f,     104.0f,
                                  104.1f,   200.0f, FLT_MAX,  INFINITY};
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++) {
        double ref = log1p(exp(-(double)edges[i]));
        float got = ml__softplus_negf(edges[i]);
        try_one(&w, edges[i], got, ref);
        float cr = (float)ref;
        uint32_t ug, uc;
        memcpy(&ug, &got, 4);
        memcpy(&uc, &cr, 4);
        if ((ug > uc ? ug - uc : uc - ug) > 2) /* whole ulps, subnormal ones included */
            fail_msg("softplus_negf(%a) = %a, reference %a", (double)edges[i], (double)got, ref);
    }
    printf("softplus_negf: worst %.3f ulp from the reference at a = %a (got %a, reference %a); "
           "worst %d ulp from the correctly rounded float\n",
           w.ulps, (double)w.x, (double)w.got, w.ref, worst_cr);
    assert_true(worst_cr <= 2);
    assert_true(isnan(ml__softplus_negf(NAN)));
    assert_true(ml__softplus_negf(INFINITY) == 0.0f);
}

/* Whole ulps between got and the correctly rounded float of ref (bit distance; both are
 * finite with the same sign, or equal). */
static int64_t cr_ulps(float got, double ref)
{
    float cr = (float)ref;
    if (got == cr || (isnan(got) && isnan(cr)))
        return 0;
    if (isnan(got) || isnan(cr) || isinf(got) || isinf(cr) || signbit(got) != signbit(cr))
        return INT64_MAX;
    uint32_t ug, uc;
    memcpy(&ug, &got, 4);
    memcpy(&uc, &cr, 4);
    return ug > uc ? (int64_t)(ug - uc) : (int64_t)(uc - ug);
}

struct cr_worst {
    int64_t ulps;
    float x, got;
    double ref;
};

static void cr_one(struct cr_worst *w, float x, float got, double ref)
{
    int64_t d = cr_ulps(got, ref);
    if (d > w->ulps) {
        w->ulps = d;
        w->x = x;
        w->got = got;
        w->ref = ref;
    }
}

static void cr_report(const char *name, const struct cr_worst *w)
{
    printf("%s: worst %lld ulp from the correctly rounded float at x = %a (got %a, reference "
           "%a)\n",
           name, (long long)w->ulps, (double)w->x, (double)w->got, w->ref);
}

/* The all-float exp(-a) of the fused kernels, a >= 0, down into the subnormals. */
static void test_exp_negf(void **state)
{
    (void)state;
    struct cr_worst w = {0, 0, 0, 0};
    for (uint64_t u = 0; u <= 0x7f800000u; u += STRIDE) {
        float a = from_u32((uint32_t)u);
        cr_one(&w, a, ml__exp_negf(a), exp(-(double)a));
    }
    static const float edges[] = {0.0f,    1e-45f,     0x1p-25f,   0.34657359f, 0.6931472f,
                                  87.33f,  87.336548f, 87.336555f, 100.0f,      103.27893f,
                                  103.9f,  103.97207f, 103.97208f, 104.0f,      200.0f,
                                  FLT_MAX, INFINITY};
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
        cr_one(&w, edges[i], ml__exp_negf(edges[i]), exp(-(double)edges[i]));
    cr_report("exp_negf", &w);
    assert_true(w.ulps <= 2);
    assert_true(ml__exp_negf(0.0f) == 1.0f && ml__exp_negf(INFINITY) == 0.0f);
    assert_true(isnan(ml__exp_negf(NAN)));
}

/* The all-float log: every 31st positive float (subnormals included) and the specials. */
static void test_logf(void **state)
{
    (void)state;
    struct cr_worst w = {0, 0, 0, 0};
    for (uint64_t u = 1; u < 0x7f800000u; u += STRIDE) {
        float x = from_u32((uint32_t)u);
        float y = ml__logf(x);
        cr_one(&w, x, y, log((double)x));
        /* The variant for normal inputs gives the same bits there. */
        if (x >= FLT_MIN && memcmp(&y, &(float){ml__log_normalf(x)}, sizeof(y)))
            fail_msg("log_normalf(%a) != logf", (double)x);
    }
    static const float edges[] = {
        1e-45f,        FLT_MIN,       0x1.fffffcp-127f, 1.0f, 0.99999994f, 1.0000001f,
        0x1.6a09e6p0f, 0x1.6a09e8p0f, 0.70710677f,      2.0f, 0.5f,        1e-8f,
        0.05f,         FLT_MAX};
    for (size_t i = 0; i < sizeof(edges) / sizeof(edges[0]); i++)
        cr_one(&w, edges[i], ml__logf(edges[i]), log((double)edges[i]));
    cr_report("logf", &w);
    assert_true(w.ulps <= 2);
    assert_true(ml__logf(0.0f) == -INFINITY && ml__logf(-0.0f) == -INFINITY);
    assert_true(ml__logf(1.0f) == 0.0f && ml__logf(INFINITY) == INFINITY);
    assert_true(isnan(ml__logf(-1.0f)) && isnan(ml__logf(-INFINITY)) && isnan(ml__logf(NAN)));
}

/* The sigmoid of the fused kernels (from exp(-|x|)), every 31st float of both signs. */
static void test_sigmoidf(void **state)
{
    (void)state;
    struct cr_worst w = {0, 0, 0, 0};
    for (uint64_t u = 0; u <= 0xffffffffu; u += STRIDE) {
        float x = from_u32((uint32_t)u);
        if (isnan(x))
            continue;
        cr_one(&w, x, ml__sigmoidf(x), 1.0 / (1.0 + exp(-(double)x)));
    }
    cr_report("sigmoidf", &w);
    assert_true(w.ulps <= 2);
    assert_true(ml__sigmoidf(0.0f) == 0.5f && ml__sigmoidf(INFINITY) == 1.0f);
    assert_true(ml__sigmoidf(-INFINITY) == 0.0f && isnan(ml__sigmoidf(NAN)));
}

/* b^g for the integer g ml__powi4f takes, against pow in double. */
static void test_powi4f(void **state)
{
    (void)state;
    struct cr_worst w = {0, 0, 0, 0};
    for (uint64_t u = 0; u <= 0x3f800000u; u += 7 * THIN) {
        float b = from_u32((uint32_t)u);
        for (int g = 0; g <= 4; g++) {
            double ref = pow((double)b, g);
            if (ref < FLT_MIN)
                continue; /* b^g in the subnormals: not what focusing terms meet */
            cr_one(&w, b, ml__powi4f(b, (float)g), ref);
        }
    }
    cr_report("powi4f", &w);
    assert_true(w.ulps <= 2);
    assert_true(ml__powi_small(4.0f) && !ml__powi_small(2.5f) && !ml__powi_small(5.0f));
}

/* ml__powi4_unit (the fused ASL loop's power, by the floors of g) gives ml__powi4's bits for b
 * in [0, 1], float and double, and 1 for a g that is not a small integer (ASL redoes those). */
static void test_powi4_unit(void **state)
{
    (void)state;
    static const double gs[] = {0, 1, 2, 3, 4, 2.5, 5};
    for (size_t i = 0; i < sizeof(gs) / sizeof(gs[0]); i++) {
        int small = ml__powi_small((float)gs[i]), gi = small ? (int)gs[i] : 0;
        float ff[3];
        double fd[3];
        for (int k = 0; k < 3; k++)
            fd[k] = ff[k] = gi >> k & 1 ? 0.0f : 1.0f;
        for (uint64_t u = 0; u <= 0x3f800000u; u += 4099) {
            float b = from_u32((uint32_t)u);
            float got = ml__powi4_unitf(b, ff[0], ff[1], ff[2]);
            float want = small ? ml__powi4f(b, (float)gs[i]) : 1.0f;
            if (memcmp(&got, &want, sizeof(got)))
                fail_msg("powi4_unitf(%a, %g) = %a, not %a", (double)b, gs[i], (double)got,
                         (double)want);
            double bd = (double)b * (1 - 0x1p-40); /* bits beyond a float's */
            double gotd = ml__powi4_unit(bd, fd[0], fd[1], fd[2]);
            double wantd = small ? ml__powi4(bd, gs[i]) : 1.0;
            if (memcmp(&gotd, &wantd, sizeof(gotd)))
                fail_msg("powi4_unit(%a, %g) = %a, not %a", bd, gs[i], gotd, wantd);
        }
    }
}

/* ---- float64: against long double references (64-bit significands) -------------------- */

/* Whole ulps between got and the correctly rounded double of a long double reference. */
static int64_t cr_ulps_d(double got, long double ref)
{
    double cr = (double)ref;
    if (got == cr || (isnan(got) && isnan(cr)))
        return 0;
    if (isnan(got) || isnan(cr) || isinf(got) || isinf(cr) || signbit(got) != signbit(cr))
        return INT64_MAX;
    uint64_t ug, uc;
    memcpy(&ug, &got, 8);
    memcpy(&uc, &cr, 8);
    return ug > uc ? (int64_t)(ug - uc) : (int64_t)(uc - ug);
}

struct d_worst {
    int64_t ulps;
    double x, got;
};

static void d_one(struct d_worst *w, double x, double got, long double ref)
{
    int64_t d = cr_ulps_d(got, ref);
    if (d > w->ulps) {
        w->ulps = d;
        w->x = x;
        w->got = got;
    }
}

/* Inputs: 2^24 bit patterns spread over [lo, hi) (non-negative doubles), then 2^22
 * uniform values in [ulo, uhi) where the function works hardest (THIN times fewer of each). */
#define D_SWEEP(w, lo, hi, ulo, uhi, expr_got, expr_ref)                                           \
    do {                                                                                           \
        uint64_t lo_ = (lo), step_ = (((hi)-lo_) >> 24) * THIN;                                    \
        for (uint64_t u_ = lo_; u_ < (hi); u_ += step_) {                                          \
            double x;                                                                              \
            memcpy(&x, &u_, 8);                                                                    \
            d_one(&(w), x, (expr_got), (expr_ref));                                                \
        }                                                                                          \
        uint64_t r_ = 99;                                                                          \
        for (int i_ = 0; i_ < (1 << 22) / THIN; i_++) {                                            \
            r_ = r_ * 6364136223846793005ull + 1442695040888963407ull;                             \
            double x = (ulo) + ((uhi) - (ulo)) * ((double)(r_ >> 11) * 0x1p-53);                   \
            d_one(&(w), x, (expr_got), (expr_ref));                                                \
        }                                                                                          \
    } while (0)

static void test_float64(void **state)
{
    (void)state;
    struct d_worst w;
    /* exp(-a): 0 to 746 (past it, 0), subnormal results included. */
    memset(&w, 0, sizeof(w));
    D_SWEEP(w, 0, 0x4087500000000000ull, 0.0, 40.0, ml__exp_neg(x), expl(-(long double)x));
    printf("exp_neg (double): worst %lld ulp at %a\n", (long long)w.ulps, w.x);
    assert_true(w.ulps <= 2);
    /* log1p(e) on [0, 1]. */
    memset(&w, 0, sizeof(w));
    D_SWEEP(w, 0, 0x3ff0000000000001ull, 0.0, 1.0, ml__log1p_unit(x), log1pl((long double)x));
    printf("log1p_unit (double): worst %lld ulp at %a\n", (long long)w.ulps, w.x);
    assert_true(w.ulps <= 2);
    /* log over every positive double, subnormals included. */
    memset(&w, 0, sizeof(w));
    D_SWEEP(w, 1, 0x7ff0000000000000ull, 0.5, 2.0, ml__log(x), logl((long double)x));
    printf("log (double): worst %lld ulp at %a\n", (long long)w.ulps, w.x);
    assert_true(w.ulps <= 2);
    /* softplus tail and sigmoid, where they are not 0 or 1. */
    memset(&w, 0, sizeof(w));
    D_SWEEP(w, 0, 0x4087500000000000ull, 0.0, 40.0, ml__softplus_neg(x),
            log1pl(expl(-(long double)x)));
    printf("softplus_neg (double): worst %lld ulp at %a\n", (long long)w.ulps, w.x);
    assert_true(w.ulps <= 2);
    memset(&w, 0, sizeof(w));
    D_SWEEP(w, 0, 0x4087500000000000ull, 0.0, 40.0, ml__sigmoid(-x),
            1.0L / (1.0L + expl((long double)x)));
    printf("sigmoid (double, x <= 0): worst %lld ulp at %a\n", (long long)w.ulps, w.x);
    assert_true(w.ulps <= 2);
    /* exp over its whole range (overflow at 709.78, subnormals down to -745.13). */
    memset(&w, 0, sizeof(w));
    D_SWEEP(w, 0, 0x4086300000000000ull, -10.0, 10.0, ml__exp(x), expl((long double)x));
    D_SWEEP(w, 0x8000000000000000ull, 0xc087500000000000ull, -746.0, 709.0, ml__exp(x),
            expl((long double)x));
    printf("exp (double): worst %lld ulp at %a\n", (long long)w.ulps, w.x);
    assert_true(w.ulps <= 2);
    /* log1p over (-1, inf): negative and positive halves. */
    memset(&w, 0, sizeof(w));
    D_SWEEP(w, 0, 0x7ff0000000000000ull, -0.5, 2.0, ml__log1p(x), log1pl((long double)x));
    D_SWEEP(w, 0x8000000000000000ull, 0xbff0000000000000ull, -1.0, 0.0, ml__log1p(x),
            log1pl((long double)x));
    printf("log1p (double): worst %lld ulp at %a\n", (long long)w.ulps, w.x);
    assert_true(w.ulps <= 2);
    assert_true(ml__exp(710.0) == INFINITY && ml__exp(-746.0) == 0.0 && ml__exp(0.0) == 1.0);
    assert_true(ml__exp(INFINITY) == INFINITY && ml__exp(-INFINITY) == 0.0 && isnan(ml__exp(NAN)));
    assert_true(ml__exp(-745.0) > 0.0 && ml__exp(709.7) < INFINITY);
    assert_true(ml__log1p(-1.0) == -INFINITY && isnan(ml__log1p(-2.0)) && isnan(ml__log1p(NAN)));
    assert_true(ml__log1p(INFINITY) == INFINITY && signbit(ml__log1p(-0.0)));
    assert_true(ml__log1p(0x1p-1074) == 0x1p-1074 && ml__log1p(DBL_MAX) > 709.0);
    /* The specials. */
    assert_true(ml__exp_neg(0.0) == 1.0 && ml__exp_neg(INFINITY) == 0.0 && isnan(ml__exp_neg(NAN)));
    assert_true(ml__log(0.0) == -INFINITY && ml__log(1.0) == 0.0 && ml__log(INFINITY) == INFINITY);
    assert_true(isnan(ml__log(-1.0)) && isnan(ml__log(NAN)) && ml__log(0x1p-1074) < -744);
    assert_true(ml__sigmoid(0.0) == 0.5 && ml__sigmoid(INFINITY) == 1.0 &&
                ml__sigmoid(-INFINITY) == 0);
    assert_true(ml__log1p_unit(0.0) == 0.0 && isnan(ml__log1p_unit(NAN)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expf),          cmocka_unit_test(test_log1pf),
        cmocka_unit_test(test_softplus_negf), cmocka_unit_test(test_exp_negf),
        cmocka_unit_test(test_logf),          cmocka_unit_test(test_sigmoidf),
        cmocka_unit_test(test_powi4f),        cmocka_unit_test(test_powi4_unit),
        cmocka_unit_test(test_float64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
