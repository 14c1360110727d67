/*
 * catalogue.c -- every loss maskloss knows: names, parameters, reductions, weight rules.
 *
 * The table is static and read-only. Short canonical names are separate entries that
 * share everything with the entry they alias but their name.
 */
#include <math.h>
#include <string.h>

#include "internal.h"
#include "params.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The tables below are laid out by hand, one entry a line or macro. */
/* clang-format off */

/* ---- Reductions ------------------------------------------------------------------------ */

/* tf.compat.v1.losses.Reduction: the names and their string values
 * (losses_impl.py Reduction); SUM_OVER_NONZERO_WEIGHTS is an alias. */
static const struct ml__reduction tf_reds[] = {
    {"NONE", NULL, NULL, ML__DEN_NONE, 0},
    {"SUM", "weighted_sum", NULL, ML__DEN_ONE, 0},
    {"MEAN", "weighted_mean", NULL, ML__DEN_WEIGHTS, 0},
    {"SUM_OVER_BATCH_SIZE", "weighted_sum_over_batch_size", NULL, ML__DEN_COUNT, 0},
    {"SUM_BY_NONZERO_WEIGHTS", "SUM_OVER_NONZERO_WEIGHTS", "weighted_sum_by_nonzero_weights",
     ML__DEN_NONZERO, 0},
};
static const char *const tf_red_names[] = {"NONE", "SUM", "MEAN", "SUM_OVER_BATCH_SIZE",
                                           "SUM_BY_NONZERO_WEIGHTS",
                                           "SUM_OVER_NONZERO_WEIGHTS"};

/* tf.nn ops are elementwise; maskloss reduces them like compute_weighted_loss on request. */
static const struct ml__reduction tfnn_reds[] = {
    {"NONE", "ELEMENTWISE", NULL, ML__DEN_NONE, 0},
    {"SUM", "weighted_sum", NULL, ML__DEN_ONE, 0},
    {"MEAN", "weighted_mean", NULL, ML__DEN_WEIGHTS, 0},
    {"SUM_OVER_BATCH_SIZE", "weighted_sum_over_batch_size", NULL, ML__DEN_COUNT, 0},
    {"SUM_BY_NONZERO_WEIGHTS", "SUM_OVER_NONZERO_WEIGHTS", "weighted_sum_by_nonzero_weights",
     ML__DEN_NONZERO, 0},
};
static const char *const tfnn_red_names[] = {"NONE", "ELEMENTWISE", "SUM", "MEAN",
                                             "SUM_OVER_BATCH_SIZE", "SUM_BY_NONZERO_WEIGHTS",
                                             "SUM_OVER_NONZERO_WEIGHTS"};

/* keras/src/losses/loss.py reduce_values: divide_no_nan everywhere. */
static const struct ml__reduction keras3_reds[] = {
    {"sum_over_batch_size", NULL, NULL, ML__DEN_COUNT, 0},
    {"sum", NULL, NULL, ML__DEN_ONE, 0},
    {"none", NULL, NULL, ML__DEN_NONE, 0},
    {"mean", NULL, NULL, ML__DEN_COUNT, 0},
    {"mean_with_sample_weight", NULL, NULL, ML__DEN_RAW_SW, 0},
};
static const char *const keras3_red_names[] = {"sum_over_batch_size", "sum", "none", "mean",
                                               "mean_with_sample_weight"};

/* keras/utils/losses_utils.py ReductionV2 (AUTO means SUM_OVER_BATCH_SIZE for losses). */
static const struct ml__reduction keras2_reds[] = {
    {"sum_over_batch_size", "auto", NULL, ML__DEN_COUNT, 0},
    {"sum", NULL, NULL, ML__DEN_ONE, 0},
    {"none", NULL, NULL, ML__DEN_NONE, 0},
};
static const char *const keras2_red_names[] = {"sum_over_batch_size", "auto", "sum", "none"};

/* torch 'mean' divides by numel and gives NaN for an empty input. */
static const struct ml__reduction torch_reds[] = {
    {"mean", NULL, NULL, ML__DEN_COUNT, 1},
    {"sum", NULL, NULL, ML__DEN_ONE, 1},
    {"none", NULL, NULL, ML__DEN_NONE, 1},
};
static const char *const torch_red_names[] = {"mean", "sum", "none"};

/* torch cross_entropy 'mean' divides by the sum of the targets' class weights (NaN when
 * every target is ignored, pytorch/pytorch#70348). */
static const struct ml__reduction torch_ce_reds[] = {
    {"mean", NULL, NULL, ML__DEN_EXPLICIT, 1},
    {"sum", NULL, NULL, ML__DEN_ONE, 1},
    {"none", NULL, NULL, ML__DEN_NONE, 1},
};

/* ASL's AsymmetricLoss returns -sum; mean and none are maskloss extensions. */
static const struct ml__reduction asl_reds[] = {
    {"sum", NULL, NULL, ML__DEN_ONE, 1},
    {"mean", NULL, NULL, ML__DEN_COUNT, 1},
    {"none", NULL, NULL, ML__DEN_NONE, 1},
};
static const char *const asl_red_names[] = {"sum", "mean", "none"};

/* ---- Parameters ------------------------------------------------------------------------ */

#define REQUIRED NAN

static const struct ml_param_info tf_sce_params[] = {
    {"label_smoothing", ML_PARAM_NUMBER, 0.0,
     "labels become z*(1-ls)+0.5*ls when ls > 0 (values <= 0 leave them unchanged)"},
};
static const struct ml_param_info tf_softmax_params[] = {
    {"label_smoothing", ML_PARAM_NUMBER, 0.0,
     "labels become y*(1-ls)+ls/K when ls > 0, K = shape(labels)[1]"},
};
static const struct ml_param_info tf_log_loss_params[] = {
    {"epsilon", ML_PARAM_NUMBER, 1e-7, "added inside both logs (no clipping)"},
};
static const struct ml_param_info tf_huber_params[] = {
    {"delta", ML_PARAM_NUMBER, 1.0, "where the loss turns from quadratic to linear"},
};
static const struct ml_param_info tfnn_weighted_params[] = {
    {"pos_weight", ML_PARAM_TENSOR, REQUIRED,
     "required: multiplies the positive term; a number or a tensor broadcastable to logits"},
};
static const struct ml_param_info keras_bce_params[] = {
    {"from_logits", ML_PARAM_BOOL, 0, "y_pred holds logits (send `logits`) rather than "
                                      "probabilities (send `predictions`)"},
    {"label_smoothing", ML_PARAM_NUMBER, 0.0, "labels become y*(1-ls)+0.5*ls when ls != 0"},
    {"axis", ML_PARAM_NUMBER, -1, "the axis the elementwise loss is averaged over"},
};
static const struct ml_param_info keras_focal_params[] = {
    {"apply_class_balancing", ML_PARAM_BOOL, 0, "weigh positives by alpha, negatives by 1-alpha"},
    {"alpha", ML_PARAM_NUMBER, 0.25, "the balancing weight (used only with apply_class_balancing)"},
    {"gamma", ML_PARAM_NUMBER, 2.0, "the focusing exponent of (1 - p_t)"},
    {"from_logits", ML_PARAM_BOOL, 0, "y_pred holds logits rather than probabilities"},
    {"label_smoothing", ML_PARAM_NUMBER, 0.0, "labels become y*(1-ls)+0.5*ls when ls != 0"},
    {"axis", ML_PARAM_NUMBER, -1, "the axis the elementwise loss is averaged over"},
};
static const struct ml_param_info keras_cce_params[] = {
    {"from_logits", ML_PARAM_BOOL, 0, "y_pred holds logits rather than probabilities"},
    {"label_smoothing", ML_PARAM_NUMBER, 0.0, "labels become y*(1-ls)+ls/K when ls != 0"},
    {"axis", ML_PARAM_NUMBER, -1, "the class axis"},
};
static const struct ml_param_info torch_bce_params[] = {
    {"pos_weight", ML_PARAM_TENSOR, 1.0,
     "weight of the positive term; a number or a tensor broadcastable with labels ([C] is per "
     "class)"},
};
static const struct ml_param_info torch_ce_params[] = {
    {"ignore_index", ML_PARAM_NUMBER, -100, "class-index targets equal to it are skipped"},
    {"label_smoothing", ML_PARAM_NUMBER, 0.0,
     "at most 1: targets mixed with the uniform 1/C (<= 0: none)"},
};
static const struct ml_param_info tv_focal_params[] = {
    {"alpha", ML_PARAM_NUMBER, 0.25,
     "alpha >= 0 weighs positives by alpha and negatives by 1 - alpha (any value, as "
     "torchvision applies it); below 0: no weighting"},
    {"gamma", ML_PARAM_NUMBER, 2.0, "the focusing exponent of (1 - p_t)"},
};
static const struct ml_param_info asl_params[] = {
    {"gamma_neg", ML_PARAM_NUMBER, 4, "focusing exponent of negatives"},
    {"gamma_pos", ML_PARAM_NUMBER, 1, "focusing exponent of positives"},
    {"clip", ML_PARAM_NUMBER, 0.05, "probability margin added to negatives when > 0"},
    {"eps", ML_PARAM_NUMBER, 1e-8, "lower clamp of the probabilities inside the logs"},
    {"disable_torch_grad_focal_loss", ML_PARAM_BOOL, 1,
     "accepted for compatibility: affects gradients only, never the value"},
};

/* params.c parses into arrays of ML__MAX_PARAMS. */
_Static_assert(COUNT(tf_sce_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(tf_softmax_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(tf_log_loss_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(tf_huber_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(tfnn_weighted_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(keras_bce_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(keras_focal_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(keras_cce_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(torch_bce_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(torch_ce_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(tv_focal_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");
_Static_assert(COUNT(asl_params) <= ML__MAX_PARAMS, "ML__MAX_PARAMS");

/* ---- Weight rules, as the catalogue documents them ------------------------------------ */

static const char w_tf[] =
    "tf weights_broadcast_ops: a scalar, or the rank of the loss with each dim 1 or equal";
static const char w_tf_per_sample[] =
    "tf weights_broadcast_ops against the per-sample loss [N]: a scalar, [N] or [1]";
static const char w_tf_sparse[] =
    "tf: [N,1] is squeezed to [N]; then a scalar, [N] or [1] against the per-sample loss";
static const char w_keras3[] =
    "keras 3 sample_weight: squeeze_or_expand_to_same_rank against the per-sample loss, "
    "then numpy broadcasting to it";
static const char w_keras2[] =
    "keras 2 sample_weight: rank+1 squeezed, rank-1 expanded, then numpy broadcasting";
static const char w_torch[] = "torch weight: numpy broadcasting to the input shape ([C] is "
                              "per class, [N,1] per sample)";
static const char w_torch_ce[] = "torch weight: one weight per class, shape [C]";
static const char w_ext[] =
    "maskloss extension (the reference takes no weights): numpy broadcasting to the input "
    "shape, multiplying the elementwise loss";

/* ---- The table ------------------------------------------------------------------------- */

#define PARAMS(p) p, COUNT(p)
#define NOPARAMS NULL, 0
#define REDS(names) names, COUNT(names)

#define TF_V1(NAME, ALIAS, ID, DOC, INPUT, ...)                                                \
    {{NAME, ALIAS, "tensorflow", DOC, INPUT, 1, w_tf, __VA_ARGS__, REDS(tf_red_names),          \
      "SUM_BY_NONZERO_WEIGHTS"},                                                               \
     ID, ML__W_TF, tf_reds, COUNT(tf_reds), 1}

#define Q_TF "tf.compat.v1.losses."

#define E_TF_SCE(N, A)                                                                         \
    TF_V1(N, A, ML__TF_SIGMOID_CE,                                                             \
          "max(x,0) - x*z + log1p(exp(-|x|)) (tf.nn.sigmoid_cross_entropy_with_logits), "     \
          "then compute_weighted_loss",                                                        \
          ML_INPUT_LOGITS, PARAMS(tf_sce_params))
#define E_TF_SOFTMAX(N, A)                                                                     \
    {{N, A, "tensorflow",                                                                      \
      "-sum(y * log_softmax(x)) over the last axis, per sample; weights against [N]",          \
      ML_INPUT_LOGITS, 1, w_tf_per_sample, PARAMS(tf_softmax_params), REDS(tf_red_names),      \
      "SUM_BY_NONZERO_WEIGHTS"},                                                               \
     ML__TF_SOFTMAX_CE, ML__W_TF, tf_reds, COUNT(tf_reds), 0}
#define E_TF_SPARSE(N, A)                                                                      \
    {{N, A, "tensorflow", "-log_softmax(x)[label] per sample; labels are class indices",        \
      ML_INPUT_LOGITS, 1, w_tf_sparse, NULL, 0, REDS(tf_red_names), "SUM_BY_NONZERO_WEIGHTS"},  \
     ML__TF_SPARSE_SOFTMAX_CE, ML__W_TF, tf_reds, COUNT(tf_reds), 0}
#define E_TF_LOG(N, A)                                                                         \
    TF_V1(N, A, ML__TF_LOG_LOSS, "-z*log(p+eps) - (1-z)*log(1-p+eps)", ML_INPUT_PREDICTIONS,   \
          PARAMS(tf_log_loss_params))
#define E_TF_MSE(N, A)                                                                         \
    TF_V1(N, A, ML__TF_MSE, "(p - z)^2", ML_INPUT_PREDICTIONS, NOPARAMS)
#define E_TF_ABS(N, A)                                                                         \
    TF_V1(N, A, ML__TF_ABSDIFF, "|p - z|", ML_INPUT_PREDICTIONS, NOPARAMS)
#define E_TF_HUBER(N, A)                                                                       \
    TF_V1(N, A, ML__TF_HUBER, "0.5*q^2 + delta*(|p-z| - q), q = min(|p-z|, delta)",            \
          ML_INPUT_PREDICTIONS, PARAMS(tf_huber_params))
#define E_TF_HINGE(N, A)                                                                       \
    TF_V1(N, A, ML__TF_HINGE, "relu(1 - (2z-1)*x)", ML_INPUT_LOGITS, NOPARAMS)
#define E_TF_CWL(N, A)                                                                         \
    {{N, A, "tensorflow", "reduces a precomputed `losses` tensor with `weights`",              \
      ML_INPUT_LOSSES, 0, w_tf, NULL, 0, REDS(tf_red_names), "SUM_BY_NONZERO_WEIGHTS"},         \
     ML__TF_CWL, ML__W_TF, tf_reds, COUNT(tf_reds), 1}
#define E_TFNN_WEIGHTED(N, A)                                                                  \
    {{N, A, "tensorflow",                                                                      \
      "(1-z)*x + (1+(q-1)*z)*(log1p(exp(-|x|)) + max(-x,0)); elementwise unless weights or a " \
      "reduction are given (then compute_weighted_loss, default SUM_BY_NONZERO_WEIGHTS)",      \
      ML_INPUT_LOGITS, 1, w_tf, PARAMS(tfnn_weighted_params), REDS(tfnn_red_names), "NONE"},   \
     ML__TFNN_WEIGHTED, ML__W_TF, tfnn_reds, COUNT(tfnn_reds), 1}
#define E_K3(N, A, ID, DOC, PARAMSPEC)                                                         \
    {{N, A, "keras3", DOC, ML_INPUT_KERAS, 1, w_keras3, PARAMSPEC, REDS(keras3_red_names),      \
      "sum_over_batch_size"},                                                                  \
     ID, ML__W_KERAS3, keras3_reds, COUNT(keras3_reds), 0}
#define E_K3_BCE(N, A)                                                                         \
    E_K3(N, A, ML__K3_BCE,                                                                     \
         "mean over axis of binary cross-entropy (probabilities clipped to [1e-7, 1-1e-7])",   \
         PARAMS(keras_bce_params))
#define E_K3_FOCAL(N, A)                                                                       \
    E_K3(N, A, ML__K3_FOCAL,                                                                   \
         "mean over axis of (1-p_t)^gamma * clipped BCE [* alpha_t]",                          \
         PARAMS(keras_focal_params))
#define E_K3_CCE(N, A)                                                                         \
    E_K3(N, A, ML__K3_CCE,                                                                     \
         "-sum(y * log o) over axis; o = softmax(x), or p renormalised and clipped",           \
         PARAMS(keras_cce_params))
#define E_TORCH_BCE(N, A)                                                                      \
    {{N, A, "pytorch", "(1-z)*x - (1+(pos_weight-1)*z) * log_sigmoid(x), times weight",        \
      ML_INPUT_LOGITS, 1, w_torch, PARAMS(torch_bce_params), REDS(torch_red_names), "mean"},   \
     ML__TORCH_BCE, ML__W_NUMPY, torch_reds, COUNT(torch_reds), 1}
#define E_TORCH_CE(N, A)                                                                       \
    {{N, A, "pytorch",                                                                         \
      "-w[y]*log_softmax(x)[y] over the class dim 1 (class-index targets), or "                \
      "-sum(w*t*log_softmax(x)) (probability targets, same shape as logits)",                  \
      ML_INPUT_LOGITS, 1, w_torch_ce, PARAMS(torch_ce_params), REDS(torch_red_names), "mean"}, \
     ML__TORCH_CE, ML__W_CLASS, torch_ce_reds, COUNT(torch_ce_reds), 0}
#define E_TV_FOCAL(N, A)                                                                       \
    {{N, A, "torchvision", "bce_with_logits * (1-p_t)^gamma * alpha_t (alpha >= 0)",           \
      ML_INPUT_LOGITS, 1, w_ext, PARAMS(tv_focal_params), REDS(torch_red_names), "none"},      \
     ML__TV_FOCAL, ML__W_NUMPY, torch_reds, COUNT(torch_reds), 1}
#define E_ASL(N, A)                                                                            \
    {{N, A, "asl",                                                                             \
      "-sum(z*log(max(p,eps)) + (1-z)*log(max(p_neg,eps))) with asymmetric focusing and "      \
      "probability shifting (Alibaba-MIIL/ASL AsymmetricLoss)",                                \
      ML_INPUT_LOGITS, 1, w_ext, PARAMS(asl_params), REDS(asl_red_names), "sum"},              \
     ML__ASL, ML__W_NUMPY, asl_reds, COUNT(asl_reds), 1}

static const struct ml__loss_def table[] = {
    E_TF_SCE(Q_TF "sigmoid_cross_entropy", NULL),
    E_TF_SOFTMAX(Q_TF "softmax_cross_entropy", NULL),
    E_TF_SPARSE(Q_TF "sparse_softmax_cross_entropy", NULL),
    E_TF_LOG(Q_TF "log_loss", NULL),
    E_TF_MSE(Q_TF "mean_squared_error", NULL),
    E_TF_ABS(Q_TF "absolute_difference", NULL),
    E_TF_HUBER(Q_TF "huber_loss", NULL),
    E_TF_HINGE(Q_TF "hinge_loss", NULL),
    E_TF_CWL(Q_TF "compute_weighted_loss", NULL),
    {{"tf.nn.sigmoid_cross_entropy_with_logits", NULL, "tensorflow",
      "max(x,0) - x*z + log1p(exp(-|x|)); elementwise unless weights or a reduction are given "
      "(then compute_weighted_loss, default SUM_BY_NONZERO_WEIGHTS)",
      ML_INPUT_LOGITS, 1, w_tf, NULL, 0, REDS(tfnn_red_names), "NONE"},
     ML__TFNN_SIGMOID, ML__W_TF, tfnn_reds, COUNT(tfnn_reds), 1},
    E_TFNN_WEIGHTED("tf.nn.weighted_cross_entropy_with_logits", NULL),
    E_K3_BCE("keras3.losses.BinaryCrossentropy", NULL),
    E_K3_FOCAL("keras3.losses.BinaryFocalCrossentropy", NULL),
    E_K3_CCE("keras3.losses.CategoricalCrossentropy", NULL),
    E_K3_BCE("keras.losses.BinaryCrossentropy", "keras3.losses.BinaryCrossentropy"),
    E_K3_FOCAL("keras.losses.BinaryFocalCrossentropy", "keras3.losses.BinaryFocalCrossentropy"),
    E_K3_CCE("keras.losses.CategoricalCrossentropy", "keras3.losses.CategoricalCrossentropy"),
    {{"keras2.losses.BinaryCrossentropy", NULL, "keras2",
      "mean over axis of binary cross-entropy; probabilities clipped to [1e-7, 1-1e-7] and "
      "1e-7 added inside the logs",
      ML_INPUT_KERAS, 1, w_keras2, PARAMS(keras_bce_params), REDS(keras2_red_names),
      "sum_over_batch_size"},
     ML__K2_BCE, ML__W_KERAS2, keras2_reds, COUNT(keras2_reds), 0},
    {{"keras2.losses.BinaryFocalCrossentropy", NULL, "keras2",
      "mean over axis of (1-p_t)^gamma * BCE [* alpha_t]; the exact BCE from logits",
      ML_INPUT_KERAS, 1, w_keras2, PARAMS(keras_focal_params), REDS(keras2_red_names),
      "sum_over_batch_size"},
     ML__K2_FOCAL, ML__W_KERAS2, keras2_reds, COUNT(keras2_reds), 0},
    E_TORCH_BCE("torch.nn.functional.binary_cross_entropy_with_logits", NULL),
    E_TORCH_CE("torch.nn.functional.cross_entropy", NULL),
    E_TV_FOCAL("torchvision.ops.sigmoid_focal_loss", NULL),
    E_ASL("ASL.AsymmetricLoss", NULL),

    /* Short canonical names. */
    E_TF_SCE("sigmoid_cross_entropy", Q_TF "sigmoid_cross_entropy"),
    E_TF_SOFTMAX("softmax_cross_entropy", Q_TF "softmax_cross_entropy"),
    E_TF_SPARSE("sparse_softmax_cross_entropy", Q_TF "sparse_softmax_cross_entropy"),
    E_TF_LOG("log_loss", Q_TF "log_loss"),
    E_TF_MSE("mean_squared_error", Q_TF "mean_squared_error"),
    E_TF_ABS("absolute_difference", Q_TF "absolute_difference"),
    E_TF_HUBER("huber_loss", Q_TF "huber_loss"),
    E_TF_HINGE("hinge_loss", Q_TF "hinge_loss"),
    E_TF_CWL("compute_weighted_loss", Q_TF "compute_weighted_loss"),
    E_TFNN_WEIGHTED("weighted_cross_entropy", "tf.nn.weighted_cross_entropy_with_logits"),
    E_K3_BCE("binary_crossentropy", "keras3.losses.BinaryCrossentropy"),
    E_K3_FOCAL("binary_focal_crossentropy", "keras3.losses.BinaryFocalCrossentropy"),
    E_K3_CCE("categorical_crossentropy", "keras3.losses.CategoricalCrossentropy"),
    E_TORCH_BCE("binary_cross_entropy_with_logits",
                "torch.nn.functional.binary_cross_entropy_with_logits"),
    E_TORCH_CE("cross_entropy", "torch.nn.functional.cross_entropy"),
    E_TV_FOCAL("sigmoid_focal_loss", "torchvision.ops.sigmoid_focal_loss"),
    E_ASL("asymmetric_loss", "ASL.AsymmetricLoss"),
};

/* clang-format on */

size_t ml_loss_count(void)
{
    return COUNT(table);
}

const struct ml_loss_info *ml_loss_at(size_t i)
{
    return i < COUNT(table) ? &table[i].info : NULL;
}

const struct ml_loss_info *ml_loss_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < COUNT(table); i++)
        if (strcmp(table[i].info.name, name) == 0)
            return &table[i].info;
    return NULL;
}

const struct ml__loss_def *ml__loss_def(const struct ml_loss_info *info)
{
    /* info is the first member of its definition (and every info comes from `table`). */
    return (const struct ml__loss_def *)(const void *)info;
}
