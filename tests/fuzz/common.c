/*
 * common.c -- the checks shared by the fuzz targets (fuzz.h).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: invariant failed: %s: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

/* The codes are negative and small (ml_status from -1, the protocol's from -100): a scan of
 * [-999, -1] finds every name the project's table has. */
int fuzz_known_code(const char *name)
{
    if (!name || !strcmp(name, "internal_error"))
        return 0;
    for (int status = -1; status >= -999; status--)
        if (!strcmp(mlp_status_name(status), name))
            return 1;
    return 0;
}

json_t *fuzz_parse_json(const char *text, size_t len, const char *what)
{
    json_error_t je;
    FUZZ_CHECK(text != NULL, "%s: no text", what);
    json_t *doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    FUZZ_CHECK(doc != NULL, "%s is not JSON (line %d, column %d: %s): %.*s", what, je.line,
               je.column, je.text, (int)(len > 2000 ? 2000 : len), text);
    return doc;
}

static int is_nonneg_integer(const json_t *v)
{
    return json_is_integer(v) && json_integer_value(v) >= 0;
}

void fuzz_check_error(const json_t *answer, int status)
{
    const char *name = mlp_status_name(status);
    FUZZ_CHECK(status < 0, "status %d is not an error", status);
    FUZZ_CHECK(fuzz_known_code(name), "status %d (%s) is not in the project's table", status,
               name);
    FUZZ_CHECK(json_is_object(answer), "the error answer is not an object");
    const json_t *error = json_object_get(answer, "error");
    const json_t *code = json_object_get(answer, "code");
    const json_t *field = json_object_get(answer, "field");
    FUZZ_CHECK(json_is_string(error) && json_string_length(error) > 0,
               "\"error\" is not a message");
    FUZZ_CHECK(json_is_string(code) && !strcmp(json_string_value(code), name),
               "\"code\" is not %s", name);
    FUZZ_CHECK(fuzz_known_code(json_string_value(code)), "code %s unknown",
               json_string_value(code));
    FUZZ_CHECK(json_is_string(field), "\"field\" is not a string");
    const json_t *index = json_object_get(answer, "index");
    FUZZ_CHECK(!index || is_nonneg_integer(index), "\"index\" is not a non-negative integer");
    const json_t *line = json_object_get(answer, "line");
    const json_t *column = json_object_get(answer, "column");
    if (status == MLP_EMALFORMED)
        FUZZ_CHECK(json_is_integer(line) && json_is_integer(column),
                   "malformed_json without line and column");
    else
        FUZZ_CHECK(!line && !column, "line/column on a %s error", name);
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)answer, key, val)
    {
        FUZZ_CHECK(!strcmp(key, "error") || !strcmp(key, "code") || !strcmp(key, "field") ||
                       !strcmp(key, "index") || !strcmp(key, "line") || !strcmp(key, "column"),
                   "unexpected key '%s' in an error object", key);
        (void)val;
    }
}

void fuzz_check_v1_success(const json_t *answer)
{
    FUZZ_CHECK(json_is_object(answer), "the answer is not an object");
    FUZZ_CHECK(!json_object_get(answer, "error"), "a success carries \"error\"");
    const json_t *loss = json_object_get(answer, "loss");
    FUZZ_CHECK(json_is_number(loss) || json_is_string(loss) || json_is_array(loss),
               "\"loss\" is missing or of the wrong type");
    if (json_is_string(loss)) {
        const char *s = json_string_value(loss);
        FUZZ_CHECK(!strcmp(s, "NaN") || !strcmp(s, "Infinity") || !strcmp(s, "-Infinity"),
                   "\"loss\" is the string '%s'", s);
    }
    FUZZ_CHECK(json_is_array(json_object_get(answer, "shape")), "no \"shape\"");
    FUZZ_CHECK(json_is_string(json_object_get(answer, "loss_name")), "no \"loss_name\"");
    FUZZ_CHECK(json_is_string(json_object_get(answer, "reduction")), "no \"reduction\"");
    const json_t *dtype = json_object_get(answer, "dtype");
    FUZZ_CHECK(json_is_string(dtype) && (!strcmp(json_string_value(dtype), "float32") ||
                                         !strcmp(json_string_value(dtype), "float64")),
               "\"dtype\" is not float32 or float64");
}

/* ---- Requests back to JSON ------------------------------------------------------------ */

static const char *const slot_names[5] = {"labels", "logits", "predictions", "losses",
                                          "weights"};

static const char *const output_names[] = {"loss",         "per_element", "per_sample",
                                           "per_class",    "weighted_sum", "sum_weights",
                                           "num_nonzero_weights"};

/* A canonical NaN, as the decoder stores "NaN". */
static int is_canonical_nan(double v)
{
    double nan = NAN;
    return isnan(v) && !memcmp(&v, &nan, sizeof(v));
}

/* JSON numbers say a float64 tensor exactly unless a NaN has another payload or sign. */
static int json_exact(const struct ml_tensor *t, int64_t n)
{
    if (t->dtype != ML_FLOAT64)
        return 0;
    const double *d = t->data;
    for (int64_t i = 0; i < n; i++)
        if (isnan(d[i]) && !is_canonical_nan(d[i]))
            return 0;
    return 1;
}

static void encode_tensor(struct mlp_buf *b, const struct ml_tensor *t, int all_b64)
{
    char tmp[32];
    int64_t n = ml_shape_numel(t->rank, t->shape);
    mlp_buf_puts(b, "{\"shape\":[");
    for (int d = 0; d < t->rank; d++) {
        snprintf(tmp, sizeof(tmp), d ? ",%lld" : "%lld", (long long)t->shape[d]);
        mlp_buf_puts(b, tmp);
    }
    mlp_buf_puts(b, "],");
    if (!all_b64 && json_exact(t, n)) {
        const double *d = t->data;
        /* Rank 0: the number itself; otherwise flat data, which a declared shape accepts. */
        if (t->rank == 0) {
            mlp_buf_puts(b, "\"data\":");
            mlp_buf_number(b, d[0]);
        } else {
            mlp_buf_puts(b, "\"data\":[");
            for (int64_t i = 0; i < n; i++) {
                if (i)
                    mlp_buf_append(b, ",", 1);
                mlp_buf_number(b, d[i]);
            }
            mlp_buf_append(b, "]", 1);
        }
    } else {
        mlp_buf_puts(b, "\"dtype\":");
        mlp_buf_string(b, ml_dtype_name(t->dtype));
        mlp_buf_puts(b, ",\"b64\":\"");
        mlp_b64_encode(b, t->data, (size_t)n * ml_dtype_size(t->dtype));
        mlp_buf_append(b, "\"", 1);
    }
    mlp_buf_append(b, "}", 1);
}

void fuzz_encode_request(struct mlp_buf *b, const struct mlp_request *r, int all_b64,
                         const char *weights_key)
{
    const struct ml_request *q = &r->req;
    const struct ml_tensor *slots[5] = {q->labels, q->logits, q->predictions, q->losses,
                                        q->weights};
    mlp_buf_puts(b, "{\"loss\":");
    mlp_buf_string(b, q->loss);
    if (q->reduction) {
        mlp_buf_puts(b, ",\"reduction\":");
        mlp_buf_string(b, q->reduction);
    }
    mlp_buf_puts(b, q->dtype == ML_FLOAT64 ? ",\"dtype\":\"float64\"" : ",\"dtype\":\"float32\"");
    mlp_buf_puts(b, q->allow_non_finite ? ",\"allow_non_finite\":true"
                                        : ",\"allow_non_finite\":false");
    mlp_buf_puts(b, ",\"outputs\":[");
    int first = 1;
    for (size_t i = 0; i < sizeof(output_names) / sizeof(output_names[0]); i++)
        if (q->outputs & (1u << i)) {
            if (!first)
                mlp_buf_append(b, ",", 1);
            mlp_buf_string(b, output_names[i]);
            first = 0;
        }
    mlp_buf_append(b, "]", 1);
    for (int i = 0; i < 5; i++) {
        if (!slots[i])
            continue;
        mlp_buf_append(b, ",", 1);
        mlp_buf_string(b, i == 4 ? weights_key : slot_names[i]);
        mlp_buf_append(b, ":", 1);
        encode_tensor(b, slots[i], all_b64);
    }
    if (q->params) {
        mlp_buf_puts(b, ",\"params\":{");
        for (size_t i = 0; i < q->num_params; i++) {
            const struct ml_param *p = &q->params[i];
            if (i)
                mlp_buf_append(b, ",", 1);
            mlp_buf_string(b, p->name);
            mlp_buf_append(b, ":", 1);
            if (p->kind == ML_PARAM_BOOL)
                mlp_buf_puts(b, p->boolean ? "true" : "false");
            else if (p->kind == ML_PARAM_NUMBER)
                mlp_buf_number(b, p->number);
            else
                encode_tensor(b, &p->tensor, all_b64);
        }
        mlp_buf_append(b, "}", 1);
    }
    /* The keys the protocol ignores, in their order (the answer lists them). */
    for (size_t i = 0; i < r->num_ignored; i++) {
        mlp_buf_append(b, ",", 1);
        mlp_buf_string(b, r->ignored[i]);
        mlp_buf_puts(b, ":null");
    }
    mlp_buf_append(b, "}", 1);
}

static void same_tensor(const struct ml_tensor *a, const struct ml_tensor *b, const char *what)
{
    FUZZ_CHECK((a == NULL) == (b == NULL), "%s: present once only", what);
    if (!a)
        return;
    FUZZ_CHECK(a->dtype == b->dtype, "%s: dtype %d != %d", what, (int)a->dtype, (int)b->dtype);
    FUZZ_CHECK(a->rank == b->rank, "%s: rank %d != %d", what, a->rank, b->rank);
    for (int d = 0; d < a->rank; d++)
        FUZZ_CHECK(a->shape[d] == b->shape[d], "%s: dimension %d differs", what, d);
    size_t bytes = (size_t)ml_shape_numel(a->rank, a->shape) * ml_dtype_size(a->dtype);
    FUZZ_CHECK(bytes == 0 || !memcmp(a->data, b->data, bytes), "%s: the values differ", what);
}

static int same_string(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

void fuzz_same_request(const struct mlp_request *ra, const struct mlp_request *rb)
{
    const struct ml_request *a = &ra->req, *b = &rb->req;
    FUZZ_CHECK(same_string(a->loss, b->loss), "loss differs");
    FUZZ_CHECK(same_string(a->reduction, b->reduction), "reduction differs");
    FUZZ_CHECK(a->dtype == b->dtype, "dtype differs");
    FUZZ_CHECK(a->allow_non_finite == b->allow_non_finite, "allow_non_finite differs");
    FUZZ_CHECK(a->outputs == b->outputs, "outputs %#x != %#x", a->outputs, b->outputs);
    same_tensor(a->labels, b->labels, "labels");
    same_tensor(a->logits, b->logits, "logits");
    same_tensor(a->predictions, b->predictions, "predictions");
    same_tensor(a->losses, b->losses, "losses");
    same_tensor(a->weights, b->weights, "weights");
    FUZZ_CHECK((a->params == NULL) == (b->params == NULL), "params given once only");
    FUZZ_CHECK(a->num_params == b->num_params, "%zu params != %zu", a->num_params,
               b->num_params);
    for (size_t i = 0; i < a->num_params; i++) {
        const struct ml_param *p = &a->params[i], *q = &b->params[i];
        FUZZ_CHECK(!strcmp(p->name, q->name), "param %zu: name differs", i);
        FUZZ_CHECK(p->kind == q->kind, "params.%s: kind %d != %d", p->name, (int)p->kind,
                   (int)q->kind);
        if (p->kind == ML_PARAM_BOOL)
            FUZZ_CHECK(p->boolean == q->boolean, "params.%s differs", p->name);
        else if (p->kind == ML_PARAM_NUMBER)
            FUZZ_CHECK(!memcmp(&p->number, &q->number, sizeof(double)),
                       "params.%s: %.17g != %.17g", p->name, p->number, q->number);
        else
            same_tensor(&p->tensor, &q->tensor, p->name);
    }
    FUZZ_CHECK(ra->num_ignored == rb->num_ignored, "ignored keys differ");
    for (size_t i = 0; i < ra->num_ignored; i++)
        FUZZ_CHECK(!strcmp(ra->ignored[i], rb->ignored[i]), "ignored key %zu differs", i);
}
