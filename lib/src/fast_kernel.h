/*
 * fast_kernel.h -- the fused kernels of fast.c, written once for a real type.
 *
 * Included by fast.c twice, after defining REAL (float or double), T(name) (the suffix of
 * that type), VM(name) (vmath.h's function of that type), FABS, POW, POWI_SMALL,
 * NORMAL_MIN, and the vector helpers LOADV, RAWV, WIDEN, NZV (fast.c says what they are).
 * The formulas are kernels.h's, operation for operation, in the same order.
 */
#define R(c) ((REAL)(c))

/* ---- The losses, as kernels.h writes them in REAL (same operations, same order) ------ */

static inline ALWAYS_INLINE REAL T(tf_sce)(REAL z, REAL x)
{
    REAL relu = x >= R(0.0) ? x : R(0.0);
    REAL ax = FABS(x);
    return relu - x * z + VM(ml__softplus_neg)(ax);
}

/* torch BCE-with-logits from e = exp(-|x|) and log_weight lw (1 without pos_weight). */
static inline ALWAYS_INLINE REAL T(torch_bce_e)(REAL z, REAL x, REAL e, REAL lw)
{
    REAL m = x < R(0.0) ? x : R(0.0);
    REAL log_sig = m - VM(ml__log1p_unit)(e);
    return (R(1.0) - z) * x - lw * log_sig;
}

/* torchvision.ops.sigmoid_focal_loss for gamma 0, 1 or 2; alpha < 0 for none. exp(-|x|) is
 * shared by the sigmoid and the softplus. */
static inline ALWAYS_INLINE REAL T(tv_focal)(REAL z, REAL x, int gamma, REAL alpha)
{
    REAL ax = FABS(x);
    REAL e = VM(ml__exp_neg)(ax);
    REAL p = VM(ml__sigmoid_e)(x, e);
    REAL ce = T(torch_bce_e)(z, x, e, R(1.0));
    REAL p_t = p * z + (R(1.0) - p) * (R(1.0) - z);
    REAL b = R(1.0) - p_t;
    REAL f = gamma == 2 ? b * b : gamma == 1 ? b : R(1.0);
    REAL loss = ce * f;
    return alpha >= 0 ? (alpha * z + (R(1.0) - alpha) * (R(1.0) - z)) * loss : loss;
}

/* ASL (Alibaba-MIIL): the log-likelihood term l; its focusing power (1 - pt)^g is applied by
 * the caller. The parameters come by value: read through f, they could alias the output
 * array, and the vectoriser would give up. */
struct T(asl_terms) {
    REAL l, pt;
};

static inline ALWAYS_INLINE struct T(asl_terms)
    T(asl_l)(REAL z, REAL x, int use_clip, REAL clip, REAL eps)
{
    REAL xs_pos = VM(ml__sigmoid)(x);
    REAL xs_neg = R(1.0) - xs_pos;
    if (use_clip) {
        xs_neg = xs_neg + clip;
        xs_neg = xs_neg > R(1.0) ? R(1.0) : xs_neg;
    }
    REAL lp = z * VM(ml__log)(xs_pos > eps ? xs_pos : eps);
    REAL ln = (R(1.0) - z) * VM(ml__log)(xs_neg > eps ? xs_neg : eps);
    struct T(asl_terms) t = {lp + ln, xs_pos * z + xs_neg * (R(1.0) - z)};
    return t;
}

/* ASL_LOOP once for each (focus, clip > 0), each loop with constant flags: a select on a
 * loop-invariant condition stops the vectoriser. */
#define ASL_LOOPS(focus, clipped)                                                                  \
    if ((focus) && (clipped))                                                                      \
        ASL_LOOP(1, 1)                                                                             \
    else if (focus)                                                                                \
        ASL_LOOP(0, 1)                                                                             \
    else if (clipped)                                                                              \
        ASL_LOOP(1, 0)                                                                             \
    else                                                                                           \
        ASL_LOOP(0, 0)

/*
 * ASL for a run, assuming binary labels: with z in {0, 1}, z log(a) + (1 - z) log(b) is
 * log(z ? a : b) bit for bit (the other term is a signed zero: both logs are finite, since
 * eps keeps their arguments positive normal numbers), so one log per element instead of
 * two; pt and g are selects for the same reason. Returns how many elements break the
 * assumption (a label not 0 or 1, or a focusing power not a small integer): the caller
 * recomputes those with the general formula (asl_fixup).
 */
static inline ALWAYS_INLINE int T(asl_binary)(const struct ml__fast *f, const REAL *z,
                                              const REAL *x, int64_t len, REAL *out)
{
    const REAL gp = (REAL)f->gamma_pos, gn = (REAL)f->gamma_neg, clip = (REAL)f->clip,
               eps = (REAL)f->epsilon;
#define ASL_LOOP(use_clip, focus)                                                                  \
    for (int64_t k = 0; k < len; k++) {                                                            \
        REAL p = VM(ml__sigmoid)(x[k]);                                                            \
        REAL xs_neg = R(1.0) - p;                                                                  \
        if (use_clip) {                                                                            \
            xs_neg = xs_neg + clip;                                                                \
            xs_neg = xs_neg > R(1.0) ? R(1.0) : xs_neg;                                            \
        }                                                                                          \
        int pos = z[k] == R(1.0);                                                                  \
        REAL arg = pos ? (p > eps ? p : eps) : (xs_neg > eps ? xs_neg : eps);                      \
        REAL l = VM(ml__log_normal)(arg);                                                          \
        REAL g = pos ? gp : gn;                                                                    \
        l = focus ? l * VM(ml__powi4)(R(1.0) - (pos ? p : xs_neg), g) : l;                         \
        out[k] = -l + x[k] * R(0.0);                                                               \
    }
    ASL_LOOPS(f->asl_focus, clip > 0)
#undef ASL_LOOP
    /* A loop of its own: this reduction would stop the vectoriser above. */
    int odd = 0;
    const int small_powers = !f->asl_focus || (POWI_SMALL(gp) && POWI_SMALL(gn));
    for (int64_t k = 0; k < len; k++)
        odd += (z[k] != R(0.0) && z[k] != R(1.0)) | !small_powers;
    return odd;
}

/* ASL by its general formula (asl_l), for soft labels or an epsilon below the normals. */
static inline ALWAYS_INLINE int T(asl_general)(const struct ml__fast *f, const REAL *z,
                                               const REAL *x, int64_t len, REAL *out)
{
    const REAL gp = (REAL)f->gamma_pos, gn = (REAL)f->gamma_neg, clip = (REAL)f->clip,
               eps = (REAL)f->epsilon;
#define ASL_LOOP(use_clip, focus)                                                                  \
    for (int64_t k = 0; k < len; k++) {                                                            \
        struct T(asl_terms) t = T(asl_l)(z[k], x[k], use_clip, clip, eps);                         \
        REAL g = gp * z[k] + gn * (R(1.0) - z[k]);                                                 \
        REAL l = focus ? t.l * VM(ml__powi4)(R(1.0) - t.pt, g) : t.l;                              \
        out[k] = -l + x[k] * R(0.0);                                                               \
    }
    ASL_LOOPS(f->asl_focus, clip > 0)
#undef ASL_LOOP
    /* The elements that need powf (a loop of its own: this reduction would stop the
     * vectoriser above). */
    int odd = 0;
    if (f->asl_focus)
        for (int64_t k = 0; k < len; k++)
            odd += !POWI_SMALL(gp * z[k] + gn * (R(1.0) - z[k]));
    return odd;
}

static inline ALWAYS_INLINE int T(asl_losses)(const struct ml__fast *f, const REAL *z,
                                              const REAL *x, int64_t len, REAL *out)
{
    if ((REAL)f->epsilon >= NORMAL_MIN)
        return T(asl_binary)(f, z, x, len, out);
    return T(asl_general)(f, z, x, len, out);
}

/* The per-element losses of one contiguous run into out[]: one loop per formula, with no
 * branch inside for the vectoriser. Non-zero when some ASL elements need the general formula
 * (asl_fixup). */
static inline ALWAYS_INLINE int T(losses)(const struct ml__fast *f, const REAL *z, const REAL *x,
                                          const REAL *pw, REAL pws, int64_t len, REAL *out)
{
    switch (f->id) {
    case ML__TORCH_BCE:
        /* log_weight = 1 + (pos_weight - 1) z, or 1 for pos_weight=None (ATen Loss.cpp). */
        if (pw)
            for (int64_t k = 0; k < len; k++) {
                REAL lw = R(1.0) + (pw[k] - R(1.0)) * z[k];
                out[k] = T(torch_bce_e)(z[k], x[k], VM(ml__exp_neg)(FABS(x[k])), lw);
            }
        else if (f->pwmode != ML__FW_NONE)
            for (int64_t k = 0; k < len; k++) {
                REAL lw = R(1.0) + (pws - R(1.0)) * z[k];
                out[k] = T(torch_bce_e)(z[k], x[k], VM(ml__exp_neg)(FABS(x[k])), lw);
            }
        else
            for (int64_t k = 0; k < len; k++)
                out[k] = T(torch_bce_e)(z[k], x[k], VM(ml__exp_neg)(FABS(x[k])), R(1.0));
        return 0;
    case ML__TFNN_WEIGHTED:
        /* nn_impl.weighted_cross_entropy_with_logits, as kernels.h writes it. */
        for (int64_t k = 0; k < len; k++) {
            REAL q = pw ? pw[k] : pws;
            REAL l = R(1.0) + (q - R(1.0)) * z[k];
            REAL neg = -x[k] > R(0.0) ? -x[k] : R(0.0);
            REAL sp = VM(ml__softplus_neg)(FABS(x[k]));
            out[k] = (R(1.0) - z[k]) * x[k] + l * (sp + neg);
        }
        return 0;
    case ML__TV_FOCAL: {
        const REAL alpha = (REAL)f->alpha;
        if (f->gamma == 2)
            for (int64_t k = 0; k < len; k++)
                out[k] = T(tv_focal)(z[k], x[k], 2, alpha);
        else if (f->gamma == 1)
            for (int64_t k = 0; k < len; k++)
                out[k] = T(tv_focal)(z[k], x[k], 1, alpha);
        else
            for (int64_t k = 0; k < len; k++)
                out[k] = T(tv_focal)(z[k], x[k], 0, alpha);
        return 0;
    }
    case ML__ASL:
        return T(asl_losses)(f, z, x, len, out);
    /* The TF v1 pointwise losses of predictions, as kernels.h writes them. */
    case ML__TF_MSE:
        for (int64_t k = 0; k < len; k++) {
            REAL d = x[k] - z[k];
            out[k] = d * d;
        }
        return 0;
    case ML__TF_ABSDIFF:
        for (int64_t k = 0; k < len; k++)
            out[k] = FABS(x[k] - z[k]);
        return 0;
    case ML__TF_HUBER: {
        const REAL delta = (REAL)f->delta;
        for (int64_t k = 0; k < len; k++) {
            REAL a = FABS(x[k] - z[k]);
            REAL q = a < delta ? a : delta;
            out[k] = R(0.5) * (q * q) + delta * (a - q);
        }
        return 0;
    }
    case ML__TF_HINGE:
        /* relu drops a NaN: x * 0 + z * 0 (NaN for a non-finite input) puts it back. */
        for (int64_t k = 0; k < len; k++) {
            REAL m = R(1.0) - (R(2.0) * z[k] - R(1.0)) * x[k];
            out[k] = (m > R(0.0) ? m : R(0.0)) + (x[k] * R(0.0) + z[k] * R(0.0));
        }
        return 0;
    case ML__TF_LOG_LOSS: {
        const REAL eps = (REAL)f->epsilon;
        for (int64_t k = 0; k < len; k++)
            out[k] = -(z[k] * VM(ml__log)(x[k] + eps)) -
                     (R(1.0) - z[k]) * VM(ml__log)(R(1.0) - x[k] + eps);
        return 0;
    }
    default:
        if (f->id == ML__TF_SIGMOID_CE && (REAL)f->label_smoothing > 0) {
            const REAL ls = (REAL)f->label_smoothing;
            for (int64_t k = 0; k < len; k++)
                out[k] = T(tf_sce)(z[k] * (R(1.0) - ls) + R(0.5) * ls, x[k]);
        } else {
            for (int64_t k = 0; k < len; k++)
                out[k] = T(tf_sce)(z[k], x[k]);
        }
        return 0;
    }
}

/* The ASL elements whose focusing power is not a small integer, again with powf (what
 * kernels.h does for them). Rare: soft labels or non-integer gammas. */
/* The ASL elements the vectorised loops leave (asl_binary, asl_general say which), again by
 * the general formula with powf where the power is not a small integer: what kernels.h
 * does. Rare: soft labels, non-integer gammas. */
static void T(asl_fixup)(const struct ml__fast *f, const REAL *z, const REAL *x, int64_t len,
                         REAL *out)
{
    const REAL gp = (REAL)f->gamma_pos, gn = (REAL)f->gamma_neg;
    const int binary_loop = (REAL)f->epsilon >= NORMAL_MIN;
    for (int64_t k = 0; k < len; k++) {
        REAL g = gp * z[k] + gn * (R(1.0) - z[k]);
        int small = !f->asl_focus || POWI_SMALL(g);
        if (small && (!binary_loop || z[k] == R(0.0) || z[k] == R(1.0)))
            continue; /* the loop's value is the general one */
        struct T(asl_terms) t =
            T(asl_l)(z[k], x[k], (REAL)f->clip > 0, (REAL)f->clip, (REAL)f->epsilon);
        REAL l = t.l;
        if (f->asl_focus)
            l = l * (small ? VM(ml__powi4)(R(1.0) - t.pt, g) : POW(R(1.0) - t.pt, g));
        out[k] = -l + x[k] * R(0.0);
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
    v8d n0 = {0}, n1 = {0}, d0 = {0}, d1 = {0};
    NZV nz = {0};
    const v8d sv = {scalar, scalar, scalar, scalar, scalar, scalar, scalar, scalar};
    for (; k + ML__LANES <= len; k += ML__LANES) {
        v8d l0 = WIDEN(LOADV(loss + k)), l1 = WIDEN(LOADV(loss + k + 8));
        if (w) {
            RAWV wf0 = LOADV(w + k), wf1 = LOADV(w + k + 8);
            v8d w0 = WIDEN(wf0), w1 = WIDEN(wf1);
            n0 += l0 * w0;
            n1 += l1 * w1;
            if (need_den) {
                d0 += w0;
                d1 += w1;
            }
            if (need_nz)
                nz -= (NZV)(wf0 != 0) + (NZV)(wf1 != 0);
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
    REAL loss[BLOCK], wbuf[BLOCK], pwbuf[BLOCK];
    struct block_acc acc;
    memset(out, 0, sizeof(*out));
    /* pos_weight given as a number: a one-element tensor of it. */
    const REAL pw_number = (REAL)f->pw_value;
    const REAL *pwv = f->pw ? (const REAL *)f->pw : &pw_number;
    for (int64_t b0 = begin; b0 < end; b0 += BLOCK) {
        int64_t len = end - b0 < BLOCK ? end - b0 : BLOCK;
        REAL pws;
        const REAL *pw = T(stream)(f->pwmode, pwv, R(1.0), f->cols, b0, len, pwbuf, &pws);
        if (T(losses)(f, (const REAL *)f->z + b0, (const REAL *)f->x + b0, pw, pws, len, loss))
            T(asl_fixup)(f, (const REAL *)f->z + b0, (const REAL *)f->x + b0, len, loss);
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

#undef ASL_LOOPS
#undef R
