"""Every mail through the job queue (src/app/mail_queue.c, docs/mail.md),
against a real SMTP server (aiosmtpd on a free loopback port, test_mail.Smtp).

A registration enqueues a "mail.send" job (queue "email") for the
verification mail in the registering transaction; the job's outcome
follows the SMTP verdict:
- 250: the message arrives once, with the right headers, both parts and
  the escaped template; the job is completed;
- 451 then 250: retried with backoff, exactly one delivery;
- no server, then a server: retried, exactly one delivery;
- 550: the job is dead after one attempt (no retry storm) and the address
  is suppressed for its class: the next mail of that class to it is not
  sent (the job ends cancelled with the reason).
Backoff is shortened (JOBS_BACKOFF_BASE/MAX) so the retries take
milliseconds."""
import email
import email.policy
import time

import requests

from conftest import SLACK, free_port, scrape_metric, wait_for
from test_mail import FAST, PW, Smtp, admin

QUICK = dict(FAST, JOBS_BACKOFF_BASE="50ms", JOBS_BACKOFF_MAX="200ms",
             JOBS_POLL_INTERVAL="50ms", SMTP_CONNECT_TIMEOUT="2s",
             AUTH_VERIFY_RESEND_INTERVAL="0s", MAIL_FROM="Acme Accounts <accounts@acme.test>")


def register(srv, addr, name="Ann"):
    r = requests.post(srv.url + "/api/v1/auth/register", timeout=20 * SLACK,
                      json={"email": addr, "password": PW, "name": name})
    assert r.status_code == 201, r.text
    return r.json()


def mail_jobs(srv, h):
    r = requests.get(srv.url + "/api/v1/admin/jobs", params={"kind": "mail.send"}, headers=h,
                     timeout=10 * SLACK)
    assert r.status_code == 200, r.text
    return r.json()["jobs"]


def job_for(srv, h, addr):
    jobs = [j for j in mail_jobs(srv, h) if j["args"]["to"] == addr]
    return jobs[0] if jobs else None


def wait_job(srv, h, addr, pred, what):
    return wait_for(lambda: (lambda j: j if j and pred(j) else None)(job_for(srv, h, addr)),
                    timeout=10, what=what)


def test_delivered_through_the_queue_headers_parts_escaped(keel):
    smtp = Smtp()
    try:
        env = dict(QUICK, SMTP_URL=smtp.url)
        srv = keel(**env)
        h = admin(srv, env)
        register(srv, "ann@example.org", name="<b>Ann</b> & Co")
        mail_from, rcpts, raw = smtp.wait(1)[-1]
        assert mail_from == "accounts@acme.test" and rcpts == ["ann@example.org"]
        m = email.message_from_bytes(raw, policy=email.policy.default)
        assert m["From"] == "Acme Accounts <accounts@acme.test>"
        assert m["To"].addresses[0].addr_spec == "ann@example.org"
        assert m["To"].addresses[0].display_name == "<b>Ann</b> & Co"
        assert str(m["Subject"]) == "Confirm your e-mail address for keel"
        assert m["MIME-Version"] == "1.0" and m["Date"]
        assert m["Message-ID"].endswith("@acme.test>")
        assert m.get_content_type() == "multipart/alternative"
        text = m.get_body(("plain",)).get_content()
        html = m.get_body(("html",)).get_content()
        assert "Hello <b>Ann</b> & Co," in text and "ann@example.org" in text
        assert "Hello &lt;b&gt;Ann&lt;/b&gt; &amp; Co," in html and "<b>Ann" not in html
        assert "http://localhost:8080/verify-email?token=" in text
        job = wait_job(srv, h, "ann@example.org", lambda j: j["state"] == "completed",
                       "the mail job completed")
        assert job["queue"] == "email" and job["attempt"] == 1
        assert job["args"]["template"] == "verify_email" and job["args"]["class"] == "account"
        assert job["unique_key"] == job["args"]["message_key"]
        assert scrape_metric(srv.port, "mail_jobs_total", result="sent") == 1
    finally:
        smtp.stop()


def test_451_then_250_one_delivery(keel):
    smtp = Smtp()
    try:
        env = dict(QUICK, SMTP_URL=smtp.url)
        srv = keel(**env)
        h = admin(srv, env)
        smtp.mode = "451"
        register(srv, "bob@example.org")
        job = wait_job(srv, h, "bob@example.org", lambda j: j["attempt"] >= 2,
                       "a second attempt after 451")
        assert job["state"] in ("retryable", "running", "available")
        assert any("451" in e["error"] and "transient" in e["error"] for e in job["errors"])
        assert smtp.messages == []
        smtp.mode = "ok"
        wait_job(srv, h, "bob@example.org", lambda j: j["state"] == "completed",
                 "the mail job completed after 250")
        assert len(smtp.wait(1)) == 1
        time.sleep(0.3)  # a second delivery would come within a few backoffs
        assert len(smtp.messages) == 1
        assert scrape_metric(srv.port, "mail_jobs_total", result="sent") == 1
        assert scrape_metric(srv.port, "mail_jobs_total", result="retried") >= 1
    finally:
        smtp.stop()


def test_server_down_then_up_one_delivery(keel):
    port = free_port()
    env = dict(QUICK, SMTP_URL="smtp://127.0.0.1:%d" % port)
    srv = keel(**env)
    h = admin(srv, env)
    register(srv, "cy@example.org")
    job = wait_job(srv, h, "cy@example.org", lambda j: j["attempt"] >= 2,
                   "a second attempt with no server")
    assert any("transient: 0" in e["error"] for e in job["errors"]), job["errors"]
    smtp = Smtp(port=port)
    try:
        wait_job(srv, h, "cy@example.org", lambda j: j["state"] == "completed",
                 "the mail job completed once the server is up")
        assert len(smtp.wait(1)) == 1
        time.sleep(0.3)
        assert len(smtp.messages) == 1
    finally:
        smtp.stop()


def test_550_dead_no_retry_address_suppressed(keel):
    smtp = Smtp()
    try:
        env = dict(QUICK, SMTP_URL=smtp.url)
        srv = keel(**env)
        h = admin(srv, env)
        smtp.mode = "550"
        register(srv, "Dee@Example.org")  # stored lower-cased
        job = wait_job(srv, h, "dee@example.org", lambda j: j["state"] == "dead",
                       "the mail job dead after 550")
        assert job["attempt"] == 1 and "550" in job["errors"][-1]["error"]
        time.sleep(0.3)  # no retry storm: still one attempt, one SMTP refusal
        assert job_for(srv, h, "dee@example.org")["attempt"] == 1
        assert scrape_metric(srv.port, "mail_deliveries_total", verdict="permanent") == 1
        assert scrape_metric(srv.port, "mail_jobs_total", result="bounced") == 1

        # the address is suppressed for the class "account": a new verification
        # mail to it is not sent, even though the server would now accept it
        smtp.mode = "ok"
        ehlos = smtp.ehlos
        r = requests.post(srv.url + "/api/v1/auth/verify/resend", timeout=10 * SLACK,
                          json={"email": "dee@example.org"})
        assert r.status_code == 202, r.text
        wait_for(lambda: scrape_metric(srv.port, "mail_jobs_total", result="suppressed") == 1,
                 timeout=10, what="the suppressed mail counted")
        jobs = [j for j in mail_jobs(srv, h) if j["args"]["to"] == "dee@example.org"]
        assert sorted(j["state"] for j in jobs) == ["cancelled", "dead"]
        cancelled = [j for j in jobs if j["state"] == "cancelled"][0]
        assert "suppressed for class account" in cancelled["errors"][-1]["error"]
        assert smtp.messages == [] and smtp.ehlos == ehlos
        assert srv.wait_log(lambda e: e.get("msg") == "mail.suppressed"
                            and e.get("to") == "dee@example.org")
        # another address still gets its mail
        register(srv, "eve@example.org")
        assert smtp.wait(1)[0][1] == ["eve@example.org"]

        # the admin API lists and lifts suppressions
        url = srv.url + "/api/v1/admin/mail/suppressions"
        assert requests.get(url, timeout=10).status_code == 401
        r = requests.get(url, headers=h, timeout=10)
        assert r.status_code == 200, r.text
        [s] = r.json()["suppressions"]
        assert (s["address"], s["class"], s["code"]) == ("dee@example.org", "account", 550)
        assert "no such user" in s["reason"] and s["job_id"] == job["id"]
        assert requests.get(url, headers=h, params={"class": "notification"},
                            timeout=10).json()["suppressions"] == []
        for bad in ({"limit": 0}, {"nope": 1}, {"address": "x" * 300}):
            r = requests.get(url, headers=h, params=bad, timeout=10)
            assert r.status_code == 422, (bad, r.text)
        assert requests.delete(url, headers=h, timeout=10).status_code == 422
        r = requests.delete(url, headers=h, params={"address": "DEE@example.org",
                                                    "class": "notification"}, timeout=10)
        assert r.status_code == 404
        r = requests.delete(url, headers=h, params={"address": "DEE@example.org"}, timeout=10)
        assert r.status_code == 204
        assert requests.get(url, headers=h, timeout=10).json()["suppressions"] == []
        # lifted: the next mail of the class goes out
        r = requests.post(srv.url + "/api/v1/auth/verify/resend", timeout=10 * SLACK,
                          json={"email": "dee@example.org"})
        assert r.status_code == 202
        assert smtp.wait(2)[1][1] == ["dee@example.org"]
    finally:
        smtp.stop()


def test_postgres_queue_reset_verify_suppress(keel, tmp_path, pg_cluster):
    """The same SQL on PostgreSQL: the queue's jobs, the token claims, the
    reset's CASE, the suppression's ON CONFLICT."""
    from test_migrate import Pg
    smtp = Smtp()
    pg = Pg(pg_cluster)
    try:
        env = dict(QUICK, SMTP_URL=smtp.url, DATABASE_URL=pg.url)
        srv = keel(**env)
        h = admin(srv, env)
        register(srv, "pat@example.org")
        raw = smtp.wait(1)[0][2]
        m = email.message_from_bytes(raw, policy=email.policy.default)
        token = m.get_body(("plain",)).get_content().split("token=")[1].split()[0]
        r = requests.post(srv.url + "/api/v1/auth/verify", json={"token": token}, timeout=10)
        assert r.status_code == 200 and r.json()["email_verified"] is True, r.text
        assert requests.post(srv.url + "/api/v1/auth/verify", json={"token": token},
                             timeout=10).status_code == 400
        r = requests.post(srv.url + "/api/v1/auth/password/forgot",
                          json={"email": "pat@example.org"}, timeout=10)
        assert r.status_code == 202
        raw = smtp.wait(2)[1][2]
        m = email.message_from_bytes(raw, policy=email.policy.default)
        assert str(m["Subject"]) == "Reset your keel password"
        token = m.get_body(("plain",)).get_content().split("token=")[1].split()[0]
        r = requests.post(srv.url + "/api/v1/auth/password/reset",
                          json={"token": token, "password": "another passphrase 77"}, timeout=10)
        assert r.status_code == 204, r.text
        assert pg.scalar("SELECT count(*) FROM account_tokens WHERE used_at IS NOT NULL") == 2
        smtp.mode = "550"
        register(srv, "quin@example.org")
        wait_job(srv, h, "quin@example.org", lambda j: j["state"] == "dead", "dead after 550")
        assert pg.scalar("SELECT class || ' ' || code FROM mail_suppressions "
                         "WHERE address = 'quin@example.org'") == "account 550"
        r = requests.get(srv.url + "/api/v1/admin/mail/suppressions", headers=h,
                         params={"class": "account", "limit": 5}, timeout=10)
        assert [x["address"] for x in r.json()["suppressions"]] == ["quin@example.org"], r.text
        r = requests.delete(srv.url + "/api/v1/admin/mail/suppressions", headers=h,
                            params={"address": "quin@example.org", "class": "account"},
                            timeout=10)
        assert r.status_code == 204
        srv.stop()
    finally:
        smtp.stop()
        pg.drop()


def test_sealed_vars_under_another_secret_fail_invalid(keel, tmp_path):
    """A mail job whose sealed values cannot be opened (JWT_SECRET changed
    between enqueue and send) is dead at once as invalid: nothing sent."""
    smtp = Smtp()
    try:
        env = dict(QUICK, SMTP_URL=smtp.url, JOBS_ENABLED="false",
                   DATABASE_URL="sqlite:%s" % (tmp_path / "shared.db"))
        first = keel(**env)
        register(first, "fay@example.org")
        first.stop()
        env = dict(env, JOBS_ENABLED="true",
                   JWT_SECRET="another-secret-0123456789abcdef0123456789")
        srv = keel(**env)
        h = admin(srv, env)
        job = wait_job(srv, h, "fay@example.org", lambda j: j["state"] == "dead",
                       "the job with unreadable sealed values dead")
        assert job["attempt"] == 1 and "sealed_vars cannot be opened" in job["errors"][-1]["error"]
        assert scrape_metric(srv.port, "mail_jobs_total", result="invalid") == 1
        assert smtp.messages == [] and smtp.ehlos == 0
    finally:
        smtp.stop()


def test_sigterm_during_a_hung_delivery_exits_clean(keel):
    """A server that takes the DATA and never answers: SIGTERM waits
    JOBS_SHUTDOWN_GRACE for the delivery, then exits 0 without freeing the
    mailer under it (no crash, no sanitizer report); the job stays running
    for the rescue."""
    import asyncio
    from aiosmtpd.controller import Controller
    got_data = []

    class Hang:
        async def handle_DATA(self, server, session, envelope):
            got_data.append(1)
            await asyncio.sleep(30)
            return "250 too late"

    port = free_port()
    ctl = Controller(Hang(), hostname="127.0.0.1", port=port)
    ctl.start()
    try:
        env = dict(QUICK, SMTP_URL="smtp://127.0.0.1:%d" % port, JOBS_SHUTDOWN_GRACE="1s")
        srv = keel(**env)
        register(srv, "gus@example.org")
        wait_for(lambda: got_data, timeout=10, what="the DATA at the hanging server")
        assert srv.stop() == 0
        assert "still running at exit" in srv.stdout()
    finally:
        ctl.stop()
