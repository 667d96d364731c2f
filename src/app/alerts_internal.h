/* alerts_internal.h — shared by src/app/alerts.c (the evaluator and
 * delivery) and src/app/alerts_api.c (the admin routes). */
#ifndef KEEL_APP_ALERTS_INTERNAL_H
#define KEEL_APP_ALERTS_INTERNAL_H

#include "app/app.h"

struct json_t;

typedef struct alerts_options {
    int enabled;                /* ALERTS_ENABLED */
    uint64_t interval_ms;       /* ALERT_EVAL_INTERVAL */
    char *webhook_url;          /* ALERT_WEBHOOK_URL ("" = none) */
    uint64_t webhook_timeout_ms; /* ALERT_WEBHOOK_TIMEOUT */
    uint64_t webhook_attempts;  /* ALERT_WEBHOOK_ATTEMPTS */
    int send_resolved;          /* ALERT_SEND_RESOLVED */
    uint64_t retention_ms;      /* ALERT_HISTORY_RETENTION (0 = kept for ever) */
    char *email_to;             /* ALERT_EMAIL_TO: addresses, comma-separated ("" = none) */
    char *email_link;           /* ALERT_EMAIL_LINK */
} alerts_options;

/* The columns an alert is read with (alerts_row_json). */
#define ALERT_COLUMNS                                                                    \
    "id, rule_id, rule_name, severity, state, value, started_at, fired_at, resolved_at, " \
    "acknowledged_at, acknowledged_by, last_notified_at"

/* An alert row (ALERT_COLUMNS) as the API's JSON (new reference). */
struct json_t *alerts_row_json(const keel_db_rows *rows);
/* Unix ms as RFC 3339 with milliseconds, or JSON null for 0. */
struct json_t *alerts_time_json(int64_t ms);
int64_t alerts_now_ms(void);
/* The built-in rules, inserted when missing (on any connection). */
int alerts_seed(keel_db_conn *c);
/* The active (pending, firing) alerts as a JSON array (*out, new ref). */
int alerts_load_active(keel_db_conn *c, struct json_t **out);
/* Sends a resolved notification of one alert (JSON, borrowed) resolved by
 * hand, on w's loop, when resolved notifications are on. */
void alerts_notify_manual_resolve(keel_worker *w, const struct json_t *alert,
                                  const struct json_t *rule);
const alerts_options *alerts_options_get(void);
keel_db *alerts_db(void);
/* The routes (src/app/alerts_api.c). */
int alerts_api_setup(keel_service *svc);

#endif
