#define _POSIX_C_SOURCE 200809L
/* Spike: one group commit in libpq pipeline mode, two round trips, over an implicit
 * transaction (no BEGIN: everything up to PQpipelineSync is one transaction).
 *   1. claim the batch's ids (one statement, an array); PQsendFlushRequest; read RETURNING
 *   2. the additive upserts of the non-duplicates (arrays), PQpipelineSync: commit
 * cc -O2 pipe.c $(pkg-config --cflags --libs libpq) */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static void die(PGconn *c, const char *what)
{
    fprintf(stderr, "%s: %s", what, PQerrorMessage(c));
    exit(1);
}
static const char CLAIM[] =
    "INSERT INTO ids(generation, id, t) SELECT $1, u, $3 FROM unnest($2::text[]) u "
    "ORDER BY u ON CONFLICT DO NOTHING RETURNING id";
static const char UPSERT[] =
    "INSERT INTO buckets(generation, combo, start, width, weighted_sum, denominator, sum_weights,"
    " num_nonzero_weights, sum_sq, elements, samples, observations, classes)"
    " SELECT g, c, s, w, v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], NULL"
    " FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::int[]) WITH ORDINALITY"
    "   AS u(g, c, s, w, i), LATERAL (SELECT ($5::float8[])[8 * i - 7 : 8 * i]) AS x(v)"
    " ORDER BY g, c, s, w"
    " ON CONFLICT (generation, combo, start, width) DO UPDATE SET"
    " weighted_sum = buckets.weighted_sum + EXCLUDED.weighted_sum,"
    " denominator = buckets.denominator + EXCLUDED.denominator,"
    " sum_weights = buckets.sum_weights + EXCLUDED.sum_weights,"
    " num_nonzero_weights = buckets.num_nonzero_weights + EXCLUDED.num_nonzero_weights,"
    " sum_sq = buckets.sum_sq + EXCLUDED.sum_sq, elements = buckets.elements + EXCLUDED.elements,"
    " samples = buckets.samples + EXCLUDED.samples,"
    " observations = buckets.observations + EXCLUDED.observations,"
    " classes = mls_addv(buckets.classes, EXCLUDED.classes), xid = pg_current_xact_id()";

/* A text array literal of n items made by fmt(i). */
static char *array_of(int n, void (*item)(char *, int))
{
    char *s = malloc((size_t)n * 200 + 3), *p = s;
    *p++ = '{';
    for (int i = 0; i < n; i++) {
        if (i)
            *p++ = ',';
        item(p, i);
        p += strlen(p);
    }
    *p++ = '}';
    *p = 0;
    return s;
}
static int batch_no;
static void id_item(char *p, int i) { sprintf(p, "obs-%d-%d", batch_no, i % 900); } /* 100 dups */
static void gen_item(char *p, int i) { sprintf(p, "%d", i + 1); }
static void combo_item(char *p, int i) { (void)i; strcpy(p, "\"[]\""); }
static void start_item(char *p, int i) { (void)i; sprintf(p, "%d", 1700000000 + 1439 * 60); }
static void width_item(char *p, int i) { (void)i; strcpy(p, "60"); }
static void sums_item(char *p, int i)
{
    (void)i; /* %.17g: the text form round-trips a double exactly */
    sprintf(p, "%.17g,%.17g,%.17g,1,%.17g,10,2,1", 0.1, 0.2, 0.3, 0.01);
}

int main(int argc, char **argv)
{
    PGconn *c = PQconnectdb(argc > 1 ? argv[1] : "");
    PGresult *r;
    if (PQstatus(c) != CONNECTION_OK)
        die(c, "connect");
    int n = 1000;
    for (batch_no = 0; batch_no < 6; batch_no++) {
        char *ids = array_of(n, id_item), *gens = array_of(n, gen_item);
        char *combos = array_of(n, combo_item), *starts = array_of(n, start_item);
        char *widths = array_of(n, width_item), *sums = array_of(n, sums_item);
        double t0 = now();
        if (!PQenterPipelineMode(c))
            die(c, "enter pipeline");
        /* round trip 1: the claims (the transaction starts here, implicitly) */
        const char *cp[3] = {"0", ids, "0"};
        if (!PQsendQueryParams(c, CLAIM, 3, NULL, cp, NULL, NULL, 0) || !PQsendFlushRequest(c) ||
            PQflush(c))
            die(c, "send claims");
        r = PQgetResult(c);
        if (PQresultStatus(r) != PGRES_TUPLES_OK)
            die(c, "claims");
        int fresh = PQntuples(r);
        PQclear(r);
        r = PQgetResult(c); /* NULL: the end of that query's results */
        double t1 = now();
        /* round trip 2: the sums of the fresh ones (here: all 1000 buckets), then Sync: commit */
        const char *up[5] = {gens, combos, starts, widths, sums};
        if (!PQsendQueryParams(c, UPSERT, 5, NULL, up, NULL, NULL, 0))
            die(c, "send upsert");
        if (batch_no == 5 && !PQsendQueryParams(c, "SELECT 1/0", 0, NULL, NULL, NULL, NULL, 0))
            die(c, "send bad");
        if (!PQpipelineSync(c))
            die(c, "sync");
        int ok = 1;
        for (;;) {
            r = PQgetResult(c);
            if (!r)
                continue; /* between one query's results and the next */
            ExecStatusType st = PQresultStatus(r);
            if (st == PGRES_PIPELINE_SYNC) {
                PQclear(r);
                break;
            }
            if (st == PGRES_FATAL_ERROR || st == PGRES_PIPELINE_ABORTED) {
                ok = 0;
                if (st == PGRES_FATAL_ERROR)
                    printf("  error: %s", PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
            }
            PQclear(r);
        }
        if (!PQexitPipelineMode(c))
            die(c, "exit pipeline");
        double t2 = now();
        printf("batch %d: %d of %d ids fresh, claims %.2f ms, upserts + commit %.2f ms, %s "
               "(transaction status after: %d = PQTRANS_IDLE)\n",
               batch_no, fresh, n, (t1 - t0) * 1e3, (t2 - t1) * 1e3,
               ok ? "committed" : "rolled back", PQtransactionStatus(c));
        free(ids), free(gens), free(combos), free(starts), free(widths), free(sums);
    }
    r = PQexec(c, "SELECT count(*), sum(observations) FROM buckets WHERE start = 1700000000 + "
                  "1439 * 60");
    printf("newest buckets: %s rows, observations %s\n", PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
    PQclear(r);
    r = PQexec(c, "SELECT count(*) FROM ids");
    printf("ids stored: %s (batch 5 rolled back: its 900 are not)\n", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
    return 0;
}
