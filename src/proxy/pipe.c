/*
 * pipe.c - copy bytes both ways between a connection's ends (see pipe.h).  Moved whole
 * from the proxy's relay loop (relay.c), which now calls it, so the router relays with
 * the same code and the same buffer discipline.
 */
#include "pipe.h"

/* End `e` failed: the protocol's reason if it has a hook, else `fallback`. */
static void failed(struct mt_conn *c, const struct px_pipe_hooks *f, struct mt_end *e,
                   const char *fallback)
{
    if (f && f->fail) {
        f->fail(c, e, fallback, f->arg);
        mt_conn_close(c, NULL);
    } else {
        mt_conn_close(c, fallback);
    }
}

int px_pipe_step(struct mt_conn *c, struct px_pipe *p, const struct px_pipe_hooks *f,
                 int idle_timeout_ms)
{
    int progress = 1, rounds = 0;
    while (progress && rounds++ < PX_STEP_MAX) {
        progress = 0;
        for (int dir = 0; dir < 2; dir++) {
            struct mt_end *src = dir == 0 ? &c->down : &c->up;
            struct mt_end *dst = dir == 0 ? &c->up : &c->down;
            if (dst->shut_pending)
                mt_end_flush_shutdown(dst);
            if (dir == 0 && f && f->fill && p->len[0] == 0) {
                if (f->fill(c, p, f->arg, &progress) != 0)
                    return 0;
            } else if (p->len[dir] == 0 && !src->rd_eof && src->rd_ready) {
                if (!p->buf[dir] && !(p->buf[dir] = mt_buf_get(c))) {
                    mt_conn_close(c, "out of memory");
                    return 0;
                }
                /* Fill the buffer before writing: a TLS end yields one record (<= 16 KiB)
                 * per call, so bulk data goes out in 64 KiB sends, not one per record. */
                size_t got = 0;
                for (;;) {
                    ssize_t n = mt_end_read(src, p->buf[dir] + got, MT_BUF - got);
                    if (n > 0) {
                        got += (size_t)n;
                        if (!src->ssl || got == MT_BUF || !src->rd_ready)
                            break; /* a plain read(2) already took all the socket had */
                        continue;
                    }
                    if (n == 0) {
                        src->rd_eof = 1;
                        progress = 1;
                        if (f && f->eof)
                            f->eof(c, p, dir, f->arg);
                    } else if (n == -2) {
                        failed(c, f, src,
                               dir == 0 ? "client connection error" : "target connection error");
                        return 0;
                    }
                    break;
                }
                if (got) {
                    p->off[dir] = 0;
                    p->len[dir] = got;
                    p->bytes[dir] += (unsigned long long)got;
                    progress = 1;
                }
            }
            if (p->len[dir] > 0 && dst->wr_ready) {
                ssize_t n = mt_end_write(dst, p->buf[dir] + p->off[dir], p->len[dir]);
                if (n > 0) {
                    p->off[dir] += (size_t)n;
                    p->len[dir] -= (size_t)n;
                    progress = 1;
                } else if (n == -2) {
                    failed(c, f, dst,
                           dir == 0 ? "target closed while sending"
                                    : "client closed while receiving");
                    return 0;
                }
            }
            if (src->rd_eof && p->len[dir] == 0 && !dst->wr_shut &&
                !(dir == 0 && f && f->fill && f->holding(f->arg))) {
                mt_end_shut_write(dst); /* half-close follows the source */
                progress = 1;
            }
        }
        if (progress)
            mt_conn_set_timeout(c, idle_timeout_ms);
    }
    /* Nothing in flight: give the buffers back, an idle connection holds none. */
    for (int dir = 0; dir < 2; dir++)
        if (p->len[dir] == 0 && p->buf[dir]) {
            mt_buf_put(c, p->buf[dir]);
            p->buf[dir] = NULL;
        }
    if (c->down.rd_eof && c->up.rd_eof && !p->len[0] && !p->len[1]) {
        mt_conn_close(c, NULL);
        return 0;
    }
    return progress; /* still progressing after PX_STEP_MAX rounds: yield */
}

void px_pipe_release(struct mt_conn *c, struct px_pipe *p)
{
    mt_buf_put(c, p->buf[0]);
    mt_buf_put(c, p->buf[1]);
    p->buf[0] = p->buf[1] = NULL;
}
