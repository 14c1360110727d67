/*
 * test_golden.c -- the verified cases of tests/data/golden.json through the JSON protocol.
 *
 * Each case is a request (the case minus its metadata) with the expected loss, the
 * expected pointwise loss, an expected error (with the code maskloss must answer), or an
 * expected NaN. The values come from
 * upstream tests and an independent float64 recomputation (see the file's _meta and each
 * case's `source`), never from maskloss.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mlp.h"

#define GOLDEN "tests/data/golden.json"

static const char *const meta_keys[] = {
    "id",
    "source",
    "notes",
    "expected",
    "expected_per_element",
    "expected_error",
    "expected_code",
    "expected_special",
    "tolerance",
    "upstream",
    "computed_expected",
    "computed_error",
};

static int is_meta(const char *key)
{
    for (size_t i = 0; i < sizeof(meta_keys) / sizeof(meta_keys[0]); i++)
        if (!strcmp(meta_keys[i], key))
            return 1;
    return 0;
}

static double num(const json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!strcmp(s, "NaN"))
            return NAN;
        if (!strcmp(s, "Infinity"))
            return INFINITY;
        if (!strcmp(s, "-Infinity"))
            return -INFINITY;
    }
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static void flatten(const json_t *v, double *out, size_t *n, size_t cap)
{
    if (json_is_object(v))
        v = json_object_get(v, "data");
    if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++)
            flatten(json_array_get(v, i), out, n, cap);
        return;
    }
    if (*n < cap)
        out[*n] = num(v);
    (*n)++;
}

struct tol {
    double rtol, atol;
};

static int close_to(double got, double want, struct tol t)
{
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= t.atol + t.rtol * fabs(want);
}

static struct tol tolerance_of(const json_t *c)
{
    struct tol t = {1e-9, 1e-12};
    const json_t *tt = json_object_get(c, "tolerance");
    if (tt) {
        if (json_object_get(tt, "rtol"))
            t.rtol = json_number_value(json_object_get(tt, "rtol"));
        else
            t.rtol = 0;
        if (json_object_get(tt, "atol"))
            t.atol = json_number_value(json_object_get(tt, "atol"));
        else
            t.atol = 0;
    }
    const json_t *dt = json_object_get(c, "dtype");
    if (dt && !strcmp(json_string_value(dt), "float32")) {
        t.rtol = fmax(t.rtol, 2e-5);
        t.atol = fmax(t.atol, 1e-6);
    }
    return t;
}

static int compare_tensor(const char *id, const char *what, const json_t *got, const json_t *want,
                          struct tol t)
{
    enum { CAP = 4096 };
    static double g[CAP], w[CAP];
    size_t ng = 0, nw = 0;
    flatten(got, g, &ng, CAP);
    flatten(want, w, &nw, CAP);
    if (ng != nw) {
        print_message("%s: %s has %zu elements, expected %zu\n", id, what, ng, nw);
        return 1;
    }
    for (size_t i = 0; i < nw && i < CAP; i++)
        if (!close_to(g[i], w[i], t)) {
            print_message("%s: %s[%zu] = %.17g, expected %.17g\n", id, what, i, g[i], w[i]);
            return 1;
        }
    return 0;
}

/* Runs one case; returns the number of failures (0 or 1). */
static int run_case(const json_t *c)
{
    const char *id = json_string_value(json_object_get(c, "id"));
    json_t *req = json_object();
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)c, key, val)
    {
        if (!is_meta(key))
            json_object_set(req, key, val);
    }
    const json_t *red = json_object_get(req, "reduction");
    if (red && !strcmp(json_string_value(red), "ELEMENTWISE"))
        json_object_del(req, "reduction");
    if (json_object_get(c, "expected_per_element"))
        json_object_set_new(req, "outputs", json_pack("[ss]", "loss", "per_element"));

    char *text = json_dumps(req, 0);
    json_decref(req);
    struct mlp_buf out = {0};
    int rc = mlp_eval_text(text, strlen(text), 0, &out);
    free(text);
    json_t *body = json_loads(out.data, 0, NULL);
    int failed = 0;
    if (!body) {
        print_message("%s: the response is not JSON: %s\n", id, out.data);
        failed = 1;
    } else if (json_object_get(c, "expected_error") &&
               !json_is_null(json_object_get(c, "expected_error"))) {
        /* The error the case means, by its code: not just any error. */
        const char *want_code = json_string_value(json_object_get(c, "expected_code"));
        const char *got_code = json_string_value(json_object_get(body, "code"));
        if (!want_code) {
            print_message("%s: the case has expected_error but no expected_code\n", id);
            failed = 1;
        } else if (rc == 0 || !json_object_get(body, "error") || !got_code) {
            print_message("%s: expected an error (%s), got %s\n", id,
                          json_string_value(json_object_get(c, "expected_error")), out.data);
            failed = 1;
        } else if (strcmp(got_code, want_code) || strcmp(mlp_status_name(rc), want_code)) {
            print_message("%s: error code %s (status %s), expected %s: %s\n", id, got_code,
                          mlp_status_name(rc), want_code, out.data);
            failed = 1;
        }
    } else if (rc != 0) {
        print_message("%s: rejected: %s\n", id, out.data);
        failed = 1;
    } else {
        struct tol t = tolerance_of(c);
        const json_t *special = json_object_get(c, "expected_special");
        const json_t *want = json_object_get(c, "expected");
        const json_t *got = json_object_get(body, "loss");
        if (special && json_is_string(special)) {
            double g = num(got);
            const char *s = json_string_value(special);
            if (!strcmp(s, "nan") ? !isnan(g) : !isinf(g)) {
                print_message("%s: loss = %s, expected %s\n", id, out.data, s);
                failed = 1;
            }
        } else if (json_is_object(want) || json_is_array(want)) {
            failed |= compare_tensor(id, "loss", got, want, t);
        } else if (!close_to(num(got), json_number_value(want), t)) {
            print_message("%s: loss = %.17g, expected %.17g\n", id, num(got),
                          json_number_value(want));
            failed = 1;
        }
        const json_t *pe = json_object_get(c, "expected_per_element");
        if (!failed && pe)
            failed |=
                compare_tensor(id, "per_element", json_object_get(body, "per_element"), pe, t);
    }
    json_decref(body);
    free(out.data);
    return failed;
}

static void test_golden_cases(void **state)
{
    (void)state;
    json_error_t je;
    json_t *root = json_load_file(GOLDEN, 0, &je);
    if (!root)
        fail_msg("cannot read %s (run the tests from the repository root): %s", GOLDEN, je.text);
    const json_t *cases = json_object_get(root, "cases");
    assert_true(json_array_size(cases) >= 100);
    int failures = 0, errors = 0;
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const json_t *c = json_array_get(cases, i);
        failures += run_case(c);
        errors += json_object_get(c, "expected_error") != NULL;
    }
    print_message("golden: %zu cases, %d with an expected error, %d failed\n",
                  json_array_size(cases), errors, failures);
    json_decref(root);
    assert_int_equal(failures, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_cases),
    };
    return cmocka_run_group_tests_name("golden", tests, NULL, NULL);
}
