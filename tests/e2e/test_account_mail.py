"""Password reset and e-mail verification (src/app/accounts.c, docs/api.md),
end to end through the mail queue with no SMTP_URL: the mails land in the
development outbox (GET /api/v1/admin/mail/outbox), where the test reads
the links as a user would read their mail.

- forgot: 202 with the same body whether the address has an account; one
  mail only for the account; the token is single use, stored as a hash,
  expires; a reset ends every session (access and refresh tokens) and
  needs the password policy;
- verification: a mail at registration, POST /auth/verify, the user's
  email_verified; resend at most once per AUTH_VERIFY_RESEND_INTERVAL;
- AUTH_REQUIRE_VERIFIED_EMAIL=true: no tokens at registration, login and
  refresh 403 until verified."""
import hashlib
import re
import sqlite3
import time

import pytest
import requests

from conftest import SLACK, run_cli, wait_for, wait_past_second
from test_mail import FAST, PW, admin

QUICK = dict(FAST, JOBS_POLL_INTERVAL="50ms")
NEW_PW = "a brand new passphrase 42"


def post(srv, path, body, headers=None):
    return requests.post(srv.url + path, json=body, headers=headers, timeout=20 * SLACK)


def outbox(srv, h):
    r = requests.get(srv.url + "/api/v1/admin/mail/outbox", headers=h, timeout=10 * SLACK)
    assert r.status_code == 200, r.text
    return r.json()["items"]


def mails_to(srv, h, addr, subject_part):
    return [m for m in outbox(srv, h) if m["to"] == addr and subject_part in m["subject"]]


def wait_mail(srv, h, addr, subject_part, n=1):
    return wait_for(lambda: (lambda ms: ms if len(ms) >= n else None)(
        mails_to(srv, h, addr, subject_part)), timeout=10, what="%d mail(s) to %s" % (n, addr))


def token_of(mail):
    return re.search(r"[?&]token=([A-Za-z0-9_-]+)", mail["text"]).group(1)


def jobs_done(srv, h, kind):
    """Every job of kind finished (none pending)."""
    r = requests.get(srv.url + "/api/v1/admin/jobs", params={"kind": kind}, headers=h,
                     timeout=10 * SLACK)
    jobs = r.json()["jobs"]
    return jobs if jobs and all(j["state"] in ("completed", "cancelled", "dead")
                                for j in jobs) else None


def problem(r, status):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/problem+json"), r.headers
    return r.json()


def test_password_reset(keel):
    srv = keel(**QUICK)
    h = admin(srv, QUICK)
    reg = post(srv, "/api/v1/auth/register", {"email": "ann@example.org", "password": PW,
                                              "name": "Ann"})
    assert reg.status_code == 201, reg.text
    old_access = {"Authorization": "Bearer " + reg.json()["access_token"]}
    old_refresh = reg.json()["refresh_token"]
    t_reg = time.time()
    assert reg.json()["user"]["email_verified"] is False

    # the same answer for an account and for nobody; one mail, to the account
    a = post(srv, "/api/v1/auth/password/forgot", {"email": " Ann@Example.org "})
    b = post(srv, "/api/v1/auth/password/forgot", {"email": "nobody@example.org"})
    assert a.status_code == b.status_code == 202 and a.json() == b.json()
    assert a.headers["Cache-Control"] == "no-store"
    mail = wait_mail(srv, h, "ann@example.org", "Reset")[0]
    # the same work for both: one lookup job each, answered before it ran
    lookups = wait_for(lambda: jobs_done(srv, h, "account.password_reset"), timeout=10,
                       what="both lookups done")
    assert sorted(j["args"]["email"] for j in lookups) == ["ann@example.org",
                                                           "nobody@example.org"]
    assert [m for m in outbox(srv, h) if m["to"] == "nobody@example.org"] == []
    assert "expires in 30 minutes" in mail["text"]
    token = token_of(mail)
    assert mail["text"].count("http://localhost:8080/reset-password?token=" + token) == 1

    # stored as a hash only: the link in the mail job's args is sealed, so
    # neither the jobs table nor the admin API shows the token
    db = sqlite3.connect(str(srv.workdir / "data" / "keel.db"))
    rows = db.execute("SELECT token_hash, expires_at - created_at FROM account_tokens "
                      "WHERE purpose = 'password_reset'").fetchall()
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(), 1800)]
    args = [a for (a,) in db.execute("SELECT args FROM keel_jobs WHERE kind = 'mail.send'")]
    assert len(args) == 2 and all("sealed_vars" in a for a in args)  # verify + reset
    assert not any(token in a or "token=" in a for a in args)
    listed = requests.get(srv.url + "/api/v1/admin/jobs", headers=h, timeout=10).text
    assert token not in listed and "reset-password" not in listed

    # bad input: 422 for the policy and shape, 400 for a token that is not one
    problem(post(srv, "/api/v1/auth/password/reset", {"token": token, "password": "short"}), 422)
    problem(post(srv, "/api/v1/auth/password/reset", {"token": token}), 422)
    problem(post(srv, "/api/v1/auth/password/reset", {"token": 5, "password": NEW_PW}), 422)
    p = problem(post(srv, "/api/v1/auth/password/reset", {"token": "x" + token,
                                                          "password": NEW_PW}), 400)
    assert "invalid, used or expired" in p["detail"]
    problem(requests.post(srv.url + "/api/v1/auth/password/reset", data="{", timeout=10,
                          headers={"Content-Type": "application/json"}), 400)

    # sessions end at one-second granularity (tokens_valid_after): the reset
    # must fall in a later second than the tokens it ends
    wait_past_second(t_reg)
    t0 = time.time()
    r = post(srv, "/api/v1/auth/password/reset", {"token": token, "password": NEW_PW})
    assert r.status_code == 204, r.text
    # single use
    problem(post(srv, "/api/v1/auth/password/reset", {"token": token, "password": NEW_PW}), 400)
    # every session ended: the old access and refresh tokens are refused
    assert requests.get(srv.url + "/api/v1/auth/me", headers=old_access, timeout=10).status_code == 401
    problem(post(srv, "/api/v1/auth/refresh", {"refresh_token": old_refresh}), 401)
    problem(post(srv, "/api/v1/auth/login", {"email": "ann@example.org", "password": PW}), 401)
    wait_past_second(t0)  # a token of the reset's own second is valid after it too
    r = post(srv, "/api/v1/auth/login", {"email": "ann@example.org", "password": NEW_PW})
    assert r.status_code == 200, r.text
    me = requests.get(srv.url + "/api/v1/auth/me", timeout=10,
                      headers={"Authorization": "Bearer " + r.json()["access_token"]})
    assert me.json()["email_verified"] is True  # the mail reached the address

    # an expired token is refused
    post(srv, "/api/v1/auth/password/forgot", {"email": "ann@example.org"})
    token2 = token_of(wait_mail(srv, h, "ann@example.org", "Reset", n=2)[-1])
    db.execute("UPDATE account_tokens SET expires_at = created_at - 1 WHERE token_hash = ?",
               (hashlib.sha256(token2.encode()).hexdigest(),))
    db.commit()
    db.close()
    problem(post(srv, "/api/v1/auth/password/reset", {"token": token2, "password": NEW_PW}), 400)


def test_verification_and_resend_interval(keel):
    env = dict(QUICK, AUTH_VERIFY_RESEND_INTERVAL="60s", AUTH_MAIL_SERVICE_NAME="Acme",
               AUTH_VERIFY_EMAIL_URL="https://app.acme.test/verify?src=mail")
    srv = keel(**env)
    h = admin(srv, env)
    reg = post(srv, "/api/v1/auth/register", {"email": "bob@example.org", "password": PW,
                                              "name": "<i>Bob</i>"})
    assert reg.status_code == 201
    auth = {"Authorization": "Bearer " + reg.json()["access_token"]}
    mail = wait_mail(srv, h, "bob@example.org", "Confirm")[0]
    assert mail["subject"] == "Confirm your e-mail address for Acme"
    assert "https://app.acme.test/verify?src=mail&token=" in mail["text"]
    assert "Hello &lt;i&gt;Bob&lt;/i&gt;," in mail["html"]
    token = token_of(mail)

    # resend within the interval: 202, nothing sent
    r = post(srv, "/api/v1/auth/verify/resend", {"email": "bob@example.org"})
    assert r.status_code == 202
    wait_for(lambda: jobs_done(srv, h, "account.verify_email"), timeout=10, what="the lookup")
    assert len(mails_to(srv, h, "bob@example.org", "Confirm")) == 1
    # after it (the last mail's token made a minute older): a second mail
    db = sqlite3.connect(str(srv.workdir / "data" / "keel.db"))
    db.execute("UPDATE account_tokens SET created_at = created_at - 61")
    db.commit()
    db.close()
    assert post(srv, "/api/v1/auth/verify/resend", {"email": "bob@example.org"}).status_code == 202
    second = wait_mail(srv, h, "bob@example.org", "Confirm", n=2)[-1]
    assert token_of(second) != token

    problem(post(srv, "/api/v1/auth/verify", {"token": "nope"}), 400)
    problem(post(srv, "/api/v1/auth/verify", {}), 422)
    r = post(srv, "/api/v1/auth/verify", {"token": token})
    assert r.status_code == 200, r.text
    assert r.json()["email_verified"] is True and r.json()["email"] == "bob@example.org"
    me = requests.get(srv.url + "/api/v1/auth/me", headers=auth, timeout=10)
    assert me.json()["email_verified"] is True  # the cached copy went
    problem(post(srv, "/api/v1/auth/verify", {"token": token}), 400)  # single use
    # verified: a resend sends nothing
    n = len(outbox(srv, h))
    assert post(srv, "/api/v1/auth/verify/resend", {"email": "bob@example.org"}).status_code == 202
    time.sleep(0.3)
    wait_for(lambda: jobs_done(srv, h, "account.verify_email"), timeout=10, what="the lookup")
    assert len(outbox(srv, h)) == n

    # a new address is unverified and gets its own mail; a link sent to the
    # old address no longer verifies anything
    r = requests.patch(srv.url + "/api/v1/auth/me", headers=auth, timeout=10,
                       json={"email": "bob2@example.org"})
    assert r.status_code == 200 and r.json()["email_verified"] is False, r.text
    new = token_of(wait_mail(srv, h, "bob2@example.org", "Confirm")[0])
    p = problem(post(srv, "/api/v1/auth/verify", {"token": token_of(second)}), 409)
    assert "no longer" in p["detail"]
    r = post(srv, "/api/v1/auth/verify", {"token": new})
    assert r.status_code == 200 and r.json()["email"] == "bob2@example.org"
    assert r.json()["email_verified"] is True


def test_require_verified_email(keel):
    env = dict(QUICK, AUTH_REQUIRE_VERIFIED_EMAIL="true")
    srv = keel(**env)
    h = admin(srv, env)
    reg = post(srv, "/api/v1/auth/register", {"email": "cy@example.org", "password": PW})
    assert reg.status_code == 201, reg.text
    body = reg.json()
    assert body["verification_required"] is True and "access_token" not in body
    assert body["user"]["email_verified"] is False
    p = problem(post(srv, "/api/v1/auth/login", {"email": "cy@example.org", "password": PW}), 403)
    assert "not verified" in p["detail"] and "/api/v1/auth/verify/resend" in p["detail"]
    # a wrong password is still 401: the 403 comes only with the right one
    problem(post(srv, "/api/v1/auth/login", {"email": "cy@example.org", "password": "wrong pw!"}),
            401)
    token = token_of(wait_mail(srv, h, "cy@example.org", "Confirm")[0])
    assert post(srv, "/api/v1/auth/verify", {"token": token}).status_code == 200
    r = post(srv, "/api/v1/auth/login", {"email": "cy@example.org", "password": PW})
    assert r.status_code == 200, r.text
    assert post(srv, "/api/v1/auth/refresh",
                {"refresh_token": r.json()["refresh_token"]}).status_code == 200

    # an address accounts accept but mail cannot reach (non-ASCII): the
    # account is made, no token, no mail
    r = post(srv, "/api/v1/auth/register", {"email": "j\u00f6rg@example.org", "password": PW})
    assert r.status_code == 201, r.text
    assert srv.wait_log(lambda e: e.get("msg", "").startswith("account mail not sent"))


@pytest.mark.parametrize("env,needle", [
    ({"AUTH_PASSWORD_RESET_URL": "ftp://x.test/reset"}, "keel: AUTH_PASSWORD_RESET_URL:"),
    ({"AUTH_VERIFY_EMAIL_URL": "https://x.test/v?a=<b>"}, "keel: AUTH_VERIFY_EMAIL_URL:"),
    ({"AUTH_VERIFY_EMAIL_URL": ""}, "keel: AUTH_VERIFY_EMAIL_URL:"),
    ({"AUTH_PASSWORD_RESET_TTL": "10s"}, "keel: AUTH_PASSWORD_RESET_TTL:"),
    ({"AUTH_REQUIRE_VERIFIED_EMAIL": "maybe"}, "keel: AUTH_REQUIRE_VERIFIED_EMAIL:"),
    ({"MAIL_JOB_MAX_ATTEMPTS": "0"}, "keel: MAIL_JOB_MAX_ATTEMPTS:"),
])
def test_bad_account_config_stops_startup(tmp_path, env, needle):
    p = run_cli(["serve", "--print-config"], env=env, cwd=tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert needle in p.stderr, p.stderr
