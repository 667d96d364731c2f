"""The operator endpoints of /distributed/: info (public), config and
redis/status (admin or an API key with admin:access), with and without
Redis, and with Redis down."""
import requests

from conftest import SLACK, run_cli

SECRET = "ops-test-secret-0123456789abcdef0123456789"
PW = "correct horse battery staple"
BASE_ENV = {"JWT_SECRET": SECRET, "PASSWORD_HASH_MEMORY": "8mb", "PASSWORD_HASH_OPS": "1",
            "INSTANCE_ID": "test-instance-1", "REGION": "eu-test", "ZONE": "b"}


def cli(srv, env, args):
    p = run_cli(args, env=env, cwd=srv.workdir)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def get(srv, path, **headers):
    return requests.get(srv.url + path, headers=headers, timeout=10 * SLACK)


def test_info_is_public(keel):
    srv = keel(**BASE_ENV)
    r = get(srv, "/distributed/info")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["instance_id"] == "test-instance-1"
    assert doc["region"] == "eu-test" and doc["zone"] == "b"
    assert doc["service"] == "keel" and doc["redis"] is False
    assert doc["uptime_s"] >= 0 and doc["version"]


def test_config_needs_admin_and_redacts(keel):
    srv = keel(**BASE_ENV)
    assert get(srv, "/distributed/config").status_code == 401
    key = cli(srv, BASE_ENV, ["apikey", "create", "--name", "ops", "--scopes", "admin:access"])
    weak = cli(srv, BASE_ENV, ["apikey", "create", "--name", "ro", "--scopes", "users:read"])
    assert get(srv, "/distributed/config", **{"X-API-Key": weak}).status_code == 403
    r = get(srv, "/distributed/config", **{"X-API-Key": key})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["JWT_SECRET"] == "[REDACTED]"
    assert SECRET not in r.text
    assert doc["INSTANCE_ID"] == "test-instance-1"
    assert r.headers["Cache-Control"] == "no-store"
    # an admin user's token works too
    cli(srv, dict(BASE_ENV, KEEL_ADMIN_PASSWORD=PW),
        ["user", "create", "--email", "ops@example.com", "--role", "admin"])
    tok = requests.post(srv.url + "/api/v1/auth/login",
                        json={"email": "ops@example.com", "password": PW}).json()["access_token"]
    assert get(srv, "/distributed/config", Authorization="Bearer " + tok).status_code == 200


def test_redis_status_without_redis(keel):
    srv = keel(**BASE_ENV)
    key = cli(srv, BASE_ENV, ["apikey", "create", "--name", "ops", "--scopes", "admin:access"])
    r = get(srv, "/distributed/redis/status", **{"X-API-Key": key})
    assert r.status_code == 200 and r.json()["configured"] is False, r.text


def test_redis_status_with_redis_up_and_down(keel, redis_server):
    env = dict(BASE_ENV, REDIS_URL=redis_server.url)
    srv = keel(**env)
    key = cli(srv, env, ["apikey", "create", "--name", "ops", "--scopes", "admin:access"])
    r = get(srv, "/distributed/redis/status", **{"X-API-Key": key})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["info"]["redis_version"] and doc["info"]["role"] == "master", doc
    assert get(srv, "/distributed/info").json()["redis"] is True
    redis_server.kill()
    r = get(srv, "/distributed/redis/status", **{"X-API-Key": key})
    assert r.status_code == 200, r.text
    assert r.json()["info"] is None and r.json()["info_error"], r.text
