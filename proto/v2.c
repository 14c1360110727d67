/*
 * v2.c -- Open Inference Protocol (KServe v2) inference requests and responses, with the
 * binary tensor data extension (see mlp_v2.h and the Open Inference Protocol's REST spec,
 * with Triton's binary tensor data extension).
 *
 * Binary inputs are not copied: a tensor points into the request body when its bytes are
 * aligned for its type (the server aligns the start of the binary data), and is copied only
 * otherwise. JSON inputs go through the native decoder.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mlp_v2.h"

static const struct {
    const char *name;
    enum ml_dtype dtype;
} datatypes[] = {
    {"FP32", ML_FLOAT32}, {"FP64", ML_FLOAT64}, {"UINT8", ML_UINT8},
    {"BOOL", ML_BOOL},    {"INT32", ML_INT32},  {"INT64", ML_INT64},
};

#define NDATATYPES (sizeof(datatypes) / sizeof(datatypes[0]))

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

_Static_assert(MLP_V2_MAX_OUTPUTS == MLP__NUM_OUTPUTS, "a v2 request names each output once");

const char *mlp_v2_datatype(enum ml_dtype dtype)
{
    for (size_t i = 0; i < NDATATYPES; i++)
        if (datatypes[i].dtype == dtype)
            return datatypes[i].name;
    return NULL;
}

/* Request parameters that belong to the request, not to the loss. Triton and KServe clients
 * may send their own (scheduling, tracing): those are accepted and ignored. */
static int ignored_parameter(const char *key)
{
    static const char *const names[] = {"sequence_id", "sequence_start", "sequence_end",
                                        "priority",    "timeout",        "headers"};
    for (size_t i = 0; i < COUNT(names); i++)
        if (!strcmp(key, names[i]))
            return 1;
    return !strncmp(key, "triton_", 7);
}

static int decode_parameters(const json_t *params, struct mlp_v2_request *r, int *binary_output,
                             struct mlp_error *err)
{
    const char *key;
    json_t *val;
    if (!params)
        return 0;
    if (!json_is_object(params))
        return mlp__fail(err, ML_EINVAL, "parameters", -1,
                         "parameters must be an object of names to strings, numbers or booleans");
    json_t *loss_params = json_object();
    if (!loss_params)
        return mlp__fail(err, ML_ENOMEM, "parameters", -1, "out of memory");
    r->base.aux = loss_params;
    json_object_foreach((json_t *)params, key, val)
    {
        if (json_is_null(val) && !ignored_parameter(key))
            continue; /* the default, as a null on /v1 and a null loss parameter are */
        if (!strcmp(key, "reduction")) {
            if (!json_is_string(val))
                return mlp__fail(err, ML_EINVAL, "parameters.reduction", -1,
                                 "parameters.reduction must be a string");
            r->base.req.reduction = json_string_value(val);
        } else if (!strcmp(key, "dtype")) {
            const char *d = json_is_string(val) ? json_string_value(val) : "";
            r->dtype_given = 1;
            if (!strcmp(d, "float32") || !strcmp(d, "FP32"))
                r->base.req.dtype = ML_FLOAT32;
            else if (!strcmp(d, "float64") || !strcmp(d, "FP64"))
                r->base.req.dtype = ML_FLOAT64;
            else
                return mlp__fail(err, ML_EINVAL, "parameters.dtype", -1,
                                 "parameters.dtype must be \"float32\" or \"float64\" (the "
                                 "precision of the computation)");
        } else if (!strcmp(key, "allow_non_finite")) {
            if (!json_is_boolean(val))
                return mlp__fail(err, ML_EINVAL, "parameters.allow_non_finite", -1,
                                 "parameters.allow_non_finite must be true or false");
            r->base.req.allow_non_finite = json_is_true(val);
        } else if (!strncmp(key, "monitor", 7) &&
                   (!key[7] || !strcmp(key + 7, "_time") || !strcmp(key + 7, "_slice") ||
                    !strcmp(key + 7, "_id"))) {
            /* Feeding a monitor: the server's business (the values stay in the document). */
            const json_t **slot = !key[7]         ? &r->monitor
                                  : key[8] == 't' ? &r->monitor_time
                                  : key[8] == 's' ? &r->monitor_slice
                                                  : &r->monitor_id;
            *slot = val;
        } else if (!strcmp(key, "binary_data_output")) {
            if (!json_is_boolean(val))
                return mlp__fail(err, ML_EINVAL, "parameters.binary_data_output", -1,
                                 "parameters.binary_data_output must be true or false");
            *binary_output = json_is_true(val);
        } else if (!ignored_parameter(key)) {
            if (json_object_set(loss_params, key, val))
                return mlp__fail(err, ML_ENOMEM, "parameters", -1, "out of memory");
        }
    }
    int rc = mlp__params_decode(loss_params, &r->base, err);
    r->base.req.params = r->base.params;
    r->base.req.num_params = r->base.num_params;
    return rc;
}

/* The shape of an input; a binary input's byte count is shape x datatype, so a shape beyond
 * the library's absolute limit is refused here (too_large, as /v1 does), before any size is
 * computed from it: within the limit, that product cannot overflow. */
static int decode_shape(const json_t *shape, const char *field, struct ml_tensor *t,
                        struct mlp_error *err)
{
    int rc = mlp__shape_decode(shape, field, field, t, err);
    if (rc)
        return rc;
    if (mlp__numel_checked(t->rank, t->shape) < 0) {
        char ss[128];
        mlp__shape_text(ss, sizeof(ss), t->rank, t->shape);
        return mlp__fail(err, ML_ETOOLARGE, field, -1,
                         "%s %s is too large: more than 2^40 elements, counting each empty "
                         "dimension as 1",
                         field, ss);
    }
    return 0;
}

/* The binary bytes of one input, at tail[*offset]. */
static int bind_binary(struct mlp_v2_request *r, const char *name, const json_t *size_v,
                       struct ml_tensor *t, const char *tail, size_t tail_len, size_t *offset,
                       int index, struct mlp_error *err)
{
    char field[64], ss[128];
    snprintf(field, sizeof(field), "inputs[%d].parameters.binary_data_size", index);
    double size_d = json_is_number(size_v) ? json_number_value(size_v) : -1;
    if (!(size_d >= 0 && size_d == floor(size_d) && size_d < 9.0e18))
        return mlp__fail(err, MLP_EBINARY, field, -1,
                         "input '%s': binary_data_size must be a non-negative integer", name);
    size_t size = (size_t)size_d;
    size_t esize = ml_dtype_size(t->dtype);
    size_t want = (size_t)mlp__numel_checked(t->rank, t->shape) * esize;
    mlp__shape_text(ss, sizeof(ss), t->rank, t->shape);
    /* Bytes that do not fill the shape are the tensor's fault, as /v1's b64 of the wrong
     * length is: invalid_tensor. invalid_binary is for bytes that cannot be located. */
    if (size != want)
        return mlp__fail(err, ML_ETENSOR, field, -1,
                         "input '%s': binary_data_size is %zu bytes but shape %s of %s needs %zu",
                         name, size, ss, mlp_v2_datatype(t->dtype), want);
    if (size > tail_len - *offset)
        return mlp__fail(err, MLP_EBINARY, field, -1,
                         "input '%s' needs bytes %zu to %zu of the binary data, but only %zu "
                         "arrived after the JSON header (truncated body, or a wrong "
                         "Inference-Header-Content-Length?)",
                         name, *offset, *offset + size, tail_len);
    const char *p = tail + *offset;
    *offset += size;
    int swap = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    swap = esize > 1; /* the wire is little-endian */
#endif
    if (!swap && (uintptr_t)p % esize == 0) {
        t->data = p; /* in place */
        return 0;
    }
    unsigned char *copy = malloc(size ? size : 1);
    if (!copy)
        return mlp__fail(err, ML_ENOMEM, field, -1, "out of memory for input '%s'", name);
    int rc = mlp__keep_buffer(&r->base, copy, field, err);
    if (rc)
        return rc;
    memcpy(copy, p, size);
    if (swap)
        mlp_swap_bytes(copy, size, esize);
    t->data = copy;
    return 0;
}

static int decode_input(struct mlp_v2_request *r, const json_t *in, int index, const char *tail,
                        size_t tail_len, size_t *offset, int *has_binary, const char **first_binary,
                        struct mlp_error *err)
{
    char field[64];
    snprintf(field, sizeof(field), "inputs[%d]", index);
    if (!json_is_object(in))
        return mlp__fail(err, ML_EINVAL, field, -1,
                         "%s must be an object with name, shape, datatype and data", field);
    const json_t *name_v = json_object_get(in, "name");
    const char *name = json_is_string(name_v) ? json_string_value(name_v) : NULL;
    int slot = -1;
    for (size_t i = 0; name && i < MLP__NUM_INPUT_NAMES; i++)
        if (!strcmp(name, mlp__inputs[i].v2_name))
            slot = (int)mlp__inputs[i].slot;
    if (slot < 0)
        return mlp__fail(err, ML_EINVAL, field, -1,
                         "%s: unknown input %s%s%s; a loss takes LABELS, LOGITS (or PREDICTIONS "
                         "or LOSSES) and optionally WEIGHTS (or MASK)",
                         field, name ? "'" : "", name ? name : "without a name", name ? "'" : "");
    struct ml_tensor *t = &r->base.tensors[slot];
    const struct ml_tensor **dst = mlp__input_slot(&r->base.req, (enum mlp__slot)slot);
    if (*dst)
        return mlp__fail(err, ML_EINVAL, field, -1, "%s: input %s is given twice%s", field, name,
                         slot == MLP__WEIGHTS ? " (WEIGHTS and MASK are the same input)" : "");

    const json_t *dt = json_object_get(in, "datatype");
    const char *dtname = json_is_string(dt) ? json_string_value(dt) : NULL;
    int found = 0;
    for (size_t i = 0; dtname && i < NDATATYPES; i++)
        if (!strcmp(dtname, datatypes[i].name)) {
            t->dtype = datatypes[i].dtype;
            found = 1;
        }
    if (!found)
        return mlp__fail(err, ML_ETENSOR, field, -1,
                         "input '%s': datatype %s%s%s is not supported; use FP32, FP64, BOOL, "
                         "UINT8, INT32 or INT64",
                         name, dtname ? "'" : "", dtname ? dtname : "(missing)", dtname ? "'" : "");
    char sfield[80];
    snprintf(sfield, sizeof(sfield), "%s.shape", field);
    int rc = decode_shape(json_object_get(in, "shape"), sfield, t, err);
    if (rc)
        return rc;

    const json_t *params = json_object_get(in, "parameters");
    const json_t *size_v =
        json_is_object(params) ? json_object_get(params, "binary_data_size") : NULL;
    const json_t *data = json_object_get(in, "data");
    if (size_v) {
        if (data)
            return mlp__fail(err, ML_ETENSOR, field, -1,
                             "input '%s' has both data and binary_data_size; give one", name);
        if (!*has_binary)
            *first_binary = name;
        *has_binary = 1;
        rc = bind_binary(r, name, size_v, t, tail, tail_len, offset, index, err);
    } else {
        if (!data)
            return mlp__fail(err, ML_ETENSOR, field, -1,
                             "input '%s' has neither data nor parameters.binary_data_size", name);
        /* JSON numbers: the native decoder checks the data against the shape. */
        json_t *obj = json_pack("{s:O,s:O}", "shape", json_object_get(in, "shape"), "data", data);
        if (!obj)
            return mlp__fail(err, ML_ENOMEM, field, -1, "out of memory");
        rc = mlp__tensor_decode(obj, name, &r->base, t, err);
        json_decref(obj);
    }
    if (rc)
        return rc;
    *dst = t;
    return 0;
}

static int decode_outputs(const json_t *outputs, int binary_output, struct mlp_v2_request *r,
                          struct mlp_error *err)
{
    if (!outputs || (json_is_array(outputs) && !json_array_size(outputs))) {
        r->num_outputs = 1;
        r->output_bits[0] = ML_OUT_LOSS;
        r->output_binary[0] = binary_output;
        r->base.req.outputs = ML_OUT_LOSS;
        return 0;
    }
    if (!json_is_array(outputs))
        return mlp__fail(err, ML_EINVAL, "outputs", -1,
                         "outputs must be an array of {\"name\": ...} objects");
    unsigned bits = 0;
    for (size_t i = 0; i < json_array_size(outputs); i++) {
        const json_t *o = json_array_get(outputs, i);
        const json_t *n = json_is_object(o) ? json_object_get(o, "name") : NULL;
        const char *name = json_is_string(n) ? json_string_value(n) : NULL;
        const struct mlp__output *out = mlp__output_named(name, 1);
        char field[48];
        snprintf(field, sizeof(field), "outputs[%zu]", i);
        if (!name)
            return mlp__fail(err, ML_EINVAL, field, -1,
                             "%s must be an object with a \"name\" string", field);
        if (!out) {
            char names[160];
            mlp__output_list(names, sizeof(names), 1);
            return mlp__fail(err, ML_EOUTPUT, field, -1,
                             "%s: unknown output '%s'; the outputs are %s", field, name, names);
        }
        unsigned bit = out->bit;
        if (bits & bit)
            return mlp__fail(err, ML_EINVAL, field, -1, "%s: output %s is requested twice", field,
                             name);
        const json_t *p = json_object_get(o, "parameters");
        const json_t *bin = json_is_object(p) ? json_object_get(p, "binary_data") : NULL;
        if (json_is_object(p) && json_object_get(p, "classification"))
            return mlp__fail(err, ML_EOUTPUT, field, -1,
                             "%s: the classification extension does not apply to losses", field);
        if (bin && !json_is_boolean(bin))
            return mlp__fail(err, ML_EINVAL, field, -1,
                             "%s.parameters.binary_data must be true or false", field);
        bits |= bit;
        r->output_bits[r->num_outputs] = bit;
        r->output_binary[r->num_outputs] = bin ? json_is_true(bin) : binary_output;
        r->num_outputs++;
    }
    r->base.req.outputs = bits | ML_OUT_LOSS;
    return 0;
}

static int has_binary_inputs(const json_t *doc)
{
    const json_t *inputs = json_object_get(doc, "inputs");
    for (size_t i = 0; i < json_array_size(inputs); i++) {
        const json_t *p = json_object_get(json_array_get(inputs, i), "parameters");
        if (json_object_get(p, "binary_data_size"))
            return 1;
    }
    return 0;
}

static int decode(const char *model, const char *body, size_t len, long long header_len,
                  struct mlp_v2_request *r, struct mlp_error *err)
{
    if (header_len > (long long)len)
        return mlp__fail(err, MLP_EBINARY, "Inference-Header-Content-Length", -1,
                         "Inference-Header-Content-Length is %lld but the body has only %zu bytes",
                         header_len, len);
    if (header_len == 0)
        return mlp__fail(err, MLP_EBINARY, "Inference-Header-Content-Length", -1,
                         "a raw binary request (Inference-Header-Content-Length: 0) carries one "
                         "input, but a loss needs LABELS and LOGITS: send a JSON header");
    size_t json_len = header_len < 0 ? len : (size_t)header_len;
    int rc = mlp_parse(body, json_len, &r->base.root, err);
    if (rc == MLP_EMALFORMED && header_len < 0) {
        /* Perhaps a JSON header followed by binary data, sent without the header that says
         * where the JSON ends: say so rather than report the bytes as bad JSON. */
        json_error_t je;
        json_t *doc = json_loadb(body, len, JSON_DISABLE_EOF_CHECK, &je);
        if (doc && has_binary_inputs(doc)) {
            json_decref(doc);
            return mlp__fail(err, MLP_EBINARY, "Inference-Header-Content-Length", -1,
                             "%zu bytes follow the JSON document and its inputs are binary "
                             "(binary_data_size), but the request has no "
                             "Inference-Header-Content-Length header to say where the JSON ends",
                             len - je.position);
        }
        json_decref(doc);
    }
    if (rc)
        return rc;
    const json_t *root = r->base.root;
    if (!json_is_object(root))
        return mlp__fail(err, ML_EINVAL, "", -1,
                         "an inference request is a JSON object with \"inputs\"");
    r->base.req.loss = model;

    const json_t *id = json_object_get(root, "id");
    if (id && !json_is_string(id))
        return mlp__fail(err, ML_EINVAL, "id", -1, "id must be a string");
    r->id = id ? json_string_value(id) : NULL;

    int binary_output = 0;
    rc = decode_parameters(json_object_get(root, "parameters"), r, &binary_output, err);
    if (rc)
        return rc;

    const json_t *inputs = json_object_get(root, "inputs");
    if (!json_is_array(inputs))
        return mlp__fail(err, ML_EINVAL, "inputs", -1,
                         "inputs must be an array of tensors (LABELS, LOGITS, ...)");
    const char *tail = body + json_len;
    size_t tail_len = len - json_len, offset = 0;
    int has_binary = 0;
    const char *first_binary = NULL;
    for (size_t i = 0; i < json_array_size(inputs); i++) {
        rc = decode_input(r, json_array_get(inputs, i), (int)i, tail, tail_len, &offset,
                          &has_binary, &first_binary, err);
        if (rc)
            return rc;
    }
    if (has_binary && header_len < 0)
        return mlp__fail(err, MLP_EBINARY, "Inference-Header-Content-Length", -1,
                         "input '%s' is binary (binary_data_size) but the request has no "
                         "Inference-Header-Content-Length header to say where the JSON ends",
                         first_binary);
    if (offset != tail_len)
        return mlp__fail(err, MLP_EBINARY, "Inference-Header-Content-Length", -1,
                         "%zu bytes follow the JSON header but the inputs' binary_data_size "
                         "add up to %zu",
                         tail_len, offset);
    return decode_outputs(json_object_get(root, "outputs"), binary_output, r, err);
}

int mlp_v2_decode(const char *model, const char *body, size_t len, long long header_len,
                  struct mlp_v2_request *out, struct mlp_error *err)
{
    memset(out, 0, sizeof(*out));
    ml_request_init(&out->base.req);
    if (err) {
        memset(err, 0, sizeof(*err));
        err->e.index = -1;
    }
    int rc = decode(model, body, len, header_len, out, err);
    if (rc)
        mlp_request_free(&out->base);
    return rc;
}

/* ---- Responses ------------------------------------------------------------------------- */

static void append_binary(struct mlp_buf *b, const struct mlp__values *v)
{
    unsigned char chunk[4096];
    size_t used = 0;
    for (int64_t i = 0; i < v->numel; i++) {
        unsigned char bytes[8];
        if (v->is_count) {
            uint64_t x = (uint64_t)(int64_t)v->data[i];
            for (int k = 0; k < 8; k++)
                bytes[k] = (unsigned char)(x >> (8 * k));
        } else {
            uint64_t x;
            memcpy(&x, &v->data[i], 8);
            for (int k = 0; k < 8; k++)
                bytes[k] = (unsigned char)(x >> (8 * k)); /* little-endian on every host */
        }
        memcpy(chunk + used, bytes, 8);
        used += 8;
        if (used == sizeof(chunk)) {
            mlp_buf_append(b, (const char *)chunk, used);
            used = 0;
        }
    }
    mlp_buf_append(b, (const char *)chunk, used);
}

void mlp_v2_response_write(struct mlp_buf *b, size_t *header_len, const char *model,
                           const struct ml_result *res, const struct mlp_v2_request *r)
{
    char tmp[64];
    mlp_buf_puts(b, "{\"model_name\":");
    mlp_buf_string(b, model);
    mlp_buf_puts(b, ",\"model_version\":\"1\"");
    if (r->id) {
        mlp_buf_puts(b, ",\"id\":");
        mlp_buf_string(b, r->id);
    }
    mlp_buf_puts(b, ",\"parameters\":{\"loss_name\":");
    mlp_buf_string(b, res->loss_name ? res->loss_name : "");
    mlp_buf_puts(b, ",\"reduction\":");
    mlp_buf_string(b, res->reduction_name ? res->reduction_name : "");
    mlp_buf_puts(b, ",\"dtype\":");
    mlp_buf_string(b, r->base.req.dtype == ML_FLOAT64 ? "float64" : "float32");
    if (r->extra_parameters)
        mlp_buf_puts(b, r->extra_parameters);
    mlp_buf_puts(b, "},\"outputs\":[");
    for (int i = 0; i < r->num_outputs; i++) {
        struct mlp__values v;
        mlp__output_values(res, r->output_bits[i], &v);
        if (i)
            mlp_buf_append(b, ",", 1);
        mlp_buf_puts(b, "{\"name\":");
        mlp_buf_string(b, mlp__output_of(r->output_bits[i])->v2_name);
        mlp_buf_puts(b, v.is_count ? ",\"datatype\":\"INT64\",\"shape\":["
                                   : ",\"datatype\":\"FP64\",\"shape\":[");
        for (int d = 0; d < v.rank; d++) {
            snprintf(tmp, sizeof(tmp), d ? ",%lld" : "%lld", (long long)v.shape[d]);
            mlp_buf_puts(b, tmp);
        }
        if (r->output_binary[i]) {
            snprintf(tmp, sizeof(tmp), "],\"parameters\":{\"binary_data_size\":%lld}}",
                     (long long)v.numel * 8);
            mlp_buf_puts(b, tmp);
            continue;
        }
        mlp_buf_puts(b, "],\"data\":[");
        for (int64_t k = 0; k < v.numel; k++) {
            if (k)
                mlp_buf_append(b, ",", 1);
            if (v.is_count) {
                snprintf(tmp, sizeof(tmp), "%.0f", v.data[k]);
                mlp_buf_puts(b, tmp);
            } else {
                mlp_buf_number(b, v.data[k]);
            }
        }
        mlp_buf_puts(b, "]}");
    }
    mlp_buf_puts(b, "]}");
    *header_len = b->len;
    for (int i = 0; i < r->num_outputs; i++) {
        if (!r->output_binary[i])
            continue;
        struct mlp__values v;
        mlp__output_values(res, r->output_bits[i], &v);
        append_binary(b, &v);
    }
}

static long long main_input_elements(const struct ml_request *q)
{
    const struct ml_tensor *t = q->logits ? q->logits : q->predictions ? q->predictions : q->losses;
    return t ? (long long)ml_shape_numel(t->rank, t->shape) : 0;
}

int mlp_v2_eval_decoded(const char *model, struct mlp_v2_request *r, const struct mlp_exec *exec,
                        struct mlp_buf *b, size_t *header_len_out, struct mlp_eval_info *info)
{
    struct mlp_error err;
    struct ml_result res;
    if (info) {
        info->loss_name = NULL;
        info->elements = 0;
    }
    if (exec) {
        r->base.req.max_elements = exec->max_elements;
        r->base.req.parallel_for = exec->parallel_for;
        r->base.req.parallel_ctx = exec->parallel_ctx;
    }
    int rc = ml_eval(&r->base.req, &res, &err.e);
    if (!rc) {
        mlp_v2_response_write(b, header_len_out, model, &res, r);
        if (info) {
            info->loss_name = res.loss_name;
            info->elements = main_input_elements(&r->base.req);
        }
        ml_result_free(&res);
    }
    mlp_request_free(&r->base);
    if (rc) {
        err.line = err.column = 0;
        mlp_error_write(b, rc, &err);
        *header_len_out = b->len;
    }
    return rc;
}

int mlp_v2_eval(const char *model, const char *body, size_t len, long long header_len,
                const struct mlp_exec *exec, struct mlp_buf *b, size_t *header_len_out,
                struct mlp_eval_info *info)
{
    struct mlp_v2_request r;
    struct mlp_error err;
    if (info) {
        info->loss_name = NULL;
        info->elements = 0;
    }
    int rc = mlp_v2_decode(model, body, len, header_len, &r, &err);
    if (rc) {
        mlp_error_write(b, rc, &err);
        *header_len_out = b->len;
        return rc;
    }
    return mlp_v2_eval_decoded(model, &r, exec, b, header_len_out, info);
}

/* ---- Metadata -------------------------------------------------------------------------- */

static void tensor_meta(struct mlp_buf *b, const char *name, const char *datatype, int first,
                        const char *shape)
{
    if (!first)
        mlp_buf_append(b, ",", 1);
    mlp_buf_puts(b, "{\"name\":");
    mlp_buf_string(b, name);
    mlp_buf_puts(b, ",\"datatype\":");
    mlp_buf_string(b, datatype);
    mlp_buf_puts(b, ",\"shape\":");
    mlp_buf_puts(b, shape);
    mlp_buf_puts(b, "}");
}

void mlp_v2_model_metadata(struct mlp_buf *b, const struct ml_loss_info *info)
{
    mlp_buf_puts(b, "{\"name\":");
    mlp_buf_string(b, info->name);
    mlp_buf_puts(b, ",\"versions\":[\"1\"],\"platform\":\"maskloss\",\"inputs\":[");
    enum mlp__slot main[2];
    int num_main = mlp__main_inputs(info->input, main);
    if (info->takes_labels)
        tensor_meta(b, mlp__inputs[MLP__LABELS].v2_name, "FP32", 1, "[-1,-1]");
    for (int i = 0; i < num_main; i++)
        tensor_meta(b, mlp__inputs[main[i]].v2_name, "FP32", !info->takes_labels && i == 0,
                    "[-1,-1]");
    tensor_meta(b, mlp__inputs[MLP__WEIGHTS].v2_name, "FP32", 0, "[-1,-1]");
    mlp_buf_puts(b, "],\"outputs\":[");
    for (size_t k = 0; k < MLP__NUM_OUTPUTS; k++)
        tensor_meta(b, mlp__outputs[k].v2_name, mlp__outputs[k].is_count ? "INT64" : "FP64", k == 0,
                    "[-1]");
    mlp_buf_puts(b, "]}");
}

void mlp_v2_server_metadata(struct mlp_buf *b)
{
    mlp_buf_puts(b, "{\"name\":\"maskloss\",\"version\":");
    mlp_buf_string(b, ML_VERSION);
    mlp_buf_puts(b, ",\"extensions\":[\"binary_tensor_data\",\"parameters\"]}");
}
