/*
 * eval.c -- ml_eval(): names, parameters and reduction, the inputs, then the fused path or
 * the general one (the pointwise kernel, weights and reduction).
 *
 * The order of checks follows the frameworks' own (names, parameters, shapes of labels
 * against predictions, then weights), so that the first error reported is the one the
 * reference would raise.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "eval.h"
#include "reduce.h"
#include "softmax.h"
#include "tensor.h"

void ml_request_init(struct ml_request *req)
{
    memset(req, 0, sizeof(*req));
    req->dtype = ML_FLOAT32;
    req->outputs = ML_OUT_LOSS;
}

void ml_result_free(struct ml_result *res)
{
    if (!res)
        return;
    free(res->loss_tensor.data);
    free(res->per_element.data);
    free(res->per_sample.data);
    free(res->per_class.data);
    free(res->class_sums);
    res->class_sums = NULL;
    res->loss_tensor.data = res->per_element.data = NULL;
    res->per_sample.data = res->per_class.data = NULL;
}

static int find_loss(struct eval *e, const char *name, struct ml_error *err)
{
    e->info = ml_loss_find(name);
    if (!e->info)
        return ml__fail(err, ML_EUNKNOWN_LOSS, "loss", -1,
                        "unknown loss '%s' (`maskloss losses` or GET /v1/losses lists them)",
                        name);
    e->def = ml__loss_def(e->info);
    return 0;
}

static int resolve_reduction(struct eval *e, struct ml_error *err)
{
    const char *name = e->req->reduction;
    if (!name) {
        name = e->info->default_reduction;
        /* tf.nn ops are elementwise; given weights, they reduce like
         * compute_weighted_loss with its default. */
        if ((e->def->id == ML__TFNN_SIGMOID || e->def->id == ML__TFNN_WEIGHTED) && e->req->weights)
            name = "SUM_BY_NONZERO_WEIGHTS";
    }
    for (size_t i = 0; i < e->def->num_reds; i++) {
        const struct ml__reduction *r = &e->def->reds[i];
        if (ml__streq_ci(name, r->name) || (r->alias1 && ml__streq_ci(name, r->alias1)) ||
            (r->alias2 && ml__streq_ci(name, r->alias2))) {
            e->red = r;
            return 0;
        }
    }
    char list[256];
    size_t used = 0;
    list[0] = '\0';
    for (size_t i = 0; i < e->info->num_reductions && used < sizeof(list); i++)
        used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "",
                                 e->info->reductions[i]);
    return ml__fail(err, ML_EREDUCTION, "reduction", -1,
                    "%s has no reduction '%s' (expected one of: %s)", e->info->name, name, list);
}

/* Which inputs the loss reads; anything else present is an error, not silently ignored. */
static int check_inputs(struct eval *e, struct ml_error *err)
{
    const struct ml_request *req = e->req;
    const struct ml_loss_info *info = e->info;
    const struct ml_tensor *pred = NULL;

    if (info->takes_labels && !req->labels)
        return ml__fail(err, ML_EINVAL, "labels", -1, "%s needs `labels`", info->name);
    if (!info->takes_labels && req->labels)
        return ml__fail(err, ML_EINVAL, "labels", -1,
                        "%s reduces a precomputed `losses` tensor and takes no `labels`",
                        info->name);

    switch (info->input) {
    case ML_INPUT_LOGITS:
        pred = req->logits;
        e->pred_field = "logits";
        if (req->predictions)
            return ml__fail(err, ML_EINVAL, "predictions", -1,
                            "%s takes `logits`, not `predictions`", info->name);
        break;
    case ML_INPUT_PREDICTIONS:
        pred = req->predictions;
        e->pred_field = "predictions";
        if (req->logits)
            return ml__fail(err, ML_EINVAL, "logits", -1,
                            "%s takes `predictions` (probabilities or regression outputs), not "
                            "`logits`",
                            info->name);
        break;
    case ML_INPUT_LOSSES:
        pred = req->losses;
        e->pred_field = "losses";
        if (req->logits || req->predictions)
            return ml__fail(err, ML_EINVAL, req->logits ? "logits" : "predictions", -1,
                            "%s takes a precomputed `losses` tensor", info->name);
        break;
    case ML_INPUT_KERAS: {
        /* Keras has one y_pred: `logits` implies from_logits=true, `predictions` means
         * whatever from_logits says (probabilities by default). */
        int given = e->params.keras.from_logits_given;
        int from_logits = e->params.keras.from_logits;
        if (req->logits && req->predictions)
            return ml__fail(err, ML_EINVAL, "logits", -1,
                            "give either `logits` or `predictions`, not both");
        if (req->logits) {
            if (given && !from_logits)
                return ml__fail(err, ML_EPARAM, "params.from_logits", -1,
                                "`logits` were given but from_logits is false: send "
                                "probabilities as `predictions`, or set from_logits true");
            pred = req->logits;
            e->pred_field = "logits";
        } else {
            pred = req->predictions;
            e->pred_field = "predictions";
        }
        break;
    }
    }
    if (info->input != ML_INPUT_LOSSES && req->losses)
        return ml__fail(err, ML_EINVAL, "losses", -1,
                        "`losses` is the input of compute_weighted_loss only");
    if (!pred)
        return ml__fail(err, ML_EINVAL, e->pred_field, -1, "%s needs `%s`", info->name,
                        info->input == ML_INPUT_KERAS ? "logits` or `predictions" : e->pred_field);
    return ml__view_open(&e->pred, e->pred_field, pred, e, e->defer, err);
}

/*
 * An error found after views whose NaN/Inf check was deferred (to the fused kernel) were
 * opened: without the deferral, a NaN or an infinity in one of them would have been reported
 * first, and the answer must not depend on which outputs were asked.
 */
static int deferred_first(struct eval *e, int rc, struct ml_error *err)
{
    int nonfinite = ml__view_check_deferred(e, err);
    return nonfinite ? nonfinite : rc;
}

/* What a result says besides its numbers: the outputs, names, path and instruction set. */
static void name_result(const struct eval *e, unsigned outputs, enum ml_path path,
                        struct ml_result *res)
{
    res->outputs = outputs | ML_OUT_LOSS;
    res->loss_name = e->info->name;
    res->reduction_name = e->red->name;
    res->path = path;
    res->simd = ml__simd_name(e->simd);
}

static int evaluate(struct eval *e, struct ml_result *res, struct ml_error *err)
{
    const struct ml_request *req = e->req;
    int rc;

    if (!req->loss)
        return ml__fail(err, ML_EINVAL, "loss", -1, "the request names no loss");
    rc = find_loss(e, req->loss, err);
    if (rc)
        return rc;
    if (req->dtype != ML_FLOAT32 && req->dtype != ML_FLOAT64)
        return ml__fail(err, ML_EINVAL, "dtype", -1, "dtype must be float32 or float64");
    e->dtype = req->dtype;
    e->simd = ml__simd_pick();

    rc = ml__params_parse(e->info, req, &e->params, err);
    if (rc)
        return rc;
    rc = resolve_reduction(e, err);
    if (rc)
        return rc;
    e->defer = ml__fused_candidate(e) || ml__softmax_candidate(e);
    if (req->labels) {
        rc = ml__view_open(&e->labels, "labels", req->labels, e, e->defer, err);
        if (rc)
            return rc;
    }
    rc = check_inputs(e, err);
    if (rc)
        return deferred_first(e, rc, err);

    int wrank = -1;
    int64_t wshape[ML_MAX_RANK];
    if (req->weights) {
        rc = ml__view_open(&e->weights, "weights", req->weights, e, e->defer, err);
        if (rc)
            return deferred_first(e, rc, err);
        wrank = req->weights->rank;
        memcpy(wshape, req->weights->shape, sizeof(wshape));
    }
    int64_t most = e->labels.n > e->pred.n ? e->labels.n : e->pred.n;
    e->input_elements = most > e->weights.n ? most : e->weights.n;

    rc = ml__try_fused(e, res, wrank, wshape, err);
    if (rc != ML__NOT_FUSED)
        return rc;
    rc = ml__try_softmax(e, res, wrank, wshape, err);
    if (!rc)
        name_result(e, req->outputs ? req->outputs : ML_OUT_LOSS, ML_PATH_FUSED, res);
    if (rc != ML__NOT_FUSED)
        return rc;
    rc = ml__view_check_deferred(e, err); /* the general path checks before it computes */
    if (rc)
        return rc;

    struct ml__kctx k;
    rc = ml__prepare(e, &k, &wrank, wshape, err);
    if (rc)
        return rc;

    /* Weights meet the pointwise loss under the framework's rule. */
    int64_t aligned[ML_MAX_RANK], wstride[ML_MAX_RANK];
    int vrank = e->vrank;
    int64_t vshape[ML_MAX_RANK + 1];
    memcpy(vshape, e->vshape, sizeof(e->vshape));
    struct ml__reduce_in in;
    memset(&in, 0, sizeof(in));
    if (wrank >= 0 && e->def->weight_rule != ML__W_CLASS) {
        rc = ml__weights_align(e->def->weight_rule, e->info->name, &vrank, vshape, wrank, wshape,
                               aligned, err);
        if (rc)
            return rc;
        ml__strides(vrank, aligned, wstride);
        /* The weights are read where they are, in the compute precision: a double copy
         * would add 8 bytes per element to a request's peak memory. */
        struct ml__sum raw = {0, 0};
        for (int64_t i = 0; i < e->weights.n; i++)
            ml__sum_add(&raw, ml__view_get(&e->weights, e->dtype, i));
        if (e->dtype == ML_FLOAT32)
            in.wf = e->weights.data;
        else
            in.w = e->weights.data;
        in.has_raw_sw = 1;
        in.raw_sw_sum = ml__sum_get(&raw);
    }

    const struct ml__reduction *red = e->red;
    /* Keras reduce_values returns a scalar or empty (0,) loss unreduced. */
    static const struct ml__reduction keras_unreduced = {"none", NULL, NULL, ML__DEN_NONE, 0};
    static const struct ml__reduction keras_scalar = {"sum", NULL, NULL, ML__DEN_ONE, 0};
    if (e->def->weight_rule == ML__W_KERAS3 && red->den != ML__DEN_NONE) {
        if (vrank == 0)
            red = &keras_scalar;
        else if (vrank == 1 && vshape[0] == 0 && !(req->outputs & (ML_OUT_SUMS | ML_OUT_CLASS_SUMS)))
            red = &keras_unreduced; /* (asked for sums, an empty batch has zero sums) */
    }

    in.loss_name = e->info->name;
    in.values = e->values;
    in.rank = vrank;
    in.shape = vshape;
    in.n = e->vn;
    in.wstride = wstride;
    in.den = e->den;
    in.red = red;
    in.elementwise = e->def->elementwise;
    in.outputs = req->outputs ? req->outputs : ML_OUT_LOSS;
    in.max_elements = req->max_elements;
    in.input_elements = e->input_elements;
    rc = ml__reduce(&in, res, err);
    if (rc)
        return rc;

    name_result(e, in.outputs, ML_PATH_GENERAL, res);
    if (in.outputs & ML_OUT_PER_ELEMENT) {
        res->per_element.rank = vrank;
        memcpy(res->per_element.shape, vshape, sizeof(int64_t) * (size_t)vrank);
        res->per_element.numel = e->vn;
        res->per_element.data = e->values;
        e->values = NULL; /* ownership moves to the result */
    }
    return 0;
}

int ml_reduction_ratio(const char *loss, const char *reduction, struct ml_ratio *out,
                       struct ml_error *err)
{
    struct eval e;
    struct ml_request req;
    memset(&e, 0, sizeof(e));
    if (err) {
        memset(err, 0, sizeof(*err));
        err->index = -1;
    }
    if (!out)
        return ml__fail(err, ML_EINVAL, "", -1, "no ratio to fill (out is NULL)");
    memset(out, 0, sizeof(*out));
    if (!loss)
        return ml__fail(err, ML_EINVAL, "loss", -1, "no loss named");
    ml_request_init(&req);
    req.loss = loss;
    req.reduction = reduction;
    e.req = &req;
    int rc = find_loss(&e, loss, err);
    if (!rc)
        rc = resolve_reduction(&e, err);
    if (rc)
        return rc;
    if (e.red->den == ML__DEN_NONE)
        return ml__fail(err, ML_EREDUCTION, "reduction", -1,
                        "reduction %s does not reduce: a ratio of sums needs one that does",
                        e.red->name);
    ml__ratio_of(e.red, e.def->elementwise, out);
    return 0;
}

int ml_eval(const struct ml_request *req, struct ml_result *res, struct ml_error *err)
{
    struct eval e;
    memset(&e, 0, sizeof(e));
    if (err) {
        memset(err, 0, sizeof(*err));
        err->index = -1;
    }
    if (!res)
        return ml__fail(err, ML_EINVAL, "", -1, "no result to fill (res is NULL)");
    memset(res, 0, sizeof(*res));
    if (!req)
        return ml__fail(err, ML_EINVAL, "", -1, "no request");
    e.req = req;
    int rc = evaluate(&e, res, err);
    ml__view_close(&e.labels);
    ml__view_close(&e.pred);
    ml__view_close(&e.weights);
    ml__view_close(&e.pos_weight);
    free(e.class_labels);
    free(e.aux);
    free(e.class_weight);
    free(e.values);
    free(e.den);
    if (rc)
        ml_result_free(res);
    return rc;
}
