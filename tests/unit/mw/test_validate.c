/* test_validate.c — keel_validator (src/mw/validate.c): route schemas
 * compiled once, a bad one refused with the route, slot and reason named,
 * lookups by route, request bodies compiled closed, the application's
 * formats (keel_password_format). The request side is covered end to end in
 * tests/e2e/test_validation.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>

#include "keel/log.h"
#include "keel/mw.h"

static keel_flow nop(keel_req *r)
{
    (void)r;
    return KEEL_DONE;
}

static int add(keel_validator *v, const keel_route *rt, char *err, size_t cap)
{
    const keel_route *list[] = {rt};
    return keel_validator_add_routes(v, list, 1, err, cap);
}

static void test_compile_and_lookup(void **state)
{
    (void)state;
    static const keel_route routes[] = {
        {.name = "a", .method = "POST", .path = "/a", .handler = nop,
         .request_schema = "{\"type\":\"object\"}", .response_schema = "{\"type\":\"string\"}"},
        {.name = "b", .method = "GET", .path = "/b/:id/*rest", .handler = nop,
         .params_schema = "{\"properties\":{\"id\":{\"type\":\"integer\"},\"rest\":{}}}",
         .query_schema = "{\"type\":\"object\",\"properties\":{\"n\":{\"type\":\"number\"}}}"},
        {.name = "c", .method = "GET", .path = "/c", .handler = nop},
    };
    const keel_route *list[] = {&routes[0], &routes[1], &routes[2]};
    keel_validator *v = keel_validator_new();
    char err[256];
    assert_int_equal(keel_validator_add_routes(v, list, 3, err, sizeof(err)), 0);
    assert_int_equal(keel_validator_add_routes(v, list, 3, err, sizeof(err)), 0); /* again */
    const keel_route_schemas *s = keel_validator_lookup(v, &routes[0]);
    assert_non_null(s);
    assert_non_null(s->request);
    assert_non_null(s->response);
    assert_null(s->query);
    assert_null(s->params);
    s = keel_validator_lookup(v, &routes[1]);
    assert_non_null(s);
    assert_non_null(s->params);
    assert_non_null(s->query);
    assert_int_equal(keel_schema_types(keel_schema_property(s->params, "id")),
                     KEEL_SCHEMA_INTEGER);
    assert_null(keel_validator_lookup(v, &routes[2]));
    assert_null(keel_validator_lookup(v, NULL));
    assert_null(keel_validator_lookup(NULL, &routes[0]));
    keel_validator_free(v);
    keel_validator_free(NULL);
}

/* Many routes: the table grows and every one is found. */
static void test_many_routes(void **state)
{
    (void)state;
    enum { N = 300 };
    static keel_route routes[N];
    const keel_route *list[N];
    for (size_t i = 0; i < N; i++) {
        routes[i] = (keel_route){.name = "r", .method = "POST", .path = "/r", .handler = nop,
                                 .request_schema = i % 3 ? "{\"minLength\":1}" : NULL};
        list[i] = &routes[i];
    }
    keel_validator *v = keel_validator_new();
    assert_int_equal(keel_validator_add_routes(v, list, N, NULL, 0), 0);
    for (size_t i = 0; i < N; i++) {
        const keel_route_schemas *s = keel_validator_lookup(v, &routes[i]);
        if (i % 3)
            assert_true(s && s->request);
        else
            assert_null(s);
    }
    keel_validator_free(v);
}

typedef struct bad_route {
    keel_route route;
    const char *want;
} bad_route;

static void test_bad_schemas_name_the_route(void **state)
{
    (void)state;
    static const bad_route bad[] = {
        {{.name = "users.create", .method = "POST", .path = "/users", .handler = nop,
          .request_schema = "{\"properties\":{\"age\":{\"type\":\"int\"}}}"},
         "route users.create (POST /users): request_schema: at /properties/age: unknown type "
         "\"int\""},
        {{.name = "users.get", .method = "GET", .path = "/users/:id", .handler = nop,
          .response_schema = "{\"oneOf\":[]}"},
         "route users.get (GET /users/:id): response_schema: at /: unsupported keyword"},
        {{.name = "q", .method = "GET", .path = "/q", .handler = nop,
          .query_schema = "{\"type\":\"string\"}"},
         "query_schema: must be an object schema"},
        {{.name = "p", .method = "GET", .path = "/p/:id", .handler = nop,
          .params_schema = "{\"properties\":{\"ident\":{}}}"},
         "params_schema: \"ident\" is not a parameter of the path"},
        {{.name = "j", .method = "GET", .path = "/j", .handler = nop, .query_schema = "{"},
         "query_schema: schema is not JSON"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        keel_validator *v = keel_validator_new();
        char err[512] = "";
        assert_int_equal(add(v, &bad[i].route, err, sizeof(err)), KEEL_EINVAL);
        if (!strstr(err, bad[i].want))
            fail_msg("got \"%s\", want it to contain \"%s\"", err, bad[i].want);
        assert_null(keel_validator_lookup(v, &bad[i].route));
        keel_validator_free(v);
    }
}

/* Request bodies are compiled closed, queries open; the password format
 * checks the policy with the application's minimum and says so in the
 * effective schema. */
static void test_closed_bodies_and_password_format(void **state)
{
    (void)state;
    static const keel_route rt = {
        .name = "auth.register", .method = "POST", .path = "/register", .handler = nop,
        .request_schema = "{\"type\":\"object\",\"properties\":{\"email\":{\"type\":"
                          "\"string\",\"format\":\"email\"},\"password\":{\"type\":"
                          "\"string\",\"format\":\"password\"}}}",
        .query_schema = "{\"type\":\"object\",\"properties\":{\"n\":{}}}"};
    static uint64_t min = 12;
    keel_validator *v = keel_validator_new();
    char err[256] = "";
    /* without the format the schema is refused, naming it */
    assert_int_equal(add(v, &rt, err, sizeof(err)), KEEL_EINVAL);
    assert_non_null(strstr(err, "unsupported format \"password\""));
    keel_schema_format pw = keel_password_format(&min);
    assert_int_equal(keel_validator_add_format(v, &pw), 0);
    assert_int_equal(keel_validator_add_format(v, &pw), KEEL_EEXISTS);
    keel_schema_format email = pw;
    email.name = "email";
    assert_int_equal(keel_validator_add_format(v, &email), KEEL_EEXISTS);
    keel_schema_format unnamed = {0};
    assert_int_equal(keel_validator_add_format(v, &unnamed), KEEL_EINVAL);
    assert_int_equal(add(v, &rt, err, sizeof(err)), 0);
    const keel_route_schemas *s = keel_validator_lookup(v, &rt);
    assert_non_null(s);
    json_t *req = keel_schema_json(s->request);
    assert_true(json_is_false(json_object_get(req, "additionalProperties")));
    assert_null(json_object_get(keel_schema_json(s->query), "additionalProperties"));
    json_t *policy = json_object_get(
        json_object_get(json_object_get(req, "properties"), "password"), "x-keel-password");
    assert_int_equal(json_integer_value(json_object_get(policy, "minBytes")), 12);
    assert_int_equal(json_integer_value(json_object_get(policy, "maxBytes")), KEEL_PASSWORD_MAX);

    /* one validation reports the address, the password and the extras */
    json_t *body = json_pack("{s:s,s:s,s:b,s:s}", "email", "nope", "password", "x",
                             "isAdmin", 1, "role", "admin");
    json_t *errors = json_array();
    assert_int_equal(keel_schema_validate(s->request, body, errors, 10), 4);
    const char *want[][2] = {{"/email", "must be an email address"},
                             {"/password", "the password is too short"},
                             {"/isAdmin", "is not allowed: unknown field"},
                             {"/role", "is not allowed: unknown field"}};
    for (size_t i = 0; i < 4; i++) {
        json_t *e = json_array_get(errors, i);
        assert_string_equal(json_string_value(json_object_get(e, "pointer")), want[i][0]);
        assert_string_equal(json_string_value(json_object_get(e, "message")), want[i][1]);
    }
    json_decref(errors);
    json_decref(body);
    /* the minimum is the application's: 11 bytes is short, 12 is not */
    body = json_pack("{s:s}", "password", "abcdefghijk");
    assert_int_equal(keel_schema_validate(s->request, body, NULL, 10), 1);
    json_decref(body);
    body = json_pack("{s:s}", "password", "abcdefghijkl");
    assert_int_equal(keel_schema_validate(s->request, body, NULL, 10), 0);
    json_decref(body);
    body = json_pack("{s:s}", "password", "Password123"); /* common, any case */
    min = 8;
    assert_int_equal(keel_schema_validate(s->request, body, NULL, 10), 1);
    json_decref(body);
    keel_validator_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compile_and_lookup),
        cmocka_unit_test(test_many_routes),
        cmocka_unit_test(test_bad_schemas_name_the_route),
        cmocka_unit_test(test_closed_bodies_and_password_format),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    keel_log_close(); /* the error lines buffered by the refusals */
    return rc;
}
