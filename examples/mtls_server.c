/*
 * mtls_server.c - an mTLS server using libmeshtls, in a few dozen lines.
 *
 *   mtls_server [--cert F --key F --cacert F --crl F] [--config FILE] [--port N]
 *
 * Settings come from the flags, then the environment (MESHTLS_SERVER_*, or
 * the GRPC_SERVER_CERT_PATH / GRPC_SERVER_KEY_PATH / GRPC_CLIENT_CA_CERT_PATH
 * names of Kubernetes deployments), then the YAML --config file.
 *
 * Prints "listening on 127.0.0.1:PORT" once ready.  For each client it
 * completes the mutual TLS handshake (a client certificate is required and
 * verified), then greets an HTTP request with "hello <caller>" or echoes
 * lines.  One connection at a time, 5-second read timeout: a teaching
 * example, not a server to deploy (that is `meshtls proxy`).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getopt_long, struct timeval: builds with a plain `cc -std=c17` too */
#endif
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>

#include <meshtls/meshtls.h>

static void serve(SSL *ssl)
{
    struct meshtls_identity *peer = NULL;
    char buf[4096];
    if (meshtls_tls_peer_identity(ssl, &peer, NULL) != 0)
        return;
    const char *who = peer->spiffe_id ? peer->spiffe_id : peer->cn;
    fprintf(stderr, "accepted client %s (serial %s)\n", who, peer->serial);
    int n;
    while ((n = SSL_read(ssl, buf, sizeof(buf) - 1)) > 0) {
        buf[n] = '\0';
        if (!strncmp(buf, "GET ", 4) || !strncmp(buf, "HEAD ", 5)) {
            char body[2200], resp[2400];
            int bl = snprintf(body, sizeof(body), "hello %s\n", who);
            int rl = snprintf(resp, sizeof(resp),
                              "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                              "Content-Length: %d\r\nConnection: close\r\n\r\n%s",
                              bl, body);
            SSL_write(ssl, resp, rl);
            break;
        }
        SSL_write(ssl, buf, n); /* echo */
    }
    meshtls_identity_free(peer);
}

int main(int argc, char **argv)
{
    struct meshtls_tls_opts o;
    struct meshtls_err err = MESHTLS_ERR_INIT;
    struct meshtls_config *cfg = NULL;
    const char *file = NULL;
    int port = 0, c, rc = meshtls_config_new(&cfg);
    static const struct option lo[] = {
        {"cert", 1, 0, 'c'}, {"key", 1, 0, 'k'},    {"cacert", 1, 0, 'a'}, {"crl", 1, 0, 'r'},
        {"port", 1, 0, 'p'}, {"config", 1, 0, 'f'}, {0, 0, 0, 0}};
    static const char *const keys[] = {['c'] = "server.cert_file",
                                       ['k'] = "server.key_file",
                                       ['a'] = "server.ca_file",
                                       ['r'] = "server.crl_file"};
    while (rc == 0 && (c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (c == 'p')
            port = (int)strtol(optarg, NULL, 10);
        else if (c == 'f')
            file = optarg;
        else if (c == 'c' || c == 'k' || c == 'a' || c == 'r')
            rc = meshtls_config_set(cfg, keys[c], optarg, NULL, &err);
        else {
            meshtls_config_free(cfg);
            return 2;
        }
    }
    SSL_CTX *ctx = NULL;
    if (rc || (file && (rc = meshtls_config_load_file(cfg, file, &err))) ||
        (rc = meshtls_config_load_env(cfg, NULL, &err)) ||
        (rc = meshtls_config_tls_opts(cfg, "server", &o, &err)) ||
        (rc = meshtls_tls_server_ctx_new(&o, &ctx, &err)) != 0) {
        fprintf(stderr, "mtls_server: %s\n", err.msg);
        meshtls_config_free(cfg);
        return 1;
    }
    meshtls_config_free(cfg); /* the context holds everything it needs */

    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ls, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(ls, 64) != 0 ||
        getsockname(ls, (struct sockaddr *)&sa, &sl) != 0) {
        perror("mtls_server: listen");
        SSL_CTX_free(ctx);
        return 1;
    }
    printf("listening on 127.0.0.1:%d\n", ntohs(sa.sin_port));
    fflush(stdout);

    for (;;) {
        int fd = accept(ls, NULL, NULL);
        if (fd < 0)
            continue;
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        ERR_clear_error();
        if (SSL_accept(ssl) == 1) {
            serve(ssl);
            SSL_shutdown(ssl);
        } else {
            char why[256];
            meshtls_tls_verify_failure(ssl, why, sizeof(why));
            meshtls_err_set_ssl(&err, MESHTLS_ETLS, "handshake failed%s%s", why[0] ? ": " : "",
                                why);
            fprintf(stderr, "mtls_server: %s\n", err.msg);
        }
        SSL_free(ssl);
        close(fd);
    }
}
