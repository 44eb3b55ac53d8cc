/*
 * router_db.c - the router's tables and lookups, through src/db.
 *
 * Schema: exactly 004's (the ssh-router's) tables.  On PostgreSQL they are created only if
 * missing (CREATE TABLE IF NOT EXISTS), so a database an ssh-router already uses is taken
 * as it is, and then checked: the columns the router reads must exist, and the id lists
 * must be arrays.  On SQLite (no array type) the id lists are JSON arrays of strings in TEXT
 * columns, checked by CHECK constraints; docs/ROUTER.md shows both in plain SQL.
 *
 * Blocking: job threads and commands only, never an event loop.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router.h"

/* SQLite: a change to a data table moves the change counter in the same transaction, so
 * plain SQL is seen as the `meshtls router` commands are (the watcher reads the counter when
 * PRAGMA data_version moves; the connection log's inserts move data_version, not this). */
#define SQ_TRIGGER(t, ev)                                                                          \
    "CREATE TRIGGER IF NOT EXISTS router_changes_" t "_" ev " AFTER " ev " ON " t                  \
    " BEGIN UPDATE router_changes SET version = version + 1 WHERE id = 1; END;"
#define SQ_TRIGGERS(t) SQ_TRIGGER(t, "insert") SQ_TRIGGER(t, "update") SQ_TRIGGER(t, "delete")

#define JSON_ARRAY_CHECK(col) "CHECK (json_valid(" col ") AND json_type(" col ") = 'array')"

static const struct mt_db_migration rt_migrations[] = {
    {1,
     /* SQLite: TEXT[] becomes a JSON array of strings; BYTEA[] a JSON array of base64 */
     "CREATE TABLE IF NOT EXISTS backend_hosts ("
     " connect_id TEXT PRIMARY KEY,"
     " internal_ip_addr TEXT NOT NULL,"
     " org_id TEXT NOT NULL,"
     " user_ids TEXT NOT NULL DEFAULT '[]' " JSON_ARRAY_CHECK(
         "user_ids") ","
                     " team_ids TEXT NOT NULL DEFAULT '[]' " JSON_ARRAY_CHECK(
                         "team_ids") ","
                                     " host_user TEXT);"
                                     "CREATE TABLE IF NOT EXISTS teams ("
                                     " team_id TEXT PRIMARY KEY,"
                                     " org_id TEXT NOT NULL,"
                                     " user_ids TEXT NOT NULL DEFAULT '[]' " JSON_ARRAY_CHECK(
                                         "user_ids") ");"
                                                     "CREATE TABLE IF NOT EXISTS users ("
                                                     " user_id TEXT PRIMARY KEY,"
                                                     " org_id TEXT NOT NULL,"
                                                     " public_keys TEXT NOT NULL DEFAULT "
                                                     "'[]' " JSON_ARRAY_CHECK("public_keys") ");",
     /* PostgreSQL: 004's DDL, word for word, if the tables are not there yet */
     "CREATE TABLE IF NOT EXISTS backend_hosts ("
     " connect_id TEXT PRIMARY KEY,"
     " internal_ip_addr TEXT NOT NULL,"
     " org_id TEXT NOT NULL,"
     " user_ids TEXT[] NOT NULL DEFAULT '{}',"
     " team_ids TEXT[] NOT NULL DEFAULT '{}',"
     " host_user TEXT);"
     "CREATE TABLE IF NOT EXISTS teams ("
     " team_id TEXT PRIMARY KEY,"
     " org_id TEXT NOT NULL,"
     " user_ids TEXT[] NOT NULL DEFAULT '{}');"
     "CREATE TABLE IF NOT EXISTS users ("
     " user_id TEXT PRIMARY KEY,"
     " org_id TEXT NOT NULL,"
     " public_keys BYTEA[] NOT NULL DEFAULT '{}');"},
    /* the connection log (the router's own table, not 004's) */
    {2,
     "CREATE TABLE IF NOT EXISTS router_connections ("
     " id INTEGER PRIMARY KEY AUTOINCREMENT, started_at_ms INTEGER NOT NULL, org_id TEXT,"
     " user_id TEXT, connect_id TEXT, client_addr TEXT, target TEXT, result TEXT NOT NULL,"
     " reason TEXT, bytes_up INTEGER NOT NULL, bytes_down INTEGER NOT NULL,"
     " duration_ms INTEGER NOT NULL, decision_us INTEGER NOT NULL);"
     "CREATE INDEX IF NOT EXISTS router_connections_user ON router_connections"
     " (org_id, user_id, started_at_ms);",
     "CREATE TABLE IF NOT EXISTS router_connections ("
     " id BIGSERIAL PRIMARY KEY, started_at_ms BIGINT NOT NULL, org_id TEXT,"
     " user_id TEXT, connect_id TEXT, client_addr TEXT, target TEXT, result TEXT NOT NULL,"
     " reason TEXT, bytes_up BIGINT NOT NULL, bytes_down BIGINT NOT NULL,"
     " duration_ms BIGINT NOT NULL, decision_us BIGINT NOT NULL);"
     "CREATE INDEX IF NOT EXISTS router_connections_user ON router_connections"
     " (org_id, user_id, started_at_ms);"},
    /* a change counter that `meshtls router` commands bump: running routers poll it (every
     * 100 ms) and drop their decision cache when it moves */
    {3,
     "CREATE TABLE IF NOT EXISTS router_changes (id INTEGER PRIMARY KEY CHECK (id = 1),"
     " version INTEGER NOT NULL);"
     "INSERT INTO router_changes (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING;",
     "CREATE TABLE IF NOT EXISTS router_changes (id INTEGER PRIMARY KEY CHECK (id = 1),"
     " version BIGINT NOT NULL);"
     "INSERT INTO router_changes (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING;"},
    /* change notification (docs/ROUTER.md, "Invalidation").  PostgreSQL: one statement-level
     * trigger per table that only calls pg_notify: it needs no privilege, writes nothing,
     * and so cannot break an ssh-router's own writes; created only where missing, and
     * skipped with a warning where the router's role does not own the table (the router
     * then says so at start and falls back to --cache-ttl and --recheck-interval). */
    {4, SQ_TRIGGERS("backend_hosts") SQ_TRIGGERS("teams") SQ_TRIGGERS("users"),
     "CREATE OR REPLACE FUNCTION meshtls_router_changed() RETURNS trigger LANGUAGE plpgsql AS"
     " $f$ BEGIN PERFORM pg_notify('" RT_DB_CHANNEL "', TG_TABLE_NAME); RETURN NULL; END $f$;"
     "DO $d$ DECLARE t text; BEGIN"
     " FOREACH t IN ARRAY ARRAY['backend_hosts', 'teams', 'users', 'router_changes'] LOOP"
     "  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'meshtls_router_changed'"
     "                 AND tgrelid = t::regclass) THEN"
     "   BEGIN"
     "    EXECUTE format('CREATE TRIGGER meshtls_router_changed AFTER INSERT OR UPDATE OR"
     " DELETE OR TRUNCATE ON %I FOR EACH STATEMENT EXECUTE FUNCTION meshtls_router_changed()',"
     " t);"
     "   EXCEPTION WHEN insufficient_privilege THEN"
     "    RAISE WARNING 'meshtls router: no change trigger on % (not its owner)', t;"
     "   END;"
     "  END IF;"
     " END LOOP;"
     "END $d$;"},
    /* limits shared by the routers on this database (docs/ROUTER.md, "Limits"): each
     * router's heartbeat, and its counts per organisation (user_id '') and per user.  No
     * change trigger: these writes are not data changes, and must not flush any cache. */
    {5,
     "CREATE TABLE IF NOT EXISTS router_limit_instances (router_id TEXT PRIMARY KEY,"
     " seq INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL);"
     "CREATE TABLE IF NOT EXISTS router_limit_counts (router_id TEXT NOT NULL,"
     " org_id TEXT NOT NULL, user_id TEXT NOT NULL, active INTEGER NOT NULL,"
     " attempts INTEGER NOT NULL, PRIMARY KEY (router_id, org_id, user_id));",
     "CREATE TABLE IF NOT EXISTS router_limit_instances (router_id TEXT PRIMARY KEY,"
     " seq BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL);"
     "CREATE TABLE IF NOT EXISTS router_limit_counts (router_id TEXT NOT NULL,"
     " org_id TEXT NOT NULL, user_id TEXT NOT NULL, active BIGINT NOT NULL,"
     " attempts BIGINT NOT NULL, PRIMARY KEY (router_id, org_id, user_id));"},
};

/* The columns the router reads, per table: an existing database must have them. */
static const char *const probe_sql[] = {
    ("SELECT connect_id, internal_ip_addr, org_id, user_ids, team_ids FROM backend_hosts "
     "WHERE 1 = 0"),
    "SELECT team_id, org_id, user_ids FROM teams WHERE 1 = 0",
    "SELECT user_id, org_id FROM users WHERE 1 = 0",
};

/* PostgreSQL: the id lists must be arrays (an ssh-router database made them TEXT[]). */
static const char pg_array_sql[] =
    "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND ((table_name = 'backend_hosts' AND "
    "column_name IN ('user_ids', 'team_ids')) OR (table_name = 'teams' AND column_name = "
    "'user_ids'))";

int rt_db_migrate(struct mt_db *db, struct meshtls_err *err)
{
    int rc = mt_db_migrate(db, "router_schema_migrations", rt_migrations,
                           sizeof(rt_migrations) / sizeof(rt_migrations[0]), NULL, err);
    if (rc)
        return rc;
    struct mt_db_conn *c = NULL;
    if ((rc = mt_db_acquire(db, &c, err)) != 0)
        return rc;
    /* SQLite: WAL, so the decisions' reads never wait for the connection log's writer (nor
     * for `meshtls router` commands) and a commit is one sync of the log, not a journal
     * created and deleted.  A property of the file: set once, kept; the change watcher's
     * data_version works the same. */
    if (mt_db_backend(db) == MT_DB_SQLITE &&
        (rc = mt_db_exec(c, "PRAGMA journal_mode = WAL", NULL, 0, NULL, err)) != 0) {
        mt_db_release(c);
        return rc;
    }
    for (size_t i = 0; i < sizeof(probe_sql) / sizeof(probe_sql[0]) && !rc; i++) {
        struct mt_db_rows *r = NULL;
        struct meshtls_err qe = MESHTLS_ERR_INIT;
        if (mt_db_query(c, probe_sql[i], NULL, 0, &r, &qe) != 0 || mt_db_row_next(r, &qe) < 0)
            rc = meshtls_err_set(err, MESHTLS_ESTORE,
                                 "database %s: the router's tables are not as 004's schema "
                                 "(docs/ROUTER.md): %s",
                                 mt_db_url_safe(db), qe.msg);
        mt_db_rows_close(r);
    }
    if (!rc && mt_db_backend(db) == MT_DB_POSTGRES) {
        struct mt_db_rows *r = NULL;
        struct meshtls_err qe = MESHTLS_ERR_INIT;
        if ((rc = mt_db_query(c, pg_array_sql, NULL, 0, &r, &qe)) != 0)
            rc =
                meshtls_err_set(err, MESHTLS_ESTORE, "database %s: %s", mt_db_url_safe(db), qe.msg);
        int x;
        while (!rc && (x = mt_db_row_next(r, &qe)) == 1) {
            const char *col = mt_db_col_text(r, 0), *type = mt_db_col_text(r, 1);
            if (!type || strcmp(type, "ARRAY") != 0)
                rc = meshtls_err_set(err, MESHTLS_ESTORE,
                                     "database %s: column %s is %s, but 004's schema has "
                                     "TEXT[] (docs/ROUTER.md)",
                                     mt_db_url_safe(db), col ? col : "?", type ? type : "?");
        }
        mt_db_rows_close(r);
    }
    mt_db_release(c);
    return rc;
}

/* The host row; the teams it lists come in a second query that takes the array text back. */
static const char host_sql[] =
    "SELECT internal_ip_addr, org_id, user_ids, team_ids FROM backend_hosts WHERE connect_id = $1";
static const char teams_pg_sql[] =
    "SELECT team_id, org_id, user_ids FROM teams WHERE team_id = ANY($1::text[]) AND org_id = $2";
static const char teams_sqlite_sql[] =
    "SELECT team_id, org_id, user_ids FROM teams WHERE "
    "team_id IN (SELECT value FROM json_each($1)) AND org_id = $2";

/* The parsed rows of one lookup (freed by lookup_free). */
struct lookup_rows {
    char *addr, *org, **hu, **ht;
    size_t nhu, nht;
    struct rt_team *teams;
    char **tid, **torg, ***tu;
    size_t *ntu, nteams, cap;
};

static void lookup_free(struct lookup_rows *L)
{
    free(L->addr);
    free(L->org);
    rt_strv_free(L->hu, L->nhu);
    rt_strv_free(L->ht, L->nht);
    for (size_t i = 0; i < L->nteams; i++) {
        free(L->tid[i]);
        free(L->torg[i]);
        rt_strv_free(L->tu[i], L->ntu[i]);
    }
    free(L->teams);
    free(L->tid);
    free(L->torg);
    free(L->tu);
    free(L->ntu);
}

static int dup_col(struct mt_db_rows *r, int i, char **out)
{
    const char *s = mt_db_col_text(r, i);
    *out = strdup(s ? s : "");
    return *out ? 0 : MESHTLS_ENOMEM;
}

static int add_team(struct lookup_rows *L, struct mt_db_rows *r)
{
    if (L->nteams == L->cap) {
        size_t nc = L->cap ? L->cap * 2 : 8;
        void *a = realloc(L->tid, nc * sizeof(*L->tid));
        if (a)
            L->tid = a;
        void *b = a ? realloc(L->torg, nc * sizeof(*L->torg)) : NULL;
        if (b)
            L->torg = b;
        void *d = b ? realloc(L->tu, nc * sizeof(*L->tu)) : NULL;
        if (d)
            L->tu = d;
        void *e = d ? realloc(L->ntu, nc * sizeof(*L->ntu)) : NULL;
        if (!e)
            return MESHTLS_ENOMEM;
        L->ntu = e;
        L->cap = nc;
    }
    size_t i = L->nteams;
    L->tid[i] = L->torg[i] = NULL, L->tu[i] = NULL, L->ntu[i] = 0;
    L->nteams++;
    int rc;
    if ((rc = dup_col(r, 0, &L->tid[i])) != 0 || (rc = dup_col(r, 1, &L->torg[i])) != 0)
        return rc;
    rc = rt_array_parse(mt_db_col_text(r, 2), &L->tu[i], &L->ntu[i]);
    return rc == MESHTLS_EINVAL ? 0 : rc; /* a malformed list grants nothing */
}

int rt_db_lookup(struct mt_db *db, const char *connect_id, const char *org, const char *user,
                 struct rt_lookup *out, struct meshtls_err *err)
{
    memset(out, 0, sizeof(*out));
    struct lookup_rows L = {0};
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc)
        return rc;
    char *team_text = NULL;
    int found = 0;
    struct mt_db_param p[2] = {MT_DB_TEXT(connect_id), MT_DB_TEXT(org)};
    if ((rc = mt_db_query(c, host_sql, p, 1, &r, err)) != 0)
        goto out;
    int x = mt_db_row_next(r, err);
    if (x < 0) {
        rc = MESHTLS_ESTORE;
        goto out;
    }
    if (x == 1) {
        found = 1;
        if ((rc = dup_col(r, 0, &L.addr)) != 0 || (rc = dup_col(r, 1, &L.org)) != 0)
            goto out;
        const char *tt = mt_db_col_text(r, 3);
        if (tt && !(team_text = strdup(tt))) {
            rc = MESHTLS_ENOMEM;
            goto out;
        }
        if (rt_array_parse(mt_db_col_text(r, 2), &L.hu, &L.nhu) == MESHTLS_ENOMEM ||
            rt_array_parse(tt, &L.ht, &L.nht) == MESHTLS_ENOMEM) {
            rc = MESHTLS_ENOMEM;
            goto out;
        }
    }
    mt_db_rows_close(r);
    r = NULL;
    /* teams only matter for a host of the user's organisation that the user is not
     * listed on directly: skip the second query otherwise */
    int direct = 0;
    for (size_t i = 0; i < L.nhu; i++)
        direct |= !strcmp(L.hu[i], user);
    if (found && !direct && L.nht > 0 && team_text && !strcmp(L.org, org)) {
        struct mt_db_param tp[2] = {MT_DB_TEXT(team_text), MT_DB_TEXT(org)};
        const char *sql = mt_db_backend(db) == MT_DB_POSTGRES ? teams_pg_sql : teams_sqlite_sql;
        if ((rc = mt_db_query(c, sql, tp, 2, &r, err)) != 0)
            goto out;
        while ((x = mt_db_row_next(r, err)) == 1 && L.nteams < RT_ARRAY_MAX)
            if ((rc = add_team(&L, r)) != 0)
                goto out;
        if (x < 0) {
            rc = MESHTLS_ESTORE;
            goto out;
        }
    }
    if (L.nteams && !(L.teams = calloc(L.nteams, sizeof(*L.teams)))) {
        rc = MESHTLS_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < L.nteams; i++)
        L.teams[i] = (struct rt_team){.team_id = L.tid[i],
                                      .org_id = L.torg[i],
                                      .user_ids = (const char *const *)L.tu[i],
                                      .n_user_ids = L.ntu[i]};
    struct rt_host h = {.org_id = L.org,
                        .user_ids = (const char *const *)L.hu,
                        .n_user_ids = L.nhu,
                        .team_ids = (const char *const *)L.ht,
                        .n_team_ids = L.nht};
    const char *via = NULL;
    out->code = rt_authz_decide(found ? &h : NULL, L.teams, L.nteams, org, user, &via);
    if (via)
        snprintf(out->via, sizeof(out->via), "%s%s", strcmp(via, "user") ? "team:" : "", via);
    if (out->code == RT_OK && rt_backend_addr(L.addr, out->addr, sizeof(out->addr)) != 0)
        out->code = RT_BACKEND_UNAVAILABLE;
out:
    if (rc == MESHTLS_ENOMEM)
        meshtls_err_set(err, rc, "out of memory reading host %s", connect_id);
    mt_db_rows_close(r);
    mt_db_release(c);
    free(team_text);
    lookup_free(&L);
    return rc;
}

int rt_db_version_conn(struct mt_db_conn *c, int64_t *out, struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    int rc = mt_db_query(c, "SELECT version FROM router_changes WHERE id = 1", NULL, 0, &r, err);
    if (rc == 0) {
        int x = mt_db_row_next(r, err);
        if (x == 1)
            *out = mt_db_col_int64(r, 0);
        else
            rc = x < 0 ? MESHTLS_ESTORE
                       : meshtls_err_set(err, MESHTLS_ESTORE,
                                         "database %s: router_changes has no row 1 (restart the "
                                         "router to migrate)",
                                         mt_db_url_safe(mt_db_conn_db(c)));
    }
    mt_db_rows_close(r);
    return rc;
}

int rt_db_version(struct mt_db *db, int64_t *out, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc == 0)
        rc = rt_db_version_conn(c, out, err);
    mt_db_release(c);
    return rc;
}

int rt_db_bump(struct mt_db *db, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc == 0)
        rc = mt_db_exec(c, "UPDATE router_changes SET version = version + 1 WHERE id = 1", NULL, 0,
                        NULL, err);
    /* the trigger on router_changes notifies too; this one also reaches routers whose
     * database lacks it (the counter alone would be seen within a watcher tick) */
    if (rc == 0)
        rc = mt_db_notify(c, RT_DB_CHANNEL, "router_changes", err);
    mt_db_release(c);
    return rc;
}

int rt_db_triggers_missing(struct mt_db *db, char *missing, size_t cap, struct meshtls_err *err)
{
    if (cap)
        missing[0] = '\0';
    if (mt_db_backend(db) != MT_DB_POSTGRES)
        return 0; /* SQLite: the router that migrated the file made them */
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc == 0)
        rc = mt_db_query(c,
                         "SELECT string_agg(t, ', ' ORDER BY t) FROM unnest(ARRAY['backend_hosts', "
                         "'teams', 'users']) AS t WHERE NOT EXISTS (SELECT 1 FROM pg_trigger WHERE "
                         "tgname = 'meshtls_router_changed' AND tgrelid = t::regclass)",
                         NULL, 0, &r, err);
    if (rc == 0 && mt_db_row_next(r, err) == 1 && !mt_db_col_is_null(r, 0))
        snprintf(missing, cap, "%s", mt_db_col_text(r, 0));
    mt_db_rows_close(r);
    mt_db_release(c);
    return rc;
}

int rt_db_ping(struct mt_db *db, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc == 0 && (rc = mt_db_query(c, "SELECT 1", NULL, 0, &r, err)) == 0 &&
        mt_db_row_next(r, err) != 1)
        rc = MESHTLS_ESTORE;
    mt_db_rows_close(r);
    mt_db_release(c);
    return rc;
}

/* ---- limits shared between routers (the watcher's connection only) ------------------------- */

/* The database's clock in Unix ms: every router's heartbeat is written and aged by the same
 * clock, so the hosts' clocks may disagree without a live router looking dead. */
#define PG_NOW "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint"
#define SQ_NOW "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
#define BY_BACKEND(c, pg, sq) (mt_db_backend(mt_db_conn_db(c)) == MT_DB_POSTGRES ? (pg) : (sq))

#define BEAT_SQL(now)                                                                              \
    "INSERT INTO router_limit_instances (router_id, seq, updated_at_ms) VALUES ($1, $2, " now      \
    ") ON CONFLICT (router_id) DO UPDATE SET seq = excluded.seq, updated_at_ms = "                 \
    "excluded.updated_at_ms"
#define INSTANCES_SQL(now)                                                                         \
    "SELECT router_id, seq, " now " - updated_at_ms FROM router_limit_instances"                   \
    " WHERE router_id <> $1 ORDER BY router_id"
#define COUNTS_SQL(now)                                                                            \
    "SELECT c.router_id, c.org_id, c.user_id, c.active, c.attempts, " now " - i.updated_at_ms"     \
    " FROM router_limit_counts c JOIN router_limit_instances i ON i.router_id = c.router_id"       \
    " WHERE c.router_id <> $1 AND i.updated_at_ms >= " now " - $2"
#define STALE_COUNTS_SQL(now)                                                                      \
    "DELETE FROM router_limit_counts WHERE router_id IN (SELECT router_id FROM "                   \
    "router_limit_instances WHERE updated_at_ms < " now " - $1)"
#define STALE_INSTANCES_SQL(now)                                                                   \
    "DELETE FROM router_limit_instances WHERE updated_at_ms < " now " - $1"

static const char upsert_count_sql[] =
    "INSERT INTO router_limit_counts (router_id, org_id, user_id, active, attempts) "
    "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (router_id, org_id, user_id) DO UPDATE SET "
    "active = excluded.active, attempts = excluded.attempts";
static const char delete_count_sql[] =
    "DELETE FROM router_limit_counts WHERE router_id = $1 AND org_id = $2 AND user_id = $3";
static const char delete_mine_sql[] = "DELETE FROM router_limit_counts WHERE router_id = $1";
static const char delete_me_sql[] = "DELETE FROM router_limit_instances WHERE router_id = $1";

int rt_db_lim_publish(struct mt_db_conn *c, const char *self, int64_t seq,
                      const struct rt_lim_row *rows, size_t n, int resync, struct meshtls_err *err)
{
    struct mt_db_param beat[2] = {MT_DB_TEXT(self), MT_DB_INT64(seq)};
    const char *beat_sql = BY_BACKEND(c, BEAT_SQL(PG_NOW), BEAT_SQL(SQ_NOW));
    if (!n && !resync) /* the heartbeat alone: one statement, no transaction */
        return mt_db_exec(c, beat_sql, beat, 2, NULL, err);
    int rc = mt_db_begin(c, err);
    if (rc)
        return rc;
    struct mt_db_param mine[1] = {MT_DB_TEXT(self)};
    if (resync)
        rc = mt_db_exec(c, delete_mine_sql, mine, 1, NULL, err);
    for (size_t i = 0; i < n && !rc; i++) {
        const struct rt_lim_row *r = &rows[i];
        struct mt_db_param p[5] = {MT_DB_TEXT(self), MT_DB_TEXT(r->org), MT_DB_TEXT(r->user),
                                   MT_DB_INT64(r->active), MT_DB_INT64(r->attempts)};
        if (r->active || r->attempts)
            rc = mt_db_exec(c, upsert_count_sql, p, 5, NULL, err);
        else if (!resync)
            rc = mt_db_exec(c, delete_count_sql, p, 3, NULL, err);
    }
    if (!rc)
        rc = mt_db_exec(c, beat_sql, beat, 2, NULL, err);
    if (!rc)
        rc = mt_db_commit(c, err);
    if (rc)
        mt_db_rollback(c);
    return rc;
}

int rt_db_lim_instances(struct mt_db_conn *c, const char *self, int64_t expire_ms, uint64_t *fp,
                        size_t *live, struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    struct mt_db_param p[1] = {MT_DB_TEXT(self)};
    int rc =
        mt_db_query(c, BY_BACKEND(c, INSTANCES_SQL(PG_NOW), INSTANCES_SQL(SQ_NOW)), p, 1, &r, err);
    uint64_t h = 1469598103934665603ULL;
    size_t n = 0;
    int x = 0;
    while (!rc && (x = mt_db_row_next(r, err)) == 1) {
        const char *id = mt_db_col_text(r, 0);
        if (!id || mt_db_col_int64(r, 2) > expire_ms)
            continue;
        h = rt_lim_fingerprint(h, id, mt_db_col_int64(r, 1));
        n++;
    }
    if (!rc && x < 0)
        rc = MESHTLS_ESTORE;
    mt_db_rows_close(r);
    if (!rc)
        *fp = h, *live = n;
    return rc;
}

int rt_db_lim_read(struct mt_db_conn *c, const char *self, int64_t expire_ms,
                   struct rt_lim_others **out, struct meshtls_err *err)
{
    struct mt_db_rows *r = NULL;
    struct rt_lim_others *o = rt_lim_others_new();
    if (!o)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory for the other routers' counts");
    struct mt_db_param p[2] = {MT_DB_TEXT(self), MT_DB_INT64(expire_ms)};
    int rc = mt_db_query(c, BY_BACKEND(c, COUNTS_SQL(PG_NOW), COUNTS_SQL(SQ_NOW)), p, 2, &r, err);
    int x = 0;
    size_t rows = 0;
    struct rt_lim_row row;
    while (!rc && (x = mt_db_row_next(r, err)) == 1) {
        if (++rows > RT_LIM_ROWS_MAX) {
            rc = meshtls_err_set(err, MESHTLS_ESTORE,
                                 "database %s: router_limit_counts holds more than %d rows of the "
                                 "other live routers, more than users and organisations in use: "
                                 "not read; look for rows no router wrote (docs/DATABASE.md "
                                 "shows who counts what) and delete them",
                                 mt_db_url_safe(mt_db_conn_db(c)), RT_LIM_ROWS_MAX);
            break;
        }
        const char *id = mt_db_col_text(r, 0), *org = mt_db_col_text(r, 1),
                   *user = mt_db_col_text(r, 2);
        /* a row no router of ours could have written (too long) is not counted */
        if (!id || !org || !user || strlen(id) > RT_LIM_ROUTER_MAX || strlen(org) > RT_ID_MAX ||
            strlen(user) > RT_ID_MAX)
            continue;
        memset(&row, 0, sizeof(row));
        memcpy(row.router, id, strlen(id));
        memcpy(row.org, org, strlen(org));
        memcpy(row.user, user, strlen(user));
        row.active = mt_db_col_int64(r, 3);
        row.attempts = mt_db_col_int64(r, 4);
        row.age_ms = mt_db_col_int64(r, 5);
        if (rt_lim_others_add(o, &row, self, expire_ms) == MESHTLS_ENOMEM)
            rc =
                meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory for the other routers' counts");
    }
    if (!rc && x < 0)
        rc = MESHTLS_ESTORE;
    mt_db_rows_close(r);
    if (rc) {
        rt_lim_others_free(o);
        return rc;
    }
    *out = o;
    return 0;
}

int rt_db_lim_forget(struct mt_db_conn *c, const char *self, int64_t older_than_ms,
                     struct meshtls_err *err)
{
    int rc;
    if (self) {
        struct mt_db_param p[1] = {MT_DB_TEXT(self)};
        if ((rc = mt_db_exec(c, delete_mine_sql, p, 1, NULL, err)) != 0)
            return rc;
        return mt_db_exec(c, delete_me_sql, p, 1, NULL, err);
    }
    struct mt_db_param p[1] = {MT_DB_INT64(older_than_ms)};
    if ((rc = mt_db_exec(c, BY_BACKEND(c, STALE_COUNTS_SQL(PG_NOW), STALE_COUNTS_SQL(SQ_NOW)), p, 1,
                         NULL, err)) != 0)
        return rc;
    return mt_db_exec(c, BY_BACKEND(c, STALE_INSTANCES_SQL(PG_NOW), STALE_INSTANCES_SQL(SQ_NOW)), p,
                      1, NULL, err);
}
