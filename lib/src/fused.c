/*
 * fused.c -- the fused path: whether a request can take it, the weight and pos_weight
 * layouts fast.c streams, and the run in chunks merged in order.
 *
 * The hot losses reduced to numbers take one fused pass over the inputs (fast.c), the same
 * bits as the general path. Everything else -- other losses, per-element outputs, a weight
 * layout fast.c does not stream, an error to report -- is left to the general path.
 */
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "eval.h"
#include "reduce.h"

struct fast_plan {
    const struct ml__fast *f;
    int64_t n;
    struct ml__fast_sums *sums; /* one per chunk */
};

static void fast_chunk(void *arg, int64_t c)
{
    struct fast_plan *p = arg;
    int64_t begin = c * ML__CHUNK;
    int64_t end = begin + ML__CHUNK < p->n ? begin + ML__CHUNK : p->n;
    ml__fast_run(p->f, begin, end, &p->sums[c]);
}

/* The weight layout of fast.h that the broadcast strides describe, or -1. */
static int fast_weights(int rank, const int64_t *shape, const int64_t *wstride)
{
    int all_zero = 1, dense = 1, row = 1, col = 1;
    int64_t stride = 1, row_stride = 1;
    for (int d = rank - 1; d >= 0; d--) {
        int matters = shape[d] > 1;
        if (matters && wstride[d] != 0)
            all_zero = 0;
        if (matters && wstride[d] != stride)
            dense = 0;
        if (d == rank - 1) {
            if (matters && wstride[d] != 0)
                row = 0;
            if (matters && wstride[d] != 1)
                col = 0;
        } else {
            if (matters && wstride[d] != row_stride)
                row = 0;
            if (matters && wstride[d] != 0)
                col = 0;
            row_stride *= shape[d];
        }
        stride *= shape[d];
    }
    return all_zero ? ML__FW_SCALAR
           : dense  ? ML__FW_DENSE
           : row    ? ML__FW_ROW
           : col    ? ML__FW_COL
                    : -1;
}

/* Whether the loss, precision, outputs and reduction suit the fused path (its inputs'
 * shapes and weight layout are checked later, in ml__try_fused). */
int ml__fused_candidate(const struct eval *e)
{
    const struct ml_request *req = e->req;
    enum ml__loss_id id = e->def->id;
    const struct ml__reduction *red = e->red;
    unsigned outputs = req->outputs ? req->outputs : ML_OUT_LOSS;
    const unsigned scalars =
        ML_OUT_LOSS | ML_OUT_WEIGHTED_SUM | ML_OUT_SUM_WEIGHTS | ML_OUT_NUM_NONZERO_WEIGHTS;
    if (outputs & ~scalars)
        return 0;
    double gamma = e->params.focal.gamma;
    int elementwise = id == ML__TF_SIGMOID_CE || id == ML__TFNN_SIGMOID || id == ML__ASL ||
                      id == ML__TF_MSE || id == ML__TF_ABSDIFF || id == ML__TF_HUBER ||
                      id == ML__TF_HINGE || id == ML__TF_LOG_LOSS || id == ML__TORCH_BCE ||
                      id == ML__TFNN_WEIGHTED;
    if (!elementwise && !(id == ML__TV_FOCAL && (gamma == 0 || gamma == 1 || gamma == 2)))
        return 0;
    return red->den == ML__DEN_ONE || red->den == ML__DEN_COUNT || red->den == ML__DEN_NONZERO ||
           red->den == ML__DEN_WEIGHTS;
}

/*
 * pos_weight for the fused kernel (torch BCE, tf.nn.weighted_cross_entropy_with_logits): a
 * number, or a tensor of the request's dtype, finite, whose numpy broadcast to the logits is
 * one of fast.h's layouts, read in place. Returns 0 (f->pw, f->pwmode set; f->pwmode
 * ML__FW_NONE for torch's pos_weight=None) or ML__NOT_FUSED: anything else, errors included, is
 * left to the general path, which expands pos_weight and reports what is wrong.
 */
static int fast_pos_weight(const struct eval *e, struct ml__fast *f)
{
    const struct ml_tensor *x = e->pred.t;
    f->pwmode = ML__FW_NONE;
    if (e->def->id != ML__TORCH_BCE && e->def->id != ML__TFNN_WEIGHTED)
        return 0;
    if (e->def->id == ML__TORCH_BCE && !e->params.pos_weight.given)
        return 0; /* pos_weight=None */
    const struct ml_tensor *t = e->params.pos_weight.tensor;
    if (!t) {
        f->pw_value = e->params.pos_weight.number;
        if (!(f->pw_value - f->pw_value == 0))
            return ML__NOT_FUSED;
        f->pwmode = ML__FW_SCALAR;
        f->pw = NULL;
        return 0;
    }
    int64_t n = ml_shape_numel(t->rank, t->shape), aligned[ML_MAX_RANK], stride[ML_MAX_RANK];
    int bad;
    if (t->dtype != e->dtype || n < 0 || (n > 0 && !t->data) ||
        ml__numpy_align(t->rank, t->shape, x->rank, x->shape, aligned, &bad))
        return ML__NOT_FUSED;
    if ((t->dtype == ML_FLOAT32 ? ml__first_non_finite_f32((int)e->simd, t->data, n)
                                : ml__first_non_finite_f64((int)e->simd, t->data, n)) >= 0)
        return ML__NOT_FUSED;
    ml__strides(x->rank, aligned, stride);
    int mode = fast_weights(x->rank, x->shape, stride);
    if (mode < 0)
        return ML__NOT_FUSED;
    f->pwmode = (enum ml__fast_weights)mode;
    f->pw = t->data;
    return 0;
}

int ml__try_fused(struct eval *e, struct ml_result *res, int wrank, const int64_t *wshape,
                  struct ml_error *err)
{
    const struct ml_request *req = e->req;
    enum ml__loss_id id = e->def->id;
    const struct ml__reduction *red = e->red;
    unsigned outputs = req->outputs ? req->outputs : ML_OUT_LOSS;
    if (!ml__fused_candidate(e))
        return ML__NOT_FUSED;
    double gamma = e->params.focal.gamma;
    const struct ml_tensor *x = e->pred.t, *z = e->labels.t;
    if (!z || x->rank == 0 || !ml__same_shape(z->rank, z->shape, x->rank, x->shape))
        return ML__NOT_FUSED;

    struct ml__fast f;
    memset(&f, 0, sizeof(f));
    f.id = id;
    f.label_smoothing = e->params.label_smoothing;
    f.gamma = (int)gamma;
    f.alpha = e->params.focal.alpha;
    f.gamma_pos = e->params.asl.gamma_pos;
    f.gamma_neg = e->params.asl.gamma_neg;
    f.clip = e->params.asl.clip;
    f.epsilon = id == ML__ASL ? e->params.asl.eps : e->params.epsilon;
    f.delta = e->params.delta;
    f.asl_focus = f.gamma_neg > 0 || f.gamma_pos > 0;
    f.f64 = e->dtype == ML_FLOAT64;
    f.z = e->labels.data;
    f.x = e->pred.data;
    f.cols = x->shape[x->rank - 1];
    f.rows = f.cols ? e->pred.n / f.cols : 0;
    if (!f.cols)
        return ML__NOT_FUSED;
    f.wmode = ML__FW_NONE;
    if (wrank >= 0) {
        int vrank = x->rank;
        int64_t vshape[ML_MAX_RANK + 1], aligned[ML_MAX_RANK], wstride[ML_MAX_RANK];
        memcpy(vshape, x->shape, sizeof(int64_t) * (size_t)x->rank);
        if (ml__weights_align(e->def->weight_rule, e->info->name, &vrank, vshape, wrank, wshape,
                              aligned, NULL) ||
            vrank != x->rank)
            return ML__NOT_FUSED; /* the general path reports the error */
        ml__strides(vrank, aligned, wstride);
        int mode = fast_weights(vrank, vshape, wstride);
        if (mode < 0)
            return ML__NOT_FUSED;
        f.wmode = (enum ml__fast_weights)mode;
        f.w = e->weights.data;
    }
    if (fast_pos_weight(e, &f))
        return ML__NOT_FUSED;
    f.den_sums = red->den == ML__DEN_WEIGHTS;
    f.want_sw = (outputs & ML_OUT_SUM_WEIGHTS) != 0;
    f.want_nz = red->den == ML__DEN_NONZERO || (outputs & ML_OUT_NUM_NONZERO_WEIGHTS);
    f.simd = (int)e->simd;
    f.allow_non_finite = req->allow_non_finite != 0;

    /* Chunks, each with sums of its own, merged in order: the same bits however many
     * threads ran them. */
    struct fast_plan plan = {&f, f.rows * f.cols, NULL};
    int64_t nchunks = (plan.n + ML__CHUNK - 1) / ML__CHUNK;
    plan.sums = malloc((size_t)(nchunks > 0 ? nchunks : 1) * sizeof(*plan.sums));
    if (!plan.sums)
        return ML__NOT_FUSED; /* the general path will report the shortage */
    if (req->parallel_for && nchunks > 1)
        req->parallel_for(req->parallel_ctx, nchunks, fast_chunk, &plan);
    else
        for (int64_t c = 0; c < nchunks; c++)
            fast_chunk(&plan, c);
    struct ml__fast_sums total;
    memset(&total, 0, sizeof(total));
    for (int64_t c = 0; c < nchunks; c++) {
        ml__lanes_merge(&total.num, &plan.sums[c].num);
        ml__lanes_merge(&total.den, &plan.sums[c].den);
        ml__lanes_merge(&total.sw, &plan.sums[c].sw);
        total.nonzero += plan.sums[c].nonzero;
    }
    free(plan.sums);
    double num = ml__lanes_get(&total.num);
    /* A NaN or an infinity among the inputs makes num non-finite (fast.c): only then do the
     * deferred checks look for it, and find and name the first. (Finite inputs can overflow
     * too; then they find nothing and the sum stands, as on the general path.) A loss of no
     * element reads no weight: its weights ([1, C], [C], a scalar) are checked here. */
    if (!(num - num == 0) || plan.n == 0) {
        int rc = ml__view_check_deferred(e, err);
        if (rc)
            return rc;
    }
    double den = red->den == ML__DEN_COUNT     ? (double)plan.n
                 : red->den == ML__DEN_NONZERO ? (double)total.nonzero
                                               : ml__lanes_get(&total.den);
    ml__reduce_totals(red, num, den, ml__lanes_get(&total.sw), total.nonzero, 0, 0, res);
    res->outputs = outputs | ML_OUT_LOSS;
    res->loss_name = e->info->name;
    res->reduction_name = red->name;
    res->path = ML_PATH_FUSED;
    res->simd = ml__simd_name(e->simd);
    return 0;
}
