/*
 * stage.c - replace a few files together, with undo (see stage.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meshtls/x509.h"
#include "stage.h"

/* `<dir>/.<base>.<suffix>`, next to `path` so rename() stays in one filesystem. */
static int sibling(char *out, size_t cap, const char *path, const char *suffix)
{
    const char *slash = strrchr(path, '/');
    int n = slash ? snprintf(out, cap, "%.*s/.%s.%s", (int)(slash - path), path, slash + 1, suffix)
                  : snprintf(out, cap, ".%s.%s", path, suffix);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* fsync the directory holding `path`, so the renames survive a crash. */
static void sync_dir(const char *path)
{
    char d[CA_STAGE_PATH];
    snprintf(d, sizeof(d), "%s", path);
    int fd = open(dirname(d), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd != -1) {
        fsync(fd);
        close(fd);
    }
}

int ca_stage_mkdir(struct ca_stage *st, const char *dir, mode_t mode, struct meshtls_err *err)
{
    if (mkdir(dir, mode) == 0) {
        snprintf(st->made_dir, sizeof(st->made_dir), "%s", dir);
        return 0;
    }
    if (errno == EEXIST)
        return 0;
    return meshtls_err_set(err, MESHTLS_EIO, "cannot create directory %s: %s", dir,
                           strerror(errno));
}

int ca_stage_add(struct ca_stage *st, const char *path, const void *data, size_t len, mode_t mode,
                 struct meshtls_err *err)
{
    if (st->n == CA_STAGE_MAX)
        return meshtls_err_set(err, MESHTLS_EINVAL, "too many files staged (internal)");
    struct ca_stage_file *f = &st->f[st->n];
    memset(f, 0, sizeof(*f));
    if (snprintf(f->final, sizeof(f->final), "%s", path) >= (int)sizeof(f->final) ||
        sibling(f->tmp, sizeof(f->tmp), path, "new") ||
        sibling(f->bak, sizeof(f->bak), path, "prev"))
        return meshtls_err_set(err, MESHTLS_EINVAL, "path too long: %s", path);
    int rc = meshtls_write_file_atomic(f->tmp, data, len, mode, 0, err);
    if (rc)
        return rc;
    st->n++;
    return 0;
}

int ca_stage_apply(struct ca_stage *st, struct meshtls_err *err)
{
    for (size_t i = 0; i < st->n; i++) {
        struct ca_stage_file *f = &st->f[i];
        unlink(f->bak); /* a leftover from a crash */
        if (link(f->final, f->bak) == 0)
            f->has_bak = 1;
        else if (errno != ENOENT) {
            int e = errno;
            ca_stage_undo(st);
            return meshtls_err_set(err, MESHTLS_EIO, "cannot keep a copy of %s: %s", f->final,
                                   strerror(e));
        }
        if (rename(f->tmp, f->final) == -1) {
            int e = errno;
            ca_stage_undo(st);
            return meshtls_err_set(err, MESHTLS_EIO, "cannot rename %s to %s: %s", f->tmp, f->final,
                                   strerror(e));
        }
        f->placed = 1;
    }
    if (st->n)
        sync_dir(st->f[0].final);
    return 0;
}

void ca_stage_done(struct ca_stage *st)
{
    for (size_t i = 0; i < st->n; i++) {
        unlink(st->f[i].tmp);
        if (st->f[i].has_bak)
            unlink(st->f[i].bak);
    }
    st->n = 0;
    st->made_dir[0] = '\0';
}

void ca_stage_undo(struct ca_stage *st)
{
    for (size_t i = 0; i < st->n; i++) {
        struct ca_stage_file *f = &st->f[i];
        if (f->placed && f->has_bak)
            rename(f->bak, f->final);
        else if (f->placed)
            unlink(f->final);
        else if (f->has_bak)
            unlink(f->bak);
        unlink(f->tmp);
    }
    if (st->n)
        sync_dir(st->f[0].final);
    st->n = 0;
    if (st->made_dir[0])
        rmdir(st->made_dir);
    st->made_dir[0] = '\0';
}
