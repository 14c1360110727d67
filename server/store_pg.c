/*
 * store_pg.c -- the monitors' state in PostgreSQL, shared by replicas (store.h).
 *
 * Design and measurements: docs/design/pg-store.md. In short:
 * - A monitor's rows are keyed by its generation (new on create, replace and delete), so that
 *   a replace never has to find and delete rows in the request: the old generation's are
 *   garbage, deleted by the upkeep (compact) later.
 * - Writes add: `total = mls_addv(buckets.total, EXCLUDED.total)` under the row lock of the
 *   upsert, never a read-modify-write between replicas; a transaction's bucket deltas are
 *   written at its commit in one statement, in key order (one lock order for every replica).
 * - Idempotency keys are rows with a primary key: a retry on another replica finds the first
 *   (waiting for it to commit or roll back) and is a duplicate.
 * - The change feed (poll): every row the replicas hold in memory carries xid, the transaction
 *   that last wrote it; a poll reads, in one REPEATABLE READ transaction, the rows whose xid is
 *   not visible in the previous poll's snapshot, and overwrites memory with their absolute
 *   values. Out-of-order commits cannot be missed, as they can with a sequence.
 * - Every round trip has a deadline of our own (libpq's timeouts do not cover a server that
 *   stops answering): past it the connection is dropped, the call fails (503 for clients) and
 *   the next poll reconnects.
 *
 * Only the writer thread calls it (and main, for the load, before the writer starts).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "pg_schema.h"
#include "state_url.h"
#include "store.h"

/* How long a connection attempt may take (libpq's connect_timeout); a round trip's limit is
 * --state-timeout (timeout_ms). */
#define CONNECT_SECONDS "3"
/* Reconnection attempts are at least this far apart (a write in between fails at once). */
#define RECONNECT_NS 1000000000ull
/* Fixed keys of advisory locks: the replicas' migrations; transactions that label (below). */
#define MIGRATION_LOCK "7215873512731"
#define LABELS_LOCK "7215873512732"
/* Rows of a dead generation deleted per table per upkeep; tombstones' lifetime. */
#define GC_ROWS 10000
#define TOMBSTONE_TTL "1 hour"
/* A replica whose last poll is older than this reloads every monitor instead of polling
 * (the tombstones of what it missed may be gone). */
#define FULL_AFTER_NS (1800ull * 1000000000ull)
/* Bucket rows per upsert statement (6 parameters each; PostgreSQL allows 65535). */
#define ADD_ROWS 1000
#define ADD_DOUBLES 200000
#define LABEL_ROWS 1000

struct gen {
    char name[MLS_MONITOR_NAME_MAX + 1];
    int64_t gen; /* -1: deleted (pending changes only) */
};

/* A bucket delta of the transaction, written at its commit. */
struct add {
    int64_t gen;
    char *combo;
    int64_t start;
    int32_t width;
    struct mls_cell total;
    double *classes; /* num doubles, or NULL */
    size_t num;
};

/* A change of a generation's live counts: field 0 predictions, 1 positions, 2 labelled[index]. */
struct live {
    int64_t gen;
    int field;
    int32_t index;
    double delta;
};

/* A label to write (at the end of the op: release or commit). */
struct label_row {
    int64_t pred;
    int32_t slot;
    struct mls_label l;
    double t;
};

/* Predictions and labels read in this transaction (locked FOR UPDATE: they stay valid). */
struct pred_entry {
    char *id;
    int64_t gen;
    int found;
    int64_t pred;
    double t;
    char *combo;
    void *outputs; /* read with it (the labels' evaluation reads them next) */
    size_t bytes;
};
struct label_entry {
    int64_t pred;
    int32_t slot;
    int found;
    struct mls_label l;
};

/* The read caches' index: entry index + 1 by hash (0: an empty slot), open addressing. Entries
 * are only appended, and forgotten all at once. */
struct islot {
    uint64_t h;
    uint32_t e;
};
struct index {
    struct islot *slots;
    size_t cap, count; /* cap: 0 or a power of 2 */
};

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static int index_add(struct index *x, uint64_t h, size_t entry)
{
    if (2 * (x->count + 1) > x->cap) {
        size_t cap = x->cap ? x->cap * 2 : 256;
        struct islot *n = calloc(cap, sizeof(*n));
        if (!n)
            return -1;
        for (size_t i = 0; i < x->cap; i++) {
            if (!x->slots[i].e)
                continue;
            size_t j = (size_t)x->slots[i].h & (cap - 1);
            while (n[j].e)
                j = (j + 1) & (cap - 1);
            n[j] = x->slots[i];
        }
        free(x->slots);
        x->slots = n;
        x->cap = cap;
    }
    size_t j = (size_t)h & (x->cap - 1);
    while (x->slots[j].e)
        j = (j + 1) & (x->cap - 1);
    x->slots[j] = (struct islot){h, (uint32_t)(entry + 1)};
    x->count++;
    return 0;
}

static void index_clear(struct index *x)
{
    if (x->count)
        memset(x->slots, 0, x->cap * sizeof(*x->slots));
    x->count = 0;
}

static uint64_t label_hash(int64_t pred, int32_t slot)
{
    return mix((uint64_t)pred * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uint32_t)slot);
}

static uint64_t pred_hash(int64_t gen, const char *id)
{
    uint64_t h = 14695981039346656037ull ^ (uint64_t)gen;
    for (; *id; id++)
        h = (h ^ (unsigned char)*id) * 1099511628211ull;
    return mix(h);
}

#define MAX_MARKS 8
struct mark {
    size_t adds, lives, labels;
    int labels_locked; /* (a lock taken in a savepoint goes with its rollback) */
};

struct pg_store {
    struct mls_store base;
    char *conninfo;
    unsigned timeout_ms; /* a round trip's limit */
    int timed_out;       /* the last connection was dropped for not answering in time */
    char secret_raw[1024], secret_plain[1024]; /* the password in it (find_password) */
    PGconn *c;
    uint64_t last_connect;
    /* The generation of each monitor, as memory holds them; changes of the open transaction
     * (put, delete) in pending, applied at its commit. */
    struct gen *gens, *pending;
    size_t num_gens, cap_gens, num_pending, cap_pending;
    /* The monitors the open transaction writes to, with the generation written (gen_of). */
    struct gen *touched;
    size_t num_touched, cap_touched;
    struct add *adds;
    size_t num_adds, cap_adds;
    struct live *lives;
    size_t num_lives, cap_lives;
    struct label_row *labels;
    size_t num_labels, cap_labels;
    struct mark marks[MAX_MARKS];
    int num_marks;
    /* Lookups hinted (ids of hint_monitor; (pred, slot)) and those read. */
    char hint_monitor[MLS_MONITOR_NAME_MAX + 1];
    char **hint_ids;
    size_t num_hint_ids, cap_hint_ids;
    struct label_entry *hint_labels;
    size_t num_hint_labels, cap_hint_labels;
    struct pred_entry *preds;
    size_t num_preds, cap_preds;
    struct label_entry *lbls;
    size_t num_lbls, cap_lbls;
    struct index pred_index, label_index, by_pred;
    /* The transaction holds the labels' lock (LABELS_LOCK). */
    int labels_locked;
    /* The feed: the snapshot of the last poll (text), and when it was taken. */
    char *prev;
    uint64_t polled_at;
    char err[512];
};

static struct pg_store *self(struct mls_store *b)
{
    return (struct pg_store *)b;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Grows an array to hold one more; 0 or -1. */
static int grow(void **items, size_t *cap, size_t count, size_t size)
{
    if (count < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    void *n = realloc(*items, ncap * size);
    if (!n)
        return -1;
    *items = n;
    *cap = ncap;
    return 0;
}
#define GROW(s, arr, num, cap) grow((void **)&(s)->arr, &(s)->cap, (s)->num, sizeof(*(s)->arr))

static int oom(struct pg_store *s, const char *what)
{
    snprintf(s->err, sizeof(s->err), "out of memory %s", what);
    return -1;
}

/* libpq's message, on one line. */
static void set_err(struct pg_store *s, const char *what, const char *msg)
{
    snprintf(s->err, sizeof(s->err), "%s: %s", what, msg && *msg ? msg : "no answer");
    mls_state_scrub(s->err, sizeof(s->err), s->secret_raw);
    mls_state_scrub(s->err, sizeof(s->err), s->secret_plain);
    for (char *p = s->err; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    size_t n = strlen(s->err);
    while (n && s->err[n - 1] == ' ')
        s->err[--n] = '\0';
}

static void disconnect(struct pg_store *s)
{
    if (s->c)
        PQfinish(s->c);
    s->c = NULL;
}

/* Waits until the connection's socket is ready (for reading; and writing when `out`), at most
 * until the deadline: 0, or -1 (timed out, or poll failed). */
static int wait_socket(struct pg_store *s, uint64_t deadline, int out)
{
    for (;;) {
        uint64_t t = now_ns();
        if (t >= deadline)
            return -1;
        struct pollfd p = {.fd = PQsocket(s->c), .events = POLLIN | (out ? POLLOUT : 0)};
        if (p.fd < 0)
            return -1;
        uint64_t ms = (deadline - t) / 1000000 + 1;
        int r = poll(&p, 1, ms > INT_MAX ? INT_MAX : (int)ms);
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/*
 * Waits for the results of what was sent, keeping up to max of them in res (the others are
 * cleared). Returns 0 when every result succeeded, else -1 with the first error in s->err
 * (the results kept are cleared). A timeout or a lost connection drops the connection.
 */
static int collect(struct pg_store *s, const char *what, PGresult **res, int max, int *count)
{
    uint64_t deadline = now_ns() + (uint64_t)s->timeout_ms * 1000000ull;
    int n = 0, failed = 0;
    for (;;) {
        int f = PQflush(s->c);
        if (f < 0)
            goto lost;
        if (f == 0)
            break;
        if (wait_socket(s, deadline, 1))
            goto timeout;
        if (!PQconsumeInput(s->c))
            goto lost;
    }
    for (;;) {
        while (PQisBusy(s->c)) {
            if (wait_socket(s, deadline, 0))
                goto timeout;
            if (!PQconsumeInput(s->c))
                goto lost;
        }
        PGresult *r = PQgetResult(s->c);
        if (!r)
            break;
        ExecStatusType st = PQresultStatus(r);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !failed) {
            failed = 1;
            const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            char msg[400];
            snprintf(msg, sizeof(msg), "%s%s%s%s", PQresultErrorMessage(r),
                     code ? " (SQLSTATE " : "", code ? code : "", code ? ")" : "");
            set_err(s, what, msg);
        }
        if (n < max && !failed)
            res[n++] = r;
        else
            PQclear(r);
    }
    if (PQstatus(s->c) != CONNECTION_OK) {
        failed = 1;
        set_err(s, what, PQerrorMessage(s->c));
        disconnect(s);
    }
    if (failed) {
        for (int i = 0; i < n; i++)
            PQclear(res[i]);
        n = 0;
    }
    if (count)
        *count = n;
    return failed ? -1 : 0;
timeout:
    s->timed_out = 1;
    snprintf(s->err, sizeof(s->err), "%s: PostgreSQL did not answer within %u s", what,
             s->timeout_ms / 1000);
    disconnect(s);
    goto gone;
lost:
    set_err(s, what, PQerrorMessage(s->c));
    disconnect(s);
gone:
    for (int i = 0; i < n; i++)
        PQclear(res[i]);
    if (count)
        *count = 0;
    return -1;
}

static int connected(struct pg_store *s, const char *what)
{
    if (s->c)
        return 0;
    snprintf(s->err, sizeof(s->err), "%s: not connected to PostgreSQL (reconnecting)", what);
    return -1;
}

/* One statement with text parameters (fmts: NULL, or 1 for a binary one, lens given). Returns
 * its result (PQclear it), or NULL with s->err. binary: results in binary format. */
static PGresult *query(struct pg_store *s, const char *what, const char *sql, int n,
                       const char *const *vals, const int *lens, const int *fmts, int binary)
{
    if (connected(s, what))
        return NULL;
    if (!PQsendQueryParams(s->c, sql, n, NULL, vals, lens, fmts, binary)) {
        set_err(s, what, PQerrorMessage(s->c));
        if (PQstatus(s->c) != CONNECTION_OK)
            disconnect(s);
        return NULL;
    }
    PGresult *r = NULL;
    int got = 0;
    if (collect(s, what, &r, 1, &got))
        return NULL;
    if (!got) {
        snprintf(s->err, sizeof(s->err), "%s: no result", what);
        return NULL;
    }
    return r;
}

static int command(struct pg_store *s, const char *what, const char *sql, int n,
                   const char *const *vals)
{
    PGresult *r = query(s, what, sql, n, vals, NULL, NULL, 0);
    PQclear(r);
    return r ? 0 : -1;
}

/* Statements without parameters, several in one string: their results (up to max). */
static int script(struct pg_store *s, const char *what, const char *sql, PGresult **res, int max,
                  int *count)
{
    if (connected(s, what))
        return -1;
    if (!PQsendQuery(s->c, sql)) {
        set_err(s, what, PQerrorMessage(s->c));
        if (PQstatus(s->c) != CONNECTION_OK)
            disconnect(s);
        return -1;
    }
    int rc = collect(s, what, res, max, count);
    /* A script that failed inside its BEGIN leaves the transaction aborted. */
    if (rc && s->c && PQtransactionStatus(s->c) != PQTRANS_IDLE) {
        char keep[sizeof(s->err)];
        memcpy(keep, s->err, sizeof(keep));
        command(s, "", "ROLLBACK", 0, NULL);
        memcpy(s->err, keep, sizeof(keep));
    }
    return rc;
}

/* ---- Text values ------------------------------------------------------------------------- */

struct text {
    char *p;
    size_t len, cap;
    int failed;
};

static void put(struct text *t, const char *a, size_t n)
{
    if (t->failed)
        return;
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p) {
            t->failed = 1;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
    memcpy(t->p + t->len, a, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void puts_(struct text *t, const char *a)
{
    put(t, a, strlen(a));
}

/* A double that reads back the same (PostgreSQL's float8 input is exact). */
static void put_double(struct text *t, double v)
{
    char b[32];
    int n = snprintf(b, sizeof(b), "%.17g", v);
    put(t, b, (size_t)n);
}

/* {a,b,...}: an array literal of n doubles. */
static void put_array(struct text *t, const double *v, size_t n)
{
    put(t, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            put(t, ",", 1);
        put_double(t, v[i]);
    }
    put(t, "}", 1);
}

/* "..." inside an array literal. */
static void put_quoted(struct text *t, const char *a)
{
    put(t, "\"", 1);
    for (; *a; a++) {
        if (*a == '"' || *a == '\\')
            put(t, "\\", 1);
        put(t, a, 1);
    }
    put(t, "\"", 1);
}

/* Parses a float8[] in text form into out (n doubles; a shorter array leaves zeros): 0, or -1
 * when it is not one or has more than n. */
static int parse_array(const char *a, double *out, size_t n)
{
    memset(out, 0, n * sizeof(*out));
    if (*a++ != '{')
        return -1;
    if (*a == '}')
        return 0;
    for (size_t i = 0;; i++) {
        char *end;
        double v = strtod(a, &end);
        if (end == a || i >= n)
            return -1;
        out[i] = v;
        a = end;
        if (*a == '}')
            return 0;
        if (*a++ != ',')
            return -1;
    }
}

/* The number of elements of a float8[] in text form. */
static size_t array_len(const char *a)
{
    if (strcmp(a, "{}") == 0)
        return 0;
    size_t n = 1;
    for (; *a; a++)
        n += *a == ',';
    return n;
}

/* ---- Generations ------------------------------------------------------------------------- */

static struct gen *gen_find(struct gen *g, size_t n, const char *name)
{
    for (size_t i = n; i-- > 0;)
        if (!strcmp(g[i].name, name))
            return &g[i];
    return NULL;
}

/* The generation of a monitor in this transaction: -1 when none (with s->err). */
static int gen_set(struct pg_store *s, struct gen **arr, size_t *num, size_t *cap, const char *name,
                   int64_t gen);

static int64_t gen_of(struct pg_store *s, const char *name)
{
    struct gen *g = gen_find(s->pending, s->num_pending, name);
    if (!g)
        g = gen_find(s->gens, s->num_gens, name);
    if (!g || g->gen < 0) {
        snprintf(s->err, sizeof(s->err), "monitor %.130s has no generation in the store", name);
        return -1;
    }
    /* Checked at the commit (check_generations); a monitor put in this transaction is not. */
    if (g >= s->gens && g < s->gens + s->num_gens && !gen_find(s->touched, s->num_touched, name) &&
        gen_set(s, &s->touched, &s->num_touched, &s->cap_touched, name, g->gen))
        return -1;
    return g->gen;
}

static int gen_set(struct pg_store *s, struct gen **arr, size_t *num, size_t *cap, const char *name,
                   int64_t gen)
{
    struct gen *g = gen_find(*arr, *num, name);
    if (!g) {
        if (grow((void **)arr, cap, *num, sizeof(**arr)))
            return oom(s, "recording a monitor's generation");
        g = &(*arr)[(*num)++];
        snprintf(g->name, sizeof(g->name), "%s", name);
    }
    g->gen = gen;
    return 0;
}

static void gen_remove(struct pg_store *s, const char *name)
{
    struct gen *g = gen_find(s->gens, s->num_gens, name);
    if (g)
        *g = s->gens[--s->num_gens];
}

/* The name of the monitor of a generation memory holds, or NULL. */
static const char *name_of(struct pg_store *s, int64_t gen)
{
    for (size_t i = 0; i < s->num_gens; i++)
        if (s->gens[i].gen == gen)
            return s->gens[i].name;
    return NULL;
}

/* ---- Connection and schema ---------------------------------------------------------------- */

static const char *byte_order(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one ? "little" : "big";
}

static int connect_db(struct pg_store *s)
{
    disconnect(s);
    s->timed_out = 0;
    s->last_connect = now_ns();
    /* Ours first: the user's connection string (expanded from dbname) overrides them. */
    const char *const keys[] = {"connect_timeout", "application_name", "target_session_attrs",
                                "dbname", NULL};
    const char *const vals[] = {CONNECT_SECONDS, "maskloss-server", "read-write", s->conninfo,
                                NULL};
    s->c = PQconnectdbParams(keys, vals, 1);
    if (!s->c)
        return oom(s, "connecting to PostgreSQL");
    if (PQstatus(s->c) != CONNECTION_OK) {
        set_err(s, "cannot connect to PostgreSQL", PQerrorMessage(s->c));
        disconnect(s);
        return -1;
    }
    /* Sends are not left half-written on a socket that stops draining: collect() flushes. */
    if (PQsetnonblocking(s->c, 1)) {
        set_err(s, "cannot connect to PostgreSQL", PQerrorMessage(s->c));
        disconnect(s);
        return -1;
    }
    /* Doubles as text exactly (shortest round-trip output, whatever the server's or the role's
     * setting: 0 prints 15 digits); and a write transaction left open holds back the feed's
     * range of every replica (pg-store.md section 3): one stuck on a lost client is ended. */
    PGresult *r[2];
    int n = 0;
    if (script(s, "preparing the session",
               "SET extra_float_digits = 3; SET idle_in_transaction_session_timeout = '60s'", r, 2,
               &n))
        return -1;
    for (int i = 0; i < n; i++)
        PQclear(r[i]);
    return 0;
}

/* Reconnects when the connection is gone, at most once a RECONNECT_NS. */
static int ensure(struct pg_store *s, const char *what)
{
    if (s->c)
        return 0;
    if (now_ns() - s->last_connect < RECONNECT_NS) {
        snprintf(s->err, sizeof(s->err),
                 "%s: PostgreSQL is unreachable (the last attempt failed less than a second ago)",
                 what);
        return -1;
    }
    return connect_db(s);
}

/* Applies the migrations the database lacks, in one transaction under an advisory lock: two
 * replicas starting at once do not race (the second waits, then finds them applied). */
static int migrate(struct pg_store *s, char *err, size_t errlen)
{
    PGresult *r[4];
    int n;
    if (script(s, "migrating the schema",
               "BEGIN; SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ");"
               "CREATE TABLE IF NOT EXISTS schema_version (version int PRIMARY KEY, name text "
               "NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());"
               "SELECT coalesce(max(version), 0) FROM schema_version;",
               r, 4, &n) ||
        n != 4) {
        snprintf(err, errlen, "%s", s->err);
        return -1;
    }
    int have = atoi(PQgetvalue(r[3], 0, 0));
    for (int i = 0; i < n; i++)
        PQclear(r[i]);
    int newest = mls_pg_num_migrations ? mls_pg_migrations[mls_pg_num_migrations - 1].version : 0;
    if (have > newest) {
        command(s, "", "ROLLBACK", 0, NULL);
        snprintf(err, errlen,
                 "the database has schema version %d; this server knows up to %d (a newer "
                 "maskloss-server migrated it)",
                 have, newest);
        return -1;
    }
    for (size_t i = 0; i < mls_pg_num_migrations; i++) {
        const struct mls_pg_migration *m = &mls_pg_migrations[i];
        if (m->version <= have)
            continue;
        PGresult *x[1];
        char v[16];
        snprintf(v, sizeof(v), "%d", m->version);
        const char *p[] = {v, m->name};
        if (script(s, m->name, m->sql, x, 0, NULL) ||
            command(s, "recording a migration",
                    "INSERT INTO schema_version(version, name) VALUES($1, $2)", 2, p)) {
            snprintf(err, errlen, "migration %s failed: %s", m->name, s->err);
            if (s->c)
                command(s, "", "ROLLBACK", 0, NULL);
            return -1;
        }
    }
    const char *bo[] = {byte_order()};
    PGresult *q = NULL;
    if (command(s, "", "INSERT INTO meta VALUES('byte_order', $1) ON CONFLICT DO NOTHING", 1, bo) ||
        !(q = query(s, "reading meta", "SELECT value FROM meta WHERE key = 'byte_order'", 0, NULL,
                    NULL, NULL, 0)) ||
        command(s, "committing the migrations", "COMMIT", 0, NULL)) {
        PQclear(q);
        snprintf(err, errlen, "%s", s->err);
        if (s->c)
            command(s, "", "ROLLBACK", 0, NULL);
        return -1;
    }
    int other = PQntuples(q) == 1 && strcmp(PQgetvalue(q, 0, 0), byte_order());
    PQclear(q);
    if (other) {
        snprintf(err, errlen,
                 "the database's stored predictions were written by a machine of the other byte "
                 "order");
        return -1;
    }
    return 0;
}

/* ---- Transactions -------------------------------------------------------------------------- */

static void clear_reads(struct pg_store *s)
{
    for (size_t i = 0; i < s->num_preds; i++) {
        free(s->preds[i].id);
        free(s->preds[i].combo);
        free(s->preds[i].outputs);
    }
    s->num_preds = 0;
    s->num_lbls = 0;
    index_clear(&s->pred_index);
    index_clear(&s->label_index);
    index_clear(&s->by_pred);
    for (size_t i = 0; i < s->num_hint_ids; i++)
        free(s->hint_ids[i]);
    s->num_hint_ids = 0;
    s->num_hint_labels = 0;
}

static void truncate_adds(struct pg_store *s, size_t n)
{
    while (s->num_adds > n) {
        struct add *a = &s->adds[--s->num_adds];
        free(a->combo);
        free(a->classes);
    }
}

static void clear_tx(struct pg_store *s)
{
    truncate_adds(s, 0);
    s->num_lives = 0;
    s->num_labels = 0;
    s->num_marks = 0;
    s->num_pending = 0;
    s->num_touched = 0;
    s->labels_locked = 0;
    clear_reads(s);
}

static int pg_begin(struct mls_store *b)
{
    struct pg_store *s = self(b);
    clear_tx(s);
    if (ensure(s, "beginning a transaction"))
        return -1;
    if (PQtransactionStatus(s->c) != PQTRANS_IDLE)
        command(s, "", "ROLLBACK", 0, NULL);
    if (!command(s, "beginning a transaction", "BEGIN", 0, NULL))
        return 0;
    /* A connection lost while idle (the database restarted): once more on a new one. (Not one
     * that did not answer: the database hangs, and another attempt would wait as long.) */
    return s->c || s->timed_out || connect_db(s)
               ? -1
               : command(s, "beginning a transaction", "BEGIN", 0, NULL);
}

static int by_key(const void *pa, const void *pb)
{
    const struct add *a = pa, *b = pb;
    if (a->gen != b->gen)
        return a->gen < b->gen ? -1 : 1;
    int c = strcmp(a->combo, b->combo);
    if (c)
        return c;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    return (a->width > b->width) - (a->width < b->width);
}

/* The transaction's bucket deltas, summed per bucket and written in key order. */
static int flush_adds(struct pg_store *s)
{
    if (!s->num_adds)
        return 0;
    qsort(s->adds, s->num_adds, sizeof(*s->adds), by_key);
    size_t w = 0;
    for (size_t i = 0; i < s->num_adds; i++) {
        struct add *a = &s->adds[i];
        if (w && !by_key(&s->adds[w - 1], a)) {
            struct add *x = &s->adds[w - 1];
            double *xt = (double *)&x->total;
            const double *at = (const double *)&a->total;
            for (int k = 0; k < MLS_CELL_FIELDS; k++)
                xt[k] += at[k];
            if (a->num > x->num) {
                double *n = realloc(x->classes, a->num * sizeof(double));
                if (!n)
                    return oom(s, "summing bucket deltas");
                memset(n + x->num, 0, (a->num - x->num) * sizeof(double));
                x->classes = n;
                x->num = a->num;
            }
            for (size_t k = 0; k < a->num; k++)
                x->classes[k] += a->classes[k];
            free(a->combo);
            free(a->classes);
            continue;
        }
        s->adds[w++] = *a;
    }
    s->num_adds = w;
    int rc = 0;
    for (size_t from = 0, n = 0; from < s->num_adds && !rc; from += n) {
        /* Statements of at most ADD_ROWS rows and ADD_DOUBLES doubles: each is summed by
         * mls_addv well within --state-timeout (wide buckets: a few rows a statement). */
        size_t doubles = 0;
        for (n = 0; from + n < s->num_adds && n < ADD_ROWS &&
                    (!n || doubles + s->adds[from + n].num <= ADD_DOUBLES);
             n++)
            doubles += s->adds[from + n].num + MLS_CELL_FIELDS;
        struct text sql = {0};
        struct text *vals = calloc(n * 6, sizeof(*vals));
        const char **p = calloc(n * 6, sizeof(*p));
        if (!vals || !p) {
            free(vals);
            free(p);
            return oom(s, "writing buckets");
        }
        puts_(&sql, "INSERT INTO buckets(generation, combo, start, width, total, classes) VALUES");
        for (size_t i = 0; i < n; i++) {
            const struct add *a = &s->adds[from + i];
            char ph[96];
            size_t k = i * 6;
            snprintf(ph, sizeof(ph), "%s($%zu,$%zu,$%zu,$%zu,$%zu::float8[],$%zu::float8[])",
                     i ? "," : "", k + 1, k + 2, k + 3, k + 4, k + 5, k + 6);
            puts_(&sql, ph);
            char num[32];
            snprintf(num, sizeof(num), "%lld", (long long)a->gen);
            puts_(&vals[k], num);
            puts_(&vals[k + 1], a->combo);
            snprintf(num, sizeof(num), "%lld", (long long)a->start);
            puts_(&vals[k + 2], num);
            snprintf(num, sizeof(num), "%d", (int)a->width);
            puts_(&vals[k + 3], num);
            put_array(&vals[k + 4], (const double *)&a->total, MLS_CELL_FIELDS);
            if (a->classes)
                put_array(&vals[k + 5], a->classes, a->num);
        }
        puts_(&sql, " ON CONFLICT (generation, combo, start, width) DO UPDATE SET "
                    "total = mls_addv(buckets.total, EXCLUDED.total), "
                    "classes = mls_addv(buckets.classes, EXCLUDED.classes), "
                    "xid = pg_current_xact_id()");
        int failed = sql.failed;
        for (size_t i = 0; i < n * 6; i++) {
            failed |= vals[i].failed;
            p[i] = vals[i].p; /* (NULL: SQL NULL, an absent classes array) */
        }
        rc = failed ? oom(s, "writing buckets")
                    : command(s, "adding to buckets", sql.p, (int)(n * 6), p);
        for (size_t i = 0; i < n * 6; i++)
            free(vals[i].p);
        free(vals);
        free(p);
        free(sql.p);
    }
    return rc;
}

/* The live counts' changes, summed per generation. */
static int flush_lives(struct pg_store *s)
{
    for (size_t i = 0; i < s->num_lives; i++) {
        int64_t gen = s->lives[i].gen;
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = s->lives[j].gen == gen;
        if (seen)
            continue;
        double pred = 0, pos = 0;
        size_t nl = 0;
        for (size_t j = i; j < s->num_lives; j++)
            if (s->lives[j].gen == gen && s->lives[j].field == 2 &&
                (size_t)s->lives[j].index + 1 > nl)
                nl = (size_t)s->lives[j].index + 1;
        double *lab = calloc(nl ? nl : 1, sizeof(double));
        if (!lab)
            return oom(s, "writing live counts");
        for (size_t j = i; j < s->num_lives; j++) {
            const struct live *l = &s->lives[j];
            if (l->gen != gen)
                continue;
            if (l->field == 0)
                pred += l->delta;
            else if (l->field == 1)
                pos += l->delta;
            else
                lab[l->index] += l->delta;
        }
        struct text v[4] = {{0}};
        char num[32];
        snprintf(num, sizeof(num), "%lld", (long long)gen);
        puts_(&v[0], num);
        put_double(&v[1], pred);
        put_double(&v[2], pos);
        if (nl)
            put_array(&v[3], lab, nl);
        free(lab);
        const char *p[4] = {v[0].p, v[1].p, v[2].p, v[3].p};
        int rc = v[0].failed || v[1].failed || v[2].failed || v[3].failed
                     ? oom(s, "writing live counts")
                     : command(s, "counting predictions and labels",
                               "INSERT INTO live(generation, predictions, positions, labelled) "
                               "VALUES($1, $2, $3, $4::float8[]) ON CONFLICT (generation) DO "
                               "UPDATE SET predictions = live.predictions + EXCLUDED.predictions, "
                               "positions = live.positions + EXCLUDED.positions, "
                               "labelled = mls_addv(live.labelled, EXCLUDED.labelled), "
                               "xid = pg_current_xact_id()",
                               4, p);
        for (int k = 0; k < 4; k++)
            free(v[k].p);
        if (rc)
            return -1;
    }
    s->num_lives = 0;
    return 0;
}

static int live_add(struct pg_store *s, int64_t gen, int field, int32_t index, double delta)
{
    if (GROW(s, lives, num_lives, cap_lives))
        return oom(s, "counting predictions");
    s->lives[s->num_lives++] = (struct live){gen, field, index, delta};
    return 0;
}

/* The labels waiting, one upsert (the last of a position wins). */
static int flush_labels(struct pg_store *s)
{
    int rc = 0;
    for (size_t from = 0; from < s->num_labels && !rc; from += LABEL_ROWS) {
        size_t n = s->num_labels - from < LABEL_ROWS ? s->num_labels - from : LABEL_ROWS;
        struct text cols[7] = {{0}};
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            const struct label_row *r = &s->labels[from + i];
            int later = 0;
            for (size_t j = from + i + 1; j < from + n && !later; j++)
                later = s->labels[j].pred == r->pred && s->labels[j].slot == r->slot;
            if (later) /* (quadratic only in one op's repeats: an op puts a position once) */
                continue;
            char num[32];
            for (int k = 0; k < 7; k++)
                put(&cols[k], kept ? "," : "{", 1);
            snprintf(num, sizeof(num), "%lld", (long long)r->pred);
            puts_(&cols[0], num);
            snprintf(num, sizeof(num), "%d", (int)r->slot);
            puts_(&cols[1], num);
            snprintf(num, sizeof(num), "%d", (int)r->l.cls);
            puts_(&cols[2], num);
            put_double(&cols[3], r->l.value);
            put_double(&cols[4], r->l.weight);
            put_double(&cols[5], r->l.first);
            put_double(&cols[6], r->t);
            kept++;
        }
        int failed = 0;
        const char *p[7];
        for (int k = 0; k < 7; k++) {
            put(&cols[k], "}", 1);
            failed |= cols[k].failed;
            p[k] = cols[k].p;
        }
        rc = failed ? oom(s, "writing labels")
                    : command(s, "writing labels",
                              "INSERT INTO labels(pred, slot, cls, value, weight, first, t) "
                              "SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], "
                              "$4::float8[], $5::float8[], $6::float8[], $7::float8[]) "
                              "ON CONFLICT (pred, slot) DO UPDATE SET cls = EXCLUDED.cls, "
                              "value = EXCLUDED.value, weight = EXCLUDED.weight, "
                              "first = EXCLUDED.first, t = EXCLUDED.t",
                              7, p);
        for (int k = 0; k < 7; k++)
            free(cols[k].p);
    }
    s->num_labels = 0;
    return rc;
}

static int pg_savepoint(struct mls_store *b)
{
    struct pg_store *s = self(b);
    if (s->num_marks == MAX_MARKS) {
        snprintf(s->err, sizeof(s->err), "savepoints nested too deep");
        return -1;
    }
    if (flush_labels(s) || command(s, "marking a savepoint", "SAVEPOINT op", 0, NULL))
        return -1;
    s->marks[s->num_marks++] =
        (struct mark){s->num_adds, s->num_lives, s->num_labels, s->labels_locked};
    return 0;
}

static int pg_release(struct mls_store *b)
{
    struct pg_store *s = self(b);
    if (s->num_marks)
        s->num_marks--;
    return flush_labels(s) || command(s, "ending a savepoint", "RELEASE SAVEPOINT op", 0, NULL);
}

static void pg_undo(struct mls_store *b)
{
    struct pg_store *s = self(b);
    if (!s->num_marks)
        return;
    struct mark m = s->marks[--s->num_marks];
    truncate_adds(s, m.adds);
    s->num_lives = m.lives;
    s->num_labels = m.labels;
    s->labels_locked = m.labels_locked;
    /* What was read may have been changed by the op undone: read again. */
    clear_reads(s);
    if (s->c && !command(s, "undoing an op", "ROLLBACK TO SAVEPOINT op", 0, NULL))
        command(s, "undoing an op", "RELEASE SAVEPOINT op", 0, NULL);
}

/* Whether every monitor the transaction wrote to still has the generation this replica knows
 * (its rows read FOR KEY SHARE, which a replace's or a delete's new generation, a key, waits
 * for: it comes after this commit, and clears what it wrote). Written to
 * an old one, an acknowledged change would be lost with that generation. 0, or -1. */
static int check_generations(struct pg_store *s)
{
    if (!s->num_touched)
        return 0;
    struct text names = {0};
    put(&names, "{", 1);
    for (size_t i = 0; i < s->num_touched; i++) {
        if (i)
            put(&names, ",", 1);
        put_quoted(&names, s->touched[i].name);
    }
    put(&names, "}", 1);
    if (names.failed)
        return oom(s, "checking monitors");
    const char *p[] = {names.p};
    PGresult *r = query(s, "checking monitors",
                        "SELECT name, generation, config IS NOT NULL FROM monitors "
                        "WHERE name = ANY($1::text[]) ORDER BY name FOR KEY SHARE",
                        1, p, NULL, NULL, 0);
    free(names.p);
    if (!r)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < s->num_touched && !rc; i++) {
        int same = 0;
        for (int k = 0; k < PQntuples(r); k++)
            same |= !strcmp(PQgetvalue(r, k, 0), s->touched[i].name) &&
                    strtoll(PQgetvalue(r, k, 1), NULL, 10) == s->touched[i].gen &&
                    !strcmp(PQgetvalue(r, k, 2), "t");
        if (!same) {
            snprintf(s->err, sizeof(s->err),
                     "monitor %.130s was replaced or deleted through another replica meanwhile "
                     "(this one learns it now)",
                     s->touched[i].name);
            rc = -1;
        }
    }
    PQclear(r);
    return rc;
}

static int pg_commit(struct mls_store *b)
{
    struct pg_store *s = self(b);
    if (flush_labels(s) || flush_adds(s) || flush_lives(s) || check_generations(s))
        return -1;
    /* Room for the generations this commit makes, before it: nothing can fail after it. */
    while (s->cap_gens < s->num_gens + s->num_pending)
        if (grow((void **)&s->gens, &s->cap_gens, s->cap_gens, sizeof(*s->gens)))
            return oom(s, "recording a monitor's generation");
    if (command(s, "committing", "COMMIT", 0, NULL))
        return s->c ? -1 : MLS_STORE_UNKNOWN; /* (the connection went with the answer) */
    for (size_t i = 0; i < s->num_pending; i++) {
        const struct gen *g = &s->pending[i];
        if (g->gen < 0)
            gen_remove(s, g->name);
        else
            gen_set(s, &s->gens, &s->num_gens, &s->cap_gens, g->name, g->gen); /* (room made) */
    }
    clear_tx(s);
    return 0;
}

static void pg_rollback(struct mls_store *b)
{
    struct pg_store *s = self(b);
    clear_tx(s);
    if (s->c && PQtransactionStatus(s->c) != PQTRANS_IDLE)
        command(s, "rolling back", "ROLLBACK", 0, NULL);
}

/* ---- Monitors, buckets, ids ----------------------------------------------------------------- */

static int pg_put_monitor(struct mls_store *b, const char *name, const char *config, int clear)
{
    struct pg_store *s = self(b);
    const char *p[] = {name, config, clear ? "true" : "false"};
    /* A replace takes the row whatever it holds; a create only an absent or deleted one (0 rows:
     * another replica created it since this one's last poll). The generation replaced is
     * garbage from here. */
    PGresult *r =
        query(s, "writing a monitor",
              "WITH old AS (SELECT generation, config FROM monitors WHERE name = $1 FOR UPDATE), "
              "dead AS (INSERT INTO dead_generations SELECT generation FROM old "
              "WHERE $3::bool OR config IS NULL ON CONFLICT DO NOTHING) "
              "INSERT INTO monitors(name, generation, config) "
              "VALUES($1, nextval('generations'), $2) ON CONFLICT (name) DO UPDATE SET "
              "generation = EXCLUDED.generation, config = EXCLUDED.config, "
              "xid = pg_current_xact_id() WHERE $3::bool OR monitors.config IS NULL "
              "RETURNING generation",
              3, p, NULL, NULL, 0);
    if (!r)
        return -1;
    if (PQntuples(r) == 0 && !clear) {
        PQclear(r);
        return 1;
    }
    int64_t gen = PQntuples(r) == 1 ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    if (gen < 0) {
        snprintf(s->err, sizeof(s->err), "writing a monitor: no generation returned");
        return -1;
    }
    return gen_set(s, &s->pending, &s->num_pending, &s->cap_pending, name, gen);
}

static int pg_delete_monitor(struct mls_store *b, const char *name)
{
    struct pg_store *s = self(b);
    const char *p[] = {name};
    /* A tombstone row (config NULL, a new generation): the other replicas' feed sees it. A
     * monitor deleted already (through another replica since this one's poll): 0 rows, 1. */
    PGresult *r = query(s, "deleting a monitor",
                        "WITH old AS (SELECT generation FROM monitors WHERE name = $1 AND config "
                        "IS NOT NULL FOR UPDATE), "
                        "dead AS (INSERT INTO dead_generations SELECT generation FROM old "
                        "ON CONFLICT DO NOTHING) "
                        "UPDATE monitors SET generation = nextval('generations'), config = NULL, "
                        "xid = pg_current_xact_id() WHERE name = $1 AND config IS NOT NULL",
                        1, p, NULL, NULL, 0);
    if (!r)
        return -1;
    int gone = strcmp(PQcmdTuples(r), "1") != 0;
    PQclear(r);
    if (gone)
        return 1;
    return gen_set(s, &s->pending, &s->num_pending, &s->cap_pending, name, -1);
}

static int pg_claim_id(struct mls_store *b, const char *monitor, const char *id, int64_t t)
{
    struct pg_store *s = self(b);
    int64_t gen = gen_of(s, monitor);
    if (gen < 0)
        return -1;
    char g[32], tt[32];
    snprintf(g, sizeof(g), "%lld", (long long)gen);
    snprintf(tt, sizeof(tt), "%lld", (long long)t);
    const char *p[] = {g, id, tt};
    PGresult *r = query(s, "recording an observation id",
                        "INSERT INTO ids(generation, id, t) VALUES($1, $2, $3) "
                        "ON CONFLICT DO NOTHING",
                        3, p, NULL, NULL, 0);
    if (!r)
        return -1;
    int fresh = !strcmp(PQcmdTuples(r), "1");
    PQclear(r);
    return fresh;
}

static int pg_add_bucket(struct mls_store *b, const char *monitor, const char *combo, int64_t start,
                         int32_t width, const struct mls_cell *total,
                         const struct mls_class_sums *classes, int64_t class_slots)
{
    struct pg_store *s = self(b);
    int64_t gen = gen_of(s, monitor);
    if (gen < 0)
        return -1;
    if (GROW(s, adds, num_adds, cap_adds))
        return oom(s, "adding to a bucket");
    struct add a = {.gen = gen, .start = start, .width = width, .total = *total};
    a.combo = strdup(combo);
    if (classes && class_slots > 0) {
        a.num = (size_t)class_slots * MLS_CLASS_FIELDS;
        a.classes = malloc(a.num * sizeof(double));
        if (a.classes)
            memcpy(a.classes, classes, a.num * sizeof(double));
    }
    if (!a.combo || (a.num && !a.classes)) {
        free(a.combo);
        free(a.classes);
        return oom(s, "adding to a bucket");
    }
    s->adds[s->num_adds++] = a;
    return 0;
}

static int pg_drop_bucket(struct mls_store *b, const char *monitor, const char *combo,
                          int64_t start, int32_t width)
{
    struct pg_store *s = self(b);
    int64_t gen = gen_of(s, monitor);
    if (gen < 0)
        return -1;
    char g[32], st[32], w[16];
    snprintf(g, sizeof(g), "%lld", (long long)gen);
    snprintf(st, sizeof(st), "%lld", (long long)start);
    snprintf(w, sizeof(w), "%d", (int)width);
    const char *p[] = {g, combo, st, w};
    /* (a tombstone only when a row went: another replica's upkeep may have dropped it) */
    return command(s, "dropping a bucket",
                   "WITH d AS (DELETE FROM buckets WHERE generation = $1 AND combo = $2 AND "
                   "start = $3 AND width = $4 RETURNING 1) "
                   "INSERT INTO bucket_drops(generation, combo, start, width) "
                   "SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM d)",
                   4, p);
}

/* The rollup of a minute bucket into its hour, by the database's figures: several replicas may
 * roll the same minute, and only the one that deletes it adds it to the hour. */
static int pg_roll_bucket(struct mls_store *b, const char *monitor, const char *combo,
                          int64_t start, int64_t hour)
{
    struct pg_store *s = self(b);
    int64_t gen = gen_of(s, monitor);
    if (gen < 0)
        return -1;
    char g[32], st[32], h[32];
    snprintf(g, sizeof(g), "%lld", (long long)gen);
    snprintf(st, sizeof(st), "%lld", (long long)start);
    snprintf(h, sizeof(h), "%lld", (long long)hour);
    const char *p[] = {g, combo, st, h};
    return command(
        s, "rolling a minute into its hour",
        "WITH d AS (DELETE FROM buckets WHERE generation = $1 AND combo = $2 AND start = $3 AND "
        "width = 60 RETURNING total, classes), "
        "t AS (INSERT INTO bucket_drops(generation, combo, start, width) "
        "SELECT $1, $2, $3, 60 FROM d) "
        "INSERT INTO buckets(generation, combo, start, width, total, classes) "
        "SELECT $1, $2, $4, 3600, total, classes FROM d "
        "ON CONFLICT (generation, combo, start, width) DO UPDATE SET "
        "total = mls_addv(buckets.total, EXCLUDED.total), "
        "classes = mls_addv(buckets.classes, EXCLUDED.classes), xid = pg_current_xact_id()",
        4, p);
}

static int pg_purge_ids(struct mls_store *b, int64_t before)
{
    struct pg_store *s = self(b);
    char t[32];
    snprintf(t, sizeof(t), "%lld", (long long)before);
    const char *p[] = {t};
    return command(s, "forgetting old observation ids", "DELETE FROM ids WHERE t < $1", 1, p);
}

/* ---- Late labels ------------------------------------------------------------------------------
 */

static struct pred_entry *cached_pred(struct pg_store *s, int64_t gen, const char *id);

static void forget_pred(struct pg_store *s, int64_t gen, const char *id)
{
    struct pred_entry *e;
    while ((e = cached_pred(s, gen, id)) != NULL)
        e->found = -1; /* (stale: read again) */
}

static int pg_put_prediction(struct mls_store *b, const char *monitor, const char *id, double t,
                             const char *combo, const void *outputs, size_t bytes, int64_t *pred)
{
    struct pg_store *s = self(b);
    int64_t gen = gen_of(s, monitor);
    if (gen < 0)
        return -1;
    if (bytes > INT_MAX) {
        snprintf(s->err, sizeof(s->err), "a prediction's outputs are too large");
        return -1;
    }
    char g[32];
    snprintf(g, sizeof(g), "%lld", (long long)gen);
    struct text tt = {0};
    put_double(&tt, t);
    if (tt.failed)
        return oom(s, "storing a prediction");
    const char *p[] = {g, id, tt.p, combo, outputs ? outputs : ""};
    const int lens[] = {0, 0, 0, 0, (int)bytes};
    const int fmts[] = {0, 0, 0, 0, 1};
    PGresult *r = query(s, "storing a prediction",
                        "INSERT INTO predictions(generation, id, t, combo, outputs) "
                        "VALUES($1, $2, $3, $4, $5) ON CONFLICT (generation, id) DO NOTHING "
                        "RETURNING pred",
                        5, p, lens, fmts, 0);
    free(tt.p);
    if (!r)
        return -1;
    int stored = PQntuples(r) == 1;
    if (stored)
        *pred = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    forget_pred(s, gen, id);
    if (stored && live_add(s, gen, 0, 0, 1))
        return -1;
    return stored;
}

static void pg_hint_prediction(struct mls_store *b, const char *monitor, const char *id)
{
    struct pg_store *s = self(b);
    if (strcmp(s->hint_monitor, monitor)) {
        for (size_t i = 0; i < s->num_hint_ids; i++)
            free(s->hint_ids[i]);
        s->num_hint_ids = 0;
        snprintf(s->hint_monitor, sizeof(s->hint_monitor), "%s", monitor);
    }
    char *copy = strdup(id);
    if (!copy || GROW(s, hint_ids, num_hint_ids, cap_hint_ids)) {
        free(copy); /* (a hint: lost, the lookup reads it alone) */
        return;
    }
    s->hint_ids[s->num_hint_ids++] = copy;
}

/* The labels' lock (LABELS_LOCK), once a transaction: predictions, labels and their ids are
 * written by one transaction of all replicas at a time. A group commit takes several requests'
 * ids and predictions in turn, in no order all replicas could share; without it two replicas
 * holding retries of each other's requests wait for each other. */
static int lock_labels(struct pg_store *s)
{
    if (s->labels_locked)
        return 0;
    if (command(s, "taking the labels' lock", "SELECT pg_advisory_xact_lock(" LABELS_LOCK ")", 0,
                NULL))
        return -1;
    s->labels_locked = 1;
    return 0;
}

static int pg_late_begin(struct mls_store *b)
{
    return lock_labels(self(b));
}

/* A big-endian integer of a binary result. */
static uint64_t be(const char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | (unsigned char)p[i];
    return v;
}

/*
 * Reads the predictions of ids, their outputs with them, into the cache (each id read gets an
 * entry, found or not), and locks their rows: a label of the same prediction through another
 * replica waits. Transactions that label first take one advisory lock, so that two of them
 * never hold some of each other's predictions (a group commit reads several requests' ids in
 * turn: locking them in one order across all of them is not possible); the rows' own locks
 * then order them against what else writes predictions (expiry, a replace).
 */
static int read_preds(struct pg_store *s, int64_t gen, char **ids, size_t n)
{
    if (lock_labels(s))
        return -1;
    struct text arr = {0};
    put(&arr, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            put(&arr, ",", 1);
        put_quoted(&arr, ids[i]);
    }
    put(&arr, "}", 1);
    char g[32];
    snprintf(g, sizeof(g), "%lld", (long long)gen);
    if (arr.failed)
        return oom(s, "reading predictions");
    const char *p[] = {g, arr.p};
    PGresult *r = query(s, "reading predictions",
                        "SELECT id, pred, t, combo, outputs FROM predictions WHERE generation = $1 "
                        "AND id = ANY($2::text[]) ORDER BY pred FOR UPDATE",
                        2, p, NULL, NULL, 1);
    free(arr.p);
    if (!r)
        return -1;
    int rc = 0;
    size_t first = s->num_preds;
    for (size_t i = 0; i < n && !rc; i++) {
        if (cached_pred(s, gen, ids[i])) /* (read already, or twice in ids: one entry) */
            continue;
        struct pred_entry e = {.id = strdup(ids[i]), .gen = gen};
        if (!e.id || GROW(s, preds, num_preds, cap_preds) ||
            index_add(&s->pred_index, pred_hash(gen, e.id), s->num_preds)) {
            free(e.id);
            rc = oom(s, "reading predictions");
            break;
        }
        s->preds[s->num_preds++] = e;
    }
    for (int k = 0; k < PQntuples(r) && !rc; k++) {
        if (PQgetlength(r, k, 1) != 8 || PQgetlength(r, k, 2) != 8) {
            snprintf(s->err, sizeof(s->err), "reading predictions: unexpected binary values");
            rc = -1;
            break;
        }
        char *id = strndup(PQgetvalue(r, k, 0), (size_t)PQgetlength(r, k, 0));
        struct pred_entry *e = id ? cached_pred(s, gen, id) : NULL;
        free(id);
        if (!e || (size_t)(e - s->preds) < first)
            continue; /* (an id not asked for: none) */
        e->found = 1;
        e->pred = (int64_t)be(PQgetvalue(r, k, 1), 8);
        uint64_t bits = be(PQgetvalue(r, k, 2), 8);
        memcpy(&e->t, &bits, sizeof(e->t));
        e->combo = strndup(PQgetvalue(r, k, 3), (size_t)PQgetlength(r, k, 3));
        e->bytes = (size_t)PQgetlength(r, k, 4);
        e->outputs = malloc(e->bytes ? e->bytes : 1);
        if (!e->combo || !e->outputs ||
            index_add(&s->by_pred, label_hash(e->pred, -1), (size_t)(e - s->preds))) {
            rc = oom(s, "reading predictions");
            break;
        }
        memcpy(e->outputs, PQgetvalue(r, k, 4), e->bytes);
    }
    PQclear(r);
    return rc;
}

/* The entry of a prediction read (found) in this transaction, by its key; NULL when none. */
static struct pred_entry *read_pred(struct pg_store *s, int64_t pred)
{
    if (!s->by_pred.count)
        return NULL;
    uint64_t h = label_hash(pred, -1);
    size_t mask = s->by_pred.cap - 1;
    for (size_t j = (size_t)h & mask; s->by_pred.slots[j].e; j = (j + 1) & mask) {
        struct pred_entry *e = &s->preds[s->by_pred.slots[j].e - 1];
        if (e->found == 1 && e->pred == pred)
            return e;
    }
    return NULL;
}

static struct pred_entry *cached_pred(struct pg_store *s, int64_t gen, const char *id)
{
    if (!s->pred_index.count)
        return NULL;
    uint64_t h = pred_hash(gen, id);
    size_t mask = s->pred_index.cap - 1;
    for (size_t j = (size_t)h & mask; s->pred_index.slots[j].e; j = (j + 1) & mask) {
        struct pred_entry *e = &s->preds[s->pred_index.slots[j].e - 1];
        if (s->pred_index.slots[j].h == h && e->gen == gen && e->found >= 0 && !strcmp(e->id, id))
            return e;
    }
    return NULL;
}

static int pg_get_prediction(struct mls_store *b, const char *monitor, const char *id,
                             int64_t *pred, double *t, const char **combo)
{
    struct pg_store *s = self(b);
    int64_t gen = gen_of(s, monitor);
    if (gen < 0)
        return -1;
    struct pred_entry *e = cached_pred(s, gen, id);
    if (!e) {
        /* The hinted batch (in pieces) with this one, in one statement each. */
        char *one[1] = {(char *)id};
        int hinted = 0;
        for (size_t i = 0; i < s->num_hint_ids && !hinted; i++)
            hinted = !strcmp(s->hint_ids[i], id) && !strcmp(s->hint_monitor, monitor);
        if (hinted) {
            for (size_t from = 0; from < s->num_hint_ids; from += 1000) {
                size_t n = s->num_hint_ids - from < 1000 ? s->num_hint_ids - from : 1000;
                if (read_preds(s, gen, s->hint_ids + from, n))
                    return -1;
            }
            for (size_t i = 0; i < s->num_hint_ids; i++)
                free(s->hint_ids[i]);
            s->num_hint_ids = 0;
        } else if (read_preds(s, gen, one, 1)) {
            return -1;
        }
        e = cached_pred(s, gen, id);
        if (!e) {
            snprintf(s->err, sizeof(s->err), "reading a prediction: not read");
            return -1;
        }
    }
    if (!e->found)
        return 0;
    *pred = e->pred;
    *t = e->t;
    *combo = e->combo;
    return 1;
}

static int pg_read_outputs(struct mls_store *b, int64_t pred, void *out, size_t offset,
                           size_t bytes, size_t row_bytes)
{
    struct pg_store *s = self(b);
    /* (the writer reads the outputs of predictions it has just looked up: read with them) */
    const struct pred_entry *e = read_pred(s, pred);
    if (!e) {
        snprintf(s->err, sizeof(s->err), "the outputs of prediction %lld, which was not read first",
                 (long long)pred);
        return -1;
    }
    if (e->bytes != row_bytes || offset > row_bytes || bytes > row_bytes - offset) {
        snprintf(s->err, sizeof(s->err),
                 "prediction row %lld is stored with %zu bytes of outputs; %zu were expected",
                 (long long)pred, e->bytes, row_bytes);
        return -1;
    }
    if (bytes)
        memcpy(out, (const char *)e->outputs + offset, bytes);
    return 0;
}

static struct label_entry *cached_label(struct pg_store *s, int64_t pred, int32_t slot)
{
    if (!s->label_index.count)
        return NULL;
    uint64_t h = label_hash(pred, slot);
    size_t mask = s->label_index.cap - 1;
    for (size_t j = (size_t)h & mask; s->label_index.slots[j].e; j = (j + 1) & mask) {
        struct label_entry *e = &s->lbls[s->label_index.slots[j].e - 1];
        if (e->pred == pred && e->slot == slot)
            return e;
    }
    return NULL;
}

/* A new cache entry for a position (not found until set). */
static struct label_entry *label_entry_add(struct pg_store *s, int64_t pred, int32_t slot)
{
    if (GROW(s, lbls, num_lbls, cap_lbls) ||
        index_add(&s->label_index, label_hash(pred, slot), s->num_lbls)) {
        oom(s, "reading labels");
        return NULL;
    }
    struct label_entry *e = &s->lbls[s->num_lbls++];
    *e = (struct label_entry){.pred = pred, .slot = slot};
    return e;
}

static void pg_hint_label(struct mls_store *b, int64_t pred, int32_t slot)
{
    struct pg_store *s = self(b);
    if (s->num_lbls && cached_label(s, pred, slot))
        return;
    if (GROW(s, hint_labels, num_hint_labels, cap_hint_labels))
        return;
    s->hint_labels[s->num_hint_labels++] = (struct label_entry){.pred = pred, .slot = slot};
}

/* Reads the labels of n positions into the cache (each gets an entry, found or not). */
static int read_labels(struct pg_store *s, const struct label_entry *want, size_t n)
{
    struct text preds = {0}, slots = {0};
    put(&preds, "{", 1);
    put(&slots, "{", 1);
    for (size_t i = 0; i < n; i++) {
        char num[32];
        snprintf(num, sizeof(num), "%s%lld", i ? "," : "", (long long)want[i].pred);
        puts_(&preds, num);
        snprintf(num, sizeof(num), "%s%d", i ? "," : "", (int)want[i].slot);
        puts_(&slots, num);
    }
    put(&preds, "}", 1);
    put(&slots, "}", 1);
    if (preds.failed || slots.failed) {
        free(preds.p);
        free(slots.p);
        return oom(s, "reading labels");
    }
    const char *p[] = {preds.p, slots.p};
    PGresult *r = query(s, "reading labels",
                        "SELECT l.pred, l.slot, l.cls, l.value, l.weight, l.first FROM labels l "
                        "JOIN unnest($1::bigint[], $2::int[]) AS u(p, s) "
                        "ON l.pred = u.p AND l.slot = u.s",
                        2, p, NULL, NULL, 0);
    free(preds.p);
    free(slots.p);
    if (!r)
        return -1;
    size_t first = s->num_lbls;
    for (size_t i = 0; i < n; i++) {
        if (!cached_label(s, want[i].pred, want[i].slot) &&
            !label_entry_add(s, want[i].pred, want[i].slot)) {
            PQclear(r);
            return -1;
        }
    }
    for (int k = 0; k < PQntuples(r); k++) {
        int64_t pred = strtoll(PQgetvalue(r, k, 0), NULL, 10);
        int32_t slot = (int32_t)strtol(PQgetvalue(r, k, 1), NULL, 10);
        struct label_entry *e = cached_label(s, pred, slot);
        if (e && (size_t)(e - s->lbls) >= first) { /* (read now, not written by this op) */
            e->found = 1;
            e->l.cls = (int32_t)strtol(PQgetvalue(r, k, 2), NULL, 10);
            e->l.value = strtod(PQgetvalue(r, k, 3), NULL);
            e->l.weight = strtod(PQgetvalue(r, k, 4), NULL);
            e->l.first = strtod(PQgetvalue(r, k, 5), NULL);
        }
    }
    PQclear(r);
    return 0;
}

static int pg_get_label(struct mls_store *b, int64_t pred, int32_t slot, struct mls_label *out)
{
    struct pg_store *s = self(b);
    struct label_entry *e = cached_label(s, pred, slot);
    if (!e) {
        struct label_entry one = {.pred = pred, .slot = slot};
        int hinted = 0;
        for (size_t i = 0; i < s->num_hint_labels && !hinted; i++)
            hinted = s->hint_labels[i].pred == pred && s->hint_labels[i].slot == slot;
        int rc = 0;
        if (hinted) {
            for (size_t from = 0; from < s->num_hint_labels && !rc; from += 1000)
                rc = read_labels(s, s->hint_labels + from,
                                 s->num_hint_labels - from < 1000 ? s->num_hint_labels - from
                                                                  : 1000);
            s->num_hint_labels = 0;
        } else {
            rc = read_labels(s, &one, 1);
        }
        if (rc)
            return -1;
        e = cached_label(s, pred, slot);
        if (!e) {
            snprintf(s->err, sizeof(s->err), "reading a label: not read");
            return -1;
        }
    }
    if (e->found)
        *out = e->l;
    return e->found;
}

/* The generation of a prediction read in this transaction; -1 when not (with s->err). */
static int64_t gen_of_pred(struct pg_store *s, int64_t pred)
{
    const struct pred_entry *e = read_pred(s, pred);
    if (e)
        return e->gen;
    snprintf(s->err, sizeof(s->err), "a label of prediction %lld, which was not read first",
             (long long)pred);
    return -1;
}

static int pg_put_label(struct mls_store *b, int64_t pred, int32_t slot, const struct mls_label *l,
                        double t)
{
    struct pg_store *s = self(b);
    int64_t gen = gen_of_pred(s, pred);
    if (gen < 0)
        return -1;
    struct mls_label before;
    int had = pg_get_label(b, pred, slot, &before);
    if (had < 0)
        return -1;
    /* The live counts follow: a new position, or a label of another class. */
    if ((had && before.cls >= 0 && live_add(s, gen, 2, before.cls, -1)) ||
        (!had && live_add(s, gen, 1, 0, 1)) || (l->cls >= 0 && live_add(s, gen, 2, l->cls, 1)))
        return -1;
    if (GROW(s, labels, num_labels, cap_labels))
        return oom(s, "writing labels");
    s->labels[s->num_labels++] = (struct label_row){pred, slot, *l, t};
    /* (what get_label answers next in this transaction: pg_get_label cached it just above) */
    struct label_entry *e = cached_label(s, pred, slot);
    if (!e && !(e = label_entry_add(s, pred, slot)))
        return -1;
    e->found = 1;
    e->l = *l;
    return 0;
}

/* Deletes predictions (the statement's rows: `pred` of those to delete) with their labels:
 * counts them out of the live counts and of labelled, positions. Returns the count deleted. */
static long delete_preds(struct pg_store *s, int64_t gen, const char *select, int n,
                         const char *const *p, double *labelled, int64_t num_classes,
                         double *positions)
{
    struct text sql = {0};
    puts_(&sql, "WITH p AS (");
    puts_(&sql, select);
    puts_(&sql, "), d AS (DELETE FROM predictions WHERE pred IN (SELECT pred FROM p) RETURNING "
                "pred), l AS (DELETE FROM labels WHERE pred IN (SELECT pred FROM d) RETURNING cls) "
                "SELECT -2, count(*) FROM d UNION ALL SELECT cls, count(*) FROM l GROUP BY cls");
    if (sql.failed)
        return oom(s, "deleting predictions");
    PGresult *r = query(s, "deleting predictions", sql.p, n, p, NULL, NULL, 0);
    free(sql.p);
    if (!r)
        return -1;
    long removed = 0;
    int rc = 0;
    for (int k = 0; k < PQntuples(r) && !rc; k++) {
        long cls = strtol(PQgetvalue(r, k, 0), NULL, 10);
        double count = strtod(PQgetvalue(r, k, 1), NULL);
        if (cls == -2) {
            removed = (long)count;
            rc = count && live_add(s, gen, 0, 0, -count);
            continue;
        }
        *positions -= count;
        rc = live_add(s, gen, 1, 0, -count);
        if (!rc && cls >= 0 && cls < num_classes) {
            labelled[cls] -= count;
            rc = live_add(s, gen, 2, (int32_t)cls, -count);
        }
    }
    PQclear(r);
    /* (what was read of them is stale now) */
    clear_reads(s);
    return rc ? -1 : removed;
}

static long pg_expire(struct mls_store *b, const char *monitor, double before, double *labelled,
                      int64_t num_classes, double *positions, int *more)
{
    struct pg_store *s = self(b);
    *more = 0;
    int64_t gen = gen_of(s, monitor);
    /* (the upkeep's expiry takes turns with labels too: it deletes predictions they lock) */
    if (gen < 0 || lock_labels(s))
        return -1;
    char g[32], lim[16];
    struct text bt = {0};
    put_double(&bt, before);
    if (bt.failed)
        return oom(s, "expiring predictions");
    snprintf(g, sizeof(g), "%lld", (long long)gen);
    snprintf(lim, sizeof(lim), "%d", GC_ROWS);
    const char *p[] = {g, bt.p, lim};
    /* SKIP LOCKED: replicas expiring at once share the rows instead of waiting on each other. */
    long n = delete_preds(s, gen,
                          "SELECT pred FROM predictions WHERE generation = $1 AND t < $2 "
                          "ORDER BY pred LIMIT $3 FOR UPDATE SKIP LOCKED",
                          3, p, labelled, num_classes, positions);
    free(bt.p);
    if (n >= GC_ROWS)
        *more = 1;
    return n;
}

static int pg_drop_prediction(struct mls_store *b, const char *monitor, const char *id, int64_t ttl,
                              double now, double *labelled, int64_t num_classes, double *positions)
{
    struct pg_store *s = self(b);
    int64_t gen = gen_of(s, monitor);
    if (gen < 0)
        return -1;
    char *one[1] = {(char *)id};
    struct pred_entry *e = cached_pred(s, gen, id);
    if (!e && (read_preds(s, gen, one, 1) || !(e = cached_pred(s, gen, id))))
        return -1;
    if (!e->found || !mls_expired(e->t, ttl, now))
        return 0;
    char pr[32];
    snprintf(pr, sizeof(pr), "%lld", (long long)e->pred);
    const char *p[] = {pr};
    long n =
        delete_preds(s, gen, "SELECT $1::bigint AS pred", 1, p, labelled, num_classes, positions);
    return n < 0 ? -1 : n > 0;
}

/* The upkeep's share of garbage: rows of a dead generation (a batch per table), and old
 * tombstones. */
static int pg_compact(struct mls_store *b)
{
    struct pg_store *s = self(b);
    PGresult *r = query(s, "collecting garbage", "SELECT generation FROM dead_generations LIMIT 1",
                        0, NULL, NULL, NULL, 0);
    if (!r)
        return -1;
    char g[32] = "";
    if (PQntuples(r) == 1)
        snprintf(g, sizeof(g), "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    if (command(s, "collecting garbage",
                "DELETE FROM bucket_drops WHERE at < now() - interval '" TOMBSTONE_TTL "'", 0,
                NULL))
        return -1;
    if (!*g)
        return 0;
    const char *p[] = {g};
    static const char *const sql[] = {
        "DELETE FROM buckets WHERE ctid = ANY(ARRAY(SELECT ctid FROM buckets WHERE generation = $1 "
        "LIMIT 10000))",
        "DELETE FROM ids WHERE ctid = ANY(ARRAY(SELECT ctid FROM ids WHERE generation = $1 LIMIT "
        "10000))",
        "WITH d AS (DELETE FROM predictions WHERE pred = ANY(ARRAY(SELECT pred FROM predictions "
        "WHERE generation = $1 LIMIT 10000)) RETURNING pred) "
        "DELETE FROM labels WHERE pred IN (SELECT pred FROM d)",
        "DELETE FROM live WHERE generation = $1",
    };
    int left = 0;
    for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++) {
        PGresult *x = query(s, "collecting garbage", sql[i], 1, p, NULL, NULL, 0);
        if (!x)
            return -1;
        left |= atol(PQcmdTuples(x)) >= 10000 && i < 3;
        PQclear(x);
    }
    return left ? 0
                : command(s, "collecting garbage",
                          "DELETE FROM dead_generations WHERE generation = $1", 1, p);
}

static const char *pg_errmsg(struct mls_store *b)
{
    return self(b)->err;
}

static void pg_close(struct mls_store *b)
{
    struct pg_store *s = self(b);
    if (!s)
        return;
    clear_tx(s);
    disconnect(s);
    free(s->conninfo);
    free(s->gens);
    free(s->pending);
    free(s->touched);
    free(s->adds);
    free(s->lives);
    free(s->labels);
    free(s->hint_ids);
    free(s->hint_labels);
    free(s->preds);
    free(s->lbls);
    free(s->pred_index.slots);
    free(s->label_index.slots);
    free(s->by_pred.slots);
    free(s->prev);
    free(s);
}

/* ---- The feed ----------------------------------------------------------------------------------
 */

/* The monitor of a generation memory holds (a reference), or NULL. */
static struct mls_monitor *monitor_of(struct pg_store *s, struct mls_registry *g, int64_t gen)
{
    const char *name = name_of(s, gen);
    return name ? mls_registry_get(g, name) : NULL;
}

static int apply_bucket(struct pg_store *s, struct mls_monitor *m, PGresult *r, int k)
{
    const char *key = PQgetvalue(r, k, 1);
    int64_t start = strtoll(PQgetvalue(r, k, 2), NULL, 10);
    int32_t width = (int32_t)strtol(PQgetvalue(r, k, 3), NULL, 10);
    int64_t slots = mls_class_slots(&m->cfg);
    size_t nd = (size_t)slots * MLS_CLASS_FIELDS;
    struct mls_cell cell;
    double *cls = nd ? calloc(nd, sizeof(double)) : NULL;
    if (nd && !cls)
        return oom(s, "applying a bucket");
    if (parse_array(PQgetvalue(r, k, 4), (double *)&cell, MLS_CELL_FIELDS) ||
        (cls && !PQgetisnull(r, k, 5) && parse_array(PQgetvalue(r, k, 5), cls, nd))) {
        free(cls);
        snprintf(s->err, sizeof(s->err), "monitor %.130s: a stored bucket has the wrong size",
                 m->name);
        return -1;
    }
    char *values[MLS_MAX_SLICE_KEYS] = {0};
    int nk = m->cfg.num_slice_keys, over = 0, rc = 0;
    if (mls_combo_values(key, nk, values)) {
        free(cls);
        snprintf(s->err, sizeof(s->err), "monitor %.130s: a stored slice key does not parse",
                 m->name);
        return -1;
    }
    pthread_rwlock_wrlock(&m->lock);
    struct mls_combo *c = mls_monitor_combo(m, key, values, UINT32_MAX, &over);
    struct mls_cell zero;
    memset(&zero, 0, sizeof(zero));
    long bi = c ? mls_combo_find(c, start, width) : -1;
    if (c && bi < 0 && !mls_combo_add(m, c, start, width, &zero, NULL, 0))
        bi = mls_combo_find(c, start, width);
    if (bi < 0) {
        rc = oom(s, "applying a bucket");
    } else {
        struct mls_bucket *bk = &c->buckets[bi];
        bk->total = cell; /* absolute: the database's figure */
        if (cls && bk->classes)
            memcpy(bk->classes, cls, nd * sizeof(double));
        if (width == MLS_BUCKET) {
            int64_t hour = start / MLS_HOUR * MLS_HOUR;
            if (mls_combo_hour(c, hour))
                mls_combo_hour_refresh(m, c, hour);
            else if (mls_combo_hour_make(m, c, hour))
                rc = oom(s, "applying a bucket");
        }
    }
    pthread_rwlock_unlock(&m->lock);
    for (int i = 0; i < nk; i++)
        free(values[i]);
    free(cls);
    return rc;
}

static void apply_drop(struct mls_monitor *m, PGresult *r, int k)
{
    int64_t start = strtoll(PQgetvalue(r, k, 2), NULL, 10);
    int32_t width = (int32_t)strtol(PQgetvalue(r, k, 3), NULL, 10);
    pthread_rwlock_wrlock(&m->lock);
    struct mls_combo *c = mls_monitor_find_combo(m, PQgetvalue(r, k, 1));
    long bi = c ? mls_combo_find(c, start, width) : -1;
    if (bi >= 0) {
        mls_combo_drop(c, (size_t)bi);
        if (width == MLS_BUCKET)
            mls_combo_hour_refresh(m, c, start / MLS_HOUR * MLS_HOUR);
    }
    pthread_rwlock_unlock(&m->lock);
}

static int apply_live(struct pg_store *s, struct mls_monitor *m, PGresult *r, int k)
{
    int64_t nc = m->cfg.num_classes;
    double *lab = calloc(nc > 0 ? (size_t)nc : 1, sizeof(double));
    if (!lab)
        return oom(s, "applying live counts");
    const char *a = PQgetisnull(r, k, 3) ? "{}" : PQgetvalue(r, k, 3);
    /* (an array longer than the classes: a class index out of range was counted; ignored) */
    size_t len = array_len(a);
    double *tmp = calloc(len ? len : 1, sizeof(double));
    if (!tmp || parse_array(a, tmp, len)) {
        free(lab);
        free(tmp);
        snprintf(s->err, sizeof(s->err), "monitor %.130s: stored live counts do not parse",
                 m->name);
        return -1;
    }
    for (size_t i = 0; i < len && (int64_t)i < nc; i++)
        lab[i] = tmp[i];
    free(tmp);
    pthread_rwlock_wrlock(&m->lock);
    m->predictions_live = strtod(PQgetvalue(r, k, 1), NULL);
    m->positions_live = strtod(PQgetvalue(r, k, 2), NULL);
    if (m->labelled_live)
        memcpy(m->labelled_live, lab, (size_t)nc * sizeof(double));
    pthread_rwlock_unlock(&m->lock);
    free(lab);
    return 0;
}

/* The condition "row x was written after snapshot p" of the feed (pg-store.md section 3). */
static void after(struct text *t, const char *x, const char *p)
{
    puts_(t, "(");
    puts_(t, x);
    puts_(t, ".xid >= pg_snapshot_xmin(");
    puts_(t, p);
    puts_(t, ") AND NOT pg_visible_in_snapshot(");
    puts_(t, x);
    puts_(t, ".xid, ");
    puts_(t, p);
    puts_(t, "))");
}

/*
 * Brings memory up to the database: with a previous snapshot, the rows written since; without
 * (the load, or a replica out of touch too long), everything. One REPEATABLE READ transaction:
 * every statement sees the one snapshot it also returns.
 */
static int poll_db(struct pg_store *s, struct mls_registry *g, int full)
{
    if (ensure(s, "reading the changes of other replicas"))
        return -1;
    if (full || !s->prev || now_ns() - s->polled_at > FULL_AFTER_NS)
        full = 1;
    /* (the snapshot's text is PostgreSQL's own: digits, ':' and ','; checked anyway) */
    if (!full && strspn(s->prev, "0123456789:,") != strlen(s->prev))
        full = 1;
    struct text sql = {0};
    char *lit = NULL;
    if (!full) {
        size_t n = strlen(s->prev) + 32;
        lit = malloc(n);
        if (!lit)
            return oom(s, "polling");
        snprintf(lit, n, "'%s'::pg_snapshot", s->prev);
    }
    puts_(&sql, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
                "SELECT pg_current_snapshot()::text;");
    if (full) {
        puts_(&sql, "SELECT name, generation, config FROM monitors;"
                    "SELECT b.generation, b.combo, b.start, b.width, b.total, b.classes FROM "
                    "buckets b JOIN monitors m ON m.generation = b.generation "
                    "WHERE m.config IS NOT NULL;"
                    "SELECT generation, combo, start, width FROM bucket_drops WHERE false;"
                    "SELECT l.generation, l.predictions, l.positions, l.labelled FROM live l "
                    "JOIN monitors m ON m.generation = l.generation WHERE m.config IS NOT NULL;");
    } else {
        puts_(&sql, "SELECT name, generation, config FROM monitors m WHERE ");
        after(&sql, "m", lit);
        puts_(&sql, ";SELECT b.generation, b.combo, b.start, b.width, b.total, b.classes FROM "
                    "buckets b WHERE ");
        after(&sql, "b", lit);
        puts_(&sql, " OR b.generation IN (SELECT m.generation FROM monitors m WHERE m.config IS "
                    "NOT NULL AND ");
        after(&sql, "m", lit);
        puts_(&sql, ");SELECT d.generation, d.combo, d.start, d.width FROM bucket_drops d WHERE ");
        after(&sql, "d", lit);
        puts_(&sql, " AND NOT EXISTS (SELECT 1 FROM buckets b WHERE (b.generation, b.combo, "
                    "b.start, b.width) = (d.generation, d.combo, d.start, d.width));"
                    "SELECT l.generation, l.predictions, l.positions, l.labelled FROM live l "
                    "WHERE ");
        after(&sql, "l", lit);
        puts_(&sql, " OR l.generation IN (SELECT m.generation FROM monitors m WHERE m.config IS "
                    "NOT NULL AND ");
        after(&sql, "m", lit);
        puts_(&sql, ");");
    }
    puts_(&sql, "COMMIT;");
    free(lit);
    if (sql.failed)
        return oom(s, "polling");
    PGresult *r[8];
    int n = 0;
    int rc = script(s, "reading the changes of other replicas", sql.p, r, 8, &n);
    /* A connection lost while idle (the database restarted): once more on a new one. */
    if (rc && !s->c && !s->timed_out && !connect_db(s))
        rc = script(s, "reading the changes of other replicas", sql.p, r, 8, &n);
    free(sql.p);
    if (rc)
        return -1;
    if (n != 7) {
        for (int i = 0; i < n; i++)
            PQclear(r[i]);
        snprintf(s->err, sizeof(s->err), "polling: %d results instead of 7", n);
        return -1;
    }
    PGresult *mons = r[2], *bks = r[3], *drops = r[4], *lives = r[5];
    /* Monitors: a new generation is a new, empty monitor (its rows follow below); a tombstone
     * removes it. A full read also removes what the database no longer has. */
    if (full) {
        for (size_t i = g->count; i-- > 0;) {
            const char *name = g->items[i]->name;
            int live = 0;
            for (int k = 0; k < PQntuples(mons) && !live; k++)
                live = !PQgetisnull(mons, k, 2) && !strcmp(PQgetvalue(mons, k, 0), name);
            if (!live) {
                gen_remove(s, name);
                mls_registry_remove(g, name);
            }
        }
    }
    for (int k = 0; k < PQntuples(mons) && !rc; k++) {
        const char *name = PQgetvalue(mons, k, 0);
        int64_t gen = strtoll(PQgetvalue(mons, k, 1), NULL, 10);
        if (PQgetisnull(mons, k, 2)) {
            gen_remove(s, name);
            mls_registry_remove(g, name);
            continue;
        }
        struct gen *have = gen_find(s->gens, s->num_gens, name);
        if (have && have->gen == gen && !full)
            continue;
        struct mls_monitor *m =
            mls_monitor_from_stored(g, name, PQgetvalue(mons, k, 2), s->err, sizeof(s->err));
        if (!m && strncmp(s->err, "out of memory", 13)) {
            /* A config this build cannot read (written by a newer one, in a rolling upgrade):
             * that monitor is not served here, the others are, and the replica stays ready. */
            fprintf(stderr, "maskloss-server: %s; this replica does not serve it\n", s->err);
            gen_remove(s, name);
            mls_registry_remove(g, name);
            continue;
        }
        if (!m || mls_registry_put(g, m)) {
            if (m)
                oom(s, "loading a monitor");
            mls_monitor_unref(m);
            rc = -1;
            break;
        }
        rc = gen_set(s, &s->gens, &s->num_gens, &s->cap_gens, name, gen);
    }
    for (int k = 0; k < PQntuples(drops) && !rc; k++) {
        struct mls_monitor *m = monitor_of(s, g, strtoll(PQgetvalue(drops, k, 0), NULL, 10));
        if (m)
            apply_drop(m, drops, k);
        mls_monitor_unref(m);
    }
    for (int k = 0; k < PQntuples(bks) && !rc; k++) {
        struct mls_monitor *m = monitor_of(s, g, strtoll(PQgetvalue(bks, k, 0), NULL, 10));
        if (m) /* (else a dead generation's or one memory lacks: ignored) */
            rc = apply_bucket(s, m, bks, k);
        mls_monitor_unref(m);
    }
    for (int k = 0; k < PQntuples(lives) && !rc; k++) {
        struct mls_monitor *m = monitor_of(s, g, strtoll(PQgetvalue(lives, k, 0), NULL, 10));
        if (m)
            rc = apply_live(s, m, lives, k);
        mls_monitor_unref(m);
    }
    if (!rc) {
        char *snapshot = strdup(PQgetvalue(r[1], 0, 0));
        if (!snapshot) {
            rc = oom(s, "polling");
        } else {
            free(s->prev);
            s->prev = snapshot;
            s->polled_at = now_ns();
        }
    }
    for (int i = 0; i < n; i++)
        PQclear(r[i]);
    return rc;
}

static int pg_poll(struct mls_store *b, struct mls_registry *g)
{
    return poll_db(self(b), g, 0);
}

static int pg_load(struct mls_store *b, struct mls_registry *g, char *err, size_t errlen)
{
    struct pg_store *s = self(b);
    if (poll_db(s, g, 1)) {
        snprintf(err, errlen, "%s", s->err);
        return -1;
    }
    return 0;
}

static const struct mls_store_vt pg_vt = {
    .load = pg_load,
    .begin = pg_begin,
    .put_monitor = pg_put_monitor,
    .delete_monitor = pg_delete_monitor,
    .claim_id = pg_claim_id,
    .add_bucket = pg_add_bucket,
    .drop_bucket = pg_drop_bucket,
    .roll_bucket = pg_roll_bucket,
    .purge_ids = pg_purge_ids,
    .put_prediction = pg_put_prediction,
    .get_prediction = pg_get_prediction,
    .read_outputs = pg_read_outputs,
    .hint_prediction = pg_hint_prediction,
    .hint_label = pg_hint_label,
    .get_label = pg_get_label,
    .put_label = pg_put_label,
    .expire = pg_expire,
    .drop_prediction = pg_drop_prediction,
    .compact = pg_compact,
    .late_begin = pg_late_begin,
    .savepoint = pg_savepoint,
    .release = pg_release,
    .undo = pg_undo,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .poll = pg_poll,
    .errmsg = pg_errmsg,
    .close = pg_close,
};

int mls_store_open_pg(const char *conninfo, unsigned timeout_s, struct mls_store **out, char *err,
                      size_t errlen)
{
    struct pg_store *s = calloc(1, sizeof(*s));
    if (!s || !(s->conninfo = strdup(conninfo))) {
        free(s);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->base.vt = &pg_vt;
    s->timeout_ms = (timeout_s ? timeout_s : 1) * 1000u;
    mls_state_password(conninfo, s->secret_raw, s->secret_plain, sizeof(s->secret_raw));
    if (connect_db(s) || migrate(s, err, errlen)) {
        if (!s->c)
            snprintf(err, errlen, "%s", s->err);
        pg_close(&s->base);
        return -1;
    }
    *out = &s->base;
    return 0;
}
