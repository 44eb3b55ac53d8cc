/*
 * proxy.c - `meshtls proxy server|client` on the shared engine: builds the snapshot
 * (TLS contexts, ALPN, policy, target) from the configuration, runs the engine with
 * the relay protocol (relay.c), and on the main thread waits for signals, reloads
 * and the drain.
 *
 * A reload (SIGHUP, a watched file changing, the interval) rebuilds the whole
 * snapshot from the configuration, re-reading every file, and publishes it with one
 * pointer swap; if anything fails the old snapshot stays, whole.  Connections keep
 * the snapshot they started with.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "meshtls/log.h"
#include "meshtls/x509.h"
#include "proxy.h"

#define PX_NFILES 10 /* files watched for a reload */

/* An ALPN list in wire format (length-prefixed).  Each context built by px_tls_build gets
 * its own copy, read by alpn_select through the callback argument and freed with the
 * context (ex_data free callback), so a reload never rewrites a list that a worker's
 * handshake may be reading: the old context and its list live while a connection uses it. */
struct alpn_wire {
    unsigned len;
    unsigned char b[256];
};

static int alpn_idx = -1;
static pthread_once_t alpn_once = PTHREAD_ONCE_INIT;

static void alpn_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static void alpn_index_init(void)
{
    alpn_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, alpn_free);
}

static int alpn_parse(const char *list, struct alpn_wire *w, struct meshtls_err *err)
{
    w->len = 0;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == 0 || n > 64 || w->len + 1 + n > sizeof(w->b))
            return meshtls_err_set(err, MESHTLS_EINVAL,
                                   "--alpn '%s': expected a comma-separated list such as "
                                   "h2,http/1.1",
                                   list);
        w->b[w->len++] = (unsigned char)n;
        memcpy(w->b + w->len, p, n);
        w->len += (unsigned)n;
        p += n + (comma ? 1 : 0);
    }
    return 0;
}

/* Server: pick the first of the client's protocols that we also list (`arg`: this
 * context's struct alpn_wire). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const struct alpn_wire *w = arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen, w->b, w->len, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_NOACK; /* no overlap: continue without ALPN */
}

/* Give `ctx` the ALPN list `list`: a server selects from it, a client offers it. */
static int alpn_attach(SSL_CTX *ctx, const char *list, int server, struct meshtls_err *err)
{
    if (pthread_once(&alpn_once, alpn_index_init) != 0 || alpn_idx < 0)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "--alpn: no OpenSSL ex_data index left");
    struct alpn_wire *w = calloc(1, sizeof(*w));
    if (!w)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    int rc = alpn_parse(list, w, err);
    if (rc == 0 && SSL_CTX_set_ex_data(ctx, alpn_idx, w) != 1)
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory");
    if (rc) {
        free(w);
        return rc;
    }
    /* the context owns `w` from here (alpn_free) */
    if (server)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, w);
    else if (SSL_CTX_set_alpn_protos(ctx, w->b, w->len) != 0)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "--alpn: OpenSSL refused the list");
    return 0;
}

int px_policy_build(const struct px_config *c, struct meshtls_policy **out, struct meshtls_err *err)
{
    struct meshtls_policy *p = NULL;
    int rc = meshtls_policy_new(&p);
    if (rc)
        return meshtls_err_set(err, rc, "out of memory building the policy");
    if (c->policy_file && (rc = meshtls_policy_load_file(p, c->policy_file, err)) != 0)
        goto fail;
    if (c->policy_file && c->service && !meshtls_policy_names_service(p, c->service)) {
        rc = meshtls_err_set(err, MESHTLS_EINVAL,
                             "--service %s: the policy file %s has no rules for it under "
                             "'services:'; add a '%s:' section there, or fix the name",
                             c->service, c->policy_file, c->service);
        goto fail;
    }
    if ((rc = meshtls_policy_append(p, c->policy, err)) != 0)
        goto fail;
    *out = p;
    return 0;
fail:
    meshtls_policy_free(p);
    return rc;
}

static int empty(const char *s)
{
    return !s || !*s;
}

/*
 * What the library needs in our TLS options, said with the names a proxy user has (flag,
 * key, variable): the library names only the fields of struct meshtls_tls_opts, since a C
 * program that links it has no flags.  @return 0 or MESHTLS_EINVAL.
 */
static int tls_opts_given(const struct px_config *c, struct meshtls_err *err)
{
    const struct meshtls_tls_opts *o = &c->tls;
    int srv = c->mode == PX_MODE_SERVER;
    const char *role = srv ? "server" : "client";
    if (empty(o->cert_file))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "no certificate: give --cert FILE (%s.cert_file in --config, or "
                               "%s)",
                               role, srv ? "GRPC_SERVER_CERT_PATH" : "GRPC_CLIENT_CERT_PATH");
    if (empty(o->key_file))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "no private key: give --key FILE (%s.key_file in --config, or %s)",
                               role, srv ? "GRPC_SERVER_KEY_PATH" : "GRPC_CLIENT_KEY_PATH");
    if (empty(o->ca_file))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "no CA bundle: give --cacert FILE (%s.ca_file in --config, or %s): "
                               "mutual TLS needs one to verify peers",
                               role, srv ? "GRPC_CLIENT_CA_CERT_PATH" : "GRPC_SERVER_CA_CERT_PATH");
    if (!srv && empty(o->server_name) && empty(o->verify_spiffe_id) &&
        empty(o->verify_trust_domain))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "give the server's expected identity: a server name "
                               "(--server-name, or GRPC_SERVER_DOMAIN), a SPIFFE ID "
                               "(--verify-spiffe-id) or a trust domain (--verify-trust-domain)");
    return 0;
}

int px_tls_build(const struct px_config *c, SSL_CTX **out, int64_t *not_after,
                 struct meshtls_err *err)
{
    SSL_CTX *ctx = NULL;
    int rc = tls_opts_given(c, err);
    if (rc)
        return rc;
    rc = c->mode == PX_MODE_SERVER ? meshtls_tls_server_ctx_new(&c->tls, &ctx, err)
                                   : meshtls_tls_client_ctx_new(&c->tls, &ctx, err);
    if (rc)
        return rc;
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* A peer closing TCP without close_notify ends its stream like a FIN would; without this
     * OpenSSL 3 reports a fatal error and evicts the session from the cache. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Read whole socket buffers, not a 5-byte record header then its body: one read(2)
     * per burst instead of two per record (measured: 3.2 -> ~1.2 reads per request). The
     * relay loop reads until WANT_READ, so nothing buffered is left behind. */
    SSL_CTX_set_read_ahead(ctx, 1);
    /* ... and up to four full records per read(2) in bulk transfers (the buffer exists only
     * while a record is incomplete or unread: SSL_MODE_RELEASE_BUFFERS frees it). */
    SSL_CTX_set_default_read_buffer_len(ctx, MT_BUF + 4 * 256);
    if (c->alpn && (rc = alpn_attach(ctx, c->alpn, c->mode == PX_MODE_SERVER, err)) != 0) {
        SSL_CTX_free(ctx);
        return rc;
    }
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    struct meshtls_identity *id = NULL;
    *not_after = 0;
    if (leaf && meshtls_identity_from_x509(leaf, &id, NULL) == 0) {
        *not_after = id->not_after;
        meshtls_identity_free(id);
    }
    *out = ctx;
    return 0;
}

int px_target_tls_build(const struct px_config *c, SSL_CTX **out, struct meshtls_err *err)
{
    const struct meshtls_tls_opts *o = &c->target_opts;
    /* the files default to our own (px_config_from); the identity has no default */
    if (empty(o->server_name) && empty(o->verify_spiffe_id))
        return meshtls_err_set(err, MESHTLS_EINVAL,
                               "give the target's expected identity: --target-server-name or "
                               "--target-verify-spiffe-id");
    int rc = meshtls_tls_client_ctx_new(&c->target_opts, out, err);
    if (rc == 0) {
        SSL_CTX_set_mode(*out, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        SSL_CTX_set_options(*out, SSL_OP_IGNORE_UNEXPECTED_EOF);
    }
    return rc;
}

/* ---- reload ----------------------------------------------------------- */

struct file_stamp {
    const char *path;
    const char *flag; /* how the operator named it: "--cert", "--policy" */
    struct timespec mtime;
    ino_t ino;
    off_t size;
    int missing; /* the last stat failed (logged once) */
    int changed; /* changed since the last reload */
};

/* Read the file's identity.  A file that vanishes is logged once (a rotation that
 * deletes before it writes, or a mistake): the current snapshot stays in service. */
static void stamp(struct file_stamp *s)
{
    struct stat st;
    if (!s->path)
        return;
    if (stat(s->path, &st) != 0) {
        if (!s->missing)
            meshtls_log(MESHTLS_LOG_WARN,
                        "%s %s: %s; the certificate and policy in service stay until it is "
                        "back",
                        s->flag, s->path, strerror(errno));
        s->missing = 1;
        return;
    }
    if (s->missing)
        meshtls_log(MESHTLS_LOG_INFO, "%s %s is back", s->flag, s->path);
    s->missing = 0;
    s->mtime = st.st_mtim;
    s->ino = st.st_ino;
    s->size = st.st_size;
}

static int stamp_changed(struct file_stamp *s)
{
    struct file_stamp old = *s;
    stamp(s);
    int ch = s->path && !s->missing &&
             (old.mtime.tv_sec != s->mtime.tv_sec || old.mtime.tv_nsec != s->mtime.tv_nsec ||
              old.ino != s->ino || old.size != s->size);
    s->changed |= ch;
    return ch;
}

/* "--cert certs/api.crt, --policy p.yaml": the files changed since the last reload. */
static void changed_files(struct file_stamp *f, int n, char *buf, size_t cap)
{
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && used + 1 < cap; i++)
        if (f[i].changed) {
            int w =
                snprintf(buf + used, cap - used, "%s%s %s", used ? ", " : "", f[i].flag, f[i].path);
            used = w > 0 && (size_t)w < cap - used ? used + (size_t)w : cap - 1;
            f[i].changed = 0;
        }
}

/* Debug: the rules a snapshot decides with, in order, with where each came from. */
static void log_rules(const struct px_config *c, const struct px_snap *s)
{
    if (!meshtls_log_enabled(MESHTLS_LOG_DEBUG) || !s->policy)
        return;
    size_t n = meshtls_policy_size(s->policy), from_flags = meshtls_policy_size(c->policy);
    for (size_t i = 0; i < n; i++) {
        enum meshtls_rule_kind k;
        const char *v = NULL, *svc = NULL;
        if (meshtls_policy_rule(s->policy, i, &k, &v, &svc) != 0)
            break;
        MESHTLS_LOG_EVENT(MESHTLS_LOG_DEBUG, "rule", MESHTLS_LF_U("n", i + 1),
                          MESHTLS_LF_S("kind", meshtls_rule_kind_name(k)), MESHTLS_LF_S("value", v),
                          MESHTLS_LF_S("service", svc),
                          MESHTLS_LF_S("source", i + from_flags >= n || !c->policy_file
                                                     ? "flags and proxy.allow"
                                                     : c->policy_file));
    }
}

/* What a snapshot serves, for the reload line. */
static void served(const struct px_snap *s, char *buf, size_t cap)
{
    X509 *leaf = s->base.ctx ? SSL_CTX_get0_certificate(s->base.ctx) : NULL;
    struct meshtls_identity *id = NULL;
    if (!leaf || meshtls_identity_from_x509(leaf, &id, NULL) != 0) {
        snprintf(buf, cap, "no certificate");
        return;
    }
    char until[32] = "?";
    time_t na = (time_t)id->not_after;
    struct tm tm;
    if (gmtime_r(&na, &tm))
        strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", &tm);
    char rules[48] = ""; /* client mode has no policy */
    if (s->policy)
        snprintf(rules, sizeof(rules), ", %zu rule(s)", meshtls_policy_size(s->policy));
    /* the SPIFFE ID is what peers' policies name, the subject what an operator's inventory
     * lists: both, so either finds the certificate */
    if (id->spiffe_id)
        snprintf(buf, cap, "%s subject \"%s\" (serial %s, valid until %s)%s", id->spiffe_id,
                 id->subject ? id->subject : "", id->serial ? id->serial : "?", until, rules);
    else
        snprintf(buf, cap, "subject \"%s\" (serial %s, valid until %s)%s",
                 id->subject ? id->subject : "", id->serial ? id->serial : "?", until, rules);
    meshtls_identity_free(id);
}

/* Our certificate in a few words, kept with the snapshot so /readyz can name it without
 * decoding the certificate again on every probe. */
static void self_describe(struct px_snap *s)
{
    X509 *leaf = s->base.ctx ? SSL_CTX_get0_certificate(s->base.ctx) : NULL;
    struct meshtls_identity *id = NULL;
    if (!leaf || meshtls_identity_from_x509(leaf, &id, NULL) != 0) {
        snprintf(s->self_desc, sizeof(s->self_desc), "(unreadable)");
        return;
    }
    snprintf(s->self_desc, sizeof(s->self_desc), "%s, serial %s",
             id->spiffe_id ? id->spiffe_id
             : id->subject ? id->subject
                           : "?",
             id->serial ? id->serial : "?");
    meshtls_identity_free(id);
}

/* `n` as RFC 2253 text into `buf` (truncated), as src/lib/identity.c prints issuers. */
static void name_rfc2253(const X509_NAME *n, char *buf, size_t cap)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL;
    long len = 0;
    if (b && X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0)
        len = BIO_get_mem_data(b, &data);
    snprintf(buf, cap, "%.*s", len > 0 ? (int)(len < 4096 ? len : 4096) : 1, len > 0 ? data : "?");
    BIO_free(b);
}

/* The CRLs a context checks with: the soonest nextUpdate, how many, how many stale; and a
 * warning for each one stale or due within 7 days, naming its issuer and the fix. */
static void crl_survey(struct px_snap *s, const char *file)
{
    X509_STORE *st = s->base.ctx ? SSL_CTX_get_cert_store(s->base.ctx) : NULL;
    STACK_OF(X509_OBJECT) *objs = st ? X509_STORE_get0_objects(st) : NULL;
    int64_t now = (int64_t)time(NULL);
    int nobj = objs ? sk_X509_OBJECT_num(objs) : 0;
    /* out of memory: no per-CRL gauges, the rest stands */
    s->crls = nobj > 0 ? calloc((size_t)nobj, sizeof(*s->crls)) : NULL;
    for (int i = 0; objs && i < sk_X509_OBJECT_num(objs); i++) {
        X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));
        const ASN1_TIME *nu = crl ? X509_CRL_get0_nextUpdate(crl) : NULL;
        struct tm tm;
        if (!crl)
            continue;
        s->crl_count++;
        if (!nu || ASN1_TIME_to_tm(nu, &tm) != 1)
            continue;
        int64_t t = (int64_t)timegm(&tm);
        if (!s->crl_next_update || t < s->crl_next_update)
            s->crl_next_update = t;
        if (s->crls) {
            struct px_crl *pc = &s->crls[s->n_crls++];
            pc->next_update = t;
            name_rfc2253(X509_CRL_get_issuer(crl), pc->issuer, sizeof(pc->issuer));
        }
        if (t > now + 7 * 86400)
            continue;
        char issuer[256] = "?", when[32] = "?";
        X509_NAME_oneline(X509_CRL_get_issuer(crl), issuer, sizeof(issuer));
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (t <= now) {
            s->crl_stale++;
            meshtls_log(MESHTLS_LOG_WARN,
                        "--crl %s: the CRL of %s passed its nextUpdate at %s: certificates it "
                        "lists stay refused, others are accepted; publish a fresh one (meshtls "
                        "ca crl --out %s)",
                        file, issuer, when, file);
        } else {
            meshtls_log(MESHTLS_LOG_WARN,
                        "--crl %s: the CRL of %s is due for renewal at %s (nextUpdate); publish "
                        "a fresh one before then (meshtls ca crl --out %s)",
                        file, issuer, when, file);
        }
    }
}

static void snap_destroy(struct mt_snap *b)
{
    struct px_snap *s = (struct px_snap *)b;
    SSL_CTX_free(s->base.ctx);
    SSL_CTX_free(s->target_ctx);
    meshtls_policy_free(s->policy);
    free(s->service);
    free(s->crls);
    free(s->cert_file);
    free(s);
}

int px_snap_build(const struct px_config *c, struct px_snap **out, struct meshtls_err *err)
{
    struct px_snap *s = calloc(1, sizeof(*s));
    if (!s)
        return meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory building the configuration");
    mt_snap_init(&s->base, snap_destroy);
    s->mode = c->mode;
    s->forward_pp2 = c->forward_pp2;
    s->forward_http = c->forward_http;
    s->handshake_timeout_ms = c->handshake_timeout_ms;
    s->connect_timeout_ms = c->connect_timeout_ms;
    s->idle_timeout_ms = c->idle_timeout_ms;
    s->tls_min_12 = c->tls.min_version == MESHTLS_TLS_MIN_1_2;
    snprintf(s->target_name, sizeof(s->target_name), "%s", c->target ? c->target : "");
    int rc;
    if (c->service && !(s->service = strdup(c->service))) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory building the configuration");
        goto fail;
    }
    rc = mt_resolve(c->target, 0, &s->target, &s->target_len, err);
    if (rc) {
        rc = meshtls_err_set(err, rc, "--target: %s", err ? err->msg : "");
        goto fail;
    }
    if (c->mode == PX_MODE_SERVER && !c->target_tls && !c->insecure_target &&
        !mt_is_loopback(&s->target)) {
        rc = meshtls_err_set(err, MESHTLS_EINVAL,
                             "--target %s is not a loopback address: the bytes would leave "
                             "this host in plaintext; use --target-tls, a loopback target, or "
                             "add --insecure-target",
                             c->target);
        goto fail;
    }
    if ((rc = px_tls_build(c, &s->base.ctx, &s->base.not_after, err)) != 0)
        goto fail;
    if (c->tls.cert_file && !(s->cert_file = strdup(c->tls.cert_file))) {
        rc = meshtls_err_set(err, MESHTLS_ENOMEM, "out of memory building the configuration");
        goto fail;
    }
    self_describe(s);
    if (c->mode == PX_MODE_SERVER && (rc = px_policy_build(c, &s->policy, err)) != 0)
        goto fail;
    if (c->tls.crl_file)
        crl_survey(s, c->tls.crl_file);
    if (c->target_tls && (rc = px_target_tls_build(c, &s->target_ctx, err)) != 0) {
        rc = meshtls_err_set(err, rc, "--target-tls: %s", err ? err->msg : "");
        goto fail;
    }
    *out = s;
    return 0;
fail:
    mt_snap_release(&s->base);
    return rc;
}

/* The main thread's reload state: the configuration the snapshot in service was built from
 * and the files watched for a change. */
struct reloader {
    const struct px_config *start; /* what px_run() was given: the engine-level keys */
    const struct px_config *cur;   /* `start`, or the last configuration re-read */
    struct px_config *owned;       /* that re-read one (freed with reread->release), or NULL */
    struct mt_snap_holder *holder;
    struct file_stamp files[PX_NFILES];
};

/* Watch the files `r->cur` names (every file a reload reads, and the --config file). */
static void watch_setup(struct reloader *r)
{
    const struct px_config *c = r->cur;
    struct file_stamp f[PX_NFILES] = {
        {.path = c->tls.cert_file, .flag = "--cert"},
        {.path = c->tls.key_file, .flag = "--key"},
        {.path = c->tls.ca_file, .flag = "--cacert"},
        {.path = c->tls.crl_file, .flag = "--crl"},
        {.path = c->target_opts.cert_file, .flag = "--target-cert"},
        {.path = c->target_opts.key_file, .flag = "--target-key"},
        {.path = c->target_opts.ca_file, .flag = "--target-cacert"},
        {.path = c->target_opts.crl_file, .flag = "--target-crl"},
        {.path = c->mode == PX_MODE_SERVER ? c->policy_file : NULL, .flag = "--policy"},
        {.path = r->start->reread ? r->start->reread->config_file : NULL, .flag = "--config"}};
    memcpy(r->files, f, sizeof(f));
    for (int i = 0; i < PX_NFILES; i++) {
        stamp(&r->files[i]);
        if (r->files[i].path && r->start->watch_files)
            MESHTLS_LOG_EVENT(MESHTLS_LOG_DEBUG, "watch", MESHTLS_LF_S("flag", r->files[i].flag),
                              MESHTLS_LF_S("path", r->files[i].path));
    }
}

static int str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b));
}

/* Keys the running engine was built with (listeners, threads, caches, the reload machinery
 * itself): a re-read configuration that changes them is told it needs a restart, each time,
 * rather than half applied.  Everything else applies to new connections. */
static void warn_restart_only(const struct px_config *run, const struct px_config *now)
{
    const char *k[12];
    int n = 0;
    if (str_differs(run->listen, now->listen))
        k[n++] = "listen";
    if (str_differs(run->status, now->status))
        k[n++] = "status";
    if (run->workers != now->workers)
        k[n++] = "workers";
    if (run->max_conns != now->max_conns)
        k[n++] = "max_conns";
    if (run->shutdown_timeout_ms != now->shutdown_timeout_ms)
        k[n++] = "shutdown_timeout";
    if (run->watch_files != now->watch_files)
        k[n++] = "watch_files";
    if (run->reload_interval_s != now->reload_interval_s)
        k[n++] = "reload_interval";
    if (run->session_cache_size != now->session_cache_size ||
        run->session_lifetime_s != now->session_lifetime_s)
        k[n++] = "session_cache_size/session_lifetime";
    if (run->verify_cache_size != now->verify_cache_size)
        k[n++] = "verify_cache_size";
    for (int i = 0; i < n; i++)
        meshtls_log(MESHTLS_LOG_WARN,
                    "reload: proxy.%s changed, but it shapes the running listeners and threads: "
                    "it takes effect at the next restart (the old value stays in service)",
                    k[i]);
}

static void reload(struct reloader *r, const char *why, const char *files)
{
    struct px_snap *s = NULL;
    struct px_config *fresh = NULL;
    const struct px_config *use = r->cur;
    const struct px_reread *rr = r->start->reread;
    struct meshtls_err e = MESHTLS_ERR_INIT;
    char what[600];
    snprintf(what, sizeof(what), "%s%s%s", why, files && *files ? ": " : "", files ? files : "");
    if (rr) { /* the whole configuration again, as the start read it */
        if (rr->load(rr->arg, &fresh, &e) != 0)
            goto fail;
        /* the caches outlive snapshots: the same ones serve every configuration */
        fresh->tls.session_cache = r->start->tls.session_cache;
        fresh->tls.verify_cache = r->start->tls.verify_cache;
        use = fresh;
    }
    if (px_snap_build(use, &s, &e) != 0)
        goto fail;
    if (fresh)
        warn_restart_only(r->start, fresh);
    char now[400];
    served(s, now, sizeof(now));
    log_rules(use, s);
    mt_snap_publish(r->holder, &s->base);
    px_count(PX_C_RELOAD_OK, px_metrics.main_shard, 1);
    meshtls_log(MESHTLS_LOG_INFO,
                "reload (%s): now serving %s, target %s; new TLS context and policy in service "
                "for new connections",
                what, now, s->target_name);
    if (fresh) { /* the snapshot copied what it keeps: the older configuration can go */
        rr->release(rr->arg, r->owned);
        r->owned = fresh;
        r->cur = fresh;
        watch_setup(r); /* a path may have changed */
    }
    return;
fail:
    if (fresh)
        rr->release(rr->arg, fresh);
    px_count(PX_C_RELOAD_FAIL, px_metrics.main_shard, 1);
    meshtls_log(MESHTLS_LOG_ERROR,
                "reload (%s) failed, keeping the current certificate and policy: %s", what, e.msg);
}

int px_run(const struct px_config *c, struct meshtls_err *err)
{
    int rc = 0;
    struct px_status status = {0};
    struct mt_snap_holder status_snap = MT_SNAP_HOLDER_INIT; /* empty: plain HTTP */
    struct mt_listener *sl = NULL;
    struct mt_snap_holder holder = MT_SNAP_HOLDER_INIT;
    struct mt_engine *eng = NULL;
    struct mt_listener *l = NULL;
    struct reloader r = {.start = c, .cur = c, .holder = &holder};

    /* Signals go to the main thread only: block them before any thread starts. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct px_snap *first = NULL;
    if ((rc = px_snap_build(c, &first, err)) != 0)
        return rc;
    log_rules(c, first);
    mt_snap_publish(&holder, &first->base);

    struct sockaddr_storage la;
    socklen_t ll;
    if ((rc = mt_resolve(c->listen, 1, &la, &ll, err)) != 0) {
        rc = meshtls_err_set(err, rc, "--listen: %s", err ? err->msg : "");
        goto out;
    }
    /* Plaintext only on loopback unless the operator says --insecure-… (ghostunnel's
     * --unsafe-listen / --unsafe-target). */
    if (c->mode == PX_MODE_CLIENT && !c->insecure_listen && !mt_is_loopback(&la)) {
        rc = meshtls_err_set(err, MESHTLS_EINVAL,
                             "--listen %s is not a loopback address: the client side accepts "
                             "plaintext, so anyone on that network could use its identity; "
                             "listen on 127.0.0.1 or ::1, or add --insecure-listen",
                             c->listen);
        goto out;
    }
    /* one job thread: /readyz's bounded connect to the target (never on a worker) */
    struct mt_engine_opts eo = {
        .workers = c->workers, .job_threads = c->status ? 1 : 0, .job_queue = 16};
    struct mt_listener_opts lo = {
        .name = c->mode == PX_MODE_SERVER ? "proxy server" : "proxy client",
        .addr = c->listen,
        .ops = &px_relay_ops,
        .arg = (void *)c,
        .snap = &holder,
        .tls = c->mode == PX_MODE_SERVER,
        /* plaintext on the TLS port is told apart (HTTP gets a 400, PostgreSQL's
         * SSLRequest an 'S' and then TLS): one MSG_PEEK per connection */
        .sniff_plaintext = c->mode == PX_MODE_SERVER,
        .max_conns = c->max_conns,
        .handshake_timeout_ms = c->handshake_timeout_ms,
    };
    if ((rc = mt_engine_new(&eo, &eng, err)) != 0 ||
        (rc = mt_engine_listen(eng, &lo, &l, err)) != 0) {
        if (rc == MESHTLS_EIO)
            rc = meshtls_err_set(err, rc, "--listen %s: %s", c->listen, strerror(errno));
        goto out;
    }
    if ((rc = px_metrics_init((unsigned)c->workers, err)) != 0 ||
        (c->tls.crl_file && (rc = px_metrics_add_crl(err)) != 0))
        goto out;
    px_metrics.lstats = mt_listener_stats(l);
    px_metrics.snap = &holder;
    if (c->status) {
        struct mt_listener_opts so = {
            .name = "status",
            .addr = c->status,
            .ops = &mt_http_proto,
            .arg = &status.http,
            .snap = &status_snap,
            .max_conns = 64,
            .drain_close = 1, /* a scraper's keep-alive must not hold the drain */
        };
        if ((rc = px_status_setup(&status, err)) != 0 ||
            (rc = mt_engine_listen(eng, &so, &sl, err)) != 0) {
            if (rc == MESHTLS_EIO)
                rc = meshtls_err_set(err, rc, "--status %s: %s", c->status, strerror(errno));
            goto out;
        }
        meshtls_log_announce("status", mt_listener_addr(sl));
    }
    if ((rc = mt_engine_start(eng, err)) != 0)
        goto out;
    atomic_store(&px_metrics.listening, 1);
    meshtls_log(MESHTLS_LOG_INFO, "proxy %s listening on %s, target %s, %d worker(s)",
                c->mode == PX_MODE_SERVER ? "server" : "client", mt_listener_addr(l), c->target,
                c->workers);
    /* A machine-readable line for scripts and tests. */
    meshtls_log_announce("listening", mt_listener_addr(l));

    watch_setup(&r);
    int64_t next_interval = c->reload_interval_s ? mt_now_ms() + c->reload_interval_s * 1000LL : 0;
    atomic_store(&px_metrics.target_up, 1); /* until a /readyz check says otherwise */
    int64_t pending_change = 0;
    for (;;) {
        struct timespec to = {.tv_sec = 0, .tv_nsec = 250 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &to);
        if (sig == SIGTERM || sig == SIGINT) {
            meshtls_log(MESHTLS_LOG_INFO,
                        "%s: no longer accepting; draining %lld connection(s) "
                        "for up to %d ms",
                        sig == SIGTERM ? "SIGTERM" : "SIGINT",
                        (long long)atomic_load(&mt_listener_stats(l)->active),
                        c->shutdown_timeout_ms);
            break;
        }
        if (sig == SIGHUP)
            reload(&r, "SIGHUP", NULL);
        int64_t now = mt_now_ms();
        if (c->watch_files) {
            int changed = 0;
            for (int i = 0; i < PX_NFILES; i++)
                changed |= stamp_changed(&r.files[i]);
            if (changed)
                pending_change = now; /* let the writer finish: settle 500 ms */
            else if (pending_change && now - pending_change >= 500) {
                pending_change = 0;
                char names[512];
                changed_files(r.files, PX_NFILES, names, sizeof(names));
                reload(&r, "file change", names);
            }
        }
        if (next_interval && now >= next_interval) {
            reload(&r, "interval", NULL);
            next_interval = now + c->reload_interval_s * 1000LL;
        }
    }

    atomic_store(&px_metrics.listening, 0);
    /* The engine refuses new connections at once (ECONNREFUSED), waits for the open ones,
     * closes what is left at the timeout, and joins every thread: nothing freed below can
     * still be read by a worker. */
    long long left = 0;
    if (mt_engine_drain(eng, c->shutdown_timeout_ms, &left))
        meshtls_log(MESHTLS_LOG_INFO, "shutdown complete: all connections drained");
    else
        meshtls_log(MESHTLS_LOG_WARN, "shutdown timeout: closing %lld connection(s)", left);
    rc = 0;
out:
    atomic_store(&px_metrics.listening, 0);
    mt_engine_free(eng); /* joins any thread still running (start-up failures) */
    px_status_free(&status);
    px_metrics.lstats = NULL;
    px_metrics.snap = NULL;
    px_metrics_fini(); /* no worker runs any more: nothing updates or scrapes */
    mt_snap_holder_clear(&holder);
    if (r.owned) /* no thread reads it any more: the snapshots copied what they keep */
        c->reread->release(c->reread->arg, r.owned);
    return rc;
}
