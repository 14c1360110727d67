/*
 * errors.c -- the server's error table (errors.h).
 */
#include <limits.h>
#include <string.h>

#include "errors.h"
#include "mlp.h"

static const struct {
    const char *name; /* NULL: the protocol's name for `proto` */
    int proto;
    unsigned status;
} errors[MLS_ERR_COUNT] = {
    [MLS_ERR_NOT_FOUND] = {"not_found", 0, 404},
    [MLS_ERR_UNKNOWN_MODEL] = {NULL, ML_EUNKNOWN_LOSS, 404},
    [MLS_ERR_UNKNOWN_VERSION] = {"unknown_version", 0, 404},
    [MLS_ERR_METHOD_NOT_ALLOWED] = {"method_not_allowed", 0, 405},
    [MLS_ERR_INVALID_HTTP] = {"invalid_http", 0, 400},
    [MLS_ERR_INVALID_BINARY_HEADER] = {NULL, MLP_EBINARY, 400},
    [MLS_ERR_TOO_LARGE] = {NULL, ML_ETOOLARGE, 413},
    [MLS_ERR_UNSUPPORTED_MEDIA_TYPE] = {"unsupported_media_type", 0, 415},
    [MLS_ERR_NOT_IMPLEMENTED] = {"not_implemented", 0, 501},
    [MLS_ERR_QUEUE_FULL] = {"queue_full", 0, 503},
    [MLS_ERR_MEMORY_BUDGET_FULL] = {"memory_budget_full", 0, 503},
    [MLS_ERR_DRAINING] = {"draining", 0, 503},
    [MLS_ERR_STARTING] = {"starting", 0, 503},
    [MLS_ERR_DEADLINE_EXCEEDED] = {"deadline_exceeded", 0, 503},
    [MLS_ERR_OUT_OF_MEMORY] = {NULL, ML_ENOMEM, 503},
    [MLS_ERR_MONITOR_NOT_FOUND] = {"monitor_not_found", 0, 404},
    [MLS_ERR_MONITOR_CONFLICT] = {"monitor_conflict", 0, 409},
    [MLS_ERR_INVALID_MONITOR] = {"invalid_monitor", 0, 422},
    [MLS_ERR_INVALID_OBSERVATION] = {"invalid_observation", 0, 422},
    [MLS_ERR_LIMIT_EXCEEDED] = {"limit_exceeded", 0, 422},
    [MLS_ERR_STATE_UNAVAILABLE] = {"state_unavailable", 0, 503},
    [MLS_ERR_INVALID_QUERY] = {"invalid_query", 0, 400},
    [MLS_ERR_UNAUTHORIZED] = {"unauthorized", 0, 401},
    [MLS_ERR_FORBIDDEN] = {"forbidden", 0, 403},
    [MLS_ERR_TOO_MANY_REQUESTS] = {"too_many_requests", 0, 429},
};

const char *mls_error_name(enum mls_error e)
{
    return errors[e].name ? errors[e].name : mlp_status_name(errors[e].proto);
}

unsigned mls_error_status(enum mls_error e)
{
    return errors[e].status;
}

void mls_error_members(struct mlp_buf *b, const char *code, const char *field, const char *msg)
{
    mlp_buf_puts(b, "\"error\":");
    mlp_buf_string(b, msg);
    mlp_buf_puts(b, ",\"code\":");
    mlp_buf_string(b, code);
    mlp_buf_puts(b, ",\"field\":");
    mlp_buf_string(b, field ? field : "");
}

void mls_error_write(struct mlp_buf *b, const char *code, const char *field, const char *msg)
{
    mlp_buf_puts(b, "{");
    mls_error_members(b, code, field, msg);
    mlp_buf_puts(b, "}");
}

int mls_error_code_known(const char *code)
{
    for (int e = 0; e < MLS_ERR_COUNT; e++)
        if (!strcmp(code, mls_error_name((enum mls_error)e)))
            return 1;
    /* The protocol's and the library's codes: every negative status with a name of its own
     * (an unknown status has the name of INT_MIN's). */
    const char *unknown = mlp_status_name(INT_MIN);
    for (int st = -1; st >= -1000; st--) {
        const char *name = mlp_status_name(st);
        if (strcmp(name, unknown) && !strcmp(code, name))
            return 1;
    }
    return 0;
}
