/*
 * params.h -- a request's parameters, validated against the loss's catalogue entry and
 * parsed once into typed fields.
 */
#ifndef ML_PARAMS_H
#define ML_PARAMS_H

#include "internal.h"

/* The most parameters a catalogue entry has (static-asserted per table in catalogue.c). */
#define ML__MAX_PARAMS 8

/*
 * The parameters of a request, by family. Each field holds the catalogue's default for the
 * loss, or the request's value; a field of a family the loss is not in holds 0. Nothing reads
 * a parameter by name after ml__params_parse.
 */
struct ml__params {
    /* Labels mixed with the uniform: TF sigmoid and softmax CE, Keras, torch cross_entropy. */
    double label_smoothing;
    /* Focal losses (torchvision, Keras): the power of 1 - p_t and the class balance. */
    struct {
        double gamma, alpha;
        int apply_class_balancing; /* Keras; torchvision applies any alpha >= 0 */
    } focal;
    /* ASL (Alibaba-MIIL AsymmetricLoss). */
    struct {
        double gamma_neg, gamma_pos, clip, eps;
    } asl;
    /* TF v1: log_loss's epsilon, huber_loss's delta. */
    double epsilon, delta;
    /* Keras: y_pred holds logits (and whether the request said either way), the loss axis. */
    struct {
        int from_logits, from_logits_given;
        int64_t axis;
    } keras;
    /* torch cross_entropy: the class index of targets to skip. */
    int64_t ignore_index;
    /* pos_weight of torch BCE and tf.nn.weighted_cross_entropy_with_logits: not given (torch's
     * None), a number, or a tensor (any rank but 0: a rank-0 tensor is its number). */
    struct {
        int given;
        double number;
        const struct ml_tensor *tensor;
    } pos_weight;
};

/*
 * Matches the request's parameters against the catalogue entry (unknown -> ML_EUNKNOWN_PARAM,
 * a name given twice, the wrong kind, a non-finite or non-integral value, a missing required
 * one -> ML_EPARAM, a non-finite pos_weight -> ML_ENONFINITE unless allowed) and fills p.
 */
int ml__params_parse(const struct ml_loss_info *info, const struct ml_request *req,
                     struct ml__params *p, struct ml_error *err);

#endif /* ML_PARAMS_H */
