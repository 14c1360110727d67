/*
 * maskloss.h -- masked and weighted losses, faithful to TensorFlow, Keras and PyTorch.
 *
 * This header is the whole public API of libmaskloss. It is pure C11 (plus libm),
 * keeps no global mutable state, and every function is reentrant and thread-safe.
 *
 * One call does everything:
 *
 *     struct ml_request req;
 *     ml_request_init(&req);
 *     req.loss = "tf.compat.v1.losses.sigmoid_cross_entropy";
 *     req.labels = &labels;  req.logits = &logits;  req.weights = &mask;
 *     struct ml_result res;
 *     struct ml_error err;
 *     if (ml_eval(&req, &res, &err) == 0) {
 *         printf("%.17g\n", res.loss);   // the masked mean
 *         ml_result_free(&res);
 *     } else {
 *         fprintf(stderr, "%s: %s\n", err.field, err.message);
 *     }
 *
 * The formulas, reduction rules and weight-broadcasting rules of every loss are those of
 * the framework named in the loss's fully-qualified name (see ml_loss_find()); the
 * project's README and proto/README.md list them.
 */
#ifndef MASKLOSS_H
#define MASKLOSS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The version of this header. ML_VERSION is "MAJOR.MINOR.PATCH" made from the three numbers;
 * the shared library's soname is libmaskloss.so.MAJOR. ml_version() gives the version of the
 * library actually loaded, which may be newer than the header a program was compiled with.
 */
#define ML_VERSION_MAJOR 0
#define ML_VERSION_MINOR 1
#define ML_VERSION_PATCH 0
#define ML__STRINGIFY(x) #x
#define ML__VERSION_STRING(major, minor, patch)                                                    \
    ML__STRINGIFY(major) "." ML__STRINGIFY(minor) "." ML__STRINGIFY(patch)
#define ML_VERSION ML__VERSION_STRING(ML_VERSION_MAJOR, ML_VERSION_MINOR, ML_VERSION_PATCH)

/*
 * Marks the functions libmaskloss exports. The library is built with -fvisibility=hidden and
 * a version script (lib/maskloss.map): the shared object exports the ml_* functions declared
 * here and nothing else.
 */
#if defined(__GNUC__) || defined(__clang__)
#define ML_API __attribute__((visibility("default")))
#else
#define ML_API
#endif

/* The version of the loaded library, "MAJOR.MINOR.PATCH" (ML_VERSION when it was built);
 * static, never NULL. */
ML_API const char *ml_version(void);

/* Inputs may have any rank from 0 to ML_MAX_RANK. */
#define ML_MAX_RANK 8

/* ---- Errors --------------------------------------------------------------------------- */

/* Every fallible function returns 0 on success or one of these negative codes. */
enum ml_status {
    ML_OK = 0,
    ML_EINVAL = -1,         /* malformed request: missing or mistyped field ("invalid_request") */
    ML_ETENSOR = -2,        /* malformed tensor: ragged, bad shape, data count ("invalid_tensor") */
    ML_EUNKNOWN_LOSS = -3,  /* no loss of that name ("unknown_loss") */
    ML_EUNKNOWN_PARAM = -4, /* parameter the loss does not take ("unknown_parameter") */
    ML_EPARAM = -5,         /* parameter value of wrong type or out of range ("bad_parameter") */
    ML_EREDUCTION = -6,     /* reduction the loss's framework does not know ("unknown_reduction") */
    ML_ESHAPE = -7,         /* labels and logits/predictions shapes disagree ("shape_mismatch") */
    ML_EBROADCAST =
        -8, /* weights cannot broadcast under the framework's rule ("broadcast_error") */
    ML_ENONFINITE = -9, /* NaN or Inf in an input ("non_finite_input") */
    ML_ELABEL = -10,    /* class index not an integer or out of range ("invalid_label") */
    ML_ETOOLARGE = -11, /* more elements than the caller's limit ("too_large") */
    ML_ENOMEM = -12,    /* allocation failed ("out_of_memory") */
    ML_EOUTPUT = -13    /* an output the loss or reduction cannot produce ("unsupported_output") */
};

/* A short description of a status code ("shape mismatch"); never NULL. */
ML_API const char *ml_strerror(int status);

/* The stable machine-readable name of a status code ("shape_mismatch"); never NULL. */
ML_API const char *ml_status_name(int status);

/*
 * Detail of a failure, filled by functions that take a `struct ml_error *` (which may be
 * NULL). `field` names the request field at fault ("weights", "params.gamma", "labels"),
 * `index` the first flat element at fault or -1, `message` says what was wrong and what
 * was expected.
 */
struct ml_error {
    int code;
    char field[64];
    int64_t index;
    char message[320];
};

/* ---- Tensors --------------------------------------------------------------------------- */

/*
 * Element types. Any input tensor may have any of them (labels and masks often come as
 * bool or integers, class indices as int64); the elementwise work itself is done in
 * ML_FLOAT32 or ML_FLOAT64 (struct ml_request.dtype), to which inputs are converted.
 * ML_BOOL is one byte per element, zero false and anything else true.
 */
enum ml_dtype {
    ML_FLOAT32 = 0,
    ML_FLOAT64 = 1,
    ML_UINT8 = 2,
    ML_BOOL = 3,
    ML_INT32 = 4,
    ML_INT64 = 5
};

/* Bytes per element of a dtype; 0 for a value outside the enum. */
ML_API size_t ml_dtype_size(enum ml_dtype dtype);

/* The dtype's name ("float32", "float64", "uint8", "bool", "int32", "int64"), or NULL. */
ML_API const char *ml_dtype_name(enum ml_dtype dtype);

/*
 * A dense, row-major, read-only view of caller memory in native byte order. `data` points
 * to shape[0]*...*shape[rank-1] elements of type `dtype`, suitably aligned for it; rank 0
 * is a scalar holding one element. The library never frees or writes it.
 */
struct ml_tensor {
    int rank;
    int64_t shape[ML_MAX_RANK];
    enum ml_dtype dtype;
    const void *data;
};

/* Number of elements of a shape (1 for rank 0). */
ML_API int64_t ml_shape_numel(int rank, const int64_t *shape);

/* ---- Parameters ----------------------------------------------------------------------- */

enum ml_param_kind { ML_PARAM_NUMBER = 0, ML_PARAM_BOOL = 1, ML_PARAM_TENSOR = 2 };

/* One loss hyper-parameter as given by the caller; the name is looked up in the loss's
 * catalogue entry. A numeric parameter may also be given as a rank-0 tensor, and a tensor
 * parameter (pos_weight) as a number. */
struct ml_param {
    const char *name;
    enum ml_param_kind kind;
    double number;
    int boolean;
    struct ml_tensor tensor;
};

/* ---- Requests and results ------------------------------------------------------------- */

/* Outputs a request can ask for (a bit set). */
enum ml_output {
    ML_OUT_LOSS = 1u << 0,               /* the reduced loss (a tensor for reduction none) */
    ML_OUT_PER_ELEMENT = 1u << 1,        /* pointwise loss before weights and reduction */
    ML_OUT_PER_SAMPLE = 1u << 2,         /* the reduction applied per row of the last axis */
    ML_OUT_PER_CLASS = 1u << 3,          /* the reduction applied per class of the last axis */
    ML_OUT_WEIGHTED_SUM = 1u << 4,       /* sum of loss * weight */
    ML_OUT_SUM_WEIGHTS = 1u << 5,        /* sum of the broadcast weights */
    ML_OUT_NUM_NONZERO_WEIGHTS = 1u << 6, /* count of broadcast weights != 0 */
    ML_OUT_SUMS = 1u << 7,                /* res->sums: every additive part of the loss */
    ML_OUT_CLASS_SUMS = 1u << 8           /* res->class_sums: the same per class (last axis) */
};

struct ml_request {
    const char *loss;      /* catalogue name, canonical or framework-qualified; required */
    const char *reduction; /* case-insensitive reduction name; NULL = the loss's default */
    enum ml_dtype dtype;   /* precision of the elementwise work (default ML_FLOAT32) */

    /* Inputs; NULL when absent. Which are required depends on the loss (see the catalogue). */
    const struct ml_tensor *labels;
    const struct ml_tensor *logits;
    const struct ml_tensor *predictions;
    const struct ml_tensor *losses;
    const struct ml_tensor *weights; /* TF weights, Keras sample_weight, torch weight */

    const struct ml_param *params;
    size_t num_params;

    unsigned outputs;     /* enum ml_output bits; 0 means ML_OUT_LOSS */
    int allow_non_finite; /* accept NaN/Inf inputs instead of rejecting them */
    int64_t max_elements; /* reject inputs with more elements than this; 0 = no limit */

    /*
     * Optional: runs fn(arg, i) for every i in [0, n), in any order and on any threads,
     * and returns when all have returned. Given one, the library splits a large evaluation
     * into parts of a fixed size and hands them to it; the result is the same bits with or
     * without it, whatever the threads and the order.
     */
    void (*parallel_for)(void *ctx, int64_t n, void (*fn)(void *arg, int64_t i), void *arg);
    void *parallel_ctx;
};

/*
 * The additive parts of a reduced loss. Every reduction is sum(w * l) / sum(d) for a
 * per-element denominator d, so the loss of a union of evaluations (the concatenation of
 * several requests, a time window of a monitor, the replicas of a service) is
 * ml_sums_loss() of the field-wise sum of their ml_sums: keeping these, never the losses,
 * makes aggregates exact and mergeable.
 */
struct ml_sums {
    double weighted_sum;        /* sum of loss * weight */
    double denominator;         /* sum of d: what the reduction divides by (sum: the elements) */
    double sum_weights;         /* sum of the weights (torch cross_entropy: of w[target]) */
    double num_nonzero_weights; /* count of weights != 0 */
    double sum_sq;              /* sum of weight * loss^2, for variances (torch cross_entropy:
                                   w[target] * nll^2) */
    double elements;            /* elements of the pointwise loss */
    double samples;             /* its rows: elements / classes for an elementwise loss */
};

/* into += s, field by field. */
ML_API void ml_sums_add(struct ml_sums *into, const struct ml_sums *s);

/* How a reduction turns sums into the loss (filled by ml_reduction_ratio). */
struct ml_ratio {
    const char *reduction; /* the reduction's canonical spelling (static) */
    int divides;           /* 0 for sum reductions: the loss is the weighted sum */
    int plain_division;    /* torch: x / 0 is NaN or infinite; TF and Keras: 0 (divide_no_nan) */
    int unweighted_is_nan; /* torch cross_entropy's mean: NaN when no weight is non-zero */
    int elementwise;       /* the pointwise loss has the prediction's shape (last axis: classes) */
};

/*
 * The ratio of a loss and reduction (NULL: the loss's default), as ml_eval() would apply it.
 * Returns 0, or ML_EUNKNOWN_LOSS / ML_EREDUCTION with err naming the field. Reduction none
 * is ML_EREDUCTION: it does not reduce. (tf.nn ops given weights reduce by
 * SUM_BY_NONZERO_WEIGHTS in ml_eval; here their NULL default is their own, none.)
 */
ML_API int ml_reduction_ratio(const char *loss, const char *reduction, struct ml_ratio *out,
                              struct ml_error *err);

/* The loss of sums under a ratio: what ml_eval() answers for the concatenated inputs (up to
 * the rounding of the summation). */
ML_API double ml_sums_loss(const struct ml_ratio *ratio, const struct ml_sums *s);

/* A dense row-major array of doubles owned by a struct ml_result. */
struct ml_array {
    int rank;
    int64_t shape[ML_MAX_RANK];
    int64_t numel;
    double *data; /* NULL when the output was not requested */
};

struct ml_result {
    unsigned outputs;   /* the outputs that were computed */
    int loss_is_tensor; /* 1 for reduction none: the loss is in loss_tensor */
    double loss;        /* the reduced loss (when !loss_is_tensor) */
    struct ml_array loss_tensor;
    struct ml_array per_element;
    struct ml_array per_sample;
    struct ml_array per_class;
    double weighted_sum;
    double sum_weights;
    double num_nonzero_weights;
    const char *loss_name;      /* the catalogue's name of the loss that ran (static) */
    const char *reduction_name; /* the reduction that ran, in its framework's spelling (static) */

    /*
     * How the result was computed, for tests and diagnostics (the numbers do not depend on
     * it): `path` is ML_PATH_FUSED when one fused pass computed the sums without a
     * per-element array (reduced outputs of the hot losses), ML_PATH_GENERAL otherwise;
     * `simd` names the instruction set of the kernels that ran, as ml_simd_path() does
     * (static).
     */
    enum ml_path { ML_PATH_GENERAL = 0, ML_PATH_FUSED = 1 } path;
    const char *simd;

    /* ML_OUT_SUMS: the additive parts of the loss (zero when not requested). */
    struct ml_sums sums;
    /* ML_OUT_CLASS_SUMS: num_classes sums, one per class of the last axis of an
     * elementwise loss (NULL when not requested). */
    struct ml_sums *class_sums;
    int64_t num_classes;
};

/* Set every field of a request to its default (dtype float32, outputs loss, no limit). */
ML_API void ml_request_init(struct ml_request *req);

/*
 * Evaluate one request.
 *
 * `res` is storage the caller provides (on the stack, say); NULL is ML_EINVAL. ml_eval()
 * never reads it: it zeroes it first and then overwrites it, so a result that still holds
 * arrays from an earlier call must go through ml_result_free() before it is passed again,
 * or those arrays leak.
 *
 * On success returns 0 and fills `res`: res->outputs says which outputs were computed, the
 * data of an array not computed is NULL, and the caller owns the arrays and releases them
 * with ml_result_free(res) (the names in it are static). On failure returns a negative
 * enum ml_status, fills `err` (when not NULL) and leaves `res` holding no allocation: there
 * is nothing to free (ml_result_free() on it is harmless) and its fields mean nothing. A
 * NULL `req` is ML_EINVAL.
 *
 * How the result was computed is in res->path and res->simd (for tests and diagnostics; the
 * numbers do not depend on it).
 *
 * `req`, its tensors and its parameters are only read, and not referenced after the call
 * returns. Thread-safe: concurrent calls may share a request, each with its own `res` and
 * `err`. Allocates only the result arrays and temporaries freed before returning.
 */
ML_API int ml_eval(const struct ml_request *req, struct ml_result *res, struct ml_error *err);

/* Release the arrays of a result filled by ml_eval() and set their data to NULL; safe on
 * a zeroed result and on one already released. */
ML_API void ml_result_free(struct ml_result *res);

/* ---- The catalogue -------------------------------------------------------------------- */

/* What a loss reads as its prediction input. */
enum ml_input_kind {
    ML_INPUT_LOGITS = 0,      /* `logits` */
    ML_INPUT_PREDICTIONS = 1, /* `predictions` (probabilities or regression outputs) */
    ML_INPUT_LOSSES = 2,      /* `losses`: a precomputed pointwise loss (compute_weighted_loss) */
    ML_INPUT_KERAS = 3        /* `logits` (from_logits=true) or `predictions` (from_logits=false) */
};

struct ml_param_info {
    const char *name;
    enum ml_param_kind kind; /* ML_PARAM_TENSOR: a number or a broadcastable tensor */
    /* NUMBER and BOOL (0/1); TENSOR: a scalar default. NaN means the parameter is
     * required: ml_eval() fails with ML_EPARAM (field "params") when it is not given. */
    double default_value;
    const char *doc; /* range and meaning */
};

struct ml_loss_info {
    const char *name;      /* "tf.compat.v1.losses.sigmoid_cross_entropy" */
    const char *alias_of;  /* for short names: the qualified name, else NULL */
    const char *framework; /* "tensorflow", "keras3", "keras2", "pytorch", ... */
    const char *doc;       /* one line: the formula and its reference */
    enum ml_input_kind input;
    int takes_labels;         /* 0 only for compute_weighted_loss */
    const char *weights_rule; /* how `weights` broadcasts, one line */
    const struct ml_param_info *params;
    size_t num_params;
    const char *const *reductions; /* accepted names, canonical spelling */
    size_t num_reductions;
    const char *default_reduction;
};

/* Number of catalogue entries; entries are static and never change. */
ML_API size_t ml_loss_count(void);

/* The i-th entry (0 <= i < ml_loss_count()), or NULL. */
ML_API const struct ml_loss_info *ml_loss_at(size_t i);

/*
 * The instruction set of the fused float32 kernels on this CPU, chosen at run time:
 * "avx512f", "avx2" or "baseline". Every choice gives the same bits.
 */
ML_API const char *ml_simd_path(void);

/* The entry of a name (exact, case-sensitive), or NULL. Short names resolve to the entry
 * they alias, with `name` kept as the short name. */
ML_API const struct ml_loss_info *ml_loss_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* MASKLOSS_H */
