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

/* One task of blocks into their sums (parallel_for's task). */
struct softmax_plan {
    const struct ml__softmax *p;
    struct ml__softmax_sums *sums; /* one per block */
};

static void softmax_task(void *arg, int64_t t)
{
    const struct softmax_plan *plan = arg;
    ml__softmax_sums(plan->p, t, plan->sums);
}

/* A block's lanes folded into a chunk's (ml__lanes_add at the block's end). */
static void fold_block(struct ml__lanes *l, const double *b)
{
    memcpy(l->b, b, sizeof(l->b));
    ml__lanes_flush(l);
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

    /* Tasks of about 64K elements or more: a block of rows of 64 classes or more, a few of
     * shorter rows. */
    int64_t nblocks = (n + ML__BLOCK - 1) / ML__BLOCK;
    p.group =
        (ML__CHUNK / ML__BLOCK) / (k.len < ML__CHUNK / ML__BLOCK ? k.len : ML__CHUNK / ML__BLOCK);
    int64_t ntasks = (nblocks + p.group - 1) / p.group;
    struct softmax_plan plan = {&p, malloc((size_t)nblocks * sizeof(struct ml__softmax_sums))};
    if (!plan.sums)
        return not_fused(e); /* the general path will report the shortage */
    if (e->req->parallel_for && ntasks > 1)
        e->req->parallel_for(e->req->parallel_ctx, ntasks, softmax_task, &plan);
    else
        for (int64_t t = 0; t < ntasks; t++)
            softmax_task(&plan, t);
    /* The blocks folded into chunks, the chunks merged into the totals, in order: reduce.c's
     * additions exactly. */
    struct ml__lanes num, den, sw, cnum, cden, csw;
    memset(&num, 0, sizeof(num));
    den = sw = cnum = cden = csw = num;
    int64_t nonzero = 0, den_count = 0, bad_label = -1;
    int nonfinite = 0;
    for (int64_t b = 0; b < nblocks; b++) {
        const struct ml__softmax_sums *s = &plan.sums[b];
        fold_block(&cnum, s->num);
        fold_block(&cden, s->den);
        fold_block(&csw, s->sw);
        if ((b + 1) % (ML__CHUNK / ML__BLOCK) == 0 || b + 1 == nblocks) {
            ml__lanes_merge(&num, &cnum);
            ml__lanes_merge(&den, &cden);
            ml__lanes_merge(&sw, &csw);
            memset(&cnum, 0, sizeof(cnum));
            cden = csw = cnum;
        }
        nonzero += s->nonzero;
        den_count += s->den_count;
        nonfinite |= s->nonfinite;
        if (bad_label < 0)
            bad_label = s->bad_label;
    }
    free(plan.sums);
    /* torch's class weights are read only where a target names them. */
    for (int64_t c = 0; k.class_weight && c < k.len; c++)
        nonfinite |= !(k.class_weight[c] - k.class_weight[c] == 0);

    double total = ml__lanes_get(&num);
    /* A non-finite input shows in the sum or in a row's flag: only then do the deferred checks
     * look for it, and name the first, as the general path would before computing. */
    if (nonfinite || !(total - total == 0) || bad_label >= 0) {
        int rc = ml__view_check_deferred(e, err);
        if (rc)
            return rc;
    }
    if (bad_label >= 0)
        return not_fused(e); /* the general path names the class index */
    int counts = red->den == ML__DEN_COUNT || red->den == ML__DEN_NONZERO;
    double d = counts ? (double)den_count : ml__lanes_get(&den);
    ml__reduce_totals(red, total, d, ml__lanes_get(&sw), nonzero, 0, 0, res);
    return 0; /* eval.c names the result */
}
