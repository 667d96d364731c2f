/* orders-service — a second service on libkeel that calls the reference
 * service (service to service): POST /orders checks the customer with
 * GET /api/v1/users/:id on keel, authenticated by an API key with the
 * users:read scope, through keel's outbound HTTP client — retries with
 * backoff for the idempotent GET, a circuit breaker on the "accounts"
 * target (503 at once while it is open), the caller's trace continued in
 * `traceparent`, and http_client_* metrics.
 *
 * Build: make build/orders-service
 * Run:   ORDERS_API_URL=http://127.0.0.1:8080 ORDERS_API_KEY=... PORT=8081 \
 *            build/orders-service serve
 * The key: keel apikey create --name orders --scopes users:read
 *
 * Orders are kept in memory: the example is about the call, not storage
 * (see the reference service for a resource on the database). */
#include <jansson.h>
#include <keel/keel.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct orders_options {
    char *api_url; /* ORDERS_API_URL */
    char *api_key; /* ORDERS_API_KEY (secret) */
} orders_options;

static const keel_config_var orders_vars[] = {
    {.name = "ORDERS_API_URL", .type = KEEL_CONFIG_URL, .def = "http://127.0.0.1:8080",
     .values = KEEL_CONFIG_VALUES("http://", "https://"),
     KEEL_CONFIG_AT(orders_options, api_url),
     .help = "base URL of the reference service (its /api/v1/users/:id checks customers)"},
    {.name = "ORDERS_API_KEY", .type = KEEL_CONFIG_STR, .def = "",
     KEEL_CONFIG_AT(orders_options, api_key), .flags = KEEL_CONFIG_REQUIRED | KEEL_CONFIG_SECRET,
     .help = "the service credential: an API key of the reference service with users:read"},
};

static const keel_config_module orders_config =
    KEEL_CONFIG_MODULE("orders", "orders-service's own variables.", orders_options, orders_vars,
                       NULL);

static struct {
    const orders_options *o;
    keel_http_client *client;
    pthread_mutex_t mu;
    json_t *orders; /* id -> order, under mu */
    json_int_t next_id;
} S;

/* One POST /orders while the customer is being checked. */
typedef struct pending {
    char customer[40]; /* a UUID: validated by the schema, safe in a URL path */
    char item[128];
    json_int_t quantity;
} pending;

static void customer_checked(keel_req *r, void *arg, int status, const keel_http_response *res)
{
    pending *p = arg;
    if (status == KEEL_ECANCELED) { /* r already answered (deadline, client gone) */
        free(p);
        return;
    }
    if (status < 0) {
        /* no answer after the retries: unreachable, timed out, breaker */
        keel_log(KEEL_LOG_WARN, "accounts unavailable", "{s:s,s:i}", "error", res->error,
                 "attempts", (int)res->attempts);
        keel_res_set_header(r, "Retry-After", "5");
        keel_respond_problem(r, 503, "the accounts service is unavailable");
    } else if (res->status == 404) {
        keel_respond_problem(r, 422, "no such customer");
    } else if (res->status == 401 || res->status == 403) {
        keel_log(KEEL_LOG_ERROR, "accounts refused our service credential", "{s:i}", "status",
                 res->status);
        keel_respond_problem(r, 502, "the accounts service refused this service's credential");
    } else if (res->status != 200) {
        keel_respond_problem(r, 502, "the accounts service failed");
    } else {
        json_t *user = json_loadb(res->body, res->body_len, 0, NULL);
        json_t *order = NULL;
        if (user && json_is_object(user)) {
            pthread_mutex_lock(&S.mu);
            json_int_t id = ++S.next_id;
            order = json_pack("{s:I,s:{s:s,s:O?,s:O?},s:s,s:I,s:s}", "id", id, "customer",
                              "id", p->customer, "name", json_object_get(user, "name"),
                              "email", json_object_get(user, "email"), "item", p->item,
                              "quantity", p->quantity, "status", "accepted");
            char key[32];
            snprintf(key, sizeof(key), "%" JSON_INTEGER_FORMAT, id);
            if (order)
                json_object_set(S.orders, key, order);
            pthread_mutex_unlock(&S.mu);
        }
        json_decref(user);
        if (order)
            keel_respond_json(r, 201, order); /* steals the reference */
        else
            keel_respond_problem(r, 502, "the accounts service answered something unreadable");
    }
    free(p);
}

static keel_flow create_order(keel_req *r)
{
    json_t *body = keel_req_json(r); /* validated against the route's schema */
    pending *p = calloc(1, sizeof(*p));
    snprintf(p->customer, sizeof(p->customer), "%s",
             json_string_value(json_object_get(body, "customer_id")));
    snprintf(p->item, sizeof(p->item), "%s", json_string_value(json_object_get(body, "item")));
    p->quantity = json_integer_value(json_object_get(body, "quantity"));

    char url[512];
    snprintf(url, sizeof(url), "%s/api/v1/users/%s", S.o->api_url, p->customer);
    keel_http_header h[] = {{KEEL_STR("X-API-Key"), keel_str_c(S.o->api_key)},
                            {KEEL_STR("Accept"), KEEL_STR("application/json")}};
    keel_http_call call = {.method = "GET", .url = url, .headers = h, .nheaders = 2,
                           .target = "accounts", .timeout_ms = 2000,
                           .retry = {.max_attempts = 3, .base_ms = 50, .max_delay_ms = 500}};
    int rc = keel_http_request_for(S.client, r, &call, customer_checked, p);
    if (rc < 0) {
        free(p);
        if (rc == KEEL_EUNAVAIL) { /* the breaker is open: fail fast */
            keel_res_set_header(r, "Retry-After", "5");
            keel_respond_problem(r, 503, "the accounts service is unavailable");
        } else {
            keel_respond_problem(r, 500, "cannot call the accounts service");
        }
        return KEEL_DONE;
    }
    return KEEL_SUSPEND;
}

static keel_flow get_order(keel_req *r)
{
    keel_str id = keel_req_param(r, "id");
    char key[32];
    if (id.len == 0 || id.len >= sizeof(key)) {
        keel_respond_problem(r, 404, "no such order");
        return KEEL_DONE;
    }
    memcpy(key, id.ptr, id.len);
    key[id.len] = '\0';
    pthread_mutex_lock(&S.mu);
    json_t *order = json_incref(json_object_get(S.orders, key));
    pthread_mutex_unlock(&S.mu);
    if (!order)
        keel_respond_problem(r, 404, "no such order");
    else
        keel_respond_json(r, 200, order);
    return KEEL_DONE;
}

static const keel_route routes[] = {
    {.name = "orders.create", .method = "POST", .path = "/orders", .handler = create_order,
     .summary = "Place an order for a customer of the reference service",
     .request_schema = "{\"type\":\"object\",\"required\":[\"customer_id\",\"item\",\"quantity\"],"
                       "\"properties\":{\"customer_id\":{\"type\":\"string\",\"format\":\"uuid\"},"
                       "\"item\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":100},"
                       "\"quantity\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000}}}"},
    {.name = "orders.get", .method = "GET", .path = "/orders/:id", .handler = get_order,
     .summary = "One order"},
};

static int setup(keel_service *svc, void *arg)
{
    (void)arg;
    S.o = keel_config_get(keel_service_config(svc), &orders_config);
    S.orders = json_object();
    pthread_mutex_init(&S.mu, NULL);
    if (keel_http_client_new(&S.client, keel_service_server(svc), keel_service_config(svc),
                             keel_service_metrics(svc), keel_service_breakers(svc)) < 0)
        return -1;
    return keel_service_add_routes(svc, routes, sizeof(routes) / sizeof(routes[0]));
}

static void teardown(keel_service *svc, void *arg)
{
    (void)svc;
    (void)arg;
    keel_http_client_free(S.client);
    json_decref(S.orders);
    if (S.o)
        pthread_mutex_destroy(&S.mu);
}

int main(int argc, char **argv)
{
    static const keel_config_module *const config_modules[] = {&orders_config,
                                                               &keel_http_client_config};
    keel_app app = {.name = "orders-service", .version = "1.0.0", .setup = setup,
                    .teardown = teardown, .config_modules = config_modules,
                    .nconfig_modules = 2};
    return keel_main(argc, argv, &app);
}
