/*
 * http_net.h - the HTTP/1.1 server layer as a protocol of the engine (src/net): the
 * driver of docs/HTTP.md.  A listener whose protocol is mt_http_proto and whose
 * argument is a struct mt_http_listener serves the router's routes, on plain TCP
 * (status, metrics) or on TLS (the control plane's API), keep-alive and pipelining
 * included.  Each connection runs on its worker; handlers that block go through
 * mt_job_submit and reply from the job's done function (the session's thread).
 */
#ifndef MESHTLS_HTTP_NET_H
#define MESHTLS_HTTP_NET_H

#include "http.h"
#include "net.h"

/* What an HTTP listener serves (the listener's `arg`; borrowed, must outlive the engine). */
struct mt_http_listener {
    const struct mt_http_router *router;
    struct mt_http_limits limits;
    /*
     * A TLS listener with sniff_plaintext: the status of the plaintext answer to an HTTP
     * request that arrives without TLS (403 as the control plane's /api/peers wants, 400
     * as nginx sends).  0: just close.
     */
    int plaintext_status;
    /*
     * Optional: after the TLS handshake (or the accept of a plain connection), make what
     * handlers read with mt_http_req_conn_data() (e.g. the peer's identity); freed with
     * conn_data_free when the connection closes.  A non-zero return refuses the
     * connection.
     */
    int (*conn_data_new)(struct mt_conn *c, void **out);
    void (*conn_data_free)(void *data);
    int write_timeout_ms; /* a response that makes no progress this long closes (10 s) */
};

/** The protocol: set a listener's ops to &mt_http_proto and its arg to a mt_http_listener. */
extern const struct mt_proto_ops mt_http_proto;

/** The engine connection of `req` (for mt_job_submit), or NULL once it went away. */
struct mt_conn *mt_http_req_conn(const struct mt_http_req *req);

#endif
