/*
 * broadcast.c -- how each framework lets `weights` meet the loss tensor.
 *
 * The result is always a weight shape aligned to the (possibly adjusted) loss shape: the
 * same rank, each dim 1 or equal. Weights are never materialised: a stride of 0 repeats.
 */
#include <string.h>

#include "broadcast.h"

int ml__numpy_align(int trank, const int64_t *tshape, int vrank, const int64_t *vshape,
                    int64_t *aligned, int *bad_dim)
{
    if (trank > vrank) {
        *bad_dim = -1;
        return -1;
    }
    int pad = vrank - trank;
    for (int d = 0; d < vrank; d++) {
        int64_t t = d < pad ? 1 : tshape[d - pad];
        if (t != 1 && t != vshape[d]) {
            *bad_dim = d;
            return -1;
        }
        aligned[d] = t;
    }
    return 0;
}

void ml__strides(int rank, const int64_t *aligned, int64_t *stride)
{
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        stride[d] = aligned[d] == 1 ? 0 : s;
        s *= aligned[d];
    }
}

static int numpy_fail(struct ml_error *err, const char *loss, int wrank, const int64_t *wshape,
                      int vrank, const int64_t *vshape, const char *what, const char *hint)
{
    char ws[160], vs[160];
    ml__shape_str(ws, sizeof(ws), wrank, wshape);
    ml__shape_str(vs, sizeof(vs), vrank, vshape);
    return ml__fail(err, ML_EBROADCAST, "weights", -1,
                    "weights of shape %s cannot be broadcast to the %s of shape %s (%s: numpy "
                    "broadcasting, each trailing dim 1 or equal)%s",
                    ws, what, vs, loss, hint);
}

int ml__weights_align(enum ml__weight_rule rule, const char *loss, int *vrank, int64_t *vshape,
                      int wrank, const int64_t *wshape_in, int64_t *aligned, struct ml_error *err)
{
    int64_t wshape[ML_MAX_RANK];
    memcpy(wshape, wshape_in, sizeof(int64_t) * (size_t)wrank);
    char ws[160], vs[160];

    switch (rule) {
    case ML__W_TF:
        /* weights_broadcast_ops.assert_broadcastable: scalar, or the same rank with every
         * dim 1 or equal to the loss's. A [N] weight against an [N, C] loss is rejected. */
        if (wrank == 0) {
            for (int d = 0; d < *vrank; d++)
                aligned[d] = 1;
            return 0;
        }
        ml__shape_str(ws, sizeof(ws), wrank, wshape);
        ml__shape_str(vs, sizeof(vs), *vrank, vshape);
        if (wrank != *vrank)
            return ml__fail(err, ML_EBROADCAST, "weights", -1,
                            "weights can not be broadcast to values. values.rank=%d. "
                            "weights.rank=%d. values.shape=%s. weights.shape=%s. (%s: weights "
                            "must be a scalar or have the loss's rank, each dim 1 or equal)",
                            *vrank, wrank, vs, ws, loss);
        for (int d = 0; d < wrank; d++) {
            if (wshape[d] != 1 && wshape[d] != vshape[d])
                return ml__fail(err, ML_EBROADCAST, "weights", -1,
                                "weights can not be broadcast to values. Mismatch at dim %d. "
                                "values.shape=%s weights.shape=%s",
                                d, vs, ws);
            aligned[d] = wshape[d];
        }
        return 0;

    case ML__W_KERAS3:
        /* keras/src/losses/loss.py squeeze_or_expand_to_same_rank(values, sample_weight). */
        if (*vrank == wrank + 1) {
            if (vshape[*vrank - 1] == 1) {
                if (wrank == 1)
                    wshape[wrank++] = 1; /* expand sample_weight */
                else
                    (*vrank)--; /* squeeze values */
            }
        } else if (wrank == *vrank + 1 && wshape[wrank - 1] == 1) {
            if (*vrank == 1)
                vshape[(*vrank)++] = 1; /* expand values */
            else
                wrank--; /* squeeze sample_weight */
        }
        break;

    case ML__W_KERAS2:
        /* keras/utils/losses_utils.py squeeze_or_expand_dimensions(sample_weight). */
        if (wrank == 0)
            break;
        if (wrank - *vrank == 1) {
            if (wshape[wrank - 1] != 1) {
                ml__shape_str(ws, sizeof(ws), wrank, wshape);
                return ml__fail(err, ML_EBROADCAST, "weights", -1,
                                "Can not squeeze dim[%d], expected a dimension of 1, got %lld "
                                "(sample_weight %s has one dim more than the per-sample loss)",
                                wrank - 1, (long long)wshape[wrank - 1], ws);
            }
            wrank--;
        } else if (*vrank - wrank == 1) {
            wshape[wrank++] = 1;
        }
        break;

    case ML__W_NUMPY:
    case ML__W_CLASS:
        break;
    }

    int bad;
    if (ml__numpy_align(wrank, wshape, *vrank, vshape, aligned, &bad) != 0) {
        const char *hint = "";
        if (rule == ML__W_KERAS3 || rule == ML__W_KERAS2)
            hint = "; Keras weighs the per-sample loss (the mean over the last axis): a "
                   "per-element mask needs reduction none on an elementwise loss, or a TF "
                   "loss such as sigmoid_cross_entropy";
        return numpy_fail(err, loss, wrank, wshape, *vrank, vshape,
                          rule == ML__W_NUMPY ? "input" : "per-sample loss", hint);
    }
    return 0;
}
