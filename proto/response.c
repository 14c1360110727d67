/*
 * response.c -- responses, error objects and the catalogue, written as JSON text.
 *
 * Written directly rather than through json_t: a per_element output of a million values
 * would otherwise cost a million allocations, and jansson cannot spell NaN.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void key(struct mlp_buf *b, const char *k)
{
    mlp_buf_append(b, ",", 1);
    mlp_buf_string(b, k);
    mlp_buf_append(b, ":", 1);
}

static void write_shape(struct mlp_buf *b, int rank, const int64_t *shape)
{
    char tmp[32];
    mlp_buf_append(b, "[", 1);
    for (int d = 0; d < rank; d++) {
        snprintf(tmp, sizeof(tmp), d ? ",%lld" : "%lld", (long long)shape[d]);
        mlp_buf_puts(b, tmp);
    }
    mlp_buf_append(b, "]", 1);
}

/* A nested array of the given shape from row-major data; a rank-0 array is a number. */
static void write_nested(struct mlp_buf *b, const double *data, int rank, const int64_t *shape,
                         int64_t *pos)
{
    if (rank == 0) {
        mlp_buf_number(b, data[(*pos)++]);
        return;
    }
    mlp_buf_append(b, "[", 1);
    for (int64_t i = 0; i < shape[0]; i++) {
        if (i)
            mlp_buf_append(b, ",", 1);
        write_nested(b, data, rank - 1, shape + 1, pos);
    }
    mlp_buf_append(b, "]", 1);
}

/* ---- Responses ------------------------------------------------------------------------- */

/* One output: a nested array for an array of the result, else a number (a count as an
 * integer). */
static void write_values(struct mlp_buf *b, const struct mlp__values *v)
{
    int64_t pos = 0;
    if (v->is_tensor) {
        write_nested(b, v->data, v->rank, v->shape, &pos);
    } else if (v->is_count) {
        char tmp[32];
        snprintf(tmp, sizeof(tmp), "%.0f", v->scalar);
        mlp_buf_puts(b, tmp);
    } else {
        mlp_buf_number(b, v->scalar);
    }
}

void mlp_response_write(struct mlp_buf *b, const struct ml_result *res,
                        const struct mlp_request *req)
{
    struct mlp__values loss;
    mlp__output_values(res, ML_OUT_LOSS, &loss);
    mlp_buf_puts(b, "{\"loss\":");
    write_values(b, &loss);
    for (size_t k = 0; k < MLP__NUM_OUTPUTS; k++) {
        const struct mlp__output *o = &mlp__outputs[k];
        struct mlp__values v;
        if (o->bit == ML_OUT_LOSS || !(res->outputs & o->bit))
            continue;
        mlp__output_values(res, o->bit, &v);
        key(b, o->name);
        write_values(b, &v);
    }
    key(b, "shape");
    write_shape(b, loss.rank, loss.shape);
    key(b, "loss_name");
    mlp_buf_string(b, res->loss_name ? res->loss_name : "");
    key(b, "reduction");
    mlp_buf_string(b, res->reduction_name ? res->reduction_name : "");
    key(b, "dtype");
    mlp_buf_string(b, req && req->req.dtype == ML_FLOAT64 ? "float64" : "float32");
    if (req && req->num_ignored) {
        key(b, "ignored_fields");
        mlp_buf_append(b, "[", 1);
        for (size_t i = 0; i < req->num_ignored; i++) {
            if (i)
                mlp_buf_append(b, ",", 1);
            mlp_buf_string(b, req->ignored[i]);
        }
        mlp_buf_append(b, "]", 1);
    }
    mlp_buf_append(b, "}", 1);
}

/* The protocol's own codes; the library's are in its table (ml_status_name, ml_strerror). */
static const struct {
    enum mlp_status code;
    const char *name;
    const char *text;
} statuses[] = {
    {MLP_EMALFORMED, "malformed_json", "malformed JSON"},
    {MLP_EBINARY, "invalid_binary", "invalid binary tensor data"},
};

const char *mlp_status_name(int status)
{
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        if ((int)statuses[i].code == status)
            return statuses[i].name;
    return ml_status_name(status);
}

const char *mlp_strerror(int status)
{
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++)
        if ((int)statuses[i].code == status)
            return statuses[i].text;
    return ml_strerror(status);
}

void mlp_error_write(struct mlp_buf *b, int status, const struct mlp_error *err)
{
    char tmp[48];
    mlp_buf_puts(b, "{\"error\":");
    mlp_buf_string(b, err && err->e.message[0] ? err->e.message : mlp_strerror(status));
    key(b, "code");
    mlp_buf_string(b, mlp_status_name(status));
    key(b, "field");
    mlp_buf_string(b, err ? err->e.field : "");
    if (err && err->e.index >= 0) {
        key(b, "index");
        snprintf(tmp, sizeof(tmp), "%lld", (long long)err->e.index);
        mlp_buf_puts(b, tmp);
    }
    if (status == MLP_EMALFORMED && err) {
        key(b, "line");
        snprintf(tmp, sizeof(tmp), "%d", err->line);
        mlp_buf_puts(b, tmp);
        key(b, "column");
        snprintf(tmp, sizeof(tmp), "%d", err->column);
        mlp_buf_puts(b, tmp);
    }
    mlp_buf_append(b, "}", 1);
}

/* ---- The catalogue --------------------------------------------------------------------- */

/* The inputs of a loss in the catalogue: ["labels", "logits|predictions", "weights"]. */
static void write_inputs(struct mlp_buf *b, const struct ml_loss_info *l)
{
    enum mlp__slot main[2];
    int num_main = mlp__main_inputs(l->input, main);
    mlp_buf_append(b, "[", 1);
    if (l->takes_labels) {
        mlp_buf_string(b, mlp__inputs[MLP__LABELS].name);
        mlp_buf_append(b, ",", 1);
    }
    mlp_buf_append(b, "\"", 1);
    for (int i = 0; i < num_main; i++) {
        if (i)
            mlp_buf_append(b, "|", 1);
        mlp_buf_puts(b, mlp__inputs[main[i]].name);
    }
    mlp_buf_append(b, "\",", 2);
    mlp_buf_string(b, mlp__inputs[MLP__WEIGHTS].name);
    mlp_buf_append(b, "]", 1);
}

void mlp_catalogue_write(struct mlp_buf *b)
{
    mlp_buf_puts(b, "{\"version\":");
    mlp_buf_string(b, ML_VERSION);
    mlp_buf_puts(b, ",\"losses\":[");
    for (size_t i = 0; i < ml_loss_count(); i++) {
        const struct ml_loss_info *l = ml_loss_at(i);
        if (i)
            mlp_buf_append(b, ",", 1);
        mlp_buf_puts(b, "{\"name\":");
        mlp_buf_string(b, l->name);
        if (l->alias_of) {
            key(b, "alias_of");
            mlp_buf_string(b, l->alias_of);
        }
        key(b, "framework");
        mlp_buf_string(b, l->framework);
        key(b, "formula");
        mlp_buf_string(b, l->doc);
        key(b, "inputs");
        write_inputs(b, l);
        key(b, "weights");
        mlp_buf_string(b, l->weights_rule);
        key(b, "params");
        mlp_buf_append(b, "[", 1);
        for (size_t p = 0; p < l->num_params; p++) {
            const struct ml_param_info *pi = &l->params[p];
            if (p)
                mlp_buf_append(b, ",", 1);
            mlp_buf_puts(b, "{\"name\":");
            mlp_buf_string(b, pi->name);
            key(b, "type");
            mlp_buf_string(b, pi->kind == ML_PARAM_BOOL     ? "boolean"
                              : pi->kind == ML_PARAM_NUMBER ? "number"
                                                            : "number or tensor");
            if (isnan(pi->default_value)) {
                key(b, "required");
                mlp_buf_puts(b, "true");
            } else {
                key(b, "default");
                if (pi->kind == ML_PARAM_BOOL)
                    mlp_buf_puts(b, pi->default_value != 0 ? "true" : "false");
                else
                    mlp_buf_number(b, pi->default_value);
            }
            key(b, "doc");
            mlp_buf_string(b, pi->doc);
            mlp_buf_append(b, "}", 1);
        }
        mlp_buf_append(b, "]", 1);
        key(b, "reductions");
        mlp_buf_append(b, "[", 1);
        for (size_t r = 0; r < l->num_reductions; r++) {
            if (r)
                mlp_buf_append(b, ",", 1);
            mlp_buf_string(b, l->reductions[r]);
        }
        mlp_buf_append(b, "]", 1);
        key(b, "default_reduction");
        mlp_buf_string(b, l->default_reduction);
        mlp_buf_append(b, "}", 1);
    }
    mlp_buf_puts(b, "]}");
}

/* ---- The round trip ------------------------------------------------------------------- */

static long long main_input_elements(const struct ml_request *r)
{
    const struct ml_tensor *t = r->logits ? r->logits : r->predictions ? r->predictions : r->losses;
    return t ? (long long)ml_shape_numel(t->rank, t->shape) : 0;
}

int mlp_eval_value(json_t *root, const struct mlp_exec *exec, struct mlp_buf *b,
                   struct mlp_eval_info *info)
{
    struct mlp_error err;
    struct mlp_request req;
    struct ml_result res;
    memset(&err, 0, sizeof(err));
    err.e.index = -1;
    if (info) {
        info->loss_name = NULL;
        info->elements = 0;
    }

    int rc = mlp_request_decode(root, &req, &err);
    if (rc)
        goto write_error;
    if (exec) {
        req.req.max_elements = exec->max_elements;
        req.req.parallel_for = exec->parallel_for;
        req.req.parallel_ctx = exec->parallel_ctx;
    }
    rc = ml_eval(&req.req, &res, &err.e);
    if (rc) {
        mlp_request_free(&req);
        goto write_error;
    }
    mlp_response_write(b, &res, &req);
    if (info) {
        info->loss_name = res.loss_name;
        info->elements = main_input_elements(&req.req);
    }
    ml_result_free(&res);
    mlp_request_free(&req);
    return 0;

write_error:
    mlp_error_write(b, rc, &err);
    return rc;
}

int mlp_eval_text(const char *text, size_t len, long long max_elements, struct mlp_buf *b)
{
    struct mlp_error err;
    json_t *root = NULL;
    memset(&err, 0, sizeof(err));
    err.e.index = -1;

    int rc = mlp_parse_request(text, len, &root, &err);
    if (rc) {
        mlp_error_write(b, rc, &err);
        return rc;
    }
    struct mlp_exec exec = {max_elements, NULL, NULL};
    rc = mlp_eval_value(root, &exec, b, NULL);
    json_decref(root);
    return rc;
}

int mlp_eval_batch(json_t *root, const struct mlp_exec *exec, struct mlp_buf *b, size_t *count,
                   void (*on_entry)(void *cls, int status, const struct mlp_eval_info *info),
                   void *cls)
{
    json_t *list = json_is_object(root) ? json_object_get(root, "requests") : NULL;
    if (count)
        *count = 0;
    if (!json_is_array(list)) {
        struct mlp_error err;
        memset(&err, 0, sizeof(err));
        err.e.index = -1;
        snprintf(err.e.field, sizeof(err.e.field), "requests");
        snprintf(err.e.message, sizeof(err.e.message),
                 "a batch is an object {\"requests\": [request, ...]}: %s",
                 !json_is_object(root) ? "the body is not an object"
                 : list                ? "\"requests\" is not an array"
                                       : "\"requests\" is missing");
        mlp_error_write(b, ML_EINVAL, &err);
        return ML_EINVAL;
    }
    size_t n = json_array_size(list);
    mlp_buf_puts(b, "{\"responses\":[");
    for (size_t i = 0; i < n; i++) {
        struct mlp_eval_info info;
        if (i)
            mlp_buf_append(b, ",", 1);
        int rc = mlp_eval_value(json_array_get(list, i), exec, b, &info);
        if (on_entry)
            on_entry(cls, rc, &info);
    }
    mlp_buf_append(b, "]}", 2);
    if (count)
        *count = n;
    return 0;
}
