/*
 * tls_ec_legacy.c - meshtls_tls_use_legacy_ec(): OpenSSL 3.0's built-in
 * EC key code instead of its provider decoder framework (see meshtls/tls.h).
 *
 * OpenSSL 3.0 decodes every certificate's public key while parsing it
 * (d2i_X509), through OSSL_DECODER_CTX_new_for_pkey(), which collects and
 * chains every decoder of every loaded provider on each call: ~0.94 M
 * instructions per certificate, about a third of a full mTLS handshake on the
 * server (two client certificates).  Before that, x509_pubkey_decode() takes
 * the pre-provider ("legacy") path, still built into 3.0, when an ENGINE is
 * registered for the key type's EVP_PKEY_METHOD.  We register an ENGINE that
 * offers exactly OpenSSL's own built-in EC method (EVP_PKEY_meth_find): keys
 * are then decoded by the same EC code OpenSSL 1.1.1 used (the point is still
 * checked to be on the curve), and EC operations run through the same EC_KEY
 * implementation (ecp_nistz256 for P-256), without provider dispatch.  No
 * cryptography is ours.
 *
 * ENGINEs are deprecated in OpenSSL 3.0 and gone in 4.0: this file builds
 * only where they exist (OPENSSL_NO_ENGINE otherwise) and the function then
 * reports MESHTLS_ETLS.
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1 /* ENGINE_*, EVP_PKEY_meth_find: on purpose, above */

#include <pthread.h>
#include <stdatomic.h>

#include <openssl/evp.h>
#include <openssl/opensslconf.h>
#ifndef OPENSSL_NO_ENGINE
#include <openssl/engine.h>
#endif

#include "meshtls/tls.h"

#ifndef OPENSSL_NO_ENGINE
static int ec_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid)
{
    static const int ids[] = {EVP_PKEY_EC};
    (void)e;
    if (!pmeth) {
        *nids = ids;
        return 1;
    }
    *pmeth = nid == EVP_PKEY_EC ? (EVP_PKEY_METHOD *)EVP_PKEY_meth_find(EVP_PKEY_EC) : NULL;
    return *pmeth != NULL;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static atomic_int installed; /* 1 once the engine is registered; written only under `once` */

static void install(void)
{
    ENGINE *e = ENGINE_new();
    if (!e)
        return;
    /* ENGINE_add puts it on OpenSSL's engine list, which holds it until OPENSSL_cleanup();
     * the method table registration itself holds no reference. */
    if (EVP_PKEY_meth_find(EVP_PKEY_EC) && ENGINE_set_id(e, "meshtls-ec-legacy") &&
        ENGINE_set_name(e, "meshtls: OpenSSL's built-in EC key method") &&
        ENGINE_set_pkey_meths(e, ec_pkey_meths) && ENGINE_add(e) && ENGINE_register_pkey_meths(e))
        installed = 1;
    ENGINE_free(e);
}
#endif

int meshtls_tls_use_legacy_ec(struct meshtls_err *err)
{
#ifndef OPENSSL_NO_ENGINE
    pthread_once(&once, install);
    if (installed)
        return 0;
    return meshtls_err_set_ssl(err, MESHTLS_ETLS,
                               "cannot register OpenSSL's built-in EC key method; run with "
                               "MESHTLS_OPENSSL_EC_LEGACY=0 to use the provider path");
#else
    return meshtls_err_set(err, MESHTLS_ETLS,
                           "this OpenSSL has no ENGINE support: the legacy EC path is not "
                           "available (set MESHTLS_OPENSSL_EC_LEGACY=0)");
#endif
}

int meshtls_tls_legacy_ec_active(void)
{
#ifndef OPENSSL_NO_ENGINE
    return installed;
#else
    return 0;
#endif
}
