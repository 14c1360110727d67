/*
 * test_quota.c -- the server's per-client quotas (server/quota.c) on a clock the test holds,
 * and the --cors-origin list (server/origin.c). Expected values are the token bucket's
 * arithmetic done by hand: a bucket of `burst` refilling at `rate` a second.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../server/origin.h"
#include "../server/quota.h"

#define SEC 1000000000ull
#define T0 (1000 * SEC) /* an arbitrary start: uv_hrtime() is never 0 */

static enum mls_quota_verdict take(struct mls_quota *q, const char *key, uint64_t now, int worker,
                                   struct mls_quota_client **held, unsigned *retry)
{
    double limit = -1;
    unsigned r = 0;
    enum mls_quota_verdict v = mls_quota_take(q, key, strlen(key), now, worker, held, &r, &limit);
    if (v == MLS_QUOTA_RATE)
        assert_true(limit == q->rate);
    if (v == MLS_QUOTA_SHARE)
        assert_true(limit == q->share);
    if (v != MLS_QUOTA_OK)
        assert_true(r >= 1);
    if (retry)
        *retry = r;
    return v;
}

static void test_bucket(void **state)
{
    (void)state;
    struct mls_quota q;
    struct mls_quota_client *held;
    unsigned retry;
    assert_int_equal(mls_quota_init(&q, 2, 3, 0, 1), 0);
    /* the burst of 3 at once, then empty: one more refills in 0.5 s, told as 1 s */
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(&q, "alice", T0, 1, &held, NULL), MLS_QUOTA_OK);
    assert_null(held); /* no share: nothing held */
    assert_int_equal(take(&q, "alice", T0, 1, &held, &retry), MLS_QUOTA_RATE);
    assert_int_equal(retry, 1);
    /* another client has its own bucket */
    assert_int_equal(take(&q, "bob", T0, 1, &held, NULL), MLS_QUOTA_OK);
    /* 0.4 s: 0.8 of a request; 0.5 s: one */
    assert_int_equal(take(&q, "alice", T0 + SEC * 4 / 10, 1, &held, NULL), MLS_QUOTA_RATE);
    assert_int_equal(take(&q, "alice", T0 + SEC / 2, 1, &held, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "alice", T0 + SEC / 2, 1, &held, NULL), MLS_QUOTA_RATE);
    /* a long pause refills to the burst, not beyond */
    uint64_t later = T0 + 100 * SEC;
    for (int i = 0; i < 3; i++)
        assert_int_equal(take(&q, "alice", later, 0, &held, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "alice", later, 0, &held, NULL), MLS_QUOTA_RATE);
    assert_int_equal(atomic_load(&q.refused_rate), 4);
    mls_quota_destroy(&q);
}

static void test_slow_rate(void **state)
{
    (void)state;
    struct mls_quota q;
    struct mls_quota_client *held;
    unsigned retry;
    /* one request every 2 s, a burst of 1 */
    assert_int_equal(mls_quota_init(&q, 0.5, 1, 0, 2), 0);
    assert_int_equal(take(&q, "a", T0, 1, &held, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "a", T0 + 1, 1, &held, &retry), MLS_QUOTA_RATE);
    assert_int_equal(retry, 2);
    assert_int_equal(take(&q, "a", T0 + SEC, 1, &held, &retry), MLS_QUOTA_RATE);
    assert_int_equal(retry, 1); /* half refilled: 1 s to go */
    assert_int_equal(take(&q, "a", T0 + 2 * SEC, 1, &held, NULL), MLS_QUOTA_OK);
    /* a very slow rate: the wait is bounded to a day */
    mls_quota_destroy(&q);
    assert_int_equal(mls_quota_init(&q, 1e-9, 1, 0, 3), 0);
    assert_int_equal(take(&q, "a", T0, 1, &held, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "a", T0, 1, &held, &retry), MLS_QUOTA_RATE);
    assert_int_equal(retry, 86400);
    mls_quota_destroy(&q);
}

static void test_share(void **state)
{
    (void)state;
    struct mls_quota q;
    struct mls_quota_client *h1, *h2, *h3, *h;
    unsigned retry;
    assert_int_equal(mls_quota_init(&q, 10, 10, 2, 4), 0);
    assert_int_equal(take(&q, "alice", T0, 1, &h1, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "alice", T0, 1, &h2, NULL), MLS_QUOTA_OK);
    assert_non_null(h1);
    assert_ptr_equal(h1, h2);
    /* a third in flight is over the share; refusals take nothing from the bucket */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(take(&q, "alice", T0, 1, &h3, &retry), MLS_QUOTA_SHARE);
        assert_null(h3);
        assert_int_equal(retry, 1);
    }
    /* requests that need no worker do not count against it */
    assert_int_equal(take(&q, "alice", T0, 0, &h, NULL), MLS_QUOTA_OK);
    assert_null(h);
    /* another client's share is its own */
    assert_int_equal(take(&q, "bob", T0, 1, &h, NULL), MLS_QUOTA_OK);
    mls_quota_release(&q, h);
    /* one answered: room again */
    mls_quota_release(&q, h1);
    assert_int_equal(take(&q, "alice", T0, 1, &h3, NULL), MLS_QUOTA_OK);
    mls_quota_release(&q, h2);
    mls_quota_release(&q, h3);
    /* of alice's 10, 4 were taken (3 with a worker, 1 without): 6 left */
    for (int i = 0; i < 6; i++)
        assert_int_equal(take(&q, "alice", T0, 0, &h, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "alice", T0, 0, &h, NULL), MLS_QUOTA_RATE);
    assert_int_equal(atomic_load(&q.refused_share), 5);
    assert_int_equal(atomic_load(&q.refused_rate), 1);
    struct mlp_buf b = {0};
    mls_quota_write_metrics(&q, &b);
    assert_false(b.failed);
    assert_non_null(strstr(b.data, "maskloss_quota_refused_total{reason=\"rate\"} 1\n"));
    assert_non_null(strstr(b.data, "maskloss_quota_refused_total{reason=\"queue_share\"} 5\n"));
    free(b.data);
    mls_quota_destroy(&q);
}

static void test_off(void **state)
{
    (void)state;
    struct mls_quota q;
    struct mls_quota_client *h;
    assert_int_equal(mls_quota_init(&q, 0, 1, 0, 5), 0);
    assert_false(mls_quota_on(&q));
    for (int i = 0; i < 1000; i++)
        assert_int_equal(take(&q, "alice", T0, 1, &h, NULL), MLS_QUOTA_OK);
    assert_null(h);
    struct mlp_buf b = {0};
    mls_quota_write_metrics(&q, &b);
    assert_int_equal(b.len, 0); /* no series when off */
    free(b.data);
    mls_quota_destroy(&q);
    /* a share alone: requests without a worker are never refused, nor remembered */
    assert_int_equal(mls_quota_init(&q, 0, 1, 1, 6), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(take(&q, "alice", T0, 0, &h, NULL), MLS_QUOTA_OK);
    assert_int_equal(q.num_clients, 0);
    mls_quota_destroy(&q);
}

/* The table is bounded: past MLS_QUOTA_MAX_CLIENTS entries that still hold something, new
 * clients share one entry; once entries refill they are dropped to make room. */
static void test_bounded(void **state)
{
    (void)state;
    struct mls_quota q;
    struct mls_quota_client *h;
    char key[32];
    assert_int_equal(mls_quota_init(&q, 1, 1, 0, 7), 0);
    for (unsigned i = 0; i < MLS_QUOTA_MAX_CLIENTS; i++) {
        snprintf(key, sizeof(key), "c%u", i);
        assert_int_equal(take(&q, key, T0, 1, &h, NULL), MLS_QUOTA_OK);
    }
    assert_int_equal(q.num_clients, MLS_QUOTA_MAX_CLIENTS);
    /* every entry's bucket is empty: nothing can go; two new clients share the overflow's */
    assert_int_equal(take(&q, "new1", T0, 1, &h, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "new2", T0, 1, &h, NULL), MLS_QUOTA_RATE);
    assert_int_equal(q.num_clients, MLS_QUOTA_MAX_CLIENTS);
    /* a known client still has its own entry */
    assert_int_equal(take(&q, "c7", T0 + SEC, 1, &h, NULL), MLS_QUOTA_OK);
    /* 2 s later every bucket is full again: the sweep drops them, new3 gets its own */
    assert_int_equal(take(&q, "new3", T0 + 2 * SEC, 1, &h, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "new3", T0 + 2 * SEC, 1, &h, NULL), MLS_QUOTA_RATE);
    assert_int_equal(q.num_clients, 1);
    mls_quota_destroy(&q);
}

/* Tokens (keys tagged MLS_QUOTA_KEY_TOKEN) are as many as --auth-file's lines: a table
 * filled by addresses (requests that need no token, one from each /64 of a /48) must not put
 * them in the entry shared with that flood, where a token that sent nothing is refused. */
static void test_tokens_never_shared(void **state)
{
    (void)state;
    struct mls_quota q;
    struct mls_quota_client *h, *ha, *hb;
    char key[32];
    assert_int_equal(mls_quota_init(&q, 0.01, 1, 1, 8), 0);
    for (unsigned i = 0; i < MLS_QUOTA_MAX_CLIENTS; i++) {
        snprintf(key, sizeof(key), "a%u", i);
        assert_int_equal(take(&q, key, T0, 0, &h, NULL), MLS_QUOTA_OK);
    }
    /* the flood goes on into the shared entry, and spends it */
    assert_int_equal(take(&q, "anew1", T0, 0, &h, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "anew2", T0, 0, &h, NULL), MLS_QUOTA_RATE);
    /* alice and bob, never seen: each a bucket and a share of its own */
    assert_int_equal(take(&q, "talice", T0, 1, &ha, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "tbob", T0, 1, &hb, NULL), MLS_QUOTA_OK);
    assert_non_null(ha);
    assert_non_null(hb);
    assert_ptr_not_equal(ha, hb);
    assert_int_equal(take(&q, "talice", T0, 0, &h, NULL), MLS_QUOTA_RATE);
    mls_quota_release(&q, ha);
    mls_quota_release(&q, hb);
    assert_int_equal(q.num_clients, MLS_QUOTA_MAX_CLIENTS + 2);
    mls_quota_destroy(&q);
}

/* A clock that steps back (never uv_hrtime's, but the bucket must not depend on it) gives no
 * request: the time between is not counted twice once it steps forward again. */
static void test_clock_backwards(void **state)
{
    (void)state;
    struct mls_quota q;
    struct mls_quota_client *h;
    assert_int_equal(mls_quota_init(&q, 1, 1, 0, 9), 0);
    assert_int_equal(take(&q, "a", T0 + 10 * SEC, 0, &h, NULL), MLS_QUOTA_OK);
    assert_int_equal(take(&q, "a", T0, 0, &h, NULL), MLS_QUOTA_RATE);
    /* back at T0 + 10 s: no time has passed since the bucket was spent */
    assert_int_equal(take(&q, "a", T0 + 10 * SEC, 0, &h, NULL), MLS_QUOTA_RATE);
    assert_int_equal(take(&q, "a", T0 + 11 * SEC, 0, &h, NULL), MLS_QUOTA_OK);
    mls_quota_destroy(&q);
}

static void test_origins(void **state)
{
    (void)state;
    char list[96] = "";
    const char *why = NULL;
    assert_int_equal(mls_origins_add(list, sizeof(list), "HTTPS://App.Example.com", &why), 0);
    assert_int_equal(
        mls_origins_add(list, sizeof(list), "http://localhost:3000, http://[::1]:8080", &why), 0);
    assert_string_equal(list,
                        "https://app.example.com\nhttp://localhost:3000\nhttp://[::1]:8080\n");
    assert_true(mls_origin_allowed(list, "https://app.example.com"));
    assert_true(mls_origin_allowed(list, "http://localhost:3000"));
    assert_true(mls_origin_allowed(list, "http://[::1]:8080"));
    /* exact, whole origins only */
    const char *no[] = {"https://app.example.com.evil.com",
                        "https://app.example.co",
                        "http://app.example.com",
                        "https://app.example.com:443",
                        "http://localhost:30000",
                        "http://localhost",
                        "null",
                        ""};
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        assert_false(mls_origin_allowed(list, no[i]));
    /* refused values leave the list as it was */
    const struct {
        const char *value, *why;
    } bad[] = {
        {"https://app.example.com/", "no path"},
        {"https://a.example.com/x", "no path"},
        {"app.example.com", "expected an origin"},
        {"ftp://a.example.com", "expected an origin"},
        {"https://", "expected an origin"},
        {"https://a:0", "expected an origin"},
        {"https://a:65536", "expected an origin"},
        {"https://a:", "expected an origin"},
        {"https://a:8x", "expected an origin"},
        {"null", "expected an origin"},
        {"http://[zz]", "expected an origin"},
        {"http://[]", "expected an origin"},
        {"https://a_b.example", "expected an origin"},
        {" , ", "at least one"},
        {"https://ok.example, bad", "expected an origin"},
        {"https://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", "too many"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        assert_int_equal(mls_origins_add(list, sizeof(list), bad[i].value, &why), -1);
        assert_non_null(why);
        if (!strstr(why, bad[i].why))
            fail_msg("'%s': '%s', expected '%s'", bad[i].value, why, bad[i].why);
        assert_string_equal(list,
                            "https://app.example.com\nhttp://localhost:3000\nhttp://[::1]:8080\n");
    }
    /* kept as browsers send them: no default port, no leading zeros; a 253-byte host name */
    char served[1024] = "";
    assert_int_equal(
        mls_origins_add(served, sizeof(served),
                        "https://a.example:443 http://b.example:80 "
                        "https://c.example:80 http://[::1]:0080 https://d.example:08443",
                        &why),
        0);
    assert_string_equal(served, "https://a.example\nhttp://b.example\nhttps://c.example:80\n"
                                "http://[::1]\nhttps://d.example:8443\n");
    assert_true(mls_origin_allowed(served, "https://a.example"));
    assert_false(mls_origin_allowed(served, "https://a.example:443"));
    char longest[MLS_ORIGIN_MAX + 2];
    memset(longest, 'a', sizeof(longest));
    memcpy(longest, "https://", 8);
    memcpy(longest + MLS_ORIGIN_MAX - 6, ":65534", 7); /* 8 + 253 + 6 bytes */
    served[0] = '\0';
    assert_int_equal(mls_origins_add(served, sizeof(served), longest, &why), 0);
    assert_true(mls_origin_allowed(served, longest));
    memcpy(longest + MLS_ORIGIN_MAX - 6, "a:65534", 8); /* one byte more */
    assert_int_equal(mls_origins_add(served, sizeof(served), longest, &why), -1);
    assert_non_null(strstr(why, "longer than an origin can be"));
    char any[8] = "";
    assert_int_equal(mls_origins_add(any, sizeof(any), "*", &why), 0);
    assert_int_equal(mls_origin_allowed(any, "https://anything.example.org"), MLS_ORIGIN_ANY);
    assert_int_equal(mls_origin_allowed(any, "\x01 not an origin"), MLS_ORIGIN_ANY);
    char both[64] = "";
    assert_int_equal(mls_origins_add(both, sizeof(both), "*, https://app.example.com", &why), 0);
    assert_int_equal(mls_origin_allowed(both, "https://app.example.com"), MLS_ORIGIN_LISTED);
    assert_int_equal(mls_origin_allowed(both, "https://other.example.com"), MLS_ORIGIN_ANY);
    assert_false(mls_origin_allowed("", "https://app.example.com"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket),          cmocka_unit_test(test_slow_rate),
        cmocka_unit_test(test_share),           cmocka_unit_test(test_off),
        cmocka_unit_test(test_bounded),         cmocka_unit_test(test_tokens_never_shared),
        cmocka_unit_test(test_clock_backwards), cmocka_unit_test(test_origins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
