/*
 * fast.h -- fused elementwise-plus-reduction kernels for the hot losses, float32 and float64.
 *
 * One pass reads labels, logits and weights once and leaves only the sums: no per-element
 * buffer. The results are the bits of the general path (kernels.h + reduce.c): the same
 * float formulas and functions (vmath.h), the same sixteen interleaved lanes (internal.h).
 * The kernels are compiled for AVX-512, AVX2 + FMA and baseline x86-64 and picked at run
 * time (simd.h); other architectures get the portable build.
 */
#ifndef ML_FAST_H
#define ML_FAST_H

#include <stdint.h>

#include "internal.h"

enum ml__fast_weights {
    ML__FW_NONE,   /* weight 1 */
    ML__FW_SCALAR, /* w[0] everywhere */
    ML__FW_DENSE,  /* w[i] */
    ML__FW_ROW,    /* w[i / cols]: one weight per row ([N, 1]) */
    ML__FW_COL     /* w[i % cols]: one weight per class ([1, C] or [C]) */
};

struct ml__fast {
    enum ml__loss_id id;    /* the sigmoid family, focal, ASL, TF pointwise losses (fused.c) */
    double label_smoothing; /* parameters in double: each kernel rounds them to its type */
    int gamma;              /* focal: 0, 1 or 2 */
    double alpha;           /* focal: < 0 for none */
    double gamma_pos, gamma_neg, clip, epsilon; /* ASL; epsilon also TF log_loss */
    double delta;                               /* TF huber_loss */
    int asl_focus;                              /* ASL: gamma_pos > 0 or gamma_neg > 0 */
    int f64;                                    /* the inputs are double (else float) */
    const void *z, *x;                          /* labels, logits or predictions */
    int64_t rows, cols;                         /* the loss as [rows, cols]; n = rows * cols */
    const void *w;                              /* in the inputs' precision */
    enum ml__fast_weights wmode;
    /* pos_weight (torch BCE, tf.nn weighted CE) in the same layouts as the weights, or the
     * number pw_value (ML__FW_SCALAR with pw NULL); ML__FW_NONE: none. */
    const void *pw;
    enum ml__fast_weights pwmode;
    double pw_value;
    int den_sums; /* sum the weights as the denominator (ML__DEN_WEIGHTS) */
    int want_sw;  /* sum the weights for sum_weights */
    int want_nz;  /* count the non-zero weights (else nonzero is left 0 for a weight stream) */
    int simd;     /* enum ml__simd: the variant to run (simd.h) */
    int allow_non_finite; /* NaN/Inf inputs accepted: the frameworks' NaN (formulas.h) */
};

struct ml__fast_sums {
    struct ml__lanes num, den, sw;
    int64_t nonzero; /* elements with a non-zero weight (NaN counts) */
};

/* Runs the kernel (the variant f->simd names) over elements [begin, end) of the rows * cols; begin
 * is a multiple of ML__BLOCK (a chunk's start), so that element i goes to lane i mod 16 as in
 * reduce.c. A NaN or an infinity among the inputs makes the sum of num non-finite (fast.c says
 * why). */
void ml__fast_run(const struct ml__fast *f, int64_t begin, int64_t end, struct ml__fast_sums *out);

/* The index of the first NaN or infinity, or -1: vectorised scans (fast.c) on the instruction
 * set `simd` (enum ml__simd, the evaluation's one pick), dispatched by simd.c. */
int64_t ml__first_non_finite_f32(int simd, const float *v, int64_t n);
int64_t ml__first_non_finite_f64(int simd, const double *v, int64_t n);

#endif /* ML_FAST_H */
