/*
 * serve.c - `meshtls ca serve`: the control plane's HTTPS API (see serve.h and
 * docs/CONTROL-PLANE.md).
 *
 * One engine, one TLS listener for the API (plaintext HTTP on it gets a plaintext 403
 * "TLS required"), optionally one plain listener for probes.  The TLS listener asks
 * every client for a certificate but does not require one, so the public endpoints
 * (health, CRL, bootstrap signing) work without; a certificate that is presented is
 * verified against the CA during the handshake, and the result (none, refused with a
 * reason, or a verified identity) is kept with the connection.  Each route then decides:
 * public, client certificate, or admin.  A refused certificate never yields an identity.
 *
 * Revocation is the store's: every authenticated request looks the caller's serial up
 * in the store (on the job pool), so a revocation through any server or the command
 * line takes effect on the next request, also on a kept-alive connection.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "ca.h"
#include "db.h"
#include "http_net.h"
#include "json_utf8.h"
#include "meshtls/identity.h"
#include "meshtls/log.h"
#include "meshtls/tls.h"
#include "meshtls/x509.h"
#include "metrics.h"
#include "parse.h"
#include "serve.h"
#include "serve_body.h"
#include "serve_ocsp.h"
#include "store.h"

#define CP_SERVER_SERVICE "meshtls-ca"
#define CP_CRL_MAX_AGE_S 3600 /* a cached CRL is re-signed after this even without changes */
#define CP_FEED_WAITERS 16    /* long polls held at once (each holds a pool thread) */
#define CP_FEED_WAIT_MAX 60   /* seconds a long poll may ask to wait */
#define CP_FEED_POLL_MS 100   /* the newest epoch is read at least this often (see feed_poller) */
#define CP_FEED_PAGE 1000     /* revocations per answer at most */
#define CP_OCSP_CACHE 1024    /* cached OCSP responses (direct-mapped by request hash) */
#define CP_OCSP_CACHE_S 300   /* a cached response is signed again after this */
#define CP_STORES 32          /* idle CA store connections kept for issuance */
#define CP_BATCH_MAX 64       /* issued rows recorded in one transaction at most */

void cp_serve_opts_default(struct cp_serve_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->workers = 2;
    o->job_threads = 4 + CP_FEED_WAITERS;
    o->peer_ttl_s = 30;
    o->leaf_days = CA_LEAF_DAYS_DEFAULT;
    o->server_days = CA_LEAF_DAYS_DEFAULT;
    o->drain_ms = 5000;
    o->lifecycle_ms = 24LL * 3600 * 1000;
    o->rotate_within_days = 14;
}

/* ---- server state ------------------------------------------------------------------- */

/* meshtls_ca_token_redemptions_total{result} */
enum {
    CP_TOK_SUCCESS,
    CP_TOK_INVALID,
    CP_TOK_EXPIRED,
    CP_TOK_USED,
    CP_TOK_MISMATCH,
    CP_TOK_NRESULTS
};
static const char *const TOK_RESULT[] = {"success", "invalid", "expired", "used", "csr_mismatch"};

struct cp_server {
    const struct cp_serve_opts *o;
    struct mt_db *db;
    char served_dir[4200]; /* absolute DIR/served: out_dir of what /sign and /renew issue */
    /* issuance (issue_csr): the CA parsed once, swapped when the intermediate is renewed,
     * and a free list of CA store connections, one in use per job thread at most */
    pthread_mutex_t issue_mu;
    struct ca_signer *signer;
    int64_t signer_checked; /* second of the last look at the intermediate's files */
    struct ca_store *stores[CP_STORES];
    size_t n_stores;
    /* the group commit of issued rows (issue_record), under issue_mu */
    pthread_cond_t batch_cv;
    struct issue_item *batch_head, **batch_tail;
    int batch_leader;
    char *ca_pem; /* ca.crt: the trust bundle */
    /* the CRL, re-signed when the store's revocations change (or hourly) */
    pthread_mutex_t crl_mu;
    unsigned char *crl_der;
    size_t crl_der_len;
    char *crl_pem;
    size_t crl_pem_len;
    int64_t crl_count, crl_last, crl_made;
    /* a revocation asks for a new CRL; the publisher thread signs it (crl_mu guards these) */
    pthread_cond_t crl_cv;
    int crl_dirty, crl_stop;
    pthread_t crl_thread;
    int crl_started;
    /* the revocation feed: the newest epoch in the store, watched by a poller thread;
     * long-polling jobs wait on feed_cv (bounded: at most CP_FEED_WAITERS at once) */
    pthread_mutex_t feed_mu;
    pthread_cond_t feed_cv;
    int64_t feed_max;
    int feed_waiters;
    int stopping;
    pthread_t poller;
    int poller_started;
    pthread_t lifecycle;
    int lifecycle_started;
    struct mt_snap_holder *api_snap; /* re-published when the server's certificate rotates */
    struct mt_series *lifecycle_runs, *lifecycle_rotated;
    struct cp_ocsp ocsp; /* the delegated OCSP responder (read-only once serving) */
    /* OCSP answers to nonce-less requests, by SHA-256 of the request's bytes: valid while
     * younger than CP_OCSP_CACHE_S and while the revocation epoch is the one they were
     * made under (a revocation anywhere invalidates them all) */
    pthread_mutex_t ocsp_mu;
    struct ocsp_entry {
        unsigned char key[32];
        unsigned char *der;
        size_t len;
        int64_t made, epoch;
    } * ocsp_cache;
    struct mt_series *ocsp_hits;
    /* counters for /metrics */
    /* counters (series of the registry; jobs count in the last shard) */
    struct mt_series *ocsp_responses, *issuances, *renewals, *rotations, *revocations,
        *peers_registered, *refused;
    struct mt_series *tokens[CP_TOK_NRESULTS]; /* redemptions by result */
    struct mt_metrics *metrics;
    struct mt_family *f_handshake, *f_days, *f_peers, *f_crl_age, *f_crl_next, *f_needed;
    int64_t inter_not_after, root_not_after;
    char self_id[512]; /* our SPIFFE ID: the `to` of meshtls_handshake_total */
};

/* ---- the caller's TLS identity (per connection) ------------------------------------- */

enum cp_auth { CP_AUTH_NONE = 0, CP_AUTH_REFUSED, CP_AUTH_OK };

/* The API listener's argument: the HTTP layer's part first, so the listener argument is
 * both (peer_new reaches the server through it). */
struct cp_api {
    struct mt_http_listener http;
    struct cp_server *srv;
};

struct cp_peer {
    enum cp_auth state;
    char why[200]; /* CP_AUTH_REFUSED: what was wrong with the certificate */
    char spiffe[512];
    char serial[80]; /* store form: lower-case hex, no leading zeros */
    char subject[256];
    int64_t not_after;
};

/* Verify as usual, remember the verdict, and let the handshake finish so that the HTTP
 * layer can refuse in HTTP (403 with a reason) instead of with a TLS alert.  OpenSSL
 * keeps the verdict in SSL_get_verify_result(); no identity is read from a refused
 * certificate. */
static int accept_verify_cb(int ok, X509_STORE_CTX *sctx)
{
    (void)ok;
    (void)sctx;
    return 1;
}

static void count_handshake(struct cp_server *srv, const struct cp_peer *p, unsigned shard);

static int peer_new(struct mt_conn *c, void **out)
{
    struct cp_peer *p = calloc(1, sizeof(*p));
    if (!p)
        return -1;
    SSL *ssl = c->down.ssl;
    X509 *leaf = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!leaf) {
        p->state = CP_AUTH_NONE;
    } else {
        long v = SSL_get_verify_result(ssl);
        struct meshtls_identity *id = NULL;
        if (v != X509_V_OK) {
            p->state = CP_AUTH_REFUSED;
            snprintf(p->why, sizeof(p->why), "client certificate refused: %s",
                     X509_verify_cert_error_string(v));
        } else if (meshtls_identity_from_x509(leaf, &id, NULL) != 0 || !id->spiffe_id) {
            p->state = CP_AUTH_REFUSED;
            snprintf(p->why, sizeof(p->why), "client certificate carries no SPIFFE ID");
        } else if (ca_serial_normalize(id->serial, p->serial, sizeof(p->serial)) != 0) {
            p->state = CP_AUTH_REFUSED;
            snprintf(p->why, sizeof(p->why), "client certificate has an unreadable serial");
        } else {
            p->state = CP_AUTH_OK;
            snprintf(p->spiffe, sizeof(p->spiffe), "%s", id->spiffe_id);
            snprintf(p->subject, sizeof(p->subject), "%s", id->subject);
            p->not_after = id->not_after;
        }
        meshtls_identity_free(id);
    }
    const struct cp_api *api = mt_conn_listener_arg(c);
    if (ssl)
        count_handshake(api->srv, p, mt_conn_shard(c));
    *out = p;
    return 0;
}

static void peer_free(void *p)
{
    free(p);
}

/* ---- jobs ---------------------------------------------------------------------------- */

struct cp_job;
typedef void (*cp_work_fn)(struct cp_job *jb);

struct cp_job {
    struct mt_job j;
    struct mt_http_req *req;
    struct cp_server *srv;
    cp_work_fn fn;
    const char *route;
    int check_store; /* look the caller's serial up first: unknown or revoked -> 403 */
    int quiet;       /* public read (probe, CRL): no audit event */
    struct cp_peer peer;
    char client[64];
    json_t *in; /* the request's JSON body, if any (owned) */
    char param[128];
    int want_pem;
    char q_service[128], q_status[32];
    int64_t q_since;
    int q_wait;
    unsigned char ocsp_key[32];
    int64_t ocsp_epoch;
    int64_t q_before;
    long q_limit, q_offset;
    /* what the caller's serial is in the store (check_store) */
    char peer_service[128];
    /* the answer */
    int status;
    json_t *out;
    void *raw;
    size_t raw_len;
    const char *ctype;
    char code[48];
    char msg[600];
};

/* Count `n` on a counter series (NULL before the registry exists: ignored).  Called from
 * workers and job threads alike: the registry's last shard, shared, is exact (atomics). */
static void bump(struct mt_series *s, uint64_t n)
{
    if (s)
        mt_counter_add(s, UINT32_MAX, n);
}

static void jb_error(struct cp_job *jb, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void jb_error(struct cp_job *jb, int status, const char *code, const char *fmt, ...)
{
    jb->status = status;
    snprintf(jb->code, sizeof(jb->code), "%s", code);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(jb->msg, sizeof(jb->msg), fmt, ap);
    va_end(ap);
}

static void jb_store_down(struct cp_job *jb, const struct meshtls_err *e)
{
    meshtls_log(MESHTLS_LOG_WARN, "ca serve: %s: store: %s", jb->route, e->msg);
    jb_error(jb, 503, "store_unavailable",
             "the CA store is not reachable right now; retry in a few seconds");
}

static void audit(const char *route, const char *client, const struct cp_peer *p,
                  const char *decision, const char *reason)
{
    MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "audit", MESHTLS_LF_S("route", route),
                      MESHTLS_LF_S("client", client ? client : ""),
                      MESHTLS_LF_S("identity", p && p->state == CP_AUTH_OK ? p->spiffe : ""),
                      MESHTLS_LF_S("serial", p && p->state == CP_AUTH_OK ? p->serial : ""),
                      MESHTLS_LF_S("decision", decision), MESHTLS_LF_S("reason", reason));
}

/* The caller's certificate in the store: *status "active|superseded|revoked", or
 * MESHTLS_ENOENT. */
static int serial_lookup(struct mt_db *db, const char *serial, char *status, size_t scap,
                         char *service, size_t svcap, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (rc)
        return rc;
    struct mt_db_param p[] = {MT_DB_TEXT(serial)};
    if ((rc = mt_db_query(c, "SELECT status, service FROM certificates WHERE serial = $1", p, 1, &r,
                          err)) == 0) {
        int row = mt_db_row_next(r, err);
        if (row < 0)
            rc = row;
        else if (row == 0)
            rc = MESHTLS_ENOENT;
        else {
            snprintf(status, scap, "%s", mt_db_col_text(r, 0) ? mt_db_col_text(r, 0) : "");
            snprintf(service, svcap, "%s", mt_db_col_text(r, 1) ? mt_db_col_text(r, 1) : "");
        }
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    return rc;
}

static void job_work(struct mt_job *j)
{
    struct cp_job *jb = (struct cp_job *)j;
    jb->status = 0;
    if (jb->check_store) {
        char st[32] = "";
        struct meshtls_err e = MESHTLS_ERR_INIT;
        int rc = serial_lookup(jb->srv->db, jb->peer.serial, st, sizeof(st), jb->peer_service,
                               sizeof(jb->peer_service), &e);
        if (rc == MESHTLS_ENOENT) {
            jb_error(jb, 403, "certificate_unknown",
                     "client certificate %s is not in this CA's store: use a certificate "
                     "issued by this CA",
                     jb->peer.serial);
            return;
        }
        if (rc) {
            jb_store_down(jb, &e);
            return;
        }
        if (!strcmp(st, "revoked")) {
            jb_error(jb, 403, "certificate_revoked",
                     "client certificate %s is revoked: get a new one (bootstrap token)",
                     jb->peer.serial);
            return;
        }
    }
    jb->fn(jb);
}

static void job_done(struct mt_job *j)
{
    struct cp_job *jb = (struct cp_job *)j;
    int ok = jb->status >= 200 && jb->status < 300;
    if (!jb->quiet)
        audit(jb->route, jb->client, &jb->peer, ok ? "allow" : "deny",
              ok ? "ok" : (jb->msg[0] ? jb->msg : jb->code));
    if (!ok && jb->status == 403)
        bump(jb->srv->refused, 1);
    if (ok && jb->out) {
        mt_http_reply_json(jb->req, jb->status, jb->out);
        jb->out = NULL;
    } else if (ok) {
        mt_http_reply(jb->req, jb->status, jb->ctype, jb->raw, jb->raw_len);
    } else {
        mt_http_reply_error(jb->req, jb->status ? jb->status : 500,
                            jb->code[0] ? jb->code : "internal",
                            jb->msg[0] ? jb->msg : "internal error: see the server's log");
    }
    json_decref(jb->out);
    json_decref(jb->in);
    free(jb->raw);
    free(jb);
}

/* Hand `jb` to the pool; the handler returns what this returns. */
static int submit(struct mt_http_req *req, struct cp_job *jb)
{
    struct mt_conn *c = mt_http_req_conn(req);
    jb->req = req;
    jb->j.work = job_work;
    jb->j.done = job_done;
    if (!c || mt_job_submit(c, &jb->j) != 0) {
        json_decref(jb->in);
        free(jb);
        mt_http_reply_error(req, 503, "busy", "the server is busy: retry shortly");
        return MT_HTTP_DONE;
    }
    return MT_HTTP_ASYNC;
}

static struct cp_job *job_new(struct mt_http_req *req, struct cp_server *srv, const char *route,
                              cp_work_fn fn)
{
    struct cp_job *jb = calloc(1, sizeof(*jb));
    if (!jb) {
        mt_http_reply_error(req, 503, "out_of_memory", "the server is out of memory");
        return NULL;
    }
    jb->srv = srv;
    jb->route = route;
    jb->fn = fn;
    snprintf(jb->client, sizeof(jb->client), "%s", mt_http_req_client_addr(req));
    return jb;
}

/*
 * The route needs a client certificate: answer 403 (and audit) unless the connection
 * carries a verified, unexpired one.  @return the peer, or NULL (replied).
 */
static const struct cp_peer *need_cert(struct mt_http_req *req, struct cp_server *srv,
                                       const char *route)
{
    const struct cp_peer *p = mt_http_req_conn_data(req);
    const char *client = mt_http_req_client_addr(req);
    if (!p || p->state == CP_AUTH_NONE) {
        audit(route, client, p, "deny", "no client certificate");
        bump(srv->refused, 1);
        mt_http_reply_error(req, 403, "client_certificate_required",
                            "client certificate required: connect with the certificate this CA "
                            "issued you (curl --cert/--key)");
        return NULL;
    }
    if (p->state == CP_AUTH_REFUSED) {
        audit(route, client, p, "deny", p->why);
        bump(srv->refused, 1);
        mt_http_reply_error(req, 403, "certificate_invalid", p->why);
        return NULL;
    }
    if (p->not_after <= (int64_t)time(NULL)) {
        audit(route, client, p, "deny", "client certificate expired");
        bump(srv->refused, 1);
        mt_http_reply_error(req, 403, "certificate_invalid",
                            "client certificate refused: certificate has expired");
        return NULL;
    }
    return p;
}

/*
 * Parse the body of `route` as `kind` (serve_body.c) into *doc and *b; on failure reply 400
 * with what the body must be, audit the refusal (`short_why` for a wrong field), and
 * return -1.  `p` is the caller as far as known (for the audit event).
 */
static int body_parse(struct mt_http_req *req, const char *route, const struct cp_peer *p,
                      enum cp_body_kind kind, const char *short_why, json_t **doc,
                      struct cp_body *b)
{
    size_t len = 0;
    const char *buf = mt_http_req_body(req, &len);
    char why[700];
    int rc = cp_body_parse(kind, buf, len, doc, b, why, sizeof(why));
    if (rc == 0)
        return 0;
    audit(route, mt_http_req_client_addr(req), p, "deny", rc == MESHTLS_EINVAL ? short_why : why);
    mt_http_reply_error(req, 400, "bad_request", why);
    return -1;
}

/* ---- /healthz, /readyz ---------------------------------------------------------------- */

static int h_health(struct mt_http_req *req, void *arg)
{
    (void)arg;
    mt_http_reply(req, 200, "text/plain", "ok\n", 3);
    return MT_HTTP_DONE;
}

static void w_ready(struct cp_job *jb)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    int rc = mt_db_acquire(jb->srv->db, &c, &e);
    if (!rc && !(rc = mt_db_query(c, "SELECT value FROM meta WHERE key = 'trust_domain'", NULL, 0,
                                  &r, &e))) {
        int row = mt_db_row_next(r, &e);
        rc = row < 0 ? row : row == 0 ? MESHTLS_ESTORE : 0;
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    if (rc) {
        jb_store_down(jb, &e);
        return;
    }
    jb->status = 200;
    jb->ctype = "text/plain";
    jb->raw = strdup("ready\n");
    jb->raw_len = jb->raw ? 6 : 0;
}

static int h_ready(struct mt_http_req *req, void *arg)
{
    struct cp_job *jb = job_new(req, arg, "/readyz", w_ready);
    if (!jb)
        return MT_HTTP_DONE;
    jb->quiet = 1;
    return submit(req, jb);
}

/* ---- /api/peers ---------------------------------------------------------------------- */

static int peers_tx(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    struct cp_job *jb = arg;
    int64_t now = (int64_t)time(NULL);
    struct mt_db_param dp[] = {MT_DB_INT64(now)};
    int rc = mt_db_exec(c, "DELETE FROM serve_peers WHERE expires_at <= $1", dp, 1, NULL, err);
    if (rc)
        return rc;
    if (jb->in) { /* POST: register or heartbeat */
        const char *addr = json_string_value(json_object_get(jb->in, "address"));
        int64_t ttl = jb->srv->o->peer_ttl_s;
        struct mt_db_param p[] = {MT_DB_TEXT(jb->peer.spiffe), MT_DB_TEXT(jb->peer.serial),
                                  MT_DB_TEXT(addr), MT_DB_INT64(now), MT_DB_INT64(now + ttl)};
        return mt_db_exec(c,
                          "INSERT INTO serve_peers (spiffe_id, serial, address, registered_at, "
                          "last_seen, expires_at) VALUES ($1, $2, $3, $4, $4, $5) "
                          "ON CONFLICT (spiffe_id) DO UPDATE SET serial = excluded.serial, "
                          "address = excluded.address, last_seen = excluded.last_seen, "
                          "expires_at = excluded.expires_at",
                          p, 5, NULL, err);
    }
    return 0;
}

static void w_peers(struct cp_job *jb)
{
    struct meshtls_err e = MESHTLS_ERR_INIT;
    if (mt_db_tx(jb->srv->db, peers_tx, jb, &e) != 0) {
        jb_store_down(jb, &e);
        return;
    }
    int64_t now = (int64_t)time(NULL);
    if (jb->in) {
        bump(jb->srv->peers_registered, 1);
        jb->status = 200;
        jb->out =
            json_pack("{s:s, s:O, s:I, s:I}", "spiffe_id", jb->peer.spiffe, "address",
                      json_object_get(jb->in, "address"), "ttl", (json_int_t)jb->srv->o->peer_ttl_s,
                      "expires_at", (json_int_t)(now + jb->srv->o->peer_ttl_s));
        return;
    }
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    json_t *arr = json_array();
    struct mt_db_param p[] = {MT_DB_INT64(now)};
    int rc = mt_db_acquire(jb->srv->db, &c, &e);
    if (!rc)
        rc = mt_db_query(c,
                         "SELECT spiffe_id, address, last_seen, expires_at FROM serve_peers "
                         "WHERE expires_at > $1 ORDER BY spiffe_id",
                         p, 1, &r, &e);
    int row;
    while (!rc && arr && (row = mt_db_row_next(r, &e)) != 0) {
        if (row < 0) {
            rc = row;
            break;
        }
        json_array_append_new(arr, json_pack("{s:o, s:o, s:I, s:I}", "spiffe_id",
                                             mt_json_string(mt_db_col_text(r, 0)), "address",
                                             mt_json_string(mt_db_col_text(r, 1)), "last_seen",
                                             (json_int_t)mt_db_col_int64(r, 2), "expires_at",
                                             (json_int_t)mt_db_col_int64(r, 3)));
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    if (rc || !arr) {
        json_decref(arr);
        jb_store_down(jb, &e);
        return;
    }
    jb->status = 200;
    jb->out = json_pack("{s:o}", "peers", arr);
}

static int h_peers(struct mt_http_req *req, void *arg)
{
    struct cp_server *srv = arg;
    const struct cp_peer *p = need_cert(req, srv, "/api/peers");
    if (!p)
        return MT_HTTP_DONE;
    json_t *in = NULL;
    struct cp_body b;
    if (!strcmp(mt_http_req_method(req), "POST") &&
        body_parse(req, "/api/peers", p, CP_BODY_PEER, "bad address", &in, &b))
        return MT_HTTP_DONE;
    struct cp_job *jb = job_new(req, srv, "/api/peers", w_peers);
    if (!jb) {
        json_decref(in);
        return MT_HTTP_DONE;
    }
    jb->peer = *p;
    jb->check_store = 1;
    jb->in = in;
    return submit(req, jb);
}

/* ---- /crl ----------------------------------------------------------------------------- */

static void crl_warn(const char *msg, void *arg)
{
    (void)arg;
    meshtls_log(MESHTLS_LOG_WARN, "ca serve: %s", msg);
}

/* Whether the store's meta table has `key`. */
static int meta_exists(struct mt_db *db, const char *key, int *out, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    char k[CA_META_KEY_MAX]; /* as the store names it (per host on PostgreSQL) */
    ca_store_meta_key(mt_db_backend(db) == MT_DB_POSTGRES, key, k, sizeof(k));
    struct mt_db_param p[] = {MT_DB_TEXT(k)};
    int rc = mt_db_acquire(db, &c, err);
    if (!rc && !(rc = mt_db_query(c, "SELECT 1 FROM meta WHERE key = $1", p, 1, &r, err))) {
        int row = mt_db_row_next(r, err);
        if (row < 0)
            rc = row;
        else
            *out = row > 0;
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    return rc;
}

static int crl_refresh(struct cp_server *srv, struct meshtls_err *err)
{
    /* Changes seen through the store: number of revoked certificates and the latest
     * revocation time (also revocations made by another server or the command line). */
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    int64_t count = 0, last = 0;
    int rc = mt_db_acquire(srv->db, &c, err);
    if (!rc && !(rc = mt_db_query(c,
                                  "SELECT count(*), coalesce(max(revoked_at), 0) FROM "
                                  "certificates WHERE status = 'revoked'",
                                  NULL, 0, &r, err))) {
        int row = mt_db_row_next(r, err);
        if (row < 0)
            rc = row;
        else if (row > 0) {
            count = mt_db_col_int64(r, 0);
            last = mt_db_col_int64(r, 1);
        }
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    if (rc)
        return rc;
    int64_t now = (int64_t)time(NULL);
    if (srv->crl_der && count == srv->crl_count && last == srv->crl_last &&
        now - srv->crl_made < CP_CRL_MAX_AGE_S)
        return 0;
    /* The CA publishes its CRL at one remembered path (`ca crl --out`, written again by
     * every revocation); the server re-signs it there and serves what it wrote.  A CA that
     * never published one gets DIR/crl.pem, remembered from then on. */
    char path[4300], written[4300] = "";
    int n = 0, have_out = 0;
    char *pem = NULL;
    size_t len = 0;
    if ((rc = meta_exists(srv->db, "crl_out", &have_out, err)))
        return rc;
    snprintf(path, sizeof(path), "%s/crl.pem", srv->o->dir);
    if ((rc = ca_crl(srv->o->dir, have_out ? NULL : path, &n, written, sizeof(written), crl_warn,
                     NULL, err)) ||
        (rc = meshtls_read_file(written, MESHTLS_CRL_FILE_MAX, &pem, &len, err)))
        return rc;
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509_CRL *crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    unsigned char *der = NULL;
    int dl = crl ? i2d_X509_CRL(crl, &der) : -1;
    X509_CRL_free(crl);
    if (dl <= 0) {
        free(pem);
        return meshtls_err_set(err, MESHTLS_ETLS, "cannot encode the CRL written to %s", path);
    }
    free(srv->crl_pem);
    OPENSSL_free(srv->crl_der);
    srv->crl_pem = pem;
    srv->crl_pem_len = len;
    srv->crl_der = der;
    srv->crl_der_len = (size_t)dl;
    srv->crl_count = count;
    srv->crl_last = last;
    srv->crl_made = now;
    return 0;
}

static void w_crl(struct cp_job *jb)
{
    struct cp_server *srv = jb->srv;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    pthread_mutex_lock(&srv->crl_mu);
    int rc = crl_refresh(srv, &e);
    if (!rc) {
        const void *src = jb->want_pem ? (const void *)srv->crl_pem : srv->crl_der;
        size_t n = jb->want_pem ? srv->crl_pem_len : srv->crl_der_len;
        jb->raw = malloc(n);
        if (jb->raw) {
            memcpy(jb->raw, src, n);
            jb->raw_len = n;
        }
    }
    pthread_mutex_unlock(&srv->crl_mu);
    if (rc) {
        jb_store_down(jb, &e);
        return;
    }
    if (!jb->raw) {
        jb_error(jb, 503, "out_of_memory", "the server is out of memory");
        return;
    }
    jb->status = 200;
    jb->ctype = jb->want_pem ? "application/x-pem-file" : "application/pkix-crl";
}

static int h_crl(struct mt_http_req *req, void *arg)
{
    struct cp_job *jb = job_new(req, arg, "/crl", w_crl);
    if (!jb)
        return MT_HTTP_DONE;
    const char *acc = mt_http_req_header(req, "Accept");
    jb->quiet = 1;
    jb->want_pem = acc && strcasestr(acc, "application/x-pem-file") != NULL;
    return submit(req, jb);
}

/* ---- issuing: /api/v1/sign, /api/v1/renew --------------------------------------------- */

/* "a\nb" -> a new array of new strings. */
static int split_lines(const char *s, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!s || !*s)
        return 0;
    size_t cap = 1;
    for (const char *q = s; *q; q++)
        cap += *q == '\n';
    char **v = calloc(cap, sizeof(*v));
    if (!v)
        return -1;
    const char *b = s;
    for (;;) {
        const char *e = strchr(b, '\n');
        size_t len = e ? (size_t)(e - b) : strlen(b);
        if (len && !(v[(*n)++] = strndup(b, len))) {
            *out = v;
            return -1;
        }
        if (!e)
            break;
        b = e + 1;
    }
    *out = v;
    return 0;
}

/*
 * Read a service from the store through the server's own pool (the PKI's table; the same
 * columns store_sqlite.c reads).  Strings in *out are new allocations (ca_service_clear).
 */
static int db_service_get(struct mt_db *db, const char *name, struct ca_service *out,
                          struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    struct mt_db_param p[] = {MT_DB_TEXT(name)};
    memset(out, 0, sizeof(*out));
    int rc = mt_db_acquire(db, &c, err);
    if (!rc && !(rc = mt_db_query(c,
                                  "SELECT spiffe_id, dns, ips FROM services WHERE name = $1 AND "
                                  "unregistered_at IS NULL",
                                  p, 1, &r, err))) {
        int row = mt_db_row_next(r, err);
        if (row < 0)
            rc = row;
        else if (row == 0)
            rc = meshtls_err_set(err, MESHTLS_ENOENT, "service '%s' is not registered", name);
        else if (!(out->name = strdup(name)) ||
                 !(out->spiffe_id = strdup(mt_db_col_text(r, 0) ? mt_db_col_text(r, 0) : "")) ||
                 split_lines(mt_db_col_text(r, 1), &out->dns, &out->n_dns) ||
                 split_lines(mt_db_col_text(r, 2), &out->ips, &out->n_ips))
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    if (rc)
        ca_service_clear(out);
    return rc;
}

/* ---- issuance: the CA loaded once, store connections kept per job thread ------------- */

/*
 * A CA store connection for this job (SQLite: its prepared statements stay warm): one
 * from the server's free list, or a new one.  Each is used by one job thread at a time.
 */
static int store_take(struct cp_server *srv, struct ca_store **out, struct meshtls_err *err)
{
    pthread_mutex_lock(&srv->issue_mu);
    struct ca_store *st = srv->n_stores ? srv->stores[--srv->n_stores] : NULL;
    pthread_mutex_unlock(&srv->issue_mu);
    if (st) {
        *out = st;
        return 0;
    }
    int rc = ca_store_open(srv->o->dir, 0, &st, err);
    if (!rc && (rc = ca_store_tune_server(st, err)))
        ca_store_close(st);
    if (!rc)
        *out = st;
    return rc;
}

/* Give `st` back.  After a store error it is closed instead, and so are the idle ones:
 * they most likely share its fate (a database that restarted has closed every session),
 * and each would otherwise fail one request before being dropped.  The next job opens
 * afresh. */
static void store_give(struct cp_server *srv, struct ca_store *st, int failed)
{
    struct ca_store *drop[CP_STORES];
    size_t nd = 0;
    if (!st)
        return;
    pthread_mutex_lock(&srv->issue_mu);
    if (!failed && srv->n_stores < CP_STORES) {
        srv->stores[srv->n_stores++] = st;
        st = NULL;
    } else if (failed) {
        while (srv->n_stores)
            drop[nd++] = srv->stores[--srv->n_stores];
    }
    pthread_mutex_unlock(&srv->issue_mu);
    ca_store_close(st);
    for (size_t i = 0; i < nd; i++)
        ca_store_close(drop[i]);
}

/*
 * The signer to issue with (a new reference, caller unrefs): the one loaded at start,
 * replaced when intermediate.crt or .key changed on disk (renew-intermediate), looked at
 * at most once a second.  A reload that fails keeps the loaded one signing and says why.
 */
static struct ca_signer *signer_get(struct cp_server *srv)
{
    int64_t now = (int64_t)time(NULL);
    pthread_mutex_lock(&srv->issue_mu);
    int look = now != srv->signer_checked;
    srv->signer_checked = now;
    struct ca_signer *cur = ca_signer_ref(srv->signer);
    pthread_mutex_unlock(&srv->issue_mu);
    if (!look || !ca_signer_stale(cur))
        return cur;
    struct ca_signer *fresh = NULL;
    struct ca_store *st = NULL;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    int rc = store_take(srv, &st, &e);
    if (!rc)
        rc = ca_signer_load(srv->o->dir, st, &fresh, &e);
    store_give(srv, st, rc == MESHTLS_ESTORE);
    if (rc) {
        meshtls_log(MESHTLS_LOG_WARN,
                    "ca serve: the intermediate in %s changed but cannot be loaded (%s); "
                    "signing on with the previous one",
                    srv->o->dir, e.msg);
        return cur;
    }
    meshtls_log(MESHTLS_LOG_INFO, "ca serve: loaded the renewed intermediate from %s", srv->o->dir);
    pthread_mutex_lock(&srv->issue_mu);
    struct ca_signer *old = srv->signer;
    srv->signer = ca_signer_ref(fresh);
    pthread_mutex_unlock(&srv->issue_mu);
    ca_signer_unref(old);
    ca_signer_unref(cur);
    return fresh;
}

/*
 * Group commit.  On SQLite with synchronous=FULL each commit costs a few fsyncs (about
 * 1.2 ms each on the benchmark machine), and writers queue on the database lock with
 * sleeping retries, so a commit per issuance caps issuance at a few hundred per second
 * with long tails.  Instead a job that has signed queues its row; the first one finding
 * no commit under way becomes the leader: it takes everything queued (up to
 * CP_BATCH_MAX) and records it in one transaction, then wakes the others, who find their
 * result or lead the next batch.  Signing stays parallel on the job threads.
 */
struct issue_item {
    const struct ca_signed *c;
    struct issue_item *next;
    int done, rc;
    struct meshtls_err err;
};

/* Record `b[0..n)` in one transaction; if that fails, each on its own, so that one bad
 * row fails only its own request.  Called by the leader without issue_mu held. */
static void batch_commit(struct cp_server *srv, struct issue_item **b, size_t n)
{
    const struct ca_signed *v[CP_BATCH_MAX];
    struct ca_store *st = NULL;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    int rc = store_take(srv, &st, &e);
    for (size_t i = 0; i < n; i++)
        v[i] = b[i]->c;
    if (!rc)
        rc = ca_record_signed(st, v, n, &e);
    if (rc == MESHTLS_ESTORE && st) {
        /* a kept connection may have died while idle (the database restarted): once more on
         * a new one before failing the batch.  Nothing was committed: a commit that fails
         * leaves no row, and a serial recorded twice would fail on its primary key. */
        store_give(srv, st, 1);
        st = NULL;
        e = (struct meshtls_err)MESHTLS_ERR_INIT;
        if (!(rc = store_take(srv, &st, &e)))
            rc = ca_record_signed(st, v, n, &e);
    }
    if (rc && st && n > 1) {
        for (size_t i = 0; i < n; i++) {
            b[i]->err = (struct meshtls_err)MESHTLS_ERR_INIT;
            b[i]->rc = ca_record_signed(st, &v[i], 1, &b[i]->err);
        }
    } else {
        for (size_t i = 0; i < n; i++) {
            b[i]->rc = rc;
            b[i]->err = e;
        }
    }
    store_give(srv, st, rc == MESHTLS_ESTORE);
}

/* Record `c` (borrowed) through the group commit; @return its result, the error in `err`. */
static int issue_record(struct cp_server *srv, const struct ca_signed *c, struct meshtls_err *err)
{
    struct issue_item me = {.c = c};
    pthread_mutex_lock(&srv->issue_mu);
    *srv->batch_tail = &me;
    srv->batch_tail = &me.next;
    while (!me.done) {
        if (srv->batch_leader) {
            pthread_cond_wait(&srv->batch_cv, &srv->issue_mu);
            continue;
        }
        struct issue_item *b[CP_BATCH_MAX];
        size_t n = 0;
        srv->batch_leader = 1;
        while (srv->batch_head && n < CP_BATCH_MAX) {
            b[n++] = srv->batch_head;
            srv->batch_head = srv->batch_head->next;
        }
        if (!srv->batch_head)
            srv->batch_tail = &srv->batch_head;
        pthread_mutex_unlock(&srv->issue_mu);
        batch_commit(srv, b, n);
        pthread_mutex_lock(&srv->issue_mu);
        for (size_t i = 0; i < n; i++)
            b[i]->done = 1;
        srv->batch_leader = 0;
        pthread_cond_broadcast(&srv->batch_cv);
    }
    pthread_mutex_unlock(&srv->issue_mu);
    if (me.rc)
        *err = me.err;
    return me.rc;
}

/*
 * Sign `req` (matched against the registration `svc` already) for `svc`; the answer is
 * the new certificate with its chain.  @return 0, or an error in `jb`.
 */
static int issue_csr(struct cp_job *jb, const struct ca_service *svc, X509_REQ *req)
{
    struct cp_server *srv = jb->srv;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    struct ca_signed cert = {0};
    char out_dir[4300];
    /* where the lifecycle worker writes this certificate when it rotates it */
    snprintf(out_dir, sizeof(out_dir), "%s/%s", srv->served_dir, svc->name);
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST) {
        jb_error(jb, 500, "internal", "cannot create %s: %s", out_dir, strerror(errno));
        return -1;
    }
    struct ca_signer *sg = signer_get(srv);
    int rc = ca_sign_leaf(sg, svc, req, srv->o->leaf_days, out_dir, &cert, &e);
    if (!rc)
        rc = issue_record(srv, &cert, &e);
    if (!rc) {
        const char *inter = ca_signer_inter_pem(sg);
        size_t cl = strlen(cert.cert_pem), il = strlen(inter);
        char *chain = malloc(cl + il + 1);
        if (chain) {
            memcpy(chain, cert.cert_pem, cl);
            memcpy(chain + cl, inter, il + 1);
        }
        jb->out = chain
                      ? json_pack("{s:s, s:s, s:I, s:I, s:s, s:s, s:s}", "service", svc->name,
                                  "serial", cert.serial, "not_before", (json_int_t)cert.not_before,
                                  "not_after", (json_int_t)cert.not_after, "certificate",
                                  cert.cert_pem, "chain", chain, "ca", srv->ca_pem)
                      : NULL;
        free(chain);
    }
    ca_signer_unref(sg);
    ca_signed_clear(&cert);
    if (rc) {
        if (rc == MESHTLS_ESTORE)
            jb_store_down(jb, &e);
        else if (rc == MESHTLS_EDENIED || rc == MESHTLS_EPARSE)
            jb_error(jb, 403, "csr_mismatch", "%s", e.msg);
        else
            jb_error(jb, 500, "issue_failed", "%s", e.msg);
        return -1;
    }
    if (!jb->out) {
        jb_error(jb, 500, "internal", "cannot build the response");
        return -1;
    }
    jb->status = 200;
    return 0;
}

/*
 * Load the registration of `service` and check `csr_pem` against it.  On success the
 * caller owns *svc (ca_service_clear) and *req (X509_REQ_free).
 */
static int check_csr_for(struct cp_job *jb, const char *service, const char *csr_pem,
                         struct ca_service *svc, X509_REQ **out)
{
    struct meshtls_err e = MESHTLS_ERR_INIT;
    X509_REQ *req = cp_csr_parse(csr_pem, strlen(csr_pem));
    if (!req) {
        jb_error(jb, 400, "bad_csr",
                 "\"csr\" is not a PEM certificate request (-----BEGIN CERTIFICATE "
                 "REQUEST-----, at most 64 KiB)");
        return -1;
    }
    int rc = db_service_get(jb->srv->db, service, svc, &e);
    if (rc == MESHTLS_ENOENT) {
        X509_REQ_free(req);
        jb_error(jb, 403, "service_unknown", "service '%s' is not registered with this CA",
                 service);
        return -1;
    }
    if (rc) {
        X509_REQ_free(req);
        jb_store_down(jb, &e);
        return -1;
    }
    char why[600];
    if (cp_csr_match(req, svc, why, sizeof(why))) {
        X509_REQ_free(req);
        ca_service_clear(svc);
        jb_error(jb, 403, "csr_mismatch", "%s", why);
        return -1;
    }
    *out = req;
    return 0;
}

static void w_sign(struct cp_job *jb)
{
    struct cp_server *srv = jb->srv;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    const char *token = json_string_value(json_object_get(jb->in, "token"));
    const char *csr = json_string_value(json_object_get(jb->in, "csr"));
    char hash[CP_TOKEN_HASH_LEN + 1], service[128] = "";
    enum cp_token_state ts = CP_TOKEN_UNKNOWN;
    if (cp_token_hash(token, hash, sizeof(hash)) != 0) {
        bump(srv->tokens[CP_TOK_INVALID], 1);
        jb_error(jb, 403, "invalid_token",
                 "the bootstrap token is not valid: ask the operator for a new one "
                 "(meshtls ca token SERVICE)");
        return;
    }
    if (cp_token_peek(srv->db, hash, (int64_t)time(NULL), &ts, service, sizeof(service), &e)) {
        jb_store_down(jb, &e);
        return;
    }
    static const char *const tcode[] = {"", "invalid_token", "token_expired", "token_used"};
    static const char *const tmsg[] = {"", "the bootstrap token is not known to this CA",
                                       "the bootstrap token has expired",
                                       "the bootstrap token was already used"};
    if (ts != CP_TOKEN_OK) {
        bump(srv->tokens[ts == CP_TOKEN_EXPIRED ? CP_TOK_EXPIRED
                         : ts == CP_TOKEN_USED  ? CP_TOK_USED
                                                : CP_TOK_INVALID],
             1);
        jb_error(jb, 403, tcode[ts], "%s: ask the operator for a new one (meshtls ca token %s)",
                 tmsg[ts], service[0] ? service : "SERVICE");
        return;
    }
    snprintf(jb->peer_service, sizeof(jb->peer_service), "%s", service);
    struct ca_service svc = {0};
    X509_REQ *req = NULL;
    if (check_csr_for(jb, service, csr, &svc, &req)) {
        bump(srv->tokens[CP_TOK_MISMATCH], 1);
        return; /* the token stays usable: a corrected CSR may follow */
    }
    int won = 0;
    if (cp_token_consume(srv->db, hash, (int64_t)time(NULL), jb->client, &won, &e)) {
        jb_store_down(jb, &e);
        goto out;
    }
    if (!won) {
        bump(srv->tokens[CP_TOK_USED], 1);
        jb_error(jb, 403, "token_used",
                 "the bootstrap token was already used (or expired just now): ask the "
                 "operator for a new one (meshtls ca token %s)",
                 service);
        goto out;
    }
    if (issue_csr(jb, &svc, req) != 0) {
        struct meshtls_err e2 = MESHTLS_ERR_INIT;
        if (cp_token_unconsume(srv->db, hash, &e2))
            meshtls_log(MESHTLS_LOG_WARN, "ca serve: cannot give back a token of %s: %s", service,
                        e2.msg);
        goto out;
    }
    bump(srv->tokens[CP_TOK_SUCCESS], 1);
    bump(srv->issuances, 1);
out:
    ca_service_clear(&svc);
    X509_REQ_free(req);
}

static int h_sign(struct mt_http_req *req, void *arg)
{
    json_t *in = NULL;
    struct cp_body b;
    if (body_parse(req, "/api/v1/sign", mt_http_req_conn_data(req), CP_BODY_SIGN,
                   "missing token or csr", &in, &b))
        return MT_HTTP_DONE;
    struct cp_job *jb = job_new(req, arg, "/api/v1/sign", w_sign);
    if (!jb) {
        json_decref(in);
        return MT_HTTP_DONE;
    }
    jb->in = in;
    return submit(req, jb);
}

static void w_renew(struct cp_job *jb)
{
    const char *csr = json_string_value(json_object_get(jb->in, "csr"));
    struct ca_service svc = {0};
    X509_REQ *req = NULL;
    if (check_csr_for(jb, jb->peer_service, csr, &svc, &req))
        return;
    if (issue_csr(jb, &svc, req) == 0) {
        bump(jb->srv->renewals, 1);
        bump(jb->srv->issuances, 1);
    }
    ca_service_clear(&svc);
    X509_REQ_free(req);
}

static int h_renew(struct mt_http_req *req, void *arg)
{
    const struct cp_peer *p = need_cert(req, arg, "/api/v1/renew");
    if (!p)
        return MT_HTTP_DONE;
    json_t *in = NULL;
    struct cp_body b;
    if (body_parse(req, "/api/v1/renew", p, CP_BODY_RENEW, "missing csr", &in, &b))
        return MT_HTTP_DONE;
    struct cp_job *jb = job_new(req, arg, "/api/v1/renew", w_renew);
    if (!jb) {
        json_decref(in);
        return MT_HTTP_DONE;
    }
    jb->peer = *p;
    jb->check_store = 1;
    jb->in = in;
    return submit(req, jb);
}

/* ---- admin ---------------------------------------------------------------------------- */

static const struct cp_peer *need_admin(struct mt_http_req *req, struct cp_server *srv,
                                        const char *route)
{
    const struct cp_peer *p = need_cert(req, srv, route);
    if (!p)
        return NULL;
    if (!cp_is_admin(srv->o->admins, srv->o->n_admins, p->spiffe)) {
        char why[700];
        snprintf(why, sizeof(why), "%s is not an administrator", p->spiffe);
        audit(route, mt_http_req_client_addr(req), p, "deny", why);
        bump(srv->refused, 1);
        char m[800];
        snprintf(m, sizeof(m), "%s is not an administrator of this CA (the server's --admin list)",
                 p->spiffe);
        mt_http_reply_error(req, 403, "not_admin", m);
        return NULL;
    }
    return p;
}

/*
 * Whether `c` is a certificate only its holder can renew: issued from a CSR through
 * /api/v1/sign or /renew (the key is the service's; DIR/served/SERVICE is where the API
 * recorded it, a directory the service never reads: it took its certificate from the
 * answer).  Re-signing it there would change nothing the service uses while the store
 * showed a fresh certificate, so the worker flags it instead.  The suffix, not this
 * host's path: with PostgreSQL, another host's server may have issued it.
 */
static int renew_only(const struct ca_cert *c)
{
    if (c->key_held || !c->out_dir)
        return 0;
    size_t ol = strlen(c->out_dir), sl = strlen(c->service);
    return ol >= sl + 8 && !strcmp(c->out_dir + ol - sl, c->service) &&
           !strncmp(c->out_dir + ol - sl - 8, "/served/", 8);
}

/* An active certificate the worker cannot usefully rotate and that is due: the field
 * rotation_needed of the admin inventory, the series of meshtls_cert_rotation_needed. */
static int rotation_needed(const struct cp_serve_opts *o, const struct ca_cert *c, int64_t now)
{
    return !strcmp(c->status, "active") && renew_only(c) &&
           ca_rotate_due(c->not_after, now, o->rotate_within_days, 0);
}

static void w_admin_list(struct cp_job *jb)
{
    struct meshtls_err e = MESHTLS_ERR_INIT;
    struct ca_store *st = NULL;
    struct ca_cert *v = NULL;
    size_t n = 0;
    int expired_only = !strcmp(jb->q_status, "expired");
    const char *status = jb->q_status[0] && !expired_only ? jb->q_status : NULL;
    int rc = ca_store_open(jb->srv->o->dir, 0, &st, &e);
    if (!rc)
        rc = ca_store_cert_list(st, jb->q_service[0] ? jb->q_service : NULL, status, &v, &n, &e);
    ca_store_close(st);
    if (rc) {
        jb_store_down(jb, &e);
        return;
    }
    int64_t now = (int64_t)time(NULL);
    json_t *arr = json_array();
    long total = 0;
    for (size_t i = 0; arr && i < n; i++) {
        int expired = v[i].not_after <= now;
        const char *shown = strcmp(v[i].status, "revoked") && expired ? "expired" : v[i].status;
        if (expired_only && strcmp(shown, "expired"))
            continue;
        if (status && !strcmp(status, "active") && expired)
            continue;
        if (jb->q_before && v[i].not_after >= jb->q_before)
            continue;
        total++;
        if (total <= jb->q_offset || total > jb->q_offset + jb->q_limit)
            continue;
        json_t *o =
            json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:b}", "serial", v[i].serial, "service",
                      v[i].service, "status", shown, "not_before", (json_int_t)v[i].not_before,
                      "not_after", (json_int_t)v[i].not_after, "days_until_expiry",
                      (json_int_t)((v[i].not_after - now) / 86400), "key_held", v[i].key_held);
        if (o)
            json_object_set_new(o, "rotation_needed",
                                json_boolean(rotation_needed(jb->srv->o, &v[i], now)));
        if (o && v[i].revoked_at) {
            json_object_set_new(o, "revoked_at", json_integer(v[i].revoked_at));
            json_object_set_new(o, "reason", mt_json_string(v[i].reason ? v[i].reason : ""));
        }
        json_array_append_new(arr, o);
    }
    ca_cert_list_free(v, n);
    jb->status = 200;
    jb->out = json_pack("{s:o, s:I, s:I, s:I}", "certificates", arr ? arr : json_array(), "total",
                        (json_int_t)total, "offset", (json_int_t)jb->q_offset, "limit",
                        (json_int_t)jb->q_limit);
    if (jb->out && jb->q_offset + jb->q_limit < total)
        json_object_set_new(jb->out, "next_offset", json_integer(jb->q_offset + jb->q_limit));
}

static int h_admin_list(struct mt_http_req *req, void *arg)
{
    const char *route = "/api/admin/security/certificates";
    const struct cp_peer *p = need_admin(req, arg, route);
    if (!p)
        return MT_HTTP_DONE;
    struct cp_job *jb = job_new(req, arg, route, w_admin_list);
    if (!jb)
        return MT_HTTP_DONE;
    char b[64];
    int bad = 0;
    int64_t v;
    jb->q_limit = 100;
    if (mt_http_query_get(req, "service", jb->q_service, sizeof(jb->q_service)) == MESHTLS_EINVAL)
        bad = 1;
    int r = mt_http_query_get(req, "status", jb->q_status, sizeof(jb->q_status));
    if (r == MESHTLS_EINVAL ||
        (r >= 0 && strcmp(jb->q_status, "active") && strcmp(jb->q_status, "superseded") &&
         strcmp(jb->q_status, "revoked") && strcmp(jb->q_status, "expired")))
        bad = 1;
    if ((r = mt_http_query_get(req, "expiring_before", b, sizeof(b))) != MESHTLS_ENOENT) {
        if (r < 0 || mt_parse_i64(b, 1, INT64_MAX, &v))
            bad = 1;
        else
            jb->q_before = v;
    }
    if ((r = mt_http_query_get(req, "limit", b, sizeof(b))) != MESHTLS_ENOENT) {
        if (r < 0 || mt_parse_i64(b, 1, 1000, &v))
            bad = 1;
        else
            jb->q_limit = (long)v;
    }
    if ((r = mt_http_query_get(req, "offset", b, sizeof(b))) != MESHTLS_ENOENT) {
        if (r < 0 || mt_parse_i64(b, 0, 100000000, &v))
            bad = 1;
        else
            jb->q_offset = (long)v;
    }
    if (bad) {
        free(jb);
        mt_http_reply_error(req, 400, "bad_request",
                            "query: service=NAME, status=active|superseded|revoked|expired, "
                            "expiring_before=UNIX-SECONDS, limit=1..1000, offset=N");
        return MT_HTTP_DONE;
    }
    jb->peer = *p;
    jb->check_store = 1;
    return submit(req, jb);
}

struct replaced {
    json_t *arr;
};

static void on_replaced(const char *service, const char *old_serial, const char *new_serial,
                        const char *out_dir, void *arg)
{
    struct replaced *r = arg;
    (void)out_dir;
    json_array_append_new(r->arr, json_pack("{s:s, s:s, s:s}", "service", service, "old_serial",
                                            old_serial ? old_serial : "", "new_serial",
                                            new_serial ? new_serial : ""));
}

static void w_admin_rotate(struct cp_job *jb)
{
    struct cp_server *srv = jb->srv;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    struct ca_store *st = NULL;
    struct ca_cert *v = NULL;
    size_t n = 0;
    int rc = ca_store_open(srv->o->dir, 0, &st, &e);
    if (!rc)
        rc = ca_store_cert_list(st, jb->param, "active", &v, &n, &e);
    ca_store_close(st);
    if (rc) {
        jb_store_down(jb, &e);
        return;
    }
    if (n == 0) {
        jb_error(jb, 404, "no_active_certificate",
                 "service '%s' has no active certificate to rotate (unknown service, or all "
                 "revoked or superseded)",
                 jb->param);
        return;
    }
    const struct ca_cert *cur = &v[n - 1];
    if (!cur->key_held) {
        jb_error(jb, 409, "key_not_held",
                 "the key of %s's certificate %s is the service's own (it was issued from a "
                 "CSR): the service rotates it itself through POST /api/v1/renew",
                 jb->param, cur->serial);
        ca_cert_list_free(v, n);
        return;
    }
    char serial[80] = "", old[80], out_dir[4200];
    snprintf(old, sizeof(old), "%s", cur->serial);
    snprintf(out_dir, sizeof(out_dir), "%s", cur->out_dir ? cur->out_dir : "");
    ca_cert_list_free(v, n);
    if (!out_dir[0])
        snprintf(out_dir, sizeof(out_dir), "%s/served/%s", srv->o->dir, jb->param);
    /* A new key and certificate in the directory the current one was issued to; the old
     * one is superseded but stays valid until it expires (overlap). */
    if ((rc = ca_issue(srv->o->dir, jb->param, out_dir, srv->o->leaf_days, NULL, serial, &e))) {
        if (rc == MESHTLS_ESTORE)
            jb_store_down(jb, &e);
        else
            jb_error(jb, 500, "rotate_failed", "%s", e.msg);
        return;
    }
    bump(srv->rotations, 1);
    bump(srv->issuances, 1);
    jb->status = 200;
    jb->out = json_pack("{s:s, s:s, s:s, s:s}", "service", jb->param, "old_serial", old,
                        "new_serial", serial, "out_dir", out_dir);
}

static void feed_poke(struct cp_server *srv);

/*
 * The CRL publisher: re-signs and publishes the CRL after revocations, off the request path.
 * A CRL lists every revoked certificate and took seconds at 100,000 (docs/PERFORMANCE.md);
 * signing it inside the revoke made the revoke that slow.  Revocations that arrive while it
 * signs are folded into the next run (one flag, not a queue).  GET /crl still re-signs on
 * demand when the store's revocations changed, so it never serves a CRL that misses one.
 */
static void *crl_publisher(void *arg)
{
    struct cp_server *srv = arg;
    pthread_mutex_lock(&srv->crl_mu);
    for (;;) {
        while (!srv->crl_dirty && !srv->crl_stop)
            pthread_cond_wait(&srv->crl_cv, &srv->crl_mu);
        if (srv->crl_stop)
            break;
        srv->crl_dirty = 0;
        struct meshtls_err e = MESHTLS_ERR_INIT;
        if (crl_refresh(srv, &e) != 0)
            meshtls_log(MESHTLS_LOG_WARN,
                        "ca serve: the CRL was not re-signed after a revocation (%s); GET /crl "
                        "and the lifecycle worker try again",
                        e.msg);
    }
    pthread_mutex_unlock(&srv->crl_mu);
    return NULL;
}

static void crl_publish_soon(struct cp_server *srv)
{
    pthread_mutex_lock(&srv->crl_mu);
    srv->crl_dirty = 1;
    pthread_cond_signal(&srv->crl_cv);
    pthread_mutex_unlock(&srv->crl_mu);
}

static void w_admin_revoke(struct cp_job *jb)
{
    struct cp_server *srv = jb->srv;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    const char *reason = json_string_value(json_object_get(jb->in, "reason"));
    json_t *rep = json_object_get(jb->in, "replace");
    int replace = rep ? json_is_true(rep) : 1;
    struct replaced r = {.arr = json_array()};
    int count = 0;
    char crl_written[4300] = "";
    struct ca_revoke_opts ro = {.service = jb->param,
                                .reason = reason ? reason : "unspecified",
                                .replace = replace,
                                .report = on_replaced,
                                .warn = crl_warn,
                                .arg = &r,
                                .no_publish = 1};
    int rc = ca_revoke(srv->o->dir, &ro, &count, crl_written, sizeof(crl_written), &e);
    if (rc && count > 0) {
        /* revoked and committed; only publishing the CRL file failed: GET /crl re-signs */
        meshtls_log(MESHTLS_LOG_WARN, "ca serve: revoked %d certificate(s) of %s, but: %s", count,
                    jb->param, e.msg);
        rc = 0;
    }
    if (rc) {
        json_decref(r.arr);
        if (rc == MESHTLS_ESTORE)
            jb_store_down(jb, &e);
        else if (rc == MESHTLS_ENOENT)
            jb_error(jb, 404, "not_found", "%s", e.msg);
        else if (rc == MESHTLS_EINVAL)
            jb_error(jb, 400, "bad_request", "%s", e.msg);
        else
            jb_error(jb, 500, "revoke_failed", "%s", e.msg);
        return;
    }
    bump(srv->revocations, (uint64_t)count);
    feed_poke(srv); /* the feed and the OCSP cache see it now, not at the next poll */
    if (count > 0)
        crl_publish_soon(srv); /* the CRL file and GET /crl: re-signed in the background */
    jb->status = 200;
    jb->out = json_pack("{s:s, s:i, s:s, s:o}", "service", jb->param, "revoked", count, "reason",
                        reason ? reason : "unspecified", "replacements", r.arr);
}

static int admin_action(struct mt_http_req *req, void *arg, const char *route, cp_work_fn fn,
                        int want_body)
{
    const struct cp_peer *p = need_admin(req, arg, route);
    if (!p)
        return MT_HTTP_DONE;
    const char *svc = mt_http_req_param(req, "service");
    if (!svc || !ca_service_name_valid(svc)) {
        mt_http_reply_error(req, 400, "bad_request",
                            "the service name in the path must match [a-z0-9][a-z0-9._-]{0,62}");
        return MT_HTTP_DONE;
    }
    json_t *in = NULL;
    struct cp_body b;
    size_t bl = 0;
    mt_http_req_body(req, &bl);
    if (want_body && bl &&
        body_parse(req, route, p, CP_BODY_ADMIN, "bad reason or replace", &in, &b))
        return MT_HTTP_DONE;
    struct cp_job *jb = job_new(req, arg, route, fn);
    if (!jb) {
        json_decref(in);
        return MT_HTTP_DONE;
    }
    snprintf(jb->param, sizeof(jb->param), "%s", svc);
    jb->peer = *p;
    jb->check_store = 1;
    jb->in = in;
    return submit(req, jb);
}

static int h_admin_rotate(struct mt_http_req *req, void *arg)
{
    return admin_action(req, arg, "/api/admin/security/certificates/{service}/rotate",
                        w_admin_rotate, 0);
}

static int h_admin_revoke(struct mt_http_req *req, void *arg)
{
    return admin_action(req, arg, "/api/admin/security/certificates/{service}/revoke",
                        w_admin_revoke, 1);
}

/* ---- /api/v1/revocations: the feed ---------------------------------------------------- */

static int feed_max_epoch(struct mt_db *db, int64_t *out, struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    int rc = mt_db_acquire(db, &c, err);
    if (!rc && !(rc = mt_db_query(c, "SELECT COALESCE(MAX(epoch), 0) FROM serve_revocations", NULL,
                                  0, &r, err))) {
        int row = mt_db_row_next(r, err);
        if (row < 0)
            rc = row;
        else
            *out = row ? mt_db_col_int64(r, 0) : 0;
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    return rc;
}

static void feed_advance(struct cp_server *srv, int64_t m);

/* Read the newest epoch now and wake long polls if it moved (after a revocation here). */
static void feed_poke(struct cp_server *srv)
{
    int64_t m = 0;
    if (feed_max_epoch(srv->db, &m, NULL) == 0)
        feed_advance(srv, m);
}

/* Take a newer epoch `m` (read from the store) and wake the long polls. */
static void feed_advance(struct cp_server *srv, int64_t m)
{
    pthread_mutex_lock(&srv->feed_mu);
    if (m > srv->feed_max) {
        srv->feed_max = m;
        pthread_cond_broadcast(&srv->feed_cv);
    }
    pthread_mutex_unlock(&srv->feed_mu);
}

/*
 * Wake long polls (and invalidate the OCSP cache) when the store's newest epoch moves,
 * whoever revoked: another server, the command line on any host.  On a connection of its
 * own that LISTENs (src/db change notification): PostgreSQL delivers the NOTIFY the
 * revoking transaction sends (serve migration 4) at its COMMIT; SQLite reports any commit
 * to the file.  Each wake, and every CP_FEED_POLL_MS without one, reads the newest epoch:
 * so a lost notification (a reconnect) costs at most one interval.  When the store is
 * unreachable the watcher retries every CP_FEED_POLL_MS; it never runs on an event loop.
 */
static void *feed_poller(void *arg)
{
    struct cp_server *srv = arg;
    struct mt_db_conn *c = NULL;
    for (;;) {
        pthread_mutex_lock(&srv->feed_mu);
        int stop = srv->stopping;
        pthread_mutex_unlock(&srv->feed_mu);
        if (stop)
            break;
        struct meshtls_err e = MESHTLS_ERR_INIT;
        if (!c && (mt_db_acquire(srv->db, &c, &e) != 0 ||
                   mt_db_listen(c, CP_REVOCATION_CHANNEL, &e) != 0)) {
            mt_db_release(c); /* NULL is fine */
            c = NULL;
        }
        int64_t m = 0;
        if (feed_max_epoch(srv->db, &m, NULL) == 0)
            feed_advance(srv, m);
        int rc = c ? mt_db_wait_change(c, CP_FEED_POLL_MS, NULL, 0, &e) : -1;
        if (rc < 0) {
            if (c) { /* lost (the database restarted): listen again on a fresh one */
                mt_db_release(c);
                c = NULL;
            }
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += CP_FEED_POLL_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_mutex_lock(&srv->feed_mu);
            if (!srv->stopping)
                pthread_cond_timedwait(&srv->feed_cv, &srv->feed_mu, &until);
            pthread_mutex_unlock(&srv->feed_mu);
        }
        /* drain what else arrived, so that one read answers a burst of revocations */
        for (int i = 0; c && rc == 1 && i < 64 && (rc = mt_db_wait_change(c, 0, NULL, 0, &e)) == 1;
             i++)
            ;
        if (c && rc < 0) {
            mt_db_release(c);
            c = NULL;
        }
    }
    mt_db_release(c);
    return NULL;
}

static int feed_query(struct cp_job *jb, json_t *arr, int64_t *last, int *more,
                      struct meshtls_err *err)
{
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    struct mt_db_param p[] = {MT_DB_INT64(jb->q_since), MT_DB_INT64(CP_FEED_PAGE + 1)};
    int rc = mt_db_acquire(jb->srv->db, &c, err);
    if (!rc)
        rc = mt_db_query(c,
                         "SELECT epoch, serial, service, revoked_at, reason FROM "
                         "serve_revocations WHERE epoch > $1 ORDER BY epoch LIMIT $2",
                         p, 2, &r, err);
    int row, n = 0;
    while (!rc && (row = mt_db_row_next(r, err)) != 0) {
        if (row < 0) {
            rc = row;
            break;
        }
        if (++n > CP_FEED_PAGE) {
            *more = 1;
            break;
        }
        *last = mt_db_col_int64(r, 0);
        json_array_append_new(
            arr, json_pack("{s:I, s:o, s:o, s:I, s:o}", "epoch", (json_int_t)*last, "serial",
                           mt_json_string(mt_db_col_text(r, 1)), "service",
                           mt_json_string(mt_db_col_text(r, 2)), "revoked_at",
                           (json_int_t)mt_db_col_int64(r, 3), "reason",
                           mt_json_string(mt_db_col_text(r, 4) ? mt_db_col_text(r, 4) : "")));
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    return rc;
}

static void w_feed(struct cp_job *jb)
{
    struct cp_server *srv = jb->srv;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    json_t *arr = json_array();
    int64_t last = jb->q_since;
    int more = 0;
    if (!arr || feed_query(jb, arr, &last, &more, &e)) {
        json_decref(arr);
        jb_store_down(jb, &e);
        return;
    }
    if (json_array_size(arr) == 0 && jb->q_wait > 0) {
        /* Nothing newer: hold the request until the poller sees a newer epoch, the wait
         * ends, or the server stops. */
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += jb->q_wait;
        int waited = 0;
        pthread_mutex_lock(&srv->feed_mu);
        if (srv->feed_waiters < CP_FEED_WAITERS) {
            srv->feed_waiters++;
            waited = 1;
            while (!srv->stopping && srv->feed_max <= jb->q_since &&
                   pthread_cond_timedwait(&srv->feed_cv, &srv->feed_mu, &until) == 0)
                ;
            srv->feed_waiters--;
        }
        int news = srv->feed_max > jb->q_since;
        pthread_mutex_unlock(&srv->feed_mu);
        if (waited && news && feed_query(jb, arr, &last, &more, &e)) {
            json_decref(arr);
            jb_store_down(jb, &e);
            return;
        }
    }
    jb->status = 200;
    jb->out =
        json_pack("{s:I, s:o, s:b}", "epoch", (json_int_t)last, "revocations", arr, "more", more);
}

static int h_feed(struct mt_http_req *req, void *arg)
{
    const char *route = "/api/v1/revocations";
    const struct cp_peer *p = need_cert(req, arg, route);
    if (!p)
        return MT_HTTP_DONE;
    char b[32];
    int64_t since = 0, wait = 0;
    int r1 = mt_http_query_get(req, "since", b, sizeof(b));
    int bad = r1 == MESHTLS_EINVAL || (r1 >= 0 && mt_parse_i64(b, 0, INT64_MAX - 1, &since));
    int r2 = mt_http_query_get(req, "wait", b, sizeof(b));
    bad |= r2 == MESHTLS_EINVAL || (r2 >= 0 && mt_parse_i64(b, 0, CP_FEED_WAIT_MAX, &wait));
    if (bad) {
        mt_http_reply_error(req, 400, "bad_request",
                            "query: since=EPOCH (0 or the \"epoch\" of the last answer), "
                            "wait=0..60 (seconds to hold the request when nothing is newer)");
        return MT_HTTP_DONE;
    }
    struct cp_job *jb = job_new(req, arg, route, w_feed);
    if (!jb)
        return MT_HTTP_DONE;
    jb->peer = *p;
    jb->check_store = 1;
    jb->quiet = 1; /* a follower polls all the time: refusals are still audited (need_cert) */
    jb->q_since = since;
    jb->q_wait = (int)wait;
    return submit(req, jb);
}

/* ---- OCSP: POST /ocsp, GET /ocsp/{base64} ---------------------------------------------- */

static int ocsp_lookup(void *arg, const char *serial, int *status, int64_t *revoked_at, int *reason)
{
    struct mt_db *db = arg;
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    int rc = mt_db_acquire(db, &c, &e);
    struct mt_db_param p[] = {MT_DB_TEXT(serial)};
    if (!rc && !(rc = mt_db_query(c,
                                  "SELECT status, revoked_at, reason FROM certificates WHERE "
                                  "serial = $1",
                                  p, 1, &r, &e))) {
        int row = mt_db_row_next(r, &e);
        if (row < 0) {
            rc = row;
        } else if (row == 0) {
            *status = V_OCSP_CERTSTATUS_UNKNOWN;
        } else if (mt_db_col_text(r, 0) && !strcmp(mt_db_col_text(r, 0), "revoked")) {
            *status = V_OCSP_CERTSTATUS_REVOKED;
            *revoked_at = mt_db_col_int64(r, 1);
            *reason = mt_db_col_text(r, 2) ? ca_reason_parse(mt_db_col_text(r, 2)) : -1;
        } else {
            *status = V_OCSP_CERTSTATUS_GOOD;
        }
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    if (rc)
        meshtls_log(MESHTLS_LOG_WARN, "ca serve: OCSP: store: %s", e.msg);
    return rc;
}

static int64_t current_epoch(struct cp_server *srv)
{
    pthread_mutex_lock(&srv->feed_mu);
    int64_t v = srv->feed_max;
    pthread_mutex_unlock(&srv->feed_mu);
    return v;
}

static void ocsp_key_of(const unsigned char *der, size_t len, unsigned char key[32])
{
    unsigned int n = 0;
    if (EVP_Digest(der, len, key, &n, EVP_sha256(), NULL) != 1)
        memset(key, 0, 32);
}

/* A fresh cached answer to exactly these request bytes, copied into *out; else 0. */
static int ocsp_cache_get(struct cp_server *srv, const unsigned char key[32], void **out,
                          size_t *len)
{
    int64_t epoch = current_epoch(srv), now = (int64_t)time(NULL);
    int hit = 0;
    pthread_mutex_lock(&srv->ocsp_mu);
    struct ocsp_entry *e = &srv->ocsp_cache[(key[0] << 8 | key[1]) % CP_OCSP_CACHE];
    if (e->der && !memcmp(e->key, key, 32) && e->epoch == epoch &&
        now - e->made < CP_OCSP_CACHE_S && (*out = malloc(e->len)) != NULL) {
        memcpy(*out, e->der, e->len);
        *len = e->len;
        hit = 1;
    }
    pthread_mutex_unlock(&srv->ocsp_mu);
    return hit;
}

static void ocsp_cache_put(struct cp_server *srv, const unsigned char key[32], int64_t epoch,
                           const unsigned char *der, size_t len)
{
    unsigned char *copy = malloc(len);
    if (!copy)
        return;
    memcpy(copy, der, len);
    pthread_mutex_lock(&srv->ocsp_mu);
    struct ocsp_entry *e = &srv->ocsp_cache[(key[0] << 8 | key[1]) % CP_OCSP_CACHE];
    free(e->der);
    memcpy(e->key, key, 32);
    e->der = copy;
    e->len = len;
    e->made = (int64_t)time(NULL);
    e->epoch = epoch;
    pthread_mutex_unlock(&srv->ocsp_mu);
}

static void w_ocsp(struct cp_job *jb)
{
    unsigned char *der = NULL;
    size_t n = 0;
    const unsigned char *in = jb->raw;
    size_t in_len = jb->raw_len;
    if (!in) {
        size_t bl = 0;
        in = mt_http_req_body(jb->req, &bl);
        in_len = bl;
    }
    int cacheable = 0;
    int rc = cp_ocsp_respond(&jb->srv->ocsp, in, in_len, ocsp_lookup, jb->srv->db,
                             (int64_t)time(NULL), &der, &n, &cacheable);
    free(jb->raw);
    jb->raw = NULL;
    jb->raw_len = 0;
    if (rc) {
        jb_error(jb, 503, "out_of_memory", "the server is out of memory");
        return;
    }
    /* the epoch read before the look-up: a revocation since makes the entry stale */
    if (cacheable)
        ocsp_cache_put(jb->srv, jb->ocsp_key, jb->ocsp_epoch, der, n);
    jb->raw = malloc(n);
    if (jb->raw) {
        memcpy(jb->raw, der, n);
        jb->raw_len = n;
    }
    OPENSSL_free(der);
    bump(jb->srv->ocsp_responses, 1);
    jb->status = 200;
    jb->ctype = "application/ocsp-response";
}

/* Answer from the cache on the event loop (no job), or hand `jb` to the pool. */
static int ocsp_answer(struct mt_http_req *req, struct cp_job *jb, const unsigned char *der,
                       size_t len)
{
    void *body = NULL;
    size_t blen = 0;
    ocsp_key_of(der, len, jb->ocsp_key);
    jb->ocsp_epoch = current_epoch(jb->srv);
    if (ocsp_cache_get(jb->srv, jb->ocsp_key, &body, &blen)) {
        bump(jb->srv->ocsp_hits, 1);
        mt_http_reply(req, 200, "application/ocsp-response", body, blen);
        free(body);
        free(jb->raw);
        free(jb);
        return MT_HTTP_DONE;
    }
    return submit(req, jb);
}

static int h_ocsp_post(struct mt_http_req *req, void *arg)
{
    struct cp_job *jb = job_new(req, arg, "/ocsp", w_ocsp);
    if (!jb)
        return MT_HTTP_DONE;
    jb->quiet = 1;
    size_t bl = 0;
    const void *body = mt_http_req_body(req, &bl);
    /* the body is read on the job thread (immutable until the reply) */
    return ocsp_answer(req, jb, body ? body : "", bl);
}

static int hexv(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/*
 * RFC 5019 A.1: GET /ocsp/{the DER request, base64, URL-encoded}.  The HTTP layer refuses
 * an encoded '/' (%2F) in a path, so a request whose base64 holds '/' is accepted as sent
 * raw (several segments, as many clients do) or in base64url ('-', '_').  Decoded from the
 * raw path here.
 */
static int h_ocsp_get(struct mt_http_req *req, void *arg)
{
    const char *path = mt_http_req_path(req);
    const char *b = path + strlen("/ocsp/");
    size_t bl = strlen(b);
    char *b64 = bl && bl <= 8192 ? malloc(bl + 1) : NULL;
    unsigned char *der = b64 ? malloc(bl) : NULL;
    size_t k = 0;
    int n = -1, bad = !der;
    for (size_t i = 0; !bad && i < bl; i++) {
        char c = b[i];
        if (c == '%' && i + 2 < bl + 1 && hexv(b[i + 1]) >= 0 && hexv(b[i + 2]) >= 0) {
            c = (char)(hexv(b[i + 1]) * 16 + hexv(b[i + 2]));
            i += 2;
        } else if (c == '%') {
            bad = 1;
        }
        b64[k++] = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    if (!bad) {
        b64[k] = '\0';
        EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
        int outl = 0, fin = 0;
        if (ctx) {
            EVP_DecodeInit(ctx);
            if (EVP_DecodeUpdate(ctx, der, &outl, (const unsigned char *)b64, (int)k) >= 0 &&
                EVP_DecodeFinal(ctx, der + outl, &fin) == 1)
                n = outl + fin;
            EVP_ENCODE_CTX_free(ctx);
        }
    }
    free(b64);
    if (n <= 0) {
        free(der);
        mt_http_reply_error(req, 400, "bad_request",
                            "GET /ocsp/{request}: the DER OCSP request, base64, URL-encoded "
                            "(RFC 5019); or POST it to /ocsp as application/ocsp-request");
        return MT_HTTP_DONE;
    }
    struct cp_job *jb = job_new(req, arg, "/ocsp", w_ocsp);
    if (!jb) {
        free(der);
        return MT_HTTP_DONE;
    }
    jb->quiet = 1;
    jb->raw = der;
    jb->raw_len = (size_t)n;
    return ocsp_answer(req, jb, der, (size_t)n);
}

/* ---- the lifecycle worker -------------------------------------------------------------- */

static int build_snap(const struct cp_serve_opts *o, struct mt_snap_holder *h,
                      struct meshtls_err *err);

/* ca_rotate's flag: a due renew-only certificate is not re-issued; tell the operator. */
static int on_due(const struct ca_cert *c, void *arg)
{
    (void)arg;
    if (!renew_only(c))
        return 0;
    char when[32];
    struct tm tm;
    time_t na = (time_t)c->not_after;
    gmtime_r(&na, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    int64_t left = c->not_after - (int64_t)time(NULL);
    MESHTLS_LOG_EVENT(MESHTLS_LOG_WARN, "rotation_needed", MESHTLS_LF_S("service", c->service),
                      MESHTLS_LF_S("serial", c->serial), MESHTLS_LF_S("not_after", when),
                      MESHTLS_LF_I("days_left", left / 86400),
                      MESHTLS_LF_S("action", left > 0 ? "the service must renew through POST "
                                                        "/api/v1/renew (its key is its own)"
                                                      : "expired: the service needs a new "
                                                        "bootstrap token (meshtls ca token)"));
    return 1;
}

static void on_rotated(const char *service, const char *old_serial, const char *new_serial,
                       const char *out_dir, void *arg)
{
    (void)arg;
    MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "rotate", MESHTLS_LF_S("service", service),
                      MESHTLS_LF_S("old_serial", old_serial ? old_serial : ""),
                      MESHTLS_LF_S("new_serial", new_serial ? new_serial : ""),
                      MESHTLS_LF_S("out_dir", out_dir ? out_dir : ""));
}

static int sweep_fn(struct mt_db_conn *c, void *arg, struct meshtls_err *err)
{
    int64_t *now = arg;
    struct mt_db_param p[] = {MT_DB_INT64(*now)};
    int rc = mt_db_exec(c, "DELETE FROM serve_tokens WHERE expires_at <= $1", p, 1, NULL, err);
    return rc ? rc
              : mt_db_exec(c, "DELETE FROM serve_peers WHERE expires_at <= $1", p, 1, NULL, err);
}

/*
 * One run: rotate what expires within the window (every certificate the CA can re-issue
 * usefully: a new key where it holds the key, the same public key re-signed for one issued
 * from a CSR into a directory its service reads), flag the CSR-issued ones of the API that
 * only their holder can renew (on_due), publish a fresh CRL, drop expired tokens and stale
 * peers, and pick up the server's own certificate if it was rotated.
 * Idempotent: a second run finds nothing to rotate (new certificates outlive the window).
 */
static void lifecycle_run(struct cp_server *srv)
{
    const struct cp_serve_opts *o = srv->o;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    int rotated = 0, failed = 0, flagged = 0;
    struct ca_rotate_opts ro = {.within_days = o->rotate_within_days,
                                .days = o->leaf_days,
                                .report = on_rotated,
                                .warn = crl_warn,
                                .flag = on_due,
                                .flagged = &flagged};
    int rc = ca_rotate(o->dir, &ro, &rotated, &failed, &e);
    if (rc)
        meshtls_log(MESHTLS_LOG_WARN, "ca serve: lifecycle: rotate (%d skipped): %s", failed,
                    e.msg);
    int64_t now = (int64_t)time(NULL);
    struct meshtls_err e2 = MESHTLS_ERR_INIT;
    if (mt_db_tx(srv->db, sweep_fn, &now, &e2))
        meshtls_log(MESHTLS_LOG_WARN, "ca serve: lifecycle: sweep: %s", e2.msg);
    struct meshtls_err e3 = MESHTLS_ERR_INIT;
    pthread_mutex_lock(&srv->crl_mu);
    srv->crl_made = 0; /* force a new CRL */
    int crc = crl_refresh(srv, &e3);
    pthread_mutex_unlock(&srv->crl_mu);
    if (crc)
        meshtls_log(MESHTLS_LOG_WARN, "ca serve: lifecycle: CRL: %s", e3.msg);
    struct meshtls_err e4 = MESHTLS_ERR_INIT;
    if (rotated && build_snap(o, srv->api_snap, &e4))
        meshtls_log(MESHTLS_LOG_WARN, "ca serve: lifecycle: reloading our certificate: %s", e4.msg);
    bump(srv->lifecycle_runs, 1);
    bump(srv->lifecycle_rotated, (uint64_t)rotated);
    MESHTLS_LOG_EVENT(MESHTLS_LOG_INFO, "lifecycle", MESHTLS_LF_I("rotated", rotated),
                      MESHTLS_LF_I("rotation_needed", flagged), MESHTLS_LF_B("rotate_ok", rc == 0),
                      MESHTLS_LF_B("crl_ok", crc == 0));
}

/*
 * PostgreSQL: run the worker only while holding a session advisory lock, so that a run
 * that outlasts its lease (a slow rotation) never overlaps the next server's run; the
 * lock goes with the session if this server dies.  SQLite: the lease alone (one host).
 */
static void lifecycle_locked_run(struct cp_server *srv)
{
    if (mt_db_backend(srv->db) != MT_DB_POSTGRES) {
        lifecycle_run(srv);
        return;
    }
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    int got = 0, rc = mt_db_acquire(srv->db, &c, &e);
    /* the key: FNV-1a of "meshtls:ca-lifecycle" */
    if (!rc &&
        !(rc = mt_db_query(c, "SELECT pg_try_advisory_lock(3832509412160895794)", NULL, 0, &r, &e)))
        got = mt_db_row_next(r, &e) == 1 && mt_db_col_int64(r, 0) == 1;
    mt_db_rows_close(r);
    r = NULL;
    if (rc)
        meshtls_log(MESHTLS_LOG_WARN, "ca serve: lifecycle: lock: %s", e.msg);
    else if (!got)
        meshtls_log(MESHTLS_LOG_INFO, "ca serve: lifecycle: another server's run is still going; "
                                      "skipping this one");
    if (got) {
        lifecycle_run(srv);
        if (!mt_db_query(c, "SELECT pg_advisory_unlock(3832509412160895794)", NULL, 0, &r, NULL))
            mt_db_row_next(r, NULL);
        mt_db_rows_close(r);
    }
    mt_db_release(c);
}

static void *lifecycle_main(void *arg)
{
    struct cp_server *srv = arg;
    char holder[300], hn[256] = "";
    gethostname(hn, sizeof(hn) - 1);
    snprintf(holder, sizeof(holder), "%s:%ld", hn, (long)getpid());
    int64_t iv = srv->o->lifecycle_ms;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    pthread_mutex_lock(&srv->feed_mu);
    while (!srv->stopping) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec > next.tv_sec ||
            (now.tv_sec == next.tv_sec && now.tv_nsec >= next.tv_nsec)) {
            pthread_mutex_unlock(&srv->feed_mu);
            /* one server per interval: the lease runs out just before the next interval */
            struct timespec wall;
            clock_gettime(CLOCK_REALTIME, &wall);
            int64_t wms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000;
            int won = 0;
            struct meshtls_err e = MESHTLS_ERR_INIT;
            if (cp_lease_take(srv->db, "lifecycle", holder, wms, wms + iv - iv / 10, &won, &e))
                meshtls_log(MESHTLS_LOG_WARN, "ca serve: lifecycle: lease: %s", e.msg);
            else if (won)
                lifecycle_locked_run(srv);
            pthread_mutex_lock(&srv->feed_mu);
            next.tv_sec += (time_t)(iv / 1000);
            next.tv_nsec += (long)(iv % 1000) * 1000000L;
            if (next.tv_nsec >= 1000000000L) {
                next.tv_sec++;
                next.tv_nsec -= 1000000000L;
            }
            continue;
        }
        pthread_cond_timedwait(&srv->feed_cv, &srv->feed_mu, &next);
    }
    pthread_mutex_unlock(&srv->feed_mu);
    return NULL;
}

/* ---- /metrics (status listener) -------------------------------------------------------- */

static void w_metrics(struct cp_job *jb)
{
    struct cp_server *srv = jb->srv;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    struct mt_db_conn *c = NULL;
    struct mt_db_rows *r = NULL;
    int64_t now = (int64_t)time(NULL);
    /* days until the expiry of each service's newest active certificate (002's gauge),
     * and how many of its active certificates are due but only their holder can renew
     * (rotation_needed(): CSR-issued, recorded in .../served/SERVICE) */
    int rc = mt_db_acquire(srv->db, &c, &e);
    struct mt_db_param due[] = {MT_DB_INT64(now + (int64_t)srv->o->rotate_within_days * 86400)};
    if (!rc)
        rc = mt_db_query(c,
                         "SELECT service, MAX(not_after), COALESCE(SUM(CASE WHEN key_held = 0 "
                         "AND not_after <= $1 AND out_dir LIKE ('%/served/' || service) "
                         "THEN 1 ELSE 0 END), 0) FROM certificates WHERE status = 'active' "
                         "GROUP BY service",
                         due, 1, &r, &e);
    int row;
    while (!rc && (row = mt_db_row_next(r, &e)) != 0) {
        struct mt_series *se = NULL;
        if (row < 0) {
            rc = row;
            break;
        }
        const char *svc = mt_db_col_text(r, 0);
        if (svc && mt_series_get(srv->f_days, MT_LIST(svc), &se, NULL) == 0)
            mt_gauge_set(se, (double)(mt_db_col_int64(r, 1) - now) / 86400.0);
        if (svc && mt_series_get(srv->f_needed, MT_LIST(svc), &se, NULL) == 0)
            mt_gauge_set(se, (double)mt_db_col_int64(r, 2));
    }
    mt_db_rows_close(r);
    r = NULL;
    int64_t alive = 0, stale = 0;
    struct mt_db_param p[] = {MT_DB_INT64(now)};
    if (!rc &&
        !(rc = mt_db_query(c,
                           "SELECT COALESCE(SUM(CASE WHEN expires_at > $1 THEN 1 ELSE 0 END), 0), "
                           "COALESCE(SUM(CASE WHEN expires_at <= $1 THEN 1 ELSE 0 END), 0) "
                           "FROM serve_peers",
                           p, 1, &r, &e)) &&
        (row = mt_db_row_next(r, &e)) > 0) {
        alive = mt_db_col_int64(r, 0);
        stale = mt_db_col_int64(r, 1);
    }
    mt_db_rows_close(r);
    mt_db_release(c);
    struct mt_series *se = NULL;
    if (mt_series_get(srv->f_peers, MT_LIST("alive"), &se, NULL) == 0)
        mt_gauge_set(se, (double)alive);
    if (mt_series_get(srv->f_peers, MT_LIST("stale"), &se, NULL) == 0)
        mt_gauge_set(se, (double)stale);
    /* the CRL this server publishes: re-signed here too when due */
    pthread_mutex_lock(&srv->crl_mu);
    if (!rc)
        rc = crl_refresh(srv, &e);
    int64_t made = srv->crl_made;
    pthread_mutex_unlock(&srv->crl_mu);
    if (made && mt_series_get(srv->f_crl_age, NULL, &se, NULL) == 0)
        mt_gauge_set(se, (double)(now - made));
    if (made && mt_series_get(srv->f_crl_next, NULL, &se, NULL) == 0)
        mt_gauge_set(se, (double)(made + CA_CRL_DAYS * 86400LL - now));
    if (rc) {
        jb_store_down(jb, &e);
        return;
    }
    char *body = NULL;
    size_t n = 0;
    if (mt_metrics_render(srv->metrics, &body, &n, &e) != 0) {
        jb_error(jb, 500, "metrics_unavailable", "%s", e.msg);
        return;
    }
    jb->status = 200;
    jb->ctype = "text/plain; version=0.0.4";
    jb->raw = body;
    jb->raw_len = n;
}

static int h_metrics(struct mt_http_req *req, void *arg)
{
    struct cp_job *jb = job_new(req, arg, "/metrics", w_metrics);
    if (!jb)
        return MT_HTTP_DONE;
    jb->quiet = 1;
    return submit(req, jb);
}

static double rd_until(void *a)
{
    return (double)(*(int64_t *)a - (int64_t)time(NULL));
}

static double rd_epoch(void *a)
{
    struct cp_server *srv = a;
    pthread_mutex_lock(&srv->feed_mu);
    int64_t v = srv->feed_max;
    pthread_mutex_unlock(&srv->feed_mu);
    return (double)v;
}

/* meshtls_handshake_total{from,to,result}: one per accepted TLS connection on the API. */
static void count_handshake(struct cp_server *srv, const struct cp_peer *p, unsigned shard)
{
    const char *from = p->state == CP_AUTH_OK     ? p->spiffe
                       : p->state == CP_AUTH_NONE ? "anonymous"
                                                  : "unverified";
    const char *result = p->state == CP_AUTH_OK     ? "success"
                         : p->state == CP_AUTH_NONE ? "no_certificate"
                                                    : "failure";
    struct mt_series *s = NULL;
    /* a bounded family: past its series limit, callers are counted as "other" */
    if (mt_series_get(srv->f_handshake, MT_LIST(from, srv->self_id, result), &s, NULL) != 0 &&
        mt_series_get(srv->f_handshake, MT_LIST("other", srv->self_id, result), &s, NULL) != 0)
        return;
    mt_counter_add(s, shard, 1);
}

static int metrics_setup(struct cp_server *srv, struct meshtls_err *err)
{
    int rc;
    if ((rc = mt_metrics_new((unsigned)srv->o->workers + 1, &srv->metrics, err)))
        return rc;
    struct mt_metrics *m = srv->metrics;
    struct mt_family *f = NULL;
    struct {
        const char *name, *help;
        struct mt_series **s;
    } counters[] = {
        {"meshtls_cert_issuances_total",
         "Certificates issued by this server (sign, renew, rotate).", &srv->issuances},
        {"meshtls_cert_rotations_total", "Certificates rotated through the admin API.",
         &srv->rotations},
        {"meshtls_cert_revocations_total", "Certificates revoked through the admin API.",
         &srv->revocations},
        {"meshtls_ca_renewals_total", "Certificates renewed through /api/v1/renew.",
         &srv->renewals},
        {"meshtls_ca_peer_registrations_total", "Registrations and heartbeats on /api/peers.",
         &srv->peers_registered},
        {"meshtls_ca_refused_total", "Requests refused with 403.", &srv->refused},
        {"meshtls_ca_ocsp_responses_total", "OCSP responses signed.", &srv->ocsp_responses},
        {"meshtls_ca_ocsp_cache_hits_total", "OCSP answers served from the cache.",
         &srv->ocsp_hits},
        {"meshtls_ca_lifecycle_runs_total", "Runs of the lifecycle worker on this server.",
         &srv->lifecycle_runs},
        {"meshtls_ca_lifecycle_rotated_total", "Certificates the lifecycle worker rotated.",
         &srv->lifecycle_rotated},
    };
    for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++)
        if ((rc = mt_counter_new(m, counters[i].name, counters[i].help, NULL, &f, err)) ||
            (rc = mt_series_get(f, NULL, counters[i].s, err)))
            return rc;
    if ((rc = mt_counter_new(m, "meshtls_ca_token_redemptions_total",
                             "Bootstrap token redemptions at /api/v1/sign by result.",
                             MT_LIST("result"), &f, err)))
        return rc;
    for (int i = 0; i < CP_TOK_NRESULTS; i++)
        if ((rc = mt_series_get(f, MT_LIST(TOK_RESULT[i]), &srv->tokens[i], err)))
            return rc;
    if ((rc = mt_counter_new(m, "meshtls_handshake_total",
                             "TLS connections to the API by caller identity and result "
                             "(success: a verified certificate).",
                             MT_LIST("from", "to", "result"), &srv->f_handshake, err)) ||
        (rc = mt_gauge_new(m, "meshtls_cert_days_until_expiry",
                           "Days until the newest active certificate of each service expires.",
                           MT_LIST("service"), &srv->f_days, err)) ||
        (rc = mt_gauge_new(m, "meshtls_cert_rotation_needed",
                           "Active certificates of each service within the rotation window "
                           "that the lifecycle worker cannot rotate (issued from a CSR through "
                           "the API): the service must renew them itself.",
                           MT_LIST("service"), &srv->f_needed, err)) ||
        (rc = mt_gauge_new(m, "meshtls_ca_peers", "Registrations in /api/peers by state.",
                           MT_LIST("state"), &srv->f_peers, err)) ||
        (rc = mt_gauge_new(m, "meshtls_ca_crl_age_seconds",
                           "Seconds since the published CRL was signed.", NULL, &srv->f_crl_age,
                           err)) ||
        (rc = mt_gauge_new(m, "meshtls_ca_crl_next_update_seconds",
                           "Seconds until the published CRL's nextUpdate.", NULL, &srv->f_crl_next,
                           err)))
        return rc;
    mt_family_set_max_series(srv->f_handshake, 512);
    mt_family_set_max_series(srv->f_days, 4096);
    mt_family_set_max_series(srv->f_needed, 4096);
    struct mt_family *fi = NULL, *fr = NULL, *fe = NULL;
    if ((rc = mt_gauge_new(m, "meshtls_ca_intermediate_expiry_seconds",
                           "Seconds until the intermediate CA certificate expires.", MT_LIST("ca"),
                           &fi, err)) ||
        (rc = mt_series_fn(fi, MT_LIST("intermediate"), rd_until, &srv->inter_not_after, err)) ||
        (rc = mt_gauge_new(m, "meshtls_ca_root_expiry_seconds",
                           "Seconds until the root CA certificate expires.", MT_LIST("ca"), &fr,
                           err)) ||
        (rc = mt_series_fn(fr, MT_LIST("root"), rd_until, &srv->root_not_after, err)) ||
        (rc = mt_gauge_new(m, "meshtls_ca_revocation_epoch",
                           "The newest epoch of the revocation feed.", MT_LIST("store"), &fe,
                           err)) ||
        (rc = mt_series_fn(fe, MT_LIST("local"), rd_epoch, srv, err)))
        return rc;
    return 0;
}

/* ---- start-up -------------------------------------------------------------------------- */

struct cp_snap {
    struct mt_snap base;
};

static void snap_destroy(struct mt_snap *s)
{
    SSL_CTX_free(s->ctx);
    free(s);
}

static int add_san(const char *s, const char **dns, size_t *nd, const char **ips, size_t *ni)
{
    unsigned char b[16];
    int ip = inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
    const char **v = ip ? ips : dns;
    size_t *n = ip ? ni : nd;
    for (size_t i = 0; i < *n; i++)
        if (!strcasecmp(v[i], s))
            return 0;
    if (*n >= CP_SANS_MAX + 4)
        return -1;
    v[(*n)++] = s;
    return 0;
}

/*
 * The server's own certificate: register the service "meshtls-ca" for the names it is
 * reached by (the --listen host, localhost, 127.0.0.1, ::1, each --san) and issue it a
 * certificate from this CA into DIR/serve/.
 */
static int server_cert(const struct cp_serve_opts *o, char *host, char *self_id,
                       struct meshtls_err *err)
{
    const char *dns[CP_SANS_MAX + 4], *ips[CP_SANS_MAX + 4];
    size_t nd = 0, ni = 0;
    /* host of --listen: "[v6]:port", "host:port", ":port" */
    const char *l = o->listen;
    if (l[0] == '[') {
        const char *e = strchr(l, ']');
        snprintf(host, 256, "%.*s", e ? (int)(e - l - 1) : 0, l + 1);
    } else {
        const char *c = strrchr(l, ':');
        snprintf(host, 256, "%.*s", c ? (int)(c - l) : (int)strlen(l), l);
    }
    add_san("localhost", dns, &nd, ips, &ni);
    add_san("127.0.0.1", dns, &nd, ips, &ni);
    add_san("::1", dns, &nd, ips, &ni);
    if (host[0] && strcmp(host, "0.0.0.0") && strcmp(host, "::"))
        add_san(host, dns, &nd, ips, &ni);
    for (size_t i = 0; i < o->n_sans; i++)
        if (add_san(o->sans[i], dns, &nd, ips, &ni))
            return meshtls_err_set(err, MESHTLS_EINVAL, "too many --san");
    int updated = 0, rc;
    char spiffe[512], serial[80], out[4200];
    if ((rc = ca_register(o->dir, CP_SERVER_SERVICE, dns, nd, ips, ni, NULL, &updated, spiffe,
                          sizeof(spiffe), err)))
        return rc;
    snprintf(out, sizeof(out), "%s/serve", o->dir);
    if ((rc = ca_issue(o->dir, CP_SERVER_SERVICE, out, o->server_days, NULL, serial, err)))
        return rc;
    snprintf(self_id, 512, "%s", spiffe);
    meshtls_log(MESHTLS_LOG_INFO, "ca serve: server certificate %s (%s) in %s", serial, spiffe,
                out);
    return 0;
}

static int build_snap(const struct cp_serve_opts *o, struct mt_snap_holder *h,
                      struct meshtls_err *err)
{
    char cert[4300], key[4300], ca[4300];
    snprintf(cert, sizeof(cert), "%s/serve/%s.crt", o->dir, CP_SERVER_SERVICE);
    snprintf(key, sizeof(key), "%s/serve/%s.key", o->dir, CP_SERVER_SERVICE);
    snprintf(ca, sizeof(ca), "%s/ca.crt", o->dir);
    struct meshtls_tls_opts to = {.cert_file = cert, .key_file = key, .ca_file = ca};
    SSL_CTX *ctx = NULL;
    int rc = meshtls_tls_server_ctx_new(&to, &ctx, err);
    if (rc)
        return rc;
    /* Ask for a client certificate, do not require one; verify whatever is presented and
     * keep the verdict (accept_verify_cb): routes decide. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, accept_verify_cb);
    struct cp_snap *s = calloc(1, sizeof(*s));
    if (!s) {
        SSL_CTX_free(ctx);
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    }
    mt_snap_init(&s->base, snap_destroy);
    s->base.ctx = ctx;
    X509 *x = SSL_CTX_get0_certificate(ctx);
    struct meshtls_identity *id = NULL;
    if (x && meshtls_identity_from_x509(x, &id, NULL) == 0)
        s->base.not_after = id->not_after;
    meshtls_identity_free(id);
    mt_snap_publish(h, &s->base);
    return 0;
}

/* The delegated OCSP responder, issued by the intermediate for as long as a server
 * certificate (re-made at every start; never stored). */
static int ocsp_setup(struct cp_server *srv, struct meshtls_err *err)
{
    char p[4300];
    STACK_OF(X509) *v = NULL;
    EVP_PKEY *key = NULL;
    snprintf(p, sizeof(p), "%s/intermediate.crt", srv->o->dir);
    int rc = meshtls_pem_read_certs(p, &v, err);
    if (!rc) {
        snprintf(p, sizeof(p), "%s/intermediate.key", srv->o->dir);
        rc = meshtls_pem_read_key(p, &key, err);
    }
    if (!rc)
        rc = cp_ocsp_init(sk_X509_value(v, 0), key, srv->o->server_days, &srv->ocsp, err);
    struct meshtls_identity *id = NULL;
    if (!rc && meshtls_identity_from_x509(sk_X509_value(v, 0), &id, NULL) == 0)
        srv->inter_not_after = id->not_after;
    meshtls_identity_free(id);
    id = NULL;
    sk_X509_pop_free(v, X509_free);
    v = NULL;
    snprintf(p, sizeof(p), "%s/root.crt", srv->o->dir);
    if (!rc && meshtls_pem_read_certs(p, &v, NULL) == 0 &&
        meshtls_identity_from_x509(sk_X509_value(v, 0), &id, NULL) == 0)
        srv->root_not_after = id->not_after;
    meshtls_identity_free(id);
    sk_X509_pop_free(v, X509_free);
    EVP_PKEY_free(key);
    return rc;
}

/* GET /ocsp/{a}, /ocsp/{a}/{b}, ...: base64 with raw '/' in it spans segments. */
static int ocsp_get_routes(struct mt_http_router *r, struct cp_server *srv, struct meshtls_err *err)
{
    char pat[128] = "/ocsp";
    for (int i = 0; i < 8; i++) { /* the router's bound: 8 parameters per route */
        size_t l = strlen(pat);
        snprintf(pat + l, sizeof(pat) - l, "/{s%d}", i);
        int rc = mt_http_route_add(r, "GET", pat, h_ocsp_get, srv, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int add_routes(struct mt_http_router *r, struct cp_server *srv, struct meshtls_err *err)
{
    struct {
        const char *m, *p;
        mt_http_handler_fn fn;
    } t[] = {
        {"GET", "/healthz", h_health},
        {"GET", "/readyz", h_ready},
        {"GET", "/api/peers", h_peers},
        {"POST", "/api/peers", h_peers},
        {"GET", "/crl", h_crl},
        {"POST", "/api/v1/sign", h_sign},
        {"POST", "/api/v1/renew", h_renew},
        {"GET", "/api/v1/revocations", h_feed},
        {"POST", "/ocsp", h_ocsp_post},
        {"GET", "/api/admin/security/certificates", h_admin_list},
        {"POST", "/api/admin/security/certificates/{service}/rotate", h_admin_rotate},
        {"POST", "/api/admin/security/certificates/{service}/revoke", h_admin_revoke},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        int rc = mt_http_route_add(r, t[i].m, t[i].p, t[i].fn, srv, err);
        if (rc)
            return rc;
    }
    return ocsp_get_routes(r, srv, err);
}

int cp_serve_check(const struct cp_serve_opts *o, struct meshtls_err *err)
{
    int rc;
    struct ca_store *st = NULL;
    char *td = NULL, p[4300];
    STACK_OF(X509) *v = NULL;
    EVP_PKEY *key = NULL;
    struct sockaddr_storage sa;
    socklen_t sl;
    if (o->leaf_days <= o->rotate_within_days)
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "--days %d must be longer than --rotate-within %d", o->leaf_days,
                               o->rotate_within_days);
    if ((rc = ca_store_open(o->dir, 0, &st, err)) ||
        (rc = ca_store_meta_get(st, "trust_domain", &td, err)))
        goto out;
    snprintf(p, sizeof(p), "%s/intermediate.crt", o->dir);
    if ((rc = meshtls_pem_read_certs(p, &v, err)))
        goto out;
    snprintf(p, sizeof(p), "%s/intermediate.key", o->dir);
    if ((rc = meshtls_pem_read_key(p, &key, err)))
        goto out;
    snprintf(p, sizeof(p), "%s/ca.crt", o->dir);
    sk_X509_pop_free(v, X509_free);
    v = NULL;
    if ((rc = meshtls_pem_read_certs(p, &v, err)))
        goto out;
    if ((rc = mt_resolve(o->listen, 1, &sa, &sl, err)) ||
        (o->status && (rc = mt_resolve(o->status, 1, &sa, &sl, err))))
        goto out;
    for (size_t i = 0; i < o->n_admins; i++)
        if (strncmp(o->admins[i], "spiffe://", 9) != 0) {
            rc =
                meshtls_err_set(err, MESHTLS_EINVAL, "--admin %s is not a SPIFFE ID", o->admins[i]);
            goto out;
        }
out:
    ca_store_close(st);
    free(td);
    sk_X509_pop_free(v, X509_free);
    EVP_PKEY_free(key);
    return rc;
}

int cp_serve_run(const struct cp_serve_opts *o, struct meshtls_err *err)
{
    int rc = 0;
    struct cp_server srv = {.o = o};
    pthread_mutex_init(&srv.crl_mu, NULL);
    pthread_cond_init(&srv.crl_cv, NULL);
    pthread_mutex_init(&srv.feed_mu, NULL);
    pthread_mutex_init(&srv.ocsp_mu, NULL);
    pthread_mutex_init(&srv.issue_mu, NULL);
    pthread_cond_init(&srv.batch_cv, NULL);
    srv.batch_tail = &srv.batch_head;
    srv.ocsp_cache = calloc(CP_OCSP_CACHE, sizeof(*srv.ocsp_cache));
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv.feed_cv, &ca);
    pthread_condattr_destroy(&ca);
    struct mt_snap_holder api_snap = MT_SNAP_HOLDER_INIT, st_snap = MT_SNAP_HOLDER_INIT;
    struct mt_http_router *router = NULL, *srouter = NULL;
    struct cp_api api = {.srv = &srv};
    struct mt_http_listener stl = {0};
    struct mt_engine *eng = NULL;
    struct mt_listener *l = NULL, *sl = NULL;
    char host[256], p[4300];

    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (!srv.ocsp_cache) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = cp_db_open(o->dir, &srv.db, err)))
        goto out;
    snprintf(p, sizeof(p), "%s/served", o->dir); /* certificates issued through the API */
    if (mkdir(p, 0755) != 0 && errno != EEXIST) {
        rc = meshtls_err_set(err, MESHTLS_EIO, "cannot create %s: %s", p, strerror(errno));
        goto out;
    }
    /* stored absolute: `ca rotate` may run from another working directory */
    if (!realpath(p, srv.served_dir)) {
        rc = meshtls_err_set(err, MESHTLS_EIO, "cannot resolve %s: %s", p, strerror(errno));
        goto out;
    }
    {
        struct ca_store *st = NULL;
        if ((rc = store_take(&srv, &st, err)))
            goto out;
        rc = ca_signer_load(o->dir, st, &srv.signer, err);
        store_give(&srv, st, rc != 0);
        if (rc)
            goto out;
    }
    snprintf(p, sizeof(p), "%s/ca.crt", o->dir);
    if ((rc = meshtls_read_file(p, MESHTLS_PEM_FILE_MAX, &srv.ca_pem, NULL, err)))
        goto out;
    if ((rc = server_cert(o, host, srv.self_id, err)) || (rc = build_snap(o, &api_snap, err)) ||
        (rc = ocsp_setup(&srv, err)) || (rc = metrics_setup(&srv, err)))
        goto out;
    if (!(router = mt_http_router_new()) || (o->status && !(srouter = mt_http_router_new()))) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = add_routes(router, &srv, err)))
        goto out;
    api.http.router = router;
    mt_http_limits_default(&api.http.limits);
    api.http.limits.max_body = 64 * 1024; /* a CSR and a token, or a peer's address */
    api.http.plaintext_status = 403;
    api.http.conn_data_new = peer_new;
    api.http.conn_data_free = peer_free;
    api.http.write_timeout_ms = 10000;
    struct mt_engine_opts eo = {.workers = o->workers, .job_threads = o->job_threads};
    struct mt_listener_opts lo = {.name = "ca api",
                                  .addr = o->listen,
                                  .ops = &mt_http_proto,
                                  .arg = &api.http,
                                  .snap = &api_snap,
                                  .tls = 1,
                                  .sniff_plaintext = 1,
                                  .max_conns = 1024,
                                  .handshake_timeout_ms = 10000};
    if ((rc = mt_engine_new(&eo, &eng, err)) || (rc = mt_engine_listen(eng, &lo, &l, err))) {
        if (rc == MESHTLS_EIO)
            rc = meshtls_err_set(err, rc, "--listen %s: %s", o->listen, strerror(errno));
        goto out;
    }
    if (o->status) {
        if ((rc = mt_http_route_add(srouter, "GET", "/healthz", h_health, &srv, err)) ||
            (rc = mt_http_route_add(srouter, "GET", "/readyz", h_ready, &srv, err)) ||
            (rc = mt_http_route_add(srouter, "GET", "/metrics", h_metrics, &srv, err)) ||
            (rc = mt_http_route_add(srouter, "POST", "/ocsp", h_ocsp_post, &srv, err)) ||
            (rc = ocsp_get_routes(srouter, &srv, err)))
            goto out;
        stl.router = srouter;
        mt_http_limits_default(&stl.limits);
        stl.limits.max_body = 1024;
        stl.write_timeout_ms = 5000;
        struct mt_listener_opts so = {.name = "ca status",
                                      .addr = o->status,
                                      .ops = &mt_http_proto,
                                      .arg = &stl,
                                      .snap = &st_snap,
                                      .max_conns = 64,
                                      .drain_close = 1};
        if ((rc = mt_engine_listen(eng, &so, &sl, err))) {
            if (rc == MESHTLS_EIO)
                rc = meshtls_err_set(err, rc, "--status %s: %s", o->status, strerror(errno));
            goto out;
        }
    }
    if ((rc = feed_max_epoch(srv.db, &srv.feed_max, err)))
        goto out;
    if (pthread_create(&srv.poller, NULL, feed_poller, &srv) != 0) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "cannot start the revocation-feed thread");
        goto out;
    }
    srv.poller_started = 1;
    if (pthread_create(&srv.crl_thread, NULL, crl_publisher, &srv) != 0) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "cannot start the CRL publisher thread");
        goto out;
    }
    srv.crl_started = 1;
    srv.api_snap = &api_snap;
    if (o->lifecycle_ms > 0) {
        if (pthread_create(&srv.lifecycle, NULL, lifecycle_main, &srv) != 0) {
            rc = meshtls_err_set(err, MESHTLS_ENOMEM, "cannot start the lifecycle worker");
            goto out;
        }
        srv.lifecycle_started = 1;
    }
    if ((rc = mt_engine_start(eng, err)))
        goto out;
    meshtls_log(MESHTLS_LOG_INFO, "ca serve: listening on %s (%zu admin identit%s)",
                mt_listener_addr(l), o->n_admins, o->n_admins == 1 ? "y" : "ies");
    meshtls_log_announce("listening", mt_listener_addr(l));
    if (sl)
        meshtls_log_announce("status", mt_listener_addr(sl));
    for (;;) {
        struct timespec to = {.tv_sec = 1, .tv_nsec = 0};
        int sig = sigtimedwait(&set, NULL, &to);
        if (sig == SIGTERM || sig == SIGINT)
            break;
    }
    meshtls_log(MESHTLS_LOG_INFO, "ca serve: stopping; draining for up to %d ms", o->drain_ms);
    /* long polls answer now (with nothing new) instead of holding the drain */
    pthread_mutex_lock(&srv.feed_mu);
    srv.stopping = 1;
    pthread_cond_broadcast(&srv.feed_cv);
    pthread_mutex_unlock(&srv.feed_mu);
    long long left = 0;
    if (!mt_engine_drain(eng, o->drain_ms, &left))
        meshtls_log(MESHTLS_LOG_WARN, "ca serve: closed %lld connection(s) at the drain timeout",
                    left);
    rc = 0;
out:
    pthread_mutex_lock(&srv.feed_mu);
    srv.stopping = 1;
    pthread_cond_broadcast(&srv.feed_cv);
    pthread_mutex_unlock(&srv.feed_mu);
    mt_engine_free(eng);
    if (srv.poller_started)
        pthread_join(srv.poller, NULL);
    if (srv.lifecycle_started)
        pthread_join(srv.lifecycle, NULL);
    if (srv.crl_started) { /* after the engine: no revoke asks for a CRL any more */
        pthread_mutex_lock(&srv.crl_mu);
        srv.crl_stop = 1;
        pthread_cond_signal(&srv.crl_cv);
        pthread_mutex_unlock(&srv.crl_mu);
        pthread_join(srv.crl_thread, NULL);
    }
    mt_http_router_free(router);
    mt_http_router_free(srouter);
    mt_snap_holder_clear(&api_snap);
    mt_snap_holder_clear(&st_snap);
    mt_db_close(srv.db);
    cp_ocsp_free(&srv.ocsp);
    mt_metrics_free(srv.metrics);
    for (size_t i = 0; i < srv.n_stores; i++)
        ca_store_close(srv.stores[i]);
    ca_signer_unref(srv.signer);
    pthread_mutex_destroy(&srv.issue_mu);
    pthread_cond_destroy(&srv.batch_cv);
    free(srv.ca_pem);
    free(srv.crl_pem);
    OPENSSL_free(srv.crl_der);
    pthread_cond_destroy(&srv.crl_cv);
    pthread_mutex_destroy(&srv.crl_mu);
    pthread_mutex_destroy(&srv.feed_mu);
    for (size_t i = 0; srv.ocsp_cache && i < CP_OCSP_CACHE; i++)
        free(srv.ocsp_cache[i].der);
    free(srv.ocsp_cache);
    pthread_mutex_destroy(&srv.ocsp_mu);
    pthread_cond_destroy(&srv.feed_cv);
    return rc;
}
