/*
 * request.c -- JSON request -> struct ml_request.
 *
 * Tensors are a number, a nested array, or {"shape": [...], "data": nested-or-flat}. Leaves
 * are numbers, booleans (masks), or the strings "NaN", "Infinity", "-Infinity" (the
 * protobuf JSON spelling of non-finite values).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"

int mlp__fail(struct mlp_error *err, int code, const char *field, long long index, const char *fmt,
              ...)
{
    if (!err)
        return code;
    memset(err, 0, sizeof(*err));
    err->e.code = code;
    err->e.index = index;
    snprintf(err->e.field, sizeof(err->e.field), "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->e.message, sizeof(err->e.message), fmt, ap);
    va_end(ap);
    return code;
}

/* Allocations that failed inside jansson on this thread (through mlp_json_malloc). Only
 * compared before and after one json_loadb on the same thread: no state shared by calls. */
static _Thread_local unsigned long json_alloc_failures;

void *mlp_json_malloc(size_t size)
{
    void *p = malloc(size);
    if (!p)
        json_alloc_failures++;
    return p;
}

/* Numbers as doubles (no integer overflow), duplicate keys rejected: a request that says
 * "weights" twice is ambiguous. */
#define PARSE_FLAGS (JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES)

int mlp_parse(const char *text, size_t len, json_t **root, struct mlp_error *err)
{
    json_error_t je;
    unsigned long failures = json_alloc_failures;
    memset(&je, 0, sizeof(je));
    *root = json_loadb(text, len, PARSE_FLAGS, &je);
    /* jansson 2.14 fails without a message when an allocation fails, and its lexer goes on
     * without a byte it could not store (lex_save ignores strbuffer_append_byte's failure):
     * a document read while an allocation failed may differ from the text. */
    if (json_alloc_failures != failures || (!*root && !je.text[0])) {
        json_decref(*root);
        *root = NULL;
        return mlp__fail(err, ML_ENOMEM, "", -1, "out of memory parsing the request");
    }
    if (*root)
        return 0;
    mlp__fail(err, MLP_EMALFORMED, "", -1, "malformed JSON at line %d, column %d: %s", je.line,
              je.column, je.text);
    if (err) {
        err->line = je.line;
        err->column = je.column;
    }
    return MLP_EMALFORMED;
}

/* The input arrays decoded by numarray.c, the rest of the document by jansson; whenever
 * that does not give a document (the text is not JSON, memory ran out, or the scanner
 * misread it), mlp_parse on the whole text answers, as it would have without the scanner. */
int mlp_parse_request(const char *text, size_t len, json_t **root, struct mlp_error *err)
{
    struct mlp__regions regions;
    if (mlp__regions_scan(text, len, &regions) == 0 && regions.num > 0) {
        json_error_t je;
        unsigned long failures = json_alloc_failures;
        struct mlp__reader rd = {text, len, 0, &regions, 0, 0, 0};
        json_t *doc = json_load_callback(mlp__regions_read, &rd, PARSE_FLAGS, &je);
        if (doc && json_alloc_failures == failures && !mlp__regions_place(doc, &regions)) {
            mlp__regions_free(&regions);
            *root = doc;
            return 0;
        }
        json_decref(doc);
    }
    mlp__regions_free(&regions);
    return mlp_parse(text, len, root, err);
}

/* ---- Tensors --------------------------------------------------------------------------- */

/* A leaf value; returns 0 or -1 when v is not a number. */
static int leaf_value(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    if (json_is_boolean(v)) {
        *out = json_is_true(v) ? 1.0 : 0.0;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strcasecmp(s, "NaN")) {
            *out = NAN;
            return 0;
        }
        if (!strcasecmp(s, "Infinity") || !strcasecmp(s, "inf") || !strcasecmp(s, "+Infinity")) {
            *out = INFINITY;
            return 0;
        }
        if (!strcasecmp(s, "-Infinity") || !strcasecmp(s, "-inf")) {
            *out = -INFINITY;
            return 0;
        }
    }
    return -1;
}

static const char *kind_of(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_NULL:
        return "null";
    default:
        return "a value";
    }
}

/* The shape a nested array claims through its first elements. */
static int infer_shape(const json_t *v, const char *field, int *rank, int64_t *shape,
                       struct mlp_error *err)
{
    *rank = 0;
    while (json_is_array(v)) {
        if (*rank == ML_MAX_RANK)
            return mlp__fail(err, ML_ETENSOR, field, -1,
                             "%s is nested deeper than %d levels; ranks up to %d are supported",
                             field, ML_MAX_RANK, ML_MAX_RANK);
        size_t n = json_array_size(v);
        shape[(*rank)++] = (int64_t)n;
        if (n == 0)
            break;
        v = json_array_get(v, 0);
    }
    return 0;
}

struct filler {
    const char *field;
    int rank;
    const int64_t *shape;
    double *out;
    int64_t pos;
    int64_t path[ML_MAX_RANK];
};

static const char *path_str(const struct filler *f, int depth, char *buf, size_t size)
{
    size_t used = (size_t)snprintf(buf, size, "%s", f->field);
    for (int d = 0; d < depth && used < size; d++)
        used += (size_t)snprintf(buf + used, size - used, "[%lld]", (long long)f->path[d]);
    return buf;
}

/* Copies a rectangular nested array of the given shape, leaves in row-major order; with
 * f->out NULL, only checks it. */
static int fill(struct filler *f, const json_t *v, int depth, struct mlp_error *err)
{
    char where[128];
    if (depth == f->rank) {
        double ignored;
        if (leaf_value(v, f->out ? &f->out[f->pos] : &ignored) != 0)
            return mlp__fail(err, ML_ETENSOR, f->field, (long long)f->pos,
                             "%s is %s; tensor elements must be numbers (or true/false, \"NaN\", "
                             "\"Infinity\", \"-Infinity\")",
                             path_str(f, depth, where, sizeof(where)),
                             json_is_array(v) ? "an array nested deeper than its siblings"
                                              : kind_of(v));
        f->pos++;
        return 0;
    }
    if (!json_is_array(v))
        return mlp__fail(
            err, ML_ETENSOR, f->field, (long long)f->pos,
            "%s is not an array but %s: the tensor is ragged (shape %lld at this depth "
            "expected)",
            path_str(f, depth, where, sizeof(where)), kind_of(v), (long long)f->shape[depth]);
    if ((int64_t)json_array_size(v) != f->shape[depth])
        return mlp__fail(err, ML_ETENSOR, f->field, (long long)f->pos,
                         "%s has %zu elements but its first sibling has %lld: the tensor is ragged",
                         path_str(f, depth, where, sizeof(where)), json_array_size(v),
                         (long long)f->shape[depth]);
    for (size_t i = 0; i < json_array_size(v); i++) {
        f->path[depth] = (int64_t)i;
        int rc = fill(f, json_array_get(v, i), depth + 1, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* "[4, 5]" */
void mlp__shape_text(char *buf, size_t size, int rank, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < rank && used < size; d++)
        used +=
            (size_t)snprintf(buf + used, size - used, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (used < size)
        snprintf(buf + used, size - used, "]");
}

int mlp__shape_decode(const json_t *shape, const char *field, const char *name, struct ml_tensor *t,
                      struct mlp_error *err)
{
    if (!json_is_array(shape))
        return mlp__fail(err, ML_ETENSOR, field, -1, "%s must be an array of dimensions", name);
    if (json_array_size(shape) > ML_MAX_RANK)
        return mlp__fail(err, ML_ETENSOR, field, -1, "%s has rank %zu; at most %d", name,
                         json_array_size(shape), ML_MAX_RANK);
    t->rank = (int)json_array_size(shape);
    for (int d = 0; d < t->rank; d++) {
        const json_t *dim = json_array_get(shape, (size_t)d);
        double x = json_is_number(dim) ? json_number_value(dim) : -1;
        if (!(x >= 0 && x == floor(x) && x < 9.0e15))
            return mlp__fail(err, ML_ETENSOR, field, -1, "%s[%d] must be a non-negative integer",
                             name, d);
        t->shape[d] = (int64_t)x;
    }
    return 0;
}

int64_t mlp__numel_checked(int rank, const int64_t *shape)
{
    int64_t n = 1, footprint = 1;
    for (int d = 0; d < rank; d++) {
        if (shape[d] < 0)
            return -1;
        int64_t dim = shape[d] > 1 ? shape[d] : 1;
        if (dim > (INT64_C(1) << 40) / footprint)
            return -2;
        footprint *= dim;
        n *= shape[d];
    }
    return n;
}

int mlp_dtype_parse(const char *name)
{
    for (int d = ML_FLOAT32; d <= ML_INT64; d++)
        if (!strcmp(name, ml_dtype_name((enum ml_dtype)d)))
            return d;
    return -1;
}

int mlp__keep_buffer(struct mlp_request *r, void *buf, const char *field, struct mlp_error *err)
{
    if (r->num_buffers == sizeof(r->buffers) / sizeof(r->buffers[0])) {
        free(buf);
        return mlp__fail(err, ML_EINVAL, field, -1, "too many tensors in one request");
    }
    r->buffers[r->num_buffers++] = buf;
    return 0;
}

/* {"shape": [...], "dtype": "...", "b64": "..."}: the little-endian bytes, decoded once into
 * a buffer of the tensor's own dtype (no per-element conversion here). */
static int decode_b64(const json_t *v, const char *field, struct mlp_request *r,
                      struct ml_tensor *t, struct mlp_error *err)
{
    const json_t *b64 = json_object_get(v, "b64");
    const json_t *dtype = json_object_get(v, "dtype");
    char ss[128];
    if (json_object_get(v, "data"))
        return mlp__fail(err, ML_ETENSOR, field, -1, "%s has both \"data\" and \"b64\"; give one",
                         field);
    const char *text;
    size_t len;
    if (json_is_string(b64)) {
        text = json_string_value(b64);
        len = json_string_length(b64);
    } else if (!mlp__b64_node(b64, &text, &len)) { /* the text numarray.c kept */
        return mlp__fail(err, ML_ETENSOR, field, -1, "%s.b64 must be a string of base64 text",
                         field);
    }
    int d = json_is_string(dtype) ? mlp_dtype_parse(json_string_value(dtype)) : -1;
    if (d < 0)
        return mlp__fail(
            err, ML_ETENSOR, field, -1,
            "%s.dtype must name the bytes' type: float32, float64, uint8, bool, int32 or "
            "int64",
            field);
    t->dtype = (enum ml_dtype)d;
    int64_t n = mlp__numel_checked(t->rank, t->shape);
    if (n < 0)
        return mlp__fail(err, ML_ETOOLARGE, field, -1,
                         "%s has too many elements: more than 2^40, counting each empty "
                         "dimension as 1",
                         field);
    size_t esize = ml_dtype_size(t->dtype);
    size_t want = (size_t)n * esize;
    size_t got = mlp_b64_decoded_size(text, len);
    mlp__shape_text(ss, sizeof(ss), t->rank, t->shape);
    if (got != want)
        return mlp__fail(
            err, ML_ETENSOR, field, -1,
            "%s.b64 holds %zu bytes but shape %s of %s needs %zu (%lld elements of %zu "
            "bytes)",
            field, got, ss, ml_dtype_name(t->dtype), want, (long long)n, esize);
    unsigned char *buf = malloc(want ? want : 1);
    if (!buf)
        return mlp__fail(err, ML_ENOMEM, field, -1, "out of memory for %zu bytes of %s", want,
                         field);
    int rc = mlp__keep_buffer(r, buf, field, err);
    if (rc)
        return rc;
    long long dec = mlp_b64_decode(text, len, buf);
    if (dec < 0)
        return mlp__fail(
            err, ML_ETENSOR, field, -1,
            "%s.b64 is not base64 (standard alphabet A-Z a-z 0-9 + /, '=' padding): bad "
            "character or length at offset %lld",
            field, -dec - 1);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    mlp_swap_bytes(buf, want, esize);
#endif
    t->data = buf;
    return 0;
}

int mlp__tensor_decode(const json_t *v, const char *field, struct mlp_request *r,
                       struct ml_tensor *t, struct mlp_error *err)
{
    memset(t, 0, sizeof(*t));
    t->dtype = ML_FLOAT64;
    const json_t *data = v;
    int declared = 0;
    int irank = 0; /* (set by mlp__tensor_node or infer_shape before use) */
    int64_t ishape[ML_MAX_RANK] = {0};
    const double *decoded = NULL; /* the doubles of an array numarray.c decoded */
    int64_t num_decoded;

    if (json_is_object(v) && !mlp__tensor_node(v, &irank, ishape, &decoded, &num_decoded)) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)v, key, val)
        {
            if (strcmp(key, "shape") && strcmp(key, "data") && strcmp(key, "dtype") &&
                strcmp(key, "b64"))
                return mlp__fail(err, ML_ETENSOR, field, -1,
                                 "%s has an unknown key '%s' (a tensor object has \"shape\" and "
                                 "\"data\", or \"shape\", \"dtype\" and \"b64\")",
                                 field, key);
        }
        const json_t *shape = json_object_get(v, "shape");
        data = json_object_get(v, "data");
        const json_t *dtype = json_object_get(v, "dtype");
        int b64 = json_object_get(v, "b64") != NULL;
        if (!b64 && dtype &&
            !(json_is_string(dtype) && (!strcmp(json_string_value(dtype), "float32") ||
                                        !strcmp(json_string_value(dtype), "float64"))))
            return mlp__fail(err, ML_ETENSOR, field, -1,
                             "%s.dtype must be \"float32\" or \"float64\" for JSON numbers (other "
                             "types travel as \"b64\")",
                             field);
        if (!shape || !json_is_array(shape))
            return mlp__fail(err, ML_ETENSOR, field, -1,
                             "%s.shape must be an array of dimensions, e.g. [4, 5]", field);
        if (!data && !b64)
            return mlp__fail(err, ML_ETENSOR, field, -1, "%s has a shape but no \"data\"", field);
        char name[96];
        snprintf(name, sizeof(name), "%s.shape", field);
        int rc = mlp__shape_decode(shape, field, name, t, err);
        if (rc)
            return rc;
        if (b64)
            return decode_b64(v, field, r, t, err);
        declared = 1;
    }

    int rc = 0;
    if (data != v && !mlp__tensor_node(data, &irank, ishape, &decoded, &num_decoded))
        decoded = NULL;
    if (!decoded)
        rc = infer_shape(data, field, &irank, ishape, err);
    if (rc)
        return rc;
    int64_t inumel = mlp__numel_checked(irank, ishape);
    if (!declared) {
        t->rank = irank;
        memcpy(t->shape, ishape, sizeof(ishape));
    }
    int64_t n = mlp__numel_checked(t->rank, t->shape);
    if (n < 0)
        return mlp__fail(err, ML_ETOOLARGE, field, -1,
                         "%s has too many elements: more than 2^40, counting each empty "
                         "dimension as 1",
                         field);

    /* Declared shapes accept data nested to that shape, or flat. */
    struct filler f = {field, t->rank, t->shape, NULL, 0, {0}};
    int64_t flat_shape[1] = {n};
    if (declared &&
        !(irank == t->rank && !memcmp(ishape, t->shape, sizeof(int64_t) * (size_t)irank))) {
        if (irank == 1 && inumel == n) {
            f.rank = 1;
            f.shape = flat_shape;
        } else if (irank == 0 && n == 1) {
            f.rank = 0;
        } else {
            char ds[128], ss[128];
            mlp__shape_text(ds, sizeof(ds), irank, ishape);
            mlp__shape_text(ss, sizeof(ss), t->rank, t->shape);
            return mlp__fail(err, ML_ETENSOR, field, -1,
                             "%s.data has shape %s (%lld elements) but %s.shape is %s (%lld "
                             "elements); give data nested to the shape, or flat",
                             field, ds, (long long)(inumel < 0 ? 0 : inumel), field, ss,
                             (long long)n);
        }
    }

    /* An array decoded from the text is rectangular, of numbers, and row-major: the doubles
     * fill the shape (nested to it or flat), kept alive by r->root. */
    if (decoded) {
        t->data = decoded;
        return 0;
    }

    /* The data is checked against the shape before memory is taken for it: a nested array
     * claims its shape through its first elements alone, so a ragged one of a few hundred
     * bytes ([[[[...], 0, 0], 0, 0], ...]) would otherwise ask for terabytes. */
    rc = fill(&f, data, 0, err);
    if (rc)
        return rc;
    f.pos = 0;
    double *buf = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!buf)
        return mlp__fail(err, ML_ENOMEM, field, -1, "out of memory for %lld elements of %s",
                         (long long)n, field);
    rc = mlp__keep_buffer(r, buf, field, err);
    if (rc)
        return rc;
    f.out = buf;
    rc = fill(&f, data, 0, err);
    if (rc)
        return rc;
    t->data = buf;
    return 0;
}

/* ---- Requests -------------------------------------------------------------------------- */

static int decode_output(const json_t *v, unsigned *bits, struct mlp_error *err)
{
    const struct mlp__output *o = mlp__output_named(json_string_value(v), 0);
    if (o) {
        *bits |= o->bit;
        return 0;
    }
    if (!json_is_string(v))
        return mlp__fail(err, ML_EINVAL, "outputs", -1,
                         "outputs must be an array of output names, not of %s", kind_of(v));
    char names[160];
    mlp__output_list(names, sizeof(names), 0);
    /* A name no loss produces: unsupported_output, as on /v2. */
    return mlp__fail(err, ML_EOUTPUT, "outputs", -1, "unknown output '%s' (expected %s)",
                     json_string_value(v), names);
}

int mlp__params_decode(const json_t *obj, struct mlp_request *r, struct mlp_error *err)
{
    if (!json_is_object(obj))
        return mlp__fail(err, ML_EINVAL, "params", -1,
                         "params must be an object of parameter names to values");
    r->params = calloc(json_object_size(obj) + 1, sizeof(*r->params));
    if (!r->params)
        return mlp__fail(err, ML_ENOMEM, "params", -1, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        struct ml_param *p = &r->params[r->num_params];
        char field[64];
        snprintf(field, sizeof(field), "params.%s", key);
        p->name = key;
        if (json_is_null(val))
            continue; /* None: the default */
        if (json_is_boolean(val)) {
            p->kind = ML_PARAM_BOOL;
            p->boolean = json_is_true(val);
        } else if (json_is_number(val)) {
            p->kind = ML_PARAM_NUMBER;
            p->number = json_number_value(val);
        } else if (json_is_array(val) || json_is_object(val) || json_is_string(val)) {
            p->kind = ML_PARAM_TENSOR;
            int rc = mlp__tensor_decode(val, field, r, &p->tensor, err);
            if (rc) {
                if (err && err->e.code == ML_ETENSOR)
                    err->e.code = ML_EPARAM;
                return rc == ML_ETENSOR ? ML_EPARAM : rc;
            }
        }
        r->num_params++;
    }
    return 0;
}

int mlp_params_decode(const json_t *obj, struct mlp_request *r, struct mlp_error *err)
{
    free(r->params); /* an earlier decoding's list (its tensors stay in r->buffers) */
    r->params = NULL;
    r->num_params = 0;
    int rc = mlp__params_decode(obj, r, err);
    r->req.params = r->params;
    r->req.num_params = r->num_params;
    return rc;
}

void mlp_request_free(struct mlp_request *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->num_buffers; i++)
        free(r->buffers[i]);
    free(r->params);
    if (r->root)
        json_decref(r->root);
    if (r->aux)
        json_decref(r->aux);
    memset(r, 0, sizeof(*r));
}

static const char *const known_keys[] = {
    "loss", "labels", "logits",    "predictions", "losses",  "weights",
    "mask", "params", "reduction", "dtype",       "outputs", "allow_non_finite",
};

static int decode(json_t *root, struct mlp_request *r, struct mlp_error *err)
{
    struct ml_request *req = &r->req;
    if (!json_is_object(root))
        return mlp__fail(err, ML_EINVAL, "", -1, "a request is a JSON object, got %s",
                         kind_of(root));

    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        size_t i = 0;
        while (i < sizeof(known_keys) / sizeof(known_keys[0]) && strcmp(known_keys[i], key))
            i++;
        if (i == sizeof(known_keys) / sizeof(known_keys[0]) &&
            r->num_ignored < sizeof(r->ignored) / sizeof(r->ignored[0]))
            r->ignored[r->num_ignored++] = key;
    }

    const json_t *loss = json_object_get(root, "loss");
    if (!loss)
        return mlp__fail(err, ML_EINVAL, "loss", -1,
                         "the request needs \"loss\" (a name from `maskloss losses`)");
    if (!json_is_string(loss))
        return mlp__fail(err, ML_EINVAL, "loss", -1, "loss must be a string");
    req->loss = json_string_value(loss);

    const json_t *red = json_object_get(root, "reduction");
    if (red && !json_is_null(red)) {
        if (!json_is_string(red))
            return mlp__fail(err, ML_EINVAL, "reduction", -1, "reduction must be a string");
        req->reduction = json_string_value(red);
    }

    const json_t *dtype = json_object_get(root, "dtype");
    if (dtype && !json_is_null(dtype)) {
        const char *s = json_is_string(dtype) ? json_string_value(dtype) : "";
        if (!strcmp(s, "float32"))
            req->dtype = ML_FLOAT32;
        else if (!strcmp(s, "float64"))
            req->dtype = ML_FLOAT64;
        else
            return mlp__fail(err, ML_EINVAL, "dtype", -1,
                             "dtype must be \"float32\" or \"float64\"");
    }

    const json_t *anf = json_object_get(root, "allow_non_finite");
    if (anf && !json_is_null(anf)) {
        if (!json_is_boolean(anf))
            return mlp__fail(err, ML_EINVAL, "allow_non_finite", -1,
                             "allow_non_finite must be true or false");
        req->allow_non_finite = json_is_true(anf);
    }

    const json_t *outputs = json_object_get(root, "outputs");
    req->outputs = ML_OUT_LOSS;
    if (outputs && !json_is_null(outputs)) {
        if (json_is_array(outputs)) {
            for (size_t i = 0; i < json_array_size(outputs); i++) {
                int rc = decode_output(json_array_get(outputs, i), &req->outputs, err);
                if (rc)
                    return rc;
            }
        } else {
            int rc = decode_output(outputs, &req->outputs, err);
            if (rc)
                return rc;
        }
    }

    const json_t *weights = json_object_get(root, "weights");
    const json_t *mask = json_object_get(root, "mask");
    if (weights && !json_is_null(weights) && mask && !json_is_null(mask))
        return mlp__fail(err, ML_EINVAL, "mask", -1,
                         "give either \"weights\" or its alias \"mask\", not both");
    for (int i = 0; i < MLP__NUM_SLOTS; i++) {
        const char *field = mlp__inputs[i].name;
        const json_t *v = json_object_get(root, field);
        if (i == MLP__WEIGHTS && (!v || json_is_null(v)) && mask) {
            v = mask;
            field = mlp__inputs[MLP__NUM_SLOTS].name; /* "mask" */
        }
        if (!v || json_is_null(v))
            continue;
        int rc = mlp__tensor_decode(v, field, r, &r->tensors[i], err);
        if (rc)
            return rc;
        *mlp__input_slot(req, (enum mlp__slot)i) = &r->tensors[i];
    }

    const json_t *params = json_object_get(root, "params");
    if (params && !json_is_null(params)) {
        int rc = mlp__params_decode(params, r, err);
        if (rc)
            return rc;
        req->params = r->params;
        req->num_params = r->num_params;
    }
    return 0;
}

int mlp_request_decode(json_t *root, struct mlp_request *out, struct mlp_error *err)
{
    memset(out, 0, sizeof(*out));
    ml_request_init(&out->req);
    out->root = json_incref(root);
    if (err)
        memset(err, 0, sizeof(*err));
    int rc = decode(root, out, err);
    if (rc)
        mlp_request_free(out);
    return rc;
}
