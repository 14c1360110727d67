/*
 * softmax.h -- the fused path of the softmax family: the loss of each row straight into the
 * sums, with no per-sample array and no second pass (softmax.c plans it, kernels.h runs it,
 * built once per instruction set like the other kernels: simd.h).
 *
 * The rows are computed by the general path's own function (kernels.h softmax_row) and summed
 * in reduce.c's order (sample i to lane i mod 16, blocks of ML__BLOCK folded into chunks of
 * ML__CHUNK samples merged in order), so both paths give the same bits. The work is shared
 * out by blocks, each summed into lanes of its own, folded in order afterwards: the bits do
 * not depend on how many threads ran them, and a request of a few long rows (1000 classes:
 * a chunk is 65M elements) still splits.
 */
#ifndef ML_SOFTMAX_H
#define ML_SOFTMAX_H

#include "eval.h"
#include "internal.h"

enum ml__softmax_weights {
    ML__SW_NONE,   /* weight 1 */
    ML__SW_SCALAR, /* w[0] for every sample */
    ML__SW_DENSE   /* w[i]: one weight per sample, in the loss's order */
};

struct ml__softmax {
    const struct ml__kctx *k; /* the rows: loss, shape split, labels, logits, parameters */
    int f64;                  /* the compute precision is double (else float) */
    int64_t n;                /* samples (rows): outer * inner */
    const void *w;            /* per-sample weights in the compute precision */
    enum ml__softmax_weights wmode;
    enum ml__den den; /* the reduction's denominator (not NONE nor RAW_SW) */
    int want_sw;      /* sum the weights (sum_weights) */
    int64_t group;    /* blocks per task */
};

/* The plain lane sums of one block of ML__BLOCK samples (ml__lanes' open block). */
struct ml__softmax_sums {
    double num[ML__LANES], den[ML__LANES], sw[ML__LANES];
    int64_t nonzero, den_count;
    int nonfinite;     /* a row may hide a non-finite input (kernels.h softmax_row) */
    int64_t bad_label; /* the first sample whose class index is out of range, or -1 */
};

/* Whether the loss, outputs and reduction suit the fused path: its views may then leave
 * their NaN/Inf checks to the end (eval.c). */
int ml__softmax_candidate(const struct eval *e);

/* The blocks of task t (p->group of them from block t * p->group, fewer at the end), each
 * into its own sums out[b]: the variant k->simd names, float32 or float64 (simd.c). */
void ml__softmax_sums(const struct ml__softmax *p, int64_t t, struct ml__softmax_sums *out);

/* prepare.c: the shape rules of a softmax loss into k (e->vrank, e->vshape, class indices and
 * weights), without the kernel nor its arrays. */
int ml__prepare_plan(struct eval *e, struct ml__kctx *k, int *wrank, int64_t *wshape,
                     struct ml_error *err);

/* The loss of the softmax family in one fused pass, the bits of the general path: 0 with res's
 * numbers filled, an error (a NaN/Inf found), or ML__NOT_FUSED (nothing kept: the general path runs
 * as if this had not). */
int ml__try_softmax(struct eval *e, struct ml_result *res, int wrank, const int64_t *wshape,
                    struct ml_error *err);

#endif /* ML_SOFTMAX_H */
