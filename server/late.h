/*
 * late.h -- late and partial labels: a model's outputs stored at serving time, each label
 * (one class of one prediction, or a prediction's class for a per-sample loss) joined to them
 * when it arrives, minutes or days later.
 *
 * A stored prediction counts in its monitor from the start, unlabelled: a row whose weights
 * are all zero (its elements, its samples and the denominators that count them). When labels
 * arrive, the row is evaluated again with every label it now has, and the difference (new
 * row minus old row, each one ml_eval of one row) is added to the bucket and slice of the
 * prediction. The monitor's sums are then, at every moment, those of one /v1/loss call over
 * every stored output with the labels known so far as labels and their weights as the mask:
 * the masked loss of the note, with labels that arrive late. A label given again replaces
 * the old one the same way (the old row's sums are subtracted).
 */
#ifndef MLS_LATE_H
#define MLS_LATE_H

#include <stddef.h>
#include <stdint.h>

#include "maskloss.h"
#include "mlp.h"

/* How a loss takes a prediction's labels. */
enum mls_late_kind {
    MLS_LATE_NONE = 0,    /* no late labels: its weights cannot mask one position */
    MLS_LATE_ELEMENTWISE, /* a label and weight per (prediction, class) */
    MLS_LATE_ONEHOT,      /* per sample: one-hot labels, a weight per sample */
    MLS_LATE_INDEX,       /* per sample: a class index, a weight per sample */
    MLS_LATE_TORCH_CE     /* per sample: a class index, ignore_index when unknown; no weight */
};

/* The kind of a loss (any name of the catalogue); whether its labels are any real number
 * (regression losses) rather than in [0, 1]. */
enum mls_late_kind mls_late_kind_of(const char *loss);
int mls_late_regression(const char *loss);

/* A label known for a prediction: its class, value and weight, and the time the first label
 * of that class arrived (for the label delay). Per-sample losses keep one, of class cls. */
struct mls_label {
    int32_t cls;
    double value, weight;
    double first;
};

/*
 * Label delays: first labels' (label time - prediction time), counted in a histogram of
 * quarter-octave bins from about a millisecond to four years: bin 0 below 2^-10 s, bin k in
 * [2^((k-1)/4 - 10), 2^(k/4 - 10)) s, the last from 2^27 s on.
 */
#define MLS_DELAY_BINS 150
#define MLS_DELAY_LOG2_MIN (-10)
int mls_delay_bin(double seconds);
/* A bin's value: the geometric middle of its bounds (bin 0: 0; the last: its lower bound),
 * within 9 % of every delay of the bin. */
double mls_delay_bin_value(int bin);

/* What a row evaluation needs of the monitor: its config and the decoded params. */
struct mls_late_ctx {
    const char *loss, *reduction;
    enum mls_late_kind kind;
    enum ml_dtype dtype;
    int predictions; /* the outputs are `predictions` (probabilities), not `logits` */
    int64_t num_classes;
    double ignore_index; /* torch cross_entropy */
    const struct ml_param *params;
    size_t num_params;
};

/*
 * Evaluates one stored row (num_classes outputs of ctx->dtype) with its labels (n of them;
 * none: unlabelled) into *total and classes[num_classes] (per class: elementwise losses by
 * position, per-sample losses by the labelled class). work holds 3 * num_classes doubles.
 * Returns 0, or the library's status with err filled.
 */
int mls_late_row(const struct mls_late_ctx *ctx, const void *outputs,
                 const struct mls_label *labels, size_t n, struct ml_sums *total,
                 struct ml_sums *classes, double *work, struct ml_error *err);

/*
 * Evaluates k positions of an elementwise loss at once (ctx->kind MLS_LATE_ELEMENTWISE), each
 * on its own: position i is the output inputs[i] (ctx->dtype) of class cls[i], with label
 * labels[i] and weight weights[i]; the per-class params are taken at cls[i]. pos[i] receives
 * position i's sums, the same bits as its class's sums in an evaluation of its whole row
 * (an elementwise loss of an element depends on that element alone). Returns 0, or the
 * library's status with err filled.
 */
int mls_late_positions(const struct mls_late_ctx *ctx, int64_t k, const void *inputs,
                       const int32_t *cls, const double *labels, const double *weights,
                       struct ml_sums *pos, struct ml_error *err);

/*
 * Whether stored outputs can take labels: for an elementwise loss, the loss of every output
 * is finite with the label 0 and with the label 1 (log_loss of a probability outside [0, 1]
 * is not). rows x num_classes outputs of ctx->dtype. Returns 0; 1 with *bad the index of the
 * first output that is not; or the library's status with err filled.
 */
int mls_late_check_rows(const struct mls_late_ctx *ctx, int64_t rows, const void *outputs,
                        int64_t *bad, struct ml_error *err);

/* Element i of a tensor, as a double. */
double mls_tensor_at(const struct ml_tensor *t, int64_t i);

#endif /* MLS_LATE_H */
