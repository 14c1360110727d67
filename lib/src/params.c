/*
 * params.c -- matching a request's parameters against the loss's catalogue entry.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "params.h"
#include "tensor.h"

static int is_integral(double v)
{
    return isfinite(v) && floor(v) == v && fabs(v) < 9.0e15;
}

/*
 * The value of a parameter given as a rank-0 tensor, through its dtype (ml__tensor_get): a
 * number spelled as a tensor. Anything else -- another rank, no data, no known dtype -- is
 * ML_EPARAM naming the field.
 */
static int scalar_value(const struct ml_param *given, const char *field, const char *name,
                        double *out, struct ml_error *err)
{
    const struct ml_tensor *t = &given->tensor;
    if (!ml_dtype_size(t->dtype))
        return ml__fail(err, ML_EPARAM, field, -1, "'%s' is a tensor of an unknown dtype (%d)",
                        name, (int)t->dtype);
    if (t->rank != 0) {
        char s[160] = "";
        if (t->rank > 0 && t->rank <= ML_MAX_RANK)
            ml__shape_str(s, sizeof(s), t->rank, t->shape);
        return ml__fail(err, ML_EPARAM, field, -1,
                        "'%s' must be a number or a rank-0 tensor, got a tensor of rank %d %s",
                        name, t->rank, s);
    }
    if (!t->data)
        return ml__fail(err, ML_EPARAM, field, -1, "'%s' is a rank-0 tensor without data", name);
    *out = ml__tensor_get(t, 0);
    return 0;
}

static void list_names(const struct ml_loss_info *info, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < info->num_params && used < size; i++)
        used +=
            (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", info->params[i].name);
    if (info->num_params == 0)
        snprintf(buf, size, "none");
}

/* Values by the position of their spec in info->params, defaults filled in. */
struct raw_params {
    double number[ML__MAX_PARAMS];                  /* NUMBER, BOOL (0/1), scalar TENSOR */
    const struct ml_tensor *tensor[ML__MAX_PARAMS]; /* TENSOR given as a tensor, else NULL */
    int given[ML__MAX_PARAMS];
};

/* Where each parameter name of the catalogue goes in struct ml__params. */
enum slot_kind { SLOT_REAL, SLOT_BOOL, SLOT_INT, SLOT_POS_WEIGHT, SLOT_NONE };

static const struct slot {
    const char *name;
    enum slot_kind kind;
    size_t offset;
} slots[] = {
    {"label_smoothing", SLOT_REAL, offsetof(struct ml__params, label_smoothing)},
    {"gamma", SLOT_REAL, offsetof(struct ml__params, focal.gamma)},
    {"alpha", SLOT_REAL, offsetof(struct ml__params, focal.alpha)},
    {"apply_class_balancing", SLOT_BOOL, offsetof(struct ml__params, focal.apply_class_balancing)},
    {"gamma_neg", SLOT_REAL, offsetof(struct ml__params, asl.gamma_neg)},
    {"gamma_pos", SLOT_REAL, offsetof(struct ml__params, asl.gamma_pos)},
    {"clip", SLOT_REAL, offsetof(struct ml__params, asl.clip)},
    {"eps", SLOT_REAL, offsetof(struct ml__params, asl.eps)},
    {"epsilon", SLOT_REAL, offsetof(struct ml__params, epsilon)},
    {"delta", SLOT_REAL, offsetof(struct ml__params, delta)},
    {"from_logits", SLOT_BOOL, offsetof(struct ml__params, keras.from_logits)},
    {"axis", SLOT_INT, offsetof(struct ml__params, keras.axis)},
    {"ignore_index", SLOT_INT, offsetof(struct ml__params, ignore_index)},
    {"pos_weight", SLOT_POS_WEIGHT, offsetof(struct ml__params, pos_weight)},
    /* ASL's switch of gradients only: accepted, never changes a value. */
    {"disable_torch_grad_focal_loss", SLOT_NONE, 0},
};

/* Copies the matched values into their typed fields. */
static int fill_slots(const struct ml_loss_info *info, const struct raw_params *raw,
                      struct ml__params *p, struct ml_error *err)
{
    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < info->num_params; i++) {
        const char *name = info->params[i].name;
        const struct slot *s = NULL;
        for (size_t k = 0; k < sizeof(slots) / sizeof(slots[0]) && !s; k++)
            if (!strcmp(slots[k].name, name))
                s = &slots[k];
        if (!s) /* a catalogue entry out of step with this table: test_catalogue catches it */
            return ml__fail(err, ML_EINVAL, "params", -1,
                            "internal: parameter '%s' of %s has no field", name, info->name);
        char *field = (char *)p + s->offset;
        double v = raw->number[i];
        switch (s->kind) {
        case SLOT_REAL:
            memcpy(field, &v, sizeof(v));
            break;
        case SLOT_BOOL: {
            int b = v != 0;
            memcpy(field, &b, sizeof(b));
            if (s->offset == offsetof(struct ml__params, keras.from_logits))
                p->keras.from_logits_given = raw->given[i];
            break;
        }
        case SLOT_INT: {
            if (!is_integral(v)) {
                char fname[64];
                snprintf(fname, sizeof(fname), "params.%s", name);
                return ml__fail(err, ML_EPARAM, fname, -1, "'%s' must be an integer, got %g", name,
                                v);
            }
            int64_t n = (int64_t)v;
            memcpy(field, &n, sizeof(n));
            break;
        }
        case SLOT_POS_WEIGHT:
            p->pos_weight.given = raw->given[i];
            p->pos_weight.number = v;
            p->pos_weight.tensor = raw->tensor[i];
            break;
        case SLOT_NONE:
            break;
        }
    }
    return 0;
}

int ml__params_parse(const struct ml_loss_info *info, const struct ml_request *req,
                     struct ml__params *typed, struct ml_error *err)
{
    struct raw_params raw, *p = &raw;
    memset(p, 0, sizeof(*p));
    for (size_t i = 0; i < info->num_params && i < ML__MAX_PARAMS; i++)
        p->number[i] = info->params[i].default_value;

    for (size_t j = 0; j < req->num_params; j++) {
        const struct ml_param *given = &req->params[j];
        char field[64];
        snprintf(field, sizeof(field), "params.%s", given->name ? given->name : "");
        size_t i = 0;
        while (i < info->num_params && (!given->name || strcmp(info->params[i].name, given->name)))
            i++;
        if (i == info->num_params) {
            char names[256];
            list_names(info, names, sizeof(names));
            return ml__fail(err, ML_EUNKNOWN_PARAM, field, -1,
                            "%s takes no parameter '%s' (it takes: %s)", info->name,
                            given->name ? given->name : "", names);
        }
        if (p->given[i])
            return ml__fail(err, ML_EPARAM, field, -1, "parameter '%s' is given twice",
                            given->name);
        p->given[i] = 1;
        const struct ml_param_info *spec = &info->params[i];
        switch (spec->kind) {
        case ML_PARAM_BOOL:
            if (given->kind != ML_PARAM_BOOL)
                return ml__fail(err, ML_EPARAM, field, -1, "'%s' must be a boolean (true or false)",
                                spec->name);
            p->number[i] = given->boolean ? 1 : 0;
            break;
        case ML_PARAM_NUMBER:
            if (given->kind == ML_PARAM_TENSOR) {
                int rc = scalar_value(given, field, spec->name, &p->number[i], err);
                if (rc)
                    return rc;
            } else if (given->kind == ML_PARAM_NUMBER) {
                p->number[i] = given->number;
            } else {
                return ml__fail(err, ML_EPARAM, field, -1, "'%s' must be a number", spec->name);
            }
            if (!isfinite(p->number[i]))
                return ml__fail(err, ML_EPARAM, field, -1, "'%s' must be a finite number",
                                spec->name);
            break;
        case ML_PARAM_TENSOR:
            /* A rank-0 tensor is a number: the same value, the same paths, the same bits. */
            if (given->kind == ML_PARAM_NUMBER ||
                (given->kind == ML_PARAM_TENSOR && given->tensor.rank == 0)) {
                p->number[i] = given->number;
                if (given->kind == ML_PARAM_TENSOR) {
                    int rc = scalar_value(given, field, spec->name, &p->number[i], err);
                    if (rc)
                        return rc;
                }
                /* As a tensor of the request's dtype would be checked (view.c's view_check),
                 * on the fused path as on the general one: a finite double that overflows
                 * float32 is infinite there. */
                double v = p->number[i];
                int overflows = req->dtype == ML_FLOAT32 && isfinite(v) && !isfinite((float)v);
                if ((!isfinite(v) || overflows) && !req->allow_non_finite)
                    return ml__fail(err, ML_ENONFINITE, field, 0,
                                    "'%s' is %s; non-finite inputs are rejected unless "
                                    "\"allow_non_finite\": true",
                                    spec->name,
                                    overflows ? "finite but overflows float32" : "not finite");
            } else if (given->kind == ML_PARAM_TENSOR) {
                p->tensor[i] = &given->tensor;
            } else {
                return ml__fail(err, ML_EPARAM, field, -1, "'%s' must be a number or a tensor",
                                spec->name);
            }
            break;
        }
    }
    for (size_t i = 0; i < info->num_params; i++)
        if (isnan(info->params[i].default_value) && !p->given[i])
            return ml__fail(err, ML_EPARAM, "params", -1, "%s requires the parameter '%s'",
                            info->name, info->params[i].name);
    return fill_slots(info, p, typed, err);
}
