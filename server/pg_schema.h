/*
 * pg_schema.h -- the PostgreSQL store's migrations (server/pg/NNN_name.sql), embedded in the
 * binary by scripts/sql2c.sh: version NNN's text is run once, in order, each in the
 * transaction that records it in schema_version (store_pg.c).
 */
#ifndef MLS_PG_SCHEMA_H
#define MLS_PG_SCHEMA_H

#include <stddef.h>

struct mls_pg_migration {
    int version;
    const char *name;
    const char *sql;
};

extern const struct mls_pg_migration mls_pg_migrations[];
extern const size_t mls_pg_num_migrations;

#endif /* MLS_PG_SCHEMA_H */
