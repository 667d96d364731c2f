/* util.c — helpers shared by the reference service's resources. */
#include <jansson.h>
#include <stdio.h>

#include "app/app.h"

json_t *app_json_body(keel_req *r)
{
    return keel_req_json(r);
}

void app_invalid(keel_req *r, const char *pointer, const char *message)
{
    keel_respond_problem_ex(r, 422, NULL, "the request is not valid",
                            json_pack("{s:[{s:s,s:s}]}", "errors", "pointer", pointer, "message",
                                      message));
}

void keel_req_resume_respond_text(keel_req *r, int status, const char *text)
{
    if (!keel_req_is_finished(r))
        keel_respond_text(r, status, text);
    keel_req_unhold(r);
}
