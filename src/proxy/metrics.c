/*
 * metrics.c - the proxy's metrics on the labelled registry (src/lib/metrics.h) and their
 * Prometheus text exposition (the signals of seed 003, under the meshtls_ prefix; the names
 * are those docs/PROXY.md lists).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "meshtls/log.h"
#include "meshtls/x509.h"
#include "proxy.h"

struct px_metrics px_metrics;
struct meshtls_verify_cache *px_metrics_vcache;
struct meshtls_session_cache *px_metrics_scache;

static const double hist_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                     0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

static const char *const hse_names[PX_HSE_N] = {
    [PX_HSE_NO_CERT] = "no_client_cert",   [PX_HSE_UNTRUSTED] = "untrusted",
    [PX_HSE_EXPIRED] = "expired",          [PX_HSE_REVOKED] = "revoked",
    [PX_HSE_BAD_NAME] = "bad_identity",    [PX_HSE_PROTOCOL] = "protocol",
    [PX_HSE_TIMEOUT] = "timeout",          [PX_HSE_OTHER] = "other",
    [PX_HSE_PLAINTEXT] = "plaintext",      [PX_HSE_VERSION] = "version",
    [PX_HSE_TOO_LARGE] = "cert_too_large", [PX_HSE_PROFILE] = "profile",
};

const char *px_hse_name(enum px_hs_error k)
{
    return k < PX_HSE_N ? hse_names[k] : "other";
}

void px_metrics_handshake(double seconds, unsigned shard)
{
    if (!px_metrics.reg)
        return;
    mt_counter_add(px_metrics.c[PX_C_HS_OK], shard, 1);
    mt_histogram_observe(px_metrics.hs_dur, shard, seconds);
}

void px_count_hs_error(enum px_hs_error k, unsigned shard)
{
    if (!px_metrics.reg || k >= PX_HSE_N)
        return;
    mt_counter_add(px_metrics.c[PX_C_HS_FAIL], shard, 1);
    mt_counter_add(px_metrics.hs_err[k], shard, 1);
    if (px_metrics.cert_fail[k])
        mt_counter_add(px_metrics.cert_fail[k], shard, 1);
}

static enum px_hs_error classify_verify(long v)
{
    switch (v) {
    case X509_V_OK: return PX_HSE_PROTOCOL;
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID: return PX_HSE_EXPIRED;
    case X509_V_ERR_CERT_REVOKED: return PX_HSE_REVOKED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
    case X509_V_ERR_APPLICATION_VERIFICATION: return PX_HSE_BAD_NAME;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_INVALID_PURPOSE:
    case X509_V_ERR_CERT_CHAIN_TOO_LONG: /* more intermediates than --verify-depth */
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: return PX_HSE_UNTRUSTED;
    default: return PX_HSE_OTHER;
    }
}

enum px_hs_error px_metrics_classify_ssl(SSL *ssl)
{
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK && meshtls_tls_profile_violation(ssl))
        return PX_HSE_PROFILE;
    if (v != X509_V_OK)
        return classify_verify(v);
    unsigned long e = ERR_peek_last_error();
    int reason = e && ERR_GET_LIB(e) == ERR_LIB_SSL ? ERR_GET_REASON(e) : 0;
    switch (reason) {
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE: return PX_HSE_NO_CERT;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION: return PX_HSE_VERSION;
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST: return PX_HSE_PLAINTEXT;
    case SSL_R_EXCESSIVE_MESSAGE_SIZE:
        /* the client's Certificate message is the one a client can make too large */
        return SSL_get_state(ssl) == TLS_ST_SR_CERT ? PX_HSE_TOO_LARGE : PX_HSE_PROTOCOL;
    default: return PX_HSE_PROTOCOL;
    }
}

/* `t` as 2026-12-02T16:40:50Z into `buf` ("?" if it does not parse). */
static void iso_time(const ASN1_TIME *t, char *buf, size_t cap)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1 || !strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(buf, cap, "?");
}

/* The CRL entry that revokes `x`, from the CRLs of the verify store of `ssl`'s context (the
 * snapshot's; immutable once built, so reading its objects needs no lock).  NULL if none
 * lists it (it may be an intermediate of the chain that was revoked). */
static X509_REVOKED *revocation_of(SSL *ssl, X509 *x)
{
    X509_STORE *st = SSL_CTX_get_cert_store(SSL_get_SSL_CTX(ssl));
    STACK_OF(X509_OBJECT) *objs = st ? X509_STORE_get0_objects(st) : NULL;
    for (int i = 0; objs && i < sk_X509_OBJECT_num(objs); i++) {
        X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));
        X509_REVOKED *rev = NULL;
        if (crl && X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_issuer_name(x)) == 0 &&
            X509_CRL_get0_by_serial(crl, &rev, X509_get0_serialNumber(x)) == 1)
            return rev;
    }
    return NULL;
}

/* RFC 5280 5.3.1 CRLReason names (7 is unused). */
static const char *crl_reason_name(long r)
{
    static const char *const n[] = {
        "unspecified",   "keyCompromise",        "cACompromise",    "affiliationChanged",
        "superseded",    "cessationOfOperation", "certificateHold", NULL,
        "removeFromCRL", "privilegeWithdrawn",   "aACompromise"};
    return r >= 0 && r < (long)(sizeof(n) / sizeof(n[0])) && n[r] ? n[r] : "unknown";
}

/*
 * The reason in words with its date, when the presented certificate `x` is the one that
 * failed: "certificate revoked at <date> (reason keyCompromise)", "certificate expired at
 * <notAfter>", "certificate not yet valid until <notBefore>".  Leaves `why` alone when the
 * leaf is not the culprit (an intermediate expired or was revoked): OpenSSL's words stand.
 */
static void reason_with_date(SSL *ssl, X509 *x, char *why, size_t cap)
{
    long v = SSL_get_verify_result(ssl);
    char when[32];
    time_t now = time(NULL);
    if (!x)
        return;
    if (v == X509_V_ERR_CERT_REVOKED) {
        X509_REVOKED *rev = revocation_of(ssl, x);
        if (!rev)
            return;
        iso_time(X509_REVOKED_get0_revocationDate(rev), when, sizeof(when));
        ASN1_ENUMERATED *e = X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, NULL, NULL);
        snprintf(why, cap, "certificate revoked at %s (reason %s)", when,
                 e ? crl_reason_name(ASN1_ENUMERATED_get(e)) : "not given");
        ASN1_ENUMERATED_free(e);
    } else if (v == X509_V_ERR_CERT_HAS_EXPIRED && X509_cmp_time(X509_get0_notAfter(x), &now) < 0) {
        iso_time(X509_get0_notAfter(x), when, sizeof(when));
        snprintf(why, cap, "certificate expired at %s", when);
    } else if (v == X509_V_ERR_CERT_NOT_YET_VALID &&
               X509_cmp_time(X509_get0_notBefore(x), &now) > 0) {
        iso_time(X509_get0_notBefore(x), when, sizeof(when));
        snprintf(why, cap, "certificate not yet valid until %s (check the clocks)", when);
    }
}

void px_handshake_failed(struct mt_conn *c, struct mt_end *t, int min_tls12, char **who,
                         char **serial, char *msg, size_t cap)
{
    enum px_hs_error kind = px_metrics_classify_ssl(t->ssl);
    px_count_hs_error(kind, mt_conn_shard(c));
    char why[MESHTLS_ERR_MSG_MAX]; /* a profile refusal names certificate, rule and fix */
    struct meshtls_err e = MESHTLS_ERR_INIT;
    meshtls_tls_verify_failure(t->ssl, why, sizeof(why));
    if (!why[0] && kind == PX_HSE_NO_CERT)
        snprintf(why, sizeof(why), "the client sent no certificate");
    else if (!why[0] && kind == PX_HSE_VERSION)
        snprintf(why, sizeof(why), "the peer offered no TLS version we accept (minimum %s)",
                 min_tls12 ? "TLS 1.2" : "TLS 1.3");
    else if (SSL_get_verify_result(t->ssl) == X509_V_ERR_CERT_CHAIN_TOO_LONG) {
        size_t n = strlen(why);
        snprintf(why + n, sizeof(why) - n,
                 " (more intermediates than the verify depth allows: %d, --verify-depth of "
                 "proxy server; raise it only for a PKI with more levels)",
                 SSL_get_verify_depth(t->ssl));
    }
    X509 *x = meshtls_tls_presented_cert(t->ssl);
    reason_with_date(t->ssl, x, why, sizeof(why));
    struct meshtls_identity *id = NULL;
    if (x && meshtls_identity_from_x509(x, &id, NULL) == 0) {
        if (!*who)
            *who = strdup(id->spiffe_id ? id->spiffe_id : id->subject ? id->subject : "-");
        if (!*serial && id->serial)
            *serial = strdup(id->serial);
    }
    meshtls_err_set_ssl(&e, MESHTLS_ETLS, "TLS handshake with %s failed%s%s",
                        t->is_down ? "client" : "target", why[0] ? ": " : "", why);
    snprintf(msg, cap, "%s", e.msg);
    const struct meshtls_x509_violation *pv = meshtls_tls_profile_violation(t->ssl);
    MESHTLS_LOG_EVENT(MESHTLS_LOG_WARN, "refused", MESHTLS_LF_U("conn", c->id),
                      MESHTLS_LF_S("client", c->peer_addr),
                      MESHTLS_LF_S("reason", px_hse_name(kind)),
                      MESHTLS_LF_S("rule", pv ? pv->rule : NULL), MESHTLS_LF_S("error", e.msg),
                      MESHTLS_LF_S("id", id ? id->spiffe_id : NULL),
                      MESHTLS_LF_S("subject", id ? id->subject : NULL),
                      MESHTLS_LF_S("serial", id ? id->serial : NULL),
                      MESHTLS_LF_S("issuer", id ? id->issuer : NULL));
    meshtls_identity_free(id);
}

/* ---- values computed at scrape time -------------------------------------------- */

static double expiry_days(void *arg)
{
    (void)arg;
    struct mt_snap *s = px_metrics.snap ? mt_snap_acquire(px_metrics.snap) : NULL;
    double days = s ? (double)(s->not_after - (int64_t)time(NULL)) / 86400.0 : 0;
    mt_snap_release(s);
    return days;
}

static double conns_active(void *arg)
{
    (void)arg;
    return px_metrics.lstats ? (double)atomic_load(&px_metrics.lstats->active) : 0;
}

static double conns_total(void *arg)
{
    (void)arg;
    return px_metrics.lstats ? (double)atomic_load(&px_metrics.lstats->accepted) : 0;
}

static double accept_paused(void *arg)
{
    (void)arg;
    return px_metrics.lstats ? (double)atomic_load(&px_metrics.lstats->accept_paused) : 0;
}

static double target_up(void *arg)
{
    (void)arg;
    return atomic_load(&px_metrics.target_up);
}

static double vcache_hits(void *arg)
{
    unsigned long long h = 0, m = 0;
    meshtls_verify_cache_stats(arg, &h, &m);
    return (double)h;
}

static double vcache_misses(void *arg)
{
    unsigned long long h = 0, m = 0;
    meshtls_verify_cache_stats(arg, &h, &m);
    return (double)m;
}

static double scache_size(void *arg)
{
    return (double)meshtls_session_cache_size(arg);
}

/* One sample per CRL of the snapshot in service: a reload that changes the CRLs changes the
 * series at the next scrape. */
static void crl_next_update(void *arg, struct mt_emit *e)
{
    (void)arg;
    struct mt_snap *s = px_metrics.snap ? mt_snap_acquire(px_metrics.snap) : NULL;
    const struct px_snap *ps = (const struct px_snap *)s;
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; ps && i < ps->n_crls; i++)
        mt_emit(e, MT_LIST(ps->crls[i].issuer), (double)(ps->crls[i].next_update - now));
    mt_snap_release(s);
}

static double crl_stale(void *arg)
{
    (void)arg;
    struct mt_snap *s = px_metrics.snap ? mt_snap_acquire(px_metrics.snap) : NULL;
    double v = s ? (double)((const struct px_snap *)s)->crl_stale : 0;
    mt_snap_release(s);
    return v;
}

/* ---- registration --------------------------------------------------------------- */

/* One counter family without labels, its one series in *out. */
static int counter1(const char *name, const char *help, struct mt_series **out,
                    struct meshtls_err *err)
{
    struct mt_family *f = NULL;
    int rc = mt_counter_new(px_metrics.reg, name, help, NULL, &f, err);
    return rc ? rc : mt_series_get(f, NULL, out, err);
}

int px_metrics_init(unsigned workers, struct meshtls_err *err)
{
    struct px_metrics *m = &px_metrics;
    struct mt_family *hs = NULL, *hse = NULL, *cv = NULL, *dur = NULL, *f = NULL, *dec = NULL,
                     *bytes = NULL, *rel = NULL;
    px_metrics_fini();
    m->main_shard = workers;
    int rc = mt_metrics_new(workers + 1, &m->reg, err);
    if (rc)
        return rc;
#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((rc = (x)) != 0)                                                                       \
            goto fail;                                                                             \
    } while (0)
    TRY(mt_counter_new(m->reg, "meshtls_tls_handshakes_total", "TLS handshakes by result.",
                       MT_LIST("result"), &hs, err));
    TRY(mt_series_get(hs, MT_LIST("success"), &m->c[PX_C_HS_OK], err));
    TRY(mt_series_get(hs, MT_LIST("failure"), &m->c[PX_C_HS_FAIL], err));
    TRY(mt_counter_new(m->reg, "meshtls_tls_handshake_errors_total",
                       "Failed TLS handshakes by reason.", MT_LIST("reason"), &hse, err));
    TRY(mt_counter_new(m->reg, "meshtls_cert_validation_failures_total",
                       "Peer certificates that failed validation.", MT_LIST("reason"), &cv, err));
    for (int i = 0; i < PX_HSE_N; i++) {
        TRY(mt_series_get(hse, MT_LIST(hse_names[i]), &m->hs_err[i], err));
        /* certificate reasons only: a scan or an old client is not a certificate problem */
        if (i != PX_HSE_PROTOCOL && i != PX_HSE_TIMEOUT && i != PX_HSE_PLAINTEXT &&
            i != PX_HSE_VERSION)
            TRY(mt_series_get(cv, MT_LIST(hse_names[i]), &m->cert_fail[i], err));
    }
    TRY(mt_histogram_new(m->reg, "meshtls_tls_handshake_duration_seconds",
                         "Successful handshake time.", NULL, hist_bounds,
                         sizeof(hist_bounds) / sizeof(hist_bounds[0]), &dur, err));
    TRY(mt_series_get(dur, NULL, &m->hs_dur, err));
    TRY(mt_gauge_new(m->reg, "meshtls_cert_expiry_days", "Days until our own certificate expires.",
                     NULL, &f, err));
    TRY(mt_series_fn(f, NULL, expiry_days, NULL, err));
    TRY(mt_gauge_new(m->reg, "meshtls_connections_active", "Open client connections.", NULL, &f,
                     err));
    TRY(mt_series_fn(f, NULL, conns_active, NULL, err));
    TRY(mt_counter_new(m->reg, "meshtls_connections_total", "Accepted client connections.", NULL,
                       &f, err));
    TRY(mt_series_fn(f, NULL, conns_total, NULL, err));
    TRY(mt_counter_new(m->reg, "meshtls_policy_decisions_total", "Identity policy decisions.",
                       MT_LIST("decision"), &dec, err));
    TRY(mt_series_get(dec, MT_LIST("allow"), &m->c[PX_C_ALLOW], err));
    TRY(mt_series_get(dec, MT_LIST("deny"), &m->c[PX_C_DENY], err));
    TRY(mt_counter_new(m->reg, "meshtls_bytes_total",
                       "Bytes relayed; upstream is towards the target.", MT_LIST("direction"),
                       &bytes, err));
    TRY(mt_series_get(bytes, MT_LIST("upstream"), &m->c[PX_C_BYTES_UP], err));
    TRY(mt_series_get(bytes, MT_LIST("downstream"), &m->c[PX_C_BYTES_DOWN], err));
    TRY(mt_counter_new(m->reg, "meshtls_reloads_total", "TLS context reloads by result.",
                       MT_LIST("result"), &rel, err));
    TRY(mt_series_get(rel, MT_LIST("success"), &m->c[PX_C_RELOAD_OK], err));
    TRY(mt_series_get(rel, MT_LIST("failure"), &m->c[PX_C_RELOAD_FAIL], err));
    TRY(counter1("meshtls_backend_errors_total", "Connections closed because the target failed.",
                 &m->c[PX_C_BACKEND_ERR], err));
    TRY(mt_counter_new(m->reg, "meshtls_accept_paused_total",
                       "Times a worker paused accepting for 100 ms because the process ran out "
                       "of file descriptors (EMFILE/ENFILE).",
                       NULL, &f, err));
    TRY(mt_series_fn(f, NULL, accept_paused, NULL, err));
    TRY(mt_gauge_new(m->reg, "meshtls_target_up",
                     "1 if the last /readyz connect check to the target worked.", NULL, &f, err));
    TRY(mt_series_fn(f, NULL, target_up, NULL, err));
    if (px_metrics_vcache) {
        TRY(mt_counter_new(m->reg, "meshtls_verify_cache_lookups_total",
                           "Client chains looked up in the verified-chain cache.",
                           MT_LIST("result"), &f, err));
        TRY(mt_series_fn(f, MT_LIST("hit"), vcache_hits, px_metrics_vcache, err));
        TRY(mt_series_fn(f, MT_LIST("miss"), vcache_misses, px_metrics_vcache, err));
    }
    if (px_metrics_scache) {
        TRY(mt_gauge_new(m->reg, "meshtls_session_cache_entries",
                         "TLS sessions kept for resumption.", NULL, &f, err));
        TRY(mt_series_fn(f, NULL, scache_size, px_metrics_scache, err));
    }
#undef TRY
    return 0;
fail:
    px_metrics_fini();
    return rc;
}

int px_metrics_add_crl(struct meshtls_err *err)
{
    struct mt_family *f = NULL;
    int rc;
    if (!px_metrics.reg)
        return meshtls_err_set(err, MESHTLS_EINVAL, "metrics are not registered");
    if ((rc = mt_gauge_new(px_metrics.reg, "meshtls_crl_next_update_seconds",
                           "Seconds until the nextUpdate of each CRL in use, by issuer "
                           "(negative: stale; the last CRL still refuses what it lists).",
                           MT_LIST("issuer"), &f, err)) != 0 ||
        (rc = mt_family_collect(f, crl_next_update, NULL, err)) != 0 ||
        (rc = mt_gauge_new(px_metrics.reg, "meshtls_crl_stale",
                           "CRLs in use that are past their nextUpdate.", NULL, &f, err)) != 0)
        return rc;
    return mt_series_fn(f, NULL, crl_stale, NULL, err);
}

void px_metrics_fini(void)
{
    mt_metrics_free(px_metrics.reg);
    px_metrics.reg = NULL;
    memset(px_metrics.c, 0, sizeof(px_metrics.c));
    memset(px_metrics.hs_err, 0, sizeof(px_metrics.hs_err));
    memset(px_metrics.cert_fail, 0, sizeof(px_metrics.cert_fail));
    px_metrics.hs_dur = NULL;
}

int px_metrics_render(char **out, size_t *len, struct meshtls_err *err)
{
    if (!px_metrics.reg)
        return meshtls_err_set(err, MESHTLS_EINVAL, "metrics are not registered");
    return mt_metrics_render(px_metrics.reg, out, len, err);
}
