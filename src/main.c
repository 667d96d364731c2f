/* main.c — the keel CLI and reference service. */
#include "app/app.h"

static int setup(keel_service *svc, void *arg)
{
    (void)arg;
    if (keel_service_config(svc)->demo_routes && app_demo_setup(svc) < 0)
        return -1;
    return app_distributed_setup(svc);
}

int main(int argc, char **argv)
{
    keel_app app = {.name = "keel", .version = KEEL_VERSION, .setup = setup,
                    .use_database = 1, .migrations = app_migrations,
                    .nmigrations = app_migrations_count};
    return keel_main(argc, argv, &app);
}
