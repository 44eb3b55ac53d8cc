/*
 * stage.h - replace a few files together, with undo: how `ca issue`,
 * `ca rotate` and `ca revoke --replace` keep OUTDIR and the store consistent.
 *
 *   1. ca_stage_add() writes each new file to a temporary name next to its
 *      final one (temp + fsync + rename, meshtls_write_file_atomic): a full
 *      disk fails here, before anything visible changed;
 *   2. ca_stage_apply() keeps the current files under backup names (hard
 *      links) and renames the new ones into place;
 *   3. the caller COMMITs the store; on success ca_stage_done() drops the
 *      backups; if COMMIT (or anything before it) fails, ca_stage_undo()
 *      puts the previous files back, so store and files still agree.
 *
 * Errors follow meshtls/err.h.  A `struct ca_stage` lives on the caller's
 * stack; zero it with CA_STAGE_INIT and finish it with done() or undo().
 */
#ifndef MESHTLS_CA_STAGE_H
#define MESHTLS_CA_STAGE_H

#include <stddef.h>
#include <sys/types.h>

#include "meshtls/err.h"

#define CA_STAGE_MAX 4
#define CA_STAGE_PATH 4096

struct ca_stage_file {
    char final[CA_STAGE_PATH]; /* where the file ends up */
    char tmp[CA_STAGE_PATH];   /* the new content, until apply */
    char bak[CA_STAGE_PATH];   /* the previous content, after apply, until done/undo */
    int has_bak;               /* `final` existed and was linked to `bak` */
    int placed;                /* the new file was renamed to `final` */
};

struct ca_stage {
    struct ca_stage_file f[CA_STAGE_MAX];
    size_t n;
    char made_dir[CA_STAGE_PATH]; /* a directory ca_stage_mkdir() created ("" if none) */
};

#define CA_STAGE_INIT                                                                              \
    {                                                                                              \
        .n = 0                                                                                     \
    }

/** Create `dir` with `mode` if missing; undo removes it again if this call made it. */
int ca_stage_mkdir(struct ca_stage *st, const char *dir, mode_t mode, struct meshtls_err *err);

/** Stage `len` bytes (borrowed) for `path` with `mode`. */
int ca_stage_add(struct ca_stage *st, const char *path, const void *data, size_t len, mode_t mode,
                 struct meshtls_err *err);
/** Back up and replace every staged file, in the order added; on failure undoes itself. */
int ca_stage_apply(struct ca_stage *st, struct meshtls_err *err);
/** After COMMIT: remove backups and leftovers. */
void ca_stage_done(struct ca_stage *st);
/** Instead of COMMIT: put the previous files back (or remove new ones), remove temporaries. */
void ca_stage_undo(struct ca_stage *st);

#endif
