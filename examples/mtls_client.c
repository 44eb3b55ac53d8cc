/*
 * mtls_client.c - an mTLS client using libmeshtls.
 *
 *   mtls_client --cert F --key F --cacert F --connect HOST:PORT
 *               [--server-name N] [--verify-spiffe-id URI] [--verify-trust-domain TD]
 *
 * Connects, completes the mutual TLS handshake (verifying the server's chain
 * and its name or SPIFFE ID), sends "GET / HTTP/1.0" and prints the reply.
 * Exit 0 on success, 1 when the connection or verification fails (with why).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* getopt_long, struct timeval: builds with a plain `cc -std=c17` too */
#endif
#include <getopt.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>

#include <meshtls/meshtls.h>

static int dial(const char *hostport)
{
    char host[256];
    const char *colon = strrchr(hostport, ':');
    if (!colon || (size_t)(colon - hostport) >= sizeof(host))
        return -1;
    memcpy(host, hostport, (size_t)(colon - hostport));
    host[colon - hostport] = '\0';
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
        return -1;
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

int main(int argc, char **argv)
{
    struct meshtls_tls_opts o = {0};
    struct meshtls_err err = MESHTLS_ERR_INIT;
    const char *target = NULL;
    int c;
    static const struct option lo[] = {{"cert", 1, 0, 'c'},
                                       {"key", 1, 0, 'k'},
                                       {"cacert", 1, 0, 'a'},
                                       {"connect", 1, 0, 't'},
                                       {"server-name", 1, 0, 'n'},
                                       {"verify-spiffe-id", 1, 0, 's'},
                                       {"verify-trust-domain", 1, 0, 'd'},
                                       {0, 0, 0, 0}};
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'c': o.cert_file = optarg; break;
        case 'k': o.key_file = optarg; break;
        case 'a': o.ca_file = optarg; break;
        case 't': target = optarg; break;
        case 'n': o.server_name = optarg; break;
        case 's': o.verify_spiffe_id = optarg; break;
        case 'd': o.verify_trust_domain = optarg; break;
        default: return 2;
        }
    }
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    if (!target || meshtls_tls_client_ctx_new(&o, &ctx, &err) != 0 ||
        meshtls_tls_client_ssl_new(ctx, &ssl, &err) != 0) {
        fprintf(stderr, "mtls_client: %s\n", target ? err.msg : "--connect HOST:PORT is required");
        return 1;
    }
    int fd = dial(target), status = 1;
    if (fd < 0) {
        fprintf(stderr, "mtls_client: cannot connect to %s\n", target);
        goto out;
    }
    SSL_set_fd(ssl, fd);
    ERR_clear_error();
    if (SSL_connect(ssl) != 1) {
        char why[256];
        meshtls_tls_verify_failure(ssl, why, sizeof(why));
        meshtls_err_set_ssl(&err, MESHTLS_ETLS, "handshake with %s failed%s%s", target,
                            why[0] ? ": " : "", why);
        fprintf(stderr, "mtls_client: %s\n", err.msg);
        goto out;
    }
    struct meshtls_identity *peer = NULL;
    if (meshtls_tls_peer_identity(ssl, &peer, &err) == 0) {
        fprintf(stderr, "connected to %s (%s)\n", peer->spiffe_id ? peer->spiffe_id : peer->cn,
                SSL_get_version(ssl));
        meshtls_identity_free(peer);
    }
    static const char req[] = "GET / HTTP/1.0\r\n\r\n";
    SSL_write(ssl, req, sizeof(req) - 1);
    char buf[4096];
    int n, got = 0;
    while ((n = SSL_read(ssl, buf, sizeof(buf))) > 0) {
        fwrite(buf, 1, (size_t)n, stdout);
        got = 1;
    }
    if (!got) {
        meshtls_err_set_ssl(&err, MESHTLS_ETLS, "%s closed the connection without a reply", target);
        fprintf(stderr, "mtls_client: %s\n", err.msg);
        goto out;
    }
    status = 0;
out:
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0)
        close(fd);
    return status;
}
