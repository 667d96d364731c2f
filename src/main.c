/* main.c — the keel CLI and reference service. */
#include <string.h>

#include "app/analytics.h"
#include "app/app.h"
#include "app/chat.h"
#include "app/files.h"

static int setup(keel_service *svc, void *arg)
{
    (void)arg;
    if (app_options_of(svc)->demo_routes && app_demo_setup(svc) < 0)
        return -1;
    if (app_auth_setup(svc) < 0 || app_accounts_setup(svc) < 0 || app_audit_setup(svc) < 0 ||
        app_events_setup(svc) < 0)
        return -1;
    if (app_jobs_setup(svc) < 0)
        return -1;
    if (app_mail_setup(svc) < 0)
        return -1;
    if (app_admin_ops_setup(svc) < 0)
        return -1;
    if (app_admin_traces_setup(svc) < 0)
        return -1;
    if (app_dashboard_setup(svc) < 0)
        return -1;
    if (app_files_setup(svc) < 0)
        return -1;
    if (app_notifications_setup(svc) < 0)
        return -1;
    if (app_alerts_setup(svc) < 0)
        return -1;
    if (app_analytics_setup(svc) < 0 || app_reviews_setup(svc) < 0)
        return -1;
    if (app_realtime_setup(svc) < 0)
        return -1;
    if (app_chat_setup(svc) < 0)
        return -1;
    return app_distributed_setup(svc);
}

static int command(keel_service *svc, const char *cmd, int argc, char **argv, void *arg)
{
    (void)arg;
    if (!strcmp(cmd, "audit"))
        return app_audit_command(svc, argc - 2, argv + 2);
    if (!strcmp(cmd, "events"))
        return app_events_command(svc, argc - 2, argv + 2);
    int rc = app_mail_command(svc, cmd, argc - 2, argv + 2);
    return rc >= 0 ? rc : app_auth_command(svc, cmd, argc - 2, argv + 2);
}

static void teardown(keel_service *svc, void *arg)
{
    (void)svc;
    (void)arg;
    app_analytics_teardown(); /* after the drain: writes what is still buffered */
    app_mail_teardown();
    app_admin_stream_teardown();
    app_notifications_teardown();
    app_alerts_teardown();
}

static const keel_config_module *const config_modules[] = {
    &app_config,           &keel_mail_config,  &app_uploads_config,      &app_accounts_config,
    &app_dashboard_config, &app_notify_config, &keel_http_client_config, &app_alerts_config,
    &app_analytics_config, &app_realtime_config, &app_chat_config};

int main(int argc, char **argv)
{
    keel_app app = {.name = "keel", .version = KEEL_VERSION, .setup = setup, .command = command,
                    .teardown = teardown,
                    .usage = "  user create --email E [--role R] [--name N]\n"
                             "                     create a user (password: KEEL_ADMIN_PASSWORD "
                             "or stdin)\n"
                             "  apikey create --name N --scopes a,b [--expires 90d] | list | "
                             "revoke ID\n"
                             "                     service-to-service API keys\n"
                             "  mail send --to A --template T [--vars JSON] | templates\n"
                             "                     send a mail now (SMTP_URL, or the log)\n"
                             "  audit verify | export\n"
                             "                     check the audit log's hash chain (exit 3 "
                             "when broken) | print it as JSON lines\n"
                             "  events retention | escalate [--now RFC3339]\n"
                             "                     one retention pass or escalation sweep (what "
                             "the scheduled jobs run)\n",
                    .use_database = 1, .use_jobs = 1, .migrations = app_migrations,
                    .nmigrations = app_migrations_count,
                    .config_modules = config_modules,
                    .nconfig_modules = sizeof(config_modules) / sizeof(config_modules[0])};
    return keel_main(argc, argv, &app);
}
