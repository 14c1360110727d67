/*
 * fast.c -- the fused float32 kernels of fast.h.
 *
 * Work goes in blocks of ML__BLOCK elements. A first loop computes each element's loss into
 * a float array that stays in L1: float only, so that the vectoriser packs 16 elements into
 * an AVX-512 register (8 with AVX2). A second loop weighs the losses in double (the product
 * of two floats is exact there) and adds them into the 16 plain lanes of the block, which
 * are then folded into the chunk's compensated lanes (internal.h, the order reduce.c
 * follows). Row and class weights are laid out for the block first, so the second loop
 * always reads a contiguous stream or a constant.
 *
 * NaN and infinity: every formula here turns a non-finite label or logit into a non-finite
 * loss, and a non-finite weight makes loss * w non-finite (inf * 0 is NaN), so a non-finite
 * input always shows in the sum: the caller looks for the culprit only then, and no pass
 * of its own tests every element. ASL clamps its probabilities (a NaN or infinite logit can
 * give a finite loss), so its kernel adds x * 0 (NaN for those) to the loss it sums.
 */
#include <math.h>
#include <string.h>

#include "fast.h"
#include "simd.h"
#include "vmath.h"

#define BLOCK ML__BLOCK

#if defined(__GNUC__)
#define ALWAYS_INLINE __attribute__((always_inline))
#else
#define ALWAYS_INLINE
#endif


/* ---- The losses, as kernels.h writes them in float (same operations, same order) ------ */

static inline ALWAYS_INLINE float tf_sce(float z, float x)
{
    float relu = x >= 0.0f ? x : 0.0f;
    float ax = __builtin_fabsf(x);
    return relu - x * z + ml__softplus_negf(ax);
}

/* torch BCE-with-logits without pos_weight from e = exp(-|x|). */
static inline ALWAYS_INLINE float torch_bce_e(float z, float x, float e)
{
    float m = x < 0.0f ? x : 0.0f;
    float log_sig = m - ml__log1p_unitf(e);
    return (1.0f - z) * x - 1.0f * log_sig;
}

/* torchvision.ops.sigmoid_focal_loss for gamma 0, 1 or 2; alpha < 0 for none. exp(-|x|) is
 * shared by the sigmoid and the softplus. */
static inline ALWAYS_INLINE float tv_focal(float z, float x, int gamma, float alpha)
{
    float ax = __builtin_fabsf(x);
    float e = ml__exp_negf(ax);
    float p = ml__sigmoid_ef(x, e);
    float ce = torch_bce_e(z, x, e);
    float p_t = p * z + (1.0f - p) * (1.0f - z);
    float b = 1.0f - p_t;
    float f = gamma == 2 ? b * b : gamma == 1 ? b : 1.0f;
    float loss = ce * f;
    return alpha >= 0 ? (alpha * z + (1.0f - alpha) * (1.0f - z)) * loss : loss;
}

/* ASL (Alibaba-MIIL): the log-likelihood term l; its focusing power (1 - pt)^g is applied by
 * the caller. The parameters come by value: read through f, they could alias the output
 * array, and the vectoriser would give up. */
struct asl_terms {
    float l, pt;
};

static inline ALWAYS_INLINE struct asl_terms asl_l(float z, float x, int use_clip, float clip,
                                                   float eps)
{
    float xs_pos = ml__sigmoidf(x);
    float xs_neg = 1.0f - xs_pos;
    if (use_clip) {
        xs_neg = xs_neg + clip;
        xs_neg = xs_neg > 1.0f ? 1.0f : xs_neg;
    }
    float lp = z * ml__logf(xs_pos > eps ? xs_pos : eps);
    float ln = (1.0f - z) * ml__logf(xs_neg > eps ? xs_neg : eps);
    struct asl_terms t = {lp + ln, xs_pos * z + xs_neg * (1.0f - z)};
    return t;
}

/*
 * ASL for a run, assuming binary labels: with z in {0, 1}, z log(a) + (1 - z) log(b) is
 * log(z ? a : b) bit for bit (the other term is a signed zero: both logs are finite, since
 * eps > 0 keeps their arguments positive normal floats), so one log per element instead of
 * two; pt and g are selects for the same reason. Returns how many elements break the
 * assumption (a label not 0 or 1, or a focusing power not a small integer): the caller
 * recomputes those with the general formula (asl_fixup).
 */
static inline ALWAYS_INLINE int asl_binary(const struct ml__fast *f, const float *z,
                                           const float *x, int64_t len, float *out)
{
    const float gp = f->gamma_pos, gn = f->gamma_neg, clip = f->clip, eps = f->epsilon;
#define ASL_LOOP(use_clip, focus)                                                                  \
    for (int64_t k = 0; k < len; k++) {                                                            \
        float p = ml__sigmoidf(x[k]);                                                              \
        float xs_neg = 1.0f - p;                                                                   \
        if (use_clip) {                                                                            \
            xs_neg = xs_neg + clip;                                                                \
            xs_neg = xs_neg > 1.0f ? 1.0f : xs_neg;                                                \
        }                                                                                          \
        int pos = z[k] == 1.0f;                                                                    \
        float arg = pos ? (p > eps ? p : eps) : (xs_neg > eps ? xs_neg : eps);                     \
        float l = ml__log_normalf(arg);                                                            \
        float g = pos ? gp : gn;                                                                   \
        l = focus ? l * ml__powi4f(1.0f - (pos ? p : xs_neg), g) : l;                              \
        out[k] = -l + x[k] * 0.0f;                                                                 \
    }
    if (f->asl_focus && clip > 0)
        ASL_LOOP(1, 1)
    else if (f->asl_focus)
        ASL_LOOP(0, 1)
    else if (clip > 0)
        ASL_LOOP(1, 0)
    else
        ASL_LOOP(0, 0)
#undef ASL_LOOP
    /* A loop of its own: this reduction would stop the vectoriser above. */
    int odd = 0;
    const int small_powers = !f->asl_focus || (ml__powi_small(gp) && ml__powi_small(gn));
    for (int64_t k = 0; k < len; k++)
        odd += (z[k] != 0.0f && z[k] != 1.0f) | !small_powers;
    return odd;
}

/* ASL by its general formula (asl_l), for soft labels or an epsilon below the normals. */
static inline ALWAYS_INLINE int asl_general(const struct ml__fast *f, const float *z,
                                            const float *x, int64_t len, float *out)
{
    /* One loop per (focus, clip > 0): a select on a loop-invariant condition stops the
     * vectoriser. */
    const float gp = f->gamma_pos, gn = f->gamma_neg, clip = f->clip, eps = f->epsilon;
#define ASL_LOOP(use_clip, focus)                                                                  \
    for (int64_t k = 0; k < len; k++) {                                                            \
        struct asl_terms t = asl_l(z[k], x[k], use_clip, clip, eps);                               \
        float g = gp * z[k] + gn * (1.0f - z[k]);                                                  \
        float l = focus ? t.l * ml__powi4f(1.0f - t.pt, g) : t.l;                                  \
        out[k] = -l + x[k] * 0.0f;                                                                 \
    }
    if (f->asl_focus && clip > 0)
        ASL_LOOP(1, 1)
    else if (f->asl_focus)
        ASL_LOOP(0, 1)
    else if (clip > 0)
        ASL_LOOP(1, 0)
    else
        ASL_LOOP(0, 0)
#undef ASL_LOOP
    /* The elements that need powf (a loop of its own: this reduction would stop the
     * vectoriser above). */
    int odd = 0;
    if (f->asl_focus)
        for (int64_t k = 0; k < len; k++)
            odd += !ml__powi_small(gp * z[k] + gn * (1.0f - z[k]));
    return odd;
}

static inline ALWAYS_INLINE int asl_losses(const struct ml__fast *f, const float *z,
                                           const float *x, int64_t len, float *out)
{
    if (f->epsilon >= 0x1p-126f)
        return asl_binary(f, z, x, len, out);
    return asl_general(f, z, x, len, out);
}

/* The per-element losses of one contiguous run into out[]: one loop per formula, with no
 * branch inside for the vectoriser. Returns 1 when an ASL element needs powf. */
static inline ALWAYS_INLINE int losses(const struct ml__fast *f, const float *z, const float *x,
                                       int64_t len, float *out)
{
    switch (f->id) {
    case ML__TORCH_BCE:
        for (int64_t k = 0; k < len; k++) {
            float ax = __builtin_fabsf(x[k]);
            out[k] = torch_bce_e(z[k], x[k], ml__exp_negf(ax));
        }
        return 0;
    case ML__TV_FOCAL: {
        const float alpha = f->alpha;
        if (f->gamma == 2)
            for (int64_t k = 0; k < len; k++)
                out[k] = tv_focal(z[k], x[k], 2, alpha);
        else if (f->gamma == 1)
            for (int64_t k = 0; k < len; k++)
                out[k] = tv_focal(z[k], x[k], 1, alpha);
        else
            for (int64_t k = 0; k < len; k++)
                out[k] = tv_focal(z[k], x[k], 0, alpha);
        return 0;
    }
    case ML__ASL:
        return asl_losses(f, z, x, len, out);
    /* The TF v1 pointwise losses of predictions, as kernels.h writes them. */
    case ML__TF_MSE:
        for (int64_t k = 0; k < len; k++) {
            float d = x[k] - z[k];
            out[k] = d * d;
        }
        return 0;
    case ML__TF_ABSDIFF:
        for (int64_t k = 0; k < len; k++)
            out[k] = __builtin_fabsf(x[k] - z[k]);
        return 0;
    case ML__TF_HUBER: {
        const float delta = f->delta;
        for (int64_t k = 0; k < len; k++) {
            float a = __builtin_fabsf(x[k] - z[k]);
            float q = a < delta ? a : delta;
            out[k] = 0.5f * (q * q) + delta * (a - q);
        }
        return 0;
    }
    case ML__TF_HINGE:
        /* relu drops a NaN: x * 0 + z * 0 (NaN for a non-finite input) puts it back. */
        for (int64_t k = 0; k < len; k++) {
            float m = 1.0f - (2.0f * z[k] - 1.0f) * x[k];
            out[k] = (m > 0.0f ? m : 0.0f) + (x[k] * 0.0f + z[k] * 0.0f);
        }
        return 0;
    case ML__TF_LOG_LOSS: {
        const float eps = f->epsilon;
        for (int64_t k = 0; k < len; k++)
            out[k] = -(z[k] * ml__logf(x[k] + eps)) - (1.0f - z[k]) * ml__logf(1.0f - x[k] + eps);
        return 0;
    }
    default:
        if (f->id == ML__TF_SIGMOID_CE && f->label_smoothing > 0) {
            const float ls = f->label_smoothing;
            for (int64_t k = 0; k < len; k++)
                out[k] = tf_sce(z[k] * (1.0f - ls) + 0.5f * ls, x[k]);
        } else {
            for (int64_t k = 0; k < len; k++)
                out[k] = tf_sce(z[k], x[k]);
        }
        return 0;
    }
}

/* The ASL elements whose focusing power is not a small integer, again with powf (what
 * kernels.h does for them). Rare: soft labels or non-integer gammas. */
/* The ASL elements the vectorised loops leave (asl_binary, asl_general say which), again by
 * the general formula with powf where the power is not a small integer: what kernels.h
 * does. Rare: soft labels, non-integer gammas. */
static void asl_fixup(const struct ml__fast *f, const float *z, const float *x, int64_t len,
                      float *out)
{
    const float gp = f->gamma_pos, gn = f->gamma_neg;
    const int binary_loop = f->epsilon >= 0x1p-126f;
    for (int64_t k = 0; k < len; k++) {
        float g = gp * z[k] + gn * (1.0f - z[k]);
        int small = !f->asl_focus || ml__powi_small(g);
        if (small && (!binary_loop || z[k] == 0.0f || z[k] == 1.0f))
            continue; /* the loop's value is the general one */
        struct asl_terms t = asl_l(z[k], x[k], f->clip > 0, f->clip, f->epsilon);
        float l = t.l;
        if (f->asl_focus)
            l = l * (small ? ml__powi4f(1.0f - t.pt, g) : powf(1.0f - t.pt, g));
        out[k] = -l + x[k] * 0.0f;
    }
}

/* ---- Weighting and the lanes ---------------------------------------------------------- */

#if defined(__GNUC__)
/* Eight lanes; unaligned loads of floats (macros: a function returning one would change the
 * ABI between the clones). */
typedef double v8d __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t v8i __attribute__((vector_size(32)));
#define LOAD8(p) (*(const v8f *)(p))
#if defined(__AVX512F__)
/* GCC splits the generic conversion into 128-bit pieces; one instruction does it. */
#include <immintrin.h>
#define WIDEN(v) ((v8d)_mm512_cvtps_pd((__m256)(v)))
#else
#define WIDEN(v) __builtin_convertvector((v), v8d)
#endif
#endif

/* The sums of one block. */
struct block_acc {
    double num[ML__LANES], den[ML__LANES];
    int64_t nonzero;
};

/*
 * Adds loss[k] * w[k] of a block of len elements into lanes k mod 16, w[k] into den (when
 * need_den) and counts the non-zero w[k] (when need_nz). w NULL: the constant `scalar` for
 * every w[k] (has_w 0: no weights, so no multiplication either). Called with constant flags,
 * so that each combination is a loop of its own without dead work.
 */
static inline ALWAYS_INLINE void block_sums(const float *loss, const float *w, float scalar,
                                            int has_w, int need_den, int need_nz, int64_t len,
                                            struct block_acc *a)
{
    int64_t k = 0;
    memset(a, 0, sizeof(*a));
#if defined(__GNUC__)
    v8d n0 = {0}, n1 = {0}, d0 = {0}, d1 = {0};
    v8i nz = {0};
    const v8d sv = {scalar, scalar, scalar, scalar, scalar, scalar, scalar, scalar};
    for (; k + ML__LANES <= len; k += ML__LANES) {
        v8d l0 = WIDEN(LOAD8(loss + k)), l1 = WIDEN(LOAD8(loss + k + 8));
        if (w) {
            v8f wf0 = LOAD8(w + k), wf1 = LOAD8(w + k + 8);
            v8d w0 = WIDEN(wf0), w1 = WIDEN(wf1);
            n0 += l0 * w0;
            n1 += l1 * w1;
            if (need_den) {
                d0 += w0;
                d1 += w1;
            }
            if (need_nz)
                nz -= (v8i)(wf0 != 0) + (v8i)(wf1 != 0);
        } else {
            n0 += has_w ? l0 * sv : l0;
            n1 += has_w ? l1 * sv : l1;
            if (need_den) {
                d0 += sv;
                d1 += sv;
            }
        }
    }
    memcpy(a->num, &n0, sizeof(n0));
    memcpy(a->num + 8, &n1, sizeof(n1));
    memcpy(a->den, &d0, sizeof(d0));
    memcpy(a->den + 8, &d1, sizeof(d1));
    for (int j = 0; j < 8; j++)
        a->nonzero += nz[j];
#endif
    for (; k < len; k++) {
        int j = (int)(k & (ML__LANES - 1));
        double wk = w ? (double)w[k] : (double)scalar;
        a->num[j] += has_w ? (double)loss[k] * wk : (double)loss[k];
        a->den[j] += wk;
        if (w)
            a->nonzero += w[k] != 0;
    }
    if (!w)
        a->nonzero = scalar != 0 ? len : 0;
}

static inline ALWAYS_INLINE void lanes_fold(struct ml__lanes *l, const double *b)
{
    memcpy(l->b, b, sizeof(l->b));
    ml__lanes_flush(l);
}

void ML__ISA(ml__fast_run)(const struct ml__fast *f, int64_t begin, int64_t end,
                           struct ml__fast_sums *out)
{
    float loss[BLOCK], wbuf[BLOCK];
    struct block_acc acc;
    memset(out, 0, sizeof(*out));
    for (int64_t b0 = begin; b0 < end; b0 += BLOCK) {
        int64_t len = end - b0 < BLOCK ? end - b0 : BLOCK;
        if (losses(f, f->z + b0, f->x + b0, len, loss))
            asl_fixup(f, f->z + b0, f->x + b0, len, loss);
        /* The weights of the block as one stream (or one constant). */
        const float *w = NULL;
        float scalar = 1.0f;
        switch (f->wmode) {
        case ML__FW_SCALAR:
            scalar = f->w[0];
            break;
        case ML__FW_DENSE:
            w = f->w + b0;
            break;
        case ML__FW_ROW:
        case ML__FW_COL:
            for (int64_t i = b0; i < b0 + len;) {
                int64_t row = i / f->cols, col = i - row * f->cols;
                int64_t seg = f->cols - col;
                if (seg > b0 + len - i)
                    seg = b0 + len - i;
                if (f->wmode == ML__FW_COL)
                    memcpy(wbuf + (i - b0), f->w + col, (size_t)seg * sizeof(float));
                else
                    for (int64_t k = 0; k < seg; k++)
                        wbuf[i - b0 + k] = f->w[row];
                i += seg;
            }
            w = wbuf;
            break;
        default:
            break;
        }
        const int has_w = f->wmode != ML__FW_NONE, need_den = f->den_sums || f->want_sw;
        if (w && need_den && f->want_nz)
            block_sums(loss, w, 1.0f, 1, 1, 1, len, &acc);
        else if (w && need_den)
            block_sums(loss, w, 1.0f, 1, 1, 0, len, &acc);
        else if (w && f->want_nz)
            block_sums(loss, w, 1.0f, 1, 0, 1, len, &acc);
        else if (w)
            block_sums(loss, w, 1.0f, 1, 0, 0, len, &acc);
        else if (has_w)
            block_sums(loss, NULL, scalar, 1, need_den, 0, len, &acc);
        else
            block_sums(loss, NULL, 1.0f, 0, need_den, 0, len, &acc);
        lanes_fold(&out->num, acc.num);
        if (f->den_sums)
            lanes_fold(&out->den, acc.den);
        if (f->want_sw)
            lanes_fold(&out->sw, acc.den);
        out->nonzero += acc.nonzero;
    }
}
