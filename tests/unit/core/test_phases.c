/* test_phases.c — middleware phases and routes that fail closed
 * (src/core/server.c, with keel's auth, authz, rate-limit and validation
 * middleware on a loopback server):
 * - the chain runs in phase order whatever order middleware was added
 *   in, and on_response hooks in the reverse order;
 * - a RESPOND middleware with on_request, or an unknown phase, is refused;
 * - a request the connection layer refused runs only the EDGE phase,
 *   which cannot answer it: the refusal's status is the answer;
 * - a route declaring auth / permission / a schema / a tier that nothing
 *   installed enforces, or a value its middleware does not allow, is
 *   reported by name and keel_server_start refuses to start;
 * - with the limiter and validation each on and off, an unauthenticated
 *   request with an invalid body gets 401 (never 422), an authenticated
 *   one without the permission 403, and a permitted one 422. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "keel/keel.h"

#include "loopback.h"
#include "testsrv.h"

static keel_server *new_server(void)
{
    keel_config cfg;
    testsrv_config(&cfg);
    cfg.log_level = KEEL_LOG_FATAL;
    keel_server *s = testsrv_new(&cfg);
    keel_config_close(&cfg);
    return s;
}

/* ---------------------------------------------------------------- order */

#define TRACE "test.trace"

static void trace_add(keel_req *r, const char *what)
{
    char *t = keel_req_get_local(r, TRACE);
    keel_req_set_local(r, TRACE, keel_arena_printf(keel_req_arena(r), "%s%s%s", t ? t : "",
                                                   t ? "," : "", what));
}

static keel_flow step(keel_req *r, void *data)
{
    trace_add(r, data);
    return KEEL_NEXT;
}

static char out_order[256];

static void on_resp(keel_req *r, keel_response *res, void *data)
{
    (void)r;
    (void)res;
    size_t n = strlen(out_order);
    snprintf(out_order + n, sizeof(out_order) - n, "%s%s", n ? "," : "", (char *)data);
}

static keel_flow h_trace(keel_req *r)
{
    const char *t = keel_req_get_local(r, TRACE);
    keel_respond_text(r, 200, t ? t : "");
    return KEEL_DONE;
}

static const keel_route trace_routes[] = {
    {.name = "trace", .method = "GET", .path = "/trace", .handler = h_trace},
};

/* A middleware per (phase, name), added in the given order: each appends
 * its name to the request's trace, and with on_response its name to
 * out_order on the way out. */
typedef struct traced {
    keel_phase p;
    const char *name;
} traced;

static void use_traced(keel_server *s, const traced *add, size_t n, int with_response)
{
    for (size_t i = 0; i < n; i++) {
        keel_middleware m = {.name = add[i].name, .phase = add[i].p, .on_request = step,
                             .on_response = with_response ? on_resp : NULL,
                             .data = (void *)add[i].name};
        assert_int_equal(keel_server_use(s, &m), 0);
    }
}

static void test_phase_order(void **state)
{
    (void)state;
    keel_server *s = new_server();
    /* added in a scrambled order */
    static const traced add[] = {
        {KEEL_PHASE_APP, "app"},           {KEEL_PHASE_VALIDATE, "validate"},
        {KEEL_PHASE_EDGE, "edge1"},        {KEEL_PHASE_AUTHZ, "authz"},
        {KEEL_PHASE_LIMIT, "limit"},       {KEEL_PHASE_AUTHN, "authn"},
        {KEEL_PHASE_EDGE, "edge2"},        {KEEL_PHASE_APP, "app2"},
    };
    use_traced(s, add, sizeof(add) / sizeof(add[0]), 1);
    keel_middleware respond = {.name = "respond", .phase = KEEL_PHASE_RESPOND,
                               .on_response = on_resp, .data = "respond"};
    assert_int_equal(keel_server_use(s, &respond), 0);
    assert_int_equal(keel_server_add_routes(s, trace_routes, 1), 0);
    assert_int_equal(keel_server_start(s), 0);
    out_order[0] = '\0';
    char buf[4096];
    loopback_exchange(keel_server_port(s),
                      "GET /trace HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf,
                      sizeof(buf));
    assert_non_null(strstr(buf, "\r\n\r\nedge1,edge2,authn,limit,authz,validate,app,app2"));
    testsrv_stop(s);
    /* on the way out, the reverse (the hooks ran before the head was sent) */
    assert_string_equal(out_order,
                        "respond,app2,app,validate,authz,limit,authn,edge2,edge1");
}

/* A refused request (bad framing here) runs only the EDGE phase, where
 * responding is refused; the refusal's status is the answer and the
 * completion hooks see it. */
static char refused_trace[256];
static int edge_respond_rc;

static keel_flow edge_tries_to_answer(keel_req *r, void *data)
{
    trace_add(r, data);
    if (keel_req_refused(r)) {
        edge_respond_rc = keel_respond_text(r, 503, "the edge says no");
        return KEEL_DONE;
    }
    return KEEL_NEXT;
}

static void note_refusal(keel_req *r, void *data)
{
    (void)data;
    const char *t = keel_req_get_local(r, TRACE);
    if (!keel_req_refused(r))
        return;
    snprintf(refused_trace, sizeof(refused_trace), "%s %d %d", t ? t : "",
             keel_res_get_status(r), keel_req_refused(r));
}

static void test_refusal_runs_only_the_edge(void **state)
{
    (void)state;
    keel_server *s = new_server();
    static const traced add[] = {
        {KEEL_PHASE_APP, "app"},     {KEEL_PHASE_VALIDATE, "validate"}, {KEEL_PHASE_AUTHZ, "authz"},
        {KEEL_PHASE_LIMIT, "limit"}, {KEEL_PHASE_AUTHN, "authn"},       {KEEL_PHASE_EDGE, "edge1"},
    };
    use_traced(s, add, sizeof(add) / sizeof(add[0]), 0);
    keel_middleware edge2 = {.name = "edge2", .phase = KEEL_PHASE_EDGE,
                             .on_request = edge_tries_to_answer, .on_complete = note_refusal,
                             .data = "edge2"};
    assert_int_equal(keel_server_use(s, &edge2), 0);
    assert_int_equal(keel_server_add_routes(s, trace_routes, 1), 0);
    assert_int_equal(keel_server_start(s), 0);
    refused_trace[0] = '\0';
    edge_respond_rc = 0;
    char buf[4096];
    loopback_exchange(keel_server_port(s),
                      "GET /trace HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
                      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                      buf, sizeof(buf));
    assert_true(strncmp(buf, "HTTP/1.1 400 ", 13) == 0);
    assert_non_null(strstr(buf, "both Content-Length and Transfer-Encoding"));
    /* a request read whole still runs every phase */
    loopback_exchange(keel_server_port(s),
                      "GET /trace HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", buf,
                      sizeof(buf));
    assert_non_null(strstr(buf, "\r\n\r\nedge1,edge2,authn,limit,authz,validate,app"));
    testsrv_stop(s);
    assert_int_equal(edge_respond_rc, KEEL_EALREADY);
    assert_string_equal(refused_trace, "edge1,edge2 400 400");
}

static int disposed;
static void count_dispose(void *data)
{
    (void)data;
    disposed++;
}

static void test_bad_middleware_refused(void **state)
{
    (void)state;
    keel_server *s = new_server();
    disposed = 0;
    keel_middleware m = {.name = "gz", .phase = KEEL_PHASE_RESPOND, .on_request = step,
                         .dispose = count_dispose};
    assert_int_equal(keel_server_use(s, &m), KEEL_EINVAL);
    m.phase = (keel_phase)99;
    assert_int_equal(keel_server_use(s, &m), KEEL_EINVAL);
    assert_int_equal(disposed, 2); /* not installed: released at once */
    testsrv_free(s);
}

/* ---------------------------------------------------------------- auth */

#define SECRET "0123456789abcdef0123456789abcdef"

static keel_jwt_cfg jwt_cfg(void)
{
    keel_jwt_cfg c = {(const uint8_t *)SECRET, sizeof(SECRET) - 1, "keel", "keel-api", 900, 30};
    return c;
}

/* The user's current role is the token's: a store that answers at once. */
static void check_user(void *self, keel_req *r, const keel_jwt_claims *claims,
                       keel_auth_done_fn done, void *arg)
{
    (void)self;
    done(r, arg, 0, claims->role);
}

static void check_apikey(void *self, keel_req *r, const char *key, size_t len, char *id_out,
                         keel_auth_done_fn done, void *arg)
{
    (void)self;
    (void)key;
    (void)len;
    (void)id_out;
    done(r, arg, KEEL_EACCES, NULL);
}

static keel_flow h_ok(keel_req *r)
{
    keel_respond_text(r, 200, "ok");
    return KEEL_DONE;
}

#define SCHEMA "{\"type\":\"object\",\"required\":[\"name\"]}"

static keel_route guarded[] = {
    {.name = "reports.create", .method = "POST", .path = "/reports", .handler = h_ok,
     .auth = "user", .permission = "users:write", .request_schema = SCHEMA,
     .rate_limit = "strict"},
};

typedef struct setup_opts {
    int auth, authz, limiter, limiter_on, validate;
} setup_opts;

static keel_validator *validator;

static keel_server *guarded_server(const setup_opts *o, keel_route *routes, size_t n, int *bad)
{
    keel_config cfg;
    keel_config_defaults(&cfg);
    keel_server *s = new_server();
    if (o->auth) {
        keel_jwt_cfg jc = jwt_cfg();
        keel_auth_store st = {.check_user = check_user, .check_apikey = check_apikey};
        keel_middleware m = keel_mw_auth(&jc, st);
        assert_int_equal(keel_server_use(s, &m), 0);
    }
    if (o->authz) {
        keel_middleware m = keel_mw_authz();
        assert_int_equal(keel_server_use(s, &m), 0);
    }
    if (o->limiter) {
        keel_rate_limiter *rl = keel_rate_limiter_new(&cfg, keel_rl_memory_store(100), NULL);
        keel_middleware m = o->limiter_on ? keel_mw_rate_limit(rl) : keel_mw_rate_limit_off(rl);
        assert_int_equal(keel_server_use(s, &m), 0);
    }
    validator = NULL;
    if (o->validate) {
        validator = keel_validator_new();
        keel_middleware m = keel_mw_validate(validator);
        assert_int_equal(keel_server_use(s, &m), 0);
    }
    keel_config_close(&cfg);
    assert_int_equal(keel_server_add_routes(s, routes, n), 0);
    if (validator) {
        const keel_route *const *all;
        size_t na = keel_server_routes(s, &all);
        char why[256];
        assert_int_equal(keel_validator_add_routes(validator, all, na, why, sizeof(why)), 0);
    }
    char *msg = NULL;
    size_t msglen = 0;
    FILE *err = open_memstream(&msg, &msglen);
    *bad = keel_server_check_routes(s, err);
    fclose(err);
    if (*bad)
        print_message("  check: %s", msg);
    free(msg);
    return s;
}

static void free_guarded(keel_server *s, int started)
{
    if (started)
        testsrv_stop(s);
    else
        testsrv_free(s);
    keel_validator_free(validator);
    validator = NULL;
}

/* Every combination of limiter (absent, on, off) and validation (on, off):
 * no credentials -> 401, a user without the permission -> 403, an admin
 * -> 422 with validation, 200 without. Never 422 before 401/403. */
static void test_auth_before_validation(void **state)
{
    (void)state;
    keel_jwt_cfg jc = jwt_cfg();
    char *user_tok = NULL, *admin_tok = NULL;
    keel_jwt_claims cl;
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(keel_jwt_sign(&jc, "u1", "user", now, &user_tok, &cl), 0);
    assert_int_equal(keel_jwt_sign(&jc, "a1", "admin", now, &admin_tok, &cl), 0);
    for (int limiter = 0; limiter < 3; limiter++) {
        for (int validate = 0; validate < 2; validate++) {
            setup_opts o = {.auth = 1, .authz = 1, .limiter = limiter > 0,
                            .limiter_on = limiter == 1, .validate = validate};
            keel_route rt = guarded[0];
            if (!validate)
                rt.request_schema = NULL;
            if (!limiter)
                rt.rate_limit = NULL;
            int bad;
            keel_server *s = guarded_server(&o, &rt, 1, &bad);
            assert_int_equal(bad, 0);
            assert_int_equal(keel_server_start(s), 0);
            unsigned port = keel_server_port(s);
            char req[2048], buf[8192];
            const char *tokens[] = {NULL, user_tok, admin_tok};
            const char *want[] = {"HTTP/1.1 401 ", "HTTP/1.1 403 ",
                                  validate ? "HTTP/1.1 422 " : "HTTP/1.1 200 "};
            for (int t = 0; t < 3; t++) {
                char authz[1200] = "";
                if (tokens[t])
                    snprintf(authz, sizeof(authz), "Authorization: Bearer %s\r\n", tokens[t]);
                snprintf(req, sizeof(req),
                         "POST /reports HTTP/1.1\r\nHost: t\r\n%sContent-Type: "
                         "application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                         authz);
                loopback_exchange(port, req, buf, sizeof(buf));
                if (strncmp(buf, want[t], strlen(want[t])) != 0)
                    fail_msg("limiter %d validate %d token %d: want %s, got %.60s", limiter,
                             validate, t, want[t], buf);
            }
            free_guarded(s, 1);
        }
    }
    keel_free(user_tok);
    keel_free(admin_tok);
}

/* Declarations that nothing enforces, or values not allowed: refused. */
static void test_routes_fail_closed(void **state)
{
    (void)state;
    static const struct {
        setup_opts o;
        const char *auth, *permission, *schema, *tier;
    } cases[] = {
        /* auth without authentication installed */
        {{.authz = 1, .limiter = 1, .validate = 1}, "user", NULL, NULL, NULL},
        /* permission without authorization installed */
        {{.auth = 1, .limiter = 1, .validate = 1}, "user", "users:write", NULL, NULL},
        /* a schema without validation installed */
        {{.auth = 1, .authz = 1, .limiter = 1}, NULL, NULL, SCHEMA, NULL},
        /* a tier without a limiter */
        {{.auth = 1, .authz = 1, .validate = 1}, NULL, NULL, NULL, "strict"},
        /* an unknown auth kind */
        {{.auth = 1, .authz = 1}, "users", NULL, NULL, NULL},
        /* a permission but no credentials */
        {{.auth = 1, .authz = 1}, NULL, "users:write", NULL, NULL},
        /* a permission no role grants */
        {{.auth = 1, .authz = 1}, "user", "user:write", NULL, NULL},
        /* an unknown tier, limiter on and off */
        {{.limiter = 1, .limiter_on = 1}, NULL, NULL, NULL, "nope"},
        {{.limiter = 1}, NULL, NULL, NULL, "nope"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        keel_route rt = {.name = "reports.create", .method = "POST", .path = "/reports",
                         .handler = h_ok, .auth = cases[i].auth,
                         .permission = cases[i].permission, .request_schema = cases[i].schema,
                         .rate_limit = cases[i].tier};
        int bad;
        keel_server *s = guarded_server(&cases[i].o, &rt, 1, &bad);
        if (bad != 1)
            fail_msg("case %zu: %d bad routes, want 1", i, bad);
        assert_int_equal(keel_server_start(s), KEEL_EINVAL);
        free_guarded(s, 0);
    }
    /* the message names the route and the field */
    keel_route rt = {.name = "reports.create", .method = "POST", .path = "/reports",
                     .handler = h_ok, .auth = "user"};
    keel_server *s = new_server();
    assert_int_equal(keel_server_add_routes(s, &rt, 1), 0);
    char *msg = NULL;
    size_t len = 0;
    FILE *err = open_memstream(&msg, &len);
    assert_int_equal(keel_server_check_routes(s, err), 1);
    fclose(err);
    assert_string_equal(msg, "route reports.create (POST /reports): auth = \"user\" but no "
                             "installed middleware enforces auth\n");
    free(msg);
    testsrv_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_phase_order),
        cmocka_unit_test(test_bad_middleware_refused),
        cmocka_unit_test(test_refusal_runs_only_the_edge),
        cmocka_unit_test(test_auth_before_validation),
        cmocka_unit_test(test_routes_fail_closed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
