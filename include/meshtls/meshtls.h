/* meshtls/meshtls.h - everything of libmeshtls. */
#ifndef MESHTLS_MESHTLS_H
#define MESHTLS_MESHTLS_H

#include "meshtls/config.h"
#include "meshtls/err.h"
#include "meshtls/identity.h"
#include "meshtls/log.h"
#include "meshtls/policy.h"
#include "meshtls/spiffe.h"
#include "meshtls/tls.h"
#include "meshtls/x509.h"

#define MESHTLS_VERSION "0.1.0"

#endif
