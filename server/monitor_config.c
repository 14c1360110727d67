/*
 * monitor_config.c -- a monitor's configuration: parsed, checked field by field, and
 * normalized (defaults filled in, the reduction in its canonical spelling) so that "the same
 * config" is the same text. Also durations and event times.
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "monitor.h"

static const char *const known_keys[] = {
    "loss",   "params",  "reduction", "dtype", "classes",        "num_classes",
    "slices", "windows", "retention", "drift", "export_classes", "prediction_ttl"};

/* Slice keys become Prometheus labels beside these. */
static const char *const reserved_keys[] = {"monitor",  "class", "le",
                                            "quantile", "job",   "instance"};

static int fail(struct mlp_error *err, int code, const char *field, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static int fail(struct mlp_error *err, int code, const char *field, const char *fmt, ...)
{
    memset(err, 0, sizeof(*err));
    err->e.code = code;
    err->e.index = -1;
    snprintf(err->e.field, sizeof(err->e.field), "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->e.message, sizeof(err->e.message), fmt, ap);
    va_end(ap);
    return code;
}

int64_t mls_duration_parse(const char *s)
{
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    int64_t v = 0;
    while (isdigit((unsigned char)*s)) {
        if (v > 1000000000)
            return -1;
        v = v * 10 + (*s++ - '0');
    }
    int64_t unit;
    switch (*s++) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 86400;
        break;
    default:
        return -1;
    }
    if (*s)
        return -1;
    return v * unit;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* RFC 3339: 2026-12-01T09:00:00[.fff](Z|+hh:mm|-hh:mm); 't', 'z' and a space also taken. */
int mls_time_parse_text(const char *s, double *out)
{
    int y, mo, d, h, mi, se;
    const char *p = s;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d))
        return -1;
    if (*p != 'T' && *p != 't' && *p != ' ')
        return -1;
    p++;
    if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' || digits(&p, 2, &se))
        return -1;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60)
        return -1;
    if (y < 1970)
        return -1; /* as for numbers: before Unix time, a mistake */
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo == 2 && d == 29 && !leap)
        return -1;
    double frac = 0, scale = 0.1;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return -1;
        while (isdigit((unsigned char)*p)) {
            frac += (*p++ - '0') * scale;
            scale /= 10;
        }
    }
    int offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p++ == '-' ? -1 : 1, oh, om;
        if (digits(&p, 2, &oh) || *p++ != ':' || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset = sign * (oh * 3600 + om * 60);
    } else {
        return -1;
    }
    if (*p)
        return -1;
    int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + (se > 59 ? 59 : se);
    *out = (double)(t - offset) + frac;
    return 0;
}

int mls_time_parse(const json_t *v, double *out)
{
    if (json_is_number(v)) {
        double t = json_number_value(v);
        /* Years 1970 to 9999: anything else is a unit mistake (milliseconds, say). */
        if (!(t >= 0 && t < 253402300800.0))
            return -1;
        *out = t;
        return 0;
    }
    if (json_is_string(v))
        return mls_time_parse_text(json_string_value(v), out);
    return -1;
}

void mls_mconfig_free(struct mls_mconfig *c)
{
    free(c->loss);
    free(c->reduction);
    json_decref(c->params);
    for (int64_t i = 0; c->class_names && i < c->num_classes; i++)
        free(c->class_names[i]);
    free(c->class_names);
    for (int i = 0; i < c->num_slice_keys; i++)
        free(c->slice_keys[i]);
    for (int i = 0; i < c->num_windows; i++)
        free(c->window_names[i]);
    free(c->json);
    memset(c, 0, sizeof(*c));
}

static int label_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 64 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

/* The last axis of a nested array (its first innermost row), 0 for a number. */
static size_t last_axis(const json_t *v)
{
    size_t n = 0;
    while (json_is_array(v) && json_array_size(v) > 0) {
        n = json_array_size(v);
        v = json_array_get(v, 0);
    }
    return n;
}

/* One dry run of the loss on one row of `width` classes; 0 or the status with e filled. */
static int dry_run(const struct mls_mconfig *c, const struct ml_loss_info *info, size_t width,
                   int sparse, struct mlp_error *e)
{
    json_t *req = json_object(), *row = json_array(), *pred = json_array();
    json_array_append_new(pred, row);
    for (size_t i = 0; i < width; i++)
        json_array_append_new(row, json_real(0.5));
    json_object_set_new(req, "loss", json_string(c->loss));
    json_object_set_new(req, "reduction", json_string(c->reduction));
    if (c->params)
        json_object_set(req, "params", c->params);
    const char *input = info->input == ML_INPUT_LOSSES        ? "losses"
                        : info->input == ML_INPUT_PREDICTIONS ? "predictions"
                                                              : "logits";
    json_object_set_new(req, input, pred);
    /* Labels of the prediction's shape (zeros), or class indices (one per row). */
    if (info->takes_labels)
        json_object_set_new(req, "labels", sparse ? json_pack("[i]", 0) : json_deep_copy(pred));
    int rc = ML_ENOMEM;
    struct mlp_request r;
    if (req && row && json_object_size(req) >= 3)
        rc = mlp_request_decode(req, &r, e);
    json_decref(req);
    if (!rc) {
        struct ml_result res;
        rc = ml_eval(&r.req, &res, &e->e);
        ml_result_free(&res);
        mlp_request_free(&r);
    }
    return rc;
}

/*
 * The params are checked the way observations will use them: dry runs of the loss on one
 * row, with labels of the prediction's shape and with class indices. A config is refused
 * only when no dry run evaluates and one failed on a parameter; any other failure (the dry
 * runs' own tensors) says nothing about it.
 */
static int check_params(const struct mls_mconfig *c, struct mlp_error *err)
{
    const struct ml_loss_info *info = ml_loss_find(c->loss);
    /* As wide as the classes, or as a per-class parameter (pos_weight [C]). */
    size_t width = c->num_classes ? (size_t)c->num_classes : 1;
    const char *key;
    json_t *val;
    if (!c->num_classes && c->params)
        json_object_foreach(c->params, key, val)
        {
            if (last_axis(val) > width)
                width = last_axis(val);
        }
    if (width > 1 << 20)
        return 0; /* no dry run that large: observations will say */
    struct mlp_error e[2];
    int rc[2];
    for (int sparse = 0; sparse < 2; sparse++) {
        rc[sparse] = dry_run(c, info, width, sparse, &e[sparse]);
        if (!rc[sparse])
            return 0;
        if (rc[sparse] == ML_ENOMEM)
            return fail(err, ML_ENOMEM, "", "out of memory");
    }
    for (int k = 0; k < 2; k++)
        if (!strncmp(e[k].e.field, "params", 6)) {
            *err = e[k];
            return rc[k];
        }
    return 0;
}

static int parse(const json_t *obj, const struct mls_monitor_limits *lim, struct mls_mconfig *c,
                 struct mlp_error *err)
{
    if (!json_is_object(obj))
        return fail(err, ML_EINVAL, "", "a monitor's config is a JSON object");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        size_t i = 0;
        while (i < sizeof(known_keys) / sizeof(known_keys[0]) && strcmp(known_keys[i], key))
            i++;
        if (i == sizeof(known_keys) / sizeof(known_keys[0]))
            return fail(err, ML_EINVAL, key,
                        "unknown field \"%.40s\" (a config has loss, params, reduction, dtype, "
                        "classes or num_classes, slices, windows, retention, drift, "
                        "export_classes, prediction_ttl)",
                        key);
    }

    const json_t *loss = json_object_get(obj, "loss");
    if (!json_is_string(loss))
        return fail(err, ML_EINVAL, "loss",
                    "a monitor needs \"loss\", a loss name (GET /v1/losses)");
    const json_t *red = json_object_get(obj, "reduction");
    if (red && !json_is_null(red) && !json_is_string(red))
        return fail(err, ML_EINVAL, "reduction", "reduction must be a string");
    int rc = ml_reduction_ratio(json_string_value(loss), red ? json_string_value(red) : NULL,
                                &c->ratio, &err->e);
    if (rc) {
        if (!strcmp(err->e.field, "reduction") && !red)
            snprintf(err->e.message, sizeof(err->e.message),
                     "%s reduces nothing by default (reduction none): a monitor needs a "
                     "reduction that does (give \"reduction\")",
                     json_string_value(loss));
        return rc;
    }
    c->loss = strdup(json_string_value(loss));
    c->reduction = strdup(c->ratio.reduction);
    if (!c->loss || !c->reduction)
        return fail(err, ML_ENOMEM, "", "out of memory");

    const json_t *dtype = json_object_get(obj, "dtype");
    if (dtype && !json_is_null(dtype)) {
        const char *s = json_is_string(dtype) ? json_string_value(dtype) : "";
        if (!strcmp(s, "float64"))
            c->f64 = 1;
        else if (strcmp(s, "float32"))
            return fail(err, ML_EINVAL, "dtype", "dtype must be \"float32\" or \"float64\"");
    }

    const json_t *params = json_object_get(obj, "params");
    if (params && !json_is_null(params)) {
        if (!json_is_object(params))
            return fail(err, ML_EINVAL, "params", "params must be an object (names to values)");
        c->params = json_deep_copy(params);
        if (!c->params)
            return fail(err, ML_ENOMEM, "", "out of memory");
    }

    const json_t *classes = json_object_get(obj, "classes");
    const json_t *num = json_object_get(obj, "num_classes");
    if (classes && !json_is_null(classes) && num && !json_is_null(num))
        return fail(err, ML_EINVAL, "num_classes", "give \"classes\" or \"num_classes\", not both");
    if (num && !json_is_null(num)) {
        /* (requests are parsed with every number as a double) */
        double v = json_number_value(num);
        if (!json_is_number(num) || !(v >= 1) || v != floor(v))
            return fail(err, ML_EINVAL, "num_classes", "num_classes must be an integer >= 1");
        if (v > lim->max_classes)
            return fail(err, MLS_CFG_LIMIT, "num_classes",
                        "num_classes %.6g is more than the server's limit of %u "
                        "(--max-classes)",
                        v, lim->max_classes);
        c->num_classes = (int64_t)v;
    }
    if (classes && !json_is_null(classes)) {
        if (!json_is_array(classes) || json_array_size(classes) < 1)
            return fail(err, ML_EINVAL, "classes", "classes must be a non-empty array of names");
        size_t n = json_array_size(classes);
        if (n > lim->max_classes)
            return fail(err, MLS_CFG_LIMIT, "classes",
                        "%zu classes is more than the server's limit of %u (--max-classes)", n,
                        lim->max_classes);
        c->class_names = calloc(n, sizeof(char *));
        if (!c->class_names)
            return fail(err, ML_ENOMEM, "", "out of memory");
        c->num_classes = (int64_t)n;
        char field[40];
        for (size_t i = 0; i < n; i++) {
            const json_t *v = json_array_get(classes, i);
            snprintf(field, sizeof(field), "classes[%zu]", i);
            if (!json_is_string(v) || json_string_length(v) < 1 || json_string_length(v) > 128 ||
                strlen(json_string_value(v)) != json_string_length(v))
                return fail(err, ML_EINVAL, field, "a class name is a string of 1 to 128 bytes");
            for (size_t j = 0; j < i; j++)
                if (!strcmp(c->class_names[j], json_string_value(v)))
                    return fail(err, ML_EINVAL, field, "class \"%.60s\" is named twice",
                                json_string_value(v));
            if (!(c->class_names[i] = strdup(json_string_value(v))))
                return fail(err, ML_ENOMEM, "", "out of memory");
        }
    }
    /* A per-sample softmax loss takes classes when its monitor is one of predictions (it
     * says prediction_ttl; late.h): its per-class figures are then by the labelled class. */
    enum mls_late_kind late = mls_late_kind_of(c->loss);
    const json_t *ttl = json_object_get(obj, "prediction_ttl");
    int late_asked = ttl && !json_is_null(ttl);
    if (c->num_classes && !c->ratio.elementwise &&
        (late == MLS_LATE_NONE || late == MLS_LATE_ELEMENTWISE || !late_asked))
        return fail(err, ML_EINVAL, c->class_names ? "classes" : "num_classes",
                    "per-class figures need an elementwise loss (one value per class); %s "
                    "gives one value per sample%s",
                    c->loss,
                    late == MLS_LATE_NONE || late == MLS_LATE_ELEMENTWISE
                        ? ""
                        : " (a monitor of predictions and late labels takes classes: give "
                          "prediction_ttl)");

    const json_t *slices = json_object_get(obj, "slices");
    if (slices && !json_is_null(slices)) {
        if (!json_is_array(slices) || json_array_size(slices) > MLS_MAX_SLICE_KEYS)
            return fail(err, ML_EINVAL, "slices", "slices must be an array of at most %d keys",
                        MLS_MAX_SLICE_KEYS);
        char field[40];
        for (size_t i = 0; i < json_array_size(slices); i++) {
            const json_t *v = json_array_get(slices, i);
            snprintf(field, sizeof(field), "slices[%zu]", i);
            const char *s = json_is_string(v) ? json_string_value(v) : "";
            if (!label_name_ok(s))
                return fail(err, ML_EINVAL, field,
                            "a slice key matches [A-Za-z_][A-Za-z0-9_]{0,63} (it becomes a "
                            "Prometheus label)");
            for (size_t r = 0; r < sizeof(reserved_keys) / sizeof(reserved_keys[0]); r++)
                if (!strcmp(s, reserved_keys[r]))
                    return fail(err, ML_EINVAL, field, "slice key \"%s\" is reserved", s);
            for (int j = 0; j < c->num_slice_keys; j++)
                if (!strcmp(c->slice_keys[j], s))
                    return fail(err, ML_EINVAL, field, "slice key \"%s\" is given twice", s);
            if (!(c->slice_keys[c->num_slice_keys] = strdup(s)))
                return fail(err, ML_ENOMEM, "", "out of memory");
            c->num_slice_keys++;
        }
    }

    const json_t *retention = json_object_get(obj, "retention");
    c->retention = 30 * 86400;
    if (retention && !json_is_null(retention)) {
        int64_t r =
            json_is_string(retention) ? mls_duration_parse(json_string_value(retention)) : -1;
        if (r < MLS_HOUR || r % MLS_HOUR || r > 3650LL * 86400)
            return fail(err, ML_EINVAL, "retention",
                        "retention is a duration (\"30d\", \"12h\"): a whole number of hours "
                        "from 1h to 3650d");
        c->retention = r;
    }

    /* Late labels: a prediction has one output per class, and a loss whose weights can mask
     * one label at a time (late.h). */
    c->late = c->num_classes ? late : MLS_LATE_NONE;
    c->late_regression = mls_late_regression(c->loss);
    /* A prediction counts in its bucket, which the retention drops whole: its hour bucket
     * (after the rollup) must outlive it, so the ttl ends an hour before the retention. A
     * retention of an hour leaves no room: such a monitor takes no predictions by default. */
    int64_t most = c->retention - MLS_HOUR;
    c->prediction_ttl = 7 * 86400 < most ? 7 * 86400 : most;
    if (c->prediction_ttl < MLS_BUCKET && !late_asked)
        c->late = MLS_LATE_NONE;
    if (late_asked) {
        int64_t t = json_is_string(ttl) ? mls_duration_parse(json_string_value(ttl)) : -1;
        if (t < MLS_BUCKET || t > most)
            return fail(err, ML_EINVAL, "prediction_ttl",
                        "prediction_ttl is a duration (\"7d\", \"12h\") from 1m to the "
                        "retention less an hour (here %llds): how long a stored prediction "
                        "takes labels, while its bucket (an hour, after the rollup) is kept",
                        (long long)most);
        if (!c->num_classes)
            return fail(err, ML_EINVAL, "prediction_ttl",
                        "predictions need classes or num_classes (a stored prediction has one "
                        "output per class)");
        if (!c->late)
            return fail(err, ML_EINVAL, "prediction_ttl",
                        "%s cannot take late labels: its weights cannot mask one label at a "
                        "time. Late labels take the elementwise losses (sigmoid_cross_entropy, "
                        "log_loss, the regression losses, binary_cross_entropy_with_logits, "
                        "sigmoid_focal_loss, asymmetric_loss, the tf.nn ones) and the softmax "
                        "ones with a class per prediction (softmax_cross_entropy, "
                        "sparse_softmax_cross_entropy, CategoricalCrossentropy, cross_entropy)",
                        c->loss);
        c->prediction_ttl = t;
    }
    c->late_slots =
        c->late ? (MLS_LATE_DOUBLES(c->num_classes) + MLS_CLASS_FIELDS - 1) / MLS_CLASS_FIELDS : 0;

    const json_t *windows = json_object_get(obj, "windows");
    static const char *const default_windows[] = {"5m", "1h", "24h"};
    size_t nw = windows && !json_is_null(windows) ? json_array_size(windows) : 3;
    if (windows && !json_is_null(windows) &&
        (!json_is_array(windows) || nw < 1 || nw > MLS_MAX_WINDOWS))
        return fail(err, ML_EINVAL, "windows", "windows must be an array of 1 to %d durations",
                    MLS_MAX_WINDOWS);
    for (size_t i = 0; i < nw; i++) {
        char field[40];
        snprintf(field, sizeof(field), "windows[%zu]", i);
        const char *s = default_windows[i < 3 ? i : 0];
        if (windows && !json_is_null(windows)) {
            const json_t *v = json_array_get(windows, i);
            s = json_is_string(v) ? json_string_value(v) : "";
        }
        int64_t w = mls_duration_parse(s);
        if (w < MLS_BUCKET || w % MLS_BUCKET)
            return fail(err, ML_EINVAL, field,
                        "a window is a duration (\"5m\", \"1h\", \"24h\"): a whole number of "
                        "minutes, at least 1m");
        if (w > c->retention)
            return fail(err, ML_EINVAL, field, "window %s is longer than the retention", s);
        for (int j = 0; j < c->num_windows; j++)
            if (c->windows[j] == w)
                return fail(err, ML_EINVAL, field, "window %s is given twice", s);
        c->windows[c->num_windows] = w;
        if (!(c->window_names[c->num_windows] = strdup(s)))
            return fail(err, ML_ENOMEM, "", "out of memory");
        c->num_windows++;
    }

    const json_t *drift = json_object_get(obj, "drift");
    c->drift_z = 4;
    c->drift_min_weight = 100;
    if (drift && !json_is_null(drift)) {
        if (!json_is_object(drift))
            return fail(err, ML_EINVAL, "drift", "drift is an object {\"z\", \"min_weight\"}");
        json_object_foreach((json_t *)drift, key, val)
        {
            if (strcmp(key, "z") && strcmp(key, "min_weight") && strcmp(key, "reference"))
                return fail(err, ML_EINVAL, "drift",
                            "unknown field drift.%.40s (z, min_weight, reference)", key);
        }
        const json_t *z = json_object_get(drift, "z");
        if (z) {
            if (!json_is_number(z) || !(json_number_value(z) > 0) ||
                !isfinite(json_number_value(z)))
                return fail(err, ML_EINVAL, "drift.z", "drift.z must be a number > 0");
            c->drift_z = json_number_value(z);
        }
        const json_t *mw = json_object_get(drift, "min_weight");
        if (mw) {
            if (!json_is_number(mw) || !(json_number_value(mw) >= 0) ||
                !isfinite(json_number_value(mw)))
                return fail(err, ML_EINVAL, "drift.min_weight",
                            "drift.min_weight must be a number >= 0");
            c->drift_min_weight = json_number_value(mw);
        }
        /* A pinned baseline for every window instead of the one just before it. */
        const json_t *ref = json_object_get(drift, "reference");
        if (ref && !json_is_null(ref)) {
            double from, to;
            if (!json_is_object(ref) || json_object_size(ref) != 2 ||
                mls_time_parse(json_object_get(ref, "from"), &from) ||
                mls_time_parse(json_object_get(ref, "to"), &to) ||
                /* Kept as whole seconds and read back as numbers at a restart: checked as
                 * stored, or a state would not load (an offset before 1970, from and to in
                 * the same second). */
                !(floor(from) >= 0 && floor(to) < 253402300800.0 && floor(from) < floor(to)))
                return fail(err, ML_EINVAL, "drift.reference",
                            "drift.reference is {\"from\": T, \"to\": T}, times (Unix seconds or "
                            "RFC 3339) from 1970 to 9999 with from before to (in whole seconds)");
            c->reference = 1;
            c->reference_from = (int64_t)floor(from);
            c->reference_to = (int64_t)floor(to);
        }
    }

    const json_t *ec = json_object_get(obj, "export_classes");
    if (ec && !json_is_null(ec)) {
        if (!json_is_boolean(ec))
            return fail(err, ML_EINVAL, "export_classes", "export_classes must be true or false");
        c->export_classes = json_is_true(ec);
    }
    if (c->export_classes && !c->num_classes)
        return fail(err, ML_EINVAL, "export_classes",
                    "export_classes needs classes or num_classes");
    return check_params(c, err);
}

/* The normalized text: every field, in a fixed order. */
static char *normalize(const struct mls_mconfig *c)
{
    struct mlp_buf b = {0};
    mlp_buf_puts(&b, "{\"loss\":");
    mlp_buf_string(&b, c->loss);
    mlp_buf_puts(&b, ",\"params\":");
    char *params = c->params ? json_dumps(c->params, JSON_SORT_KEYS | JSON_COMPACT) : NULL;
    mlp_buf_puts(&b, params ? params : "{}");
    free(params);
    mlp_buf_puts(&b, ",\"reduction\":");
    mlp_buf_string(&b, c->reduction);
    mlp_buf_puts(&b, c->f64 ? ",\"dtype\":\"float64\"" : ",\"dtype\":\"float32\"");
    if (c->class_names) {
        mlp_buf_puts(&b, ",\"classes\":[");
        for (int64_t i = 0; i < c->num_classes; i++) {
            if (i)
                mlp_buf_puts(&b, ",");
            mlp_buf_string(&b, c->class_names[i]);
        }
        mlp_buf_puts(&b, "]");
    } else if (c->num_classes) {
        char n[32];
        snprintf(n, sizeof(n), ",\"num_classes\":%lld", (long long)c->num_classes);
        mlp_buf_puts(&b, n);
    }
    mlp_buf_puts(&b, ",\"slices\":[");
    for (int i = 0; i < c->num_slice_keys; i++) {
        if (i)
            mlp_buf_puts(&b, ",");
        mlp_buf_string(&b, c->slice_keys[i]);
    }
    mlp_buf_puts(&b, "],\"windows\":[");
    for (int i = 0; i < c->num_windows; i++) {
        if (i)
            mlp_buf_puts(&b, ",");
        mlp_buf_string(&b, c->window_names[i]);
    }
    char tail[200];
    int64_t r = c->retention;
    if (r % 86400 == 0)
        snprintf(tail, sizeof(tail), "],\"retention\":\"%lldd\"", (long long)(r / 86400));
    else
        snprintf(tail, sizeof(tail), "],\"retention\":\"%lldh\"", (long long)(r / 3600));
    mlp_buf_puts(&b, tail);
    if (c->late) {
        int64_t t = c->prediction_ttl;
        if (t % 86400 == 0)
            snprintf(tail, sizeof(tail), ",\"prediction_ttl\":\"%lldd\"", (long long)(t / 86400));
        else if (t % 3600 == 0)
            snprintf(tail, sizeof(tail), ",\"prediction_ttl\":\"%lldh\"", (long long)(t / 3600));
        else if (t % 60 == 0)
            snprintf(tail, sizeof(tail), ",\"prediction_ttl\":\"%lldm\"", (long long)(t / 60));
        else
            snprintf(tail, sizeof(tail), ",\"prediction_ttl\":\"%llds\"", (long long)t);
        mlp_buf_puts(&b, tail);
    }
    mlp_buf_puts(&b, ",\"drift\":{\"z\":");
    mlp_buf_number(&b, c->drift_z);
    mlp_buf_puts(&b, ",\"min_weight\":");
    mlp_buf_number(&b, c->drift_min_weight);
    if (c->reference) {
        char ref[96];
        snprintf(ref, sizeof(ref), ",\"reference\":{\"from\":%lld,\"to\":%lld}",
                 (long long)c->reference_from, (long long)c->reference_to);
        mlp_buf_puts(&b, ref);
    }
    mlp_buf_puts(&b,
                 c->export_classes ? "},\"export_classes\":true}" : "},\"export_classes\":false}");
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

int mls_mconfig_parse(const json_t *obj, const struct mls_monitor_limits *lim,
                      struct mls_mconfig *out, struct mlp_error *err)
{
    memset(out, 0, sizeof(*out));
    int rc = parse(obj, lim, out, err);
    if (!rc && !(out->json = normalize(out)))
        rc = fail(err, ML_ENOMEM, "", "out of memory");
    if (rc)
        mls_mconfig_free(out);
    return rc;
}

struct mls_monitor *mls_monitor_from_stored(const struct mls_registry *g, const char *name,
                                            const char *config, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *obj = json_loads(config ? config : "", 0, &jerr);
    struct mls_mconfig cfg;
    struct mlp_error perr;
    struct mls_monitor_limits lim = g->limits;
    lim.max_classes = UINT32_MAX;
    int prc = obj ? mls_mconfig_parse(obj, &lim, &cfg, &perr) : -1;
    json_decref(obj);
    if (prc) {
        snprintf(err, errlen, "monitor %.130s: its stored config no longer parses: %s", name,
                 obj ? perr.e.message : jerr.text);
        return NULL;
    }
    struct mls_monitor *m = mls_monitor_new(name, &cfg);
    if (!m) {
        mls_mconfig_free(&cfg);
        snprintf(err, errlen, "out of memory loading monitor %.130s", name);
    }
    return m;
}
