/*
 * softmax.c -- the fused path of the softmax family (softmax.h): whether a request takes it,
 * its weights, and the run in chunks merged in order.
 *
 * The general path computes every row's loss into an array of doubles, checks every input
 * for NaN and infinity first, then reduce.c reads the array again. Reduced to numbers, the
 * same sums come from one pass: the checks are left to the end (a non-finite input shows in
 * the sum, or in a row's flag), and anything unusual -- other outputs, a weight layout other
 * than one weight per sample or one for all, an error to report -- goes back to the general
 * path untouched.
 */
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "reduce.h"
#include "softmax.h"

/* Whether the loss, outputs and reduction suit the fused softmax path (its shapes and weights
 * are checked by ml__try_softmax). */
int ml__softmax_candidate(const struct eval *e)
{
    enum ml__loss_id id = e->def->id;
    unsigned outputs = e->req->outputs ? e->req->outputs : ML_OUT_LOSS;
    const unsigned scalars =
        ML_OUT_LOSS | ML_OUT_WEIGHTED_SUM | ML_OUT_SUM_WEIGHTS | ML_OUT_NUM_NONZERO_WEIGHTS;
    enum ml__den den = e->red->den;
    if (id != ML__TF_SOFTMAX_CE && id != ML__TF_SPARSE_SOFTMAX_CE && id != ML__TORCH_CE &&
        id != ML__K3_CCE)
        return 0;
    if (outputs & ~scalars)
        return 0;
    return den == ML__DEN_ONE || den == ML__DEN_COUNT || den == ML__DEN_NONZERO ||
           den == ML__DEN_WEIGHTS || den == ML__DEN_EXPLICIT;
}

/* One chunk of samples into its sums (parallel_for's task). */
struct softmax_plan {
    const struct ml__softmax *p;
    struct ml__softmax_sums *sums; /* one per chunk */
};

static void softmax_chunk(void *arg, int64_t c)
{
    const struct softmax_plan *plan = arg;
    ml__softmax_sums(plan->p, c, &plan->sums[c]);
}

/* The weights of a loss of `rank` dims `shape` as broadcast strides: one per sample in the
 * loss's order, one for all, or neither (-1). */
static int weight_layout(int rank, const int64_t *shape, const int64_t *wstride)
{
    int dense = 1, scalar = 1;
    int64_t stride = 1;
    for (int d = rank - 1; d >= 0; d--) {
        if (shape[d] > 1 && wstride[d] != stride)
            dense = 0;
        if (shape[d] > 1 && wstride[d] != 0)
            scalar = 0;
        stride *= shape[d];
    }
    return scalar ? ML__SW_SCALAR : dense ? ML__SW_DENSE : -1;
}

/* What the plan made, undone: the general path makes it again. */
static int not_fused(struct eval *e)
{
    free(e->class_labels);
    free(e->class_weight);
    e->class_labels = NULL;
    e->class_weight = NULL;
    return ML__NOT_FUSED;
}

int ml__try_softmax(struct eval *e, struct ml_result *res, int wrank, const int64_t *wshape,
                    struct ml_error *err)
{
    if (!ml__softmax_candidate(e))
        return ML__NOT_FUSED;
    const struct ml__reduction *red = e->red;
    unsigned outputs = e->req->outputs ? e->req->outputs : ML_OUT_LOSS;
    struct ml__kctx k;
    int64_t ws[ML_MAX_RANK];
    if (wrank >= 0)
        memcpy(ws, wshape, sizeof(ws));
    /* Errors of the shape rules are the general path's to report, after its checks. */
    if (ml__prepare_plan(e, &k, &wrank, ws, NULL))
        return not_fused(e);
    int64_t n = ml_shape_numel(e->vrank, e->vshape);
    if (e->vrank < 1 || k.len < 1 || n < 1)
        return not_fused(e);

    struct ml__softmax p;
    memset(&p, 0, sizeof(p));
    p.k = &k;
    p.f64 = e->dtype == ML_FLOAT64;
    p.n = n;
    p.wmode = ML__SW_NONE;
    p.den = red->den;
    p.want_sw = (outputs & ML_OUT_SUM_WEIGHTS) != 0;
    if (wrank >= 0 && e->def->weight_rule != ML__W_CLASS) {
        int vrank = e->vrank;
        int64_t vshape[ML_MAX_RANK + 1], aligned[ML_MAX_RANK], wstride[ML_MAX_RANK];
        memcpy(vshape, e->vshape, sizeof(e->vshape));
        /* A rule may reshape the loss (Keras: [N] to [N, 1]); its order must stay. */
        if (ml__weights_align(e->def->weight_rule, e->info->name, &vrank, vshape, wrank, ws,
                              aligned, NULL) ||
            ml_shape_numel(vrank, vshape) != n)
            return not_fused(e);
        ml__strides(vrank, aligned, wstride);
        int mode = weight_layout(vrank, vshape, wstride);
        if (mode < 0)
            return not_fused(e);
        p.wmode = (enum ml__softmax_weights)mode;
        p.w = e->weights.data;
    }

    struct softmax_plan plan = {&p, NULL};
    int64_t nchunks = (n + ML__CHUNK - 1) / ML__CHUNK;
    plan.sums = malloc((size_t)nchunks * sizeof(*plan.sums));
    if (!plan.sums)
        return not_fused(e); /* the general path will report the shortage */
    if (e->req->parallel_for && nchunks > 1)
        e->req->parallel_for(e->req->parallel_ctx, nchunks, softmax_chunk, &plan);
    else
        for (int64_t c = 0; c < nchunks; c++)
            softmax_chunk(&plan, c);
    struct ml__softmax_sums total;
    memset(&total, 0, sizeof(total));
    total.bad_label = -1;
    for (int64_t c = 0; c < nchunks; c++) {
        const struct ml__softmax_sums *s = &plan.sums[c];
        ml__lanes_merge(&total.num, &s->num);
        ml__lanes_merge(&total.den, &s->den);
        ml__lanes_merge(&total.sw, &s->sw);
        total.nonzero += s->nonzero;
        total.den_count += s->den_count;
        total.nonfinite |= s->nonfinite;
        if (total.bad_label < 0)
            total.bad_label = s->bad_label;
    }
    free(plan.sums);
    /* torch's class weights are read only where a target names them. */
    for (int64_t c = 0; k.class_weight && c < k.len; c++)
        total.nonfinite |= !(k.class_weight[c] - k.class_weight[c] == 0);

    double num = ml__lanes_get(&total.num);
    /* A non-finite input shows in the sum or in a row's flag: only then do the deferred checks
     * look for it, and name the first, as the general path would before computing. */
    if (total.nonfinite || !(num - num == 0) || total.bad_label >= 0) {
        int rc = ml__view_check_deferred(e, err);
        if (rc)
            return rc;
    }
    if (total.bad_label >= 0)
        return not_fused(e); /* the general path names the class index */
    int counts = red->den == ML__DEN_COUNT || red->den == ML__DEN_NONZERO;
    double den = counts ? (double)total.den_count : ml__lanes_get(&total.den);
    ml__reduce_totals(red, num, den, ml__lanes_get(&total.sw), total.nonzero, 0, 0, res);
    return 0; /* eval.c names the result */
}
