/*
 * params.h -- a request's parameters, validated against the catalogue entry.
 */
#ifndef ML_PARAMS_H
#define ML_PARAMS_H

#include "internal.h"

#define ML__MAX_PARAMS 8

/* Values by the position of their spec in info->params; defaults filled in. */
struct ml__params {
    double number[ML__MAX_PARAMS];                  /* NUMBER, BOOL (0/1), scalar TENSOR */
    const struct ml_tensor *tensor[ML__MAX_PARAMS]; /* TENSOR given as a tensor, else NULL */
    int given[ML__MAX_PARAMS];
};

/* Checks names (unknown -> ML_EUNKNOWN_PARAM), duplicates, kinds, finiteness and required
 * parameters. */
int ml__params_parse(const struct ml_loss_info *info, const struct ml_request *req,
                     struct ml__params *p, struct ml_error *err);

/* The value of a parameter by name (fallback when the loss has no such parameter). */
double ml__param(const struct ml_loss_info *info, const struct ml__params *p, const char *name,
                 double fallback);

int ml__param_given(const struct ml_loss_info *info, const struct ml__params *p, const char *name);

const struct ml_tensor *ml__param_tensor(const struct ml_loss_info *info,
                                         const struct ml__params *p, const char *name);

/* The value as an integer; ML_EPARAM when it has a fractional part. */
int ml__param_integer(const struct ml_loss_info *info, const struct ml__params *p, const char *name,
                      int64_t *out, struct ml_error *err);

#endif /* ML_PARAMS_H */
