/* mail.c — the reference service's mail endpoints and CLI (docs/mail.md):
 *
 *   GET  /api/v1/admin/mail/outbox   the development outbox (no SMTP_URL):
 *                                    the last MAIL_OUTBOX_SIZE mails
 *   POST /api/v1/admin/mail/send     renders a template and delivers it now
 *                                    (a work-pool job), answering with the
 *                                    verdict: an operator's test mail
 *   keel mail send --to A --template T [--vars JSON] ...   the same from a shell
 *   keel mail templates                                    the built-in templates
 *
 * Both need an administrator (or an API key with admin:access). Every
 * other mail goes through the job queue with the same keel_mailer
 * (src/app/mail_queue.c: the "mail.send" jobs).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "app/app.h"

static keel_mailer *M;

keel_mailer *app_mailer(void)
{
    return M;
}

static keel_flow h_outbox(keel_req *r)
{
    json_t *items = keel_mailer_outbox_json(M);
    keel_respond_json(r, 200, json_pack("{s:b, s:I, s:o}", "smtp", keel_mailer_smtp(M), "count",
                                        (json_int_t)json_array_size(items), "items", items));
    return KEEL_DONE;
}

typedef struct send_job {
    json_t *body; /* a reference of our own */
    keel_mail_result res;
} send_job;

static void send_job_cleanup(void *arg)
{
    send_job *j = arg;
    json_decref(j->body);
}

static void args_from_json(const json_t *b, keel_mail_send_args *a)
{
    memset(a, 0, sizeof(*a));
    a->to = json_string_value(json_object_get(b, "to"));
    a->to_name = json_string_value(json_object_get(b, "to_name"));
    a->template_name = json_string_value(json_object_get(b, "template"));
    a->vars = json_object_get(b, "vars");
    a->subject = json_string_value(json_object_get(b, "subject"));
    a->text = json_string_value(json_object_get(b, "text"));
    a->html = json_string_value(json_object_get(b, "html"));
    a->notification_id = json_string_value(json_object_get(b, "notification_id"));
}

static void send_work(void *arg) /* pool thread: blocks on SMTP */
{
    send_job *j = arg;
    keel_mail_send_args a;
    args_from_json(j->body, &a);
    keel_mailer_send(M, &a, &j->res);
}

static json_t *result_json(const keel_mail_result *res)
{
    return json_pack("{s:s, s:i, s:s, s:s}", "verdict", keel_mail_verdict_name(res->verdict),
                     "code", res->code, "reply", res->reply, "message_id", res->message_id);
}

static void send_done(keel_req *r, void *arg, int status)
{
    send_job *j = arg;
    if (status < 0)
        return;
    switch (j->res.verdict) {
    case KEEL_MAIL_SENT:
        keel_respond_json(r, 200, result_json(&j->res));
        break;
    case KEEL_MAIL_INVALID:
        keel_respond_problem_ex(r, 422, NULL, j->res.reply, result_json(&j->res));
        break;
    default: /* the SMTP server refused it or could not be reached */
        keel_respond_problem_ex(r, 502, NULL,
                                j->res.verdict == KEEL_MAIL_TRANSIENT
                                    ? "the mail server did not take the mail (transient)"
                                    : "the mail server refused the mail (permanent)",
                                result_json(&j->res));
        break;
    }
}

static keel_flow h_send(keel_req *r)
{
    json_t *b = keel_req_json(r);
    int has_template = json_object_get(b, "template") != NULL;
    if (!has_template && !json_object_get(b, "text")) {
        app_invalid(r, "/body", "give a template, or a subject and a text");
        return KEEL_DONE;
    }
    send_job *j = KEEL_REQ_JOB(r, send_job, send_job_cleanup);
    j->body = json_incref(b);
    return keel_req_job_submit(r, NULL, send_work, send_done, j);
}

static const keel_route mail_routes[] = {
    {.name = "admin.mail.outbox", .method = "GET", .path = "/api/v1/admin/mail/outbox",
     .handler = h_outbox,
     .summary = "The development outbox: the last mails written to the log (no SMTP_URL)",
     .auth = "any", .permission = "admin:access", .flags = KEEL_ROUTE_SECRET},
    {.name = "admin.mail.send", .method = "POST", .path = "/api/v1/admin/mail/send",
     .handler = h_send,
     .summary = "Render a template (or a subject and text) and deliver it now; answers the "
                "verdict (sent, transient, permanent, invalid)",
     .auth = "any", .permission = "admin:access", .flags = KEEL_ROUTE_SECRET,
     .request_schema =
         "{\"type\":\"object\",\"required\":[\"to\"],\"additionalProperties\":false,"
         "\"properties\":{\"to\":{\"type\":\"string\",\"maxLength\":254},"
         "\"to_name\":{\"type\":\"string\",\"maxLength\":200},"
         "\"template\":{\"type\":\"string\",\"pattern\":\"^[a-z0-9_-]{1,64}$\"},"
         "\"vars\":{\"type\":\"object\"},"
         "\"subject\":{\"type\":\"string\",\"maxLength\":998},"
         "\"text\":{\"type\":\"string\",\"maxLength\":1000000},"
         "\"html\":{\"type\":\"string\",\"maxLength\":1000000},"
         "\"notification_id\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":200}}}"},
};

int app_mail_setup(keel_service *svc)
{
    const keel_mail_options *o = keel_config_get(keel_service_config(svc), &keel_mail_config);
    M = keel_mailer_new(o);
    keel_mailer_set_metrics(M, keel_service_metrics(svc));
    if (app_mail_queue_setup(svc, M) < 0)
        return -1;
    if (!keel_mailer_smtp(M))
        keel_log(keel_service_config(svc)->production ? KEEL_LOG_WARN : KEEL_LOG_INFO,
                 "mail: no SMTP_URL: mails go to the log and the outbox, not to anyone", NULL);
    return keel_service_add_routes(svc, mail_routes, sizeof(mail_routes) / sizeof(mail_routes[0]));
}

void app_mail_teardown(void)
{
    if (app_mail_queue_busy()) {
        /* the job runner's grace ran out with a delivery blocked on SMTP:
         * the process is exiting; freeing the mailer under it would crash */
        keel_log(KEEL_LOG_WARN, "mail: a delivery is still running at exit: its job is "
                                "rescued after JOBS_RESCUE_AFTER", NULL);
        return;
    }
    keel_mailer_free(M);
    M = NULL;
}

/* ---------------------------------------------------------------- CLI */

static const char *opt(int argc, char **argv, const char *name)
{
    size_t n = strlen(name);
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], name) && i + 1 < argc)
            return argv[i + 1];
        if (!strncmp(argv[i], name, n) && argv[i][n] == '=')
            return argv[i] + n + 1;
    }
    return NULL;
}

static const char mail_usage[] =
    "usage: keel mail send --to ADDRESS [--to-name NAME] --template NAME [--vars JSON]\n"
    "                      [--notification-id ID]\n"
    "       keel mail send --to ADDRESS --subject S --text T [--html H] [--notification-id ID]\n"
    "       keel mail templates\n"
    "exit status: 0 sent, 75 transient (retry later), 1 permanent (bounced), 2 invalid\n";

static int mail_send(keel_service *svc, int argc, char **argv)
{
    keel_mail_send_args a = {0};
    a.to = opt(argc, argv, "--to");
    a.to_name = opt(argc, argv, "--to-name");
    a.template_name = opt(argc, argv, "--template");
    a.subject = opt(argc, argv, "--subject");
    a.text = opt(argc, argv, "--text");
    a.html = opt(argc, argv, "--html");
    a.notification_id = opt(argc, argv, "--notification-id");
    const char *vars = opt(argc, argv, "--vars");
    if (!a.to || (!a.template_name && (!a.subject || !a.text))) {
        fputs(mail_usage, stderr);
        return 2;
    }
    json_t *v = NULL;
    if (vars) {
        json_error_t je;
        v = json_loads(vars, JSON_REJECT_DUPLICATES, &je);
        if (!v || !json_is_object(v)) {
            fprintf(stderr, "keel: --vars: expected a JSON object (%s)\n",
                    v ? "not an object" : je.text);
            json_decref(v);
            return 2;
        }
    }
    a.vars = v;
    keel_log_set_fd(2); /* stdout is the result */
    const keel_mail_options *o = keel_config_get(keel_service_config(svc), &keel_mail_config);
    keel_mailer *m = M ? M : keel_mailer_new(o); /* setup made one */
    keel_mail_result res;
    keel_mail_verdict verdict = keel_mailer_send(m, &a, &res);
    json_t *out = result_json(&res);
    if (!keel_mailer_smtp(m)) {
        json_t *box = keel_mailer_outbox_json(m);
        json_object_set(out, "mail", json_array_get(box, 0));
        json_decref(box);
    }
    char *s = json_dumps(out, JSON_COMPACT);
    printf("%s\n", s);
    free(s);
    json_decref(out);
    json_decref(v);
    if (m != M)
        keel_mailer_free(m);
    keel_mail_thread_close();
    switch (verdict) {
    case KEEL_MAIL_SENT: return 0;
    case KEEL_MAIL_TRANSIENT: return 75; /* EX_TEMPFAIL */
    case KEEL_MAIL_PERMANENT: return 1;
    default: return 2;
    }
}

int app_mail_command(keel_service *svc, const char *cmd, int argc, char **argv)
{
    if (strcmp(cmd, "mail"))
        return -1;
    const char *sub = argc > 0 ? argv[0] : "";
    if (!strcmp(sub, "send"))
        return mail_send(svc, argc - 1, argv + 1);
    if (!strcmp(sub, "templates")) {
        for (const char *const *n = keel_mail_builtin_templates(); *n; n++)
            printf("%s\n", *n);
        return 0;
    }
    fputs(mail_usage, stderr);
    return 2;
}
