/* files.c — /api/v1/files and avatars: streamed multipart uploads,
 * downloads by sendfile with conditional and Range requests.
 *
 * Upload pipeline (POST /api/v1/files, PUT /api/v1/auth/me/avatar; both
 * KEEL_ROUTE_STREAM_BODY). The body is never held whole:
 *
 *   loop:  body chunk -> job->buf (at most FLUSH_AT + one read)
 *          buf full and no write in flight -> hand it to the work pool,
 *          and pause reading the socket while the pool is busy
 *   pool:  the multipart parser runs over the chunk; file parts go to
 *          temporary files (write + SHA-256 as they pass), field parts
 *          to a bounded buffer
 *   end:   pool: finish the parser, fsync each file, sniff its type from
 *          its first bytes (and an avatar's size from its header);
 *          database pool, one transaction: quota check (507), move the
 *          temporary files to their objects (named by SHA-256), insert
 *          the rows.
 *
 * Every failure — a limit (413 naming its variable), a malformed body
 * (400), a refused type (415), the quota (507), the client leaving — ends
 * in the job's cleanup, which closes and unlinks whatever temporary file
 * is not committed: nothing is left behind.
 *
 * Ownership: a file is only ever looked up with its owner's id, so
 * another user's file is 404, never 403 (no IDOR, no existence leak).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/files.h"

/* A buffer handed to the pool holds FLUSH_AT bytes and one read more:
 * fewer, larger hand-offs keep the client's TCP stream flowing (100 MiB
 * on the bench machine: 256 KiB 480 MiB/s, 512 KiB 550, 1 MiB 595). Both
 * buffers are allocated once per upload at their full size. */
#define FLUSH_AT (512 * 1024)
#define BUF_CAP (FLUSH_AT + 64 * 1024)
#define RUN_WRITE_AT (64 * 1024) /* a run this long is written without a copy;
                                    shorter ones are coalesced up to it */
#define STAGE (512 * 1024)       /* direct writes: whole blocks, see direct_begin */
#define NSTAGE 2
#define RESERVE_STEP (64u << 20)
#define WRITEBACK_AT (8u << 20)  /* see start_writeback */
#define SNIFF_BYTES (256 * 1024) /* JPEG frame headers may follow large EXIF blocks */

static keel_db *DB;
static app_storage *ST;
static const app_upload_options *O;
static keel_metric *M_UPLOADS; /* keel_uploads_total{kind,result} */
static keel_metric *M_BYTES;   /* keel_upload_bytes_total{kind} */

/* One upload's outcome: result is one of a fixed set (bounded labels). */
static void count(keel_req *r, int avatar, const char *result, uint64_t bytes)
{
    const char *kind = avatar ? "avatar" : "file";
    const char *lv[] = {kind, result};
    keel_metric_add(M_UPLOADS, keel_req_worker_id(r), lv, 1);
    if (bytes)
        keel_metric_add(M_BYTES, keel_req_worker_id(r), lv, (double)bytes);
}

/* ---------------------------------------------------------------- upload job */

typedef struct up_file {
    char tmp[600];
    int fd;
    keel_sha256 sha;
    uint64_t size;
    uint64_t wb_off;    /* loop: bytes handed to start_writeback so far */
    char hash[65];
    char id[37];
    char name[256];
    char field[128];
    const char *type;
    uint32_t w, h;
    int has_dims;
    int committed;
    int dup;            /* the object existed: tmp is still there, to remove */
    int direct;         /* fd has O_DIRECT: whole blocks only (pool) */
    uint64_t doff;      /* direct: bytes handed to writes */
    uint64_t reserved;  /* direct: the size the file was raised to */
} up_file;

typedef struct up_aio {
    aio_context_t ctx;
    char *buf[NSTAGE];   /* STAGE bytes each, in one mapping (page-aligned) */
    int busy[NSTAGE];    /* a write from buf[i] is in flight */
    struct iocb cb[NSTAGE];
    int nbusy;
} up_aio;

typedef struct up_job {
    keel_multipart m;
    int m_ready;
    int avatar;
    keel_buf buf;       /* filled on the loop */
    keel_buf wbuf;      /* being parsed on the pool */
    int inflight, body_done, finishing;
    up_file *files;
    size_t nfiles, capfiles;
    up_file *cur;       /* the file part being written, or NULL */
    int in_field;
    char fieldname[128];
    keel_buf fieldval;
    keel_buf wout; /* pool: short runs of the current file, written at RUN_WRITE_AT */
    up_aio *aio;   /* pool: direct writes; freed by aio_release */
    int sfill;     /* the block being filled */
    size_t slen;
    json_t *fields;
    /* the outcome, set on the pool */
    int status;         /* 0 = fine so far; else the HTTP status to answer */
    char detail[200];
    const char *limit;  /* the config variable of a 413 */
    char user[64];
    json_t *out;
    int invalidated;
    struct wb_link *wb; /* loop: the writeback in flight, if any */
    keel_worker *worker;
} up_job;

static void aio_release(up_job *j);
static void direct_begin(up_job *j, up_file *f);

/* Shared by an upload and its writeback job, both on the loop: whichever
 * ends last frees it. */
typedef struct wb_link {
    int refs;
    int inflight;
} wb_link;

static void wb_unref(wb_link *l)
{
    if (l && --l->refs == 0)
        keel_free(l);
}

/* Removing a large file frees its blocks: ~30 ms per 100 MiB on ext4,
 * not a cost for the loop (cleanup runs there) or for the response. A
 * job on the pool does it; in place only when the pool refuses. */
typedef struct rm_job {
    char path[600];
} rm_job;

static void rm_work(void *arg)
{
    unlink(((rm_job *)arg)->path);
}

static void rm_after(void *arg, int status)
{
    (void)status;
    keel_free(arg);
}

static void discard_tmp(keel_worker *w, const char *path)
{
    rm_job *x = keel_malloc(sizeof(*x));
    keel_strlcpy(x->path, path, sizeof(x->path));
    if (!w || keel_worker_submit(w, rm_work, rm_after, x) < 0) {
        unlink(path);
        keel_free(x);
    }
}

static void up_cleanup(void *arg)
{
    up_job *j = arg;
    for (size_t i = 0; i < j->nfiles; i++) {
        up_file *f = &j->files[i];
        keel_sha256_free(&f->sha);
        if (f->fd >= 0)
            close(f->fd);
        if ((!f->committed || f->dup) && f->tmp[0])
            discard_tmp(j->worker, f->tmp); /* every failure and every abort ends here */
    }
    keel_free(j->files);
    wb_unref(j->wb);
    if (j->m_ready)
        keel_multipart_free(&j->m);
    keel_buf_free(&j->buf);
    keel_buf_free(&j->wbuf);
    keel_buf_free(&j->fieldval);
    keel_buf_free(&j->wout);
    aio_release(j);
    json_decref(j->fields);
    json_decref(j->out);
}

static int fail(up_job *j, int status, const char *detail)
{
    if (!j->status) {
        j->status = status;
        snprintf(j->detail, sizeof(j->detail), "%s", detail);
    }
    return -status;
}

/* multipart callbacks: on the pool thread */

static int part_begin(void *arg, const keel_multipart_part *p)
{
    up_job *j = arg;
    j->cur = NULL;
    j->in_field = 0;
    if (!p->is_file) {
        if (j->avatar)
            return 0; /* an avatar upload ignores fields */
        j->in_field = 1;
        snprintf(j->fieldname, sizeof(j->fieldname), "%.*s", (int)p->name.len, p->name.ptr);
        j->fieldval.len = 0;
        return 0;
    }
    if (j->avatar && j->nfiles == 1)
        return fail(j, 400, "an avatar upload holds one file");
    if (j->nfiles == j->capfiles) {
        j->capfiles = j->capfiles ? j->capfiles * 2 : 4;
        j->files = keel_realloc(j->files, j->capfiles * sizeof(up_file));
    }
    up_file *f = &j->files[j->nfiles++];
    memset(f, 0, sizeof(*f));
    f->fd = ST->tmp_open(ST->self, f->tmp, sizeof(f->tmp));
    if (f->fd < 0) {
        int e = -f->fd;
        f->tmp[0] = 0;
        keel_log(KEEL_LOG_ERROR, "upload: cannot create a temporary file", "{s:s}", "error",
                 strerror(e));
        return fail(j, e == ENOSPC ? 507 : 500, "the file could not be stored");
    }
    keel_sha256_init(&f->sha);
    direct_begin(j, f);
    app_uuid(f->id);
    app_safe_filename(p->filename.ptr ? p->filename.ptr : "", p->filename.len, f->name,
                      sizeof(f->name));
    snprintf(f->field, sizeof(f->field), "%.*s", (int)p->name.len, p->name.ptr);
    j->cur = f;
    return 0;
}

/* Writes d[0..n) to the current file (pool thread). */
static int write_out(up_job *j, const char *d, size_t n)
{
    while (n) {
        ssize_t w = write(j->cur->fd, d, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            keel_log(KEEL_LOG_ERROR, "upload: write failed", "{s:s}", "error", strerror(e));
            return fail(j, e == ENOSPC || e == EDQUOT ? 507 : 500, "the file could not be stored");
        }
        d += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes the coalesced bytes of the current file (pool thread). */
static int flush_out(up_job *j)
{
    size_t n = j->wout.len;
    j->wout.len = 0;
    if (!j->cur || !n)
        return 0;
    return write_out(j, j->wout.data, n);
}

/* Direct I/O. A file's bytes bypass the page cache where the file
 * system allows it (O_DIRECT, set in part_begin): no page to allocate and
 * copy into, nothing dirty left for the fsync. On this project's VM a
 * buffered 100 MiB write took 16 ms or, every other upload, 170-200 ms
 * (fresh pages for the page cache, handed back to the host in between).
 * O_DIRECT needs aligned memory, lengths and offsets: the bytes are staged
 * in NSTAGE aligned blocks of STAGE bytes, each written whole with Linux
 * native AIO (io_submit), so the disk writes one block while the next is
 * hashed; a block is reused once its write completed. ext4 makes a write
 * that extends the file synchronous, so the file's size is raised ahead
 * of the writes (RESERVE_STEP at a time, sparse) and cut to the bytes at
 * the part's end; the tail, shorter than a block, goes through the page
 * cache. Anything refused (a file system without O_DIRECT: tmpfs; no AIO
 * context left) falls back to the page cache. Writes may still be in
 * flight between two feeds: the blocks are freed only when they are done
 * (aio_release). */
static void direct_off(up_file *f)
{
    int fl = fcntl(f->fd, F_GETFL);
    if (fl >= 0)
        (void)fcntl(f->fd, F_SETFL, fl & ~O_DIRECT);
    f->direct = 0;
}

static int write_failed(up_job *j, int e)
{
    keel_log(KEEL_LOG_ERROR, "upload: write failed", "{s:s}", "error", strerror(e));
    return fail(j, e == ENOSPC || e == EDQUOT ? 507 : 500, "the file could not be stored");
}

/* Waits for one write. 0; -1 when it failed (j->status set); -2 when
 * waiting itself failed (nothing more to wait for here). */
static int aio_wait_one(up_job *j)
{
    up_aio *a = j->aio;
    struct io_event ev;
    long n;
    do
        n = syscall(SYS_io_getevents, a->ctx, 1, 1, &ev, NULL);
    while (n < 0 && errno == EINTR);
    if (n != 1) {
        write_failed(j, n < 0 ? errno : EIO);
        return -2;
    }
    int i = (int)ev.data;
    a->busy[i] = 0;
    a->nbusy--;
    if (ev.res != STAGE) {
        write_failed(j, ev.res < 0 ? (int)-ev.res : EIO);
        return -1;
    }
    return 0;
}

static int aio_drain(up_job *j)
{
    int rc = 0;
    while (j->aio && j->aio->nbusy) {
        int w = aio_wait_one(j);
        if (w == -2)
            return -1;
        if (w < 0)
            rc = -1;
    }
    return rc;
}

/* Writes n bytes at off through whatever the fd is now (pool thread). */
static int pwrite_all(up_job *j, int fd, const char *d, size_t n, uint64_t off)
{
    while (n) {
        ssize_t w = pwrite(fd, d, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return write_failed(j, w < 0 ? errno : EIO);
        d += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

/* The block being filled is full: its write starts; the next block is
 * the other one, once its own write is done. */
static int stage_submit(up_job *j)
{
    up_file *f = j->cur;
    up_aio *a = j->aio;
    int i = j->sfill;
    uint64_t off = f->doff;
    if (off + STAGE > f->reserved && ftruncate(f->fd, (off_t)(f->reserved + RESERVE_STEP)) == 0)
        f->reserved += RESERVE_STEP;
    struct iocb *cb = &a->cb[i];
    memset(cb, 0, sizeof(*cb));
    cb->aio_data = (uint64_t)i;
    cb->aio_lio_opcode = IOCB_CMD_PWRITE;
    cb->aio_fildes = (uint32_t)f->fd;
    cb->aio_buf = (uint64_t)(uintptr_t)a->buf[i];
    cb->aio_nbytes = STAGE;
    cb->aio_offset = (int64_t)off;
    struct iocb *list[1] = {cb};
    long n;
    do
        n = syscall(SYS_io_submit, a->ctx, 1, list);
    while (n < 0 && errno == EINTR);
    f->doff += STAGE;
    j->slen = 0;
    if (n != 1) {
        /* refused: this block and the rest through the page cache */
        if (aio_drain(j))
            return -1;
        direct_off(f);
        if (pwrite_all(j, f->fd, a->buf[i], STAGE, off))
            return -1;
        if (lseek(f->fd, (off_t)f->doff, SEEK_SET) < 0)
            return write_failed(j, errno);
        return 0;
    }
    a->busy[i] = 1;
    a->nbusy++;
    j->sfill = (i + 1) % NSTAGE;
    while (a->busy[j->sfill]) {
        int w = aio_wait_one(j);
        if (w < 0)
            return -1;
    }
    return 0;
}

static int stage_data(up_job *j, const char *d, size_t n)
{
    while (n) {
        if (!j->cur->direct) /* a refused submit: the page cache from here */
            return write_out(j, d, n);
        size_t k = STAGE - j->slen;
        if (k > n)
            k = n;
        memcpy(j->aio->buf[j->sfill] + j->slen, d, k);
        j->slen += k;
        d += k;
        n -= k;
        if (j->slen == STAGE && stage_submit(j))
            return -1;
    }
    return 0;
}

/* The part's end: every write done, the tail written, O_DIRECT off (the
 * type is sniffed with pread later). */
static int direct_end(up_job *j)
{
    up_file *f = j->cur;
    if (aio_drain(j))
        return -1;
    direct_off(f);
    if (j->slen && pwrite_all(j, f->fd, j->aio->buf[j->sfill], j->slen, f->doff))
        return -1;
    j->slen = 0;
    return 0;
}

/* Sets a new file up for direct writes, if it can be. */
static void direct_begin(up_job *j, up_file *f)
{
    if (!j->aio) {
        up_aio *a = keel_calloc(1, sizeof(*a));
        if (syscall(SYS_io_setup, NSTAGE, &a->ctx) < 0) {
            keel_free(a);
            return;
        }
        /* mapped, not malloc'd: page-aligned, and given back whole (from
         * an arena, aligned blocks freed by another thread fragmented it:
         * ~1 MiB of RSS per upload) */
        void *m = mmap(NULL, (size_t)NSTAGE * STAGE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            (void)syscall(SYS_io_destroy, a->ctx);
            keel_free(a);
            return;
        }
        for (int i = 0; i < NSTAGE; i++)
            a->buf[i] = (char *)m + (size_t)i * STAGE;
        j->aio = a;
    }
    int fl = fcntl(f->fd, F_GETFL);
    if (fl < 0 || fcntl(f->fd, F_SETFL, fl | O_DIRECT) < 0)
        return;
    f->direct = 1;
    j->sfill = 0;
    j->slen = 0;
}

static void aio_free(up_aio *a)
{
    (void)syscall(SYS_io_destroy, a->ctx); /* waits for what is in flight */
    munmap(a->buf[0], (size_t)NSTAGE * STAGE);
    keel_free(a);
}

static void aio_free_work(void *arg)
{
    aio_free(arg);
}

static void aio_free_after(void *arg, int status)
{
    (void)arg;
    (void)status;
}

/* Cleanup (loop): with writes in flight, the blocks are freed on the
 * pool once they are done. */
static void aio_release(up_job *j)
{
    up_aio *a = j->aio;
    j->aio = NULL;
    if (!a)
        return;
    if (!a->nbusy || !j->worker || keel_worker_submit(j->worker, aio_free_work, aio_free_after, a) < 0)
        aio_free(a);
}

static int part_data(void *arg, const char *d, size_t n)
{
    up_job *j = arg;
    if (j->in_field) {
        keel_buf_append(&j->fieldval, d, n); /* bounded: UPLOAD_MAX_FIELD_VALUE */
        return 0;
    }
    up_file *f = j->cur;
    if (!f)
        return 0;
    keel_sha256_update(&f->sha, d, n);
    f->size += n;
    /* The parser hands a chunk's data over as one run, except near a
     * delimiter and where a CR ends a chunk: a long run is written as it
     * is, short ones are coalesced (written one by one, small runs were
     * ~800,000 write(2) calls per 100 MiB). */
    if (f->direct)
        return stage_data(j, d, n);
    if (n >= RUN_WRITE_AT && (j->wout.len == 0 || flush_out(j) == 0))
        return write_out(j, d, n);
    if (j->status)
        return -j->status;
    keel_buf_append(&j->wout, d, n);
    return j->wout.len >= RUN_WRITE_AT ? flush_out(j) : 0;
}

static int part_end(void *arg)
{
    up_job *j = arg;
    if (j->in_field) {
        json_t *v = json_stringn(j->fieldval.data ? j->fieldval.data : "", j->fieldval.len);
        if (!v)
            return fail(j, 400, "a field value is not valid UTF-8");
        json_object_set_new(j->fields, j->fieldname, v);
    } else if (j->cur && j->cur->direct ? direct_end(j) : flush_out(j)) {
        return -1;
    } else if (j->cur && j->cur->reserved > j->cur->size &&
               ftruncate(j->cur->fd, (off_t)j->cur->size) < 0) {
        return write_failed(j, errno); /* the size raised for direct writes, cut to the bytes */
    }
    j->in_field = 0;
    j->cur = NULL;
    return 0;
}

/* After the closing delimiter: make every file durable and learn what it is. */
static void finish_files(up_job *j)
{
    unsigned char *sniff = keel_malloc(SNIFF_BYTES);
    for (size_t i = 0; i < j->nfiles && !j->status; i++) {
        up_file *f = &j->files[i];
        if (fsync(f->fd) < 0) {
            fail(j, 500, "the file could not be stored");
            break;
        }
        ssize_t n = pread(f->fd, sniff, SNIFF_BYTES, 0);
        if (n < 0)
            n = 0;
        close(f->fd);
        f->fd = -1;
        unsigned char digest[32];
        keel_sha256_final(&f->sha, digest);
        sodium_bin2hex(f->hash, sizeof(f->hash), digest, sizeof(digest));
        f->type = app_sniff_type(sniff, (size_t)n);
        if (j->avatar) {
            if (strncmp(f->type, "image/", 6) != 0) {
                fail(j, 415, "an avatar must be a PNG, JPEG, GIF or WebP image");
                break;
            }
            if (app_image_size(f->type, sniff, (size_t)n, &f->w, &f->h) < 0) {
                fail(j, 422, "the image's dimensions cannot be read from its header");
                break;
            }
            f->has_dims = 1;
            if (f->w == 0 || f->h == 0 || f->w > O->avatar_max_dim || f->h > O->avatar_max_dim) {
                char d[160];
                snprintf(d, sizeof(d), "the image is %ux%u; at most %llux%llu "
                                       "(AVATAR_MAX_DIMENSION)",
                         f->w, f->h, (unsigned long long)O->avatar_max_dim,
                         (unsigned long long)O->avatar_max_dim);
                fail(j, 422, d);
                break;
            }
        } else if (!app_type_allowed(O->allowed_types, f->type)) {
            char d[160];
            snprintf(d, sizeof(d), "files of type %s are not accepted (UPLOAD_ALLOWED_TYPES)",
                     f->type);
            fail(j, 415, d);
            break;
        } else if (!strncmp(f->type, "image/", 6) &&
                   app_image_size(f->type, sniff, (size_t)n, &f->w, &f->h) == 0) {
            f->has_dims = 1;
        }
    }
    keel_free(sniff);
    if (!j->status && j->avatar && j->nfiles != 1)
        fail(j, 400, "an avatar upload holds one file part");
    if (!j->status && !j->avatar && j->nfiles == 0)
        fail(j, 400, "the upload holds no file part");
}

/* Runs the parser over wbuf; at the end, finishes it. Pool thread. */
static void work_feed(void *arg)
{
    up_job *j = arg;
    if (j->status)
        return;
    int rc = keel_multipart_feed(&j->m, j->wbuf.data, j->wbuf.len);
    if (rc >= 0 && !j->in_field && flush_out(j))
        rc = -1; /* j->status says why */
    if (rc == 0 && j->finishing)
        rc = keel_multipart_finish(&j->m);
    if (rc == -413) {
        j->limit = app_upload_limit_var(j->m.limit, j->avatar);
        char d[200];
        snprintf(d, sizeof(d), "%s (%s)", j->m.error, j->limit);
        fail(j, 413, d);
        return;
    }
    if (rc == -400) {
        fail(j, 400, j->m.error);
        return;
    }
    if (rc < 0)
        return; /* a callback failed: j->status says why */
    if (rc == 1)
        finish_files(j);
}

static void answer_error(keel_req *r, up_job *j)
{
    count(r, j->avatar,
          j->status == 413   ? "too_large"
          : j->status == 400 ? "malformed"
          : j->status == 415 ? "refused_type"
          : j->status == 422 ? "invalid_image"
          : j->status == 507 ? "insufficient_storage"
                             : "error",
          0);
    json_t *extra = j->limit ? json_pack("{s:s}", "limit", j->limit) : NULL;
    keel_respond_problem_ex(r, j->status, NULL, j->detail, extra);
}

static keel_flow submit_feed(keel_req *r, up_job *j);

/* ---------------------------------------------------------------- commit (database) */

static json_t *file_json(const char *id, const char *name, const char *type, int64_t size,
                         const char *hash, int64_t w, int64_t h, int64_t created)
{
    char url[96], at[32];
    snprintf(url, sizeof(url), "/api/v1/files/%s/content", id);
    time_t t = (time_t)created;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_t *o = json_pack("{s:s,s:s,s:s,s:I,s:s,s:s,s:s}", "id", id, "name", name,
                          "content_type", type, "size", (json_int_t)size, "sha256", hash,
                          "created_at", at, "url", url);
    if (w > 0 && h > 0) {
        json_object_set_new(o, "width", json_integer(w));
        json_object_set_new(o, "height", json_integer(h));
    }
    return o;
}

static int db_commit(keel_db_conn *c, void *arg)
{
    up_job *j = arg;
    j->status = 0;
    json_decref(j->out);
    j->out = NULL;
    uint64_t incoming = 0;
    for (size_t i = 0; i < j->nfiles; i++)
        incoming += j->files[i].size;
    keel_db_param q[] = {KEEL_DB_P_TEXT(j->user), KEEL_DB_P_TEXT(j->avatar ? "avatar" : "")};
    keel_db_rows *rows;
    /* an avatar replaces the previous one: it does not count twice */
    int rc = keel_db_query(c,
                           "SELECT COALESCE(SUM(size), 0) FROM files WHERE owner_id = $1 "
                           "AND kind <> $2",
                           q, 2, &rows);
    if (rc < 0)
        return rc;
    uint64_t used = keel_db_rows_next(rows) == 1 ? (uint64_t)keel_db_get_int(rows, 0) : 0;
    keel_db_rows_free(rows);
    if (used + incoming > O->quota) {
        char d[200];
        snprintf(d, sizeof(d),
                 "storing %llu more bytes would pass your quota of %llu bytes "
                 "(%llu used; UPLOAD_QUOTA_BYTES)",
                 (unsigned long long)incoming, (unsigned long long)O->quota,
                 (unsigned long long)used);
        fail(j, 507, d);
        return 0; /* nothing written */
    }
    int64_t now = app_now();
    char *fields = json_dumps(j->fields, JSON_COMPACT);
    json_t *list = json_array();
    char old[65] = "";
    if (j->avatar) {
        /* the previous avatar goes (its bytes too, below, if nothing else uses them) */
        keel_db_param p[] = {KEEL_DB_P_TEXT(j->user)};
        if ((rc = keel_db_query(c, "SELECT sha256 FROM files WHERE owner_id = $1 AND "
                                   "kind = 'avatar'",
                                p, 1, &rows)) < 0)
            goto done;
        if (keel_db_rows_next(rows) == 1) {
            keel_str h = keel_db_get_text(rows, 0);
            snprintf(old, sizeof(old), "%.*s", (int)h.len, h.ptr ? h.ptr : "");
        }
        keel_db_rows_free(rows);
        if ((rc = keel_db_exec(c, "DELETE FROM files WHERE owner_id = $1 AND kind = 'avatar'",
                               p, 1, NULL)) < 0)
            goto done;
    }
    for (size_t i = 0; i < j->nfiles; i++) {
        up_file *f = &j->files[i];
        if (!f->committed) {
            rc = ST->commit(ST->self, f->tmp, f->hash);
            if (rc < 0) {
                keel_log(KEEL_LOG_ERROR, "upload: cannot store the file", "{s:s}", "error",
                         strerror(-rc));
                rc = KEEL_EIO;
                goto done;
            }
            f->committed = 1;
            f->dup = rc == 1; /* removed by the cleanup, after the answer */
        }
        keel_db_param p[] = {KEEL_DB_P_TEXT(f->id),
                             KEEL_DB_P_TEXT(j->user),
                             KEEL_DB_P_TEXT(j->avatar ? "avatar" : "file"),
                             KEEL_DB_P_TEXT(f->name),
                             KEEL_DB_P_TEXT(f->type),
                             KEEL_DB_P_INT((int64_t)f->size),
                             KEEL_DB_P_TEXT(f->hash),
                             KEEL_DB_P_INT(f->has_dims ? (int64_t)f->w : 0),
                             KEEL_DB_P_INT(f->has_dims ? (int64_t)f->h : 0),
                             KEEL_DB_P_TEXT(fields ? fields : "{}"),
                             KEEL_DB_P_INT(now)};
        rc = keel_db_exec(c,
                          "INSERT INTO files (id, owner_id, kind, name, content_type, size, "
                          "sha256, width, height, fields, created_at) VALUES "
                          "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                          p, 11, NULL);
        if (rc < 0)
            goto done;
        json_array_append_new(list, file_json(f->id, f->name, f->type, (int64_t)f->size, f->hash,
                                              f->w, f->h, now));
    }
    if (j->avatar) {
        keel_db_param p[] = {KEEL_DB_P_TEXT(j->files[0].id), KEEL_DB_P_INT(now),
                             KEEL_DB_P_TEXT(j->user)};
        if ((rc = keel_db_exec(c,
                               "UPDATE users SET avatar_file_id = $1, updated_at = $2 "
                               "WHERE id = $3",
                               p, 3, NULL)) < 0)
            goto done;
        if (*old) {
            keel_db_param h[] = {KEEL_DB_P_TEXT(old)};
            if ((rc = keel_db_query(c, "SELECT COUNT(*) FROM files WHERE sha256 = $1", h, 1,
                                    &rows)) < 0)
                goto done;
            int64_t refs = keel_db_rows_next(rows) == 1 ? keel_db_get_int(rows, 0) : 1;
            keel_db_rows_free(rows);
            if (refs == 0)
                ST->remove(ST->self, old);
        }
        char url[120];
        snprintf(url, sizeof(url), "/api/v1/users/%s/avatar", j->user);
        j->out = json_pack("{s:s,s:o}", "avatar_url", url, "file",
                           json_incref(json_array_get(list, 0)));
    } else {
        j->out = json_pack("{s:o,s:O}", "data", json_incref(list), "fields", j->fields);
    }
    rc = 0;
done:
    json_decref(list);
    free(fields);
    return rc;
}

static void committed(keel_req *r, void *arg, int status)
{
    up_job *j = arg;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    if (j->status) {
        answer_error(r, j);
        return;
    }
    if (j->avatar && !j->invalidated) {
        /* users responses carry avatar_url: drop the cached copy first */
        j->invalidated = 1;
        app_user_invalidate(r, j->user, committed, j, 0);
        return;
    }
    uint64_t bytes = 0;
    for (size_t i = 0; i < j->nfiles; i++)
        bytes += j->files[i].size;
    count(r, j->avatar, "stored", bytes);
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, j->avatar ? 200 : 201, json_incref(j->out));
}

/* ---------------------------------------------------------------- upload flow (loop) */

/* Early writeback. Every WRITEBACK_AT bytes of a file, a job on the pool
 * asks the kernel to start writing what is written so far
 * (sync_file_range, SYNC_FILE_RANGE_WRITE: no wait for the disk), so the
 * disk works while the rest of the body arrives and the fsync at the end
 * waits for the tail only (100 MiB on the bench machine: the fsync went
 * from ~92 ms to 5-50 ms, the upload from ~236 to ~140-200 ms). On a
 * pool thread of its own, not the
 * parser's: the call blocks while the device's queue is full. One in
 * flight per upload; a failure is ignored (the fsync decides). */
typedef struct wb_job {
    wb_link *link;
    int fd;
    uint64_t off, len;
} wb_job;

static void wb_work(void *arg)
{
    wb_job *w = arg;
    (void)sync_file_range(w->fd, (off64_t)w->off, (off64_t)w->len, SYNC_FILE_RANGE_WRITE);
}

static void wb_after(void *arg, int status)
{
    (void)status;
    wb_job *w = arg;
    close(w->fd);
    w->link->inflight = 0;
    wb_unref(w->link);
    keel_free(w);
}

static void start_writeback(keel_req *r, up_job *j)
{
    up_file *f = j->cur;
    if (!f || f->fd < 0 || f->direct || f->size - f->wb_off < WRITEBACK_AT ||
        (j->wb && j->wb->inflight))
        return;
    if (!j->wb) {
        j->wb = keel_calloc(1, sizeof(*j->wb));
        j->wb->refs = 1;
    }
    wb_job *w = keel_malloc(sizeof(*w));
    w->fd = dup(f->fd); /* the upload may end, and close its own, first */
    if (w->fd < 0) {
        keel_free(w);
        return;
    }
    w->link = j->wb;
    w->off = f->wb_off;
    w->len = f->size - f->wb_off;
    if (keel_worker_submit(keel_req_worker(r), wb_work, wb_after, w) < 0) {
        close(w->fd);
        keel_free(w);
        return; /* the pool is busy: the fsync does it all */
    }
    f->wb_off = f->size;
    j->wb->refs++;
    j->wb->inflight = 1;
}

static void fed(keel_req *r, void *arg, int status)
{
    up_job *j = arg;
    j->inflight = 0;
    j->wbuf.len = 0;
    if (status < 0)
        return; /* the request ended (client gone): the cleanup removes the files */
    if (j->status) {
        answer_error(r, j); /* body still unread: the connection closes after it */
        return;
    }
    if (j->finishing) {
        keel_db_job_run_tx(r, DB, db_commit, committed, j); /* answers a full queue */
        return;
    }
    if (!j->in_field)
        start_writeback(r, j);
    if (j->body_done || j->buf.len >= FLUSH_AT) {
        submit_feed(r, j);
        return;
    }
    keel_req_body_resume(r);
}

static keel_flow submit_feed(keel_req *r, up_job *j)
{
    keel_buf t = j->wbuf;
    j->wbuf = j->buf;
    j->buf = t;
    j->buf.len = 0;
    j->finishing = j->body_done;
    j->inflight = 1;
    if (keel_req_submit(r, work_feed, fed, j) < 0) {
        j->inflight = 0;
        keel_respond_unavailable(r, 1, "the work pool is busy; retry");
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

static int body_data(keel_req *r, const char *d, size_t n, void *arg)
{
    up_job *j = arg;
    keel_buf_append(&j->buf, d, n);
    if (j->buf.len >= FLUSH_AT) {
        if (!j->inflight && submit_feed(r, j) == KEEL_DONE)
            return 1;
        keel_req_body_pause(r); /* backpressure: the disk is behind */
    }
    return 0;
}

static void body_end(keel_req *r, int status, void *arg)
{
    up_job *j = arg;
    if (status == KEEL_ETOOBIG) { /* a chunked body past the maximum */
        const char *var = j->avatar ? "AVATAR_MAX_BYTES" : "UPLOAD_MAX_BODY";
        char d[160];
        snprintf(d, sizeof(d), "the body is larger than allowed (%s)", var);
        keel_respond_problem_ex(r, 413, NULL, d, json_pack("{s:s}", "limit", var));
        count(r, j->avatar, "too_large", 0);
        return;
    }
    if (status < 0) {
        count(r, j->avatar, status == KEEL_ECANCELED ? "aborted" : "malformed", 0);
        return; /* keel answers (408/400) or the client is gone */
    }
    j->body_done = 1;
    if (!j->inflight)
        submit_feed(r, j);
}

static keel_flow start_upload(keel_req *r, int avatar)
{
    const keel_principal *p = keel_req_principal(r);
    if (!p || strcmp(p->kind, "user") != 0) {
        keel_respond_problem(r, 403, "uploads belong to a user account");
        return KEEL_DONE;
    }
    keel_str boundary;
    const char *why = NULL;
    int rc = keel_multipart_boundary(keel_req_header(r, "content-type"), &boundary, &why);
    if (rc < 0) {
        keel_respond_problem(r, -rc, why);
        return KEEL_DONE;
    }
    up_job *j = KEEL_REQ_JOB(r, up_job, up_cleanup);
    j->worker = keel_req_worker(r);
    j->avatar = avatar;
    /* at their full size at once: growing by doubling would copy, and
     * leave a 1 MiB capacity behind for 576 KiB of bytes */
    j->buf.data = keel_malloc(BUF_CAP);
    j->buf.cap = BUF_CAP;
    j->wbuf.data = keel_malloc(BUF_CAP);
    j->wbuf.cap = BUF_CAP;
    snprintf(j->user, sizeof(j->user), "%s", p->id);
    j->fields = json_object();
    uint64_t max_body = avatar ? O->avatar_max_bytes + 64 * 1024 : O->max_body;
    keel_multipart_limits lim = {
        .max_body = max_body,
        .max_file_size = avatar ? O->avatar_max_bytes : O->max_file,
        .max_files = avatar ? 1 : O->max_files,
        .max_fields = O->max_fields,
        .max_parts = O->max_parts,
        .max_name = O->max_name,
        .max_field_value = O->max_value,
        .max_headers = O->max_part_headers,
        .max_header_bytes = O->max_header_bytes,
    };
    keel_multipart_cb cb = {part_begin, part_data, part_end};
    if (keel_multipart_init(&j->m, boundary, &lim, &cb, j) < 0) {
        keel_respond_problem(r, 400, "the multipart boundary is not valid");
        return KEEL_DONE;
    }
    j->m_ready = 1;
    rc = keel_req_body_stream(r, max_body, body_data, body_end, j);
    if (rc == KEEL_ETOOBIG) {
        const char *var = avatar ? "AVATAR_MAX_BYTES" : "UPLOAD_MAX_BODY";
        char d[160];
        snprintf(d, sizeof(d), "the body is larger than allowed (%s)", var);
        keel_respond_problem_ex(r, 413, NULL, d, json_pack("{s:s}", "limit", var));
        count(r, avatar, "too_large", 0);
        return KEEL_DONE;
    }
    if (rc < 0) {
        keel_respond_problem(r, 500, "the body could not be read");
        return KEEL_DONE;
    }
    return keel_req_is_finished(r) ? KEEL_DONE : KEEL_SUSPEND;
}

static keel_flow h_upload(keel_req *r)
{
    return start_upload(r, 0);
}

static keel_flow h_avatar(keel_req *r)
{
    return start_upload(r, 1);
}

/* ---------------------------------------------------------------- reading */

typedef struct get_job {
    char id[64], user[64];
    json_t *out;
    /* content */
    int fd;
    uint64_t size;
    char hash[65], type[128], name[256];
    int64_t created;
    int want_content, avatar;
    int reviewer; /* reviews:manage: any owner's file, hidden ones too */
    int64_t page, limit;
} get_job;

static void get_cleanup(void *arg)
{
    get_job *j = arg;
    if (j->fd >= 0)
        close(j->fd);
    json_decref(j->out);
}

static get_job *new_get(keel_req *r)
{
    get_job *j = KEEL_REQ_JOB(r, get_job, get_cleanup);
    j->fd = -1;
    const keel_principal *p = keel_req_principal(r);
    snprintf(j->user, sizeof(j->user), "%s", p ? p->id : "");
    j->reviewer = keel_principal_can(p, "reviews:manage");
    keel_str id = keel_req_param(r, "id");
    snprintf(j->id, sizeof(j->id), "%.*s", (int)(id.len < 63 ? id.len : 63), id.ptr);
    return j;
}

#define FILE_COLS "id, name, content_type, size, sha256, width, height, created_at"

static json_t *row_json(keel_db_rows *rows)
{
    keel_str id = keel_db_get_text(rows, 0), name = keel_db_get_text(rows, 1),
             type = keel_db_get_text(rows, 2), hash = keel_db_get_text(rows, 4);
    char ids[64], names[256], types[128], hashs[65];
    snprintf(ids, sizeof(ids), "%.*s", (int)id.len, id.ptr ? id.ptr : "");
    snprintf(names, sizeof(names), "%.*s", (int)name.len, name.ptr ? name.ptr : "");
    snprintf(types, sizeof(types), "%.*s", (int)type.len, type.ptr ? type.ptr : "");
    snprintf(hashs, sizeof(hashs), "%.*s", (int)hash.len, hash.ptr ? hash.ptr : "");
    return file_json(ids, names, types, keel_db_get_int(rows, 3), hashs,
                     keel_db_get_int(rows, 5), keel_db_get_int(rows, 6), keel_db_get_int(rows, 7));
}

static int db_get(keel_db_conn *c, void *arg)
{
    get_job *j = arg;
    keel_db_rows *rows;
    int rc;
    if (j->avatar) {
        keel_db_param p[] = {KEEL_DB_P_TEXT(j->id)};
        rc = keel_db_query(c,
                           "SELECT f.id, f.name, f.content_type, f.size, f.sha256, f.width, "
                           "f.height, f.created_at FROM users u JOIN files f ON "
                           "f.id = u.avatar_file_id WHERE u.id = $1 AND u.deleted_at IS NULL "
                           "AND f.hidden_at IS NULL",
                           p, 1, &rows);
    } else if (j->reviewer) {
        /* admins and moderators: any file, one hidden after a rejected
         * review included (docs/analytics.md, the review queue) */
        keel_db_param p[] = {KEEL_DB_P_TEXT(j->id)};
        rc = keel_db_query(c, "SELECT " FILE_COLS " FROM files WHERE id = $1", p, 1, &rows);
    } else {
        keel_db_param p[] = {KEEL_DB_P_TEXT(j->id), KEEL_DB_P_TEXT(j->user)};
        rc = keel_db_query(c,
                           "SELECT " FILE_COLS " FROM files WHERE id = $1 AND owner_id = $2 "
                           "AND kind = 'file' AND hidden_at IS NULL",
                           p, 2, &rows);
    }
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    if (rc != 1) {
        keel_db_rows_free(rows);
        return rc < 0 ? rc : KEEL_EDB_NOROW;
    }
    json_decref(j->out);
    j->out = row_json(rows);
    snprintf(j->name, sizeof(j->name), "%s", json_string_value(json_object_get(j->out, "name")));
    snprintf(j->type, sizeof(j->type), "%s",
             json_string_value(json_object_get(j->out, "content_type")));
    snprintf(j->hash, sizeof(j->hash), "%s", json_string_value(json_object_get(j->out, "sha256")));
    j->created = keel_db_get_int(rows, 7);
    keel_db_rows_free(rows);
    if (!j->want_content)
        return 0;
    if (j->fd >= 0) {
        close(j->fd);
        j->fd = -1;
    }
    rc = ST->open(ST->self, j->hash, &j->fd, &j->size);
    if (rc < 0) {
        keel_log(KEEL_LOG_ERROR, "download: stored object missing", "{s:s,s:s}", "sha256",
                 j->hash, "error", strerror(-rc));
        j->fd = -1;
        return KEEL_EIO;
    }
    return 0;
}

static void got_meta(keel_req *r, void *arg, int status)
{
    get_job *j = arg;
    if (status == KEEL_EDB_NOROW) {
        keel_respond_problem(r, 404, "no such file");
        return;
    }
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_json(r, 200, json_incref(j->out));
}

/* Headers every answer about the content carries (200, 206, 304, 412, 416). */
static void content_headers(keel_req *r, get_job *j, const char *etag, const char *lm)
{
    char cd[900];
    keel_res_set_header(r, "ETag", etag);
    keel_res_set_header(r, "Last-Modified", lm);
    keel_res_set_header(r, "Accept-Ranges", "bytes");
    keel_res_set_header(r, "X-Content-Type-Options", "nosniff");
    keel_res_set_header(r, "Cache-Control", "private, no-cache");
    app_content_disposition(j->avatar ? "inline" : "attachment", j->name, cd, sizeof(cd));
    keel_res_set_header(r, "Content-Disposition", cd);
}

static void got_content(keel_req *r, void *arg, int status)
{
    get_job *j = arg;
    if (status == KEEL_EDB_NOROW) {
        keel_respond_problem(r, 404, j->avatar ? "this user has no avatar" : "no such file");
        return;
    }
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    char etag[80], lm[30];
    snprintf(etag, sizeof(etag), "\"%s\"", j->hash); /* strong: the content's own hash */
    keel_http_date_format((time_t)j->created, lm);
    content_headers(r, j, etag, lm);
    int pre = keel_http_preconditions(keel_req_header(r, "if-match"),
                                      keel_req_header(r, "if-none-match"),
                                      keel_req_header(r, "if-modified-since"),
                                      keel_req_header(r, "if-unmodified-since"), etag,
                                      (time_t)j->created);
    if (pre == 304) {
        keel_respond(r, 304, NULL, NULL, 0);
        return;
    }
    if (pre == 412) {
        keel_respond_problem(r, 412, "the file does not match the precondition (If-Match)");
        return;
    }
    int fd = j->fd;
    uint64_t size = j->size;
    keel_str range = keel_req_header(r, "range");
    keel_byte_range rs[100];
    size_t cap = O->range_max < 100 ? (size_t)O->range_max : 100;
    int n = 0;
    if (range.ptr && keel_req_method(r) != KEEL_METHOD_HEAD &&
        keel_if_range_ok(keel_req_header(r, "if-range"), etag, (time_t)j->created))
        n = keel_range_parse(range, size, rs, cap);
    if (n == KEEL_RANGE_UNSATISFIABLE || n == KEEL_RANGE_REFUSED) {
        char cr[48];
        snprintf(cr, sizeof(cr), "bytes */%llu", (unsigned long long)size);
        keel_res_set_header(r, "Content-Range", cr);
        keel_respond_problem(r, 416,
                             n == KEEL_RANGE_REFUSED
                                 ? "overlapping ranges, or more than RANGE_MAX_RANGES ranges"
                                 : "no range overlaps the file");
        return;
    }
    j->fd = -1; /* keel_res_sendfile owns it from here */
    if (n <= 0) {
        keel_sendfile_seg seg = {NULL, 0, size};
        keel_res_sendfile(r, 200, j->type, fd, &seg, 1);
        return;
    }
    if (n == 1) {
        char cr[80];
        snprintf(cr, sizeof(cr), "bytes %llu-%llu/%llu", (unsigned long long)rs[0].first,
                 (unsigned long long)rs[0].last, (unsigned long long)size);
        keel_res_set_header(r, "Content-Range", cr);
        keel_sendfile_seg seg = {NULL, rs[0].first, rs[0].last - rs[0].first + 1};
        keel_res_sendfile(r, 206, j->type, fd, &seg, 1);
        return;
    }
    /* multipart/byteranges (RFC 9110 section 14.6) */
    char boundary[33];
    app_random_token(boundary, sizeof(boundary), 12);
    for (char *b = boundary; *b; b++)
        if (!((*b >= '0' && *b <= '9') || (*b >= 'a' && *b <= 'z') || (*b >= 'A' && *b <= 'Z')))
            *b = 'x';
    keel_arena *a = keel_req_arena(r);
    keel_sendfile_seg *segs = keel_arena_alloc(a, (size_t)(2 * n + 1) * sizeof(*segs));
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        char *h = keel_arena_alloc(a, 400);
        int hl = snprintf(h, 400,
                          "%s--%s\r\nContent-Type: %s\r\nContent-Range: bytes %llu-%llu/%llu"
                          "\r\n\r\n",
                          i ? "\r\n" : "", boundary, j->type, (unsigned long long)rs[i].first,
                          (unsigned long long)rs[i].last, (unsigned long long)size);
        segs[k++] = (keel_sendfile_seg){h, 0, (uint64_t)hl};
        segs[k++] = (keel_sendfile_seg){NULL, rs[i].first, rs[i].last - rs[i].first + 1};
    }
    char *tail = keel_arena_alloc(a, 64);
    int tl = snprintf(tail, 64, "\r\n--%s--\r\n", boundary);
    segs[k++] = (keel_sendfile_seg){tail, 0, (uint64_t)tl};
    char ct[80];
    snprintf(ct, sizeof(ct), "multipart/byteranges; boundary=%s", boundary);
    keel_res_sendfile(r, 206, ct, fd, segs, k);
}

static keel_flow h_get(keel_req *r)
{
    get_job *j = new_get(r);
    return keel_db_job_run(r, DB, db_get, got_meta, j);
}

static keel_flow h_content(keel_req *r)
{
    get_job *j = new_get(r);
    j->want_content = 1;
    return keel_db_job_run(r, DB, db_get, got_content, j);
}

static keel_flow h_avatar_get(keel_req *r)
{
    get_job *j = new_get(r);
    j->want_content = 1;
    j->avatar = 1;
    return keel_db_job_run(r, DB, db_get, got_content, j);
}

static int db_list(keel_db_conn *c, void *arg)
{
    get_job *j = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->user), KEEL_DB_P_INT(j->limit),
                         KEEL_DB_P_INT((j->page - 1) * j->limit)};
    keel_db_rows *rows;
    int rc = keel_db_query(c,
                           "SELECT COUNT(*) FROM files WHERE owner_id = $1 AND kind = 'file' "
                           "AND hidden_at IS NULL",
                           p, 1, &rows);
    if (rc < 0)
        return rc;
    int64_t total = keel_db_rows_next(rows) == 1 ? keel_db_get_int(rows, 0) : 0;
    keel_db_rows_free(rows);
    rc = keel_db_query(c,
                       "SELECT " FILE_COLS " FROM files WHERE owner_id = $1 AND kind = 'file' "
                       "AND hidden_at IS NULL ORDER BY created_at DESC, id LIMIT $2 OFFSET $3",
                       p, 3, &rows);
    if (rc < 0)
        return rc;
    json_t *data = json_array();
    while ((rc = keel_db_rows_next(rows)) == 1)
        json_array_append_new(data, row_json(rows));
    keel_db_rows_free(rows);
    if (rc < 0) {
        json_decref(data);
        return rc;
    }
    json_decref(j->out);
    j->out = json_pack("{s:o,s:I,s:I,s:I,s:I}", "data", data, "page", (json_int_t)j->page,
                       "limit", (json_int_t)j->limit, "total", (json_int_t)total, "pages",
                       (json_int_t)((total + j->limit - 1) / j->limit));
    return 0;
}

static int int_param(keel_req *r, const char *name, int64_t lo, int64_t hi, int64_t *out)
{
    keel_str v = keel_req_query_param(r, name);
    if (!v.ptr)
        return 0;
    char buf[24], *end;
    snprintf(buf, sizeof(buf), "%.*s", (int)(v.len < 20 ? v.len : 20), v.ptr);
    long long x = strtoll(buf, &end, 10);
    if (!*buf || *end || x < lo || x > hi) {
        char msg[80];
        snprintf(msg, sizeof(msg), "must be an integer from %lld to %lld", (long long)lo,
                 (long long)hi);
        char ptr[40];
        snprintf(ptr, sizeof(ptr), "/query/%s", name);
        app_invalid(r, ptr, msg);
        return -1;
    }
    *out = x;
    return 0;
}

static keel_flow h_list(keel_req *r)
{
    get_job *j = new_get(r);
    j->page = 1;
    j->limit = 20;
    if (int_param(r, "page", 1, 1000000, &j->page) < 0 ||
        int_param(r, "limit", 1, 100, &j->limit) < 0)
        return KEEL_DONE;
    return keel_db_job_run(r, DB, db_list, got_meta, j);
}

static int db_delete(keel_db_conn *c, void *arg)
{
    get_job *j = arg;
    keel_db_param p[] = {KEEL_DB_P_TEXT(j->id), KEEL_DB_P_TEXT(j->user)};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT sha256 FROM files WHERE id = $1 AND owner_id = $2 "
                              "AND kind = 'file'",
                           p, 2, &rows);
    if (rc < 0)
        return rc;
    rc = keel_db_rows_next(rows);
    if (rc == 1) {
        keel_str h = keel_db_get_text(rows, 0);
        snprintf(j->hash, sizeof(j->hash), "%.*s", (int)h.len, h.ptr ? h.ptr : "");
    }
    keel_db_rows_free(rows);
    if (rc != 1)
        return rc < 0 ? rc : KEEL_EDB_NOROW;
    if ((rc = keel_db_exec(c, "DELETE FROM files WHERE id = $1 AND owner_id = $2", p, 2, NULL)) <
        0)
        return rc;
    keel_db_param h[] = {KEEL_DB_P_TEXT(j->hash)};
    if ((rc = keel_db_query(c, "SELECT COUNT(*) FROM files WHERE sha256 = $1", h, 1, &rows)) < 0)
        return rc;
    int64_t refs = keel_db_rows_next(rows) == 1 ? keel_db_get_int(rows, 0) : 1;
    keel_db_rows_free(rows);
    if (refs == 0)
        ST->remove(ST->self, j->hash); /* the last reference to these bytes */
    return 0;
}

static void deleted(keel_req *r, void *arg, int status)
{
    (void)arg;
    if (status == KEEL_EDB_NOROW)
        keel_respond_problem(r, 404, "no such file");
    else if (status < 0)
        keel_db_respond_error(r, status);
    else
        keel_respond(r, 204, NULL, NULL, 0);
}

static keel_flow h_delete(keel_req *r)
{
    get_job *j = new_get(r);
    return keel_db_job_run_tx(r, DB, db_delete, deleted, j);
}

/* ---------------------------------------------------------------- routes */

static const keel_route file_routes[] = {
    {.name = "files.upload", .method = "POST", .path = "/api/v1/files", .handler = h_upload,
     .summary = "Upload one or more files (multipart/form-data, streamed)", .auth = "user",
     .flags = KEEL_ROUTE_STREAM_BODY, .timeout_ms = 60000},
    {.name = "files.list", .method = "GET", .path = "/api/v1/files", .handler = h_list,
     .summary = "One's own files, newest first (?page, ?limit)", .auth = "user"},
    {.name = "files.get", .method = "GET", .path = "/api/v1/files/:id", .handler = h_get,
     .summary = "A file's metadata", .auth = "user"},
    {.name = "files.content", .method = "GET", .path = "/api/v1/files/:id/content",
     .handler = h_content,
     .summary = "A file's bytes (sendfile; ETag, Range, If-None-Match, If-Range)",
     .auth = "user"},
    {.name = "files.delete", .method = "DELETE", .path = "/api/v1/files/:id",
     .handler = h_delete, .summary = "Delete one of one's files", .auth = "user"},
    {.name = "auth.avatar", .method = "PUT", .path = "/api/v1/auth/me/avatar",
     .handler = h_avatar,
     .summary = "Set one's avatar (multipart, one PNG/JPEG/GIF/WebP image)", .auth = "user",
     .flags = KEEL_ROUTE_STREAM_BODY, .timeout_ms = 60000},
    {.name = "users.avatar", .method = "GET", .path = "/api/v1/users/:id/avatar",
     .handler = h_avatar_get, .summary = "A user's avatar image", .auth = "user"},
};

int app_files_setup(keel_service *svc)
{
    O = keel_config_get(keel_service_config(svc), &app_uploads_config);
    DB = keel_service_db(svc);
    ST = app_storage_local_new(O->dir);
    if (!ST)
        return -1;
    keel_metrics *m = keel_service_metrics(svc);
    static const char *const labels[] = {"kind", "result", NULL};
    static const char *const blabels[] = {"kind", "result", NULL};
    M_UPLOADS = keel_metrics_counter(m, "keel_uploads_total",
                                     "Uploads by kind (file, avatar) and result", labels);
    M_BYTES = keel_metrics_counter(m, "keel_upload_bytes_total",
                                   "Bytes of files stored by uploads", blabels);
    return keel_service_add_routes(svc, file_routes, sizeof(file_routes) / sizeof(file_routes[0]));
}
