/* test_mail_notification.c — the built-in "notification" template that
 * app_notify's e-mail jobs name (templates/mail/notification.*,
 * docs/notifications.md): every variable app_notify passes renders, the
 * user-given title and body are HTML-escaped in the HTML part and written
 * as is in the text part, and a missing variable is an error, not a hole. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "keel/common.h"
#include "keel/mail.h"

static json_t *vars(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", "Ann <ann@x.test>", "title",
                     "Order <b>42</b> & co shipped", "body", "<script>alert(1)</script>", "type",
                     "order.shipped", "notification_id", "n-1");
}

static void test_builtin(void **state)
{
    (void)state;
    int found = 0;
    for (const char *const *n = keel_mail_builtin_templates(); *n; n++)
        found |= !strcmp(*n, "notification");
    assert_true(found);
}

static void test_render_escapes_html_only(void **state)
{
    (void)state;
    json_t *v = vars();
    keel_mail_rendered r;
    char err[300];
    assert_int_equal(keel_mail_render(NULL, "notification", v, &r, err, sizeof(err)), 0);
    assert_string_equal(r.subject, "Order <b>42</b> & co shipped");
    assert_non_null(strstr(r.text, "Hello Ann <ann@x.test>,"));
    assert_non_null(strstr(r.text, "<script>alert(1)</script>"));
    assert_non_null(strstr(r.text, "order.shipped"));
    assert_non_null(r.html);
    assert_null(strstr(r.html, "<script>"));
    assert_null(strstr(r.html, "<b>42"));
    assert_non_null(strstr(r.html, "&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_non_null(strstr(r.html, "Order &lt;b&gt;42&lt;/b&gt; &amp; co shipped"));
    assert_non_null(strstr(r.html, "Hello Ann &lt;ann@x.test&gt;,"));
    keel_mail_rendered_free(&r);
    json_decref(v);
}

static void test_missing_variable_refused(void **state)
{
    (void)state;
    json_t *v = vars();
    json_object_del(v, "body");
    keel_mail_rendered r;
    char err[300] = "";
    assert_int_equal(keel_mail_render(NULL, "notification", v, &r, err, sizeof(err)), KEEL_EINVAL);
    assert_non_null(strstr(err, "body"));
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin),
        cmocka_unit_test(test_render_escapes_html_only),
        cmocka_unit_test(test_missing_variable_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
