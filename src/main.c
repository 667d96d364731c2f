/* main.c — the keel CLI and reference service. */
#include "app/app.h"
#include "app/files.h"

static int setup(keel_service *svc, void *arg)
{
    (void)arg;
    if (app_options_of(svc)->demo_routes && app_demo_setup(svc) < 0)
        return -1;
    if (app_auth_setup(svc) < 0)
        return -1;
    if (app_files_setup(svc) < 0)
        return -1;
    return app_distributed_setup(svc);
}

static int command(keel_service *svc, const char *cmd, int argc, char **argv, void *arg)
{
    (void)arg;
    return app_auth_command(svc, cmd, argc - 2, argv + 2);
}

static const keel_config_module *const config_modules[] = {&app_config, &app_uploads_config};

int main(int argc, char **argv)
{
    keel_app app = {.name = "keel", .version = KEEL_VERSION, .setup = setup, .command = command,
                    .usage = "  user create --email E [--role R] [--name N]\n"
                             "                     create a user (password: KEEL_ADMIN_PASSWORD "
                             "or stdin)\n"
                             "  apikey create --name N --scopes a,b [--expires 90d] | list | "
                             "revoke ID\n"
                             "                     service-to-service API keys\n",
                    .use_database = 1, .migrations = app_migrations,
                    .nmigrations = app_migrations_count,
                    .config_modules = config_modules, .nconfig_modules = 2};
    return keel_main(argc, argv, &app);
}
