/* rate_limit.c — GCRA, the tiers of the configuration and the limiter
 * middleware (see keel/ratelimit.h and docs/rate-limiting.md). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "keel/log.h"
#include "keel/ratelimit.h"

/* ---------------------------------------------------------------- GCRA */

void keel_gcra(uint64_t *tat_us, uint64_t now_us, const keel_rl_rate *rate,
               keel_rl_result *out)
{
    memset(out, 0, sizeof(*out));
    out->limit = rate->limit;
    if (rate->limit == 0) {
        out->allowed = 1;
        return;
    }
    uint64_t window = rate->window_ms * 1000;
    uint64_t t = window / rate->limit; /* emission interval */
    if (t == 0)
        t = 1;
    uint64_t tat = *tat_us > now_us ? *tat_us : now_us;
    uint64_t next = tat + t;
    if (next - now_us <= window) {
        *tat_us = next;
        out->allowed = 1;
        out->remaining = (window - (next - now_us)) / t;
        out->reset_ms = (next - now_us + 999) / 1000;
    } else {
        out->allowed = 0;
        out->remaining = 0;
        out->reset_ms = (tat - now_us + 999) / 1000;
        out->retry_after_ms = (next - window - now_us + 999) / 1000;
    }
}

/* ---------------------------------------------------------------- tiers */

int keel_rl_parse_rate(const char *s, keel_rl_rate *out)
{
    memset(out, 0, sizeof(*out));
    if (!s || !*s || !strcmp(s, "0"))
        return 0;
    const char *slash = strchr(s, '/');
    if (!slash || slash == s)
        return KEEL_EINVAL;
    uint64_t n = 0;
    for (const char *p = s; p < slash; p++) {
        if (*p < '0' || *p > '9' || n > UINT64_MAX / 10 - 10)
            return KEEL_EINVAL;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    uint64_t w;
    if (keel_parse_duration_ms(slash + 1, &w) < 0 || w == 0 || w > UINT64_MAX / 1000)
        return KEEL_EINVAL;
    out->limit = n;
    out->window_ms = w;
    return 0;
}

static int add_tier(keel_rl_tier *out, size_t cap, size_t *n, const char *name, size_t nlen,
                    const keel_rl_rate *rate)
{
    if (nlen == 0 || nlen >= KEEL_RL_TIER_NAME_MAX || *n >= cap)
        return KEEL_EINVAL;
    for (size_t i = 0; i < nlen; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return KEEL_EINVAL;
    }
    for (size_t i = 0; i < *n; i++)
        if (strlen(out[i].name) == nlen && !memcmp(out[i].name, name, nlen))
            return KEEL_EINVAL; /* a custom tier may not redefine a built-in */
    if (nlen == 4 && !memcmp(name, "none", 4))
        return KEEL_EINVAL;
    memcpy(out[*n].name, name, nlen);
    out[*n].name[nlen] = '\0';
    out[*n].rate = *rate;
    snprintf(out[*n].policy, sizeof(out[*n].policy), "%llu;w=%llu",
             (unsigned long long)rate->limit,
             (unsigned long long)((rate->window_ms + 999) / 1000));
    (*n)++;
    return 0;
}

/* ---------------------------------------------------------------- options */

static int rate_limit_validate(void *opts, const keel_config *cfg, FILE *err)
{
    const keel_rate_limit_options *o = opts;
    keel_rl_tier tiers[KEEL_RL_MAX_TIERS];
    if (o->rate_limit && keel_rl_tiers_from_config(cfg, tiers, KEEL_RL_MAX_TIERS, err) < 0)
        return KEEL_ECONFIG;
    return 0;
}

#define AT(f) KEEL_CONFIG_AT(keel_rate_limit_options, f)
static const keel_config_var rate_limit_vars[] = {
    {.name = "RATE_LIMIT_ENABLED", .type = KEEL_CONFIG_BOOL, .def = "true", AT(rate_limit),
     .help = "per-client rate limits (GCRA; tiers per route, see docs/rate-limiting.md)"},
    {.name = "RATE_LIMIT_MAX", .type = KEEL_CONFIG_UINT, .def = "100", AT(rate_limit_max),
     .min = 1, .help = "general tier: requests per RATE_LIMIT_WINDOW per client"},
    {.name = "RATE_LIMIT_WINDOW", .type = KEEL_CONFIG_DURATION, .def = "15m",
     AT(rate_limit_window_ms), .min = 1, .help = "general tier window"},
    {.name = "RATE_LIMIT_STRICT", .type = KEEL_CONFIG_STR, .def = "20/15m",
     AT(rate_limit_strict), .help = "strict tier, N/window (sensitive routes)"},
    {.name = "RATE_LIMIT_AUTH", .type = KEEL_CONFIG_STR, .def = "5/15m", AT(rate_limit_auth),
     .help = "auth tier, N/window: login, register, refresh and password attempts"},
    {.name = "RATE_LIMIT_PUBLIC", .type = KEEL_CONFIG_STR, .def = "300/1m",
     AT(rate_limit_public), .help = "public tier, N/window (cheap unauthenticated reads)"},
    {.name = "RATE_LIMIT_BURST", .type = KEEL_CONFIG_STR, .def = "10/1s", AT(rate_limit_burst),
     .help = "burst protection on every limited route, N/window; 0 = off"},
    {.name = "RATE_LIMIT_ANALYTICS", .type = KEEL_CONFIG_STR, .def = "120/1m",
     AT(rate_limit_analytics),
     .help = "analytics tier, N/window: event batches per user or API key "
             "(POST /api/v1/analytics/events)"},
    {.name = "RATE_LIMIT_TIERS", .type = KEEL_CONFIG_STR, .def = "", AT(rate_limit_tiers),
     .help = "custom tiers for routes to name: \"reports=10/1m, upload=5/1h\""},
    {.name = "RATE_LIMIT_MAX_KEYS", .type = KEEL_CONFIG_UINT, .def = "100000",
     AT(rate_limit_max_keys), .min = 64, .max = 100000000,
     .help = "most client keys the in-process store keeps (least recently used evicted "
             "beyond)"},
    {.name = "RATE_LIMIT_FAIL_OPEN", .type = KEEL_CONFIG_BOOL, .def = "true",
     AT(rate_limit_fail_open),
     .help = "when the limiter's store is unreachable: serve (true) or answer 503 (false)"},
};
#undef AT

const keel_config_module keel_rate_limit_config = KEEL_CONFIG_MODULE(
    "rate_limit",
    "Per-client rate limits, tiers per route (src/mw/rate_limit.c; docs/rate-limiting.md).",
    keel_rate_limit_options, rate_limit_vars, rate_limit_validate);

int keel_rl_tiers_from_config(const keel_config *config, keel_rl_tier *out, size_t cap,
                              FILE *err)
{
    const keel_rate_limit_options *cfg = keel_config_get(config, &keel_rate_limit_config);
    size_t n = 0;
    keel_rl_rate general = {cfg->rate_limit_max, cfg->rate_limit_window_ms};
    add_tier(out, cap, &n, "general", 7, &general);
    static const struct {
        const char *var, *tier;
        size_t off;
    } fixed[] = {
        {"RATE_LIMIT_STRICT", "strict", offsetof(keel_rate_limit_options, rate_limit_strict)},
        {"RATE_LIMIT_AUTH", "auth", offsetof(keel_rate_limit_options, rate_limit_auth)},
        {"RATE_LIMIT_PUBLIC", "public", offsetof(keel_rate_limit_options, rate_limit_public)},
        {"RATE_LIMIT_BURST", "burst", offsetof(keel_rate_limit_options, rate_limit_burst)},
        {"RATE_LIMIT_ANALYTICS", "analytics",
         offsetof(keel_rate_limit_options, rate_limit_analytics)},
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        const char *v = *(char *const *)((const char *)cfg + fixed[i].off);
        keel_rl_rate r;
        if (keel_rl_parse_rate(v, &r) < 0) {
            if (err)
                fprintf(err,
                        "keel: %s: invalid value \"%s\": expected N/window, e.g. 20/15m "
                        "(0 = off)\n",
                        fixed[i].var, v);
            return KEEL_ECONFIG;
        }
        add_tier(out, cap, &n, fixed[i].tier, strlen(fixed[i].tier), &r);
    }
    /* "name=N/window, name2=N/window" */
    const char *p = cfg->rate_limit_tiers ? cfg->rate_limit_tiers : "";
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!*p)
            break;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && end[-1] == ' ')
            end--;
        const char *eq = memchr(start, '=', (size_t)(end - start));
        char rate_s[64];
        keel_rl_rate r;
        size_t rl = eq ? (size_t)(end - eq - 1) : 0;
        int bad = !eq || rl == 0 || rl >= sizeof(rate_s);
        if (!bad) {
            memcpy(rate_s, eq + 1, rl);
            rate_s[rl] = '\0';
            bad = keel_rl_parse_rate(rate_s, &r) < 0 || r.limit == 0 ||
                  add_tier(out, cap, &n, start, (size_t)(eq - start), &r) < 0;
        }
        if (bad) {
            if (err)
                fprintf(err,
                        "keel: RATE_LIMIT_TIERS: invalid entry \"%.*s\": expected "
                        "name=N/window with a new lower-case name (a-z 0-9 _ -), "
                        "e.g. reports=10/1m\n",
                        (int)(end - start), start);
            return KEEL_ECONFIG;
        }
    }
    return (int)n;
}

/* ---------------------------------------------------------------- limiter */

/* The tiers in force. SIGHUP swaps in a new set (atomically); older sets
 * stay allocated until the limiter is freed, since a request may still
 * hold one of their tiers across a store call. */
typedef struct tier_set {
    keel_rl_tier tiers[KEEL_RL_MAX_TIERS];
    size_t n;
    const keel_rl_tier *general, *burst;
    struct tier_set *retired;
} tier_set;

struct keel_rate_limiter {
    tier_set *set; /* atomic */
    keel_rl_store store;
    unsigned v6_prefix;
    int fail_open;
    keel_metric *rejections;
    keel_metric *store_errors;
};

static const keel_rl_tier *find_tier(const tier_set *ts, const char *name)
{
    for (size_t i = 0; i < ts->n; i++)
        if (!strcmp(ts->tiers[i].name, name))
            return &ts->tiers[i];
    return NULL;
}

static tier_set *tiers_new(const keel_config *cfg)
{
    tier_set *ts = keel_calloc(1, sizeof(*ts));
    int n = keel_rl_tiers_from_config(cfg, ts->tiers, KEEL_RL_MAX_TIERS, NULL);
    ts->n = n > 0 ? (size_t)n : 0; /* validated when loaded */
    ts->general = find_tier(ts, "general");
    ts->burst = find_tier(ts, "burst");
    if (ts->burst && ts->burst->rate.limit == 0)
        ts->burst = NULL;
    return ts;
}

static const tier_set *tiers_now(const keel_rate_limiter *rl)
{
    return __atomic_load_n(&rl->set, __ATOMIC_ACQUIRE);
}

static double m_keys(void *arg)
{
    keel_rl_memory_stats st;
    keel_rl_memory_stats_get(&((keel_rate_limiter *)arg)->store, &st);
    return (double)st.keys;
}

static double m_evictions(void *arg)
{
    keel_rl_memory_stats st;
    keel_rl_memory_stats_get(&((keel_rate_limiter *)arg)->store, &st);
    return (double)st.evictions;
}

keel_rate_limiter *keel_rate_limiter_new(const keel_config *cfg, keel_rl_store store,
                                         keel_metrics *m)
{
    keel_rate_limiter *rl = keel_calloc(1, sizeof(*rl));
    const keel_rate_limit_options *rlo = keel_config_get(cfg, &keel_rate_limit_config);
    rl->set = tiers_new(cfg);
    rl->store = store;
    rl->v6_prefix = cfg->client_ipv6_prefix;
    rl->fail_open = rlo->rate_limit_fail_open;
    if (m) {
        static const char *const tier_label[] = {"tier", NULL};
        rl->rejections = keel_metrics_counter(m, "rate_limit_rejections_total",
                                              "Requests refused by the rate limiter (429)",
                                              tier_label);
        for (size_t i = 0; i < rl->set->n; i++)
            keel_metric_declare(rl->rejections, (const char *const[]){rl->set->tiers[i].name});
        rl->store_errors = keel_metrics_counter(m, "rate_limit_store_errors_total",
                                                "Rate-limit checks the store could not answer",
                                                NULL);
        if (!strcmp(store.name, "memory")) {
            keel_metrics_callback(m, "rate_limit_keys", "Client keys in the in-process limiter",
                                  KEEL_GAUGE, m_keys, rl);
            keel_metrics_callback(m, "rate_limit_evictions_total",
                                  "Keys evicted from the in-process limiter while still "
                                  "counting (RATE_LIMIT_MAX_KEYS reached)",
                                  KEEL_COUNTER, m_evictions, rl);
        }
    }
    return rl;
}

/* A route's tier must be configured (or "none"): the middleware's
 * start-up check, and keel_rate_limiter_check_routes for a route table. */
static int check_route(const keel_route *rt, void *data, char *why, size_t cap)
{
    const keel_rate_limiter *rl = data;
    const char *t = rt->rate_limit;
    if (!t || !strcmp(t, "none") || find_tier(tiers_now(rl), t))
        return 0;
    snprintf(why, cap,
             "rate_limit = \"%s\" is not a configured tier (built-in: general, strict, auth, "
             "public, burst, analytics; add others with RATE_LIMIT_TIERS)", t);
    return -1;
}

int keel_rate_limiter_check_routes(const keel_rate_limiter *rl,
                                   const keel_route *const *routes, size_t n, FILE *err)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        char why[256];
        if (check_route(routes[i], (void *)rl, why, sizeof(why)) == 0)
            continue;
        fprintf(err, "keel: route %s %s: %s\n", routes[i]->method, routes[i]->path, why);
        rc = KEEL_EINVAL;
    }
    return rc;
}

/* One request's way through the checks: burst, then its tier (in one
 * store operation when the store has hit_chain). */
typedef struct rl_call {
    keel_rate_limiter *rl;
    keel_req *r;
    const keel_rl_tier *checks[2];
    int nchecks, stage;
    int pending, in_call, held;
    int status;
    keel_rl_result res;
    char *client; /* "ip:..." or "user:..." */
} rl_call;

/* Decimal digits of v into buf (at least 21 bytes); returns buf. */
static char *u64s(char *buf, uint64_t v)
{
    char tmp[21];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return buf;
}

/* The headers of one result. They are added, not replaced: the limiter
 * runs before the handler, once per request (a refusal adds them once). */
static void add_headers(keel_req *r, const keel_rl_tier *t, const keel_rl_result *res)
{
    char n[24];
    uint64_t reset_s = (res->reset_ms + 999) / 1000;
    keel_res_header(r, "RateLimit-Limit", u64s(n, res->limit));
    keel_res_header(r, "RateLimit-Remaining", u64s(n, res->remaining));
    keel_res_header(r, "RateLimit-Reset", u64s(n, reset_s));
    keel_res_header(r, "RateLimit-Policy", t->policy);
    keel_res_header(r, "X-RateLimit-Limit", u64s(n, res->limit));
    keel_res_header(r, "X-RateLimit-Remaining", u64s(n, res->remaining));
    keel_res_header(r, "X-RateLimit-Reset", u64s(n, (uint64_t)time(NULL) + reset_s));
}

static void refuse(rl_call *c, const keel_rl_tier *t)
{
    keel_req *r = c->r;
    uint64_t retry = (c->res.retry_after_ms + 999) / 1000;
    if (retry == 0)
        retry = 1;
    add_headers(r, t, &c->res);
    char n[24];
    keel_res_header(r, "Retry-After", u64s(n, retry));
    if (c->rl->rejections) {
        const char *lv[] = {t->name};
        keel_metric_add(c->rl->rejections, keel_req_worker_id(r), lv, 1);
    }
    char detail[160];
    snprintf(detail, sizeof(detail),
             "rate limit exceeded: %llu requests per %llu s (%s); retry in %llu s",
             (unsigned long long)t->rate.limit,
             (unsigned long long)((t->rate.window_ms + 999) / 1000), t->name,
             (unsigned long long)retry);
    json_t *extra = json_pack("{s:s,s:I,s:I}", "tier", t->name, "limit",
                              (json_int_t)t->rate.limit, "retry_after", (json_int_t)retry);
    keel_respond_problem_ex(r, 429, NULL, detail, extra);
}

/* The store could not answer: serve (fail open) or 503. */
static int store_failed(rl_call *c)
{
    if (c->rl->store_errors)
        keel_metric_add(c->rl->store_errors, keel_req_worker_id(c->r), NULL, 1);
    if (c->rl->fail_open)
        return 1;
    keel_respond_unavailable(c->r, 1, "the rate limiter is unavailable");
    return 0;
}

static void on_hit(void *arg, int status, const keel_rl_result *res);
static void on_chain(void *arg, int status, size_t idx, const keel_rl_result *res);

#define RL_KEY_MAX 160

/* "rl:<tier>:<client>" into key (RL_KEY_MAX bytes); a longer one is cut
 * (the store digests long keys, and clients are bounded: an address or a
 * subject). Returns its length. */
static size_t make_key(char *key, const keel_rl_tier *t, const char *client)
{
    size_t tl = strlen(t->name), kl;
    memcpy(key, "rl:", 3);
    memcpy(key + 3, t->name, tl);
    key[3 + tl] = ':';
    kl = 4 + tl;
    size_t cl = strlen(client);
    if (cl > RL_KEY_MAX - kl)
        cl = RL_KEY_MAX - kl;
    memcpy(key + kl, client, cl);
    return kl + cl;
}

/* The headers of the last check, and its result for the handler. */
static keel_flow passed(rl_call *c)
{
    const keel_rl_tier *t = c->checks[c->nchecks - 1];
    if (c->status == 0) {
        add_headers(c->r, t, &c->res);
        keel_rl_result *keep = keel_arena_alloc(keel_req_arena(c->r), sizeof(*keep));
        *keep = c->res;
        keel_req_set_local(c->r, KEEL_RL_RESULT, keep);
    }
    return KEEL_NEXT;
}

/* A chain's answer is in (c->stage: the check that decided). */
static keel_flow chain_decided(rl_call *c)
{
    if (c->status < 0)
        return store_failed(c) ? KEEL_NEXT : KEEL_DONE;
    if (!c->res.allowed) {
        refuse(c, c->checks[c->stage]);
        return KEEL_DONE;
    }
    c->stage = c->nchecks;
    return passed(c);
}

/* Every check in one store operation (hit_chain: one round trip to a
 * networked store), with the semantics of advance()'s loop below. */
static keel_flow run_chain(rl_call *c)
{
    char keys[2][RL_KEY_MAX];
    keel_rl_check chk[2];
    for (int i = 0; i < c->nchecks; i++) {
        chk[i].key = keys[i];
        chk[i].keylen = make_key(keys[i], c->checks[i], c->client);
        chk[i].rate = &c->checks[i]->rate;
    }
    c->pending = 1;
    c->in_call = 1;
    c->rl->store.hit_chain(c->rl->store.self, keel_req_worker(c->r), chk, (size_t)c->nchecks,
                           on_chain, c);
    c->in_call = 0;
    if (c->pending)
        return KEEL_SUSPEND;
    return chain_decided(c);
}

/* Runs the remaining checks, in order (burst, then the route's tier),
 * stopping at the first refusal: a request its route's tier refuses has
 * been charged to the burst tier, one the burst tier refuses is never
 * counted against its route's tier. KEEL_NEXT when the request may go on,
 * KEEL_DONE after a refusal, KEEL_SUSPEND while a store answer is due. */
static keel_flow advance(rl_call *c)
{
    if (c->stage == 0 && c->nchecks > 1 && c->rl->store.hit_chain)
        return run_chain(c);
    while (c->stage < c->nchecks) {
        const keel_rl_tier *t = c->checks[c->stage];
        char key[RL_KEY_MAX];
        size_t kl = make_key(key, t, c->client);
        c->pending = 1;
        c->in_call = 1;
        c->rl->store.hit(c->rl->store.self, keel_req_worker(c->r), key, kl, &t->rate, on_hit, c);
        c->in_call = 0;
        if (c->pending)
            return KEEL_SUSPEND;
        if (c->status < 0) {
            if (!store_failed(c))
                return KEEL_DONE;
        } else if (!c->res.allowed) {
            refuse(c, t);
            return KEEL_DONE;
        }
        c->stage++;
    }
    return passed(c);
}

static void on_chain(void *arg, int status, size_t idx, const keel_rl_result *res)
{
    rl_call *c = arg;
    c->pending = 0;
    c->status = status;
    c->stage = (int)idx;
    if (status == 0)
        c->res = *res;
    if (c->in_call)
        return; /* answered synchronously: run_chain() goes on */
    keel_req *r = c->r;
    if (keel_req_is_finished(r)) { /* deadline or client gone meanwhile */
        keel_req_unhold(r);
        return;
    }
    keel_req_resume(r, chain_decided(c));
    keel_req_unhold(r);
}

static void on_hit(void *arg, int status, const keel_rl_result *res)
{
    rl_call *c = arg;
    c->pending = 0;
    c->status = status;
    if (status == 0)
        c->res = *res;
    if (c->in_call)
        return; /* answered synchronously: advance() goes on */
    keel_req *r = c->r;
    if (keel_req_is_finished(r)) { /* deadline or client gone meanwhile */
        keel_req_unhold(r);
        return;
    }
    keel_flow f = KEEL_NEXT;
    if (status < 0) {
        if (!store_failed(c))
            f = KEEL_DONE;
    } else if (!res->allowed) {
        refuse(c, c->checks[c->stage]);
        f = KEEL_DONE;
    }
    if (f == KEEL_NEXT) {
        c->stage++;
        f = advance(c);
    }
    if (f != KEEL_SUSPEND) {
        keel_req_resume(r, f);
        keel_req_unhold(r);
    }
}

static keel_flow on_request(keel_req *r, void *data)
{
    keel_rate_limiter *rl = data;
    const keel_route *rt = keel_req_route(r);
    if (rt && (rt->flags & KEEL_ROUTE_INTERNAL))
        return KEEL_NEXT;
    const tier_set *ts = tiers_now(rl);
    const keel_rl_tier *tier = ts->general;
    if (rt && rt->rate_limit) {
        if (!strcmp(rt->rate_limit, "none"))
            return KEEL_NEXT;
        tier = find_tier(ts, rt->rate_limit);
    }
    if (!tier)
        return KEEL_NEXT; /* unknown tier: refused at start-up */

    rl_call *c = keel_arena_alloc(keel_req_arena(r), sizeof(*c));
    memset(c, 0, sizeof(*c));
    c->rl = rl;
    c->r = r;
    if (ts->burst && ts->burst != tier)
        c->checks[c->nchecks++] = ts->burst;
    if (tier->rate.limit)
        c->checks[c->nchecks++] = tier;
    if (!c->nchecks)
        return KEEL_NEXT;
    const char *subject = keel_req_get_local(r, KEEL_RL_SUBJECT);
    if (subject) {
        c->client = keel_arena_printf(keel_req_arena(r), "%s", subject);
    } else {
        keel_addr a = keel_addr_prefix(keel_req_client(r), rl->v6_prefix);
        c->client = keel_arena_alloc(keel_req_arena(r), 64);
        memcpy(c->client, "ip:", 3);
        keel_addr_format(&a, c->client + 3, 61);
    }
    keel_flow f = advance(c);
    if (f == KEEL_SUSPEND)
        keel_req_hold(r);
    return f;
}

static void dispose(void *data)
{
    keel_rate_limiter *rl = data;
    if (rl->store.free)
        rl->store.free(rl->store.self);
    for (tier_set *ts = rl->set, *older; ts; ts = older) {
        older = ts->retired;
        keel_free(ts);
    }
    keel_free(rl);
}

/* SIGHUP: new limits for the tiers. A tier a route names must not
 * disappear (its routes would go unlimited): then the old set stays. */
static int reload(void *data, const keel_config *next)
{
    keel_rate_limiter *rl = data;
    const keel_rate_limit_options *o = keel_config_get(next, &keel_rate_limit_config);
    if (!o->rate_limit) {
        keel_log(KEEL_LOG_WARN, "reload: switching the rate limiter off takes a restart; "
                                "the tiers stay as they were", NULL);
        return 0;
    }
    tier_set *ts = tiers_new(next), *old = rl->set; /* only this thread swaps */
    for (size_t i = 0; i < old->n; i++)
        if (!find_tier(ts, old->tiers[i].name)) {
            keel_log(KEEL_LOG_ERROR, "reload: a rate-limit tier disappeared; keeping the old tiers",
                     "{s:s}", "tier", old->tiers[i].name);
            keel_free(ts);
            return KEEL_EINVAL;
        }
    ts->retired = old;
    __atomic_store_n(&rl->set, ts, __ATOMIC_RELEASE);
    for (size_t i = 0; i < ts->n; i++)
        keel_log(KEEL_LOG_INFO, "reload: rate-limit tier", "{s:s,s:s}", "tier", ts->tiers[i].name,
                 "policy", ts->tiers[i].policy);
    return 0;
}

static const char *const reads[] = {"rate_limit", NULL};

keel_middleware keel_mw_rate_limit(keel_rate_limiter *rl)
{
    keel_middleware m = {.name = "rate_limit", .phase = KEEL_PHASE_LIMIT,
                         .on_request = on_request, .dispose = dispose, .data = rl,
                         .reads = reads, .check_route = check_route, .reload = reload};
    return m;
}

keel_middleware keel_mw_rate_limit_off(keel_rate_limiter *rl)
{
    keel_middleware m = keel_mw_rate_limit(rl);
    m.name = "rate_limit (off)";
    m.on_request = NULL;
    m.reload = NULL; /* switching it on takes a restart */
    return m;
}
