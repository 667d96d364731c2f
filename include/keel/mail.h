/* keel/mail.h — e-mail: messages built by keel, templates, and sending
 * over SMTP (libcurl), or to the log and an in-memory outbox when no
 * SMTP_URL is set (development). docs/mail.md.
 *
 * Three layers, each usable alone:
 *
 *   keel_mail_build      a message (RFC 5322 + MIME): From, To, Subject,
 *                        Date, Message-ID, MIME-Version, text/plain and
 *                        text/html alternatives in quoted-printable, UTF-8
 *                        subjects and display names as RFC 2047 words. A
 *                        CR, LF or NUL in any value given is refused
 *                        (KEEL_EINVAL): headers cannot be injected.
 *   keel_mail_render     a template: <name>.subject.txt, <name>.txt and
 *                        (optional) <name>.html with {{var}} (HTML-escaped
 *                        in the HTML part) and {{{var}}} (raw: trusted
 *                        values only), values from a JSON object; the
 *                        files are compiled into libkeel from
 *                        templates/mail/ and overridable from
 *                        MAIL_TEMPLATE_DIR.
 *   keel_mailer_send     one blocking delivery with a verdict the job queue
 *                        acts on: sent, transient (retry later) or
 *                        permanent (bounce), plus the server's reply.
 *
 * Sending blocks (DNS, TCP, TLS, SMTP round trips): call keel_mailer_send
 * on a work-pool thread (keel_worker_submit / keel_req_job_submit), never
 * on a loop. Each thread that sends keeps one curl easy handle, so its
 * connection to the SMTP server is reused from one message to the next.
 */
#ifndef KEEL_MAIL_H
#define KEEL_MAIL_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "config.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_t;

/* ---------------------------------------------------------------- options */

typedef struct keel_mail_options {
    char *smtp_url;          /* SMTP_URL: smtp://host:port or smtps://; "" = log + outbox */
    char *smtp_user;         /* SMTP_USER */
    char *smtp_password;     /* SMTP_PASSWORD (secret) */
    int smtp_tls;            /* SMTP_TLS: 0 try (STARTTLS when offered), 1 required */
    int smtp_tls_verify;     /* SMTP_TLS_VERIFY: check the server's certificate */
    uint64_t timeout_ms;     /* SMTP_TIMEOUT: one whole delivery */
    uint64_t connect_timeout_ms; /* SMTP_CONNECT_TIMEOUT */
    char *from;              /* MAIL_FROM: "Name <addr>" or "addr" */
    char *template_dir;      /* MAIL_TEMPLATE_DIR: "" = the built-in templates only */
    uint64_t outbox_size;    /* MAIL_OUTBOX_SIZE: messages kept without SMTP_URL */
    int log_text;            /* derived: the outbox log line carries the text part
                              * (not in production: reset links are secrets) */
} keel_mail_options;

extern const keel_config_module keel_mail_config;

/* ---------------------------------------------------------------- messages */

typedef struct keel_mail_msg {
    const char *from;        /* address (addr-spec), required */
    const char *from_name;   /* display name or NULL; UTF-8 */
    const char *to;          /* address, required */
    const char *to_name;     /* display name or NULL; UTF-8 */
    const char *subject;     /* UTF-8, required (may be "") */
    const char *text;        /* the text/plain part, UTF-8, required */
    const char *html;        /* the text/html part or NULL (then no multipart) */
    const char *message_id;  /* "<...@...>" or NULL: see keel_mail_message_id */
    int64_t date;            /* Unix seconds; 0 = now */
    const char *boundary;    /* the MIME boundary; NULL = random (tests fix it) */
} keel_mail_msg;

/* Longest value of any one header field or address accepted, in bytes. */
#define KEEL_MAIL_MAX_FIELD 2000

/* Builds m into out (appended), CRLF line endings, every line at most 998
 * bytes (quoted-printable bodies: at most 76). 0, or KEEL_EINVAL with a
 * message naming the field in err: a CR, LF or NUL in any value, invalid
 * UTF-8, an address that is not a plain addr-spec (ASCII local@domain,
 * no spaces, quotes or angle brackets), a missing field, a value longer
 * than KEEL_MAIL_MAX_FIELD. Nothing is appended on failure. */
int keel_mail_build(const keel_mail_msg *m, keel_buf *out, char *err, size_t errlen);

/* The stable Message-ID of (notification id, recipient): "<" + 32 hex of a
 * hash of both + "@" + domain + ">", the same on every retry and every
 * instance, so a receiver can drop a duplicate. 0, or KEEL_EINVAL (a
 * value with CR/LF/NUL, or too long for cap: 128 bytes always fit). */
int keel_mail_message_id(const char *notification_id, const char *recipient,
                         const char *domain, char *out, size_t cap);

/* Splits "Name <addr>" or "addr" (MAIL_FROM) into a display name (may be
 * empty) and an address, each NUL-terminated into name/addr. 0 or
 * KEEL_EINVAL. */
int keel_mail_parse_mailbox(const char *s, char *name, size_t name_cap, char *addr,
                            size_t addr_cap);

/* 1 when addr is an address keel sends to (the rule keel_mail_build
 * applies to From and To). */
int keel_mail_address_ok(const char *addr);

/* ---------------------------------------------------------------- templates */

typedef struct keel_mail_rendered {
    char *subject; /* keel_free'd by keel_mail_rendered_free */
    char *text;
    char *html;    /* NULL when the template has no .html file */
} keel_mail_rendered;

/* Renders template `name` (1-64 of [a-z0-9_-]) with the members of `vars`
 * (a JSON object; strings, numbers, booleans; null renders as ""; a.b
 * reaches into nested objects). Each file is read from `dir` when it has
 * one (dir NULL or "": none), else from the built-in set. `{{ x }}` is
 * HTML-escaped in the .html part and written as is in the others; `{{{ x }}}`
 * is never escaped (trusted values only). 0, KEEL_ENOTFOUND (no such
 * template), or KEEL_EINVAL with err naming the file and the variable (a
 * variable missing from vars or not a scalar, an unclosed tag, a value
 * with CR/LF rendered into the subject). */
int keel_mail_render(const char *dir, const char *name, const struct json_t *vars,
                     keel_mail_rendered *out, char *err, size_t errlen);
void keel_mail_rendered_free(keel_mail_rendered *r);

/* Renders one template text src with vars into out (appended), as the
 * .html part (html 1: {{ }} escaped) or a text part (html 0). `file`
 * names it in errors. 0 or KEEL_EINVAL with err, as keel_mail_render;
 * on failure out may hold a partial rendering. */
int keel_mail_render_text(const char *src, const char *file, const struct json_t *vars,
                          int html, keel_buf *out, char *err, size_t errlen);

/* Appends s (n bytes) HTML-escaped: & < > " ' become entities. */
void keel_mail_html_escape(keel_buf *out, const char *s, size_t n);

/* The names of the built-in templates (NULL-terminated; static). */
const char *const *keel_mail_builtin_templates(void);

/* ---------------------------------------------------------------- sending */

typedef enum keel_mail_verdict {
    KEEL_MAIL_SENT = 0,      /* the server accepted the message (2xx) */
    KEEL_MAIL_TRANSIENT = 1, /* retry later: a 4xx reply, no connection, a
                              * timeout, TLS or login failure (configuration
                              * or the server, not the address) */
    KEEL_MAIL_PERMANENT = 2, /* bounce: a 5xx reply to the sender, the
                              * recipient or the data; do not retry */
    KEEL_MAIL_INVALID = 3,   /* the message could not be built (CR/LF in a
                              * value, a bad address, a missing template);
                              * never sent, retrying cannot help */
} keel_mail_verdict;

/* "sent", "transient", "permanent", "invalid". */
const char *keel_mail_verdict_name(keel_mail_verdict v);

typedef struct keel_mail_result {
    keel_mail_verdict verdict;
    int code;            /* the last SMTP reply code, 0 when none (no connection) */
    char reply[512];     /* the server's last reply line, or why nothing was sent */
    char message_id[160];
} keel_mail_result;

/* The part of a message a sender gives; the rest comes from the mailer's
 * options (MAIL_FROM when from is NULL). */
typedef struct keel_mail_send_args {
    const char *to, *to_name;
    const char *template_name;        /* with vars: rendered; else subject/text/html */
    const struct json_t *vars;
    const char *subject, *text, *html;
    const char *notification_id;      /* the Message-ID is stable per (this, to);
                                       * NULL: a random one */
    const char *from, *from_name;     /* NULL: MAIL_FROM */
} keel_mail_send_args;

typedef struct keel_mailer keel_mailer;

/* A mailer for options o (copied; take them from keel_config_get(cfg,
 * &keel_mail_config): a zeroed struct would turn certificate checks
 * off). Never NULL. With an empty smtp_url it
 * delivers to the log (one JSON line, "mail.outbox": the headers and the
 * text part, never a secret) and to a ring of the last o->outbox_size
 * messages (keel_mailer_outbox_json). */
keel_mailer *keel_mailer_new(const keel_mail_options *o);
void keel_mailer_free(keel_mailer *m);

/* Counts deliveries in reg: mail_deliveries_total{verdict} and
 * mail_delivery_seconds. Call once, before sending. */
struct keel_metrics;
void keel_mailer_set_metrics(keel_mailer *m, struct keel_metrics *reg);

/* 1 when the mailer sends over SMTP, 0 when it logs (no SMTP_URL). */
int keel_mailer_smtp(const keel_mailer *m);

/* Renders (when a template is named), builds and delivers one message
 * (a and res non-NULL),
 * blocking: a work-pool thread, the CLI, a job handler — never a loop.
 * Fills res and returns its verdict. Thread-safe: threads send at once,
 * each on its own reused connection. */
keel_mail_verdict keel_mailer_send(keel_mailer *m, const keel_mail_send_args *a,
                                   keel_mail_result *res);

/* Delivers a message already built by keel_mail_build (bytes, CRLF) from
 * envelope sender `from` to `to`; blocking, as keel_mailer_send. */
keel_mail_verdict keel_mailer_send_raw(keel_mailer *m, const char *from, const char *to,
                                       const char *data, size_t len, keel_mail_result *res);

/* The outbox ring (oldest first) as a new JSON array of {to, from,
 * subject, message_id, date, headers, text, html}; empty when the mailer
 * sends over SMTP. */
struct json_t *keel_mailer_outbox_json(keel_mailer *m);

/* Releases the calling thread's SMTP handle (and its connection). Pool
 * threads release theirs when they exit; a thread that sent and lives on
 * (the main thread of a CLI) may call it when done. */
void keel_mail_thread_close(void);

#ifdef __cplusplus
}
#endif
#endif
