/*
 * test_auth.c -- the token file (mlp_auth.h): SHA-256 against FIPS 180-4's examples and
 * Python's hashlib, the lines, the scopes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "mlp_auth.h"

static void hex_of(const uint8_t h[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static void check_sha(const void *data, size_t len, const char *want)
{
    uint8_t h[32];
    char got[65];
    mlp_sha256(data, len, h);
    hex_of(h, got);
    assert_string_equal(got, want);
}

/* FIPS 180-4's examples (NIST CSRC "Examples with intermediate values"). */
static void test_sha256_fips(void **state)
{
    (void)state;
    check_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_sha(two, strlen(two), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char *million = malloc(1000000);
    assert_non_null(million);
    memset(million, 'a', 1000000);
    check_sha(million, 1000000, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(million);
}

/* Every way the padding can fall (the length in the first block or a second one), bytes
 * (7i + 3) mod 256; the digests from Python's hashlib.sha256. */
static void test_sha256_padding(void **state)
{
    (void)state;
    static const struct {
        size_t n;
        const char *hex;
    } cases[] = {
        {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b"},
        {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27"},
        {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055"},
        {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241"},
        {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e"},
        {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e"},
        {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5"},
        {127, "a8d23e75d936f303d248888d9b165ee543f4cbafcad3c9dd2a79bd84faa11d07"},
        {128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6"},
        {1000, "1e9bc38cbf860b9ec31918b065f9b52476c549a782e0e7990bed8ce3868d2371"},
    };
    uint8_t buf[1000];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)((i * 7 + 3) % 256);
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        /* from an exact-size heap copy: AddressSanitizer sees a read past the end */
        uint8_t *copy = malloc(cases[c].n);
        assert_non_null(copy);
        memcpy(copy, buf, cases[c].n);
        check_sha(copy, cases[c].n, cases[c].hex);
        free(copy);
    }
}

static void test_hash_equal(void **state)
{
    (void)state;
    uint8_t a[32], b[32];
    for (int i = 0; i < 32; i++)
        a[i] = b[i] = (uint8_t)i;
    assert_true(mlp_hash_equal(a, b));
    for (int i = 0; i < 32; i++) {
        b[i] ^= 0x80;
        assert_false(mlp_hash_equal(a, b));
        b[i] ^= 0x80;
    }
}

static int parse(const char *line, struct mlp_token *t, char *err)
{
    return mlp_token_line_parse(line, strlen(line), t, err, 256);
}

static void test_lines(void **state)
{
    (void)state;
    struct mlp_token t;
    char err[256];
    const char *h = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    char line[512];
    snprintf(line, sizeof(line), "  %s\tci-job.1@team:x  evaluate,monitor:read \r", h);
    assert_int_equal(parse(line, &t, err), 1);
    assert_string_equal(t.name, "ci-job.1@team:x");
    assert_int_equal(t.scopes, MLP_SCOPE_EVALUATE | MLP_SCOPE_MONITOR_READ);
    assert_int_equal(t.hash[0], 0xba);
    assert_int_equal(t.hash[31], 0xad);
    snprintf(line, sizeof(line), "%s root admin", h);
    assert_int_equal(parse(line, &t, err), 1);
    assert_int_equal(t.scopes, MLP_SCOPE_ALL);
    snprintf(line, sizeof(line), "%s m metrics,metrics", h);
    assert_int_equal(parse(line, &t, err), 1);
    assert_int_equal(t.scopes, MLP_SCOPE_METRICS);

    assert_int_equal(parse("", &t, err), 0);
    assert_int_equal(parse("   \t", &t, err), 0);
    assert_int_equal(parse("# a comment", &t, err), 0);
    assert_int_equal(parse("  # indented", &t, err), 0);

    static const struct {
        const char *fmt, *says;
    } bad[] = {
        {"%s name", "too few fields"},
        {"%s name evaluate extra", "too many fields"},
        {"%s na/me evaluate", "name 'na/me'"},
        {"%s name evaluate,,metrics", "empty scope"},
        {"%s name evaluate,write", "unknown scope 'write'"},
        {"%s name Evaluate", "unknown scope 'Evaluate'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(line, sizeof(line), bad[i].fmt, h);
        err[0] = 0;
        assert_int_equal(parse(line, &t, err), -1);
        if (!strstr(err, bad[i].says))
            fail_msg("line %s: error '%s' does not say '%s'", line, err, bad[i].says);
    }
    assert_int_equal(parse("abc name evaluate", &t, err), -1);
    assert_non_null(strstr(err, "not 64"));
    snprintf(line, sizeof(line), "%.63sg name evaluate", h);
    assert_int_equal(parse(line, &t, err), -1);
    assert_non_null(strstr(err, "not hexadecimal"));
    char long_name[100];
    memset(long_name, 'n', 65);
    long_name[65] = 0;
    snprintf(line, sizeof(line), "%s %s evaluate", h, long_name);
    assert_int_equal(parse(line, &t, err), -1);
    long_name[64] = 0;
    snprintf(line, sizeof(line), "%s %s evaluate", h, long_name);
    assert_int_equal(parse(line, &t, err), 1);
}

/* A formatted line parses back to the token's hash (hashlib: sha256(b"abc")). */
static void test_format(void **state)
{
    (void)state;
    char line[256], err[256];
    int n = mlp_token_line_format("abc", "ci", MLP_SCOPE_METRICS | MLP_SCOPE_EVALUATE, line,
                                  sizeof(line));
    assert_int_equal(n, (int)strlen(line));
    assert_string_equal(line, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad "
                              "ci evaluate,metrics\n");
    struct mlp_token t;
    assert_int_equal(mlp_token_line_parse(line, (size_t)n - 1, &t, err, sizeof(err)), 1);
    assert_int_equal(t.scopes, MLP_SCOPE_METRICS | MLP_SCOPE_EVALUATE);
    n = mlp_token_line_format("abc", "root", MLP_SCOPE_ALL, line, sizeof(line));
    assert_true(n > 0);
    assert_non_null(strstr(line, " root admin\n"));
    assert_int_equal(mlp_token_line_format("abc", "bad name", MLP_SCOPE_ADMIN, line, 256), -1);
    assert_int_equal(mlp_token_line_format("abc", "x", 0, line, sizeof(line)), -1);
    assert_int_equal(mlp_token_line_format("abc", "x", MLP_SCOPE_ADMIN, line, 70), -1);
    char scopes_err[256];
    unsigned bits;
    assert_int_equal(mlp_scopes_parse("monitor:write", 13, &bits, scopes_err, 256), 0);
    assert_int_equal(bits, MLP_SCOPE_MONITOR_WRITE);
    assert_string_equal(mlp_scope_name(MLP_SCOPE_MONITOR_READ), "monitor:read");
    assert_null(mlp_scope_name(3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256_fips), cmocka_unit_test(test_sha256_padding),
        cmocka_unit_test(test_hash_equal),  cmocka_unit_test(test_lines),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
