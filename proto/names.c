/*
 * names.c -- the inputs and outputs of an evaluation as both protocols name them: one table
 * each for the /v1 and /v2 decoders and encoders, and each output's values and element count.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

_Static_assert(MLP__NUM_SLOTS ==
                   sizeof(((struct mlp_request *)0)->tensors) / sizeof(struct ml_tensor),
               "one tensor of struct mlp_request per slot");

const struct mlp__input mlp__inputs[MLP__NUM_INPUT_NAMES] = {
    {MLP__LABELS, "labels", "LABELS"},
    {MLP__LOGITS, "logits", "LOGITS"},
    {MLP__PREDICTIONS, "predictions", "PREDICTIONS"},
    {MLP__LOSSES, "losses", "LOSSES"},
    {MLP__WEIGHTS, "weights", "WEIGHTS"},
    {MLP__WEIGHTS, "mask", "MASK"},
};

const struct ml_tensor **mlp__input_slot(struct ml_request *req, enum mlp__slot slot)
{
    switch (slot) {
    case MLP__LABELS:
        return &req->labels;
    case MLP__LOGITS:
        return &req->logits;
    case MLP__PREDICTIONS:
        return &req->predictions;
    case MLP__LOSSES:
        return &req->losses;
    default:
        return &req->weights;
    }
}

int mlp__main_inputs(enum ml_input_kind kind, enum mlp__slot slots[2])
{
    switch (kind) {
    case ML_INPUT_LOGITS:
        slots[0] = MLP__LOGITS;
        return 1;
    case ML_INPUT_PREDICTIONS:
        slots[0] = MLP__PREDICTIONS;
        return 1;
    case ML_INPUT_LOSSES:
        slots[0] = MLP__LOSSES;
        return 1;
    default: /* Keras: logits with from_logits=true, predictions otherwise */
        slots[0] = MLP__LOGITS;
        slots[1] = MLP__PREDICTIONS;
        return 2;
    }
}

const struct mlp__output mlp__outputs[MLP__NUM_OUTPUTS] = {
    {ML_OUT_LOSS, "loss", "LOSS", 0},
    {ML_OUT_PER_ELEMENT, "per_element", "PER_ELEMENT", 0},
    {ML_OUT_PER_SAMPLE, "per_sample", "PER_SAMPLE", 0},
    {ML_OUT_PER_CLASS, "per_class", "PER_CLASS", 0},
    {ML_OUT_WEIGHTED_SUM, "weighted_sum", "WEIGHTED_SUM", 0},
    {ML_OUT_SUM_WEIGHTS, "sum_weights", "SUM_WEIGHTS", 0},
    {ML_OUT_NUM_NONZERO_WEIGHTS, "num_nonzero_weights", "NUM_NONZERO_WEIGHTS", 1},
};

const struct mlp__output *mlp__output_named(const char *name, int v2)
{
    for (size_t k = 0; name && k < MLP__NUM_OUTPUTS; k++)
        if (!strcmp(name, v2 ? mlp__outputs[k].v2_name : mlp__outputs[k].name))
            return &mlp__outputs[k];
    return NULL;
}

const struct mlp__output *mlp__output_of(unsigned bit)
{
    for (size_t k = 0; k < MLP__NUM_OUTPUTS; k++)
        if (mlp__outputs[k].bit == bit)
            return &mlp__outputs[k];
    return NULL;
}

void mlp__output_list(char *buf, size_t size, int v2)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < MLP__NUM_OUTPUTS && used < size; k++)
        used += (size_t)snprintf(buf + used, size - used, k ? ", %s" : "%s",
                                 v2 ? mlp__outputs[k].v2_name : mlp__outputs[k].name);
}

void mlp__output_values(const struct ml_result *res, unsigned bit, struct mlp__values *v)
{
    const struct ml_array *a = NULL;
    memset(v, 0, sizeof(*v));
    switch (bit) {
    case ML_OUT_LOSS:
        if (res->loss_is_tensor)
            a = &res->loss_tensor;
        else
            v->scalar = res->loss;
        break;
    case ML_OUT_PER_ELEMENT:
        a = &res->per_element;
        break;
    case ML_OUT_PER_SAMPLE:
        a = &res->per_sample;
        break;
    case ML_OUT_PER_CLASS:
        a = &res->per_class;
        break;
    case ML_OUT_WEIGHTED_SUM:
        v->scalar = res->weighted_sum;
        break;
    case ML_OUT_SUM_WEIGHTS:
        v->scalar = res->sum_weights;
        break;
    case ML_OUT_NUM_NONZERO_WEIGHTS:
        v->scalar = res->num_nonzero_weights;
        break;
    }
    const struct mlp__output *o = mlp__output_of(bit);
    v->is_count = o && o->is_count;
    if (a) {
        v->is_tensor = 1;
        v->data = a->data;
        v->numel = a->numel;
        v->rank = a->rank;
        v->shape = a->shape;
    } else {
        v->data = &v->scalar;
        v->numel = 1;
    }
}
