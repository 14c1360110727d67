/*
 * mlp.h -- the maskloss JSON protocol: requests in, responses and errors out.
 *
 * The wire format is documented in proto/README.md and its JSON Schemas
 * (request.schema.json, response.schema.json). Functions here are reentrant and
 * keep no global state; they depend on libmaskloss and jansson.
 */
#ifndef MLP_H
#define MLP_H

#include <stddef.h>

#include <jansson.h>

#include "maskloss.h"

#include "buf.h" /* struct mlp_buf, where every document is written */

/*
 * Status codes of the protocol layer, beyond the library's enum ml_status (-1 to -13): both
 * front ends (/v1 and /v2) answer from these two sets alone, with the same code for the same
 * mistake. Their names and texts are in one table (response.c).
 */
enum mlp_status {
    MLP_EMALFORMED = -100, /* the text is not JSON, or has duplicate keys ("malformed_json") */
    MLP_EBINARY = -101     /* v2: the binary data after the JSON header cannot be located:
                              Inference-Header-Content-Length missing, unparsable or past the
                              body, a binary_data_size that is not a byte count, a truncated
                              body, bytes left over ("invalid_binary") */
};

/* The machine-readable name of an ml_status or mlp_status code ("malformed_json", ...);
 * "internal_error" for any other number. */
const char *mlp_status_name(int status);

/* A short English text for an ml_status or mlp_status code ("malformed JSON", ...). */
const char *mlp_strerror(int status);

/* Where a parse failed (MLP_EMALFORMED): 1-based line and column, 0 when unknown. */
struct mlp_error {
    struct ml_error e;
    int line;
    int column;
};

/*
 * A decoded request. `req` points into memory the struct owns (tensor buffers and the
 * JSON document for strings); release with mlp_request_free(), also after a failed decode.
 */
struct mlp_request {
    struct ml_request req;
    json_t *root;                /* the document, kept alive for its strings */
    json_t *aux;                 /* a second document (v2: the loss parameters), or NULL */
    struct ml_tensor tensors[5]; /* labels, logits, predictions, losses, weights */
    struct ml_param *params;
    size_t num_params;
    void *buffers[5 + 16]; /* tensor data, owned */
    size_t num_buffers;
    const char *ignored[16]; /* top-level keys the protocol does not know */
    size_t num_ignored;
};

/*
 * Parses text (not necessarily NUL-terminated) into a JSON document. Returns 0 and a new
 * reference in *root, or MLP_EMALFORMED with line, column and jansson's message in err, or
 * ML_ENOMEM when jansson ran out of memory.
 */
int mlp_parse(const char *text, size_t len, json_t **root, struct mlp_error *err);

/*
 * mlp_parse for the body of a request (/v1/loss) or a batch (/v1/batch), whose document
 * goes only to mlp_request_decode, mlp_eval_value or mlp_eval_batch: the nested arrays of
 * numbers of the inputs (labels, logits, ..., as arrays or as the "data" of {"shape",
 * "data"}) are decoded straight from the text into doubles, and the text of their "b64"
 * strings kept as it is; both stand in the document as opaque nodes that only those
 * functions read (jansson would hold each number as a json_t of its own, and copy a string
 * a byte at a time). Any other reader must use mlp_parse. The same answers as mlp_parse: the
 * same request, or the same error with its line and column.
 */
int mlp_parse_request(const char *text, size_t len, json_t **root, struct mlp_error *err);

/*
 * jansson's allocator for programs that parse requests: install it once at start-up with
 * json_set_alloc_funcs(mlp_json_malloc, free). It is malloc, and it lets mlp_parse see an
 * allocation that failed inside jansson (counted per thread): jansson's lexer drops a byte it
 * cannot store and parses on, so a document read while memory ran out may hold a shortened
 * number or string. With it mlp_parse answers ML_ENOMEM instead.
 */
void *mlp_json_malloc(size_t size);

/*
 * Decodes a parsed request object. Takes a new reference to root. Returns 0, or a
 * negative status with err naming the field (the request is then released).
 */
int mlp_request_decode(json_t *root, struct mlp_request *out, struct mlp_error *err);

void mlp_request_free(struct mlp_request *r);

/* Decodes a "params" object (names to numbers, booleans or tensors) into r's params, and
 * points r->req at them. Returns 0 or a negative status with err naming the field. */
int mlp_params_decode(const json_t *obj, struct mlp_request *r, struct mlp_error *err);

/* ---- Bytes in JSON ----------------------------------------------------------------------- */

/* The dtype named "float32", "float64", "uint8", "bool", "int32" or "int64"; -1 otherwise. */
int mlp_dtype_parse(const char *name);

/* The number of bytes base64 text of len characters decodes to. */
size_t mlp_b64_decoded_size(const char *text, size_t len);
/*
 * Decodes base64 (standard alphabet, padding optional) into out, which must hold
 * mlp_b64_decoded_size() bytes. Returns the byte count, or -(i + 1) for a bad character or
 * length at offset i.
 */
long long mlp_b64_decode(const char *text, size_t len, unsigned char *out);

/* Reverses the byte order of each esize-byte element of data[0..bytes): little-endian
 * wire data on a big-endian host, or big-endian .npy data anywhere. */
void mlp_swap_bytes(void *data, size_t bytes, size_t esize);
/* Base64 of n bytes (no quotes). */
void mlp_b64_encode(struct mlp_buf *b, const unsigned char *data, size_t n);

/* Appends the response object of a successful evaluation (no trailing newline). */
void mlp_response_write(struct mlp_buf *b, const struct ml_result *res,
                        const struct mlp_request *req);

/* Appends the error object {"error", "code", "field"[, "index", "line", "column"]}. */
void mlp_error_write(struct mlp_buf *b, int status, const struct mlp_error *err);

/* Appends the catalogue: every loss with its parameters, defaults and reductions. */
void mlp_catalogue_write(struct mlp_buf *b);

/* How to evaluate: the element limit (0: none) and an optional parallel_for, both handed
 * to ml_eval (see struct ml_request). NULL means no limit, serial. */
struct mlp_exec {
    long long max_elements;
    void (*parallel_for)(void *ctx, int64_t n, void (*fn)(void *arg, int64_t i), void *arg);
    void *parallel_ctx;
};

/* What an evaluation was about, for metrics and logs. */
struct mlp_eval_info {
    const char *loss_name; /* the catalogue name that ran (static), or NULL when rejected */
    long long elements;    /* elements of the main input (logits, predictions or losses) */
};

/*
 * Decodes, evaluates and encodes one parsed request (a new reference is taken, as by
 * mlp_request_decode). Appends the response or the error object to b and returns 0 or
 * the negative status. exec and info may be NULL.
 */
int mlp_eval_value(json_t *root, const struct mlp_exec *exec, struct mlp_buf *b,
                   struct mlp_eval_info *info);

/* The whole round trip for one request text: mlp_parse, then mlp_eval_value, serial;
 * `max_elements` limits each input tensor (0: none). */
int mlp_eval_text(const char *text, size_t len, long long max_elements, struct mlp_buf *b);

/*
 * A batch {"requests": [R, ...]} -> {"responses": [A, ...]}: each answer A is the response
 * or the error object of R, in order, so one bad entry does not spoil the others. Returns 0
 * when the envelope was valid (whatever its entries did), else the negative status with
 * the error object in b. exec may be NULL. `count` (may be NULL) receives the number of entries;
 * `on_entry` (may be NULL) is called after each entry with its status and info.
 */
int mlp_eval_batch(json_t *root, const struct mlp_exec *exec, struct mlp_buf *b, size_t *count,
                   void (*on_entry)(void *cls, int status, const struct mlp_eval_info *info),
                   void *cls);

#endif /* MLP_H */
