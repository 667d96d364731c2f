"""E-mail end to end against a real SMTP server (aiosmtpd, python3-aiosmtpd,
started here on a free loopback port): `keel mail send` and
POST /api/v1/admin/mail/send deliver a message with the right headers,
both parts, the escaped template and an RFC 2047 subject; the verdicts
(451 transient, 550 permanent, no server transient, AUTH refused
transient); CR/LF in a value refused before anything is sent; one SMTP
connection reused for consecutive mails of a pool thread; and, without
SMTP_URL, the log line and GET /api/v1/admin/mail/outbox."""
import email
import email.policy
import json
import ssl
import subprocess
import threading

import pytest
import requests

from conftest import SLACK, free_port, run_cli, scrape_metric, wait_for

PW = "correct horse battery staple"
FAST = {"PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1",
        "JWT_SECRET": "e2e-secret-0123456789abcdef0123456789abcdef"}
VARS = {"name": "<b>Ann</b> & Co", "service": "K\u00e9el", "link": "https://x.test/r?t=1&u=2",
        "expires_minutes": 30}


class Smtp:
    """aiosmtpd on 127.0.0.1:port; `mode` picks the answer to RCPT."""

    def __init__(self, user=None, password=None, port=None, **extra):
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult
        self.messages = []
        self.tls = []
        self.ehlos = 0
        self.mode = "ok"
        self.lock = threading.Lock()
        smtp = self

        class Handler:
            async def handle_EHLO(self, server, session, envelope, hostname, responses):
                with smtp.lock:
                    smtp.ehlos += 1
                session.host_name = hostname
                return responses

            async def handle_RCPT(self, server, session, envelope, address, options):
                if smtp.mode == "451":
                    return "451 4.3.0 mailbox busy, try again later"
                if smtp.mode == "550":
                    return "550 5.1.1 no such user here"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                with smtp.lock:
                    smtp.messages.append((envelope.mail_from, list(envelope.rcpt_tos),
                                          envelope.content))
                    smtp.tls.append(bool(session.ssl))
                return "250 2.0.0 queued as e2e"

        kw = {}
        if user:
            def auth(server, session, envelope, mechanism, data):
                ok = data.login == user.encode() and data.password == password.encode()
                return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers 535
            kw = {"authenticator": auth, "auth_require_tls": False}
        kw.update(extra)
        self.port = port or free_port()
        self.ctl = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kw)
        self.ctl.start()
        self.url = "smtp://127.0.0.1:%d" % self.port

    def stop(self):
        self.ctl.stop()

    def wait(self, n):
        return wait_for(lambda: len(self.messages) >= n and self.messages, timeout=10,
                        what="%d message(s) at the SMTP server" % n)


@pytest.fixture
def smtp():
    s = Smtp()
    yield s
    s.stop()


def send_cli(env, *args, cwd=None):
    p = run_cli(["mail", "send"] + list(args), env=env, cwd=cwd)
    line = [x for x in p.stdout.splitlines() if x.startswith('{"verdict"')]
    assert line, "no result line (status %d)\nstdout:\n%s\nstderr:\n%s" % (
        p.returncode, p.stdout[-3000:], p.stderr[-3000:])
    return p.returncode, json.loads(line[-1]), p


def reset_args(to="ann@example.org", nid="notif-1", **vars_):
    v = dict(VARS, **vars_)
    return ["--to", to, "--to-name", "Ann L\u00e9e", "--template", "password_reset",
            "--vars", json.dumps(v), "--notification-id", nid]


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_cli_delivers_both_parts_escaped_template_rfc2047(smtp, tmp_path):
    env = {"SMTP_URL": smtp.url, "MAIL_FROM": "Acme Accounts <accounts@acme.test>"}
    rc, res, _ = send_cli(env, *reset_args(), cwd=tmp_path)
    assert rc == 0 and res["verdict"] == "sent" and res["code"] == 250, res
    assert "queued as e2e" in res["reply"]
    mail_from, rcpts, raw = smtp.wait(1)[0]
    assert mail_from == "accounts@acme.test" and rcpts == ["ann@example.org"]
    for line in raw.split(b"\r\n"):
        assert len(line) <= 998
    m = parse(raw)
    assert m["From"] == "Acme Accounts <accounts@acme.test>"
    assert str(m["To"]) == "Ann L\u00e9e <ann@example.org>"
    assert str(m["Subject"]) == "Reset your K\u00e9el password"
    head = raw.split(b"\r\n\r\n")[0].decode("ascii")  # headers are ASCII
    assert "Subject: =?UTF-8?B?" in head
    assert m["MIME-Version"] == "1.0" and m["Date"]
    assert m["Message-ID"] == res["message_id"] and m["Message-ID"].endswith("@acme.test>")
    assert m.get_content_type() == "multipart/alternative"
    text = m.get_body(("plain",)).get_content()
    html = m.get_body(("html",)).get_content()
    assert "Hello <b>Ann</b> & Co," in text and "https://x.test/r?t=1&u=2" in text
    assert "Hello &lt;b&gt;Ann&lt;/b&gt; &amp; Co," in html and "<b>Ann" not in html
    assert 'href="https://x.test/r?t=1&amp;u=2"' in html

    # the same (notification, recipient): the same Message-ID; another recipient: another
    rc, again, _ = send_cli(env, *reset_args(), cwd=tmp_path)
    rc2, other, _ = send_cli(env, *reset_args(to="bob@example.org"), cwd=tmp_path)
    assert rc == 0 and rc2 == 0
    assert again["message_id"] == res["message_id"] != other["message_id"]
    smtp.wait(3)

    # a text that would end the SMTP DATA early or look like a header
    text = "line one\n.\n.hidden dot\nBcc: eve@evil.test\n" + "x" * 2000 + "\n"
    rc, res, _ = send_cli(env, "--to", "ann@example.org", "--subject", "plain ascii",
                          "--text", text, cwd=tmp_path)
    assert rc == 0, res
    m = parse(smtp.wait(4)[3][2])
    assert m["Subject"] == "plain ascii" and m["Bcc"] is None
    assert m.get_content_type() == "text/plain"
    assert m.get_content().replace("\r\n", "\n") == text


def test_verdicts_451_550_down(smtp, tmp_path):
    env = {"SMTP_URL": smtp.url}
    smtp.mode = "451"
    rc, res, _ = send_cli(env, *reset_args(), cwd=tmp_path)
    assert (rc, res["verdict"], res["code"]) == (75, "transient", 451), res
    assert "try again later" in res["reply"]
    smtp.mode = "550"
    rc, res, _ = send_cli(env, *reset_args(), cwd=tmp_path)
    assert (rc, res["verdict"], res["code"]) == (1, "permanent", 550), res
    assert "no such user" in res["reply"]
    smtp.mode = "ok"
    rc, res, _ = send_cli(env, *reset_args(), cwd=tmp_path)
    assert rc == 0 and res["verdict"] == "sent"
    assert len(smtp.wait(1)) == 1  # only the last one arrived
    # nothing listening: transient, no reply code
    rc, res, _ = send_cli({"SMTP_URL": "smtp://127.0.0.1:%d" % free_port(),
                           "SMTP_CONNECT_TIMEOUT": "2s"}, *reset_args(), cwd=tmp_path)
    assert (rc, res["verdict"], res["code"]) == (75, "transient", 0), res


@pytest.mark.parametrize("args,needle", [
    (["--to-name", "Ann\r\nBcc: eve@evil.test"], "to name: contains a line break"),
    (["--to", "ann@example.org\r\nBcc: eve@evil.test"], "to: contains a line break"),
    (["--vars", json.dumps(dict(VARS, service="Acme\r\nBcc: eve@evil.test"))],
     "subject holds a line break"),
    (["--notification-id", "n\r\nBcc: eve@evil.test"], "notification id: contains a line break"),
])
def test_crlf_refused_nothing_sent(smtp, tmp_path, args, needle):
    base = reset_args()
    for i in range(0, len(args), 2):  # replace the option's value
        base[base.index(args[i]) + 1] = args[i + 1]
    rc, res, _ = send_cli({"SMTP_URL": smtp.url}, *base, cwd=tmp_path)
    assert (rc, res["verdict"]) == (2, "invalid"), res
    assert needle in res["reply"]
    assert smtp.ehlos == 0 and smtp.messages == []  # never even connected


def test_auth_and_refused_login(tmp_path):
    s = Smtp(user="mailer", password="s3cret-smtp-pw")
    try:
        env = {"SMTP_URL": s.url, "SMTP_USER": "mailer", "SMTP_PASSWORD": "s3cret-smtp-pw"}
        rc, res, _ = send_cli(env, *reset_args(), cwd=tmp_path)
        assert rc == 0 and res["verdict"] == "sent", res
        s.wait(1)
        env["SMTP_PASSWORD"] = "wrong-pw-xyz"
        rc, res, p = send_cli(env, *reset_args(), cwd=tmp_path)
        # a refused login is our configuration, not the address: transient
        assert (rc, res["verdict"]) == (75, "transient"), res
        assert res["code"] == 535 and res["reply"].startswith("535"), res
        assert "wrong-pw-xyz" not in p.stdout + p.stderr
    finally:
        s.stop()


def test_starttls_required_and_verified(tmp_path):
    key, crt = tmp_path / "key.pem", tmp_path / "crt.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(crt), str(key))
    s = Smtp(tls_context=ctx, require_starttls=True)
    try:
        env = {"SMTP_URL": s.url, "SMTP_TLS": "required", "SMTP_TLS_VERIFY": "false"}
        rc, res, _ = send_cli(env, *reset_args(), cwd=tmp_path)
        assert rc == 0 and res["verdict"] == "sent", res
        s.wait(1)
        assert s.tls == [True]  # upgraded with STARTTLS before MAIL FROM
        # the certificate is checked by default: a self-signed one is refused
        rc, res, _ = send_cli(dict(env, SMTP_TLS_VERIFY="true"), *reset_args(), cwd=tmp_path)
        assert (rc, res["verdict"]) == (75, "transient"), res
        assert "certificate" in res["reply"], res
        assert len(s.messages) == 1
    finally:
        s.stop()
    # smtps://: TLS from the first byte
    s = Smtp(ssl_context=ctx)
    try:
        rc, res, _ = send_cli({"SMTP_URL": "smtps://127.0.0.1:%d" % s.port,
                               "SMTP_TLS_VERIFY": "false"}, *reset_args(), cwd=tmp_path)
        assert rc == 0 and res["verdict"] == "sent", res
        s.wait(1)  # the server speaks TLS only: smtp:// to it gets nowhere
        rc, res, _ = send_cli({"SMTP_URL": s.url, "SMTP_CONNECT_TIMEOUT": "1s"},
                              *reset_args(), cwd=tmp_path)
        assert (rc, res["verdict"]) == (75, "transient") and len(s.messages) == 1, res
    finally:
        s.stop()
    # SMTP_TLS=required against a server without STARTTLS: nothing sent in clear
    plain = Smtp()
    try:
        rc, res, _ = send_cli({"SMTP_URL": plain.url, "SMTP_TLS": "required"}, *reset_args(),
                              cwd=tmp_path)
        assert (rc, res["verdict"]) == (75, "transient"), res
        assert plain.ehlos >= 1 and plain.messages == []
        rc, res, _ = send_cli({"SMTP_URL": plain.url}, *reset_args(), cwd=tmp_path)
        assert rc == 0 and plain.tls == [False]  # try: clear when not offered
    finally:
        plain.stop()


def admin(srv, env):
    p = run_cli(["user", "create", "--email", "root@example.com", "--role", "admin"],
                env=dict(env, KEEL_ADMIN_PASSWORD=PW), cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    r = requests.post(srv.url + "/api/v1/auth/login",
                      json={"email": "root@example.com", "password": PW}, timeout=20 * SLACK)
    assert r.status_code == 200, r.text
    return {"Authorization": "Bearer " + r.json()["access_token"]}


def test_http_send_reuses_one_connection(keel, smtp):
    env = dict(FAST, SMTP_URL=smtp.url, WORK_POOL_SIZE="1")
    srv = keel(**env)
    h = admin(srv, env)
    url = srv.url + "/api/v1/admin/mail/send"
    for i in range(3):
        r = requests.post(url, headers=h, timeout=20 * SLACK,
                          json={"to": "ann@example.org", "template": "password_reset",
                                "vars": VARS, "notification_id": "n%d" % i})
        assert r.status_code == 200, r.text
        assert r.json()["verdict"] == "sent"
    assert len(smtp.wait(3)) == 3
    assert smtp.ehlos == 1  # one pool thread, one SMTP session for the three
    assert scrape_metric(srv.port, "mail_deliveries_total", verdict="sent") == 3

    # the server restarts: the kept connection is dead; the next mail
    # still goes out (on a new connection), once
    smtp.stop()
    again = Smtp(port=smtp.port)
    try:
        r = requests.post(url, headers=h, timeout=20 * SLACK,
                          json={"to": "ann@example.org", "subject": "after restart", "text": "t"})
        assert r.status_code == 200, r.text
        assert len(again.wait(1)) == 1 and again.ehlos == 1
    finally:
        again.stop()
    smtp.__init__(port=smtp.port)
    smtp.mode = "451"
    r = requests.post(url, headers=h, timeout=20 * SLACK,
                      json={"to": "ann@example.org", "subject": "s", "text": "t"})
    assert r.status_code == 502 and r.headers["Content-Type"].startswith("application/problem+json")
    assert (r.json()["verdict"], r.json()["code"]) == ("transient", 451)
    smtp.mode = "550"
    r = requests.post(url, headers=h, timeout=20 * SLACK,
                      json={"to": "ann@example.org", "subject": "s", "text": "t"})
    assert r.status_code == 502 and r.json()["verdict"] == "permanent"
    r = requests.post(url, headers=h, timeout=20 * SLACK,
                      json={"to": "ann@example.org", "to_name": "A\r\nBcc: e@evil.test",
                            "subject": "s", "text": "t"})
    assert r.status_code == 422 and r.json()["verdict"] == "invalid"
    assert "line break" in r.json()["detail"]
    r = requests.post(url, headers=h, timeout=20 * SLACK, json={"to": "ann@example.org"})
    assert r.status_code == 422
    assert scrape_metric(srv.port, "mail_deliveries_total", verdict="transient") == 1
    assert scrape_metric(srv.port, "mail_deliveries_total", verdict="permanent") == 1


def test_outbox_without_smtp(keel):
    env = dict(FAST)
    srv = keel(**env)
    h = admin(srv, env)
    r = requests.get(srv.url + "/api/v1/admin/mail/outbox", timeout=10 * SLACK)
    assert r.status_code == 401
    r = requests.post(srv.url + "/api/v1/admin/mail/send", headers=h, timeout=20 * SLACK,
                      json={"to": "ann@example.org", "template": "alert",
                            "vars": {"title": "Disk <full>", "severity": "critical",
                                     "service": "db", "at": "now", "message": "95%",
                                     "link": "https://x.test"}})
    assert r.status_code == 200, r.text
    mid = r.json()["message_id"]
    box = requests.get(srv.url + "/api/v1/admin/mail/outbox", headers=h, timeout=10 * SLACK)
    assert box.status_code == 200
    doc = box.json()
    assert doc["smtp"] is False and doc["count"] == 1
    item = doc["items"][0]
    assert item["subject"] == "[critical] Disk <full>" and item["message_id"] == mid
    assert item["headers"]["Message-ID"] == mid and "Disk &lt;full&gt;" in item["html"]
    assert "Severity: critical" in item["text"]
    line = wait_for(lambda: [json.loads(x) for x in srv.stdout().splitlines()
                             if '"mail.outbox"' in x], what="the mail.outbox log line")[0]
    assert line["to"] == "ann@example.org" and line["message_id"] == mid
    assert line["headers"]["Subject"] == "[critical] Disk <full>"
    assert "html" not in line and "Severity: critical" in line["text"]


def test_production_log_has_headers_only(keel):
    """In production without SMTP_URL the log line keeps no text part:
    reset and verification links are credentials."""
    env = dict(FAST, KEEL_ENV="production", ENABLE_DEMO_ROUTES="false")
    srv = keel(**env)
    h = admin(srv, env)
    r = requests.post(srv.url + "/api/v1/admin/mail/send", headers=h, timeout=20 * SLACK,
                      json={"to": "ann@example.org", "template": "password_reset",
                            "vars": dict(VARS, link="https://x.test/r?token=SECRET-LINK-123")})
    assert r.status_code == 200, r.text
    line = wait_for(lambda: [json.loads(x) for x in srv.stdout().splitlines()
                             if '"mail.outbox"' in x], what="the mail.outbox log line")[0]
    assert line["subject"] == "Reset your K\u00e9el password" and "text" not in line
    assert "SECRET-LINK-123" not in srv.stdout() + srv.stderr()


@pytest.mark.parametrize("env,needle", [
    ({"CRON_JOBS": "ok=@daily=>a.b; nightly=61 3 * * *=>x"},
     "keel: CRON_JOBS: entry 2 (nightly): minute: 61 is out of range 0-59"),
    ({"CRON_JOBS": "a=@daily"}, "keel: CRON_JOBS: entry 1: expected name = expression => kind"),
    ({"MAIL_FROM": "Acme <not an address>"}, "keel: MAIL_FROM:"),
    ({"SMTP_URL": "http://mail.test"}, "keel: SMTP_URL:"),
    ({"SMTP_TLS": "maybe"}, "keel: SMTP_TLS:"),
])
def test_bad_mail_and_cron_config_stops_startup(tmp_path, env, needle):
    p = run_cli(["serve", "--print-config"], env=env, cwd=tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert needle in p.stderr, p.stderr


def test_good_cron_jobs_and_secrets_redacted(tmp_path):
    p = run_cli(["serve", "--print-config"], cwd=tmp_path,
                env={"CRON_JOBS": "digest = @every 15m => mail.digest",
                     "SMTP_PASSWORD": "pw-never-printed", "SMTP_URL": "smtp://u:urlpw@h:587"})
    assert p.returncode == 0, p.stderr
    assert "CRON_JOBS=digest = @every 15m => mail.digest" in p.stdout
    assert "pw-never-printed" not in p.stdout and "urlpw" not in p.stdout
