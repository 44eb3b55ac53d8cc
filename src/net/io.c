/*
 * io.c - reading and writing one end of a connection, plain or TLS, with the
 * readiness flags described in net.h.  These sit on the hot path of every
 * relay: they make no syscall the flags say would return EAGAIN.
 */
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "net.h"

/* SSL_get_error() needs an empty error queue.  Every failure path below empties it, so it
 * is almost always empty already: peeking is far cheaper than clearing all 16 slots. */
void mt_clear_ssl_errors(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

/* Called by the socket BIO around each of OpenSSL's read(2) calls on a TLS end: a read
 * that returns fewer bytes than OpenSSL asked for (read-ahead asks for a whole buffer)
 * emptied the socket's receive queue. */
static long rbio_cb(BIO *b, int oper, const char *argp, size_t len, int argi, long argl, int ret,
                    size_t *processed)
{
    (void)argp, (void)argi, (void)argl;
    if (oper == BIO_CB_READ) {
        struct mt_end *e = (struct mt_end *)BIO_get_callback_arg(b);
        if (e->drained && !e->rdhup) {
            /* The socket was empty at the last read and no event has come since: answer
             * "retry" (WANT_READ) without a read(2) that would only return EAGAIN. */
            BIO_clear_retry_flags(b);
            BIO_set_retry_read(b);
            return -1;
        }
    } else if (oper == (BIO_CB_READ | BIO_CB_RETURN)) {
        struct mt_end *e = (struct mt_end *)BIO_get_callback_arg(b);
        e->drained = ret <= 0 || (processed && *processed < len);
    }
    return ret;
}

/* Reading and writing get separate socket BIOs so that only reads (not OpenSSL's many
 * write-side BIO_ctrl calls) pass through rbio_cb. */
int mt_end_tls_attach(struct mt_end *e, SSL *ssl)
{
    if (!ssl)
        return -1;
    e->ssl = ssl;
    BIO *rb = BIO_new_socket(e->fd, BIO_NOCLOSE), *wb = BIO_new_socket(e->fd, BIO_NOCLOSE);
    if (!rb || !wb) {
        BIO_free(rb);
        BIO_free(wb);
        return -1;
    }
    BIO_set_callback_arg(rb, (char *)e);
    BIO_set_callback_ex(rb, rbio_cb);
    SSL_set_bio(ssl, rb, wb); /* the SSL owns both from here */
    return 0;
}

ssize_t mt_end_read(struct mt_end *e, char *buf, size_t n)
{
    if (!e->ssl) {
        ssize_t r = read(e->fd, buf, n);
        if (r > 0) {
            /* a short read on a stream socket emptied its queue: the next byte is an edge.
             * Not so after the FIN: its edge has passed, and the next read returns 0. */
            if ((size_t)r < n && !e->rdhup)
                e->rd_ready = 0;
            return r;
        }
        if (r == 0)
            return 0;
        if (errno == EAGAIN)
            e->rd_ready = 0;
        return (errno == EAGAIN || errno == EINTR) ? -1 : -2;
    }
    size_t got = 0;
    mt_clear_ssl_errors();
    errno = 0;
    if (SSL_read_ex(e->ssl, buf, n, &got) == 1) {
        /* the socket came up short and OpenSSL holds nothing more: wait for the next edge
         * rather than probe with a read(2) that would return EAGAIN */
        if (e->drained && !e->rdhup && !SSL_has_pending(e->ssl))
            e->rd_ready = 0;
        return (ssize_t)got;
    }
    switch (SSL_get_error(e->ssl, 0)) {
    case SSL_ERROR_WANT_READ: e->rd_ready = 0; return -1;
    case SSL_ERROR_WANT_WRITE: e->wr_ready = 0; return -1; /* retried on EPOLLOUT */
    case SSL_ERROR_ZERO_RETURN: return 0;
    case SSL_ERROR_SYSCALL:
        if (ERR_peek_error() == 0 && errno == 0)
            return 0; /* EOF without close_notify: treat as end of stream */
        /* fall through */
    default:
        e->last_err = ERR_peek_last_error(); /* for the closing reason (a peer's alert) */
        ERR_clear_error();
        return -2;
    }
}

ssize_t mt_end_write(struct mt_end *e, const char *buf, size_t n)
{
    if (!e->ssl) {
        ssize_t w = send(e->fd, buf, n, MSG_NOSIGNAL);
        if (w >= 0) {
            if ((size_t)w < n)
                e->wr_ready = 0; /* the send buffer is full: wait for EPOLLOUT */
            return w;
        }
        if (errno == EAGAIN)
            e->wr_ready = 0;
        return (errno == EAGAIN || errno == EINTR) ? -1 : -2;
    }
    size_t put = 0;
    mt_clear_ssl_errors();
    if (SSL_write_ex(e->ssl, buf, n, &put) == 1)
        return (ssize_t)put;
    int se = SSL_get_error(e->ssl, 0);
    if (se == SSL_ERROR_WANT_WRITE) {
        e->wr_ready = 0;
        return -1;
    }
    if (se == SSL_ERROR_WANT_READ) {
        e->rd_ready = 0; /* retried on EPOLLIN */
        return -1;
    }
    e->last_err = ERR_peek_last_error();
    ERR_clear_error();
    return -2;
}

void mt_end_shut_write(struct mt_end *e)
{
    if (e->ssl) {
        mt_clear_ssl_errors();
        int r = SSL_shutdown(e->ssl); /* sends close_notify; reading stays possible */
        /* a full socket buffer: flush it from the protocol's loop when the socket drains */
        e->shut_pending = r < 0 && SSL_get_error(e->ssl, r) == SSL_ERROR_WANT_WRITE;
        if (e->shut_pending)
            e->wr_ready = 0;
        ERR_clear_error();
    } else if (e->fd >= 0) {
        shutdown(e->fd, SHUT_WR);
    }
    e->wr_shut = 1;
}

void mt_end_flush_shutdown(struct mt_end *e)
{
    if (!e->shut_pending || !e->wr_ready)
        return;
    mt_clear_ssl_errors();
    int r = SSL_shutdown(e->ssl);
    e->shut_pending = r < 0 && SSL_get_error(e->ssl, r) == SSL_ERROR_WANT_WRITE;
    if (e->shut_pending)
        e->wr_ready = 0;
    ERR_clear_error();
}
