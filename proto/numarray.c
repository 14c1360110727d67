/*
 * numarray.c -- the numeric arrays of a request decoded straight from its text.
 *
 * jansson holds every number of a document as a json_t of its own (about 40 bytes and an
 * allocation each, against 8 for the double): a 1000x1000 request of JSON numbers costs
 * ~9x its body in memory and most of its time in malloc. mlp_parse_request (request.c)
 * therefore lets this scanner find the input tensors of a request (top-level "labels",
 * "logits", "predictions", "losses", "weights", "mask", given as nested arrays or as the
 * "data" of {"shape", "data"}; the same inside a batch's "requests"), decode each nested
 * array of numbers into doubles, and hand jansson the text with `[]` in their place. The
 * placeholders are then replaced by opaque nodes holding the doubles, which
 * mlp__tensor_decode reads as it would have read the arrays. The placeholder ends as the
 * array did, with a ']': jansson's lexer reads what follows a token differently after a
 * literal or a number, which it reads one byte past and ungets (a NUL byte there is
 * skipped: `null\0}` is a document, `[1]\0}` is not).
 *
 * The scanner never rejects anything: on whatever it does not decode exactly as the jansson
 * path would (a string or null element, an empty or ragged array, a rank above
 * ML_MAX_RANK, a number jansson refuses, a malformed token, an escaped key) it gives up, and
 * the request is parsed by jansson whole, as before: every error a request can get comes
 * from the one path that had it, with its line and column. See tests/fuzz/fuzz_jsonnum.c,
 * which feeds both paths the same bytes and requires the same request or the same error.
 *
 * The "b64" string of a {"shape", "dtype", "b64"} tensor is kept the same way, as the text
 * between its quotes, when it holds only base64's characters (no escape, nothing jansson
 * would change): jansson would copy its megabytes one byte at a time.
 *
 * Numbers: jansson (JSON_DECODE_INT_AS_REAL) reads each with strtod after replacing '.' by
 * the locale's decimal point (strconv.c, jsonp_strtod), refusing the document when strtod
 * overflows to +-HUGE_VAL with ERANGE ("real number overflow"); underflow is not an error
 * (1e-400 is 0, 4e-320 a subnormal). glibc's strtod rounds correctly, to nearest. The fast
 * path below is Clinger's: a significand of at most 2^53 and a power of ten of at most 10^22
 * are both exact doubles, so one multiplication or division rounds once, correctly, to the
 * same double. Anything else (more than 19 digits, larger exponents) goes to strtod on a
 * copy of the token, with jansson's locale handling: the same function on the same text.
 * The tensors stay float64, as the jansson path made them; a float32 evaluation casts each
 * double later, in the library, so a decimal between two floats is rounded twice (to the
 * double, then to the float: "1.000000059604644775390626" is 1.0f, not the nearest float
 * 1.0000001f) -- on both paths alike, which is what this file must keep.
 */
#include <errno.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* The opaque node: an object whose only key begins with a NUL byte (jansson refuses such a
 * key in a parsed document, so no request can forge one), holding a string of bytes: the
 * rank and dimensions as int64_t, then the doubles. */
static const char marker_key[] = "\0maskloss:f64";
#define MARKER_KEY_LEN (sizeof(marker_key) - 1)
/* The same for the text of a "b64" string, kept as it was: decode_b64 (request.c) reads it
 * as it would have read the string jansson made of it. */
static const char b64_marker_key[] = "\0maskloss:b64";
#define B64_MARKER_KEY_LEN (sizeof(b64_marker_key) - 1)
#define HEADER_SLOTS (1 + ML_MAX_RANK)
#define HEADER_BYTES (HEADER_SLOTS * sizeof(int64_t))

/* Longest number token handed to strtod; longer ones are left to jansson. */
#define MAX_TOKEN 128

struct mlp__region {
    size_t start, end; /* the array's bytes in the text, [start, end) */
    long batch_index;  /* the entry of "requests", or -1 for a request at the top */
    const char *key;   /* the input's name (a static string) */
    int in_data;       /* the array is the "data" of {"shape", "data"} under key */
    int is_b64;        /* not an array but the "b64" string of {"shape", "dtype", "b64"} */
    json_t *node;      /* the opaque node, made before jansson runs */
};

struct scanner {
    const char *text;
    size_t len, pos;
    struct mlp__region *regions;
    size_t num_regions, cap_regions;
    /* The array being decoded, growable: HEADER_SLOTS slots for the node's header (written
     * by make_node), then num_values values. */
    double *values;
    size_t num_values, cap_values;
};

static int is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static void skip_ws(struct scanner *s)
{
    while (s->pos < s->len && is_ws(s->text[s->pos]))
        s->pos++;
}

static int peek(const struct scanner *s)
{
    return s->pos < s->len ? (unsigned char)s->text[s->pos] : -1;
}

/* jansson's jsonp_strtod on a copy of the token: 0, or -1 where jansson fails. */
static int strtod_like_jansson(const char *token, size_t n, double *out)
{
    char buf[MAX_TOKEN + 1];
    if (n > MAX_TOKEN)
        return -1;
    memcpy(buf, token, n);
    buf[n] = '\0';
    const char *point = localeconv()->decimal_point;
    if (*point != '.') {
        char *dot = strchr(buf, '.');
        if (dot)
            *dot = *point;
    }
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (end != buf + n)
        return -1;
    if ((v == HUGE_VAL || v == -HUGE_VAL) && errno == ERANGE)
        return -1;
    *out = v;
    return 0;
}

/* One JSON number at s->pos (jansson's grammar, lex_scan_number: -?(0|[1-9][0-9]*)
 * (.[0-9]+)?([eE][+-]?[0-9]+)?), converted as jansson converts it. -1: not one, or one
 * jansson refuses. */
static int scan_number(struct scanner *s, double *out)
{
    static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    const char *t = s->text;
    size_t p = s->pos, start = p, len = s->len;
    int negative = 0, digits = 0, truncated = 0;
    long exp10 = 0;
    uint64_t w = 0;

    if (p < len && t[p] == '-') {
        negative = 1;
        p++;
    }
    if (p < len && t[p] == '0') {
        p++;
        if (p < len && is_digit(t[p]))
            return -1; /* a leading zero */
    } else if (p < len && is_digit(t[p])) {
        for (; p < len && is_digit(t[p]); p++) {
            if (digits < 19) {
                w = w * 10 + (uint64_t)(t[p] - '0');
                digits++;
            } else {
                truncated = 1;
            }
        }
    } else {
        return -1;
    }
    if (p < len && t[p] == '.') {
        p++;
        if (!(p < len && is_digit(t[p])))
            return -1;
        for (; p < len && is_digit(t[p]); p++) {
            if (w == 0 && t[p] == '0') {
                exp10--; /* a leading zero of the fraction: not a significant digit */
            } else if (digits < 19) {
                w = w * 10 + (uint64_t)(t[p] - '0');
                digits++;
                exp10--;
            } else {
                truncated = 1;
            }
        }
    }
    if (p < len && (t[p] == 'e' || t[p] == 'E')) {
        p++;
        int exp_negative = 0;
        long e = 0;
        if (p < len && (t[p] == '+' || t[p] == '-'))
            exp_negative = t[p++] == '-';
        if (!(p < len && is_digit(t[p])))
            return -1;
        for (; p < len && is_digit(t[p]); p++)
            if (e < 100000)
                e = e * 10 + (t[p] - '0');
        exp10 += exp_negative ? -e : e;
    }
    s->pos = p;
#if FLT_EVAL_METHOD == 0
    if (!truncated && w <= (UINT64_C(1) << 53) && exp10 >= -22 && exp10 <= 22) {
        double v = (double)w;
        v = exp10 < 0 ? v / pow10[-exp10] : v * pow10[exp10];
        *out = negative ? -v : v;
        return 0;
    }
#endif
    return strtod_like_jansson(t + start, p - start, out);
}

static int push_value(struct scanner *s, double v)
{
    if (HEADER_SLOTS + s->num_values >= s->cap_values) {
        size_t cap = s->cap_values ? 2 * s->cap_values : 4096;
        double *grown = realloc(s->values, cap * sizeof(double));
        if (!grown)
            return -1;
        s->values = grown;
        s->cap_values = cap;
    }
    s->values[HEADER_SLOTS + s->num_values++] = v;
    return 0;
}

/* A leaf: a number, true (1) or false (0) -- the leaves leaf_value (request.c) takes that
 * jansson does not hold as strings. */
static int scan_leaf(struct scanner *s)
{
    double v;
    const char *t = s->text + s->pos;
    size_t left = s->len - s->pos;
    if (left >= 4 && !memcmp(t, "true", 4)) {
        s->pos += 4;
        v = 1.0;
    } else if (left >= 5 && !memcmp(t, "false", 5)) {
        s->pos += 5;
        v = 0.0;
    } else if (scan_number(s, &v)) {
        return -1;
    }
    /* What follows a token must end it: "truex" or "1x" is not JSON. */
    int c = peek(s);
    if (!(c == ',' || c == ']' || is_ws((char)c)))
        return -1;
    return push_value(s, v);
}

/* A rectangular nested array of leaves at s->pos (a '['), of rank 1 to ML_MAX_RANK, no
 * dimension 0, into s->values; its shape as infer_shape (request.c) sees it: the sizes of
 * the first elements. -1 for anything else. */
static int scan_array(struct scanner *s, int *rank_out, int64_t *shape)
{
    int64_t count[ML_MAX_RANK];
    int known[ML_MAX_RANK] = {0};
    int depth = 0, rank = -1;
    s->num_values = 0;

open:
    /* s->pos is at a '[' */
    if (depth == ML_MAX_RANK || (rank >= 0 && depth >= rank))
        return -1; /* too deep, or an array where its siblings have numbers */
    count[depth++] = 0;
    s->pos++;
    skip_ws(s);
    if (peek(s) == ']')
        return -1; /* empty */
element:
    skip_ws(s);
    if (peek(s) == '[')
        goto open;
    if (rank < 0)
        rank = depth;
    else if (depth != rank)
        return -1; /* a number where its siblings have arrays */
    if (scan_leaf(s))
        return -1;
next:
    count[depth - 1]++;
    skip_ws(s);
    if (peek(s) == ',') {
        s->pos++;
        goto element;
    }
    if (peek(s) != ']')
        return -1;
    s->pos++;
    depth--;
    if (!known[depth]) {
        shape[depth] = count[depth];
        known[depth] = 1;
    } else if (count[depth] != shape[depth]) {
        return -1; /* ragged */
    }
    if (depth > 0)
        goto next;
    *rank_out = rank;
    return 0;
}

/* The opaque node {key: str}, taking str (which may be NULL): a new reference, or NULL
 * when out of memory. */
static json_t *wrap(const char *key, size_t key_len, json_t *str)
{
    json_t *node = str ? json_object() : NULL;
    if (!node) {
        json_decref(str);
        return NULL;
    }
    /* (_new: str is the object's, or released, even when this fails) */
    if (json_object_setn_new_nocheck(node, key, key_len, str)) {
        json_decref(node);
        return NULL;
    }
    return node;
}

/* The opaque node of s->values: a new reference, or NULL when out of memory. */
static json_t *make_node(struct scanner *s, int rank, const int64_t *shape)
{
    int64_t header[HEADER_SLOTS] = {rank};
    memcpy(header + 1, shape, sizeof(int64_t) * (size_t)rank);
    memcpy(s->values, header, HEADER_BYTES);
    return wrap(marker_key, MARKER_KEY_LEN,
                json_stringn_nocheck((const char *)s->values,
                                     HEADER_BYTES + s->num_values * sizeof(double)));
}

/* Skips a string at s->pos (a '"'): its end is the first quote after an even number of
 * backslashes (memchr: a base64 tensor is megabytes of one string). */
static int skip_string(struct scanner *s)
{
    size_t open = s->pos++;
    for (;;) {
        const char *q = memchr(s->text + s->pos, '"', s->len - s->pos);
        if (!q)
            return -1;
        size_t at = (size_t)(q - s->text), slashes = 0;
        while (at - slashes - 1 > open && s->text[at - slashes - 1] == '\\')
            slashes++;
        s->pos = at + 1;
        if (slashes % 2 == 0)
            return 0;
    }
}

/* Skips one value: a string, a container (strings inside respected), or the bytes of a
 * scalar. Not validated: jansson validates the text that reaches it. */
static int skip_value(struct scanner *s)
{
    int c = peek(s);
    if (c == '"')
        return skip_string(s);
    if (c == '[' || c == '{') {
        long depth = 0;
        while (s->pos < s->len) {
            c = s->text[s->pos];
            if (c == '"') {
                if (skip_string(s))
                    return -1;
                continue;
            }
            s->pos++;
            if (c == '[' || c == '{')
                depth++;
            else if ((c == ']' || c == '}') && --depth == 0)
                return 0;
        }
        return -1;
    }
    while (s->pos < s->len && !is_ws(s->text[s->pos]) && s->text[s->pos] != ',' &&
           s->text[s->pos] != ']' && s->text[s->pos] != '}')
        s->pos++;
    return 0;
}

/* A key at s->pos (a '"'): its bytes in [*key, *key + *n), or *key NULL when it has an
 * escape (compared with nothing). */
static int scan_key(struct scanner *s, const char **key, size_t *n)
{
    size_t start = ++s->pos;
    int escaped = 0;
    while (s->pos < s->len && s->text[s->pos] != '"') {
        if (s->text[s->pos] == '\\') {
            escaped = 1;
            s->pos++;
        }
        s->pos++;
    }
    if (s->pos >= s->len)
        return -1;
    *key = escaped ? NULL : s->text + start;
    *n = s->pos - start;
    s->pos++;
    skip_ws(s);
    if (peek(s) != ':')
        return -1;
    s->pos++;
    skip_ws(s);
    return 0;
}

static int key_is(const char *key, size_t n, const char *name)
{
    return key && strlen(name) == n && !memcmp(key, name, n);
}

/* The input named by a key, or NULL. */
static const char *input_named(const char *key, size_t n)
{
    for (int i = 0; i < MLP__NUM_INPUT_NAMES; i++)
        if (key_is(key, n, mlp__inputs[i].name))
            return mlp__inputs[i].name;
    return NULL;
}

/* Room for one more region: 0, or -1 when out of memory. */
static int grow_regions(struct scanner *s)
{
    if (s->num_regions < s->cap_regions)
        return 0;
    size_t cap = s->cap_regions ? 2 * s->cap_regions : 8;
    struct mlp__region *grown = realloc(s->regions, cap * sizeof(*grown));
    if (!grown)
        return -1;
    s->regions = grown;
    s->cap_regions = cap;
    return 0;
}

/* The array at s->pos made a region. 1 when it was, 0 when it is left to jansson (after
 * the array), -1 when out of memory. */
static int take_array(struct scanner *s, long batch_index, const char *input, int in_data)
{
    size_t start = s->pos;
    int rank;
    int64_t shape[ML_MAX_RANK];
    if (scan_array(s, &rank, shape)) {
        s->pos = start;
        return 0;
    }
    if (grow_regions(s))
        return -1;
    json_t *node = make_node(s, rank, shape);
    if (!node)
        return -1;
    s->regions[s->num_regions++] =
        (struct mlp__region){start, s->pos, batch_index, input, in_data, 0, node};
    return 1;
}

static int is_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/' || c == '=';
}

/* The "b64" string at s->pos made a region, when it holds only characters that jansson
 * keeps as they are and base64 uses (A-Z a-z 0-9 + / =): then its value is its text. Returns
 * as take_array does. */
static int take_b64(struct scanner *s, long batch_index, const char *input)
{
    size_t start = s->pos, p = start + 1;
    while (p < s->len && is_b64_char(s->text[p]))
        p++;
    if (!(p < s->len && s->text[p] == '"'))
        return 0;
    if (grow_regions(s))
        return -1;
    json_t *node = wrap(b64_marker_key, B64_MARKER_KEY_LEN,
                        json_stringn_nocheck(s->text + start + 1, p - start - 1));
    if (!node)
        return -1;
    s->pos = p + 1;
    s->regions[s->num_regions++] =
        (struct mlp__region){start, s->pos, batch_index, input, 1, 1, node};
    return 1;
}

static int scan_object(struct scanner *s, long batch_index, const char *input, int depth);

/* Scans a batch's "requests" at s->pos (a '['): each entry that is an object is a request.
 * Returns as scan_object does. */
static int scan_batch(struct scanner *s)
{
    s->pos++;
    for (long i = 0;; i++) {
        skip_ws(s);
        if (peek(s) == '{') {
            int rc = scan_object(s, i, NULL, 0);
            if (rc)
                return rc;
        } else if (skip_value(s)) {
            return 1;
        }
        skip_ws(s);
        if (peek(s) == ']') {
            s->pos++;
            return 0;
        }
        if (peek(s) != ',')
            return 1;
        s->pos++;
    }
}

/* Scans the members of an object at s->pos (a '{'): a request (depth 0), or the tensor
 * object of its input `input` (depth 1). Returns 0 after the object, 1 when the scan gave up
 * (the regions taken so far stay: jansson parses the rest, or refuses the text), -1 when out
 * of memory. */
static int scan_object(struct scanner *s, long batch_index, const char *input, int depth)
{
    s->pos++;
    skip_ws(s);
    if (peek(s) == '}') {
        s->pos++;
        return 0;
    }
    for (;;) {
        const char *key;
        size_t n;
        if (peek(s) != '"' || scan_key(s, &key, &n))
            return 1;
        int c = peek(s);
        const char *in = depth == 0 ? input_named(key, n) : NULL;
        int rc = 0; /* 1: the value was read, 0: it is still to skip */
        if (in && c == '[') {
            rc = take_array(s, batch_index, in, 0);
        } else if (in && c == '{') {
            rc = scan_object(s, batch_index, in, 1);
            if (rc)
                return rc;
            rc = 1;
        } else if (depth == 1 && key_is(key, n, "data") && c == '[') {
            rc = take_array(s, batch_index, input, 1);
        } else if (depth == 1 && key_is(key, n, "b64") && c == '"') {
            rc = take_b64(s, batch_index, input);
        } else if (depth == 0 && batch_index < 0 && key_is(key, n, "requests") && c == '[') {
            rc = scan_batch(s);
            if (rc)
                return rc;
            rc = 1;
        }
        if (rc < 0)
            return rc;
        if (rc == 0 && skip_value(s))
            return 1;
        skip_ws(s);
        if (peek(s) == '}') {
            s->pos++;
            return 0;
        }
        if (peek(s) != ',')
            return 1;
        s->pos++;
        skip_ws(s);
    }
}

void mlp__regions_free(struct mlp__regions *r)
{
    for (size_t i = 0; i < r->num; i++)
        json_decref(r->list[i].node);
    free(r->list);
    memset(r, 0, sizeof(*r));
}

int mlp__regions_scan(const char *text, size_t len, struct mlp__regions *out)
{
    struct scanner s = {.text = text, .len = len};
    memset(out, 0, sizeof(*out));
    skip_ws(&s);
    int rc = peek(&s) == '{' ? scan_object(&s, -1, NULL, 0) : 0;
    free(s.values);
    out->list = s.regions;
    out->num = s.num_regions;
    if (rc < 0) {
        mlp__regions_free(out);
        return -1;
    }
    return 0;
}

/* ---- Feeding jansson the text with the regions replaced ------------------------------- */

size_t mlp__regions_read(void *buffer, size_t buflen, void *data)
{
    struct mlp__reader *rd = data;
    char *out = buffer;
    size_t done = 0;
    while (done < buflen) {
        const struct mlp__region *next =
            rd->next < rd->regions->num ? &rd->regions->list[rd->next] : NULL;
        if (rd->in_placeholder) {
            /* the placeholder of the region rd->next */
            size_t n = 2 - rd->placeholder_pos;
            if (n > buflen - done)
                n = buflen - done;
            memcpy(out + done, (next->is_b64 ? "\"\"" : "[]") + rd->placeholder_pos, n);
            done += n;
            rd->placeholder_pos += n;
            if (rd->placeholder_pos == 2) {
                rd->in_placeholder = 0;
                rd->pos = next->end;
                rd->next++;
            }
            continue;
        }
        size_t stop = next ? next->start : rd->len;
        if (rd->pos == stop) {
            if (!next)
                break;
            rd->in_placeholder = 1;
            rd->placeholder_pos = 0;
            continue;
        }
        size_t n = stop - rd->pos;
        if (n > buflen - done)
            n = buflen - done;
        memcpy(out + done, rd->text + rd->pos, n);
        done += n;
        rd->pos += n;
    }
    return done;
}

int mlp__regions_place(json_t *root, struct mlp__regions *r)
{
    for (size_t i = 0; i < r->num; i++) {
        struct mlp__region *g = &r->list[i];
        json_t *req = root;
        if (g->batch_index >= 0)
            req = json_array_get(json_object_get(root, "requests"), (size_t)g->batch_index);
        json_t *parent = g->in_data ? json_object_get(req, g->key) : req;
        const char *name = g->is_b64 ? "b64" : g->in_data ? "data" : g->key;
        /* Where the scanner saw the value, jansson must have read the placeholder. */
        const json_t *placeholder = json_object_get(parent, name);
        if (!json_is_object(parent) ||
            !(g->is_b64 ? json_is_string(placeholder) && !json_string_length(placeholder)
                        : json_is_array(placeholder) && !json_array_size(placeholder)))
            return -1;
        if (json_object_set_new(parent, name, g->node)) {
            g->node = NULL;
            return -1;
        }
        g->node = NULL;
    }
    return 0;
}

int mlp__tensor_node(const json_t *v, int *rank, int64_t *shape, const double **data,
                     int64_t *numel)
{
    if (!json_is_object(v) || json_object_size(v) != 1)
        return 0;
    const json_t *str = json_object_getn(v, marker_key, MARKER_KEY_LEN);
    if (!json_is_string(str))
        return 0;
    const char *bytes = json_string_value(str);
    int64_t header[1 + ML_MAX_RANK];
    memcpy(header, bytes, HEADER_BYTES);
    *rank = (int)header[0];
    memcpy(shape, header + 1, sizeof(int64_t) * ML_MAX_RANK);
    *data = (const double *)(const void *)(bytes + HEADER_BYTES);
    *numel = (int64_t)((json_string_length(str) - HEADER_BYTES) / sizeof(double));
    return 1;
}

int mlp__b64_node(const json_t *v, const char **text, size_t *len)
{
    if (!json_is_object(v) || json_object_size(v) != 1)
        return 0;
    const json_t *str = json_object_getn(v, b64_marker_key, B64_MARKER_KEY_LEN);
    if (!json_is_string(str))
        return 0;
    *text = json_string_value(str);
    *len = json_string_length(str);
    return 1;
}
