/*
 * http.h - the HTTP/1.1 server layer (internal to meshtls; see docs/HTTP.md).
 *
 * SANS-I/O: this layer never touches a socket, a thread or a clock.  A driver (the
 * engine's HTTP protocol in src/net, a test, a fuzzer) owns the connection and moves
 * bytes in and out of a `struct mt_http_session`; time comes in as `now_ms`, any
 * monotonic millisecond clock the driver chooses.  One session is one connection.
 *
 * Threads: a session and every request of it belong to the thread that feeds it (the
 * owning event loop).  Every function taking a session or a request must be called on
 * that thread, replies included: a handler that hands work to another thread gets the
 * completion back on the owning loop (the job pool's eventfd) and replies there.  The
 * request's data (method, path, headers, body, params) is immutable from dispatch until
 * the reply, so a job on another thread may read it meanwhile.  A router is immutable
 * once built and may be shared by any number of sessions on any threads.
 *
 * Requests are handled strictly one at a time per connection: the session parses one
 * request, dispatches it, and consumes no further input until its reply is queued, so
 * pipelined responses come out in request order and a session never buffers more than
 * one request head (max_head) and one body (max_body).
 *
 * Errors follow meshtls/err.h: 0 or a negative MESHTLS_E* code.
 */
#ifndef MESHTLS_HTTP_H
#define MESHTLS_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "meshtls/err.h"

struct mt_http_router;
struct mt_http_session;
struct mt_http_req;

/* ---- limits ---------------------------------------------------------------- */

/** Bounds of one session.  Fill with mt_http_limits_default() and change what you need. */
struct mt_http_limits {
    size_t max_head;       /**< request line + headers, bytes (default 16 KiB, max 64 KiB) */
    unsigned max_headers;  /**< header lines per request (default 100) */
    size_t max_body;       /**< request body, bytes (default 1 MiB) */
    int64_t head_ms;       /**< the head must arrive within this of its first byte (10 s) */
    int64_t body_ms;       /**< the body must arrive within this of the head's end (30 s) */
    int64_t idle_ms;       /**< keep-alive: close after this long without a request (60 s) */
    unsigned max_requests; /**< requests per connection, then close (1000; 0 = no limit) */
};

/** Writes the defaults above into `*l`. */
void mt_http_limits_default(struct mt_http_limits *l);

/* ---- handlers and routes --------------------------------------------------- */

/** What a handler returns. */
enum mt_http_handled {
    MT_HTTP_DONE = 0,  /**< the handler replied (a handler that forgets gets a 500) */
    MT_HTTP_ASYNC = 1, /**< the handler keeps `req` and replies later (see below) */
};

/**
 * A request handler, called on the session's thread with the request fully read.
 * `req` is borrowed; `arg` is the pointer given to mt_http_route_add().
 *
 * Synchronous: call one mt_http_reply*() and return MT_HTTP_DONE.
 * Asynchronous: return MT_HTTP_ASYNC; the handler now holds `req` and must end that hold
 * with exactly one mt_http_reply*() call later, on the session's thread.  If the
 * connection goes away first (mt_http_session_free()), `req` is NOT freed: it is
 * detached, the abort callback (mt_http_req_set_abort()) runs, and the later reply call
 * discards the response, frees `req` and returns MESHTLS_ENOENT.  So a pointer to `req`
 * never dangles while the handler holds it, whatever the client does.
 */
typedef int (*mt_http_handler_fn)(struct mt_http_req *req, void *arg);

/** Allocates an empty router.  @return NULL on allocation failure; free with mt_http_router_free().
 */
struct mt_http_router *mt_http_router_new(void);

/** Frees `r` (NULL is fine).  No session may still use it. */
void mt_http_router_free(struct mt_http_router *r);

/**
 * Adds a route: `method` ("GET", "POST", …, upper case) and `pattern`, a path of
 * '/'-separated segments where a segment `{name}` matches any one non-empty segment and
 * hands it, percent-decoded, to the handler (mt_http_req_param()).
 * Example: "/api/admin/security/certificates/{service}/rotate".
 * A GET route also answers HEAD (without the body) unless a HEAD route exists.
 * Both strings are copied.  `arg` is borrowed and passed to `fn` on every call.
 * Routes are tried in the order added; add them all before the first session uses `r`.
 * @return 0, MESHTLS_EINVAL (bad method or pattern, said in `err`), MESHTLS_EEXIST (the
 *         same method and pattern twice) or MESHTLS_ENOMEM.
 */
int mt_http_route_add(struct mt_http_router *r, const char *method, const char *pattern,
                      mt_http_handler_fn fn, void *arg, struct meshtls_err *err);

/* ---- sessions: what the driver calls --------------------------------------- */

/**
 * Called when a reply made outside mt_http_session_feed()/mt_http_session_timeout()
 * (that is, an asynchronous one) queued output and made the session ready for input
 * again.  The driver should arm write interest and feed any bytes it still holds.
 * It must not free the session inside the callback.
 */
typedef void (*mt_http_wake_fn)(void *driver_arg);

/**
 * Creates a session for one connection accepted at `now_ms`.
 * `router` is borrowed and must outlive the session; `limits` is copied (NULL = defaults);
 * `client_addr` ("192.0.2.1:5000", for logs and handlers) is copied, truncated to 63
 * bytes, and may be NULL; `wake`/`driver_arg` may be NULL/anything.
 * @return 0 and `*out` (free with mt_http_session_free()), or MESHTLS_ENOMEM.
 */
int mt_http_session_new(const struct mt_http_router *router, const struct mt_http_limits *limits,
                        const char *client_addr, mt_http_wake_fn wake, void *driver_arg,
                        int64_t now_ms, struct mt_http_session **out);

/**
 * Frees the session (NULL is fine).  A request whose handler went asynchronous is
 * detached, not freed: its abort callback runs now, and the handler's later reply frees
 * it (see mt_http_handler_fn).
 */
void mt_http_session_free(struct mt_http_session *s);

/**
 * Sets the driver's per-connection pointer (e.g. the TLS peer identity), borrowed; the
 * driver keeps it alive as long as the session.  Handlers read it with mt_http_req_conn_data().
 */
void mt_http_session_set_conn_data(struct mt_http_session *s, void *conn_data);

/**
 * Feeds `len` bytes received at `now_ms` (borrowed; only what is consumed is copied).
 * Handlers of complete requests run from inside this call.
 * @return the number of bytes consumed (0..len), or MESHTLS_ENOMEM (close the connection).
 *         Fewer than `len` means the session is waiting for a reply (an asynchronous
 *         handler) or for its output to drain: keep the rest, stop reading, and feed it
 *         again after the wake callback or after output drained.  Once the session wants to
 *         close it consumes (and ignores) everything.
 */
ssize_t mt_http_session_feed(struct mt_http_session *s, const void *data, size_t len,
                             int64_t now_ms);

/**
 * Tells the session the peer closed its sending side (read returned 0).  A request half
 * received is dropped; the session wants to close after flushing what it has queued.
 */
void mt_http_session_eof(struct mt_http_session *s);

/**
 * Borrows the pending output: `*ptr` (valid until the next call on `s`) and `*len`
 * (0 when nothing is pending).
 */
void mt_http_session_output(struct mt_http_session *s, const void **ptr, size_t *len);

/** Marks the first `n` bytes of the pending output as sent (n <= the length returned). */
void mt_http_session_output_done(struct mt_http_session *s, size_t n);

/**
 * @return 1 if the connection should be closed once the pending output is sent (an
 *         error, `Connection: close`, HTTP/1.0, a timeout, max_requests), else 0.
 */
int mt_http_session_want_close(const struct mt_http_session *s);

/**
 * Why the session refused a request, for the driver's log: the status it sent (400,
 * 408, 413, 431, 505, ...) and, in `*msg` (borrowed, may be NULL), what was wrong.
 * @return 0 if the session refused nothing.
 */
int mt_http_session_error(const struct mt_http_session *s, const char **msg);

/**
 * @return 1 if mt_http_session_feed() would consume bytes now (read interest), 0 while
 *         a handler holds the request, while output above 64 KiB waits to drain, or
 *         once closing.
 */
int mt_http_session_want_input(const struct mt_http_session *s);

/**
 * @return the time (same clock as now_ms) at which mt_http_session_timeout() must be
 *         called, or INT64_MAX when no timer is needed (a handler holds the request, or
 *         the session is closing: the driver's own send timeout covers flushing).
 */
int64_t mt_http_session_deadline(const struct mt_http_session *s);

/**
 * Applies the deadline: if `now_ms` has reached it, a request in progress (head or
 * body partly read) gets a 408 and the session wants to close; an idle keep-alive
 * connection just wants to close.
 * @return 1 if the deadline had passed (check output and want_close), else 0.
 */
int mt_http_session_timeout(struct mt_http_session *s, int64_t now_ms);

/* ---- requests: what handlers read ------------------------------------------ */

/** Method, e.g. "GET" (static string). */
const char *mt_http_req_method(const struct mt_http_req *req);

/** The raw (not percent-decoded) path of the request target, without the query. */
const char *mt_http_req_path(const struct mt_http_req *req);

/** The raw query string after '?', or "" (borrowed). */
const char *mt_http_req_query(const struct mt_http_req *req);

/**
 * The value of the first header named `name` (case-insensitive), without surrounding
 * whitespace, or NULL.  Borrowed: valid until the reply.
 */
const char *mt_http_req_header(const struct mt_http_req *req, const char *name);

/** The path parameter `{name}` of the matched route, percent-decoded, or NULL. Borrowed. */
const char *mt_http_req_param(const struct mt_http_req *req, const char *name);

/** The body (not NUL-terminated; NULL when empty) and its length.  Borrowed. */
const void *mt_http_req_body(const struct mt_http_req *req, size_t *len);

/**
 * Parses the body as JSON (duplicate keys refused).
 * @return 0 and `*out` (a new reference: json_decref() it), or MESHTLS_EPARSE with
 *         what is wrong and where in `err`.
 */
int mt_http_req_json(const struct mt_http_req *req, json_t **out, struct meshtls_err *err);

/**
 * Copies the percent-decoded value of query parameter `name` ('+' is a space) into
 * `buf` (`cap` bytes, NUL-terminated).  The first occurrence wins.
 * @return the value's length, MESHTLS_ENOENT (absent), or MESHTLS_EINVAL (bad
 *         percent-encoding, a NUL, or longer than cap - 1).
 */
int mt_http_query_get(const struct mt_http_req *req, const char *name, char *buf, size_t cap);

/** The driver's pointer set with mt_http_session_set_conn_data(); NULL after an abort. */
void *mt_http_req_conn_data(const struct mt_http_req *req);

/** The driver's argument given to mt_http_session_new(), or NULL once the connection went
 * away (a detached asynchronous request).  Borrowed. */
void *mt_http_req_driver_arg(const struct mt_http_req *req);

/** The client address given to mt_http_session_new() ("" if none).  Borrowed. */
const char *mt_http_req_client_addr(const struct mt_http_req *req);

/**
 * Sets a callback run (on the session's thread) when the connection of an
 * asynchronous request goes away before the reply: stop the work if you can; you still
 * end with one reply call, which will just free `req`.  `req` remains valid in the
 * callback and after it.  Borrowed `arg`.
 */
void mt_http_req_set_abort(struct mt_http_req *req, void (*fn)(struct mt_http_req *, void *),
                           void *arg);

/* ---- replies --------------------------------------------------------------- */

/**
 * Adds a response header for the coming reply (copied).  `name` must be a token and
 * `value` free of control characters (no header injection); Content-Length,
 * Content-Type, Connection and Transfer-Encoding are set by the layer and refused here.
 * @return 0, MESHTLS_EINVAL, or MESHTLS_ENOMEM (more than 4 KiB of extra headers).
 */
int mt_http_reply_header(struct mt_http_req *req, const char *name, const char *value);

/**
 * Replies `status` with `body` (`len` bytes, copied; NULL if 0) of `content_type`
 * (NULL: no Content-Type).  Content-Length is always set; HEAD gets no body; 204 and
 * 304 get neither.  Ends the request: `req` must not be used after this call.
 * @return 0; MESHTLS_ENOENT if the connection was gone (the reply is discarded and
 *         `req` freed); MESHTLS_ENOMEM (the connection will be closed).
 */
int mt_http_reply(struct mt_http_req *req, int status, const char *content_type, const void *body,
                  size_t len);

/** Like mt_http_reply() with `json` serialized compactly as application/json.  Steals `json`. */
int mt_http_reply_json(struct mt_http_req *req, int status, json_t *json);

/**
 * Replies `status` with {"error":{"code":`code`,"message":`message`}}: `code` a stable
 * machine-readable word ("not_found"), `message` saying what went wrong and what to do.
 */
int mt_http_reply_error(struct mt_http_req *req, int status, const char *code, const char *message);

/* ---- helpers for the driver before a session exists ------------------------ */

/** What the first bytes of a connection look like. */
enum mt_http_sniff {
    MT_HTTP_SNIFF_OTHER = 0, /**< neither */
    MT_HTTP_SNIFF_TLS = 1,   /**< a TLS handshake record (0x16) */
    MT_HTTP_SNIFF_HTTP = 2,  /**< an HTTP request line ("GET ", "POST ", …) */
    MT_HTTP_SNIFF_MORE = 3,  /**< a prefix of a method: read more (up to 8 bytes decide) */
};

/** Classifies the first `len` bytes of a connection (borrowed). */
enum mt_http_sniff mt_http_sniff(const void *buf, size_t len);

/**
 * Writes a whole response (status line, headers with `Connection: close`, JSON error
 * body) into `buf` (`cap` bytes), for a driver that answers without a session.
 * @return its length, or 0 if it does not fit or `status` is not 100..599.
 */
size_t mt_http_error_response(int status, const char *code, const char *message, char *buf,
                              size_t cap);

/**
 * The response to a plaintext HTTP request on a TLS port: `status` (403 as the control
 * plane's /api/peers wants, or 400 as nginx sends), code "tls_required", a message naming
 * https.  Same return as mt_http_error_response().
 */
size_t mt_http_plaintext_on_tls_reply(int status, char *buf, size_t cap);

/** The reason phrase of `status` ("Not Found"), or "Unknown". Static. */
const char *mt_http_status_text(int status);

#endif
