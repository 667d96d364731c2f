/* demo.c — the benchmark routes (../shared/bench endpoint contract: /hello,
 * /json, /echo, /auth/me) and
 * routes to exercise suspension: /slow waits on a loop timer, /work blocks
 * a work-pool thread, /db/slow holds a pool connection, /db/sleep one
 * asynchronous statement. Off in
 * production unless ENABLE_DEMO_ROUTES. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "app/app.h"

static keel_flow hello(keel_req *r)
{
    keel_respond(r, 200, "text/plain", "ok", 2);
    return KEEL_DONE;
}

static keel_flow json_hello(keel_req *r)
{
    static const char body[] = "{\"message\":\"Hello, World!\"}";
    keel_respond(r, 200, "application/json", body, sizeof(body) - 1);
    return KEEL_DONE;
}

/* POST /echo: the JSON body parsed and written back. */
static keel_flow echo(keel_req *r)
{
    json_t *v = app_json_body(r);
    if (!v)
        return KEEL_DONE; /* app_json_body answered 415 / 400 */
    keel_respond_json(r, 200, json_incref(v)); /* borrowed: the request owns v */
    return KEEL_DONE;
}

/* GET /auth/me: the benchmark's token (HS256 with BENCH_JWT_SECRET; sub,
 * name and iat, no exp) checked by keel's verifier — the same header
 * checks and constant-time MAC check as access tokens, with only the
 * benchmark's claim rules: no claim required, iat (and exp, nbf, when
 * present) checked against the clock. Answers the claims. Not an account
 * route: the accounts' GET /api/v1/auth/me takes access tokens. */
static keel_jwt_cfg bench_jwt;

static void bench_unauthorized(keel_req *r, const char *detail)
{
    keel_res_set_header(r, "WWW-Authenticate", "Bearer realm=\"keel-bench\"");
    keel_res_set_header(r, "Cache-Control", "no-store");
    keel_respond_problem(r, 401, detail);
}

static keel_flow bench_auth_me(keel_req *r)
{
    const keel_jwt_cfg *cfg = keel_req_route(r)->data;
    keel_str h = keel_req_header(r, "authorization");
    if (!h.ptr || h.len < 7 || strncasecmp(h.ptr, "Bearer ", 7) != 0) {
        bench_unauthorized(r, "expected Authorization: Bearer <token>");
        return KEEL_DONE;
    }
    keel_str t = {h.ptr + 7, h.len - 7};
    while (t.len && *t.ptr == ' ') {
        t.ptr++;
        t.len--;
    }
    json_t *claims = NULL;
    keel_jwt_claims c;
    keel_jwt_verify_opts opts = {.require = 0, .payload = &claims};
    keel_jwt_error e = keel_jwt_verify_ex(cfg, &opts, t.ptr, t.len, (int64_t)time(NULL), &c);
    if (e) {
        bench_unauthorized(r, keel_jwt_strerror(e));
        return KEEL_DONE;
    }
    keel_respond_json(r, 200, claims); /* takes the reference */
    return KEEL_DONE;
}

/* POST /validate: a body checked against its request_schema by the
 * validation middleware before this runs; answers what it received. The
 * body was parsed once, by the middleware: keel_req_json returns it again
 * (borrowed: "O" takes a reference of the response's own). */
static keel_flow validate_body(keel_req *r)
{
    json_t *v = keel_req_json(r);
    if (!v)
        return KEEL_DONE;
    keel_respond_json(r, 200, json_pack("{s:b,s:O}", "valid", 1, "received", v));
    return KEEL_DONE;
}

/* GET /params/:id: the path and query parameters, coerced to the types
 * the route's schemas declare. */
static keel_flow params_echo(keel_req *r)
{
    keel_respond_json(r, 200, json_pack("{s:O,s:O}", "path", keel_req_params_json(r), "query",
                                        keel_req_query_json(r)));
    return KEEL_DONE;
}

static const char validate_schema[] =
    "{\"type\": \"object\","
    " \"required\": [\"name\", \"email\"],"
    " \"additionalProperties\": false,"
    " \"properties\": {"
    "   \"name\": {\"type\": \"string\", \"minLength\": 1, \"maxLength\": 64},"
    "   \"email\": {\"type\": \"string\", \"format\": \"email\"},"
    "   \"age\": {\"type\": \"integer\", \"minimum\": 0, \"maximum\": 150},"
    "   \"role\": {\"enum\": [\"user\", \"admin\"]},"
    "   \"id\": {\"type\": \"string\", \"format\": \"uuid\"},"
    "   \"website\": {\"type\": \"string\", \"format\": \"uri\"},"
    "   \"born\": {\"type\": \"string\", \"format\": \"date-time\"},"
    "   \"tags\": {\"type\": \"array\", \"maxItems\": 5,"
    "             \"items\": {\"type\": \"string\", \"pattern\": \"^[a-z0-9-]{1,20}$\"}},"
    "   \"address\": {\"type\": \"object\", \"required\": [\"city\"],"
    "               \"properties\": {\"city\": {\"type\": \"string\"},"
    "                              \"zip\": {\"type\": [\"string\", \"null\"],"
    "                                        \"pattern\": \"^[0-9]{5}$\"}}}"
    " }}";

static const char validate_response_schema[] =
    "{\"type\": \"object\", \"required\": [\"valid\", \"received\"],"
    " \"properties\": {\"valid\": {\"const\": true}, \"received\": {\"type\": \"object\"}}}";

static const char params_path_schema[] =
    "{\"type\": \"object\", \"properties\": {"
    "  \"id\": {\"type\": \"integer\", \"minimum\": 1, \"description\": \"a positive id\"}}}";

static const char params_query_schema[] =
    "{\"type\": \"object\", \"additionalProperties\": false, \"properties\": {"
    "  \"limit\": {\"type\": \"integer\", \"minimum\": 1, \"maximum\": 100,"
    "              \"description\": \"page size\"},"
    "  \"ratio\": {\"type\": \"number\", \"exclusiveMinimum\": 0},"
    "  \"verbose\": {\"type\": \"boolean\"},"
    "  \"q\": {\"type\": \"string\", \"maxLength\": 32},"
    "  \"tag\": {\"type\": \"array\", \"maxItems\": 3, \"items\": {\"enum\": [\"a\", \"b\", \"c\"]}}}}";

static uint64_t ms_param_named(keel_req *r, const char *name, uint64_t def, uint64_t max)
{
    keel_str s = keel_req_query_param(r, name);
    if (!s.ptr)
        return def;
    /* digits only: strtoull would take "-5" as 2^64 - 5 (then the max) */
    if (s.len == 0 || s.ptr[0] < '0' || s.ptr[0] > '9')
        return def;
    char *end;
    unsigned long long v = strtoull(s.ptr, &end, 10);
    if (*end)
        return def;
    return v > max ? max : v;
}

static uint64_t ms_param(keel_req *r, uint64_t def, uint64_t max)
{
    return ms_param_named(r, "ms", def, max);
}

typedef struct slow_ctx {
    uv_timer_t timer;
    keel_req *req;
} slow_ctx;

static void slow_closed(uv_handle_t *h)
{
    keel_free(h->data);
}

static void slow_fire(uv_timer_t *t)
{
    slow_ctx *c = t->data;
    keel_req_resume_respond_text(c->req, 200, "done");
    uv_close((uv_handle_t *)t, slow_closed);
}

/* GET /slow?ms=N: answers after N ms without blocking the loop. */
static keel_flow slow(keel_req *r)
{
    slow_ctx *c = keel_malloc(sizeof(*c));
    c->req = r;
    keel_req_hold(r);
    uv_timer_init(keel_worker_loop(keel_req_worker(r)), &c->timer);
    c->timer.data = c;
    uv_timer_start(&c->timer, slow_fire, ms_param(r, 100, 60000), 0);
    return KEEL_SUSPEND;
}

static void work_sleep(void *arg)
{
    usleep((useconds_t)((uint64_t)(uintptr_t)arg * 1000));
}

static void work_done(keel_req *r, void *arg, int status)
{
    (void)arg;
    if (status == 0)
        keel_respond_text(r, 200, "done");
}

/* GET /work?ms=N: N ms of blocking work on the pool. */
static keel_flow work(keel_req *r)
{
    uint64_t ms = ms_param(r, 100, 60000);
    if (keel_req_submit(r, work_sleep, work_done, (void *)(uintptr_t)ms) < 0) {
        keel_respond_unavailable(r, 1, "the work queue is full");
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

/* GET /block?ms=N: blocks its own event loop for N ms — what a handler
 * must never do; here to show load shedding (SHED_LOOP_LAG) at work. */
static keel_flow block(keel_req *r)
{
    uint64_t ms = ms_param(r, 100, 5000);
    usleep((useconds_t)(ms * 1000));
    keel_respond_text(r, 200, "blocked");
    return KEEL_DONE;
}

/* GET /stream?kb=N: N KiB streamed in 64 KiB chunks, chunked coding,
 * honouring backpressure (keel_res_write says KEEL_EBUSY over the cap). */
typedef struct stream_ctx {
    uint64_t left;
} stream_ctx;

static void stream_more(keel_req *r, void *arg)
{
    static char chunk[65536];
    stream_ctx *s = arg;
    if (!chunk[0])
        memset(chunk, 'k', sizeof(chunk));
    while (s->left) {
        size_t n = s->left < sizeof(chunk) ? (size_t)s->left : sizeof(chunk);
        int rc = keel_res_write(r, chunk, n);
        if (rc == KEEL_EBUSY) {
            keel_res_on_drain(r, stream_more, s);
            return;
        }
        if (rc < 0)
            break; /* the client went away */
        s->left -= n;
    }
    keel_res_stream_end(r);
    keel_req_unhold(r);
}

static keel_flow stream(keel_req *r)
{
    stream_ctx *s = keel_arena_alloc(keel_req_arena(r), sizeof(*s));
    s->left = ms_param_named(r, "kb", 64, 1 << 20) * 1024;
    keel_req_hold(r);
    keel_res_stream_begin(r, 200, "application/octet-stream");
    stream_more(r, s);
    return KEEL_SUSPEND;
}

/* GET /bytes?kb=N: one response of N KiB (for slow-reader tests). */
static keel_flow bytes(keel_req *r)
{
    size_t n = (size_t)ms_param_named(r, "kb", 1, 64 * 1024) * 1024;
    char *body = keel_arena_alloc(keel_req_arena(r), n ? n : 1);
    memset(body, 'b', n);
    keel_respond(r, 200, "application/octet-stream", body, n);
    return KEEL_DONE;
}

/* GET /db?id=N: one indexed SELECT from the seeded 10,000-row `items`
 * table (migration 0001), JSON out — the bench's "single query". One
 * statement: keel_db_query_async (on this loop with PostgreSQL, on the
 * pool with SQLite). */
static void db_fetched(keel_req *r, void *arg, int status, keel_db_rows *rows)
{
    (void)arg;
    if (status == KEEL_ECANCELED)
        return;
    if (status < 0) {
        keel_db_respond_error(r, status);
        return;
    }
    int rc = keel_db_rows_next(rows);
    if (rc == 1)
        keel_respond_json(r, 200, keel_db_row_json(rows));
    else
        keel_db_respond_error(r, rc < 0 ? rc : KEEL_EDB_NOROW);
}

static keel_flow db_one(keel_req *r)
{
    keel_db *db = keel_req_route(r)->data ? *(keel_db **)keel_req_route(r)->data : NULL;
    keel_str s = keel_req_query_param(r, "id");
    char *end = NULL;
    errno = 0;
    long long id = s.ptr && s.len ? strtoll(s.ptr, &end, 10) : 0;
    if (!s.ptr || !s.len || *end || errno == ERANGE || id < 1) {
        keel_respond_problem(r, 400, "id must be a positive integer");
        return KEEL_DONE;
    }
    if (!db) {
        keel_respond_unavailable(r, 1, "no database configured");
        return KEEL_DONE;
    }
    keel_db_param p = KEEL_DB_P_INT(id);
    int rc = keel_db_query_async(r, db, "SELECT id, name, price_cents FROM items WHERE id = $1",
                                 &p, 1, db_fetched, NULL);
    if (rc < 0) {
        keel_db_respond_error(r, rc); /* KEEL_EBUSY: 503 + Retry-After */
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

/* GET /db/slow?ms=N: holds a pool connection for about N ms inside the
 * database — for statement-timeout and pool-exhaustion tests. PostgreSQL
 * sleeps (pg_sleep); SQLite has no sleep in SQL, so a recursive CTE counts
 * long enough: short counts first measure this machine's rate (the best of
 * three, so one preemption does not skew it), then one statement counts
 * for about N ms — long enough for the statement-timeout progress handler
 * to interrupt it like any long query — and, should it have been quicker
 * than N ms (long counts run a little slower than short ones, or faster),
 * shorter counts make up the rest. */
#define SLOW_CALIBRATE_ROWS 20000
static const char slow_count_sql[] =
    "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $1) "
    "SELECT count(*) FROM s";

typedef struct db_slow_job {
    uint64_t ms;
    int postgres;
} db_slow_job;

static int sqlite_count(keel_db_conn *c, double rows)
{
    if (rows < 1)
        rows = 1;
    if (rows > 9e15)
        rows = 9e15;
    keel_db_param p = KEEL_DB_P_INT((int64_t)rows);
    return keel_db_exec(c, slow_count_sql, &p, 1, NULL);
}

static int sqlite_busy(keel_db_conn *c, uint64_t ms)
{
    uint64_t start = keel_now_ns(), best = UINT64_MAX;
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = keel_now_ns();
        int rc = sqlite_count(c, SLOW_CALIBRATE_ROWS);
        if (rc < 0)
            return rc;
        uint64_t dt = keel_now_ns() - t0;
        if (dt < best)
            best = dt ? dt : 1;
    }
    double rows_per_ms = (double)SLOW_CALIBRATE_ROWS * 1e6 / (double)best;
    uint64_t want_ns = ms * 1000000u;
    int rc = sqlite_count(c, rows_per_ms * (double)ms);
    for (uint64_t spent; rc == 0 && (spent = keel_now_ns() - start) < want_ns;)
        rc = sqlite_count(c, rows_per_ms * (double)(want_ns - spent) / 1e6 + 1);
    return rc;
}

static int db_slow_run(keel_db_conn *c, void *arg)
{
    db_slow_job *j = arg;
    if (!j->postgres)
        return sqlite_busy(c, j->ms);
    keel_db_param p = KEEL_DB_P_DOUBLE((double)j->ms / 1000.0);
    return keel_db_exec(c, "SELECT pg_sleep($1)", &p, 1, NULL);
}

static void db_slow_done(keel_req *r, void *arg, int status)
{
    (void)arg;
    if (status == 0)
        keel_respond_text(r, 200, "done");
    else if (status != KEEL_ECANCELED)
        keel_db_respond_error(r, status);
}

static keel_flow db_slow(keel_req *r)
{
    keel_db *db = keel_req_route(r)->data ? *(keel_db **)keel_req_route(r)->data : NULL;
    if (!db) {
        keel_respond_unavailable(r, 1, "no database configured");
        return KEEL_DONE;
    }
    db_slow_job *j = keel_arena_alloc(keel_req_arena(r), sizeof(*j));
    j->ms = ms_param(r, 100, 60000);
    j->postgres = strcmp(keel_db_driver(db), "postgres") == 0;
    if (keel_db_run(r, db, db_slow_run, db_slow_done, j) < 0) {
        keel_respond_unavailable(r, 1, "the database queue is full");
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

/* GET /db/sleep?ms=N: one statement that keeps the database busy for
 * about N ms, through keel_db_query_async (on this loop with PostgreSQL:
 * pg_sleep; SQLite, on the pool: a recursive count sized by a fixed rate,
 * so only roughly N ms) — for statement-timeout, queue-limit and
 * cancellation tests of the asynchronous path. */
#define SLEEP_SQLITE_ROWS_PER_MS 4000

static void db_slept(keel_req *r, void *arg, int status, keel_db_rows *rows)
{
    (void)arg;
    (void)rows;
    if (status == 0)
        keel_respond_text(r, 200, "done");
    else if (status != KEEL_ECANCELED)
        keel_db_respond_error(r, status);
}

static keel_flow db_sleep(keel_req *r)
{
    keel_db *db = keel_req_route(r)->data ? *(keel_db **)keel_req_route(r)->data : NULL;
    if (!db) {
        keel_respond_unavailable(r, 1, "no database configured");
        return KEEL_DONE;
    }
    uint64_t ms = ms_param(r, 100, 60000);
    int rc;
    if (strcmp(keel_db_driver(db), "postgres") == 0) {
        keel_db_param p = KEEL_DB_P_DOUBLE((double)ms / 1000.0);
        rc = keel_db_query_async(r, db, "SELECT pg_sleep($1)", &p, 1, db_slept, NULL);
    } else {
        keel_db_param p = KEEL_DB_P_INT((int64_t)(ms ? ms : 1) * SLEEP_SQLITE_ROWS_PER_MS);
        rc = keel_db_query_async(r, db, slow_count_sql, &p, 1, db_slept, NULL);
    }
    if (rc < 0) {
        keel_db_respond_error(r, rc); /* KEEL_EBUSY: 503 + Retry-After */
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

static keel_db *demo_db;

/* GET /ws/echo: every text and binary message straight back (conformance
 * tests, benchmarks). */
static void ws_echo(keel_ws *ws, keel_ws_opcode op, const void *data, size_t len)
{
    keel_ws_send(ws, op, data, len); /* text arrived checked: no second check */
}

static const keel_ws_handler ws_echo_handler = {.on_message = ws_echo};

static const keel_route demo_routes[] = {
    {.name = "demo.hello", .method = "GET", .path = "/hello", .handler = hello,
     .summary = "Plain-text ok (benchmark)"},
    {.name = "demo.json", .method = "GET", .path = "/json", .handler = json_hello,
     .summary = "A fixed JSON object (benchmark)"},
    {.name = "demo.echo", .method = "POST", .path = "/echo", .handler = echo,
     .summary = "The JSON body, parsed and written back (benchmark)"},
    {.name = "demo.auth_me", .method = "GET", .path = "/auth/me", .handler = bench_auth_me,
     .summary = "The claims of the benchmark's HS256 token (BENCH_JWT_SECRET; benchmark)",
     .data = &bench_jwt},
    {.name = "demo.validate", .method = "POST", .path = "/validate", .handler = validate_body,
     .summary = "Accepts a body valid against its schema and answers what it received",
     .request_schema = validate_schema, .response_schema = validate_response_schema},
    {.name = "demo.params", .method = "GET", .path = "/params/:id", .handler = params_echo,
     .summary = "Answers its path and query parameters, coerced to their declared types",
     .params_schema = params_path_schema, .query_schema = params_query_schema},
    {.name = "demo.slow", .method = "GET", .path = "/slow", .handler = slow,
     .summary = "Answers after ?ms=N milliseconds without blocking"},
    {.name = "demo.work", .method = "GET", .path = "/work", .handler = work,
     .summary = "Blocks a work-pool thread for ?ms=N milliseconds"},
    {.name = "demo.block", .method = "GET", .path = "/block", .handler = block,
     .summary = "Blocks its event loop for ?ms=N milliseconds (shows load shedding)"},
    {.name = "demo.stream", .method = "GET", .path = "/stream", .handler = stream,
     .summary = "Streams ?kb=N KiB with chunked coding and backpressure"},
    {.name = "demo.bytes", .method = "GET", .path = "/bytes", .handler = bytes,
     .summary = "One response of ?kb=N KiB"},
    {.name = "demo.db", .method = "GET", .path = "/db", .handler = db_one,
     .summary = "One indexed SELECT by ?id=N from the seeded items table (benchmark)",
     .data = &demo_db},
    {.name = "demo.db_slow", .method = "GET", .path = "/db/slow", .handler = db_slow,
     .summary = "Holds a database connection for ?ms=N milliseconds inside the database",
     .data = &demo_db},
    {.name = "demo.db_sleep", .method = "GET", .path = "/db/sleep", .handler = db_sleep,
     .summary = "One statement of about ?ms=N milliseconds, without a pool thread",
     .data = &demo_db},
    {.name = "demo.ws_echo", .method = "GET", .path = "/ws/echo",
     .summary = "WebSocket: echoes every text and binary message (benchmark)",
     .websocket = &ws_echo_handler},
};

int app_demo_setup(keel_service *svc)
{
    demo_db = keel_service_db(svc);
    const char *secret = app_options_of(svc)->bench_jwt_secret;
    /* the string belongs to the service's configuration, which outlives
     * the routes; no issuer or audience: a token naming one is refused */
    bench_jwt = (keel_jwt_cfg){.secret = (const uint8_t *)(secret ? secret : ""),
                               .secret_len = secret ? strlen(secret) : 0,
                               .leeway_s = 30};
    return keel_service_add_routes(svc, demo_routes,
                                   sizeof(demo_routes) / sizeof(demo_routes[0]));
}
