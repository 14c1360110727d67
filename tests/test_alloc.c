/*
 * test_alloc.c -- allocation failures (SQLite's technique): the decoders and ml_eval survive
 * the k-th allocation failing, for every k up to the number of allocations a representative
 * request makes.
 *
 * The library and protocol objects are linked statically into this program with the
 * linker's --wrap for malloc, calloc and realloc (the Makefile's line for this target), so
 * their calls land in __wrap_malloc and friends below; jansson, a shared library, allocates
 * through mlp_json_malloc (json_set_alloc_funcs), whose malloc is wrapped too. Each request runs
 * once to count its allocations (N) and keep its answer; then, for k = 1..N, once with exactly the
 * k-th allocation failing and once with every allocation from the k-th on failing. Each such run
 * must answer out_of_memory (the status ML_ENOMEM with the error object of code out_of_memory, or
 * the protocol's other signal, an answer buffer marked failed), or, where a failed allocation has a
 * fallback, exactly the answer of the run without failures (a bad request: its error, or
 * out_of_memory; a batch: each entry its answer or out_of_memory); and a run without failures
 * afterwards must give that answer again, bit for bit. Under AddressSanitizer, LeakSanitizer checks
 * after each request that nothing leaked.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mlp.h"
#include "mlp_v2.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_LSAN 1
#endif
#endif
#ifdef HAVE_LSAN
#include <sanitizer/lsan_interface.h>
/* Leak detection on for this program whatever the platform's default (ASAN_OPTIONS from the
 * environment still win; main() refuses detect_leaks=0). */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=1";
}
#endif

/* ---- Failure injection ------------------------------------------------------------------- */

void *__real_malloc(size_t size);
void *__real_calloc(size_t count, size_t size);
void *__real_realloc(void *p, size_t size);
void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t count, size_t size);
void *__wrap_realloc(void *p, size_t size);

enum inject { INJECT_OFF, INJECT_COUNT, INJECT_ONE, INJECT_FROM };

/* Allocations are counted only while a run is armed. The library may call back on other
 * threads (parallel_for), hence the atomics. */
static _Atomic int inject_mode = INJECT_OFF;
static _Atomic long alloc_count;
static _Atomic long fail_count;
static long fail_at;

static int should_fail(void)
{
    int mode = inject_mode;
    if (mode == INJECT_OFF)
        return 0;
    long k = ++alloc_count;
    int fail = (mode == INJECT_ONE && k == fail_at) || (mode == INJECT_FROM && k >= fail_at);
    if (fail)
        fail_count++;
    return fail;
}

void *__wrap_malloc(size_t size)
{
    return should_fail() ? NULL : __real_malloc(size);
}

void *__wrap_calloc(size_t count, size_t size)
{
    return should_fail() ? NULL : __real_calloc(count, size);
}

void *__wrap_realloc(void *p, size_t size)
{
    return should_fail() ? NULL : __real_realloc(p, size);
}

static void arm(enum inject mode, long k)
{
    alloc_count = 0;
    fail_count = 0;
    fail_at = k;
    inject_mode = mode;
}

static void disarm(void)
{
    inject_mode = INJECT_OFF;
}

/* A check that the injection itself works: a wrapped malloc fails when told to. */
static void test_injection_works(void **state)
{
    (void)state;
    arm(INJECT_ONE, 2);
    void *a = malloc(8), *b = malloc(8), *c = calloc(1, 8);
    json_t *j = json_object(); /* the 4th: jansson's allocations are counted too */
    disarm();
    assert_non_null(a);
    assert_null(b);
    assert_non_null(c);
    assert_non_null(j);
    assert_true(alloc_count >= 4);
    arm(INJECT_ONE, 1);
    json_t *k = json_object();
    disarm();
    assert_null(k);
    free(a);
    free(c);
    json_decref(j);
}

/* ---- Runs and their outcomes ------------------------------------------------------------ */

/* One run's answer: the status, the text (response or error object; v2 binary bytes
 * included) and whether the answer buffer failed. */
struct outcome {
    int rc;
    int failed;
    char *text;
    size_t len;
    size_t header_len;
    int err_code; /* ml_eval's err.code (direct runs) */
};

static void outcome_free(struct outcome *o)
{
    free(o->text);
    memset(o, 0, sizeof(*o));
}

static void take_buf(struct outcome *o, struct mlp_buf *b)
{
    o->failed = b->failed;
    o->text = b->data;
    o->len = b->data ? b->len : 0;
    *b = (struct mlp_buf){0};
}

typedef void (*run_fn)(const void *arg, enum inject mode, long k, struct outcome *o);

/* A /v1/loss body through the CLI's round trip: parse, decode, evaluate, encode. */
static void run_v1(const void *arg, enum inject mode, long k, struct outcome *o)
{
    const char *text = arg;
    struct mlp_buf b = {0};
    arm(mode, k);
    o->rc = mlp_eval_text(text, strlen(text), 0, &b);
    disarm();
    take_buf(o, &b);
}

/* A /v1/batch body as the server runs it: parse, then the batch. */
static void run_batch(const void *arg, enum inject mode, long k, struct outcome *o)
{
    const char *text = arg;
    struct mlp_buf b = {0};
    struct mlp_error err;
    json_t *root = NULL;
    memset(&err, 0, sizeof(err));
    err.e.index = -1;
    arm(mode, k);
    o->rc = mlp_parse(text, strlen(text), &root, &err);
    if (o->rc) {
        mlp_error_write(&b, o->rc, &err);
    } else {
        size_t count = 0;
        o->rc = mlp_eval_batch(root, NULL, &b, &count, NULL, NULL);
        json_decref(root);
    }
    disarm();
    take_buf(o, &b);
}

struct v2_case {
    const char *model;
    const char *body;
    size_t len;
    long long header_len;
};

static void run_v2(const void *arg, enum inject mode, long k, struct outcome *o)
{
    const struct v2_case *c = arg;
    struct mlp_buf b = {0};
    size_t header_len = 0;
    arm(mode, k);
    o->rc = mlp_v2_eval(c->model, c->body, c->len, c->header_len, NULL, &b, &header_len, NULL);
    disarm();
    o->header_len = header_len;
    take_buf(o, &b);
}

/* ---- ml_eval directly -------------------------------------------------------------------- */

/* parallel_for on two threads of its own, taking parts in turn from a shared counter. */
struct pfor {
    int64_t n;
    _Atomic int64_t next;
    void (*fn)(void *arg, int64_t i);
    void *arg;
};

static void *pfor_thread(void *p)
{
    struct pfor *f = p;
    for (int64_t i; (i = f->next++) < f->n;)
        f->fn(f->arg, i);
    return NULL;
}

static _Atomic int parallel_calls;

static void threads_for(void *ctx, int64_t n, void (*fn)(void *arg, int64_t i), void *arg)
{
    (void)ctx;
    struct pfor f = {n, 0, fn, arg};
    pthread_t t;
    parallel_calls++;
    if (pthread_create(&t, NULL, pfor_thread, &f) != 0) {
        pfor_thread(&f);
        return;
    }
    pfor_thread(&f);
    pthread_join(t, NULL);
}

/* A result as text: every double by its bits. */
static void put_bits(struct mlp_buf *b, double v)
{
    char tmp[24];
    uint64_t x;
    memcpy(&x, &v, sizeof(x));
    snprintf(tmp, sizeof(tmp), "%016llx ", (unsigned long long)x);
    mlp_buf_puts(b, tmp);
}

static void put_array(struct mlp_buf *b, const char *name, const struct ml_array *a)
{
    char tmp[64];
    mlp_buf_puts(b, name);
    snprintf(tmp, sizeof(tmp), " rank %d numel %lld:", a->rank, (long long)a->numel);
    mlp_buf_puts(b, tmp);
    for (int d = 0; d < a->rank; d++) {
        snprintf(tmp, sizeof(tmp), " %lld", (long long)a->shape[d]);
        mlp_buf_puts(b, tmp);
    }
    mlp_buf_puts(b, "\n");
    for (int64_t i = 0; a->data && i < a->numel; i++)
        put_bits(b, a->data[i]);
    mlp_buf_puts(b, "\n");
}

static void result_text(struct mlp_buf *b, const struct ml_result *res)
{
    char tmp[160];
    /* Not the path: a fused evaluation that cannot allocate falls back to the general path,
     * which gives the same numbers. */
    snprintf(tmp, sizeof(tmp), "outputs %u tensor %d %s %s\n", res->outputs, res->loss_is_tensor,
             res->loss_name, res->reduction_name);
    mlp_buf_puts(b, tmp);
    put_bits(b, res->loss);
    put_bits(b, res->weighted_sum);
    put_bits(b, res->sum_weights);
    put_bits(b, res->num_nonzero_weights);
    mlp_buf_puts(b, "\n");
    put_array(b, "loss_tensor", &res->loss_tensor);
    put_array(b, "per_element", &res->per_element);
    put_array(b, "per_sample", &res->per_sample);
    put_array(b, "per_class", &res->per_class);
}

#define EVAL_ROWS 300
#define EVAL_COLS 300

/* Inputs of the direct ml_eval cases: float64 data under a float32 evaluation (so the views
 * convert, i.e. allocate), uint8 labels, a per-element bool mask. */
struct eval_inputs {
    double logits[EVAL_ROWS * EVAL_COLS];
    uint8_t labels[EVAL_ROWS * EVAL_COLS];
    uint8_t mask[EVAL_ROWS * EVAL_COLS];
    double pos_weight[EVAL_COLS];
};
static struct eval_inputs eval_in;

struct eval_case {
    const char *loss;
    const char *reduction;
    unsigned outputs;
    int pos_weight;   /* params.pos_weight as a [C] tensor */
    int use_parallel; /* parallel_for given */
    int rows, cols;
};

static enum ml_path last_path;

static void run_eval(const void *arg, enum inject mode, long k, struct outcome *o)
{
    const struct eval_case *c = arg;
    int64_t shape[2] = {c->rows, c->cols};
    struct ml_tensor x = {2, {shape[0], shape[1]}, ML_FLOAT64, eval_in.logits};
    struct ml_tensor z = {2, {shape[0], shape[1]}, ML_UINT8, eval_in.labels};
    struct ml_tensor w = {2, {shape[0], shape[1]}, ML_BOOL, eval_in.mask};
    struct ml_param p;
    memset(&p, 0, sizeof(p));
    p.name = "pos_weight";
    p.kind = ML_PARAM_TENSOR;
    p.tensor.rank = 1;
    p.tensor.shape[0] = c->cols;
    p.tensor.dtype = ML_FLOAT64;
    p.tensor.data = eval_in.pos_weight;
    struct ml_request req;
    ml_request_init(&req);
    req.loss = c->loss;
    req.reduction = c->reduction;
    req.labels = &z;
    req.logits = &x;
    req.weights = &w;
    req.outputs = c->outputs;
    if (c->pos_weight) {
        req.params = &p;
        req.num_params = 1;
    }
    if (c->use_parallel)
        req.parallel_for = threads_for;
    struct ml_result res;
    struct ml_error err;
    arm(mode, k);
    o->rc = ml_eval(&req, &res, &err);
    disarm();
    o->err_code = o->rc ? err.code : 0;
    struct mlp_buf b = {0};
    if (!o->rc) {
        last_path = res.path;
        result_text(&b, &res);
        ml_result_free(&res);
    } else {
        char tmp[48];
        snprintf(tmp, sizeof(tmp), "status %d\n", o->rc);
        mlp_buf_puts(&b, tmp);
        /* A failed call leaves nothing to free; freeing is still harmless. */
        ml_result_free(&res);
    }
    take_buf(o, &b);
    assert_false(o->failed);
}

static void fill_eval_inputs(void)
{
    /* A fixed pseudo-random sequence (an LCG): logits in [-8, 8), labels 0/1, mask 3/4 on. */
    uint64_t s = 12345;
    for (size_t i = 0; i < EVAL_ROWS * EVAL_COLS; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        eval_in.logits[i] = (double)(s >> 11) / 9007199254740992.0 * 16 - 8;
        eval_in.labels[i] = (uint8_t)((s >> 7) & 1);
        eval_in.mask[i] = ((s >> 9) & 3) != 0;
    }
    for (size_t c = 0; c < EVAL_COLS; c++)
        eval_in.pos_weight[c] = 0.5 + (double)c / 64;
}

/* ---- The driver ------------------------------------------------------------------------- */

static int same_answer(const struct outcome *a, const struct outcome *b)
{
    return a->rc == b->rc && a->failed == b->failed && a->len == b->len &&
           a->header_len == b->header_len && (!a->len || !memcmp(a->text, b->text, a->len));
}

/* Whether the text is an error object of code out_of_memory. */
static int is_oom_object(const char *text, size_t len)
{
    json_t *j = json_loadb(text, len, 0, NULL);
    const char *code = json_string_value(json_object_get(j, "code"));
    int yes = code && !strcmp(code, "out_of_memory");
    json_decref(j);
    return yes;
}

/* A batch answer whose entries are the reference's or out_of_memory, at least one of the
 * latter. */
static int is_batch_with_oom(const struct outcome *got, const struct outcome *ref)
{
    json_t *g = json_loadb(got->text, got->len, 0, NULL);
    json_t *r = json_loadb(ref->text, ref->len, 0, NULL);
    json_t *ga = json_object_get(g, "responses"), *ra = json_object_get(r, "responses");
    int ok = json_is_array(ga) && json_is_array(ra) && json_array_size(ga) == json_array_size(ra);
    int ooms = 0;
    for (size_t i = 0; ok && i < json_array_size(ga); i++) {
        const json_t *e = json_array_get(ga, i);
        const char *code = json_string_value(json_object_get(e, "code"));
        if (code && !strcmp(code, "out_of_memory"))
            ooms++;
        else if (!json_equal(e, json_array_get(ra, i)))
            ok = 0;
    }
    json_decref(g);
    json_decref(r);
    return ok && ooms > 0;
}

enum answer { ANSWER_OOM, ANSWER_SAME };

/* Whether a run with failures answered acceptably; which way in *how. */
static int acceptable(const struct outcome *o, const struct outcome *ref, int batch, int direct,
                      enum answer *how)
{
    *how = ANSWER_OOM;
    /* The answer could not be written: the server answers 503 out_of_memory. */
    if (o->failed && !direct)
        return o->rc == 0 || o->rc == ML_ENOMEM || o->rc == ref->rc;
    if (o->rc == ML_ENOMEM)
        return direct ? o->err_code == ML_ENOMEM : is_oom_object(o->text, o->len);
    if (o->rc == 0 && batch && !same_answer(o, ref))
        return is_batch_with_oom(o, ref);
    *how = ANSWER_SAME;
    return same_answer(o, ref);
}

struct tally {
    long points;    /* N: allocations of the run without failures */
    long oom;       /* runs that answered out_of_memory */
    long fallbacks; /* runs whose failed allocation had a fallback: the same answer */
};

/* Runs a request with each of its allocations failing in turn (see the top). want_rc is the
 * status of the run without failures: 0, or the error a bad request gets (then a run with
 * failures answers out_of_memory or that same error). */
static void exercise(const char *name, run_fn run, const void *arg, int want_rc, int batch,
                     int direct, struct tally *t)
{
    struct outcome ref, o;
    memset(&ref, 0, sizeof(ref));
    run(arg, INJECT_COUNT, 0, &ref);
    long n = alloc_count;
    if (ref.rc != want_rc || ref.failed)
        fail_msg("%s: the run without failures answers status %d, not %d: %.*s", name, ref.rc,
                 want_rc, (int)(ref.len > 400 ? 400 : ref.len), ref.text ? ref.text : "");
    assert_true(n > 0);
    memset(t, 0, sizeof(*t));
    t->points = n;
    for (int pass = 0; pass < 2; pass++) {
        enum inject mode = pass ? INJECT_FROM : INJECT_ONE;
        for (long k = 1; k <= n; k++) {
            memset(&o, 0, sizeof(o));
            run(arg, mode, k, &o);
            if (fail_count < 1)
                fail_msg("%s: allocation %ld of %ld never happened (the runs differ)", name, k, n);
            enum answer how;
            if (!acceptable(&o, &ref, batch, direct, &how))
                fail_msg("%s: allocation %ld of %ld failing (%s): status %d%s, answer %.*s", name,
                         k, n, pass ? "and every later one" : "alone", o.rc,
                         o.failed ? " (buffer failed)" : "", (int)(o.len > 600 ? 600 : o.len),
                         o.text ? o.text : "");
            if (how == ANSWER_OOM)
                t->oom++;
            else
                t->fallbacks++;
            outcome_free(&o);
            /* Nothing left behind: the next run without failures gives the same bits. */
            run(arg, INJECT_COUNT, 0, &o);
            if (!same_answer(&o, &ref))
                fail_msg("%s: after allocation %ld failed, a run without failures answers "
                         "differently: %.*s",
                         name, k, (int)(o.len > 600 ? 600 : o.len), o.text ? o.text : "");
            if (alloc_count != n)
                fail_msg("%s: %ld allocations after a failure, %ld before", name, (long)alloc_count,
                         n);
            outcome_free(&o);
        }
    }
    outcome_free(&ref);
#ifdef HAVE_LSAN
    if (__lsan_do_recoverable_leak_check())
        fail_msg("%s: LeakSanitizer found leaks (above)", name);
#endif
    print_message("%-34s %4ld allocation points, %4ld out_of_memory, %3ld fallbacks\n", name,
                  t->points, t->oom, t->fallbacks);
}

/* ---- The requests ----------------------------------------------------------------------- */

/* sigmoid_cross_entropy with a mask, reduced outputs only: the fused path. */
static const char req_sce_fused[] =
    "{\"loss\": \"sigmoid_cross_entropy\","
    " \"labels\": [[1,1,0,0,0],[0,1,1,1,0],[0,0,0,0,1],[1,1,1,1,1]],"
    " \"logits\": [[0.2,0.2,0.2,0,0.8],[0,0.5,0.5,0.2,0],[0,0.5,0.1,0.0,0.9],"
    "[0.9,0.9,0.7,0.1,0.0]],"
    " \"mask\": {\"shape\": [4, 5], \"data\": [1,0,0,0,0,0,0,1,1,0,0,0,1,0,1,0,1,1,1,1]},"
    " \"outputs\": [\"loss\", \"sum_weights\", \"num_nonzero_weights\"]}";

/* The same with per_element, per_sample and per_class in float64: the general path. */
static const char req_sce_general[] =
    "{\"loss\": \"sigmoid_cross_entropy\", \"dtype\": \"float64\","
    " \"labels\": [[1,1,0,0,0],[0,1,1,1,0],[0,0,0,0,1],[1,1,1,1,1]],"
    " \"logits\": [[0.2,0.2,0.2,0,0.8],[0,0.5,0.5,0.2,0],[0,0.5,0.1,0.0,0.9],"
    "[0.9,0.9,0.7,0.1,0.0]],"
    " \"mask\": {\"shape\": [4, 5], \"data\": [1,0,0,0,0,0,0,1,1,0,0,0,1,0,1,0,1,1,1,1]},"
    " \"outputs\": [\"loss\", \"per_element\", \"per_sample\", \"per_class\", \"weighted_sum\"],"
    " \"unknown_key\": 1}";

/* Numbers longer than jansson's first token buffer (15 characters): a byte its lexer could not
 * store would change them silently. */
static const char req_softmax[] =
    "{\"loss\": \"softmax_cross_entropy\", \"params\": {\"label_smoothing\": 0.1},"
    " \"labels\": [[0,0,1],[0,1,0],[1,0,0],[0,0,1]],"
    " \"logits\": [[1.5,-0.5,2.0],[0.1,0.2,0.30000000000000004],[3,1,-1],"
    "[-2,0,2.7182818284590451]],"
    " \"weights\": [1, 0.5, 0, 2], \"outputs\": [\"loss\", \"per_sample\"]}";

/* torchvision focal with per_element and per_class; labels and logits as base64 (uint8 and
 * float32 bytes of [[1,0,1],[0,0,1]] and [[0.5,-1,2],[-0.25,0.75,3]]). */
static const char req_focal_b64[] =
    "{\"loss\": \"sigmoid_focal_loss\", \"reduction\": \"mean\","
    " \"params\": {\"alpha\": 0.3, \"gamma\": 2},"
    " \"labels\": {\"shape\": [2, 3], \"dtype\": \"uint8\", \"b64\": \"AQABAAAB\"},"
    " \"logits\": {\"shape\": [2, 3], \"dtype\": \"float32\","
    " \"b64\": \"AAAAPwAAgL8AAABAAACAvgAAQD8AAEBA\"},"
    " \"weights\": [[1, 1, 0], [1, 0.5, 1]],"
    " \"outputs\": [\"loss\", \"per_element\", \"per_class\", \"num_nonzero_weights\"]}";

/* torch BCE with a pos_weight tensor (per class): float32, the general path expands it. */
static const char req_bce_pos_weight[] =
    "{\"loss\": \"binary_cross_entropy_with_logits\","
    " \"params\": {\"pos_weight\": [1.5, 0.5, 3]},"
    " \"labels\": [[1,0,1],[0,1,1]], \"logits\": [[0.5,-1,2],[-0.25,0.75,3]],"
    " \"weights\": [[1],[0.5]], \"outputs\": [\"loss\", \"per_sample\"]}";

/* The same in float64 with reduced outputs: the fused path reads pos_weight in place. */
static const char req_bce_pos_weight_fused[] =
    "{\"loss\": \"binary_cross_entropy_with_logits\", \"dtype\": \"float64\","
    " \"params\": {\"pos_weight\": {\"shape\": [3], \"data\": [1.5, 0.5, 3]}},"
    " \"labels\": [[1,0,1],[0,1,1]], \"logits\": [[0.5,-1,2],[-0.25,0.75,3]],"
    " \"weights\": [[1],[0.5]], \"outputs\": [\"loss\", \"sum_weights\"]}";

/* torch cross_entropy with class indices and class weights, reduction none. */
static const char req_torch_ce_none[] =
    "{\"loss\": \"cross_entropy\", \"reduction\": \"none\","
    " \"labels\": [2, 0, 1, 1], \"logits\": [[1.5,-0.5,2.0],[0.1,0.2,0.3],[3,1,-1],[-2,0,2]],"
    " \"weights\": [0.2, 1, 3], \"params\": {\"label_smoothing\": 0.05}}";

static const char req_batch[] =
    "{\"requests\": ["
    "{\"loss\": \"sigmoid_cross_entropy\", \"labels\": [[1,0],[0,1]],"
    " \"logits\": [[0.5,-1],[2,0.25]], \"mask\": [[1,0],[1,1]]},"
    "{\"loss\": \"sparse_softmax_cross_entropy\", \"labels\": [2, 0],"
    " \"logits\": [[1,2,3],[3,2,1]], \"outputs\": [\"loss\", \"per_sample\"]},"
    "{\"loss\": \"keras3.losses.BinaryFocalCrossentropy\", \"labels\": [[1,0,1]],"
    " \"predictions\": [[0.9,0.2,0.6]], \"params\": {\"gamma\": 2,"
    " \"apply_class_balancing\": true}, \"outputs\": [\"loss\", \"per_element\"]}"
    "]}";

static const char v2_json_body[] =
    "{\"id\": \"req-7\", \"parameters\": {\"reduction\": \"SUM_BY_NONZERO_WEIGHTS\","
    " \"dtype\": \"float64\", \"label_smoothing\": 0.1, \"priority\": 1},"
    " \"inputs\": ["
    "{\"name\": \"LABELS\", \"shape\": [2, 3], \"datatype\": \"FP32\", \"data\": [1,0,1,0,0,1]},"
    "{\"name\": \"LOGITS\", \"shape\": [2, 3], \"datatype\": \"FP64\","
    " \"data\": [[0.5,-1,2],[-0.25,0.75,3]]},"
    "{\"name\": \"MASK\", \"shape\": [2, 3], \"datatype\": \"BOOL\", \"data\": [1,1,0,1,0,1]}],"
    " \"outputs\": [{\"name\": \"LOSS\"}, {\"name\": \"PER_ELEMENT\"},"
    " {\"name\": \"NUM_NONZERO_WEIGHTS\"}]}";

/* The other families: Keras (its own shape rules, probabilities), ASL, tf.nn with a
 * pos_weight tensor, compute_weighted_loss, sparse class indices as int64 bytes. */
static const char req_keras_cce[] =
    "{\"loss\": \"keras2.losses.BinaryFocalCrossentropy\", \"labels\": [[1,0,1],[0,0,1]],"
    " \"logits\": [[0.5,-1,2],[-0.25,0.75,3]], \"params\": {\"gamma\": 1.5},"
    " \"weights\": [[0.5],[2]], \"reduction\": \"sum\"}";
static const char req_keras3_cce[] =
    "{\"loss\": \"categorical_crossentropy\", \"labels\": [[0,0,1],[0,1,0]],"
    " \"predictions\": [[0.2,0.3,0.5],[0.1,0.8,0.1]], \"weights\": [1, 0.25],"
    " \"params\": {\"label_smoothing\": 0.1}, \"outputs\": [\"loss\", \"per_sample\"]}";
static const char req_asl[] =
    "{\"loss\": \"asymmetric_loss\", \"dtype\": \"float64\", \"labels\": [[1,0,1],[0,0,1]],"
    " \"logits\": [[0.5,-1,2],[-0.25,0.75,3]], \"params\": {\"clip\": 0.05},"
    " \"outputs\": [\"loss\", \"per_element\", \"sum_weights\"]}";
static const char req_tfnn_weighted[] =
    "{\"loss\": \"weighted_cross_entropy\", \"labels\": [[1,0,1],[0,0,1]],"
    " \"logits\": [[0.5,-1,2],[-0.25,0.75,3]], \"params\": {\"pos_weight\": [[2],[0.5]]},"
    " \"weights\": [[1,0,1],[1,1,0]], \"reduction\": \"MEAN\"}";
static const char req_cwl[] =
    "{\"loss\": \"compute_weighted_loss\", \"losses\": [[0.5,1,2],[0.25,0.75,3]],"
    " \"weights\": [[1],[0]], \"reduction\": \"SUM_OVER_BATCH_SIZE\"}";
/* labels [2, 0, 1] as int64 little-endian bytes. */
static const char req_sparse_b64[] =
    "{\"loss\": \"sparse_softmax_cross_entropy\","
    " \"labels\": {\"shape\": [3], \"dtype\": \"int64\","
    " \"b64\": \"AgAAAAAAAAAAAAAAAAAAAAEAAAAAAAAA\"},"
    " \"logits\": [[1,2,3],[3,2,1],[0,0,1]], \"weights\": [1, 2, 0.5],"
    " \"outputs\": [\"loss\", \"per_sample\", \"weighted_sum\"]}";

/* Requests that fail after allocating: a class index out of range (found by the kernel), a
 * ragged tensor after another was decoded, a parameter the loss does not take. */
static const char req_bad_label[] =
    "{\"loss\": \"cross_entropy\", \"labels\": [2, 3],"
    " \"logits\": [[1.5,-0.5,2.0],[0.1,0.2,0.3]], \"weights\": [0.2, 1, 3]}";
static const char req_ragged[] =
    "{\"loss\": \"sigmoid_cross_entropy\", \"labels\": [[1,0],[0,1]],"
    " \"weights\": {\"shape\": [2, 2], \"data\": [1, 1, 0, 1]},"
    " \"logits\": [[0.5,-1],[2]], \"params\": {\"label_smoothing\": [0.1]}}";
static const char req_unknown_param[] =
    "{\"loss\": \"sigmoid_cross_entropy\", \"labels\": [[1,0],[0,1]],"
    " \"logits\": [[0.5,-1],[2,0.25]], \"params\": {\"gamma\": [2, 3]}}";

static void test_v1_errors(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        const char *text;
        int rc;
    } cases[] = {
        {"v1 class index out of range", req_bad_label, ML_ELABEL},
        {"v1 ragged tensor", req_ragged, ML_ETENSOR},
        {"v1 unknown parameter", req_unknown_param, ML_EUNKNOWN_PARAM},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tally t;
        exercise(cases[i].name, run_v1, cases[i].text, cases[i].rc, 0, 0, &t);
        assert_true(t.oom > 0);
    }
}

static void test_v1_requests(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        const char *text;
    } cases[] = {
        {"v1 sigmoid_ce mask (fused)", req_sce_fused},
        {"v1 sigmoid_ce float64 (general)", req_sce_general},
        {"v1 softmax_ce per_sample", req_softmax},
        {"v1 focal base64 per_class", req_focal_b64},
        {"v1 torch bce pos_weight", req_bce_pos_weight},
        {"v1 torch bce pos_weight (fused)", req_bce_pos_weight_fused},
        {"v1 torch ce reduction none", req_torch_ce_none},
        {"v1 keras2 focal sum", req_keras_cce},
        {"v1 keras3 cce per_sample", req_keras3_cce},
        {"v1 asl float64 per_element", req_asl},
        {"v1 tf.nn weighted pos_weight", req_tfnn_weighted},
        {"v1 compute_weighted_loss", req_cwl},
        {"v1 sparse softmax int64 base64", req_sparse_b64},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tally t;
        exercise(cases[i].name, run_v1, cases[i].text, 0, 0, 0, &t);
        assert_true(t.oom > 0);
    }
}

static void test_batch(void **state)
{
    (void)state;
    struct tally t;
    exercise("v1 batch of 3", run_batch, req_batch, 0, 1, 0, &t);
    assert_true(t.oom > 0);
}

/* A loss parameter that is a tensor travels through a document of its own (aux). */
static const char v2_json_pos_weight[] =
    "{\"parameters\": {\"pos_weight\": [1.5, 0.5, 3], \"reduction\": \"sum\"},"
    " \"inputs\": ["
    "{\"name\": \"LABELS\", \"shape\": [2, 3], \"datatype\": \"INT32\", \"data\": [1,0,1,0,0,1]},"
    "{\"name\": \"LOGITS\", \"shape\": [2, 3], \"datatype\": \"FP32\","
    " \"data\": [0.5,-1,2,-0.25,0.75,3]}],"
    " \"outputs\": [{\"name\": \"LOSS\"}, {\"name\": \"PER_SAMPLE\"}]}";

/* A mistake found after the first input was decoded: a ragged second input. */
static const char v2_json_ragged[] =
    "{\"inputs\": ["
    "{\"name\": \"LABELS\", \"shape\": [2, 3], \"datatype\": \"FP32\", \"data\": [1,0,1,0,0,1]},"
    "{\"name\": \"LOGITS\", \"shape\": [2, 3], \"datatype\": \"FP32\","
    " \"data\": [[0.5,-1,2],[-0.25,0.75]]}]}";

static void test_v2_json(void **state)
{
    (void)state;
    struct v2_case c = {"sigmoid_cross_entropy", v2_json_body, strlen(v2_json_body), -1};
    struct tally t;
    exercise("v2 json infer", run_v2, &c, 0, 0, 0, &t);
    assert_true(t.oom > 0);
    struct v2_case pw = {"binary_cross_entropy_with_logits", v2_json_pos_weight,
                         strlen(v2_json_pos_weight), -1};
    exercise("v2 json pos_weight", run_v2, &pw, 0, 0, 0, &t);
    assert_true(t.oom > 0);
    struct v2_case bad = {"sigmoid_cross_entropy", v2_json_ragged, strlen(v2_json_ragged), -1};
    exercise("v2 json ragged (error)", run_v2, &bad, ML_ETENSOR, 0, 0, &t);
    assert_true(t.oom > 0);
}

/* A binary request: LABELS FP32, MASK BOOL and LOGITS FP32 after the JSON header, with the
 * binary data starting 8-aligned, so that LABELS is read in place and LOGITS (at offset 30)
 * is copied; LOSS and PER_ELEMENT come back as binary, PER_SAMPLE as JSON. */
static void test_v2_binary(void **state)
{
    (void)state;
    static const char header[] =
        "{\"parameters\": {\"binary_data_output\": true},"
        " \"inputs\": ["
        "{\"name\": \"LABELS\", \"shape\": [2, 3], \"datatype\": \"FP32\","
        " \"parameters\": {\"binary_data_size\": 24}},"
        "{\"name\": \"MASK\", \"shape\": [2, 3], \"datatype\": \"BOOL\","
        " \"parameters\": {\"binary_data_size\": 6}},"
        "{\"name\": \"LOGITS\", \"shape\": [2, 3], \"datatype\": \"FP32\","
        " \"parameters\": {\"binary_data_size\": 24}}],"
        " \"outputs\": [{\"name\": \"LOSS\"}, {\"name\": \"PER_ELEMENT\"},"
        " {\"name\": \"PER_SAMPLE\", \"parameters\": {\"binary_data\": false}}]}";
    const float labels[6] = {1, 0, 1, 0, 0, 1};
    const unsigned char mask[6] = {1, 1, 0, 1, 0, 1};
    const float logits[6] = {0.5f, -1, 2, -0.25f, 0.75f, 3};
    size_t hlen = strlen(header);
    size_t len = hlen + 24 + 6 + 24;
    /* 8 spare bytes in front to align the binary part. */
    unsigned char *store = malloc(len + 16);
    assert_non_null(store);
    size_t shift = (8 - ((uintptr_t)(store + hlen) % 8)) % 8;
    unsigned char *body = store + shift;
    memcpy(body, header, hlen);
    unsigned char *p = body + hlen;
    for (int i = 0; i < 6; i++) /* little-endian on the wire */
        for (int k = 0; k < 4; k++) {
            uint32_t x;
            memcpy(&x, &labels[i], 4);
            p[4 * i + k] = (unsigned char)(x >> (8 * k));
            memcpy(&x, &logits[i], 4);
            p[30 + 4 * i + k] = (unsigned char)(x >> (8 * k));
        }
    memcpy(p + 24, mask, 6);
    struct v2_case c = {"torch.nn.functional.binary_cross_entropy_with_logits", (char *)body, len,
                        (long long)hlen};
    struct tally t;
    exercise("v2 binary infer", run_v2, &c, 0, 0, 0, &t);
    assert_true(t.oom > 0);
    /* One byte short: the last input is missing a byte (invalid_binary after the others were
     * bound). */
    c.len--;
    exercise("v2 binary truncated (error)", run_v2, &c, MLP_EBINARY, 0, 0, &t);
    assert_true(t.oom > 0);
    free(store);
}

static void test_eval_direct(void **state)
{
    (void)state;
    fill_eval_inputs();
    static const struct {
        const char *name;
        struct eval_case c;
        enum ml_path path;
    } cases[] = {
        {"ml_eval fused parallel_for",
         {"sigmoid_cross_entropy", NULL,
          ML_OUT_LOSS | ML_OUT_SUM_WEIGHTS | ML_OUT_NUM_NONZERO_WEIGHTS, 0, 1, EVAL_ROWS,
          EVAL_COLS},
         ML_PATH_FUSED},
        {"ml_eval general per_sample/class",
         {"sigmoid_cross_entropy", NULL,
          ML_OUT_LOSS | ML_OUT_PER_ELEMENT | ML_OUT_PER_SAMPLE | ML_OUT_PER_CLASS, 0, 1, 20, 30},
         ML_PATH_GENERAL},
        {"ml_eval bce pos_weight",
         {"binary_cross_entropy_with_logits", "sum", ML_OUT_LOSS | ML_OUT_PER_SAMPLE, 1, 0, 20, 30},
         ML_PATH_GENERAL},
        {"ml_eval bce reduction none",
         {"binary_cross_entropy_with_logits", "none", ML_OUT_LOSS, 1, 1, 20, 30},
         ML_PATH_GENERAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        /* The path the case means to exercise is the one taken. */
        struct outcome o;
        memset(&o, 0, sizeof(o));
        parallel_calls = 0;
        run_eval(&cases[i].c, INJECT_COUNT, 0, &o);
        assert_int_equal(o.rc, 0);
        assert_int_equal(last_path, cases[i].path);
        if (cases[i].path == ML_PATH_FUSED && cases[i].c.use_parallel)
            assert_true(parallel_calls > 0);
        outcome_free(&o);
        struct tally t;
        exercise(cases[i].name, run_eval, &cases[i].c, 0, 0, 1, &t);
        assert_true(t.oom > 0);
    }
    /* A NaN in the logits: the fused path defers the check to its kernel, and the general
     * path it falls back to when it cannot allocate checks first; either way non_finite_input,
     * or out_of_memory. */
    double saved = eval_in.logits[70000];
    eval_in.logits[70000] = NAN;
    struct tally t;
    exercise("ml_eval fused NaN (error)", run_eval, &cases[0].c, ML_ENONFINITE, 0, 1, &t);
    assert_true(t.oom > 0);
    eval_in.logits[70000] = saved;
}

int main(void)
{
#ifdef HAVE_LSAN
    const char *opts = getenv("ASAN_OPTIONS");
    if (opts && strstr(opts, "detect_leaks=0")) {
        fprintf(stderr, "test_alloc: ASAN_OPTIONS turns leak detection off; it checks leaks\n");
        return 1;
    }
#endif
    /* jansson allocates through the protocol's allocator (as the server does), whose malloc is
     * wrapped like the library's. */
    json_set_alloc_funcs(mlp_json_malloc, free);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_injection_works), cmocka_unit_test(test_v1_requests),
        cmocka_unit_test(test_v1_errors),       cmocka_unit_test(test_batch),
        cmocka_unit_test(test_v2_json),         cmocka_unit_test(test_v2_binary),
        cmocka_unit_test(test_eval_direct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
