/* password.c — argon2id hashes (libsodium) and the password policy:
 * length MIN..1024 bytes and not one of the most common passwords; the
 * hashing optionally in a child process (keel_password_isolate). */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "keel/auth.h"
#include "keel/log.h"

#define PW_MAX KEEL_PASSWORD_MAX

static int hash_here(const char *pw, size_t len, uint64_t ops, uint64_t mem,
                     char out[KEEL_PW_HASH_MAX])
{
    keel_library_init();
    if (crypto_pwhash_str_alg(out, pw, len, ops, (size_t)mem, crypto_pwhash_ALG_ARGON2ID13) != 0)
        return KEEL_ENOMEM;
    return 0;
}

static int verify_here(const char *hash, const char *pw, size_t len)
{
    keel_library_init();
    return hash && crypto_pwhash_str_verify(hash, pw, len) == 0;
}

/* ---------------------------------------------------------------- the hasher process
 *
 * One socketpair per child thread; a caller takes a free one, writes a
 * request, reads the answer (blocking: callers are work-pool threads).
 *
 *   request: hdr, then pwlen bytes of password, then hashlen bytes of hash
 *   answer:  int32 result (hash: 0 or KEEL_E*; verify: 1/0), uint32 n,
 *            then n bytes (the new hash string, NUL included)
 */
typedef struct hreq {
    uint32_t op; /* 1 hash, 2 verify */
    uint32_t pwlen, hashlen;
    uint32_t pad;
    uint64_t ops, mem;
} hreq;

typedef struct hans {
    int32_t result;
    uint32_t n;
} hans;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int *fds;       /* parent ends */
    int *busy;
    unsigned n;
    int live;       /* 0: hash in process */
    pid_t child;
} H = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static int full_io(int fd, void *buf, size_t n, int wr)
{
    char *p = buf;
    while (n) {
        ssize_t k = wr ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* A child thread: answers requests on its socket until the parent closes it. */
static void *child_serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *pw = malloc(PW_MAX + 1), hash[KEEL_PW_HASH_MAX];
    for (;;) {
        hreq q;
        if (!pw || full_io(fd, &q, sizeof(q), 0) < 0 || q.pwlen > PW_MAX ||
            q.hashlen >= sizeof(hash) || full_io(fd, pw, q.pwlen, 0) < 0 ||
            full_io(fd, hash, q.hashlen, 0) < 0)
            break;
        hash[q.hashlen] = 0;
        hans a = {0, 0};
        char out[KEEL_PW_HASH_MAX] = "";
        if (q.op == 1) {
            a.result = hash_here(pw, q.pwlen, q.ops, q.mem, out);
            a.n = a.result == 0 ? (uint32_t)strlen(out) + 1 : 0;
        } else {
            a.result = verify_here(hash, pw, q.pwlen);
        }
        sodium_memzero(pw, q.pwlen);
        if (full_io(fd, &a, sizeof(a), 1) < 0 || (a.n && full_io(fd, out, a.n, 1) < 0))
            break;
    }
    free(pw);
    close(fd);
    return NULL;
}

static void child_main(int *fds, unsigned n, unsigned nice_steps, pid_t parent)
{
    /* ends with the parent, never by the signals meant for it (a SIGTERM
     * to the process group must not cut the logins of a draining server) */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(0);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_NAME, "keel-hasher");
    if (nice_steps)
        (void)setpriority(PRIO_PROCESS, 0, getpriority(PRIO_PROCESS, 0) + (int)nice_steps);
    pthread_t *t = calloc(n, sizeof(*t));
    for (unsigned i = 0; t && i < n; i++)
        if (pthread_create(&t[i], NULL, child_serve, (void *)(intptr_t)fds[i]) != 0)
            _exit(1);
    for (unsigned i = 0; t && i < n; i++)
        pthread_join(t[i], NULL);
    _exit(0);
}

static int one_thread(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n == 1;
}

int keel_password_isolate(unsigned threads, unsigned nice_steps)
{
    if (H.live)
        return KEEL_EALREADY;
    if (!threads || !one_thread())
        return KEEL_EINVAL;
    keel_library_init();
    int *mine = calloc(threads, sizeof(int)), *theirs = calloc(threads, sizeof(int));
    unsigned made = 0;
    for (; mine && theirs && made < threads; made++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
            break;
        mine[made] = sv[0];
        theirs[made] = sv[1];
    }
    pid_t parent = getpid(), pid = made == threads ? fork() : -1;
    if (pid == 0) {
        for (unsigned i = 0; i < threads; i++)
            close(mine[i]);
        child_main(theirs, threads, nice_steps, parent);
    }
    for (unsigned i = 0; i < made; i++) {
        close(theirs ? theirs[i] : -1);
        if (pid < 0)
            close(mine[i]);
    }
    free(theirs);
    if (pid < 0) {
        free(mine);
        return KEEL_EIO;
    }
    H.fds = mine;
    H.busy = calloc(threads, sizeof(int));
    H.n = threads;
    H.child = pid;
    H.live = 1;
    return 0;
}

/* Takes a free socket to the child (waits for one); -1 when there is no child. */
static int take(void)
{
    pthread_mutex_lock(&H.mu);
    for (;;) {
        if (!H.live) {
            pthread_mutex_unlock(&H.mu);
            return -1;
        }
        for (unsigned i = 0; i < H.n; i++)
            if (!H.busy[i]) {
                H.busy[i] = 1;
                pthread_mutex_unlock(&H.mu);
                return (int)i;
            }
        pthread_cond_wait(&H.cv, &H.mu);
    }
}

static void give(int i, int failed)
{
    pthread_mutex_lock(&H.mu);
    H.busy[i] = 0;
    if (failed && H.live) {
        /* the child is gone (or lost track of a request): hash here from
         * now on; the sockets stay open until the process ends */
        H.live = 0;
        (void)waitpid(H.child, NULL, WNOHANG);
        keel_log(KEEL_LOG_ERROR, "the password hasher process stopped: hashing in process",
                 NULL);
    }
    pthread_cond_broadcast(&H.cv);
    pthread_mutex_unlock(&H.mu);
}

/* 1 when the child answered (*a and out filled), 0 when it could not. */
static int ask(uint32_t op, const char *pw, size_t len, const char *hash, uint64_t ops,
               uint64_t mem, hans *a, char *out)
{
    if (len > PW_MAX)
        return 0;
    int i = take();
    if (i < 0)
        return 0;
    int fd = H.fds[i];
    size_t hl = hash ? strlen(hash) : 0;
    hreq q = {op, (uint32_t)len, (uint32_t)hl, 0, ops, mem};
    int bad = hl >= KEEL_PW_HASH_MAX || full_io(fd, &q, sizeof(q), 1) < 0 ||
              full_io(fd, (void *)pw, len, 1) < 0 || full_io(fd, (void *)hash, hl, 1) < 0 ||
              full_io(fd, a, sizeof(*a), 0) < 0 || a->n > KEEL_PW_HASH_MAX ||
              (a->n && full_io(fd, out, a->n, 0) < 0);
    give(i, bad && hl < KEEL_PW_HASH_MAX);
    return !bad;
}

int keel_password_hash(const char *pw, size_t len, uint64_t ops, uint64_t mem,
                       char out[KEEL_PW_HASH_MAX])
{
    hans a;
    if (H.live && ask(1, pw, len, NULL, ops, mem, &a, out)) {
        if (a.result == 0 && (a.n == 0 || out[a.n - 1] != 0))
            return KEEL_EIO;
        return a.result;
    }
    return hash_here(pw, len, ops, mem, out);
}

int keel_password_verify(const char *hash, const char *pw, size_t len)
{
    hans a;
    char none[KEEL_PW_HASH_MAX];
    if (hash && H.live && ask(2, pw, len, hash, 0, 0, &a, none))
        return a.result == 1;
    return verify_here(hash, pw, len);
}

int keel_password_needs_rehash(const char *hash, uint64_t ops, uint64_t mem)
{
    return crypto_pwhash_str_needs_rehash(hash, ops, (size_t)mem) != 0;
}

/* The most common passwords of the public breach lists that satisfy an
 * 8-character minimum (compared case-insensitively). */
static const char *const common[] = {
    "password", "password1", "password12", "password123", "password!", "passw0rd",
    "p@ssw0rd", "p@ssword", "12345678", "123456789", "1234567890", "12345678910",
    "87654321", "11111111", "00000000", "88888888", "qwertyui", "qwerty123",
    "qwertyuiop", "1qaz2wsx", "1q2w3e4r", "1q2w3e4r5t", "zaq12wsx", "asdfghjk",
    "asdfasdf", "iloveyou", "iloveyou1", "sunshine", "princess", "football",
    "baseball", "welcome1", "welcome123", "letmein1", "superman", "trustno1",
    "starwars", "whatever", "computer", "michelle", "jennifer", "corvette",
    "mercedes", "liverpool", "chelsea1", "arsenal1", "abcd1234", "abc12345",
    "abcdefgh", "aa123456", "admin123", "administrator", "changeme", "letmein!",
    "monkey12", "dragon12", "master12", "shadow12", "pokemon1", "samsung1",
    "q1w2e3r4", "q1w2e3r4t5", "123qweasd", "qweasdzxc", "1234qwer", "zxcvbnm1",
    "secret123", "default1", "test1234", "testtest", "guest123", "google123",
    NULL};

const char *keel_password_weakness(const char *pw, size_t len, size_t min)
{
    if (len < min)
        return "the password is too short";
    if (len > PW_MAX)
        return "the password is too long (at most 1024 bytes)";
    for (size_t i = 0; common[i]; i++)
        if (strlen(common[i]) == len && strncasecmp(common[i], pw, len) == 0)
            return "the password is one of the most common passwords";
    return NULL;
}
