/*
 * pipe.h - the byte-copying half of a relay, shared by `meshtls proxy` (relay.c) and the
 * router (router.c): copy both ways between a connection's two ends (c->down, c->up) with
 * half-close, in pooled buffers held only while bytes are in flight.
 *
 * Direction 0 is down -> up (client to target), 1 is up -> down.  A protocol may queue
 * bytes to send first by filling buf[0] / buf[1] (from mt_buf_get) before the first step.
 */
#ifndef MESHTLS_PIPE_H
#define MESHTLS_PIPE_H

#include "net.h"

#define PX_STEP_MAX 32 /* read/write rounds per event before yielding */

struct px_pipe {
    char *buf[2]; /* MT_BUF each (mt_buf_get), only while bytes are in flight */
    size_t off[2], len[2];
    unsigned long long bytes[2]; /* read from each source */
};

/*
 * Optional hooks of the protocol (any may be NULL):
 *   fill()    produces direction 0's bytes instead of a plain read (the proxy's HTTP/1.1
 *             identity headers): runs when buf[0] is empty, reads the client, writes into
 *             buf[0] (getting it from the pool), counts bytes[0], sets *progress;
 *             @return 0, or -1 if it closed the connection;
 *   holding() with fill: it still has bytes not yet in buf[0] (the half-close waits);
 *   eof()     direction `dir`'s source reached end of stream (a place to note why);
 *   fail()    reading or writing end `e` failed: record the closing reason (`fallback` is
 *             the plain one); the pipe then closes with mt_conn_close(c, NULL).  Without
 *             it the pipe closes with `fallback`.
 */
struct px_pipe_hooks {
    int (*fill)(struct mt_conn *c, struct px_pipe *p, void *arg, int *progress);
    int (*holding)(void *arg);
    void (*eof)(struct mt_conn *c, struct px_pipe *p, int dir, void *arg);
    void (*fail)(struct mt_conn *c, struct mt_end *e, const char *fallback, void *arg);
    void *arg;
};

/**
 * Copy bytes both ways as far as the ends allow, at most PX_STEP_MAX rounds; each round
 * that moves something re-arms the idle timeout (`idle_timeout_ms`).  Closes the
 * connection when both directions reached end of stream and everything was written, or
 * on an error.  Buffers with nothing in flight go back to the pool.
 * @param f NULL for a plain copy.
 * @return 1 if it stopped early (call again: on_io's return), else 0.
 */
int px_pipe_step(struct mt_conn *c, struct px_pipe *p, const struct px_pipe_hooks *f,
                 int idle_timeout_ms);

/** Give the buffers back (on_close).  Idempotent. */
void px_pipe_release(struct mt_conn *c, struct px_pipe *p);

#endif
