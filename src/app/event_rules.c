/* event_rules.c — the rules of an event type, checked on every create and
 * change of an event of that type, in its transaction:
 *
 *   custom_schema  a JSON Schema (keel's validator) for the `custom` fields;
 *   rules          declarative cross-field rules, each
 *                  {id, field, op, value, when?, unless?, message?}:
 *                  `field op value` must hold whenever `when` holds and
 *                  `unless` does not (both {field, op, value}).
 *
 * A field is a dotted path into the event ("budget.amount", "risk.level",
 * "custom.room", "title") or "duration" (ends_at - starts_at, seconds; a
 * value may then be a duration such as "30d"). op is one of = != < <= > >=
 * (numbers compare as numbers, strings byte-wise: RFC 3339 times in
 * order), `in` (value a list), `present`, `absent`. A rule whose field is
 * absent holds unless its op is `present`. Every broken rule is reported,
 * with the schema's failures, in one 422: {pointer, message, rule}. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/app.h"
#include "app/events_internal.h"

/* The value of field in ev (borrowed, or *owned for duration), or NULL. */
static json_t *field_of(const json_t *ev, const char *field, json_t **owned)
{
    *owned = NULL;
    if (!strcmp(field, "duration")) {
        json_t *s = json_object_get(ev, "starts_at"), *e = json_object_get(ev, "ends_at");
        int64_t a, b;
        if (!json_is_string(e) ||
            app_parse_time(json_string_value(s), json_string_length(s), &a) < 0 ||
            app_parse_time(json_string_value(e), json_string_length(e), &b) < 0)
            return NULL;
        return *owned = json_integer(b - a);
    }
    const json_t *v = ev;
    char part[64];
    for (const char *p = field; v && *p;) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        snprintf(part, sizeof(part), "%.*s", (int)(n < 63 ? n : 63), p);
        v = json_object_get(v, part);
        p += n + (dot != NULL);
    }
    return json_is_null(v) ? NULL : (json_t *)v;
}

/* A rule's value as a number of seconds when it is a duration ("30d"). */
static int number_of(const json_t *v, int duration, double *out)
{
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    uint64_t ms;
    if (duration && json_is_string(v) && keel_parse_duration_ms(json_string_value(v), &ms) == 0) {
        *out = (double)ms / 1000.0;
        return 0;
    }
    return -1;
}

/* Whether {field, op, value} holds for ev. */
static int holds(const json_t *ev, const json_t *cond)
{
    const char *field = json_string_value(json_object_get(cond, "field")),
               *op = json_string_value(json_object_get(cond, "op"));
    const json_t *want = json_object_get(cond, "value");
    if (!field || !op)
        return 1;
    json_t *owned, *have = field_of(ev, field, &owned);
    int r;
    if (!strcmp(op, "present")) {
        r = have != NULL;
    } else if (!strcmp(op, "absent")) {
        r = have == NULL;
    } else if (!have) {
        r = 1;
    } else if (!strcmp(op, "in")) {
        r = 0;
        size_t i;
        json_t *x;
        json_array_foreach(want, i, x)
            r |= json_equal(x, have);
    } else if (!strcmp(op, "=") || !strcmp(op, "!=")) {
        double a, b;
        int eq = json_is_number(have) && number_of(want, !strcmp(field, "duration"), &b) == 0 &&
                         number_of(have, 0, &a) == 0
                     ? a == b
                     : json_equal(have, want);
        r = !strcmp(op, "=") ? eq : !eq;
    } else {
        double a, b;
        int c;
        if (number_of(have, 0, &a) == 0 &&
            number_of(want, !strcmp(field, "duration"), &b) == 0)
            c = a < b ? -1 : a > b;
        else if (json_is_string(have) && json_is_string(want))
            c = strcmp(json_string_value(have), json_string_value(want));
        else
            c = 0, op = "incomparable";
        r = !strcmp(op, "<")    ? c < 0
            : !strcmp(op, "<=") ? c <= 0
            : !strcmp(op, ">")  ? c > 0
            : !strcmp(op, ">=") ? c >= 0
                                : 0;
    }
    json_decref(owned);
    return r;
}

int app_ev_rules_check(keel_db_conn *c, const json_t *ev, json_t *errs)
{
    keel_db_param p[] = {KEEL_DB_P_TEXT(json_string_value(json_object_get(ev, "type")))};
    keel_db_rows *rows;
    int rc = keel_db_query(c, "SELECT custom_schema, rules FROM event_types WHERE name = $1", p,
                           1, &rows);
    if (rc < 0)
        return rc;
    json_t *schema = NULL, *rules = NULL;
    if ((rc = keel_db_rows_next(rows)) == 1) {
        keel_str s = keel_db_get_text(rows, 0), r = keel_db_get_text(rows, 1);
        schema = s.ptr ? json_loadb(s.ptr, s.len, 0, NULL) : NULL;
        rules = r.ptr ? json_loadb(r.ptr, r.len, 0, NULL) : NULL;
    }
    keel_db_rows_free(rows);
    if (rc < 0)
        return rc;
    if (schema) {
        char err[256];
        keel_schema *k = keel_schema_compile_json(schema, err, sizeof(err));
        if (k) {
            json_t *found = json_array();
            keel_schema_validate(k, json_object_get(ev, "custom"), found, 20);
            size_t i;
            json_t *e;
            json_array_foreach(found, i, e) {
                char ptr[300];
                snprintf(ptr, sizeof(ptr), "/custom%s",
                         json_string_value(json_object_get(e, "pointer")));
                json_array_append_new(errs, json_pack("{s:s,s:O,s:s}", "pointer", ptr, "message",
                                                      json_object_get(e, "message"), "rule",
                                                      "custom_schema"));
            }
            json_decref(found);
            keel_schema_free(k);
        } else {
            /* checked when the type was saved; a stored bad one fails loudly */
            keel_log(KEEL_LOG_ERROR, "event type custom_schema does not compile", "{s:s}",
                     "error", err);
        }
        json_decref(schema);
    }
    size_t i;
    json_t *rule;
    json_array_foreach(rules, i, rule) {
        json_t *when = json_object_get(rule, "when"), *unless = json_object_get(rule, "unless");
        if ((when && !holds(ev, when)) || (unless && holds(ev, unless)) || holds(ev, rule))
            continue;
        const char *field = json_string_value(json_object_get(rule, "field")),
                   *msg = json_string_value(json_object_get(rule, "message")),
                   *id = json_string_value(json_object_get(rule, "id"));
        char ptr[200], text[300];
        snprintf(ptr, sizeof(ptr), "/%s", !strcmp(field, "duration") ? "ends_at" : field);
        for (char *d = ptr; *d; d++)
            if (*d == '.')
                *d = '/';
        if (!msg) {
            char *v = json_dumps(json_object_get(rule, "value"), JSON_ENCODE_ANY | JSON_COMPACT);
            snprintf(text, sizeof(text), "must be %s %s", json_string_value(json_object_get(rule,
                                                                                      "op")),
                     v ? v : "");
            free(v);
            msg = text;
        }
        json_array_append_new(errs, json_pack("{s:s,s:s,s:s}", "pointer", ptr, "message", msg,
                                              "rule", id ? id : ""));
    }
    json_decref(rules);
    return 0;
}

/* The checks of a type's rules when it is saved: the schema compiles,
 * each rule names a field and an op. 0, or a message in err. */
int app_ev_rules_valid(const json_t *schema, const json_t *rules, char *err, size_t cap)
{
    if (schema && !json_is_null(schema)) {
        keel_schema *k = keel_schema_compile_json((json_t *)schema, err, cap);
        if (!k)
            return -1;
        keel_schema_free(k);
    }
    size_t i;
    json_t *r;
    json_array_foreach(rules, i, r) {
        if (!json_is_string(json_object_get(r, "field")) ||
            !json_is_string(json_object_get(r, "op"))) {
            snprintf(err, cap, "rule %zu needs a field and an op", i);
            return -1;
        }
    }
    return 0;
}
