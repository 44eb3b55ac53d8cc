/*
 * metrics.c - the proxy's counters and their Prometheus text exposition
 * (the signals of seed 003, under the meshtls_ prefix).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/x509_vfy.h>

#include "proxy.h"

struct px_metrics px_metrics;
struct meshtls_verify_cache *px_metrics_vcache;
struct meshtls_session_cache *px_metrics_scache;

const double px_hist_bounds[PX_HIST_N] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                          0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

static const char *const hse_names[PX_HSE_N] = {
    [PX_HSE_NO_CERT] = "no_client_cert", [PX_HSE_UNTRUSTED] = "untrusted",
    [PX_HSE_EXPIRED] = "expired",        [PX_HSE_REVOKED] = "revoked",
    [PX_HSE_BAD_NAME] = "bad_identity",  [PX_HSE_PROTOCOL] = "protocol",
    [PX_HSE_TIMEOUT] = "timeout",        [PX_HSE_OTHER] = "other",
};

void px_metrics_handshake(double seconds)
{
    for (int i = 0; i < PX_HIST_N; i++)
        if (seconds <= px_hist_bounds[i]) {
            atomic_fetch_add(&px_metrics.hs_hist[i], 1);
            break;
        }
    atomic_fetch_add(&px_metrics.hs_count, 1);
    atomic_fetch_add(&px_metrics.hs_sum_us, (unsigned long long)(seconds * 1e6));
}

enum px_hs_error px_metrics_classify(long v, int no_cert)
{
    if (no_cert)
        return PX_HSE_NO_CERT;
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
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: return PX_HSE_UNTRUSTED;
    default: return PX_HSE_OTHER;
    }
}

/* Append formatted text to buf; keeps *n within cap. */
static void put(char *buf, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t cap, size_t *n, const char *fmt, ...)
{
    if (*n >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (w > 0)
        *n = (size_t)w < cap - *n ? *n + (size_t)w : cap - 1;
}

#define LD(x) ((unsigned long long)atomic_load(&(x)))

size_t px_metrics_render(char *buf, size_t cap)
{
    size_t n = 0;
    struct px_metrics *m = &px_metrics;
    put(buf, cap, &n,
        "# HELP meshtls_tls_handshakes_total TLS handshakes by result.\n"
        "# TYPE meshtls_tls_handshakes_total counter\n"
        "meshtls_tls_handshakes_total{result=\"success\"} %llu\n"
        "meshtls_tls_handshakes_total{result=\"failure\"} %llu\n",
        LD(m->hs_ok), LD(m->hs_fail));
    put(buf, cap, &n,
        "# HELP meshtls_tls_handshake_errors_total Failed TLS handshakes by reason.\n"
        "# TYPE meshtls_tls_handshake_errors_total counter\n");
    for (int i = 0; i < PX_HSE_N; i++)
        put(buf, cap, &n, "meshtls_tls_handshake_errors_total{reason=\"%s\"} %llu\n", hse_names[i],
            LD(m->hs_err[i]));
    put(buf, cap, &n,
        "# HELP meshtls_cert_validation_failures_total Peer certificates that failed validation.\n"
        "# TYPE meshtls_cert_validation_failures_total counter\n");
    for (int i = 0; i < PX_HSE_N; i++)
        if (i != PX_HSE_PROTOCOL && i != PX_HSE_TIMEOUT)
            put(buf, cap, &n, "meshtls_cert_validation_failures_total{reason=\"%s\"} %llu\n",
                hse_names[i], LD(m->hs_err[i]));
    put(buf, cap, &n,
        "# HELP meshtls_tls_handshake_duration_seconds Successful handshake time.\n"
        "# TYPE meshtls_tls_handshake_duration_seconds histogram\n");
    unsigned long long cum = 0;
    for (int i = 0; i < PX_HIST_N; i++) {
        cum += LD(m->hs_hist[i]);
        put(buf, cap, &n, "meshtls_tls_handshake_duration_seconds_bucket{le=\"%g\"} %llu\n",
            px_hist_bounds[i], cum);
    }
    put(buf, cap, &n,
        "meshtls_tls_handshake_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
        "meshtls_tls_handshake_duration_seconds_sum %.6f\n"
        "meshtls_tls_handshake_duration_seconds_count %llu\n",
        LD(m->hs_count), (double)LD(m->hs_sum_us) / 1e6, LD(m->hs_count));
    double days = 0;
    struct mt_snap *s = m->snap ? mt_snap_acquire(m->snap) : NULL;
    if (s)
        days = (double)(s->not_after - (int64_t)time(NULL)) / 86400.0;
    mt_snap_release(s);
    long long active = m->lstats ? atomic_load(&m->lstats->active) : 0;
    unsigned long long accepted = m->lstats ? LD(m->lstats->accepted) : 0;
    unsigned long long paused = m->lstats ? LD(m->lstats->accept_paused) : 0;
    put(buf, cap, &n,
        "# HELP meshtls_cert_expiry_days Days until our own certificate expires.\n"
        "# TYPE meshtls_cert_expiry_days gauge\n"
        "meshtls_cert_expiry_days %.3f\n"
        "# HELP meshtls_connections_active Open client connections.\n"
        "# TYPE meshtls_connections_active gauge\n"
        "meshtls_connections_active %lld\n"
        "# HELP meshtls_connections_total Accepted client connections.\n"
        "# TYPE meshtls_connections_total counter\n"
        "meshtls_connections_total %llu\n"
        "# HELP meshtls_policy_decisions_total Identity policy decisions.\n"
        "# TYPE meshtls_policy_decisions_total counter\n"
        "meshtls_policy_decisions_total{decision=\"allow\"} %llu\n"
        "meshtls_policy_decisions_total{decision=\"deny\"} %llu\n"
        "# HELP meshtls_bytes_total Bytes relayed; upstream is towards the target.\n"
        "# TYPE meshtls_bytes_total counter\n"
        "meshtls_bytes_total{direction=\"upstream\"} %llu\n"
        "meshtls_bytes_total{direction=\"downstream\"} %llu\n"
        "# HELP meshtls_reloads_total TLS context reloads by result.\n"
        "# TYPE meshtls_reloads_total counter\n"
        "meshtls_reloads_total{result=\"success\"} %llu\n"
        "meshtls_reloads_total{result=\"failure\"} %llu\n"
        "# HELP meshtls_backend_errors_total Connections closed because the target failed.\n"
        "# TYPE meshtls_backend_errors_total counter\n"
        "meshtls_backend_errors_total %llu\n"
        "# HELP meshtls_accept_paused_total Times a worker paused accepting for 100 ms because "
        "the process ran out of file descriptors (EMFILE/ENFILE).\n"
        "# TYPE meshtls_accept_paused_total counter\n"
        "meshtls_accept_paused_total %llu\n",
        days, active, accepted, LD(m->allow), LD(m->deny), LD(m->bytes_up), LD(m->bytes_down),
        LD(m->reload_ok), LD(m->reload_fail), LD(m->backend_errors), paused);
    if (px_metrics_vcache) {
        unsigned long long h = 0, mi = 0;
        meshtls_verify_cache_stats(px_metrics_vcache, &h, &mi);
        put(buf, cap, &n,
            "# HELP meshtls_verify_cache_lookups_total Client chains looked up in the "
            "verified-chain cache.\n"
            "# TYPE meshtls_verify_cache_lookups_total counter\n"
            "meshtls_verify_cache_lookups_total{result=\"hit\"} %llu\n"
            "meshtls_verify_cache_lookups_total{result=\"miss\"} %llu\n",
            h, mi);
    }
    if (px_metrics_scache)
        put(buf, cap, &n,
            "# HELP meshtls_session_cache_entries TLS sessions kept for resumption.\n"
            "# TYPE meshtls_session_cache_entries gauge\n"
            "meshtls_session_cache_entries %zu\n",
            meshtls_session_cache_size(px_metrics_scache));
    return n;
}
