/*
 * test_accuracy.c -- per-element losses against their exact values (tests/data/accuracy.json).
 *
 * Every case of the data file (one element, or one row of classes, of one loss in float32 or
 * float64 on adversarial inputs; tests/accuracy/gen.py made it with mpmath and states the
 * rules) goes through ml_eval on the general path (per_element) and, for the elementwise
 * losses, through a request with reduction sum and only the reduced loss: the fused path for
 * the losses eval.c's fast_candidate() lists (asserted), a single element (and one element
 * of 19 picked by a one-hot weight, so that the vector body and the tail of the loop both
 * run) whose sum is that element's loss exactly. The value, rounded to the dtype, must be
 *   - within 4 ulp of the exactly rounded loss ("ref") where the framework's formula is
 *     well-conditioned (cond "well": its first-order error bound kappa is at most 4 ulp);
 *   - where it is not (cond "ill"), no further from "ref" than the framework's own float
 *     computation ("fw": torch 1.13 itself, or the TF/Keras formula in numpy), up to the
 *     factor FAITHFUL below, and never held to less than 4 ulp or than kappa up to 16.
 * The worst ulp per loss, dtype and path is printed as a markdown table (README.md,
 * "Accuracy"), every case beyond its bound as one line ("BEYOND ... got ... exact ... ulp
 * ... bound ..."), and, with MASKLOSS_ACCURACY_VERBOSE set, every fused value that differs
 * from the general one.
 *
 * Run from the repository root (the data file's path is relative).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "maskloss.h"

#define DATA "tests/data/accuracy.json"

/*
 * The bounds, in ulp of the dtype. Well-conditioned: WELL_ULP. Ill-conditioned (the formula
 * amplifies the rounding of an intermediate, kappa > 4): FAITHFUL times the framework's own
 * distance -- no worse than the framework, up to the factor between a correctly rounded
 * operation (0.5 ulp) and a faithful one (1 ulp) in the amplified intermediate, since torch,
 * numpy and maskloss all use faithful functions -- and never less than the formula's own
 * first-order bound kappa while that is small (up to KAPPA_CAP): there, what the framework
 * happened to get is luck as much as method.
 */
#define WELL_ULP 4.0
#define FAITHFUL 2.0
#define KAPPA_CAP 16.0

enum { MAX_CLASSES = 16, FUSED_N = 19, MAX_PARAMS = 8, MAX_LOSSES = 32 };

/* A case's tensors, in the case's dtype (class-index labels as int64). */
struct inputs {
    double x[MAX_CLASSES], labels[MAX_CLASSES], weights[MAX_CLASSES];
    int64_t nx, nlabels, nweights, shape[2];
    int rank, sparse;
};

/* Worst distances of one loss: on the well-conditioned cases per [dtype][path]; on the
 * ill-conditioned ones per [dtype], both paths, the worst ratio to the framework's own
 * distance (taken as at least 4 ulp, the floor of every bound). */
struct worst {
    const char *loss;
    int cases[2], ill[2];
    double well_ulp[2][2], ill_ratio[2];
    int ran_well[2][2];
};

struct tally {
    struct worst loss[MAX_LOSSES];
    int nlosses, failures, path_errors, checked, differ;
    int verbose; /* MASKLOSS_ACCURACY_VERBOSE set: list the fused values != general ones */
};

static int64_t ordinal(double v, int f32)
{
    if (f32) {
        float f = (float)v;
        int32_t i;
        memcpy(&i, &f, sizeof(i));
        return i >= 0 ? i : -(int64_t)(i & 0x7fffffff);
    }
    int64_t i;
    memcpy(&i, &v, sizeof(i));
    return i >= 0 ? i : -(i & INT64_MAX);
}

/* Distance in numbers of the dtype between a and b (as doubles: it may exceed 2^53). */
static double ulp_distance(double a, double b, int f32)
{
    if (isnan(a) || isnan(b))
        return INFINITY;
    int64_t oa = ordinal(a, f32), ob = ordinal(b, f32);
    return oa >= ob ? (double)((uint64_t)oa - (uint64_t)ob) : (double)((uint64_t)ob - (uint64_t)oa);
}

static int64_t read_array(const json_t *a, double *out, int64_t cap)
{
    if (!json_is_array(a) || (int64_t)json_array_size(a) > cap)
        return -1;
    for (size_t i = 0; i < json_array_size(a); i++)
        out[i] = json_number_value(json_array_get(a, i));
    return (int64_t)json_array_size(a);
}

static void read_inputs(const json_t *c, struct inputs *in)
{
    memset(in, 0, sizeof(*in));
    const json_t *shape = json_object_get(c, "shape");
    in->rank = (int)json_array_size(shape);
    assert_true(in->rank >= 1 && in->rank <= 2);
    for (int d = 0; d < in->rank; d++)
        in->shape[d] = json_integer_value(json_array_get(shape, (size_t)d));
    in->nx = read_array(json_object_get(c, "x"), in->x, MAX_CLASSES);
    assert_true(in->nx >= 1);
    const json_t *labels = json_object_get(c, "labels");
    if (labels)
        in->nlabels = read_array(labels, in->labels, MAX_CLASSES);
    const json_t *ld = json_object_get(c, "labels_dtype");
    in->sparse = ld && !strcmp(json_string_value(ld), "int64");
    const json_t *w = json_object_get(c, "weights");
    if (w)
        in->nweights = read_array(w, in->weights, MAX_CLASSES);
}

/* Writes n doubles into buf as the dtype; returns buf. */
static void *as_dtype(const double *v, int64_t n, enum ml_dtype dt, void *buf)
{
    for (int64_t i = 0; i < n; i++) {
        if (dt == ML_FLOAT32)
            ((float *)buf)[i] = (float)v[i];
        else if (dt == ML_FLOAT64)
            ((double *)buf)[i] = v[i];
        else
            ((int64_t *)buf)[i] = (int64_t)v[i];
    }
    return buf;
}

/* The losses eval.c's fast_candidate() sends to the fused kernels (reduced outputs only). */
static int fused_candidate(const char *loss, const json_t *params)
{
    static const char *const always[] = {
        "tf.compat.v1.losses.sigmoid_cross_entropy",
        "tf.nn.sigmoid_cross_entropy_with_logits",
        "tf.nn.weighted_cross_entropy_with_logits",
        "tf.compat.v1.losses.log_loss",
        "tf.compat.v1.losses.mean_squared_error",
        "tf.compat.v1.losses.absolute_difference",
        "tf.compat.v1.losses.huber_loss",
        "tf.compat.v1.losses.hinge_loss",
        "torch.nn.functional.binary_cross_entropy_with_logits",
        "ASL.AsymmetricLoss",
    };
    for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
        if (!strcmp(loss, always[i]))
            return 1;
    if (strcmp(loss, "torchvision.ops.sigmoid_focal_loss"))
        return 0;
    const json_t *a = json_object_get(params, "alpha"), *g = json_object_get(params, "gamma");
    double alpha = a ? json_number_value(a) : 0.25, gamma = g ? json_number_value(g) : 2.0;
    return ((alpha >= 0 && alpha <= 1) || alpha == -1) && (gamma == 0 || gamma == 1 || gamma == 2);
}

/*
 * One evaluation of a case: n copies of its element (n > 1: the weight is 1 at `hot` and 0
 * elsewhere) with reduction sum and the reduced loss only, or (n == 0) the case itself with
 * per_element. Returns 0 and the value and path, or the status.
 */
static int eval_case(const json_t *c, const struct inputs *in, enum ml_dtype dt, int64_t n,
                     int64_t hot, double *value, enum ml_path *path, char *why, size_t whysize)
{
    double buf_x[FUSED_N], buf_z[FUSED_N], buf_w[FUSED_N], buf_cw[MAX_CLASSES];
    int64_t lbuf[FUSED_N > MAX_CLASSES ? FUSED_N : MAX_CLASSES];
    struct ml_tensor x = {in->rank, {in->shape[0], in->shape[1]}, dt, NULL};
    struct ml_tensor z = x, w = x, cw = {1, {in->nweights}, dt, NULL};
    if (n > 0) {
        double xs[FUSED_N], zs[FUSED_N], ws[FUSED_N];
        for (int64_t i = 0; i < n; i++) {
            xs[i] = in->x[0];
            zs[i] = in->nlabels ? in->labels[0] : 0;
            ws[i] = i == hot;
        }
        x.rank = z.rank = w.rank = 1;
        x.shape[0] = z.shape[0] = w.shape[0] = n;
        x.data = as_dtype(xs, n, dt, buf_x);
        z.data = as_dtype(zs, n, dt, buf_z);
        w.data = as_dtype(ws, n, dt, buf_w);
    } else {
        x.data = as_dtype(in->x, in->nx, dt, buf_x);
        if (in->sparse) {
            z.rank = 1;
            z.shape[0] = in->nlabels;
            z.dtype = ML_INT64;
            z.data = as_dtype(in->labels, in->nlabels, ML_INT64, lbuf);
        } else {
            z.data = as_dtype(in->labels, in->nlabels, dt, buf_z);
        }
        cw.data = as_dtype(in->weights, in->nweights, dt, buf_cw);
    }

    struct ml_param params[MAX_PARAMS];
    size_t np = 0;
    const char *key;
    json_t *val;
    json_object_foreach(json_object_get(c, "params"), key, val)
    {
        assert_true(np < MAX_PARAMS);
        memset(&params[np], 0, sizeof(params[np]));
        params[np].name = key;
        if (json_is_boolean(val)) {
            params[np].kind = ML_PARAM_BOOL;
            params[np].boolean = json_is_true(val);
        } else {
            params[np].kind = ML_PARAM_NUMBER;
            params[np].number = json_number_value(val);
        }
        np++;
    }

    struct ml_request req;
    ml_request_init(&req);
    req.loss = json_string_value(json_object_get(c, "loss"));
    req.dtype = dt;
    const char *input = json_string_value(json_object_get(c, "input"));
    if (!strcmp(input, "predictions"))
        req.predictions = &x;
    else if (!strcmp(input, "losses"))
        req.losses = &x;
    else
        req.logits = &x;
    req.labels = in->nlabels ? &z : NULL;
    req.params = params;
    req.num_params = np;
    if (n > 0) {
        req.reduction = "sum";
        req.outputs = ML_OUT_LOSS;
        req.weights = n > 1 ? &w : NULL;
    } else {
        req.outputs = ML_OUT_PER_ELEMENT;
        req.weights = in->nweights ? &cw : NULL;
    }
    struct ml_result res;
    struct ml_error err;
    int rc = ml_eval(&req, &res, &err);
    if (rc) {
        snprintf(why, whysize, "%s: %s", ml_status_name(rc), err.message);
        return rc;
    }
    *path = res.path;
    if (n > 0) {
        *value = res.loss;
    } else if (res.per_element.numel != 1 || !res.per_element.data) {
        snprintf(why, whysize, "per_element has %lld elements, expected 1",
                 (long long)res.per_element.numel);
        rc = ML_EOUTPUT;
    } else {
        *value = res.per_element.data[0];
    }
    ml_result_free(&res);
    return rc;
}

static struct worst *worst_of(struct tally *t, const char *loss)
{
    for (int i = 0; i < t->nlosses; i++)
        if (!strcmp(t->loss[i].loss, loss))
            return &t->loss[i];
    assert_true(t->nlosses < MAX_LOSSES);
    struct worst *w = &t->loss[t->nlosses++];
    memset(w, 0, sizeof(*w));
    w->loss = loss;
    return w;
}

/* Scores one value of a case; returns 1 when it is beyond the case's bound. */
static int score(struct tally *t, const json_t *c, int f32, int well, double fw_ulp, double bound,
                 double got, enum ml_path path, const char *how)
{
    const char *loss = json_string_value(json_object_get(c, "loss"));
    double ref = json_number_value(json_object_get(c, "ref"));
    double d = ulp_distance(got, ref, f32);
    struct worst *w = worst_of(t, loss);
    int p = path == ML_PATH_FUSED, dt = !f32;
    if (well) {
        w->ran_well[dt][p]++;
        w->well_ulp[dt][p] = fmax(w->well_ulp[dt][p], d);
    } else {
        w->ill_ratio[dt] = fmax(w->ill_ratio[dt], d / fmax(fw_ulp, WELL_ULP));
    }
    t->checked++;
    if (d <= bound)
        return 0;
    print_message("BEYOND %s %s: %s got %.17g exact %s ulp %.4g bound %.4g (%s)\n",
                  p ? "fused" : "general", how, json_string_value(json_object_get(c, "id")), got,
                  json_string_value(json_object_get(c, "exact")), d, bound,
                  well ? "well-conditioned" : "ill-conditioned, bound from the framework");
    return 1;
}

static void run_case(struct tally *t, const json_t *c)
{
    const char *id = json_string_value(json_object_get(c, "id"));
    const char *loss = json_string_value(json_object_get(c, "loss"));
    int f32 = !strcmp(json_string_value(json_object_get(c, "dtype")), "float32");
    enum ml_dtype dt = f32 ? ML_FLOAT32 : ML_FLOAT64;
    int well = !strcmp(json_string_value(json_object_get(c, "cond")), "well");
    double ref = json_number_value(json_object_get(c, "ref"));
    const json_t *fw = json_object_get(c, "fw");
    double kappa = json_number_value(json_object_get(c, "kappa"));
    double fw_ulp = json_is_number(fw) ? ulp_distance(json_number_value(fw), ref, f32) : INFINITY;
    double bound =
        well ? WELL_ULP : fmax(fmax(WELL_ULP, fmin(kappa, KAPPA_CAP)), FAITHFUL * fw_ulp);
    struct worst *w = worst_of(t, loss);
    w->cases[!f32]++;
    w->ill[!f32] += !well;

    struct inputs in;
    read_inputs(c, &in);
    char why[400];
    double general = NAN, value;
    enum ml_path path;
    if (eval_case(c, &in, dt, 0, 0, &general, &path, why, sizeof(why))) {
        print_message("ERROR general: %s: %s\n", id, why);
        t->failures++;
    } else {
        if (path != ML_PATH_GENERAL) {
            print_message("PATH %s: per_element did not take the general path\n", id);
            t->path_errors++;
        }
        t->failures += score(t, c, f32, well, fw_ulp, bound, f32 ? (double)(float)general : general,
                             path, "per_element");
    }
    if (in.rank != 1 || in.nx != 1)
        return; /* rows and Keras' per-sample means: no fused kernel */

    int candidate = fused_candidate(loss, json_object_get(c, "params"));
    const struct {
        int64_t n, hot;
        const char *how;
    } runs[] = {{1, 0, "sum of 1"},
                {FUSED_N, 0, "sum of 19, weight at 0"},
                {FUSED_N, FUSED_N - 1, "sum of 19, weight at 18"}};
    for (size_t r = 0; r < (candidate ? 3 : 1); r++) {
        if (eval_case(c, &in, dt, runs[r].n, runs[r].hot, &value, &path, why, sizeof(why))) {
            print_message("ERROR %s: %s: %s\n", runs[r].how, id, why);
            t->failures++;
            continue;
        }
        if (candidate && path != ML_PATH_FUSED) {
            print_message("PATH %s: %s did not take the fused path\n", id, runs[r].how);
            t->path_errors++;
        }
        t->failures += score(t, c, f32, well, fw_ulp, bound, f32 ? (double)(float)value : value,
                             path, runs[r].how);
        /* A sum starts at +0: -0 and +0 are the same loss here. */
        if (path == ML_PATH_FUSED && !isnan(general) && value != general) {
            t->differ++;
            if (t->verbose)
                print_message("DIFFER %s: %s: fused %.17g general %.17g\n", runs[r].how, id, value,
                              general);
        }
    }
}

static void number(char *buf, size_t size, double v)
{
    snprintf(buf, size, v < 1e5 ? "%.0f" : "%.1e", v);
}

static void cell(char *buf, size_t size, const struct worst *w, int dt, int p)
{
    if (!w->ran_well[dt][p])
        snprintf(buf, size, "-");
    else
        number(buf, size, w->well_ulp[dt][p]);
}

static void print_table(const struct tally *t)
{
    print_message("\nWorst distance in ulp from the exactly rounded loss on the well-conditioned "
                  "cases, per path; on the ill-conditioned ones (both paths), the worst ratio of "
                  "that distance to the framework's own (taken as at least 4 ulp).\n\n");
    print_message("| loss | cases (ill) | float32 general | float32 fused | float32 ill / fw | "
                  "float64 general | float64 fused | float64 ill / fw |\n"
                  "|---|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < t->nlosses; i++) {
        const struct worst *w = &t->loss[i];
        char c[2][3][40];
        for (int dt = 0; dt < 2; dt++) {
            cell(c[dt][0], 40, w, dt, 0);
            cell(c[dt][1], 40, w, dt, 1);
            snprintf(c[dt][2], 40, "-");
            if (w->ill[dt])
                snprintf(c[dt][2], 40, w->ill_ratio[dt] < 100 ? "%.2g" : "%.1e", w->ill_ratio[dt]);
        }
        print_message("| `%s` | %d (%d) / %d (%d) | %s | %s | %s | %s | %s | %s |\n", w->loss,
                      w->cases[0], w->ill[0], w->cases[1], w->ill[1], c[0][0], c[0][1], c[0][2],
                      c[1][0], c[1][1], c[1][2]);
    }
    print_message("\n");
}

static void test_accuracy_cases(void **state)
{
    (void)state;
    json_error_t je;
    json_t *root = json_load_file(DATA, 0, &je);
    if (!root)
        fail_msg("cannot read %s (run the tests from the repository root): %s", DATA, je.text);
    const json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) >= 1000);
    struct tally *t = calloc(1, sizeof(*t));
    assert_non_null(t);
    t->verbose = getenv("MASKLOSS_ACCURACY_VERBOSE") != NULL;
    for (size_t i = 0; i < json_array_size(cases); i++)
        run_case(t, json_array_get(cases, i));
    print_table(t);
    print_message("accuracy: %zu cases, %d values checked, %d beyond their bound, %d on the wrong "
                  "path; fused value != general value in %d\n",
                  json_array_size(cases), t->checked, t->failures, t->path_errors, t->differ);
    int failures = t->failures, path_errors = t->path_errors;
    free(t);
    json_decref(root);
    assert_int_equal(path_errors, 0);
    assert_int_equal(failures, 0);
}

/* The distance itself, on values whose distances are known by construction. */
static void test_ulp_distance(void **state)
{
    (void)state;
    assert_true(ulp_distance(1.0, 1.0, 1) == 0);
    assert_true(ulp_distance(1.0, (double)nextafterf(1.0f, 2.0f), 1) == 1);
    assert_true(ulp_distance(1.0, (double)nextafterf(1.0f, 0.0f), 1) == 1);
    assert_true(ulp_distance(1.0, nextafter(1.0, 2.0), 0) == 1);
    assert_true(ulp_distance(0.0, -0.0, 0) == 0);
    assert_true(ulp_distance(0x1p-149, -0x1p-149, 1) == 2);
    assert_true(ulp_distance(0x1p-1074, 0.0, 0) == 1);
    assert_true(ulp_distance(2.0, 1.0, 1) == 0x1p23);
    assert_true(ulp_distance(2.0, 1.0, 0) == 0x1p52);
    assert_true(isinf(ulp_distance(NAN, 1.0, 0)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ulp_distance),
        cmocka_unit_test(test_accuracy_cases),
    };
    return cmocka_run_group_tests_name("accuracy", tests, NULL, NULL);
}
