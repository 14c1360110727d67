/*
 * test_state_url.c -- server/state_url.c: which --state is PostgreSQL, and the password of a
 * connection string kept out of what the server prints (every form libpq takes it in).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "../server/state_url.h"

static void is_pg(void **state)
{
    (void)state;
    assert_true(mls_store_is_pg("postgresql://u@h/db"));
    assert_true(mls_store_is_pg("postgres://h"));
    assert_true(mls_store_is_pg("host=db dbname=m"));
    assert_true(mls_store_is_pg("dbname = m"));
    assert_false(mls_store_is_pg("maskloss-state.db"));
    assert_false(mls_store_is_pg(":memory:"));
    assert_false(mls_store_is_pg("/var/lib/maskloss/state.db"));
    assert_false(mls_store_is_pg("./host=x"));
    assert_false(mls_store_is_pg(""));
}

/* The password found (raw, plain) of a connection string. */
static void found(const char *conninfo, const char *raw, const char *plain)
{
    char r[256], p[256];
    mls_state_password(conninfo, r, p, sizeof(r));
    assert_string_equal(r, raw);
    assert_string_equal(p, plain);
}

static void passwords(void **state)
{
    (void)state;
    found("postgresql://maskloss:s3cr%40t@db:5432/m", "s3cr%40t", "s3cr@t");
    found("postgresql://maskloss@db:5432/m", "", "");
    found("postgresql://db/m?user=u&password=p%2Fw&sslmode=require", "p%2Fw", "p/w");
    found("postgresql://u:bad%zz@db/m", "bad%zz", "bad%zz");
    found("host=db password=hunter2 dbname=m", "hunter2", "hunter2");
    found("host=db password = 'a b\\'c' dbname=m", "'a b\\'c'", "a b'c");
    found("host=db dbname=m", "", "");
    found("host=db passwordx=1 dbname=m", "", "");
}

/* What mls_store_redact prints for conninfo holds none of the password's forms. */
static void redacted(const char *conninfo, const char *want)
{
    char out[512];
    mls_store_redact(conninfo, out, sizeof(out));
    assert_string_equal(out, want);
}

static void redact(void **state)
{
    (void)state;
    redacted("postgresql://maskloss:s3cr%40t@db:5432/m", "postgresql://maskloss:***@db:5432/m");
    redacted("postgresql://db/m?password=p&user=u", "postgresql://db/m?password=***&user=u");
    redacted("host=db password = 'a b\\'c' dbname=m", "host=db password = *** dbname=m");
    redacted("maskloss-state.db", "maskloss-state.db");
    redacted("host=db dbname=m", "host=db dbname=m");
    /* Two passwords: both masked; a 1-character one masks only itself. */
    redacted("postgresql://u:first@db/m?password=second", "postgresql://u:***@db/m?password=***");
    redacted("host=db password=x password=hunter2 dbname=m",
             "host=db password=*** password=*** dbname=m");
}

static void scrub(void **state)
{
    (void)state;
    char t[64] = "a secret and the secret";
    mls_state_scrub(t, sizeof(t), "secret");
    assert_string_equal(t, "a *** and the ***");
    /* A secret shorter than the mark, and one made of the mark's characters: it ends. */
    char u[64] = "x*y*z";
    mls_state_scrub(u, sizeof(u), "*");
    assert_string_equal(u, "x***y***z");
    /* No room to grow: cut, never past the buffer. */
    char v[8] = "ab1cd";
    mls_state_scrub(v, sizeof(v), "1");
    assert_string_equal(v, "ab***cd");
    char w[6] = "ab1cd";
    mls_state_scrub(w, sizeof(w), "1");
    assert_string_equal(w, "ab***");
    char x[4] = "ab1";
    mls_state_scrub(x, sizeof(x), "1");
    assert_string_equal(x, "ab");
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(is_pg), cmocka_unit_test(passwords),
                                       cmocka_unit_test(redact), cmocka_unit_test(scrub)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
