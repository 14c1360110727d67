/*
 * store_sqlite.c -- the monitors' state in one SQLite file (store.h).
 *
 * WAL mode, synchronous=FULL: a commit has reached the disk when it returns (an application
 * crash or a power loss keeps it; sqlite.org/pragma.html#pragma_synchronous). The writer
 * thread batches many observations into one transaction (group commit), so the fsync is
 * shared. Sums are stored as blobs of doubles and added in SQL by an application function,
 * mls_addv(old, new), so that an upsert adds a delta without reading the row back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "buf.h"
#include "label_index.h"
#include "store.h"

/* 2 added predictions and labels; a file of schema 1 is upgraded when opened for writing. */
#define SCHEMA_VERSION 2

struct sqlite_store {
    struct mls_store base;
    sqlite3 *db;
    sqlite3_stmt *add, *drop, *claim, *purge;
    sqlite3_stmt *put_pred, *ins_run;
    sqlite3_stmt *old_preds, *del_pred, *scan_runs, *del_run;
    /* Labels are written in runs, one row of many labels (an op's): the labels of the op
     * being applied wait here, and are written when it is whole (release, commit). A label's
     * lid is its run << RUN_BITS | its index in the run. */
    struct run_rec *pending;
    size_t num_pending, cap_pending;
    int64_t pending_run, next_run;
    /* Where each (prediction, slot)'s label row is (label_index.h), and how far the
     * compaction of dead label rows has come (a label row id). */
    struct mls_lx lx;
    /* The predictions' ids: (hash of monitor and id, ordinal among equal hashes) -> row id
     * (the entry's lid), so that a label finds its prediction by row id, one B-tree descent
     * in the table instead of two and a text index. About 70 bytes a prediction. */
    struct mls_lx ids;
    /* The slice combinations of stored predictions, each kept once (ids' cls), and a table
     * of them by hash (index + 1; 0: empty). */
    char **combos;
    uint32_t num_combos, cap_combos;
    uint32_t *combo_table;
    size_t combo_slots;
    /* Reads stored outputs by row id, without a statement (open within a transaction). */
    sqlite3_blob *outputs;
    int64_t compact_from;
    char err[256];
};

/* A label as a run holds it (native byte order, as every blob of the file). */
struct run_rec {
    int64_t pred;
    int32_t slot, cls;
    double value, weight, first, t;
};
#define RUN_BITS 20 /* labels a run holds at most: 2^20 */

/* The byte order of the blobs: the file is refused by a machine of the other order. */
static const char *byte_order(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one ? "little" : "big";
}

/* mls_addv(a, b): a + b element by element, for blobs of doubles; a NULL (an absent row's
 * column) and the missing tail of the shorter blob are taken as zeros. (A class blob grows
 * when its monitor gains the late-label slots: schema 1's blobs have none.) */
static void addv(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    int na = sqlite3_value_bytes(argv[0]), nb = sqlite3_value_bytes(argv[1]);
    const void *a = sqlite3_value_blob(argv[0]), *b = sqlite3_value_blob(argv[1]);
    if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
        sqlite3_result_value(ctx, argv[1]);
        return;
    }
    if (sqlite3_value_type(argv[1]) == SQLITE_NULL) {
        sqlite3_result_value(ctx, argv[0]);
        return;
    }
    if (na % (int)sizeof(double) || nb % (int)sizeof(double)) {
        sqlite3_result_error(ctx, "mls_addv: blobs that are not arrays of doubles", -1);
        return;
    }
    int nmax = na > nb ? na : nb;
    double *out = sqlite3_malloc(nmax > 0 ? nmax : 1);
    if (!out) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    size_t n = (size_t)nmax / sizeof(double);
    for (size_t i = 0; i < n; i++) {
        double x = 0, y = 0;
        if (i * sizeof(double) < (size_t)na)
            memcpy(&x, (const char *)a + i * sizeof(double), sizeof(double));
        if (i * sizeof(double) < (size_t)nb)
            memcpy(&y, (const char *)b + i * sizeof(double), sizeof(double));
        out[i] = x + y;
    }
    sqlite3_result_blob(ctx, out, nmax, sqlite3_free);
}

static int fail(struct sqlite_store *s, const char *what)
{
    snprintf(s->err, sizeof(s->err), "%s: %s (SQLite error %d)", what, sqlite3_errmsg(s->db),
             sqlite3_extended_errcode(s->db));
    return -1;
}

static int exec(struct sqlite_store *s, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(s->err, sizeof(s->err), "%s (SQLite error %d)", msg ? msg : "?",
                 sqlite3_extended_errcode(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static struct sqlite_store *self(struct mls_store *s)
{
    return (struct sqlite_store *)s;
}

static int step_done(struct sqlite_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : fail(s, what);
}

/* The outputs' blob handle is closed at every end of a transaction (and savepoint). */
static void close_outputs(struct sqlite_store *s)
{
    if (s->outputs)
        sqlite3_blob_close(s->outputs);
    s->outputs = NULL;
}

/* Writes the labels waiting (one run), if any: 0 or -1. */
static int flush_run(struct sqlite_store *s)
{
    if (!s->num_pending)
        return 0;
    sqlite3_bind_int64(s->ins_run, 1, s->pending_run);
    sqlite3_bind_blob64(s->ins_run, 2, s->pending, s->num_pending * sizeof(*s->pending),
                        SQLITE_STATIC);
    int rc = step_done(s, s->ins_run, "writing labels");
    s->num_pending = 0;
    s->pending_run = 0;
    if (s->cap_pending > 65536) { /* (one large op's: not kept for ever) */
        free(s->pending);
        s->pending = NULL;
        s->cap_pending = 0;
    }
    return rc;
}

static void drop_run(struct sqlite_store *s)
{
    s->num_pending = 0;
    s->pending_run = 0;
}

/* The label index follows every transaction: its changes are undone with the SQL's. */
static int st_begin(struct mls_store *b)
{
    struct sqlite_store *s = self(b);
    if (exec(s, "BEGIN IMMEDIATE"))
        return -1;
    mls_lx_begin(&s->lx);
    mls_lx_begin(&s->ids);
    return 0;
}

static int st_savepoint(struct mls_store *b)
{
    struct sqlite_store *s = self(b);
    if (mls_lx_mark(&s->lx) || mls_lx_mark(&s->ids)) {
        snprintf(s->err, sizeof(s->err), "savepoints nested too deep");
        return -1;
    }
    if (exec(s, "SAVEPOINT op")) {
        mls_lx_undo(&s->lx);
        mls_lx_undo(&s->ids);
        return -1;
    }
    return 0;
}

static int st_release_savepoint(struct mls_store *b)
{
    struct sqlite_store *s = self(b);
    close_outputs(s);
    if (flush_run(s) || exec(s, "RELEASE op"))
        return -1;
    mls_lx_release(&s->lx);
    mls_lx_release(&s->ids);
    return 0;
}

static void st_undo(struct mls_store *b)
{
    struct sqlite_store *s = self(b);
    close_outputs(s);
    drop_run(s);
    sqlite3_exec(s->db, "ROLLBACK TO op; RELEASE op", NULL, NULL, NULL);
    mls_lx_undo(&s->lx);
    mls_lx_undo(&s->ids);
}

static int st_commit(struct mls_store *b)
{
    struct sqlite_store *s = self(b);
    close_outputs(s);
    if (flush_run(s) || exec(s, "COMMIT"))
        return -1;
    mls_lx_commit(&s->lx);
    mls_lx_commit(&s->ids);
    return 0;
}

static void st_rollback(struct mls_store *b)
{
    close_outputs(self(b));
    drop_run(self(b));
    struct sqlite_store *s = self(b);
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    mls_lx_rollback(&s->lx);
    mls_lx_rollback(&s->ids);
}

/* FNV-1a, 64 bits, of a, NUL, b, from a basis. */
static uint64_t fnv(uint64_t h, const char *a, const char *b)
{
    for (const char *p = a;; p++) {
        h = (h ^ (unsigned char)*p) * 0x100000001b3u;
        if (!*p)
            break;
    }
    for (const char *p = b; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3u;
    return h;
}

/* The key of a prediction's id in `ids` (positive), and a second, independent hash that
 * tells ids of the same key apart without reading their rows (127 bits in all: two ids
 * mixed up is beyond any number of predictions a state holds). */
static int64_t id_hash(const char *monitor, const char *id)
{
    return (int64_t)((fnv(0xcbf29ce484222325u, monitor, id) >> 1) | 1);
}

static uint64_t id_check(const char *monitor, const char *id)
{
    uint64_t h = fnv(0x84222325cbf29ce4u, id, monitor);
    return h ^ (h >> 31);
}

static uint32_t str_hash(const char *k)
{
    uint64_t h = fnv(0xcbf29ce484222325u, k, "");
    return (uint32_t)(h ^ (h >> 32));
}

/* The index of combo key k, kept once; -1 when out of memory. */
static int32_t combo_intern(struct sqlite_store *s, const char *k)
{
    if (s->combo_slots) {
        size_t mask = s->combo_slots - 1;
        for (size_t i = str_hash(k) & mask; s->combo_table[i]; i = (i + 1) & mask)
            if (!strcmp(s->combos[s->combo_table[i] - 1], k))
                return (int32_t)(s->combo_table[i] - 1);
    }
    if ((size_t)(s->num_combos + 1) * 2 > s->combo_slots) {
        size_t slots = s->combo_slots ? s->combo_slots * 2 : 64;
        uint32_t *t = calloc(slots, sizeof(*t));
        if (!t)
            return -1;
        for (uint32_t c = 0; c < s->num_combos; c++) {
            size_t i = str_hash(s->combos[c]) & (slots - 1);
            while (t[i])
                i = (i + 1) & (slots - 1);
            t[i] = c + 1;
        }
        free(s->combo_table);
        s->combo_table = t;
        s->combo_slots = slots;
    }
    if (s->num_combos == s->cap_combos) {
        uint32_t cap = s->cap_combos ? s->cap_combos * 2 : 16;
        char **n = realloc(s->combos, cap * sizeof(*n));
        if (!n)
            return -1;
        s->combos = n;
        s->cap_combos = cap;
    }
    char *copy = strdup(k);
    if (!copy)
        return -1;
    size_t i = str_hash(k) & (s->combo_slots - 1);
    while (s->combo_table[i])
        i = (i + 1) & (s->combo_slots - 1);
    s->combos[s->num_combos] = copy;
    s->combo_table[i] = ++s->num_combos;
    return (int32_t)(s->num_combos - 1);
}

static int ids_add(struct sqlite_store *s, const char *monitor, const char *id, int64_t pred,
                   double t, const char *combo)
{
    int64_t h = id_hash(monitor, id);
    int32_t k = 0, c = combo_intern(s, combo);
    while (mls_lx_get(&s->ids, h, k))
        k++;
    struct mls_lx_entry e = {
        .pred = h, .lid = pred, .slot = k, .cls = c, .value = t, .check = id_check(monitor, id)};
    if (c < 0 || mls_lx_put(&s->ids, &e)) {
        snprintf(s->err, sizeof(s->err), "out of memory indexing a prediction");
        return -1;
    }
    return 0;
}

/* Removes row `pred` of hash h; the last of the hash's ordinals fills its place (a lookup
 * stops at the first ordinal missing). */
static int ids_remove(struct sqlite_store *s, int64_t h, int64_t pred)
{
    int32_t at = -1, last = -1;
    const struct mls_lx_entry *e;
    for (int32_t k = 0; (e = mls_lx_get(&s->ids, h, k)); k++) {
        if (e->lid == pred)
            at = k;
        last = k;
    }
    if (at < 0)
        return 0;
    int rc = 0;
    if (at != last) {
        struct mls_lx_entry moved = *mls_lx_get(&s->ids, h, last);
        moved.slot = at;
        rc = mls_lx_put(&s->ids, &moved);
    }
    if (!rc)
        rc = mls_lx_del(&s->ids, h, last);
    if (rc)
        snprintf(s->err, sizeof(s->err), "out of memory forgetting a prediction");
    return rc;
}

static int by_pred(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Removes a monitor's predictions and labels from the indexes (its rows go with the SQL that
 * follows). */
static int forget_labels(struct sqlite_store *s, const char *name)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT pred, id FROM predictions WHERE monitor = ?1", -1, &st,
                           NULL) != SQLITE_OK)
        return fail(s, "preparing a read of predictions");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int64_t *preds = NULL;
    size_t n = 0, cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 1);
        if (ids_remove(s, id_hash(name, id ? id : ""), sqlite3_column_int64(st, 0))) {
            sqlite3_finalize(st);
            free(preds);
            return -1;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 1024;
            int64_t *np = realloc(preds, ncap * sizeof(*np));
            if (!np)
                break;
            preds = np;
            cap = ncap;
        }
        preds[n++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free(preds);
        if (rc == SQLITE_ROW)
            snprintf(s->err, sizeof(s->err), "out of memory forgetting labels");
        return rc == SQLITE_ROW ? -1 : fail(s, "reading predictions");
    }
    if (n)
        qsort(preds, n, sizeof(*preds), by_pred);
    /* The entries to remove, gathered first: removing moves entries in the table. */
    struct mls_lx_entry *gone = NULL;
    size_t ng = 0, capg = 0;
    for (size_t i = 0; i < s->lx.cap && n; i++) {
        const struct mls_lx_entry *e = &s->lx.table[i];
        if (!e->pred || !bsearch(&e->pred, preds, n, sizeof(*preds), by_pred))
            continue;
        if (ng == capg) {
            size_t ncap = capg ? capg * 2 : 1024;
            struct mls_lx_entry *ne = realloc(gone, ncap * sizeof(*ne));
            if (!ne) {
                free(gone);
                free(preds);
                snprintf(s->err, sizeof(s->err), "out of memory forgetting labels");
                return -1;
            }
            gone = ne;
            capg = ncap;
        }
        gone[ng++] = *e;
    }
    free(preds);
    for (size_t i = 0; i < ng; i++)
        if (mls_lx_del(&s->lx, gone[i].pred, gone[i].slot)) {
            free(gone);
            snprintf(s->err, sizeof(s->err), "out of memory forgetting labels");
            return -1;
        }
    free(gone);
    return 0;
}

static int st_put_monitor(struct mls_store *b, const char *name, const char *config, int clear)
{
    struct sqlite_store *s = self(b);
    sqlite3_stmt *st;
    if (clear && forget_labels(s, name))
        return -1;
    if (clear) {
        static const char *const sql[] = {"DELETE FROM buckets WHERE monitor = ?1",
                                          "DELETE FROM ids WHERE monitor = ?1",
                                          "DELETE FROM predictions WHERE monitor = ?1"};
        for (int i = 0; i < 3; i++) {
            if (sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL) != SQLITE_OK)
                return fail(s, "preparing a delete");
            sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
            int rc = step_done(s, st, "clearing a monitor");
            sqlite3_finalize(st);
            if (rc)
                return rc;
        }
    }
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO monitors(name, config) VALUES(?1, ?2) "
                           "ON CONFLICT(name) DO UPDATE SET config = excluded.config",
                           -1, &st, NULL) != SQLITE_OK)
        return fail(s, "preparing a monitor's insert");
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, config, -1, SQLITE_STATIC);
    int rc = step_done(s, st, "writing a monitor");
    sqlite3_finalize(st);
    return rc;
}

static int st_delete_monitor(struct mls_store *b, const char *name)
{
    struct sqlite_store *s = self(b);
    if (forget_labels(s, name))
        return -1;
    static const char *const sql[] = {
        "DELETE FROM buckets WHERE monitor = ?1", "DELETE FROM ids WHERE monitor = ?1",
        "DELETE FROM predictions WHERE monitor = ?1", "DELETE FROM monitors WHERE name = ?1"};
    for (int i = 0; i < 4; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL) != SQLITE_OK)
            return fail(s, "preparing a delete");
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        int rc = step_done(s, st, "deleting a monitor");
        sqlite3_finalize(st);
        if (rc)
            return rc;
    }
    return 0;
}

static int st_claim_id(struct mls_store *b, const char *monitor, const char *id, int64_t t)
{
    struct sqlite_store *s = self(b);
    sqlite3_bind_text(s->claim, 1, monitor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->claim, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->claim, 3, t);
    if (step_done(s, s->claim, "recording an observation id"))
        return -1;
    return sqlite3_changes(s->db) > 0;
}

static int st_add_bucket(struct mls_store *b, const char *monitor, const char *combo, int64_t start,
                         int32_t width, const struct mls_cell *total,
                         const struct mls_class_sums *classes, int64_t num_classes)
{
    /* (num_classes: the class slots) */
    struct sqlite_store *s = self(b);
    _Static_assert(sizeof(struct mls_cell) == MLS_CELL_FIELDS * sizeof(double), "cell blob");
    _Static_assert(sizeof(struct mls_class_sums) == MLS_CLASS_FIELDS * sizeof(double),
                   "class blob");
    sqlite3_bind_text(s->add, 1, monitor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->add, 2, combo, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->add, 3, start);
    sqlite3_bind_int(s->add, 4, width);
    sqlite3_bind_blob(s->add, 5, total, (int)sizeof(*total), SQLITE_STATIC);
    if (classes && num_classes)
        sqlite3_bind_blob64(s->add, 6, classes,
                            (sqlite3_uint64)num_classes * sizeof(struct mls_class_sums),
                            SQLITE_STATIC);
    else
        sqlite3_bind_null(s->add, 6);
    return step_done(s, s->add, "adding to a bucket");
}

static int st_drop_bucket(struct mls_store *b, const char *monitor, const char *combo,
                          int64_t start, int32_t width)
{
    struct sqlite_store *s = self(b);
    sqlite3_bind_text(s->drop, 1, monitor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->drop, 2, combo, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->drop, 3, start);
    sqlite3_bind_int(s->drop, 4, width);
    return step_done(s, s->drop, "dropping a bucket");
}

static int st_purge_ids(struct mls_store *b, int64_t before)
{
    struct sqlite_store *s = self(b);
    sqlite3_bind_int64(s->purge, 1, before);
    return step_done(s, s->purge, "forgetting old observation ids");
}

/* ---- Late labels ------------------------------------------------------------------------- */

static int st_put_prediction(struct mls_store *b, const char *monitor, const char *id, double t,
                             const char *combo, const void *outputs, size_t bytes, int64_t *pred)
{
    struct sqlite_store *s = self(b);
    sqlite3_bind_text(s->put_pred, 1, monitor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->put_pred, 2, id, -1, SQLITE_STATIC);
    sqlite3_bind_double(s->put_pred, 3, t);
    sqlite3_bind_text(s->put_pred, 4, combo, -1, SQLITE_STATIC);
    sqlite3_bind_blob64(s->put_pred, 5, outputs, bytes, SQLITE_STATIC);
    if (step_done(s, s->put_pred, "storing a prediction"))
        return -1;
    if (sqlite3_changes(s->db) == 0)
        return 0;
    *pred = sqlite3_last_insert_rowid(s->db);
    return ids_add(s, monitor, id, *pred, t, combo) ? -1 : 1;
}

/* Bytes [offset, offset + bytes) of the outputs of row pred (row_bytes long) into out: 0, or
 * -1 with the error in s->err. The blob handle stays open until the transaction's end
 * (close_outputs). */
static int st_read_outputs(struct mls_store *b, int64_t pred, void *out, size_t offset,
                           size_t bytes, size_t row_bytes)
{
    struct sqlite_store *s = self(b);
    /* (a handle that fails, expired by a change to its row, is opened anew once) */
    if (s->outputs && sqlite3_blob_reopen(s->outputs, pred) != SQLITE_OK)
        close_outputs(s);
    if (!s->outputs && sqlite3_blob_open(s->db, "main", "predictions", "outputs", pred, 0,
                                         &s->outputs) != SQLITE_OK) {
        close_outputs(s);
        return fail(s, "reading a prediction's outputs");
    }
    if ((size_t)sqlite3_blob_bytes(s->outputs) != row_bytes || offset > row_bytes ||
        bytes > row_bytes - offset) {
        snprintf(s->err, sizeof(s->err),
                 "prediction row %lld is stored with %d bytes of outputs; %zu were expected",
                 (long long)pred, sqlite3_blob_bytes(s->outputs), row_bytes);
        return -1;
    }
    if (bytes && sqlite3_blob_read(s->outputs, out, (int)bytes, (int)offset) != SQLITE_OK)
        return fail(s, "reading a prediction's outputs");
    return 0;
}

/* By the ids in memory: the time and combination are there. */
static int st_get_prediction(struct mls_store *b, const char *monitor, const char *id,
                             int64_t *pred, double *t, const char **combo)
{
    struct sqlite_store *s = self(b);
    int64_t h = id_hash(monitor, id);
    uint64_t check = id_check(monitor, id);
    const struct mls_lx_entry *e;
    for (int32_t k = 0; (e = mls_lx_get(&s->ids, h, k)); k++) {
        if (e->check != check)
            continue;
        *pred = e->lid;
        *t = e->value;
        *combo = s->combos[e->cls];
        return 1;
    }
    return 0;
}

static void st_hint_prediction(struct mls_store *b, const char *monitor, const char *id)
{
    mls_lx_prefetch(&self(b)->ids, id_hash(monitor, id), 0);
}

static void st_hint_label(struct mls_store *b, int64_t pred, int32_t slot)
{
    mls_lx_prefetch(&self(b)->lx, pred, slot);
}

static int st_get_label(struct mls_store *b, int64_t pred, int32_t slot, struct mls_label *out)
{
    const struct mls_lx_entry *e = mls_lx_get(&self(b)->lx, pred, slot);
    if (e)
        *out = (struct mls_label){e->cls, e->value, e->weight, e->first};
    return e != NULL;
}

/* Every label is appended, a new one or one given again (whose old row is dead from then
 * on, left to the compaction): rows are written in order, a few pages a commit, never a
 * random page of a large table. */
static int st_put_label(struct mls_store *b, int64_t pred, int32_t slot, const struct mls_label *l,
                        double t)
{
    struct sqlite_store *s = self(b);
    if (s->num_pending == (size_t)1 << RUN_BITS && flush_run(s))
        return -1;
    if (s->num_pending == s->cap_pending) {
        size_t cap = s->cap_pending ? s->cap_pending * 2 : 1024;
        struct run_rec *n = realloc(s->pending, cap * sizeof(*n));
        if (!n) {
            snprintf(s->err, sizeof(s->err), "out of memory writing labels");
            return -1;
        }
        s->pending = n;
        s->cap_pending = cap;
    }
    if (!s->pending_run)
        s->pending_run = s->next_run++;
    int64_t lid = s->pending_run << RUN_BITS | (int64_t)s->num_pending;
    struct mls_lx_entry e = {.pred = pred,
                             .lid = lid,
                             .slot = slot,
                             .cls = l->cls,
                             .value = l->value,
                             .weight = l->weight,
                             .first = l->first};
    if (mls_lx_put(&s->lx, &e)) {
        snprintf(s->err, sizeof(s->err), "out of memory indexing a label");
        return -1;
    }
    s->pending[s->num_pending++] =
        (struct run_rec){pred, slot, l->cls, l->value, l->weight, l->first, t};
    return 0;
}

/* Label rows per upkeep that the compaction reads; predictions expired per upkeep are bounded
 * so that their labels looked up in the index stay about as many. */
#define COMPACT_ROWS 200000
#define EXPIRE_ROWS 20000
#define EXPIRE_LOOKUPS 4000000

/* Deletes prediction `pred` (its id already out of `ids`). Its labels leave the index now
 * (labelled[class] and *positions count them out); their rows, dead from here, go with the
 * compaction, which deletes them where they lie, in order. */
static int drop_pred(struct sqlite_store *s, int64_t pred, double *labelled, int64_t num_classes,
                     double *positions)
{
    for (int32_t slot = 0; slot < num_classes && s->lx.count; slot++) {
        const struct mls_lx_entry *e = mls_lx_get(&s->lx, pred, slot);
        if (!e)
            continue;
        if (e->cls >= 0 && e->cls < num_classes)
            labelled[e->cls] -= 1;
        *positions -= 1;
        if (mls_lx_del(&s->lx, pred, slot)) {
            snprintf(s->err, sizeof(s->err), "out of memory expiring predictions");
            return -1;
        }
    }
    sqlite3_bind_int64(s->del_pred, 1, pred);
    return step_done(s, s->del_pred, "deleting an expired prediction");
}

static int st_drop_prediction(struct mls_store *b, const char *monitor, const char *id, int64_t ttl,
                              double now, double *labelled, int64_t num_classes, double *positions)
{
    struct sqlite_store *s = self(b);
    int64_t h = id_hash(monitor, id);
    uint64_t check = id_check(monitor, id);
    const struct mls_lx_entry *e;
    for (int32_t k = 0; (e = mls_lx_get(&s->ids, h, k)); k++) {
        if (e->check != check)
            continue;
        if (!mls_expired(e->value, ttl, now))
            return 0;
        int64_t pred = e->lid;
        if (ids_remove(s, h, pred) || drop_pred(s, pred, labelled, num_classes, positions))
            return -1;
        return 1;
    }
    return 0;
}

static long st_expire(struct mls_store *b, const char *monitor, double before, double *labelled,
                      int64_t num_classes, double *positions, int *more)
{
    struct sqlite_store *s = self(b);
    long limit = EXPIRE_LOOKUPS / (num_classes > 0 ? num_classes : 1);
    limit = limit < EXPIRE_ROWS ? limit > 0 ? limit : 1 : EXPIRE_ROWS;
    *more = 0;
    int64_t *preds = malloc((size_t)limit * sizeof(*preds));
    if (!preds) {
        snprintf(s->err, sizeof(s->err), "out of memory expiring predictions");
        return -1;
    }
    long n = 0;
    int rc;
    sqlite3_bind_text(s->old_preds, 1, monitor, -1, SQLITE_STATIC);
    sqlite3_bind_double(s->old_preds, 2, before);
    sqlite3_bind_int64(s->old_preds, 3, limit);
    while ((rc = sqlite3_step(s->old_preds)) == SQLITE_ROW && n < limit) {
        preds[n] = sqlite3_column_int64(s->old_preds, 0);
        const char *id = (const char *)sqlite3_column_text(s->old_preds, 1);
        if (ids_remove(s, id_hash(monitor, id ? id : ""), preds[n])) {
            sqlite3_reset(s->old_preds);
            free(preds);
            return -1;
        }
        n++;
    }
    sqlite3_reset(s->old_preds);
    sqlite3_clear_bindings(s->old_preds);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        free(preds);
        return fail(s, "finding expired predictions");
    }
    for (long i = 0; i < n; i++)
        if (drop_pred(s, preds[i], labelled, num_classes, positions)) {
            free(preds);
            return -1;
        }
    free(preds);
    *more = n == limit;
    return n;
}

/* Runs of labels: about the next COMPACT_ROWS labels' runs from where the last pass ended,
 * and from the start at the end. A run whose labels are all dead (replaced, expired, of a
 * cleared monitor) is deleted; one with at least half of them dead has its live labels
 * written again in the current run (their index entries follow) and is deleted. The file
 * then holds fewer dead labels than live ones, and a label is written again only when as
 * many have died beside it: the writes stay proportional to the labels that die. */
static int st_compact(struct mls_store *b)
{
    struct sqlite_store *s = self(b);
    sqlite3_stmt *st = s->scan_runs;
    sqlite3_bind_int64(st, 1, s->compact_from);
    size_t recs = 0;
    int64_t last = s->compact_from;
    int rc, done = 1;
    int64_t *gone = NULL;
    size_t ngone = 0, capgone = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t run = sqlite3_column_int64(st, 0);
        size_t bytes = (size_t)sqlite3_column_bytes(st, 1), n = bytes / sizeof(struct run_rec);
        const struct run_rec *r = sqlite3_column_blob(st, 1);
        if (recs && recs + n > COMPACT_ROWS) { /* (the next pass takes it) */
            done = 0;
            break;
        }
        last = run;
        recs += n;
        if (bytes % sizeof(struct run_rec))
            continue; /* (refused at load: not this process's) */
        size_t live = 0;
        for (size_t i = 0; i < n; i++) {
            const struct mls_lx_entry *e = mls_lx_get(&s->lx, r[i].pred, r[i].slot);
            live += e && e->lid == (run << RUN_BITS | (int64_t)i);
        }
        if (2 * (n - live) >= n) {
            for (size_t i = 0; i < n && live; i++) {
                const struct mls_lx_entry *e = mls_lx_get(&s->lx, r[i].pred, r[i].slot);
                if (!e || e->lid != (run << RUN_BITS | (int64_t)i))
                    continue;
                struct mls_label l = {r[i].cls, r[i].value, r[i].weight, r[i].first};
                if (st_put_label(b, r[i].pred, r[i].slot, &l, r[i].t)) {
                    sqlite3_reset(st);
                    free(gone);
                    return -1;
                }
            }
            if (ngone == capgone) {
                size_t cap = capgone ? capgone * 2 : 64;
                int64_t *ng = realloc(gone, cap * sizeof(*ng));
                if (!ng)
                    break;
                gone = ng;
                capgone = cap;
            }
            gone[ngone++] = run;
        }
        if (recs >= COMPACT_ROWS) {
            done = 0;
            break;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        free(gone);
        return fail(s, "reading labels");
    }
    for (size_t i = 0; i < ngone; i++) {
        sqlite3_bind_int64(s->del_run, 1, gone[i]);
        if (step_done(s, s->del_run, "deleting a run of dead labels")) {
            free(gone);
            return -1;
        }
    }
    free(gone);
    s->compact_from = done ? 0 : last;
    return 0;
}

static const char *st_errmsg(struct mls_store *b)
{
    return self(b)->err;
}

/* Closes the database and its statements (s itself stays). */
static void st_release(struct sqlite_store *s)
{
    sqlite3_finalize(s->add);
    sqlite3_finalize(s->drop);
    sqlite3_finalize(s->claim);
    sqlite3_finalize(s->purge);
    sqlite3_stmt **late[] = {&s->put_pred, &s->ins_run,   &s->old_preds,
                             &s->del_pred, &s->scan_runs, &s->del_run};
    for (size_t i = 0; i < sizeof(late) / sizeof(late[0]); i++) {
        sqlite3_finalize(*late[i]);
        *late[i] = NULL;
    }
    sqlite3_close(s->db);
    mls_lx_free(&s->lx);
    mls_lx_free(&s->ids);
    free(s->pending);
    for (uint32_t c = 0; c < s->num_combos; c++)
        free(s->combos[c]);
    free(s->combos);
    free(s->combo_table);
    s->add = s->drop = s->claim = s->purge = NULL;
    s->db = NULL;
}

static void st_close(struct mls_store *b)
{
    struct sqlite_store *s = self(b);
    if (!s)
        return;
    st_release(s);
    free(s);
}

/* The counts of stored predictions and labels of every monitor, and the label index (the
 * rows of predictions that exist: the others are dead, left to the compaction). */
static int load_late(struct sqlite_store *s, struct mls_registry *g, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT pred, monitor, id, t, combo FROM predictions", -1, &st,
                           NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading predictions: %s", sqlite3_errmsg(s->db));
        return -1;
    }
    int irc;
    while ((irc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *mon = (const char *)sqlite3_column_text(st, 1);
        const char *id = (const char *)sqlite3_column_text(st, 2);
        const char *combo = (const char *)sqlite3_column_text(st, 4);
        if (ids_add(s, mon ? mon : "", id ? id : "", sqlite3_column_int64(st, 0),
                    sqlite3_column_double(st, 3), combo ? combo : "[]")) {
            sqlite3_finalize(st);
            snprintf(err, errlen, "out of memory indexing predictions");
            return -1;
        }
    }
    sqlite3_finalize(st);
    if (irc != SQLITE_DONE) {
        snprintf(err, errlen, "reading predictions: %s", sqlite3_errmsg(s->db));
        return -1;
    }
    if (sqlite3_prepare_v2(s->db, "SELECT monitor, count(*) FROM predictions GROUP BY monitor", -1,
                           &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading predictions: %s", sqlite3_errmsg(s->db));
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        struct mls_monitor *m = name ? mls_registry_get(g, name) : NULL;
        if (m) /* (else of no monitor: left over, ignored) */
            m->predictions_live = (double)sqlite3_column_int64(st, 1);
        mls_monitor_unref(m);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "reading predictions: %s", sqlite3_errmsg(s->db));
        return -1;
    }
    /* The labels in the order they came: a later one of the same (pred, slot) replaced the
     * earlier one; those of predictions that are gone are dead. The live counts follow the
     * index as it is rebuilt. */
    if (sqlite3_prepare_v2(s->db, "SELECT pred, monitor FROM predictions ORDER BY pred", -1, &st,
                           NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading predictions: %s", sqlite3_errmsg(s->db));
        return -1;
    }
    struct owner {
        int64_t pred;
        struct mls_monitor *m;
    } *own = NULL;
    size_t nown = 0, capown = 0;
    struct mls_monitor *m = NULL;
    int failed = 0;
    while (!failed && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 1);
        if (name && (!m || strcmp(m->name, name))) {
            mls_monitor_unref(m);
            m = mls_registry_get(g, name);
        }
        if (nown == capown) {
            size_t cap = capown ? capown * 2 : 1024;
            struct owner *n = realloc(own, cap * sizeof(*n));
            if (!n) {
                failed = 1;
                break;
            }
            own = n;
            capown = cap;
        }
        /* (the registry holds the monitors until the load ends: no reference kept) */
        own[nown++] = (struct owner){sqlite3_column_int64(st, 0), name ? m : NULL};
    }
    mls_monitor_unref(m);
    sqlite3_finalize(st);
    if (failed || rc != SQLITE_DONE) {
        free(own);
        snprintf(err, errlen, failed ? "out of memory reading predictions" : "reading predictions");
        return -1;
    }
    if (sqlite3_prepare_v2(s->db, "SELECT run, data FROM label_runs ORDER BY run", -1, &st, NULL) !=
        SQLITE_OK) {
        free(own);
        snprintf(err, errlen, "reading labels: %s", sqlite3_errmsg(s->db));
        return -1;
    }
    while (!failed && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t run = sqlite3_column_int64(st, 0);
        size_t bytes = (size_t)sqlite3_column_bytes(st, 1), n = bytes / sizeof(struct run_rec);
        const struct run_rec *r = sqlite3_column_blob(st, 1);
        if (bytes % sizeof(struct run_rec) || n > (size_t)1 << RUN_BITS) {
            sqlite3_finalize(st);
            free(own);
            snprintf(err, errlen, "run %lld of labels has the wrong size (%zu bytes)",
                     (long long)run, bytes);
            return -1;
        }
        s->next_run = run + 1;
        for (size_t i = 0; i < n && !failed; i++) {
            size_t lo = 0, hi = nown;
            while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (own[mid].pred < r[i].pred)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo == nown || own[lo].pred != r[i].pred)
                continue; /* of a prediction that is gone */
            struct mls_monitor *mm = own[lo].m;
            const struct mls_lx_entry *was = mls_lx_get(&s->lx, r[i].pred, r[i].slot);
            if (mm && mm->labelled_live) {
                if (was && was->cls >= 0 && was->cls < mm->cfg.num_classes)
                    mm->labelled_live[was->cls] -= 1;
                if (r[i].cls >= 0 && r[i].cls < mm->cfg.num_classes)
                    mm->labelled_live[r[i].cls] += 1;
                mm->positions_live += !was;
            }
            struct mls_lx_entry e = {.pred = r[i].pred,
                                     .lid = run << RUN_BITS | (int64_t)i,
                                     .slot = r[i].slot,
                                     .cls = r[i].cls,
                                     .value = r[i].value,
                                     .weight = r[i].weight,
                                     .first = r[i].first};
            failed = mls_lx_put(&s->lx, &e) != 0;
        }
    }
    sqlite3_finalize(st);
    free(own);
    if (failed || rc != SQLITE_DONE) {
        snprintf(err, errlen, failed ? "out of memory indexing labels" : "reading labels");
        return -1;
    }
    if (!s->next_run)
        s->next_run = 1;
    return 0;
}

static int st_load(struct mls_store *b, struct mls_registry *g, char *err, size_t errlen)
{
    struct sqlite_store *s = self(b);
    sqlite3_stmt *st;
    int rc = -1;
    if (sqlite3_prepare_v2(s->db, "SELECT name, config FROM monitors ORDER BY name", -1, &st,
                           NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading monitors: %s", sqlite3_errmsg(s->db));
        return -1;
    }
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *text = (const char *)sqlite3_column_text(st, 1);
        struct mls_monitor *m = mls_monitor_from_stored(g, name ? name : "?", text, err, errlen);
        if (!m)
            goto out;
        if (mls_registry_put(g, m)) {
            mls_monitor_unref(m);
            snprintf(err, errlen, "out of memory loading monitor %s", name);
            goto out;
        }
    }
    if (step != SQLITE_DONE) {
        snprintf(err, errlen, "reading monitors: %s", sqlite3_errmsg(s->db));
        goto out;
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(s->db,
                           "SELECT monitor, combo, start, width, totals, classes FROM buckets "
                           "ORDER BY monitor, combo, start, width",
                           -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "reading buckets: %s", sqlite3_errmsg(s->db));
        return -1;
    }
    struct mls_monitor *m = NULL;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        const char *key = (const char *)sqlite3_column_text(st, 1);
        if (!m || strcmp(m->name, name)) {
            mls_monitor_unref(m);
            m = mls_registry_get(g, name);
        }
        if (!m || !key)
            continue; /* a bucket of no monitor: left over, ignored */
        int nk = m->cfg.num_slice_keys, over;
        char *values[MLS_MAX_SLICE_KEYS] = {0};
        if (mls_combo_values(key, nk, values)) {
            snprintf(err, errlen, "monitor %s: a stored slice key does not parse: %.80s", name,
                     key);
            mls_monitor_unref(m);
            goto out;
        }
        struct mls_combo *c = mls_monitor_combo(m, key, values, UINT32_MAX, &over);
        for (int k = 0; k < nk; k++)
            free(values[k]);
        struct mls_cell cell;
        int64_t nc = mls_class_slots(&m->cfg);
        const void *tb = sqlite3_column_blob(st, 4);
        const void *cb = sqlite3_column_blob(st, 5);
        /* A class blob has every slot, or (schema 1) only the classes' sums. */
        size_t cbytes = (size_t)sqlite3_column_bytes(st, 5);
        if (sqlite3_column_bytes(st, 4) != (int)sizeof(cell) ||
            (nc && sqlite3_column_type(st, 5) != SQLITE_NULL &&
             cbytes != (size_t)nc * sizeof(struct mls_class_sums) &&
             cbytes != (size_t)m->cfg.num_classes * sizeof(struct mls_class_sums))) {
            snprintf(err, errlen, "monitor %s: a stored bucket has the wrong size", name);
            mls_monitor_unref(m);
            goto out;
        }
        memcpy(&cell, tb, sizeof(cell));
        struct mls_class_sums *cls = NULL;
        if (nc && cb) {
            cls = calloc((size_t)nc, sizeof(*cls));
            if (cls)
                memcpy(cls, cb, cbytes);
        }
        if (!c || (nc && cb && !cls) ||
            mls_combo_add(m, c, sqlite3_column_int64(st, 2), sqlite3_column_int(st, 3), &cell, cls,
                          0)) {
            free(cls);
            snprintf(err, errlen, "out of memory loading monitor %s", name);
            mls_monitor_unref(m);
            goto out;
        }
        free(cls);
    }
    mls_monitor_unref(m);
    if (step != SQLITE_DONE) {
        snprintf(err, errlen, "reading buckets: %s", sqlite3_errmsg(s->db));
        goto out;
    }
    if (load_late(s, g, err, errlen))
        goto out;
    for (size_t i = 0; i < g->count; i++) {
        if (mls_monitor_hours_rebuild(g->items[i])) {
            snprintf(err, errlen, "out of memory loading monitor %s", g->items[i]->name);
            goto out;
        }
    }
    rc = 0;
out:
    sqlite3_finalize(st);
    return rc;
}

static const struct mls_store_vt sqlite_vt = {
    .load = st_load,
    .begin = st_begin,
    .put_monitor = st_put_monitor,
    .delete_monitor = st_delete_monitor,
    .claim_id = st_claim_id,
    .add_bucket = st_add_bucket,
    .drop_bucket = st_drop_bucket,
    .purge_ids = st_purge_ids,
    .put_prediction = st_put_prediction,
    .get_prediction = st_get_prediction,
    .read_outputs = st_read_outputs,
    .hint_prediction = st_hint_prediction,
    .hint_label = st_hint_label,
    .get_label = st_get_label,
    .put_label = st_put_label,
    .expire = st_expire,
    .drop_prediction = st_drop_prediction,
    .compact = st_compact,
    .savepoint = st_savepoint,
    .release = st_release_savepoint,
    .undo = st_undo,
    .commit = st_commit,
    .rollback = st_rollback,
    .errmsg = st_errmsg,
    .close = st_close,
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS monitors(name TEXT PRIMARY KEY, config TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS buckets(monitor TEXT NOT NULL, combo TEXT NOT NULL,"
    "  start INTEGER NOT NULL, width INTEGER NOT NULL, totals BLOB NOT NULL, classes BLOB,"
    "  PRIMARY KEY(monitor, combo, start, width)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS ids(monitor TEXT NOT NULL, id TEXT NOT NULL,"
    "  t INTEGER NOT NULL, PRIMARY KEY(monitor, id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS ids_t ON ids(t);"
    /* Late labels: a prediction's key is its row id, never reused (AUTOINCREMENT: a label
     * left by an expired prediction must not name a new one). Labels are written in runs, a
     * row of many (struct run_rec) in arrival order; the last one written of a (pred, slot)
     * (the class; 0 for a per-sample loss) is its label, found through the index in memory
     * (label_index.h). */
    "CREATE TABLE IF NOT EXISTS predictions(pred INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  monitor TEXT NOT NULL, id TEXT NOT NULL, t REAL NOT NULL, combo TEXT NOT NULL,"
    "  outputs BLOB NOT NULL, UNIQUE(monitor, id));"
    "CREATE INDEX IF NOT EXISTS predictions_t ON predictions(monitor, t);"
    "CREATE TABLE IF NOT EXISTS label_runs(run INTEGER PRIMARY KEY, data BLOB NOT NULL);";

/* Opens path (as a URI when flags say so) and prepares it; 0, or -1 with err filled and s
 * closed. */
static int open_store(struct sqlite_store *s, const char *path, const char *name, int flags,
                      uint64_t cache, uint64_t map, char *err, size_t errlen)
{
    if (sqlite3_open_v2(path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open the state %s: %s", name,
                 s->db ? sqlite3_errmsg(s->db) : "out of memory");
        st_release(s);
        return -1;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 5000);
    if (sqlite3_create_function(s->db, "mls_addv", 2, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                addv, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot register mls_addv: %s", sqlite3_errmsg(s->db));
        st_release(s);
        return -1;
    }
    /* Stored predictions are read at random as their labels come, a page of a large table
     * each: from SQLite's cache, or else a system call and a copy. Mapped, the page is read
     * where the kernel caches the file anyway, so the outputs are in memory once, not also
     * in a cache of the server's as large as they are; and faster unless that cache holds
     * them all (1M stored predictions, 500 MB, side by side: 64 MiB cache and the map 246k
     * labels/s, 1 GiB and no map 243k, 256 MiB and no map 184k, 64 MiB and no map 167k).
     * SQLite writes through its cache, never the map; that cache holds the pages being
     * written and those beyond the map. (The hazard: a mapped file cut short by another
     * program is a SIGBUS, README.) */
    char pragma[64];
    snprintf(pragma, sizeof(pragma), "PRAGMA cache_size=-%llu",
             (unsigned long long)(cache >> 10 ? cache >> 10 : 1));
    exec(s, pragma);
    snprintf(pragma, sizeof(pragma), "PRAGMA mmap_size=%llu", (unsigned long long)map);
    exec(s, pragma);
    /* A file that cannot be written still loads; then every write fails (503). */
    int writable = !sqlite3_db_readonly(s->db, "main");
    if (writable) {
        if (exec(s, "PRAGMA journal_mode=WAL") || exec(s, "PRAGMA synchronous=FULL") ||
            exec(s, schema)) {
            if (sqlite3_extended_errcode(s->db) != SQLITE_READONLY &&
                (sqlite3_extended_errcode(s->db) & 0xff) != SQLITE_READONLY) {
                snprintf(err, errlen, "cannot prepare the state %s: %s", name, s->err);
                st_release(s);
                return -1;
            }
            writable = 0;
        }
    }
    if (writable) {
        char sql[200];
        /* (schema 1 had no late labels: the tables above are what it lacked) */
        snprintf(sql, sizeof(sql),
                 "UPDATE meta SET value = '%d' WHERE key = 'schema' AND value = '1';"
                 "INSERT OR IGNORE INTO meta VALUES('schema', '%d');"
                 "INSERT OR IGNORE INTO meta VALUES('byte_order', '%s');",
                 SCHEMA_VERSION, SCHEMA_VERSION, byte_order());
        if (exec(s, sql))
            writable = 0;
    }
    /* What the file says about itself, however it was opened. */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT key, value FROM meta", -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *k = (const char *)sqlite3_column_text(st, 0);
            const char *v = (const char *)sqlite3_column_text(st, 1);
            if (k && v && !strcmp(k, "schema") && atoi(v) != SCHEMA_VERSION) {
                snprintf(err, errlen, "the state %s has schema %s; this server reads schema %d",
                         name, v, SCHEMA_VERSION);
                sqlite3_finalize(st);
                st_release(s);
                return -1;
            }
            if (k && v && !strcmp(k, "byte_order") && strcmp(v, byte_order())) {
                snprintf(err, errlen, "the state %s was written on a %s-endian machine", name, v);
                sqlite3_finalize(st);
                st_release(s);
                return -1;
            }
        }
        sqlite3_finalize(st);
    }
    /* A development build of schema 2 kept labels in a table of rows, which this one does not
     * read: refused rather than served without its labels. */
    if (sqlite3_prepare_v2(s->db,
                           "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                           "'labels'",
                           -1, &st, NULL) == SQLITE_OK) {
        int old = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
        if (old) {
            snprintf(err, errlen,
                     "the state %s holds labels in a table `labels`, the format of a development "
                     "build; this server keeps them in `label_runs` and cannot read it",
                     name);
            st_release(s);
            return -1;
        }
    }
    static const struct {
        size_t off;
        const char *sql;
    } stmts[] = {
        {offsetof(struct sqlite_store, add),
         "INSERT INTO buckets(monitor, combo, start, width, totals, classes) "
         "VALUES(?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(monitor, combo, start, width) DO UPDATE SET "
         "totals = mls_addv(totals, excluded.totals), classes = mls_addv(classes, "
         "excluded.classes)"},
        {offsetof(struct sqlite_store, drop),
         "DELETE FROM buckets WHERE monitor = ?1 AND combo = ?2 AND start = ?3 AND width = ?4"},
        {offsetof(struct sqlite_store, claim),
         "INSERT OR IGNORE INTO ids(monitor, id, t) VALUES(?1, ?2, ?3)"},
        {offsetof(struct sqlite_store, purge), "DELETE FROM ids WHERE t < ?1"},
        {offsetof(struct sqlite_store, put_pred),
         "INSERT OR IGNORE INTO predictions(monitor, id, t, combo, outputs) "
         "VALUES(?1, ?2, ?3, ?4, ?5)"},
        {offsetof(struct sqlite_store, ins_run),
         "INSERT INTO label_runs(run, data) VALUES(?1, ?2)"},
        {offsetof(struct sqlite_store, old_preds),
         "SELECT pred, id FROM predictions WHERE monitor = ?1 AND t < ?2 LIMIT ?3"},
        {offsetof(struct sqlite_store, del_pred), "DELETE FROM predictions WHERE pred = ?1"},
        {offsetof(struct sqlite_store, scan_runs),
         "SELECT run, data FROM label_runs WHERE run > ?1 ORDER BY run"},
        {offsetof(struct sqlite_store, del_run), "DELETE FROM label_runs WHERE run = ?1"},
    };
    for (size_t i = 0; i < sizeof(stmts) / sizeof(stmts[0]); i++) {
        sqlite3_stmt **slot = (sqlite3_stmt **)((char *)s + stmts[i].off);
        if (sqlite3_prepare_v3(s->db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT, slot, NULL) !=
            SQLITE_OK) {
            /* An empty file opened read-only has no tables: nothing to load, nothing to write. */
            snprintf(err, errlen, "cannot prepare the state %s: %s", name, sqlite3_errmsg(s->db));
            st_release(s);
            return -1;
        }
    }
    return 0;
}

int mls_store_open_sqlite(const char *path, uint64_t cache, uint64_t map, struct mls_store **out,
                          char *err, size_t errlen)
{
    *out = NULL;
    struct sqlite_store *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->base.vt = &sqlite_vt;
    if (!open_store(s, path, path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, cache, map, err,
                    errlen)) {
        *out = &s->base;
        return 0;
    }
    /* A file on a read-only filesystem: a database in WAL mode cannot even be read there
     * without its shared-memory file, unless SQLite is told that nothing changes it
     * (immutable). It is then served as it is, and every write fails (503). */
    struct mlp_buf uri = {0};
    mlp_buf_puts(&uri, "file:");
    for (const char *p = path; *p; p++) {
        char esc[4];
        snprintf(esc, sizeof(esc), "%%%02X", (unsigned char)*p);
        if (*p == '%' || *p == '?' || *p == '#')
            mlp_buf_puts(&uri, esc);
        else
            mlp_buf_append(&uri, p, 1);
    }
    mlp_buf_puts(&uri, "?immutable=1");
    char first[512];
    snprintf(first, sizeof(first), "%s", err);
    memset(s, 0, sizeof(*s));
    s->base.vt = &sqlite_vt;
    if (!strcmp(path, ":memory:") || uri.failed ||
        open_store(s, uri.data, path, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, cache, map, err,
                   errlen)) {
        snprintf(err, errlen, "%s", first);
        free(uri.data);
        free(s);
        return -1;
    }
    free(uri.data);
    fprintf(stderr,
            "maskloss-server: the state %s cannot be written: served as it is, and "
            "monitors cannot be changed (503 state_unavailable)\n",
            path);
    *out = &s->base;
    return 0;
}
