/*
 * fuzz_monitor.c -- the monitors' decoders (server/monitor_config.c, server/monitor.c): a
 * monitor's config, durations, event times, slice combination keys and monitor names, linked
 * from the server's own objects.
 *
 * The first byte of the input picks the decoder (its value modulo 5); the rest is its input.
 * Text decoders see the rest up to its first NUL (they take C strings, as the server gives them).
 *
 *   0 config   the rest is a PUT /v1/monitors/{name} body: mlp_parse, then mls_mconfig_parse
 *              with the limits of a server started without flags (mls_config_parse's defaults).
 *              A config that parses:
 *                - its normalized text (cfg.json) is one JSON object with every key of the
 *                  contract, each equal to what the input gave or to the contract's default
 *                  (the monitors' contract: loss as given, params {} when absent, float32,
 *                  classes or num_classes as given, slices [], windows ["5m","1h","24h"],
 *                  retention 30d (the same seconds when given), drift {4, 100},
 *                  export_classes false);
 *                - the parsed fields keep the contract's bounds (windows: whole minutes, at
 *                  least 1m, at most the retention, distinct; retention: whole hours, 1h to
 *                  3650d; slice keys: label names, not reserved);
 *                - cfg.json parsed again gives the same cfg.json and the same reduction, both
 *                  as PUT reads a body (mlp_parse, the same limits) and as the store reloads
 *                  it after a restart (json_loads without flags, no class limit:
 *                  store_sqlite.c); a config the server accepted always comes back;
 *                - one small observation evaluated with the config (loss, reduction, params,
 *                  dtype) has a loss equal to ml_sums_loss of its sums under the config's
 *                  ratio, up to rounding: the figures of GET /v1/monitors/{name} are that
 *                  ratio of summed sums.
 *              A config that does not parse: a status of the project's table (never
 *              out_of_memory: no input here needs much), or the limit status, and a message.
 *              Refused for its params: none of a few small observations (three classes, each
 *              prediction input, dense and sparse labels, weights per element, per sample, per
 *              class or none) evaluates with those params (params are "as for /v1/loss": the
 *              config may refuse only params that no observation could use).
 *   1 duration mls_duration_parse returns -1 or a value >= 0; a value v is the text's
 *              [0-9]+[smhd] read independently (v / unit digits, v a multiple of the unit); text
 *              of that form up to 10^9 units is never refused.
 *   2 time     mls_time_parse_text gives the same answer twice, and accepts exactly the RFC 3339
 *              forms it documents (YYYY-MM-DD, T/t/space, hh:mm:ss, a fraction, Z/z or +-hh:mm,
 *              dates that exist from 1970 on, hours <= 23, minutes <= 59, seconds <= 60), with the
 * time timegm() and strtod() give (a leap second read as :59). The rest read as JSON goes to
 * mls_time_parse too: a number is taken as is within [0, year 10000), a string as
 * mls_time_parse_text takes it, anything else refused. 3 combo    the rest split at NUL bytes (at
 * most 16 parts; an empty part is an absent value, NULL): mls_combo_key gives a JSON array of as
 * many strings or nulls, which mls_combo_values reads back into values that are valid UTF-8 and
 * keep the ASCII bytes in order; values that are valid UTF-8 (RFC 3629, checked here) come back
 *              byte for byte, and their key is the key of what came back (canonical).
 *   4 name     mls_monitor_name_ok is [A-Za-z0-9_.-]{1,128}, checked here.
 */
/* timegm (glibc, the BSDs) is declared for _DEFAULT_SOURCE only: it is the independent
 * reference for RFC 3339 times. */
#define _DEFAULT_SOURCE 1

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "fuzz.h"
#include "monitor.h"

enum { MODE_CONFIG, MODE_DURATION, MODE_TIME, MODE_COMBO, MODE_NAME, NUM_MODES };

#define MAX_COMBO_VALUES 16

/* The server's limits with no flag given (set once). */
static struct mls_monitor_limits limits;
static uint64_t max_body_bytes;

static void start(void)
{
    static int started;
    if (started)
        return;
    started = 1;
    char *argv[] = {"fuzz_monitor", NULL};
    struct mls_config cfg;
    FUZZ_CHECK(mls_config_parse(&cfg, 1, argv, stdout, stderr) == MLS_CONFIG_OK,
               "the server's default flags do not parse");
    /* As main.c's open_state hands them to the registry. */
    limits = (struct mls_monitor_limits){cfg.max_monitors, cfg.max_classes, cfg.max_slice_values,
                                         cfg.rollup_after};
    max_body_bytes = cfg.max_body_bytes;
    /* The server's allocator for jansson (main.c): mlp_parse sees jansson's failures. */
    json_set_alloc_funcs(mlp_json_malloc, free);
}

/* The rest of the input as a C string (up to its first NUL); free it. */
static char *c_string(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, 0, size);
    size_t n = nul ? (size_t)(nul - data) : size;
    char *s = malloc(n + 1);
    FUZZ_CHECK(s != NULL, "out of memory");
    memcpy(s, data, n);
    s[n] = 0;
    return s;
}

/* ---- Independent readers ---------------------------------------------------------------- */

/* A duration [0-9]+[smhd] in seconds, *unit_out its unit; -1 when the text has another form,
 * -2 when its number passes 10^12 (then nothing is asserted but "refused or a multiple"). */
static long long duration_ref(const char *s, long long *unit_out)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || strlen(s) != n + 1)
        return -1;
    const char *units = "smhd";
    const char *u = strchr(units, s[n]);
    if (!u)
        return -1;
    static const long long unit_seconds[] = {1, 60, 3600, 86400};
    long long unit = unit_seconds[u - units];
    long long v = 0;
    *unit_out = unit;
    for (size_t i = 0; i < n; i++) {
        v = v * 10 + (s[i] - '0');
        if (v > 1000000000000LL)
            return -2;
    }
    return v * unit;
}

/* The length of the UTF-8 character at p (RFC 3629: shortest form, no surrogate, at most
 * U+10FFFF), or 0. Decodes the code point and checks its range, unlike proto/buf.c, which
 * checks the lead bytes. */
static int utf8_char(const unsigned char *p)
{
    int n;
    unsigned long cp, min;
    if (p[0] < 0x80)
        return p[0] ? 1 : 0;
    if ((p[0] & 0xE0) == 0xC0) {
        n = 2, cp = p[0] & 0x1F, min = 0x80;
    } else if ((p[0] & 0xF0) == 0xE0) {
        n = 3, cp = p[0] & 0x0F, min = 0x800;
    } else if ((p[0] & 0xF8) == 0xF0) {
        n = 4, cp = p[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

static int utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = utf8_char(p);
        if (!n)
            return 0;
        p += n;
    }
    return 1;
}

/* The ASCII bytes of s, in order (malloc'd). */
static char *ascii_of(const char *s)
{
    char *a = malloc(strlen(s) + 1), *q = a;
    FUZZ_CHECK(a != NULL, "out of memory");
    for (; *s; s++)
        if ((unsigned char)*s < 0x80)
            *q++ = *s;
    *q = 0;
    return a;
}

static int is_leap(long y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* n digits at s[*i], as a number; -1 when one is not a digit. */
static long read_digits(const char *s, size_t *i, int n)
{
    long v = 0;
    for (int k = 0; k < n; k++, (*i)++) {
        if (s[*i] < '0' || s[*i] > '9')
            return -1;
        v = v * 10 + (s[*i] - '0');
    }
    return v;
}

/* The RFC 3339 forms mls_time_parse_text documents, read here with timegm and strtod.
 * Returns 0 with *out set, or -1. */
static int time_ref(const char *s, double *out)
{
    size_t i = 0;
    long y = read_digits(s, &i, 4);
    if (y < 0 || s[i++] != '-')
        return -1;
    long mo = read_digits(s, &i, 2);
    if (mo < 0 || s[i++] != '-')
        return -1;
    long d = read_digits(s, &i, 2);
    if (d < 0 || !s[i] || !strchr("Tt ", s[i]))
        return -1;
    i++;
    long h = read_digits(s, &i, 2);
    if (h < 0 || s[i++] != ':')
        return -1;
    long mi = read_digits(s, &i, 2);
    if (mi < 0 || s[i++] != ':')
        return -1;
    long se = read_digits(s, &i, 2);
    if (se < 0)
        return -1;
    double frac = 0;
    if (s[i] == '.') {
        size_t n = strspn(s + i + 1, "0123456789");
        if (n == 0)
            return -1;
        /* "0." and the digits: strtod rounds correctly. */
        char *f = malloc(n + 3);
        FUZZ_CHECK(f != NULL, "out of memory");
        f[0] = '0';
        memcpy(f + 1, s + i, n + 1);
        f[n + 2] = 0;
        frac = strtod(f, NULL);
        free(f);
        i += n + 1;
    }
    long offset = 0;
    if (s[i] == 'Z' || s[i] == 'z') {
        i++;
    } else if (s[i] == '+' || s[i] == '-') {
        long sign = s[i++] == '-' ? -1 : 1;
        long oh = read_digits(s, &i, 2);
        if (oh < 0 || s[i++] != ':')
            return -1;
        long om = read_digits(s, &i, 2);
        if (om < 0 || oh > 23 || om > 59)
            return -1;
        offset = sign * (oh * 3600 + om * 60);
    } else {
        return -1;
    }
    if (s[i])
        return -1;
    static const int month_days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (mo < 1 || mo > 12 || h > 23 || mi > 59 || se > 60)
        return -1;
    if (d < 1 || d > month_days[mo - 1] + (mo == 2 && is_leap(y)))
        return -1;
    if (y < 1970)
        return -1; /* before Unix time: refused, as numbers below 0 are */
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = (int)(y - 1900);
    tm.tm_mon = (int)(mo - 1);
    tm.tm_mday = (int)d;
    tm.tm_hour = (int)h;
    tm.tm_min = (int)mi;
    tm.tm_sec = (int)(se > 59 ? 59 : se);
    time_t t = timegm(&tm);
    *out = (double)((long long)t - offset) + frac;
    return 0;
}

/* ---- 1. Durations ----------------------------------------------------------------------- */

static void check_duration(const char *s)
{
    long long v = mls_duration_parse(s);
    long long unit = 0;
    long long want = duration_ref(s, &unit);
    FUZZ_CHECK(v >= -1, "mls_duration_parse(\"%s\") = %lld", s, v);
    if (v >= 0) {
        FUZZ_CHECK(want != -1, "\"%s\" is no duration, read as %lld s", s, v);
        FUZZ_CHECK(v % unit == 0, "\"%s\": %lld s is not a multiple of %lld s", s, v, unit);
        FUZZ_CHECK(want == -2 || v == want, "\"%s\": %lld s, %lld s expected", s, v, want);
    } else {
        FUZZ_CHECK(want < 0 || want / unit > 1000000000, "\"%s\" (%lld s) refused", s, want);
    }
}

/* ---- 2. Times --------------------------------------------------------------------------- */

static void check_time_text(const char *s)
{
    double a = 0, b = 0, want = 0;
    int ra = mls_time_parse_text(s, &a);
    int rb = mls_time_parse_text(s, &b);
    FUZZ_CHECK(ra == rb && (ra || !memcmp(&a, &b, sizeof(a))), "\"%s\": %d %.17g, then %d %.17g", s,
               ra, a, rb, b);
    FUZZ_CHECK(ra == 0 || ra == -1, "\"%s\": returned %d", s, ra);
    int rw = time_ref(s, &want);
    FUZZ_CHECK(ra == rw, "\"%s\": %s, expected %s", s, ra ? "refused" : "accepted",
               rw ? "refused" : "accepted");
    if (ra)
        return;
    /* The fraction's digits are summed one by one: a few ulp of the sum. */
    double tol = 4 * (nextafter(fabs(want), INFINITY) - fabs(want)) + 1e-9;
    FUZZ_CHECK(fabs(a - want) <= tol, "\"%s\": %.17g, expected %.17g", s, a, want);
}

static void check_time_json(const uint8_t *data, size_t size)
{
    json_t *v;
    struct mlp_error err;
    if (mlp_parse((const char *)data, size, &v, &err))
        return;
    double out = -12345, want;
    int rc = mls_time_parse(v, &out);
    if (json_is_number(v)) {
        double t = json_number_value(v);
        int ok = t >= 0 && t < 253402300800.0; /* 10000-01-01T00:00:00Z */
        FUZZ_CHECK(rc == (ok ? 0 : -1), "the number %.17g: %d", t, rc);
        FUZZ_CHECK(!ok || !memcmp(&out, &t, sizeof(t)), "the number %.17g read as %.17g", t, out);
    } else if (json_is_string(v)) {
        int rw = mls_time_parse_text(json_string_value(v), &want);
        FUZZ_CHECK(rc == rw && (rc || !memcmp(&out, &want, sizeof(out))),
                   "the string \"%s\": %d %.17g, as text %d %.17g", json_string_value(v), rc, out,
                   rw, want);
    } else {
        FUZZ_CHECK(rc == -1, "a JSON value of type %d taken as a time", json_typeof(v));
    }
    json_decref(v);
}

/* ---- 3. Combination keys ---------------------------------------------------------------- */

static void check_combo(const uint8_t *data, size_t size)
{
    /* Parts separated by NUL bytes, each its own C string. */
    char *copy = malloc(size + 1);
    FUZZ_CHECK(copy != NULL, "out of memory");
    memcpy(copy, data, size);
    copy[size] = 0;
    char *values[MAX_COMBO_VALUES];
    int n = 0;
    for (size_t i = 0; i <= size && n < MAX_COMBO_VALUES;) {
        size_t len = strlen(copy + i);
        values[n++] = len ? copy + i : NULL;
        i += len + 1;
    }
    char *key = mls_combo_key(values, n);
    FUZZ_CHECK(key != NULL, "mls_combo_key: out of memory");
    json_t *doc = fuzz_parse_json(key, strlen(key), "the combination key");
    FUZZ_CHECK(json_is_array(doc) && json_array_size(doc) == (size_t)n,
               "the key is not an array of %d: %s", n, key);
    for (int k = 0; k < n; k++)
        FUZZ_CHECK(values[k] ? json_is_string(json_array_get(doc, (size_t)k))
                             : json_is_null(json_array_get(doc, (size_t)k)),
                   "value %d: the key holds another type: %s", k, key);
    json_decref(doc);

    char *back[MAX_COMBO_VALUES];
    FUZZ_CHECK(mls_combo_values(key, n, back) == 0, "the key does not read back: %s", key);
    int all_valid = 1;
    for (int k = 0; k < n; k++) {
        FUZZ_CHECK((values[k] == NULL) == (back[k] == NULL), "value %d: null once only: %s", k,
                   key);
        if (!values[k])
            continue;
        FUZZ_CHECK(utf8_valid(back[k]), "value %d reads back as text that is not UTF-8: %s", k,
                   key);
        if (utf8_valid(values[k])) {
            FUZZ_CHECK(!strcmp(values[k], back[k]), "value %d: \"%s\" reads back as \"%s\"", k,
                       values[k], back[k]);
        } else {
            all_valid = 0;
            char *a = ascii_of(values[k]), *b = ascii_of(back[k]);
            FUZZ_CHECK(!strcmp(a, b), "value %d: its ASCII \"%s\" reads back as \"%s\"", k, a, b);
            free(a);
            free(b);
        }
    }
    if (all_valid) {
        char *again = mls_combo_key(back, n);
        FUZZ_CHECK(again != NULL, "mls_combo_key: out of memory");
        FUZZ_CHECK(!strcmp(again, key), "the key is not canonical: %s, then %s", key, again);
        free(again);
    }
    for (int k = 0; k < n; k++)
        free(back[k]);
    free(key);
    free(copy);
}

/* ---- 4. Names --------------------------------------------------------------------------- */

static void check_name(const char *s)
{
    size_t n = strlen(s);
    int want = n >= 1 && n <= 128;
    for (size_t i = 0; want && i < n; i++)
        want = (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
               (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '.' || s[i] == '-';
    FUZZ_CHECK(mls_monitor_name_ok(s) == want, "\"%s\": %d", s, mls_monitor_name_ok(s));
}

/* ---- 0. Configs ------------------------------------------------------------------------- */

/* The input's value for key, or NULL when absent or null (both mean "the default"). */
static const json_t *given(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return v && !json_is_null(v) ? v : NULL;
}

/* The normalized member equals what was given, or the default (JSON text) when nothing was. */
static void check_member(const json_t *in, const json_t *norm, const char *key,
                         const char *default_json, const char *text)
{
    const json_t *want = given(in, key);
    json_t *def = NULL;
    if (!want) {
        def = json_loads(default_json, JSON_DECODE_ANY, NULL);
        FUZZ_CHECK(def != NULL, "bad default %s", default_json);
        want = def;
    }
    const json_t *got = json_object_get(norm, key);
    /* Numbers: the input's are reals (mlp_parse), the text's may read as integers. */
    int same = json_is_number(want) && json_is_number(got)
                   ? json_number_value(want) == json_number_value(got)
                   : json_equal((json_t *)want, (json_t *)got);
    FUZZ_CHECK(same, "normalized \"%s\" is not what was given or its default: %s", key, text);
    json_decref(def);
}

static int label_ok(const char *s)
{
    static const char *const reserved[] = {"monitor", "class", "le", "quantile", "job", "instance"};
    size_t n = strlen(s);
    if (n < 1 || n > 64 || strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_") < 1 ||
        strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_0123456789") != n)
        return 0;
    for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
        if (!strcmp(s, reserved[i]))
            return 0;
    return 1;
}

static void check_fields(const struct mls_mconfig *c, const json_t *in, const json_t *norm)
{
    static const char *const keys[] = {"loss",      "params", "reduction",
                                       "dtype",     "slices", "windows",
                                       "retention", "drift",  "export_classes"};
    const char *text = c->json;
    FUZZ_CHECK(json_is_object(norm), "the normalized config is not an object: %s", text);
    size_t want_keys = sizeof(keys) / sizeof(keys[0]);
    for (size_t i = 0; i < want_keys; i++)
        FUZZ_CHECK(json_object_get(norm, keys[i]) != NULL, "no \"%s\": %s", keys[i], text);
    const json_t *classes = json_object_get(norm, "classes");
    const json_t *num = json_object_get(norm, "num_classes");
    FUZZ_CHECK(!(classes && num), "both classes and num_classes: %s", text);
    want_keys += classes || num;
    /* prediction_ttl: shown exactly for the monitors that take predictions, as a duration
     * that reads back as the one kept, within the retention. */
    const json_t *ttl = json_object_get(norm, "prediction_ttl");
    FUZZ_CHECK(!ttl == !c->late, "prediction_ttl shown %d, late %d: %s", ttl != NULL, c->late,
               text);
    if (ttl) {
        want_keys++;
        FUZZ_CHECK(json_is_string(ttl) &&
                       mls_duration_parse(json_string_value(ttl)) == c->prediction_ttl &&
                       c->prediction_ttl >= 60 && c->prediction_ttl <= c->retention - 3600,
                   "prediction_ttl: %s", text);
    }
    FUZZ_CHECK(json_object_size(norm) == want_keys, "unexpected keys: %s", text);

    check_member(in, norm, "loss", "null", text);
    check_member(in, norm, "params", "{}", text);
    check_member(in, norm, "dtype", "\"float32\"", text);
    check_member(in, norm, "slices", "[]", text);
    check_member(in, norm, "windows", "[\"5m\",\"1h\",\"24h\"]", text);
    check_member(in, norm, "export_classes", "false", text);
    FUZZ_CHECK(json_is_string(json_object_get(norm, "reduction")), "reduction: %s", text);
    if (given(in, "classes")) {
        check_member(in, norm, "classes", "null", text);
        FUZZ_CHECK(!num, "num_classes beside classes: %s", text);
    } else if (given(in, "num_classes")) {
        check_member(in, norm, "num_classes", "null", text);
        FUZZ_CHECK(!classes, "classes beside num_classes: %s", text);
    } else {
        FUZZ_CHECK(!classes && !num, "classes where none were given: %s", text);
    }
    const json_t *drift_in = given(in, "drift");
    const json_t *drift = json_object_get(norm, "drift");
    FUZZ_CHECK(json_is_object(drift) && json_object_size(drift) == 2, "drift: %s", text);
    json_t *none = json_object();
    FUZZ_CHECK(none != NULL, "out of memory");
    check_member(drift_in ? drift_in : none, drift, "z", "4", text);
    check_member(drift_in ? drift_in : none, drift, "min_weight", "100", text);
    json_decref(none);

    long long unit;
    const json_t *ret = json_object_get(norm, "retention");
    FUZZ_CHECK(json_is_string(ret), "retention: %s", text);
    long long r = duration_ref(json_string_value(ret), &unit);
    long long r_in = given(in, "retention")
                         ? duration_ref(json_string_value(given(in, "retention")), &unit)
                         : 30 * 86400;
    FUZZ_CHECK(r == c->retention && r == r_in, "retention %lld s, given %lld s: %s",
               (long long)c->retention, r_in, text);
    FUZZ_CHECK(r % 3600 == 0 && r >= 3600 && r <= 3650LL * 86400, "retention %lld s: %s", r, text);

    FUZZ_CHECK(c->num_windows >= 1 && c->num_windows <= MLS_MAX_WINDOWS &&
                   (size_t)c->num_windows == json_array_size(json_object_get(norm, "windows")),
               "%d windows: %s", c->num_windows, text);
    for (int i = 0; i < c->num_windows; i++) {
        long long w = duration_ref(c->window_names[i], &unit);
        FUZZ_CHECK(w == c->windows[i] && w >= 60 && w % 60 == 0 && w <= c->retention,
                   "window %d (%s) is %lld s: %s", i, c->window_names[i], (long long)c->windows[i],
                   text);
        for (int j = 0; j < i; j++)
            FUZZ_CHECK(c->windows[j] != w, "window %s twice: %s", c->window_names[i], text);
    }
    FUZZ_CHECK(c->num_slice_keys >= 0 && c->num_slice_keys <= MLS_MAX_SLICE_KEYS, "slices: %s",
               text);
    for (int i = 0; i < c->num_slice_keys; i++) {
        FUZZ_CHECK(label_ok(c->slice_keys[i]), "slice key \"%s\": %s", c->slice_keys[i], text);
        for (int j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(c->slice_keys[i], c->slice_keys[j]), "slice key twice: %s", text);
    }
    FUZZ_CHECK(c->num_classes >= 0 && c->num_classes <= (int64_t)limits.max_classes,
               "%lld classes: %s", (long long)c->num_classes, text);
    FUZZ_CHECK(!c->export_classes || c->num_classes, "export_classes without classes: %s", text);
    FUZZ_CHECK(c->drift_z > 0 && isfinite(c->drift_z) && c->drift_min_weight >= 0 &&
                   isfinite(c->drift_min_weight),
               "drift: %s", text);
    /* A loss per sample has classes only in a monitor of predictions (late labels), whose
     * class slots then hold the late part. */
    FUZZ_CHECK(!c->num_classes || c->ratio.elementwise ||
                   (c->late != MLS_LATE_NONE && c->late != MLS_LATE_ELEMENTWISE),
               "classes of a loss per sample: %s", text);
    FUZZ_CHECK(c->late_slots == (c->late ? (MLS_LATE_DOUBLES(c->num_classes) + 4) / 5 : 0),
               "late slots %lld: %s", (long long)c->late_slots, text);
}

/* cfg.json read again, as PUT reads a body (store = 0) or as the store reloads it (1). */
static void check_reparse(const struct mls_mconfig *c, int store)
{
    json_t *root;
    struct mlp_error err;
    struct mls_monitor_limits lim = limits;
    const char *how = store ? "the store's reload" : "PUT";
    if (store) {
        json_error_t je;
        root = json_loads(c->json, 0, &je);
        FUZZ_CHECK(root != NULL, "%s: not JSON (%s): %s", how, je.text, c->json);
        lim.max_classes = UINT32_MAX;
    } else {
        int rc = mlp_parse(c->json, strlen(c->json), &root, &err);
        FUZZ_CHECK(rc == 0, "%s: not JSON (%s): %s", how, err.e.message, c->json);
    }
    struct mls_mconfig again;
    int rc = mls_mconfig_parse(root, &lim, &again, &err);
    json_decref(root);
    FUZZ_CHECK(rc == 0, "%s: the normalized config is refused (%d, %s: %s): %s", how, rc,
               err.e.field, err.e.message, c->json);
    FUZZ_CHECK(!strcmp(again.json, c->json), "%s: normalized again, it changes:\n%s\n%s", how,
               c->json, again.json);
    FUZZ_CHECK(!strcmp(again.reduction, c->reduction) &&
                   !strcmp(again.ratio.reduction, c->ratio.reduction) &&
                   again.ratio.divides == c->ratio.divides &&
                   again.ratio.plain_division == c->ratio.plain_division &&
                   again.ratio.unweighted_is_nan == c->ratio.unweighted_is_nan &&
                   again.ratio.elementwise == c->ratio.elementwise,
               "%s: another ratio: %s", how, c->json);
    mls_mconfig_free(&again);
}

/* What an observation takes from a config (observe_eval): loss, reduction (NULL: the loss's
 * default), dtype, params (or NULL); and the ratio its figures apply. */
struct obs_config {
    const char *loss, *reduction;
    int f64;
    const json_t *params;
    struct ml_ratio ratio;
    const char *text; /* for messages */
};

/* Two rows of three classes (dense labels, then sparse ones), weights with a zero, then without
 * weights: the prediction inputs, label forms and weight shapes of the catalogue's losses. */
static const char *const observations[] = {
    "{\"logits\":[[0.5,-1.25,2],[0,3,-0.5]],\"labels\":[[1,0,1],[0,1,0]],"
    "\"weights\":[[1,0,2],[0.5,1,1]]}",
    "{\"predictions\":[[0.25,0.5,0.75],[0.9,0.1,0.5]],\"labels\":[[1,0,1],[0,1,0]],"
    "\"weights\":[[1,0,2],[0.5,1,1]]}",
    "{\"losses\":[[0.25,1.5,0],[2,0.125,1]],\"weights\":[[1,0,2],[0.5,1,1]]}",
    "{\"logits\":[[0.5,-1.25,2],[0,3,-0.5]],\"labels\":[2,0],\"weights\":[1,0.5]}",
    "{\"logits\":[[0.5,-1.25,2],[0,3,-0.5]],\"labels\":[[0,0,1],[1,0,0]],\"weights\":[1,0.5]}",
    /* torch's cross_entropy: weights per class */
    "{\"logits\":[[0.5,-1.25,2],[0,3,-0.5]],\"labels\":[2,0],\"weights\":[1,0,2]}",
    "{\"logits\":[[0.5,-1.25,2],[0,3,-0.5]],\"labels\":[2,0]}",
    "{\"logits\":[[0.5,-1.25,2],[0,3,-0.5]],\"labels\":[[1,0,1],[0,1,0]]}",
};
#define OBSERVATION_CLASSES 3

/* Evaluates one observation with the config, as observe_eval builds it; 0 when it evaluated,
 * with *res filled (the caller frees it). */
static int observe_one(const struct obs_config *c, const char *tensors, struct ml_result *res)
{
    json_t *req = json_loads(tensors, JSON_DECODE_INT_AS_REAL, NULL);
    FUZZ_CHECK(req != NULL, "bad observation %s", tensors);
    json_object_set_new(req, "loss", json_string(c->loss));
    if (c->reduction)
        json_object_set_new(req, "reduction", json_string(c->reduction));
    json_object_set_new(req, "dtype", json_string(c->f64 ? "float64" : "float32"));
    if (c->params)
        json_object_set(req, "params", (json_t *)c->params);
    struct mlp_request r;
    struct mlp_error err;
    int rc = mlp_request_decode(req, &r, &err);
    json_decref(req);
    if (rc)
        return -1;
    r.req.outputs = ML_OUT_LOSS | ML_OUT_SUMS;
    r.req.max_elements = 64;
    rc = ml_eval(&r.req, res, &err.e);
    mlp_request_free(&r);
    return rc ? -1 : 0;
}

/* An accepted config: the first observation that evaluates has the loss its sums give. */
static void check_observation(const struct obs_config *c)
{
    for (size_t i = 0; i < sizeof(observations) / sizeof(observations[0]); i++) {
        struct ml_result res;
        if (observe_one(c, observations[i], &res))
            continue;
        double want = res.loss, got = ml_sums_loss(&c->ratio, &res.sums);
        int same = (isnan(want) && isnan(got)) || (isinf(want) && got == want) ||
                   fabs(got - want) <= 1e-9 * fabs(want);
        FUZZ_CHECK(same,
                   "an observation's loss is %.17g, ml_sums_loss of its sums %.17g "
                   "(weighted_sum %.17g, denominator %.17g): %s with %s",
                   want, got, res.sums.weighted_sum, res.sums.denominator, c->text,
                   observations[i]);
        ml_result_free(&res);
        return;
    }
}

/* Whether every key of a config object is one of the contract's (else an unknown key, which
 * may well begin with "params.", is what was refused). */
static int only_known_keys(const json_t *in)
{
    static const char *const known[] = {"loss",      "params",      "reduction",     "dtype",
                                        "classes",   "num_classes", "slices",        "windows",
                                        "retention", "drift",       "export_classes"};
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)in, key, val)
    {
        size_t i = 0;
        while (i < sizeof(known) / sizeof(known[0]) && strcmp(key, known[i]))
            i++;
        if (i == sizeof(known) / sizeof(known[0]))
            return 0;
        (void)val;
    }
    return 1;
}

/* A config refused for its params: the params are wrong only if no observation can use them,
 * so none of ours evaluates with them (when the config's classes, if any, are as many as
 * theirs: an observation of another count would be refused anyway). */
static void check_params_refusal(const json_t *in, const struct mlp_error *err, const char *body,
                                 size_t len)
{
    const json_t *classes = given(in, "classes"), *num = given(in, "num_classes");
    if ((classes && json_array_size(classes) != OBSERVATION_CLASSES) ||
        (num && json_number_value(num) != OBSERVATION_CLASSES))
        return;
    struct obs_config c;
    struct ml_error e;
    memset(&c, 0, sizeof(c));
    /* Loss, reduction and dtype were checked before the params. */
    c.loss = json_string_value(json_object_get(in, "loss"));
    c.reduction = given(in, "reduction") ? json_string_value(given(in, "reduction")) : NULL;
    c.f64 = given(in, "dtype") && !strcmp(json_string_value(given(in, "dtype")), "float64");
    c.params = given(in, "params");
    FUZZ_CHECK(c.loss && ml_reduction_ratio(c.loss, c.reduction, &c.ratio, &e) == 0,
               "refused for %s, but its loss or reduction is wrong: %.*s", err->e.field, (int)len,
               body);
    for (size_t i = 0; i < sizeof(observations) / sizeof(observations[0]); i++) {
        struct ml_result res;
        int rc = observe_one(&c, observations[i], &res);
        if (!rc)
            ml_result_free(&res);
        FUZZ_CHECK(rc != 0,
                   "the config is refused for %s (%s), yet an observation with its params "
                   "evaluates: %.*s with %s",
                   err->e.field, err->e.message, (int)len, body, observations[i]);
    }
}

static void check_config(const uint8_t *data, size_t size)
{
    json_t *root;
    struct mlp_error err;
    if (size > max_body_bytes)
        return; /* 413 before any parsing */
    int rc = mlp_parse((const char *)data, size, &root, &err);
    if (rc) {
        FUZZ_CHECK(rc == MLP_EMALFORMED, "mlp_parse: %d", rc);
        return;
    }
    struct mls_mconfig c;
    memset(&err, 0, sizeof(err));
    rc = mls_mconfig_parse(root, &limits, &c, &err);
    if (rc) {
        FUZZ_CHECK(rc != ML_ENOMEM, "out_of_memory for a config");
        FUZZ_CHECK(rc == MLS_CFG_LIMIT || (rc < 0 && fuzz_known_code(mlp_status_name(rc))),
                   "mls_mconfig_parse: %d", rc);
        FUZZ_CHECK(memchr(err.e.message, 0, sizeof(err.e.message)) && err.e.message[0],
                   "a refusal without a message");
        FUZZ_CHECK(memchr(err.e.field, 0, sizeof(err.e.field)) != NULL, "an unended field");
        if (!strncmp(err.e.field, "params.", 7) && only_known_keys(root))
            check_params_refusal(root, &err, (const char *)data, size);
        json_decref(root);
        return;
    }
    FUZZ_CHECK(c.json != NULL, "no normalized config");
    json_t *norm = fuzz_parse_json(c.json, strlen(c.json), "the normalized config");
    check_fields(&c, root, norm);
    json_decref(norm);
    json_decref(root);
    check_reparse(&c, 0);
    check_reparse(&c, 1);
    struct obs_config oc = {c.loss, c.reduction, c.f64, c.params, c.ratio, c.json};
    check_observation(&oc);
    mls_mconfig_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    start();
    if (size < 1)
        return 0;
    int mode = data[0] % NUM_MODES;
    data++, size--;
    if (mode == MODE_CONFIG) {
        check_config(data, size);
    } else if (mode == MODE_COMBO) {
        check_combo(data, size);
    } else {
        char *s = c_string(data, size);
        if (mode == MODE_DURATION)
            check_duration(s);
        else if (mode == MODE_TIME)
            check_time_text(s);
        else
            check_name(s);
        free(s);
        if (mode == MODE_TIME)
            check_time_json(data, size);
    }
    return 0;
}
