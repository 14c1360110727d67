/*
 * common.c -- the checks shared by the fuzz targets (fuzz.h).
 */
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
