/*
 * fast_kernel.h -- the fused kernels of fast.c, written once for a real type.
 *
 * Included by fast.c twice, after defining REAL (float or double), T(name) (the suffix of
 * that type), VM(name) (vmath.h's function of that type), FABS, POW, POWI_SMALL, SPLIT_TAIL
 * (1: the focal loss's tail in a pass of its own), and the vector helper LOADV (VW elements of
 * the type as doubles, fast.c). The per-element losses are formulas.h's, the general path's
 * own functions: this file adds only the loops, the weighting and the lanes.
 */
#define R(c) ((REAL)(c))

/* ---- The losses: formulas.h's, in loops --------------------------------------------- */

#define F(name) T(name)
#include "formulas.h"
#undef F

/* ASL over a run: e = exp(-|x|) into out[] (formulas.h: the _e functions), a vectorised loop
 * (asl_binary, or asl_general when eps is below the normals, with small integer powers only)
 * from it, then asl() again for the elements whose value that loop
 * does not give (asl_loop_exact: soft labels, other powers), rare. The flags are constant in
 * each loop: a select on a loop-invariant condition stops the vectoriser. */
static inline ML__ALWAYS_INLINE void T(asl_loop)(struct T(asl_params) a, const REAL *z,
                                                 const REAL *x, int64_t len, REAL *out)
{
#define ASL_LOOP(BINARY, USE_CLIP, FOCUS)                                                          \
    do {                                                                                           \
        struct T(asl_params) c = a;                                                                \
        c.use_clip = USE_CLIP;                                                                     \
        c.focus = FOCUS;                                                                           \
        c.poison = 1;                                                                              \
        for (int64_t k = 0; k < len; k++)                                                          \
            out[k] = BINARY ? T(asl_binary)(z[k] == R(1.0), x[k], out[k], c, 1)                    \
                            : T(asl_general)(z[k], x[k], out[k], c, 1);                            \
    } while (0)
#define ASL_LOOPS(BINARY)                                                                          \
    if (a.use_clip && a.focus)                                                                     \
        ASL_LOOP(BINARY, 1, 1);                                                                    \
    else if (a.focus)                                                                              \
        ASL_LOOP(BINARY, 0, 1);                                                                    \
    else if (a.use_clip)                                                                           \
        ASL_LOOP(BINARY, 1, 0);                                                                    \
    else                                                                                           \
        ASL_LOOP(BINARY, 0, 0);
    for (int64_t k = 0; k < len; k++)
        out[k] = T(exp_abs)(x[k]);
    if (a.eps_normal) {
        a.eps_normal = 1;
        ASL_LOOPS(1)
    } else {
        a.eps_normal = 0;
        ASL_LOOPS(0)
    }
#undef ASL_LOOPS
#undef ASL_LOOP
    /* Whether any element needs asl() again. In the common case (binary loop, small powers,
     * non-finite inputs rejected) those are the labels other than 0 and 1, counted in a loop of
     * its own that vectorises (the reduction would stop the vectoriser above); otherwise
     * asl_loop_exact decides per element. The loops poison (x * 0); with non-finite inputs
     * allowed, asl() redoes the non-finite logits without. */
    const int powers_ok = !a.focus || (POWI_SMALL(a.gp) && POWI_SMALL(a.gn));
    int odd = 0;
    if (a.eps_normal && powers_ok && a.poison)
        for (int64_t k = 0; k < len; k++)
            odd += (z[k] != R(0.0)) & (z[k] != R(1.0));
    else
        odd = a.eps_normal || a.focus || !a.poison; /* some powers are not small integers */
    if (odd)
        for (int64_t k = 0; k < len; k++)
            if (!T(asl_loop_exact)(z[k], x[k], a))
                out[k] = T(asl)(z[k], x[k], a);
}

/* log1p(e): from tail[] where the loop before stored it (SPLIT_TAIL), else computed here. */
static inline ML__ALWAYS_INLINE REAL T(tail_of)(REAL e, REAL stored)
{
    return SPLIT_TAIL ? stored : VM(ml__log1p_unit)(e);
}

/* The losses whose x = -inf is NaN in their framework when nf (formulas.h: neg_inf_nan); nf
 * constant, one loop per case. out[] holds e = exp(-|x|) on entry (T(losses)); tail[] is
 * scratch of len elements. */
static inline ML__ALWAYS_INLINE void T(torch_losses)(const struct ml__fast *f, const REAL *z,
                                                     const REAL *x, const REAL *pw, REAL pws,
                                                     int64_t len, REAL *out, REAL *tail, int nf)
{
    switch (f->id) {
    case ML__TORCH_BCE:
    case ML__TFNN_WEIGHTED:
        /* pos_weight per element, one number, or (torch) None: the plain formula. */
        if (pw)
            for (int64_t k = 0; k < len; k++)
                out[k] = T(torch_weighted_xent_e)(z[k], x[k], pw[k], out[k], nf);
        else if (f->pwmode != ML__FW_NONE)
            for (int64_t k = 0; k < len; k++)
                out[k] = T(torch_weighted_xent_e)(z[k], x[k], pws, out[k], nf);
        else
            for (int64_t k = 0; k < len; k++)
                out[k] = T(torch_xent_e)(z[k], x[k], out[k], nf);
        return;
    default: {
        /* torchvision.ops.sigmoid_focal_loss, gamma 0, 1 or 2. With SPLIT_TAIL (float64), the
         * tail log1p(e) in a loop of its own (into tail[]), then the rest: three shorter chains
         * of dependent operations (exp; the tail's division and polynomial; the sigmoid's
         * division and the products) keep more elements in flight than two. Float's tail is
         * short enough that the extra pass costs more than it saves. */
        const REAL alpha = (REAL)f->alpha, g = (REAL)f->gamma;
        if (SPLIT_TAIL)
            for (int64_t k = 0; k < len; k++)
                tail[k] = VM(ml__log1p_unit)(out[k]);
        if (f->gamma == 2)
            for (int64_t k = 0; k < len; k++)
                out[k] = T(tv_focal_et)(z[k], x[k], out[k], T(tail_of)(out[k], tail[k]), 2, g, alpha, nf);
        else if (f->gamma == 1)
            for (int64_t k = 0; k < len; k++)
                out[k] = T(tv_focal_et)(z[k], x[k], out[k], T(tail_of)(out[k], tail[k]), 1, g, alpha, nf);
        else
            for (int64_t k = 0; k < len; k++)
                out[k] = T(tv_focal_et)(z[k], x[k], out[k], T(tail_of)(out[k], tail[k]), 0, g, alpha, nf);
        return;
    }
    }
}

/* The per-element losses of one contiguous run into out[]: one loop per formula, with no
 * branch inside for the vectoriser. The sigmoid family first fills out[] with e = exp(-|x|) in a
 * loop of its own (formulas.h, the _e functions). */
static inline ML__ALWAYS_INLINE void T(losses)(const struct ml__fast *f, const REAL *z,
                                               const REAL *x, const REAL *pw, REAL pws, int64_t len,
                                               REAL *out, REAL *tail)
{
    switch (f->id) {
    case ML__TORCH_BCE:
    case ML__TFNN_WEIGHTED:
    case ML__TV_FOCAL:
        for (int64_t k = 0; k < len; k++)
            out[k] = T(exp_abs)(x[k]);
        if (f->allow_non_finite)
            T(torch_losses)(f, z, x, pw, pws, len, out, tail, 1);
        else
            T(torch_losses)(f, z, x, pw, pws, len, out, tail, 0);
        return;
    case ML__ASL: {
        const struct T(asl_params) a =
            T(asl_params_of)(f->clip, f->epsilon, f->gamma_pos, f->gamma_neg, f->allow_non_finite);
        T(asl_loop)(a, z, x, len, out);
    }
        return;
    case ML__TF_MSE:
        for (int64_t k = 0; k < len; k++)
            out[k] = T(squared_error)(z[k], x[k]);
        return;
    case ML__TF_ABSDIFF:
        for (int64_t k = 0; k < len; k++)
            out[k] = T(absolute_difference)(z[k], x[k]);
        return;
    case ML__TF_HUBER: {
        const REAL delta = (REAL)f->delta;
        for (int64_t k = 0; k < len; k++)
            out[k] = T(huber)(z[k], x[k], delta);
        return;
    }
    case ML__TF_HINGE:
        for (int64_t k = 0; k < len; k++)
            out[k] = T(hinge)(z[k], x[k]);
        return;
    case ML__TF_LOG_LOSS: {
        const REAL eps = (REAL)f->epsilon;
        for (int64_t k = 0; k < len; k++)
            out[k] = T(log_loss)(z[k], x[k], eps);
        return;
    }
    default:
        /* TF v1 sigmoid_cross_entropy (smoothing only when label_smoothing > 0) and
         * tf.nn.sigmoid_cross_entropy_with_logits. */
        for (int64_t k = 0; k < len; k++)
            out[k] = T(exp_abs)(x[k]);
        if (f->id == ML__TF_SIGMOID_CE && (REAL)f->label_smoothing > 0) {
            const REAL ls = (REAL)f->label_smoothing;
            for (int64_t k = 0; k < len; k++)
                out[k] = T(sigmoid_xent_e)(T(smooth_binary)(z[k], ls), x[k], out[k]);
        } else {
            for (int64_t k = 0; k < len; k++)
                out[k] = T(sigmoid_xent_e)(z[k], x[k], out[k]);
        }
        return;
    }
}

/* ---- Weighting and the lanes ---------------------------------------------------------- */

/*
 * Adds loss[k] * w[k] of a block of len elements into lanes k mod 16, w[k] into den (when
 * need_den) and counts the non-zero w[k] (when need_nz). w NULL: the constant `scalar` for
 * every w[k] (has_w 0: no weights, so no multiplication either). Called with constant flags,
 * so that each combination is a loop of its own without dead work.
 */
static inline ALWAYS_INLINE void T(block_sums)(const REAL *loss, const REAL *w, REAL scalar,
                                               int has_w, int need_den, int need_nz, int64_t len,
                                               struct block_acc *a)
{
    int64_t k = 0;
    memset(a, 0, sizeof(*a));
#if defined(__GNUC__)
    /* Lane j * VW + i of the 16 is element i of vector j: the order of the scalar loop. */
    vd n[NV], d[NV];
    vl nz[NV];
    memset(n, 0, sizeof(n));
    memset(d, 0, sizeof(d));
    memset(nz, 0, sizeof(nz));
    const vd sv = (vd){0} + (double)scalar;
    for (; k + ML__LANES <= len; k += ML__LANES)
        for (int j = 0; j < NV; j++) {
            vd l = LOADV(loss + k + j * VW);
            if (w) {
                vd wv = LOADV(w + k + j * VW);
                n[j] += l * wv;
                if (need_den)
                    d[j] += wv;
                if (need_nz)
                    nz[j] -= (vl)(wv != 0); /* the widened weight is 0 exactly when w is */
            } else {
                n[j] += has_w ? l * sv : l;
                if (need_den)
                    d[j] += sv;
            }
        }
    memcpy(a->num, n, sizeof(n));
    memcpy(a->den, d, sizeof(d));
    for (int j = 0; j < NV; j++)
        for (int i = 0; i < VW; i++)
            a->nonzero += nz[j][i];
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

/* Elements [b0, b0 + len) of a tensor laid out as `mode` over the rows x cols: a pointer to
 * a contiguous stream (into v, or into buf, where row and class values are laid out), or
 * NULL with the one value in *scalar (ML__FW_NONE: `none`). */
static inline ALWAYS_INLINE const REAL *T(stream)(enum ml__fast_weights mode, const REAL *v,
                                                  REAL none, int64_t cols, int64_t b0, int64_t len,
                                                  REAL *buf, REAL *scalar)
{
    *scalar = none;
    switch (mode) {
    case ML__FW_SCALAR:
        *scalar = v[0];
        return NULL;
    case ML__FW_DENSE:
        return v + b0;
    case ML__FW_ROW:
    case ML__FW_COL:
        for (int64_t i = b0; i < b0 + len;) {
            int64_t row = i / cols, col = i - row * cols;
            int64_t seg = cols - col;
            if (seg > b0 + len - i)
                seg = b0 + len - i;
            if (mode == ML__FW_COL)
                memcpy(buf + (i - b0), v + col, (size_t)seg * sizeof(REAL));
            else
                for (int64_t k = 0; k < seg; k++)
                    buf[i - b0 + k] = v[row];
            i += seg;
        }
        return buf;
    default:
        return NULL;
    }
}

static void T(run)(const struct ml__fast *f, int64_t begin, int64_t end, struct ml__fast_sums *out)
{
    REAL loss[BLOCK], wbuf[BLOCK], pwbuf[BLOCK], tail[BLOCK];
    struct block_acc acc;
    memset(out, 0, sizeof(*out));
    /* pos_weight given as a number: a one-element tensor of it. */
    const REAL pw_number = (REAL)f->pw_value;
    const REAL *pwv = f->pw ? (const REAL *)f->pw : &pw_number;
    for (int64_t b0 = begin; b0 < end; b0 += BLOCK) {
        int64_t len = end - b0 < BLOCK ? end - b0 : BLOCK;
        REAL pws;
        const REAL *pw = T(stream)(f->pwmode, pwv, R(1.0), f->cols, b0, len, pwbuf, &pws);
        T(losses)(f, (const REAL *)f->z + b0, (const REAL *)f->x + b0, pw, pws, len, loss, tail);
        /* The weights of the block as one stream (or one constant). */
        REAL scalar;
        const REAL *w =
            T(stream)(f->wmode, (const REAL *)f->w, R(1.0), f->cols, b0, len, wbuf, &scalar);
        const int has_w = f->wmode != ML__FW_NONE, need_den = f->den_sums || f->want_sw;
        if (w && need_den && f->want_nz)
            T(block_sums)(loss, w, R(1.0), 1, 1, 1, len, &acc);
        else if (w && need_den)
            T(block_sums)(loss, w, R(1.0), 1, 1, 0, len, &acc);
        else if (w && f->want_nz)
            T(block_sums)(loss, w, R(1.0), 1, 0, 1, len, &acc);
        else if (w)
            T(block_sums)(loss, w, R(1.0), 1, 0, 0, len, &acc);
        else if (has_w)
            T(block_sums)(loss, NULL, scalar, 1, need_den, 0, len, &acc);
        else
            T(block_sums)(loss, NULL, R(1.0), 0, need_den, 0, len, &acc);
        lanes_fold(&out->num, acc.num);
        if (f->den_sums)
            lanes_fold(&out->den, acc.den);
        if (f->want_sw)
            lanes_fold(&out->sw, acc.den);
        out->nonzero += acc.nonzero;
    }
}

#undef R
