/*
 * internal.h -- what the files of lib/src share; not installed.
 */
#ifndef ML_INTERNAL_H
#define ML_INTERNAL_H

#include "maskloss.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Which formula a catalogue entry runs. */
enum ml__loss_id {
    ML__TF_SIGMOID_CE,
    ML__TF_SOFTMAX_CE,
    ML__TF_SPARSE_SOFTMAX_CE,
    ML__TF_LOG_LOSS,
    ML__TF_MSE,
    ML__TF_ABSDIFF,
    ML__TF_HUBER,
    ML__TF_HINGE,
    ML__TF_CWL,
    ML__TFNN_SIGMOID,
    ML__TFNN_WEIGHTED,
    ML__K3_BCE,
    ML__K3_FOCAL,
    ML__K3_CCE,
    ML__K2_BCE,
    ML__K2_FOCAL,
    ML__TORCH_BCE,
    ML__TORCH_CE,
    ML__TV_FOCAL,
    ML__ASL
};

/* How `weights` meets the pointwise loss tensor. */
enum ml__weight_rule {
    ML__W_TF,     /* weights_broadcast_ops.assert_broadcastable: scalar or same rank, dims 1|n */
    ML__W_KERAS3, /* squeeze_or_expand_to_same_rank, then numpy broadcasting */
    ML__W_KERAS2, /* losses_utils.squeeze_or_expand_dimensions, then numpy broadcasting */
    ML__W_NUMPY,  /* numpy broadcasting to the loss shape (torch `weight`) */
    ML__W_CLASS   /* one weight per class, used inside the loss (torch cross_entropy) */
};

/* Reduction as a formula: sum(loss * w) / sum(d) with a denominator kind. */
enum ml__den {
    ML__DEN_NONE,    /* reduction none: no reduction */
    ML__DEN_ONE,     /* sum: no division */
    ML__DEN_COUNT,   /* divide by the number of elements */
    ML__DEN_WEIGHTS, /* divide by the sum of the broadcast weights */
    ML__DEN_NONZERO, /* divide by the number of non-zero broadcast weights */
    ML__DEN_RAW_SW,  /* Keras mean_with_sample_weight: sum of sample_weight as given */
    ML__DEN_EXPLICIT /* torch cross_entropy: per-sample denominators from the kernel */
};

struct ml__reduction {
    const char *name;   /* canonical spelling, reported back */
    const char *alias1; /* other accepted spellings (case-insensitive), or NULL */
    const char *alias2;
    enum ml__den den;
    int nan_on_zero; /* 1: plain division (torch: 0/0 = NaN); 0: div_no_nan */
};

struct ml__loss_def {
    struct ml_loss_info info; /* first member: the public view */
    enum ml__loss_id id;
    enum ml__weight_rule weight_rule;
    const struct ml__reduction *reds;
    size_t num_reds;
    int elementwise; /* 1: the pointwise loss keeps the input shape (last axis = classes) */
};

const struct ml__loss_def *ml__loss_def(const struct ml_loss_info *info);

/* Error helper: fills err (when non-NULL) and returns code. */
int ml__fail(struct ml_error *err, int code, const char *field, int64_t index, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* Formats a shape as "[4, 5]" into buf. */
const char *ml__shape_str(char *buf, size_t size, int rank, const int64_t *shape);

/* Case-insensitive ASCII equality. */
int ml__streq_ci(const char *a, const char *b);

/* ---- Kernels (kernels.h instantiated for float and double) ---------------------------- */

/*
 * Everything a pointwise kernel needs. Tensor pointers are in the compute precision
 * (float for ML_FLOAT32, double for ML_FLOAT64). Shapes are described by a split around
 * the reduced axis: outer x len x inner (len = 1 for purely elementwise losses).
 */
struct ml__kctx {
    enum ml__loss_id id;
    int64_t n;                  /* elements of the prediction input */
    int64_t outer, len, inner;  /* axis split (Keras axis, softmax class axis) */
    const void *labels;         /* same shape as pred, or class indices (outer*inner) */
    const void *pred;           /* logits / predictions / losses */
    const void *aux;            /* pos_weight expanded to n elements, or NULL */
    const double *class_weight; /* torch cross_entropy per-class weight (len), or NULL */
    int sparse;                 /* labels are class indices */
    int from_logits;
    int apply_class_balancing;
    double label_smoothing, alpha, gamma, epsilon, delta;
    double gamma_neg, gamma_pos, clip;
    double smoothing_classes; /* K of categorical label smoothing */
    int64_t ignore_index;
    int simd;             /* enum ml__simd: the instruction set to run (simd.h) */
    int allow_non_finite; /* the request accepts NaN/Inf inputs: the frameworks' NaN (formulas.h) */
};

/*
 * Writes the pointwise loss into out: n elements for elementwise losses, outer*inner
 * elements (one per sample) for the softmax and Keras losses. For torch cross_entropy,
 * den receives each sample's denominator (its class weight, 0 when ignored).
 * Returns 0, or ML_ELABEL with *bad_index set when a class index is out of range.
 */
/* Both run the variant k->simd names (simd.c). */
int ml__pointwise_f32(const struct ml__kctx *k, double *out, double *den, int64_t *bad_index);
int ml__pointwise_f64(const struct ml__kctx *k, double *out, double *den, int64_t *bad_index);

/* ---- Compensated summation ----------------------------------------------------------- */

/* Neumaier's variant of Kahan summation: error independent of n to first order, and
 * deterministic for a given order of additions. */
struct ml__sum {
    double s, c;
};

static inline void ml__sum_add(struct ml__sum *a, double x)
{
    /* Knuth's TwoSum: the exact rounding error of s + x, as Neumaier's branch on the
     * magnitudes gives it, but without a branch that random data mispredicts. */
    double t = a->s + x;
    double z = t - a->s;
    a->c += (a->s - (t - z)) + (x - z);
    a->s = t;
}

/*
 * Sixteen interleaved sums: element i goes to lane i mod 16, so that the order of the
 * additions is fixed by the index alone and a scalar loop and a SIMD loop (fast.c) give the
 * same bits. Within a block of ML__BLOCK elements (aligned on multiples of ML__BLOCK) each
 * lane adds plainly into b; at the block's end b is folded into the compensated pair
 * (s, c) by TwoSum. A block's lane adds 64 values, so its rounding stays near 2^-47
 * relative, and the compensation makes the blocks' total as good as exact: far inside the
 * 1e-8 bound at 16M elements, for one SIMD addition per 16 elements.
 */
#define ML__LANES 16
#define ML__BLOCK 1024
_Static_assert((ML__LANES & (ML__LANES - 1)) == 0 && (ML__BLOCK & (ML__BLOCK - 1)) == 0 &&
                   ML__BLOCK % ML__LANES == 0,
               "lanes and blocks are powers of two (i & (n - 1)), a block a whole number of lanes");

struct ml__lanes {
    double b[ML__LANES];               /* the open block */
    double s[ML__LANES], c[ML__LANES]; /* the folded blocks: sum and correction */
};

static inline void ml__lanes_flush(struct ml__lanes *a)
{
    for (int j = 0; j < ML__LANES; j++) {
        double x = a->b[j];
        double t = a->s[j] + x;
        double z = t - a->s[j];
        a->c[j] += (a->s[j] - (t - z)) + (x - z);
        a->s[j] = t;
        a->b[j] = 0;
    }
}

static inline void ml__lanes_add(struct ml__lanes *a, int64_t i, double x)
{
    a->b[i & (ML__LANES - 1)] += x;
    if ((i & (ML__BLOCK - 1)) == ML__BLOCK - 1)
        ml__lanes_flush(a);
}

static inline double ml__sum_get(const struct ml__sum *a)
{
    /* Non-finite sums: the correction term is meaningless (inf - inf), keep s. */
    double r = a->s + a->c;
    return (r - r == 0) ? r : a->s;
}

/*
 * Totals are summed in chunks of ML__CHUNK elements, each chunk into lanes of its own that
 * are then merged into the total in chunk order: chunks are what threads share out, and the
 * fixed size keeps the bits independent of how many threads there were.
 */
#define ML__CHUNK 65536
_Static_assert(ML__CHUNK % ML__BLOCK == 0, "a chunk starts on a block (fast.h)");

/* Folds part (its open block first) into total. */
static inline void ml__lanes_merge(struct ml__lanes *total, const struct ml__lanes *part)
{
    struct ml__lanes p = *part;
    ml__lanes_flush(&p);
    for (int j = 0; j < ML__LANES; j++) {
        double x = p.s[j];
        double t = total->s[j] + x;
        double z = t - total->s[j];
        total->c[j] += ((total->s[j] - (t - z)) + (x - z)) + p.c[j];
        total->s[j] = t;
    }
}

static inline double ml__lanes_get(const struct ml__lanes *a)
{
    struct ml__lanes l = *a;
    ml__lanes_flush(&l);
    struct ml__sum t = {0, 0};
    double c = 0;
    for (int j = 0; j < ML__LANES; j++) {
        ml__sum_add(&t, l.s[j]);
        c += l.c[j];
    }
    t.c += c;
    return ml__sum_get(&t);
}

#endif /* ML_INTERNAL_H */
