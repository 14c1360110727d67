/*
 * formulas.h -- every pointwise loss formula, written once for a real type.
 *
 * Included by kernels.h (the general path: one element at a time, any parameters) and by
 * fast_kernel.h (the fused kernels: loops over blocks that the compiler vectorises), after
 * defining REAL (float or double), R(c) (a constant of that type), F(name) (a name with the
 * type's suffix), VM(name) (vmath.h's function of that type), FABS and POW. Both paths call
 * these functions and nothing else to get an element's loss, so they cannot disagree on any
 * element, NaN included; the fused path adds only the loop, the weighting and the lanes.
 * The functions are branch-free (selects): a select on a parameter that the caller holds
 * constant folds away when the call is inlined into a loop.
 *
 * The frameworks' formulas are the reference (TensorFlow nn_impl.py and
 * losses_impl.py, ATen Loss.cpp, torchvision focal_loss.py, Alibaba-MIIL ASL losses.py), but
 * each is evaluated without the cancellations of its literal float transcription, so the
 * result is within a few ulp of the exact value of the formula where the literal one loses
 * digits (tests/test_accuracy.c measures it against high-precision values):
 *  - the sigmoid family as a softplus(x) + b softplus(-x), a sum of non-negative terms,
 *    rather than max(x, 0) - x z + log1p(exp(-|x|)) or (1 - z) x - log_sigmoid(x), which
 *    subtract numbers of the size of |x| to leave a loss far smaller than |x|;
 *  - sigmoid(x) and 1 - sigmoid(x) both from e = exp(-|x|): the smaller one is e / (1 + e),
 *    correct to its last bit, the larger one 1 minus it; a log of a probability near 1 is
 *    taken as log1p of minus its (accurate) complement.
 */

/* ---- Building blocks ------------------------------------------------------------------- */

/* exp(-|x|), from which the sigmoid family's tail log(1 + exp(-|x|)) (ml__log1p_unit of it: within
 * 2 ulp, vmath.h) and the sigmoid pair below are computed. */
static inline ML__ALWAYS_INLINE REAL F(exp_abs)(REAL x)
{
    return VM(ml__exp_neg)(FABS(x));
}

/* sigmoid(x) and 1 - sigmoid(x), each to within an ulp of its own size, from e = exp(-|x|). */
struct F(sigmoid_pair) {
    REAL p, q; /* p = sigmoid(x), q = 1 - p */
};

static inline ML__ALWAYS_INLINE struct F(sigmoid_pair) F(sigmoid_pair_e)(REAL x, REAL e)
{
    REAL small = e / (R(1.0) + e); /* sigmoid(-|x|) <= 1/2 */
    REAL big = R(1.0) - small;     /* >= 1/2: 1 - small loses nothing that matters */
    struct F(sigmoid_pair) s = {x >= R(0.0) ? big : small, x >= R(0.0) ? small : big};
    return s;
}

/*
 * Sigmoid cross-entropy: a softplus(x) + b softplus(-x) with a = 1 - z, b = z, that is
 * (1 - z) max(x, 0) + z max(-x, 0) + log1p(exp(-|x|)); `tail` is that last term. Every term
 * is non-negative for labels in [0, 1], so nothing cancels (TF's max(x,0) - x z loses an ulp
 * of |x| when the loss is small). NaN and infinity behave as in TF: x = +-inf with the label
 * that makes the loss finite gives inf * 0 = NaN, as inf - inf does there.
 */
static inline ML__ALWAYS_INLINE REAL F(sigmoid_xent_t)(REAL z, REAL x, REAL tail)
{
    return FABS(x) * (x >= R(0.0) ? R(1.0) - z : z) + tail;
}

/* The sigmoid family from e = exp(-|x|) given (the _e functions): the fused loops compute e in a
 * loop of its own, then the rest. Each half is a shorter chain of dependent operations, so the
 * processor keeps more elements in flight than in one loop that does both; the operations, and
 * the bits, are those of the function without _e, which is the same with e computed in place. */
static inline ML__ALWAYS_INLINE REAL F(sigmoid_xent_e)(REAL z, REAL x, REAL e)
{
    return F(sigmoid_xent_t)(z, x, VM(ml__log1p_unit)(e));
}

static inline ML__ALWAYS_INLINE REAL F(sigmoid_xent)(REAL z, REAL x)
{
    return F(sigmoid_xent_e)(z, x, F(exp_abs)(x));
}

/*
 * With a positive-class weight q: -(q z log sigmoid(x) + (1 - z) log(1 - sigmoid(x))), i.e.
 * a softplus(x) + b softplus(-x) with a = 1 - z, b = q z. ATen's (1 - z) x - lw log_sigmoid(x)
 * with lw = 1 + (q - 1) z, and TF's weighted_cross_entropy_with_logits, are this formula.
 */
static inline ML__ALWAYS_INLINE REAL F(weighted_xent_t)(REAL z, REAL x, REAL q, REAL tail)
{
    /* Each weight times its own softplus: an infinite q meets a finite softplus (torch: +inf),
     * never a tail that underflowed to 0. */
    REAL a = R(1.0) - z, b = q * z;
    REAL relu = x > R(0.0) ? x : R(0.0), nrelu = x < R(0.0) ? -x : R(0.0);
    return a * (relu + tail) + b * (nrelu + tail);
}

static inline ML__ALWAYS_INLINE REAL F(weighted_xent_e)(REAL z, REAL x, REAL q, REAL e)
{
    return F(weighted_xent_t)(z, x, q, VM(ml__log1p_unit)(e));
}

static inline ML__ALWAYS_INLINE REAL F(weighted_xent)(REAL z, REAL x, REAL q)
{
    return F(weighted_xent_e)(z, x, q, F(exp_abs)(x));
}

/*
 * torch's binary_cross_entropy_with_logits (1.13: (1 - z) x + m + log(e^-m + e^(-x-m)),
 * m = max(-x, 0); later (1 - z) x - lw log_sigmoid(x)) and TF's weighted_cross_entropy_with_logits
 * give NaN at x = -inf whatever the label (-inf + inf), where the softplus form gives the
 * limit. Requests that allow non-finite inputs get the frameworks' NaN (`keep`, held
 * constant by the caller); others have no infinite input to meet.
 */
static inline ML__ALWAYS_INLINE REAL F(neg_inf_nan)(REAL x, int keep)
{
    return keep && x < R(0.0) ? x - x : R(0.0);
}

/* torch binary_cross_entropy_with_logits without and with pos_weight (and TF's weighted
 * cross-entropy), NaN at x = -inf when nf (neg_inf_nan). */
static inline ML__ALWAYS_INLINE REAL F(torch_xent_e)(REAL z, REAL x, REAL e, int nf)
{
    return F(sigmoid_xent_e)(z, x, e) + F(neg_inf_nan)(x, nf);
}

static inline ML__ALWAYS_INLINE REAL F(torch_xent)(REAL z, REAL x, int nf)
{
    return F(torch_xent_e)(z, x, F(exp_abs)(x), nf);
}

static inline ML__ALWAYS_INLINE REAL F(torch_weighted_xent_e)(REAL z, REAL x, REAL q, REAL e,
                                                            int nf)
{
    return F(weighted_xent_e)(z, x, q, e) + F(neg_inf_nan)(x, nf);
}

static inline ML__ALWAYS_INLINE REAL F(torch_weighted_xent)(REAL z, REAL x, REAL q, int nf)
{
    return F(torch_weighted_xent_e)(z, x, q, F(exp_abs)(x), nf);
}

/* TF label smoothing of binary labels (losses_impl.sigmoid_cross_entropy, Keras BCE). */
static inline ML__ALWAYS_INLINE REAL F(smooth_binary)(REAL y, REAL ls)
{
    return y * (R(1.0) - ls) + R(0.5) * ls;
}

/* ---- torchvision.ops.sigmoid_focal_loss ------------------------------------------------- */

/* 1 - p_t of the focal losses (torchvision, Keras), p_t = p z + (1 - p)(1 - z): as
 * z (1 - p) + (1 - z) p from the accurate pair, with no cancellation (for binary labels it is
 * one of the pair, exactly). */
static inline ML__ALWAYS_INLINE REAL F(focal_base)(REAL z, struct F(sigmoid_pair) s)
{
    return z * s.q + (R(1.0) - z) * s.p;
}

/*
 * ce (1 - p_t)^gamma, times alpha z + (1 - alpha)(1 - z) when alpha >= 0 (torchvision applies
 * any alpha >= 0 as written, and none below 0). gk selects the power: 0, 1, 2 by
 * multiplication, -1 for POW(b, gamma); callers pass a constant, and nf as to neg_inf_nan
 * (the torch cross-entropy inside). tail = log1p(e), e = exp(-|x|) (ml__log1p_unit).
 */
static inline ML__ALWAYS_INLINE REAL F(tv_focal_et)(REAL z, REAL x, REAL e, REAL tail, int gk,
                                                    REAL gamma, REAL alpha, int nf)
{
    struct F(sigmoid_pair) s = F(sigmoid_pair_e)(x, e);
    REAL ce = F(sigmoid_xent_t)(z, x, tail) + F(neg_inf_nan)(x, nf);
    REAL b = F(focal_base)(z, s);
    REAL f = gk == 2 ? b * b : gk == 1 ? b : gk == 0 ? R(1.0) : POW(b, gamma);
    REAL loss = ce * f;
    return alpha >= R(0.0) ? (alpha * z + (R(1.0) - alpha) * (R(1.0) - z)) * loss : loss;
}

/* The same from e alone; tv_focal_et takes the tail too, which the fused loop computes in a
 * loop of its own (fast_kernel.h). */
static inline ML__ALWAYS_INLINE REAL F(tv_focal_e)(REAL z, REAL x, REAL e, int gk, REAL gamma,
                                                   REAL alpha, int nf)
{
    return F(tv_focal_et)(z, x, e, VM(ml__log1p_unit)(e), gk, gamma, alpha, nf);
}

static inline ML__ALWAYS_INLINE REAL F(tv_focal)(REAL z, REAL x, int gk, REAL gamma, REAL alpha,
                                                 int nf)
{
    return F(tv_focal_e)(z, x, F(exp_abs)(x), gk, gamma, alpha, nf);
}

/* ---- ASL (Alibaba-MIIL AsymmetricLoss.forward) ------------------------------------------ */

/*
 * ASL per element: -(z log(max(xs_pos, eps)) + (1 - z) log(max(xs_neg, eps))) (1 - pt)^g with
 * xs_pos = sigmoid(x), xs_neg = min(1 - xs_pos + clip, 1) (clip > 0), pt = z xs_pos +
 * (1 - z) xs_neg, g = gamma_pos z + gamma_neg (1 - z).
 *
 * Each log argument u comes with its complement t = 1 - u, both accurate: u when it is at most
 * 1/2 (its log is then taken directly), t when u is above 1/2 (the log is then log1p(-t), as
 * log(w) + c / w for w = 1 - t and the part c that the rounding of w lost). t is also the base
 * of the focusing power, 1 - pt. When eps is not a normal number (0, or below the normals),
 * u itself may underflow: the log of an unclipped side is then taken as the log-sigmoid,
 * -(max(-+x, 0) + log1p(exp(-|x|))), which does not. The caller holds the flags constant.
 */
struct F(asl_side) {
    REAL u, t; /* the probability whose log is taken, and 1 - u */
    REAL ls;   /* log(u) when eps is not normal (used only where u is a sigmoid), else 0 */
};

/* ASL's parameters in this type; by value, so that nothing read through a pointer can alias
 * the output array of a loop (the vectoriser would give up). */
struct F(asl_params) {
    REAL clip, eps, leps; /* leps = log(eps) */
    REAL gp, gn;          /* gamma_pos, gamma_neg */
    REAL gpf[3], gnf[3];  /* their floors for ml__powi4_unit (0 where bit k is set; else 1) */
    int use_clip;         /* clip > 0 */
    int eps_normal;       /* asl_eps_normal(eps) */
    int focus;            /* gamma_pos > 0 or gamma_neg > 0 */
    int poison;           /* non-finite inputs are rejected: asl_poison adds x * 0 */
};

/* The positive side (xs_pos) and the negative side (xs_neg, clipped when use_clip), from the
 * sigmoid pair of x and, when eps is not normal, tail = log1p(exp(-|x|)). */
static inline ML__ALWAYS_INLINE struct F(asl_side)
    F(asl_pos)(struct F(sigmoid_pair) s, REAL x, REAL tail, struct F(asl_params) a)
{
    REAL m = x < R(0.0) ? -x : R(0.0);
    struct F(asl_side) r = {s.p, s.q, a.eps_normal ? R(0.0) : -(m + tail)};
    return r;
}

static inline ML__ALWAYS_INLINE struct F(asl_side)
    F(asl_neg)(struct F(sigmoid_pair) s, REAL x, REAL tail, struct F(asl_params) a)
{
    REAL m = x > R(0.0) ? x : R(0.0);
    struct F(asl_side) r = {s.q, s.p, a.eps_normal ? R(0.0) : -(m + tail)};
    if (a.use_clip) {
        REAL u = s.q + a.clip, t = s.p - a.clip;
        r.u = u < R(1.0) ? u : R(1.0);
        r.t = t > R(0.0) ? t : R(0.0);
    }
    return r;
}

/*
 * log(max(u, eps)) from the side (u, t). eps_normal: eps is a positive normal number, so that
 * the log's argument is one (the vmath log of normal numbers, no special cases); otherwise the
 * full log, or the side's log-sigmoid (pure: the side is not clipped). leps is log(eps).
 */
static inline ML__ALWAYS_INLINE REAL F(asl_log)(struct F(asl_side) s, struct F(asl_params) a,
                                                int pure)
{
    int direct = s.u <= R(0.5);
    REAL w = direct ? (s.u > a.eps ? s.u : a.eps) : R(1.0) - s.t;
    REAL c = direct ? R(0.0) : (R(1.0) - w) - s.t; /* exact: -t = (w - 1) + c */
    /* c (2 - w) is c / w to within (1 - w)^2 relative: c matters only for w near 1. */
    REAL l = VM(ml__fma)(c, R(2.0) - w, a.eps_normal ? VM(ml__log_normal)(w) : VM(ml__log)(w));
    if (!a.eps_normal && pure)
        l = direct ? s.ls : l;
    return l > a.leps ? l : a.leps;
}

/* The focusing power b^g: small integer powers by multiplication (vmath.h), others by POW
 * unless small_only (a vectorised loop, whose other elements are redone by asl()). */
static inline ML__ALWAYS_INLINE REAL F(asl_power)(REAL b, REAL g, int small_only)
{
    return small_only || POWI_SMALL(g) ? VM(ml__powi4)(b, g) : POW(b, g);
}

/* The sigmoid pair and the tail of x from e = exp(-|x|) (the tail only where asl_log needs
 * it). */
static inline ML__ALWAYS_INLINE struct F(sigmoid_pair)
    F(asl_sigmoid)(REAL x, REAL e, struct F(asl_params) a, REAL *tail)
{
    *tail = a.eps_normal ? R(0.0) : VM(ml__log1p_unit)(e);
    return F(sigmoid_pair_e)(x, e);
}

/*
 * What ASL adds to its loss for the logit's sake: the clamps drop a NaN (and an infinite x gives
 * a finite loss), so x * 0 brings a NaN or an infinity back when non-finite inputs are rejected
 * (the fused path finds them by the sum), and only a NaN when they are allowed (torch's values
 * at x = +-inf are finite).
 */
static inline ML__ALWAYS_INLINE REAL F(asl_poison)(REAL x, struct F(asl_params) a)
{
    return a.poison ? x * R(0.0) : (x != x ? x : R(0.0));
}

/*
 * ASL for a binary label (pos: z == 1): one log. For z in {0, 1} this is the general formula
 * below bit for bit (the other side is multiplied by +-0 and added, both finite). e is
 * exp(-|x|), as for the sigmoid family's _e functions.
 */
static inline ML__ALWAYS_INLINE REAL F(asl_binary)(int pos, REAL x, REAL e, struct F(asl_params) a,
                                                   int small_only)
{
    REAL tail;
    struct F(sigmoid_pair) s = F(asl_sigmoid)(x, e, a, &tail);
    struct F(asl_side) ps = F(asl_pos)(s, x, tail, a), ns = F(asl_neg)(s, x, tail, a);
    struct F(asl_side) side = {pos ? ps.u : ns.u, pos ? ps.t : ns.t, pos ? ps.ls : ns.ls};
    REAL l = F(asl_log)(side, a, pos || !a.use_clip);
    if (a.focus && small_only) /* t in [0, 1] for a finite x; a NaN x is poisoned below */
        l = l * VM(ml__powi4_unit)(side.t, pos ? a.gpf[0] : a.gnf[0], pos ? a.gpf[1] : a.gnf[1],
                                   pos ? a.gpf[2] : a.gnf[2]);
    else if (a.focus)
        l = l * F(asl_power)(side.t, pos ? a.gp : a.gn, 0);
    return -l + F(asl_poison)(x, a);
}

/* ASL for any label (soft labels, NaN). */
static inline ML__ALWAYS_INLINE REAL F(asl_general)(REAL z, REAL x, REAL e,
                                                    struct F(asl_params) a, int small_only)
{
    REAL tail;
    struct F(sigmoid_pair) s = F(asl_sigmoid)(x, e, a, &tail);
    struct F(asl_side) ps = F(asl_pos)(s, x, tail, a), ns = F(asl_neg)(s, x, tail, a);
    REAL l = z * F(asl_log)(ps, a, 1) + (R(1.0) - z) * F(asl_log)(ns, a, !a.use_clip);
    if (a.focus) {
        REAL base = z * ps.t + (R(1.0) - z) * ns.t; /* 1 - pt */
        l = l * F(asl_power)(base, a.gp * z + a.gn * (R(1.0) - z), small_only);
    }
    return -l + F(asl_poison)(x, a);
}

/* Whether eps is a positive normal number of this type (asl_log's eps_normal). */
static inline ML__ALWAYS_INLINE int F(asl_eps_normal)(REAL eps)
{
    return eps >= (sizeof(REAL) == sizeof(float) ? (REAL)0x1p-126 : (REAL)0x1p-1022);
}

/* allow_non_finite: the request accepts NaN and infinite inputs (no poison: ASL's clamps
 * then give torch's finite values at x = +-inf). */
static inline struct F(asl_params) F(asl_params_of)(double clip, double eps, double gamma_pos,
                                                    double gamma_neg, int allow_non_finite)
{
    struct F(asl_params) a;
    a.clip = (REAL)clip;
    a.eps = (REAL)eps;
    a.leps = VM(ml__log)(a.eps);
    a.gp = (REAL)gamma_pos;
    a.gn = (REAL)gamma_neg;
    int gpi = POWI_SMALL(a.gp) ? (int)a.gp : 0, gni = POWI_SMALL(a.gn) ? (int)a.gn : 0;
    for (int k = 0; k < 3; k++) {
        a.gpf[k] = gpi >> k & 1 ? R(0.0) : R(1.0);
        a.gnf[k] = gni >> k & 1 ? R(0.0) : R(1.0);
    }
    a.use_clip = a.clip > R(0.0);
    a.eps_normal = F(asl_eps_normal)(a.eps);
    a.focus = gamma_neg > 0 || gamma_pos > 0;
    a.poison = !allow_non_finite;
    return a;
}

/* ASL of one element: asl_binary for binary labels (eps normal), else asl_general. */
static inline REAL F(asl)(REAL z, REAL x, struct F(asl_params) a)
{
    if (a.eps_normal && (z == R(0.0) || z == R(1.0)))
        return F(asl_binary)(z == R(1.0), x, F(exp_abs)(x), a, 0);
    return F(asl_general)(z, x, F(exp_abs)(x), a, 0);
}

/* Whether a vectorised loop (asl_binary when eps is normal, else asl_general, with
 * small_only and poison) gave asl()'s value for an element; the others are redone by asl(). */
static inline ML__ALWAYS_INLINE int F(asl_loop_exact)(REAL z, REAL x, struct F(asl_params) a)
{
    int binary = z == R(0.0) || z == R(1.0);
    REAL g = a.gp * z + a.gn * (R(1.0) - z);
    return (binary || !a.eps_normal) && (!a.focus || POWI_SMALL(g)) && (a.poison || x - x == 0);
}

/* ---- The TF v1 losses of predictions (losses_impl.py) ------------------------------------ */

static inline ML__ALWAYS_INLINE REAL F(squared_error)(REAL z, REAL x)
{
    REAL d = x - z;
    return d * d;
}

static inline ML__ALWAYS_INLINE REAL F(absolute_difference)(REAL z, REAL x)
{
    return FABS(x - z);
}

/* huber_loss: 0.5 q^2 + delta (|e| - q), q = min(|e|, delta). */
static inline ML__ALWAYS_INLINE REAL F(huber)(REAL z, REAL x, REAL delta)
{
    REAL a = FABS(x - z);
    REAL q = a < delta ? a : delta;
    return R(0.5) * (q * q) + delta * (a - q);
}

/* hinge_loss: relu(1 - (2z - 1) x). relu drops a NaN: x * 0 + z * 0 (NaN for a non-finite
 * input, +-0 otherwise) puts it back, on both paths. */
static inline ML__ALWAYS_INLINE REAL F(hinge)(REAL z, REAL x)
{
    REAL m = R(1.0) - (R(2.0) * z - R(1.0)) * x;
    return (m > R(0.0) ? m : R(0.0)) + (x * R(0.0) + z * R(0.0));
}

/* log_loss: epsilon inside the logs, no clipping. */
static inline ML__ALWAYS_INLINE REAL F(log_loss)(REAL z, REAL x, REAL eps)
{
    return -(z * VM(ml__log)(x + eps)) - (R(1.0) - z) * VM(ml__log)(R(1.0) - x + eps);
}
