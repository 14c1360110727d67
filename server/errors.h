/*
 * errors.h -- the errors the server answers by itself, before or instead of the protocol's
 * decoding: their code (the "code" of the error object) and HTTP status, written once.
 *
 * Some codes are the protocol's own (too_large, out_of_memory, unknown_loss, invalid_binary):
 * their names come from its table (mlp_status_name), so that the same mistake has the same
 * code whichever layer notices it.
 */
#ifndef MLS_ERRORS_H
#define MLS_ERRORS_H

#include "buf.h"

enum mls_error {
    MLS_ERR_NOT_FOUND,              /* 404 no route */
    MLS_ERR_UNKNOWN_MODEL,          /* 404 /v2/models/{loss}: no such loss (unknown_loss) */
    MLS_ERR_UNKNOWN_VERSION,        /* 404 /v2/models/{loss}/versions/{v}: v is not 1 */
    MLS_ERR_METHOD_NOT_ALLOWED,     /* 405 (with Allow) */
    MLS_ERR_INVALID_HTTP,           /* 400 ambiguous framing: two lengths (connection closed) */
    MLS_ERR_INVALID_BINARY_HEADER,  /* 400 v2 Inference-Header-Content-Length unparsable */
    MLS_ERR_TOO_LARGE,              /* 413 body over --max-body-bytes or the whole budget */
    MLS_ERR_UNSUPPORTED_MEDIA_TYPE, /* 415 Content-Type or Content-Encoding */
    MLS_ERR_NOT_IMPLEMENTED,        /* 501 a transfer coding other than chunked */
    MLS_ERR_QUEUE_FULL,             /* 503 no queue slot */
    MLS_ERR_MEMORY_BUDGET_FULL,     /* 503 --max-inflight-bytes has no room now */
    MLS_ERR_DRAINING,               /* 503 shutting down */
    MLS_ERR_STARTING,               /* 503 /readyz before the server is ready */
    MLS_ERR_DEADLINE_EXCEEDED,      /* 503 waited in the queue past --request-timeout */
    MLS_ERR_OUT_OF_MEMORY,          /* 503 the server could not allocate */
    MLS_ERR_MONITOR_NOT_FOUND,      /* 404 no monitor of that name */
    MLS_ERR_MONITOR_CONFLICT,       /* 409 another config exists (PUT without ?force=true) */
    MLS_ERR_INVALID_MONITOR,        /* 422 a monitor's name or config field is wrong */
    MLS_ERR_INVALID_OBSERVATION,    /* 422 an observation's time, slice, id or shape is wrong */
    MLS_ERR_LIMIT_EXCEEDED,         /* 422 --max-monitors, --max-classes, --max-slice-values */
    MLS_ERR_STATE_UNAVAILABLE,      /* 503 the monitors' state cannot be written now */
    MLS_ERR_INVALID_QUERY,          /* 400 a query parameter is wrong */
    MLS_ERR_UNAUTHORIZED,           /* 401 no token, or one --auth-file does not hold */
    MLS_ERR_FORBIDDEN,              /* 403 a token without the scope the request needs */
    MLS_ERR_TOO_MANY_REQUESTS,      /* 429 over the client's quota (quota.h) */
    MLS_ERR_COUNT
};

/* The code of an error object ("not_found", ...). */
const char *mls_error_name(enum mls_error e);
/* Its HTTP status. */
unsigned mls_error_status(enum mls_error e);
/* The members of an error object, without its braces: "error", "code", "field". */
void mls_error_members(struct mlp_buf *b, const char *code, const char *field, const char *msg);
/* The error object {"error", "code", "field"}. */
void mls_error_write(struct mlp_buf *b, const char *code, const char *field, const char *msg);

/* Whether code is a code any answer of the server may carry: the server's or the protocol's. */
int mls_error_code_known(const char *code);

#endif /* MLS_ERRORS_H */
