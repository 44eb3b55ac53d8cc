/*
 * cmd_connect.c - `meshtls connect`: the client of `meshtls proxy router` (docs/ROUTER.md).
 * Opens mTLS to the router with a user certificate, sends `<connect_id>\n`, reads the
 * answer line, and after `OK` relays standard input and output both ways with half-close
 * (standard input's end sends close_notify; the router's end closes standard output), so
 * it works as an OpenSSH ProxyCommand.  A refusal prints the router's ERROR line on stderr
 * and exits 1.  `--ssh-config` prints the ~/.ssh/config block instead.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "cli.h"
#include "keys.h"
#include "meshtls/tls.h"
#include "net.h"

#define RT_LINE_MAX_CLIENT 512 /* the connect-id line out, the answer line in */

static const char HEAD[] =
    "usage: meshtls connect --proxy HOST:PORT --cert FILE --key FILE --cacert FILE\n"
    "                       --connect-id ID [--server-name NAME] [--timeout D]\n"
    "       meshtls connect --ssh-config --proxy HOST:PORT --cert FILE --key FILE\n"
    "                       --cacert FILE [--host PATTERN]\n"
    "\n"
    "Reach host ID through the mTLS router: standard input and output become the\n"
    "connection (an OpenSSH ProxyCommand: --connect-id %h).  On refusal the router's\n"
    "'ERROR: <code> <message>' goes to stderr and the exit status is 1.\n";

/* The host part of "host:port" / "[v6]:port". */
static void host_of(const char *hp, char *out, size_t cap)
{
    const char *s = hp, *e;
    if (*s == '[') {
        s++;
        e = strchr(s, ']');
    } else {
        e = strrchr(s, ':');
    }
    size_t n = e ? (size_t)(e - s) : strlen(s);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/* Write all of buf to fd.  @return 0, or -1. */
static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        buf += w, n -= (size_t)w;
    }
    return 0;
}

static int ssl_write_all(SSL *ssl, const char *buf, size_t n)
{
    while (n > 0) {
        int w = SSL_write(ssl, buf, n > 1 << 30 ? 1 << 30 : (int)n);
        if (w <= 0)
            return -1;
        buf += w, n -= (size_t)w;
    }
    return 0;
}

static void set_timeout(int fd, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Relay stdin <-> ssl until both directions ended.  @return 0 or 1. */
static int relay(SSL *ssl, int fd)
{
    static char buf[65536];
    int in_open = 1, out_open = 1;
    while (in_open || out_open) {
        struct pollfd p[2] = {{.fd = in_open ? 0 : -1, .events = POLLIN},
                              {.fd = out_open ? fd : -1, .events = POLLIN}};
        int ready_ssl = out_open && SSL_pending(ssl) > 0;
        if (!ready_ssl && poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (out_open && (ready_ssl || (p[1].revents & (POLLIN | POLLHUP | POLLERR)))) {
            int n = SSL_read(ssl, buf, sizeof(buf));
            if (n > 0) {
                if (write_all(1, buf, (size_t)n) != 0)
                    return 1;
            } else {
                int e = SSL_get_error(ssl, n);
                if (e == SSL_ERROR_WANT_READ)
                    continue;
                /* the router's end of stream (close_notify or FIN): no more output */
                out_open = 0;
                close(1);
                if (e != SSL_ERROR_ZERO_RETURN && e != SSL_ERROR_SYSCALL)
                    return 1;
            }
        }
        if (in_open && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(0, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n > 0) {
                if (ssl_write_all(ssl, buf, (size_t)n) != 0)
                    return out_open ? 1 : 0;
            } else {
                in_open = 0; /* half-close: close_notify, keep reading */
                SSL_shutdown(ssl);
            }
        }
    }
    return 0;
}

/* Connect through the router (or print the ssh block), then relay.  @return the exit status. */
static int connect_run(struct meshtls_tls_opts *oo, const char *proxy, const char *cid, int ssh,
                       const char *host_pat, int timeout_ms)
{
    struct meshtls_tls_opts o = *oo;
    if (ssh) {
        /* absolute paths: ssh runs the command from wherever it was started */
        char *c = realpath(o.cert_file, NULL), *k = realpath(o.key_file, NULL),
             *a = realpath(o.ca_file, NULL);
        printf("# meshtls router: paste into ~/.ssh/config; then `ssh USER@CONNECT_ID`\n"
               "Host %s\n"
               "    ProxyCommand meshtls connect --proxy %s --cert %s --key %s --cacert %s "
               "--connect-id %%h\n",
               host_pat ? host_pat : "*", proxy, c ? c : o.cert_file, k ? k : o.key_file,
               a ? a : o.ca_file);
        free(c), free(k), free(a);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    char host[256];
    host_of(proxy, host, sizeof(host));
    if (!o.server_name && !o.verify_spiffe_id && !o.verify_trust_domain)
        o.server_name = host;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    int fd = -1, status = 1, rc;
    struct sockaddr_storage sa;
    socklen_t sl = sizeof(sa);
    if ((rc = meshtls_tls_client_ctx_new(&o, &ctx, &err)) != 0 ||
        (rc = mt_resolve(proxy, 0, &sa, &sl, &err)) != 0) {
        cli_print_err("connect", &err, rc);
        status = cli_exit_code(rc);
        goto out;
    }
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_set_mode(ctx, SSL_MODE_AUTO_RETRY);
    fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("meshtls connect: socket");
        goto out;
    }
    set_timeout(fd, timeout_ms);
    if (connect(fd, (struct sockaddr *)&sa, sl) != 0) {
        fprintf(stderr, "meshtls connect: cannot connect to the router %s: %s\n", proxy,
                strerror(errno));
        goto out;
    }
    if (meshtls_tls_client_ssl_new(ctx, &ssl, &err) != 0 || SSL_set_fd(ssl, fd) != 1) {
        cli_print_err("connect", &err, MESHTLS_ETLS);
        goto out;
    }
    if (SSL_connect(ssl) != 1) {
        char why[256];
        meshtls_tls_verify_failure(ssl, why, sizeof(why));
        unsigned long e = ERR_peek_last_error();
        fprintf(stderr, "meshtls connect: TLS handshake with the router %s failed: %s\n", proxy,
                why[0] ? why
                : e    ? ERR_reason_error_string(e)
                       : "connection closed");
        goto out;
    }
    char line[RT_LINE_MAX_CLIENT];
    int n = snprintf(line, sizeof(line), "%s\n", cid);
    if (n <= 0 || (size_t)n >= sizeof(line) || ssl_write_all(ssl, line, (size_t)n) != 0) {
        fprintf(stderr, "meshtls connect: cannot send the connect id to %s\n", proxy);
        goto out;
    }
    /* the answer: one line, read byte by byte so nothing after it is taken from the relay */
    size_t got = 0;
    while (got + 1 < sizeof(line)) {
        int r = SSL_read(ssl, line + got, 1);
        if (r <= 0)
            break;
        if (line[got++] == '\n')
            break;
    }
    line[got] = '\0';
    if (strcmp(line, "OK\n") != 0) {
        unsigned long e = ERR_peek_last_error();
        if (got == 0 && e) /* TLS 1.3: a refused certificate shows as an alert here */
            fprintf(stderr, "meshtls connect: the router %s refused the connection: %s\n", proxy,
                    ERR_reason_error_string(e));
        else if (got == 0)
            fprintf(stderr, "meshtls connect: the router %s closed without an answer\n", proxy);
        else
            fprintf(stderr, "%s%s", line, line[got - 1] == '\n' ? "" : "\n");
        goto out;
    }
    set_timeout(fd, 0);
    status = relay(ssl, fd);
out:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
    return status;
}

int cmd_connect(int argc, char **argv)
{
    struct meshtls_tls_opts o = {0};
    struct cli_cmd cc = {.what = "connect",
                         .tables = CLI_TABLE_CONNECT,
                         .role = "connect",
                         .modes = CLI_KEY_CONNECT};
    int st = cli_config_load(&cc, argc - 1, argv + 1);
    if (st == 0 && cc.help)
        cli_usage(stdout, &cc, HEAD, NULL);
    if (st || cc.help) {
        meshtls_config_free(cc.cfg);
        return st;
    }
    const struct meshtls_config *cfg = cc.cfg;
    const char *proxy, *cid = NULL, *host_pat = meshtls_config_get(cfg, "connect.host", NULL);
    int ssh = cli_bool(cfg, "connect.ssh_config", 0);
    int timeout_ms = (int)cli_int(cfg, "connect.timeout", 15000); /* 1ms..1h: checked */
    o.server_name = meshtls_config_get(cfg, "connect.server_name", NULL);
    o.verify_spiffe_id = meshtls_config_get(cfg, "connect.server_spiffe_id", NULL);
    o.verify_trust_domain = meshtls_config_get(cfg, "connect.server_trust_domain", NULL);
    if (!(proxy = cli_need(&cc, "connect.proxy")) ||
        !(o.cert_file = cli_need(&cc, "connect.cert")) ||
        !(o.key_file = cli_need(&cc, "connect.key")) ||
        !(o.ca_file = cli_need(&cc, "connect.cacert")) ||
        (!ssh && !(cid = cli_need(&cc, "connect.connect_id")))) {
        meshtls_config_free(cc.cfg);
        return 2;
    }
    int status = connect_run(&o, proxy, cid, ssh, host_pat, timeout_ms);
    meshtls_config_free(cc.cfg);
    return status;
}
