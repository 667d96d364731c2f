"""The events resource and the audit log end to end, against the real binary,
on SQLite and on a real PostgreSQL (a throw-away cluster, a fresh database
per test): lifecycle transitions (every pair, allowed and refused),
ETag/If-Match (428, 412, two PATCHes racing on one version), cursor pages
stable under inserts, restricted visibility (lists, counts, search, trees,
GET by id), legal hold (423), hierarchy (cycles, depth, parent waits for
children), assignments and delegation, the audit chain verified, then
tampered with in the database and the break found at the right record,
and concurrent writers on one tree (no lost update, chain intact)."""
import datetime
import json
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import wait_for
from test_auth import PW, Api, env, problem
from test_migrate import Pg

STATES = ["draft", "scheduled", "active", "completed", "cancelled", "archived"]
ALLOWED = {("draft", "scheduled"), ("draft", "cancelled"), ("scheduled", "active"),
           ("scheduled", "cancelled"), ("active", "completed"), ("active", "cancelled"),
           ("completed", "archived"), ("cancelled", "archived")}
# the shortest way from draft to each state
PATH_TO = {"draft": [], "scheduled": ["scheduled"], "active": ["scheduled", "active"],
           "completed": ["scheduled", "active", "completed"], "cancelled": ["cancelled"],
           "archived": ["cancelled", "archived"]}


class Db:
    """SQL straight into the service's database (for tampering)."""

    def __init__(self, kind, url, pg=None):
        self.kind, self.url, self.pg = kind, url, pg

    def exec(self, sql):
        if self.kind == "sqlite":
            con = sqlite3.connect(self.url[len("sqlite:"):])
            try:
                cur = con.execute(sql)
                row = cur.fetchone()
                con.commit()
                return row[0] if row else None
            finally:
                con.close()
        out = self.pg.cluster.psql(self.url, sql)
        return int(out) if out.lstrip("-").isdigit() else out


class Ev(Api):
    def user(self, email, role=None):
        if role:
            p = self.cli(["user", "create", "--email", email, "--role", role],
                         KEEL_ADMIN_PASSWORD=PW)
            assert p.returncode == 0, p.stderr
            tok = self.login(email)["access_token"]
            return tok, self.call("GET", "/auth/me", token=tok).json()["id"]
        doc = self.register(email)
        return doc["access_token"], doc["user"]["id"]

    def create(self, token, expect=201, **body):
        body.setdefault("title", "an event")
        body.setdefault("starts_at", "2030-01-01T09:00:00Z")
        r = self.call("POST", "/events", token=token, json=body)
        assert r.status_code == expect, r.text
        return r.json()

    def get(self, token, eid):
        return self.call("GET", "/events/" + eid, token=token)

    def patch(self, token, eid, version, **body):
        return self.call("PATCH", "/events/" + eid, token=token, json=body,
                         headers={"If-Match": '"%d"' % version})

    def move(self, token, eid, to, version, reason="because"):
        return self.call("POST", "/events/%s/transition" % eid, token=token,
                         json={"to": to, "reason": reason},
                         headers={"If-Match": '"%d"' % version})

    def walk(self, token, eid, states):
        ev = self.get(token, eid).json()
        for s in states:
            r = self.move(token, eid, s, ev["version"])
            assert r.status_code == 200, r.text
            ev = r.json()
        return ev


def start(keel_factory, request, tmp_path, **extra):
    if request.param == "postgres":
        pg = Pg(request.getfixturevalue("pg_cluster"))
        request.addfinalizer(pg.drop)
        url, db = pg.url, Db("postgres", pg.url, pg)
    else:
        url = "sqlite:%s" % (tmp_path / "events.db")
        db = Db("sqlite", url)
    # the sweeps run by hand here (POST /admin/events/...), not on their schedules
    e = env(url, **dict({"EVENTS_MAX_DEPTH": "3", "EVENTS_RETENTION_SCHEDULE": "",
                         "EVENTS_ESCALATION_SCHEDULE": "", "EVENTS_RECURRENCE_SCHEDULE": ""},
                        **extra))
    a = Ev(keel_factory(**e))
    a.srv_env = e
    a.db = db
    a.admin, a.admin_id = a.user("root@example.com", "admin")
    return a


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared(request, keel_module, tmp_path_factory):
    """One server per database kind for the module: tests make their own
    users and types, and filter what they count by them."""
    return start(keel_module, request, tmp_path_factory.mktemp("events"))


def with_users(a):
    tag = uuid.uuid4().hex[:8]
    a.tag = tag
    a.alice, a.alice_id = a.user("alice-%s@example.com" % tag)
    a.bob, a.bob_id = a.user("bob-%s@example.com" % tag)
    return a


@pytest.fixture
def ev(shared):
    a = Ev(shared.srv)
    a.srv_env, a.db, a.admin, a.admin_id = shared.srv_env, shared.db, shared.admin, shared.admin_id
    return with_users(a)


@pytest.fixture(params=["sqlite", "postgres"])
def fresh(request, keel, tmp_path):
    """A server of its own, for the tests that count the whole audit log."""
    return with_users(start(keel, request, tmp_path))


def canonical_hash(rec):
    """hash = SHA-256("keel-audit-v1\\n" + for each field: len ":" bytes "\\n")."""
    import calendar
    import hashlib
    t = rec["at"]
    at = calendar.timegm(datetime.datetime.strptime(t[:19], "%Y-%m-%dT%H:%M:%S").timetuple())
    at = at * 1000 + int(t[20:23])
    diff = json.dumps(rec["diff"], sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    fields = [str(rec["seq"]), str(at), rec["actor_kind"], rec["actor_id"], rec["request_id"],
              rec["action"], rec["entity_type"], rec["entity_id"], diff, rec["prev_hash"]]
    h = hashlib.sha256(b"keel-audit-v1\n")
    for f in fields:
        b = f.encode()
        h.update(b"%d:" % len(b) + b + b"\n")
    return h.hexdigest()


def verify(ev):
    r = ev.call("GET", "/admin/audit/verify", token=ev.admin)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------- create / read / validate

def test_create_get_etag_and_validation(ev):
    doc = ev.create(ev.alice, title="Launch", description="the big one", tags=["a", "b-2"],
                    starts_at="2030-01-01T10:00:00+01:00", ends_at="2030-01-01T12:00:00Z",
                    custom={"room": 7}, classification="public",
                    risk={"level": "high", "score": 70}, budget={"amount": 1250.5,
                                                                 "currency": "EUR"})
    assert doc["state"] == "draft" and doc["version"] == 1 and doc["owner_id"] == ev.alice_id
    assert doc["starts_at"] == "2030-01-01T09:00:00Z" and doc["tags"] == ["a", "b-2"]
    assert doc["budget"] == {"amount": 1250.5, "currency": "EUR"}
    r = ev.get(ev.bob, doc["id"])
    assert r.status_code == 200 and r.headers["ETag"] == '"1"'
    assert r.json()["custom"] == {"room": 7}

    for body, pointer in [({"starts_at": "2030-01-01T10:00:00Z", "ends_at":
                            "2030-01-01T09:00:00Z"}, "/ends_at"),
                          ({"starts_at": "tomorrow"}, "/starts_at"),
                          ({"type": "nope"}, "/type"),
                          ({"state": "active"}, "/state"),
                          ({"classification": "secret"}, "/classification")]:
        body.setdefault("title", "x")
        body.setdefault("starts_at", "2030-01-01T09:00:00Z")
        d = problem(ev.call("POST", "/events", token=ev.alice, json=body), 422)
        assert any(e["pointer"] == pointer for e in d["errors"]), d
    problem(ev.get(ev.alice, "00000000-0000-0000-0000-000000000000"), 404)
    problem(ev.call("GET", "/events"), 401)


# ---------------------------------------------------------------- lifecycle

def test_every_transition(ev):
    """Every (from, to) pair of the six states: the allowed ones succeed,
    the others are 409 naming the allowed ones; the history keeps actor
    and reason."""
    for src in STATES:
        eid = ev.create(ev.alice)["id"]
        doc = ev.walk(ev.alice, eid, PATH_TO[src])
        assert doc["state"] == src
        version = doc["version"]
        for dst in STATES:
            r = ev.move(ev.alice, eid, dst, version)
            if (src, dst) in ALLOWED:
                assert r.status_code == 200, (src, dst, r.text)
                assert r.json()["state"] == dst and r.headers["ETag"] == '"%d"' % (version + 1)
                # back to src on a fresh event for the next pair
                eid = ev.create(ev.alice)["id"]
                version = ev.walk(ev.alice, eid, PATH_TO[src])["version"]
            else:
                d = problem(r, 409)
                allowed = sorted(b for a, b in ALLOWED if a == src)
                assert sorted(d["allowed"]) == allowed, (src, dst, d)
                for s in allowed:
                    assert s in d["detail"]
        hist = ev.call("GET", "/events/%s/transitions" % eid, token=ev.alice).json()["data"]
        assert [h["to"] for h in hist] == PATH_TO[src]
        assert all(h["actor"]["id"] == ev.alice_id and h["reason"] == "because" for h in hist)


def test_if_match_required_and_stale(ev):
    doc = ev.create(ev.alice)
    eid = doc["id"]
    problem(ev.call("PATCH", "/events/" + eid, token=ev.alice, json={"title": "x"}), 428)
    problem(ev.call("POST", "/events/%s/transition" % eid, token=ev.alice,
                    json={"to": "scheduled"}), 428)
    r = ev.patch(ev.alice, eid, 1, title="second")
    assert r.status_code == 200 and r.headers["ETag"] == '"2"' and r.json()["title"] == "second"
    d = problem(ev.patch(ev.alice, eid, 1, title="lost"), 412)
    assert d["current_version"] == 2
    problem(ev.move(ev.alice, eid, "scheduled", 1), 412)
    assert ev.get(ev.alice, eid).json()["title"] == "second"
    problem(ev.patch(ev.alice, eid, 2), 422)  # nothing to change
    # bob may read an internal event but not change it
    problem(ev.patch(ev.bob, eid, 2, title="bob"), 403)


def test_two_concurrent_patches_one_wins(ev):
    for _ in range(3):
        eid = ev.create(ev.alice)["id"]
        barrier = threading.Barrier(2)

        def one(title):
            a = Ev(ev.srv)
            barrier.wait()
            return a.patch(ev.alice, eid, 1, title=title).status_code

        with ThreadPoolExecutor(2) as ex:
            codes = sorted(ex.map(one, ["left", "right"]))
        assert codes == [200, 412], codes
        doc = ev.get(ev.alice, eid).json()
        assert doc["version"] == 2 and doc["title"] in ("left", "right")


# ---------------------------------------------------------------- listing

def test_list_filters_search_sort_and_cursor(ev):
    ids = []
    for i in range(7):
        ids.append(ev.create(ev.alice, title="Item %d" % i, tags=["even" if i % 2 == 0 else
                                                                   "odd"],
                             starts_at="2030-01-%02dT09:00:00Z" % (i + 1),
                             description="needle" if i == 3 else "hay")["id"])
    ev.create(ev.bob, title="Bob's", type="meeting")
    page = ev.call("GET", "/events?sort=starts_at&limit=3&owner=me", token=ev.alice)
    assert page.status_code == 200, page.text
    body = page.json()
    assert [e["id"] for e in body["data"]] == ids[:3]
    assert 'rel="next"' in page.headers["Link"] and "sort=starts_at" in page.headers["Link"]
    # an insert before the cursor does not shift the next page
    ev.create(ev.alice, title="early", starts_at="2029-01-01T00:00:00Z")
    seen = [e["id"] for e in body["data"]]
    cursor = body["next_cursor"]
    while cursor:
        body = ev.call("GET", "/events", token=ev.alice,
                       params={"sort": "starts_at", "limit": 3, "owner": "me",
                               "cursor": cursor}).json()
        seen += [e["id"] for e in body["data"]]
        cursor = body["next_cursor"]
    assert seen == ids
    q = lambda **p: ev.call("GET", "/events", token=ev.alice,
                            params=dict(p, owner=p.get("owner", "me"))).json()
    assert [e["id"] for e in q(q="NEEDLE")["data"]] == [ids[3]]
    assert len(q(tag="even", count="true")["data"]) == 4 and q(tag="even", count="true")["total"] == 4
    assert [e["title"] for e in q(type="meeting", owner=ev.bob_id)["data"]] == ["Bob's"]
    assert len(q(**{"from": "2030-01-02T00:00:00Z", "to": "2030-01-04T00:00:00Z"})["data"]) == 2
    titles = [e["title"] for e in q(sort="-title", owner=ev.alice_id)["data"]]
    assert titles == sorted(titles, reverse=True)
    problem(ev.call("GET", "/events?sort=owner_id", token=ev.alice), 422)
    problem(ev.call("GET", "/events?cursor=garbage", token=ev.alice), 422)
    problem(ev.call("GET", "/events?limit=1000", token=ev.alice), 422)


# ---------------------------------------------------------------- compliance

def test_restricted_visible_only_to_owner_assignees_admins(ev):
    carol, carol_id = ev.user("carol-%s@example.com" % ev.tag)
    secret = ev.create(ev.alice, title="Secret merger " + ev.tag, classification="restricted")
    ev.create(ev.alice, title="Open merger %s talk" % ev.tag)
    for who, sees in ((ev.alice, True), (ev.admin, True), (ev.bob, False), (carol, False)):
        lst = ev.call("GET", "/events", token=who, params={"q": "merger " + ev.tag,
                                                           "count": "true"}).json()
        titles = {e["title"] for e in lst["data"]}
        assert ("Secret merger " + ev.tag in titles) == sees, titles
        assert lst["total"] == (2 if sees else 1)
        byc = ev.call("GET", "/events", token=who,
                      params={"classification": "restricted", "count": "true",
                              "owner": ev.alice_id}).json()
        assert byc["total"] == (1 if sees else 0)
        r = ev.get(who, secret["id"])
        assert r.status_code == (200 if sees else 404), r.text
    # writes look the same as a missing event
    problem(ev.patch(ev.bob, secret["id"], 1, title="x"), 404)
    # an assignment makes it visible; revoking it hides it again
    r = ev.call("POST", "/events/%s/assignments" % secret["id"], token=ev.alice,
                json={"user_id": ev.bob_id, "role": "viewer"})
    assert r.status_code == 201, r.text
    assert ev.get(ev.bob, secret["id"]).status_code == 200
    assert ev.call("GET", "/events", token=ev.bob, params={"assignee": "me"}).json()[
        "data"][0]["id"] == secret["id"]
    problem(ev.patch(ev.bob, secret["id"], 1, title="viewer"), 403)
    aid = r.json()["id"]
    assert ev.call("DELETE", "/events/%s/assignments/%s" % (secret["id"], aid),
                   token=ev.alice).status_code == 204
    problem(ev.get(ev.bob, secret["id"]), 404)
    # a restricted child is absent from its parent's tree for others
    parent = ev.create(ev.alice, title="parent")
    ev.create(ev.alice, title="hidden child", parent_id=parent["id"], classification="restricted")
    tree = ev.call("GET", "/events/%s/tree" % parent["id"], token=ev.bob).json()
    assert tree["children"] == []
    tree = ev.call("GET", "/events/%s/tree" % parent["id"], token=ev.alice).json()
    assert [c["title"] for c in tree["children"]] == ["hidden child"]


def test_legal_hold(ev):
    root = ev.create(ev.alice, title="root")
    child = ev.create(ev.alice, title="child", parent_id=root["id"])
    problem(ev.call("POST", "/events/%s/hold" % root["id"], token=ev.alice,
                    json={"reason": "mine"}), 403)
    problem(ev.call("POST", "/events/%s/hold" % root["id"], token=ev.admin, json={}), 422)
    r = ev.call("POST", "/events/%s/hold" % root["id"], token=ev.admin,
                json={"reason": "litigation 42"})
    assert r.status_code == 200, r.text
    assert r.json()["legal_hold"]["reason"] == "litigation 42"
    v = r.json()["version"]
    problem(ev.patch(ev.alice, root["id"], v, title="x"), 423)
    problem(ev.patch(ev.alice, child["id"], 1, title="x"), 423)
    problem(ev.move(ev.alice, child["id"], "scheduled", 1), 423)
    problem(ev.call("DELETE", "/events/" + child["id"], token=ev.alice), 423)
    problem(ev.call("DELETE", "/events/" + root["id"], token=ev.admin), 423)
    problem(ev.call("POST", "/events/%s/assignments" % child["id"], token=ev.alice,
                    json={"user_id": ev.bob_id}), 423)
    problem(ev.call("POST", "/events", token=ev.alice,
                    json={"title": "x", "starts_at": "2030-01-01T00:00:00Z",
                          "parent_id": root["id"]}), 423)
    # a held descendant keeps its ancestors from being deleted
    ev.call("DELETE", "/events/%s/hold" % root["id"], token=ev.admin)
    ev.call("POST", "/events/%s/hold" % child["id"], token=ev.admin, json={"reason": "r"})
    problem(ev.call("DELETE", "/events/" + root["id"], token=ev.alice), 423)
    ev.call("DELETE", "/events/%s/hold" % child["id"], token=ev.admin)
    assert ev.call("DELETE", "/events/" + root["id"], token=ev.alice).status_code == 204
    problem(ev.get(ev.alice, child["id"]), 404)


# ---------------------------------------------------------------- hierarchy

def test_tree_cycles_depth_and_parent_waits(ev):
    a = ev.create(ev.alice, title="a")
    b = ev.create(ev.alice, title="b", parent_id=a["id"])
    c = ev.create(ev.alice, title="c", parent_id=b["id"])
    d = ev.create(ev.alice, title="d", parent_id=c["id"])  # depth 3 = EVENTS_MAX_DEPTH
    assert d["depth"] == 3
    problem(ev.call("POST", "/events", token=ev.alice,
                    json={"title": "e", "starts_at": "2030-01-01T00:00:00Z",
                          "parent_id": d["id"]}), 409)
    # cycles: a under its own descendant, or under itself
    problem(ev.patch(ev.alice, a["id"], 1, parent_id=c["id"]), 409)
    problem(ev.patch(ev.alice, a["id"], 1, parent_id=a["id"]), 409)
    # a subtree of height 1 (c, d) under b's sibling at depth 1 is fine; deeper is not
    x = ev.create(ev.alice, title="x", parent_id=a["id"])
    y = ev.create(ev.alice, title="y", parent_id=x["id"])
    problem(ev.patch(ev.alice, c["id"], 1, parent_id=y["id"]), 409)
    r = ev.patch(ev.alice, c["id"], 1, parent_id=x["id"])
    assert r.status_code == 200, r.text
    assert r.json()["parent_id"] == x["id"] and r.json()["depth"] == 2
    assert ev.get(ev.alice, d["id"]).json()["depth"] == 3
    tree = ev.call("GET", "/events/%s/tree" % a["id"], token=ev.alice).json()
    assert sorted(ch["title"] for ch in tree["children"]) == ["b", "x"]
    xs = [ch for ch in tree["children"] if ch["title"] == "x"][0]
    assert sorted(ch["title"] for ch in xs["children"]) == ["c", "y"]
    # moving to the root
    r = ev.patch(ev.alice, c["id"], 2, parent_id=None)
    assert r.status_code == 200 and r.json()["depth"] == 0 and r.json()["parent_id"] is None
    assert ev.get(ev.alice, d["id"]).json()["depth"] == 1
    # a parent cannot complete while a child is open
    p = ev.walk(ev.alice, b["id"], ["scheduled", "active"])
    k = ev.create(ev.alice, title="kid", parent_id=b["id"])
    d409 = problem(ev.move(ev.alice, b["id"], "completed", p["version"]), 409)
    assert "EVENTS_PARENT_WAITS_FOR_CHILDREN" in d409["detail"]
    ev.walk(ev.alice, k["id"], ["cancelled"])
    assert ev.move(ev.alice, b["id"], "completed", p["version"]).status_code == 200


# ---------------------------------------------------------------- assignment and delegation

def test_assignment_and_delegation(ev):
    carol, carol_id = ev.user("carol-%s@example.com" % ev.tag)
    doc = ev.create(ev.alice, classification="restricted")
    eid = doc["id"]
    # no IDOR: bob cannot assign himself
    problem(ev.call("POST", "/events/%s/assignments" % eid, token=ev.bob,
                    json={"user_id": ev.bob_id}), 404)
    problem(ev.call("POST", "/events/%s/assignments" % eid, token=ev.alice,
                    json={"user_id": "nobody"}), 422)
    r = ev.call("POST", "/events/%s/assignments" % eid, token=ev.alice,
                json={"user_id": ev.bob_id, "role": "assignee"})
    assert r.status_code == 201, r.text
    bob_aid = r.json()["id"]
    r = ev.patch(ev.bob, eid, 1, title="by bob")
    assert r.status_code == 200, r.text
    # bob delegates to carol: an expiry is required
    problem(ev.call("POST", "/events/%s/assignments" % eid, token=ev.bob,
                    json={"user_id": carol_id}), 422)
    r = ev.call("POST", "/events/%s/assignments" % eid, token=ev.bob,
                json={"user_id": carol_id, "expires_at": "2099-01-01T00:00:00Z"})
    assert r.status_code == 201, r.text
    assert r.json()["delegated_from"] == ev.bob_id
    assert ev.patch(carol, eid, 2, title="by carol").status_code == 200
    lst = ev.call("GET", "/events/%s/assignments" % eid, token=carol).json()["data"]
    assert {a["user_id"] for a in lst} == {ev.bob_id, carol_id}
    # revoking bob ends carol's delegation too
    assert ev.call("DELETE", "/events/%s/assignments/%s" % (eid, bob_aid),
                   token=ev.alice).status_code == 204
    problem(ev.get(carol, eid), 404)
    problem(ev.get(ev.bob, eid), 404)
    # an expired delegation counts for nothing
    r = ev.call("POST", "/events/%s/assignments" % eid, token=ev.alice,
                json={"user_id": carol_id, "expires_at": "2000-01-01T00:00:00Z"})
    problem(r, 422)


# ---------------------------------------------------------------- audit

def test_audit_chain_verified_then_tampered(fresh):
    ev = fresh
    doc = ev.create(ev.alice, title="audited")
    eid = doc["id"]
    ev.patch(ev.alice, eid, 1, title="audited 2", description="more")
    ev.move(ev.alice, eid, "scheduled", 2, reason="ready")
    ev.call("POST", "/events/%s/assignments" % eid, token=ev.alice, json={"user_id": ev.bob_id})
    ev.call("POST", "/events/%s/hold" % eid, token=ev.admin, json={"reason": "keep"})
    rep = verify(ev)
    assert rep == {"ok": True, "records": 5, "head_seq": 5, "first_broken": None}, rep
    problem(ev.call("GET", "/admin/audit/verify", token=ev.alice), 403)

    lst = ev.call("GET", "/admin/audit", token=ev.admin,
                  params={"entity_id": eid, "limit": 2})
    body = lst.json()
    assert [r["action"] for r in body["data"]] == ["event.hold", "event.assign"]
    assert 'rel="next"' in lst.headers["Link"]
    rest = ev.call("GET", "/admin/audit", token=ev.admin,
                   params={"entity_id": eid, "cursor": body["next_cursor"]}).json()["data"]
    assert [r["action"] for r in rest] == ["event.transition", "event.update", "event.create"]
    upd = rest[1]
    assert upd["actor_id"] == ev.alice_id and upd["actor_kind"] == "user" and upd["request_id"]
    assert upd["diff"] == {"title": {"from": "audited", "to": "audited 2"},
                           "description": {"from": "", "to": "more"}}, upd
    assert rest[0]["diff"]["state"] == {"from": "draft", "to": "scheduled"}
    by_action = ev.call("GET", "/admin/audit", token=ev.admin,
                        params={"action": "event.transition"}).json()["data"]
    assert len(by_action) == 1 and by_action[0]["diff"]["reason"] == {"to": "ready"}
    assert ev.call("GET", "/admin/audit", token=ev.admin,
                   params={"actor": ev.admin_id}).json()["data"][0]["action"] == "event.hold"
    exp = ev.call("GET", "/admin/audit/export", token=ev.admin)
    assert exp.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in exp.text.splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4, 5]
    assert all(lines[i]["prev_hash"] == lines[i - 1]["hash"] for i in range(1, 5))
    # the documented canonical form (docs/events.md) gives the stored hashes
    for x in lines:
        assert canonical_hash(x) == x["hash"], x
    p = ev.cli(["audit", "verify"])
    assert p.returncode == 0 and json.loads(p.stdout)["ok"], p.stdout + p.stderr
    p = ev.cli(["audit", "export"])
    assert [json.loads(x)["seq"] for x in p.stdout.splitlines()] == [1, 2, 3, 4, 5]

    # an edited record: the break is found at it
    ev.db.exec("UPDATE audit_log SET diff = '{}' WHERE seq = 3")
    rep = verify(ev)
    assert rep["ok"] is False and rep["first_broken"]["seq"] == 3, rep
    p = ev.cli(["audit", "verify"])
    assert p.returncode == 3 and "record 3" in p.stderr, p.stderr
    # a removed record (with its successors re-linked by hand) is still found
    ev.db.exec("UPDATE audit_log SET diff = '%s' WHERE seq = 3"
               % json.dumps(lines[2]["diff"], sort_keys=True, separators=(",", ":")))
    assert verify(ev)["ok"] is True
    ev.db.exec("DELETE FROM audit_log WHERE seq = 4")
    rep = verify(ev)
    assert rep["first_broken"]["seq"] == 4 and "missing" in rep["first_broken"]["reason"], rep
    # a truncated tail
    ev.db.exec("DELETE FROM audit_log WHERE seq >= 4")
    rep = verify(ev)
    assert rep["ok"] is False and rep["first_broken"]["seq"] == 4, rep


def test_concurrent_writers_on_one_tree(fresh):
    ev = fresh
    """200 writers on one tree at once (32 in flight): every PATCH retries on
    412 until it lands, so the counters add up to the number of writes (no
    lost update), and the audit chain is intact and linear."""
    root = ev.create(ev.alice, title="root", custom={"n": 0})
    kids = [ev.create(ev.alice, title="kid %d" % i, parent_id=root["id"],
                      custom={"n": 0})["id"] for i in range(7)]
    targets = [root["id"]] + kids
    writes = 200

    def one(i):
        a = Ev(ev.srv)
        eid = targets[i % len(targets)]
        for _ in range(200):
            cur = a.get(ev.alice, eid).json()
            r = a.patch(ev.alice, eid, cur["version"], custom={"n": cur["custom"]["n"] + 1})
            if r.status_code == 200:
                return 1
            assert r.status_code in (412, 503), r.text
        return 0

    with ThreadPoolExecutor(32) as ex:
        assert sum(ex.map(one, range(writes))) == writes
    total = sum(ev.get(ev.alice, t).json()["custom"]["n"] for t in targets)
    assert total == writes
    rep = verify(ev)
    assert rep["ok"] and rep["records"] == len(targets) + writes, rep


# ---------------------------------------------------------------- templates and recurrence

def instances(ev, eid, frm, to, token=None):
    r = ev.call("GET", "/events/%s/instances" % eid, token=token or ev.alice,
                params={"from": frm, "to": to})
    assert r.status_code == 200, r.text
    return r.json()


def test_templates(ev):
    t = ev.call("POST", "/event-templates", token=ev.alice,
                json={"name": "standup", "fields": {"title": "Standup", "type": "meeting",
                                                    "tags": ["daily"],
                                                    "recurrence": {"freq": "daily"}}})
    assert t.status_code == 201, t.text
    tid = t.json()["id"]
    problem(ev.call("POST", "/event-templates", token=ev.bob,
                    json={"name": "standup", "fields": {}}), 409)
    doc = ev.create(ev.bob, template_id=tid, title="Team standup",
                    starts_at="2030-01-01T09:00:00Z")
    assert (doc["title"], doc["type"], doc["tags"]) == ("Team standup", "meeting", ["daily"])
    assert doc["template_id"] == tid and doc["recurrence"] == {"freq": "daily"}
    assert doc["owner_id"] == ev.bob_id
    d = problem(ev.call("POST", "/events", token=ev.bob,
                        json={"template_id": "nope", "starts_at": "2030-01-01T09:00:00Z"}), 422)
    assert d["errors"][0]["pointer"] == "/template_id"
    # a template without a start: the body must give it
    t2 = ev.call("POST", "/event-templates", token=ev.alice,
                 json={"name": "bare", "fields": {"title": "Bare"}}).json()["id"]
    d = problem(ev.call("POST", "/events", token=ev.bob, json={"template_id": t2}), 422)
    assert d["errors"][0]["pointer"] == "/starts_at"
    lst = ev.call("GET", "/event-templates", token=ev.bob).json()["data"]
    assert {"bare", "standup"} <= {x["name"] for x in lst}


def test_recurrence_expansion_and_exceptions(ev):
    # monthly on the 31st: months without one have no instance
    m = ev.create(ev.alice, title="month end", starts_at="2030-01-31T09:00:00Z",
                  ends_at="2030-01-31T10:00:00Z",
                  recurrence={"freq": "monthly", "count": 5})
    got = instances(ev, m["id"], "2030-01-01T00:00:00Z", "2031-06-01T00:00:00Z")
    assert [i["starts_at"] for i in got["data"]] == [
        "2030-01-31T09:00:00Z", "2030-03-31T09:00:00Z", "2030-05-31T09:00:00Z",
        "2030-07-31T09:00:00Z", "2030-08-31T09:00:00Z"]
    assert got["data"][1]["ends_at"] == "2030-03-31T10:00:00Z" and not got["truncated"]
    # leap day, every year... as monthly every 12 months
    leap = ev.create(ev.alice, starts_at="2028-02-29T12:00:00Z",
                     recurrence={"freq": "monthly", "interval": 12})
    got = instances(ev, leap["id"], "2028-01-01T00:00:00Z", "2037-01-01T00:00:00Z")
    assert [i["starts_at"][:10] for i in got["data"]] == ["2028-02-29", "2032-02-29",
                                                         "2036-02-29"]
    # weekly on Monday, Wednesday and Friday every other week, until a date (inclusive)
    w = ev.create(ev.alice, starts_at="2030-01-02T08:30:00Z",  # a Wednesday
                  recurrence={"freq": "weekly", "interval": 2, "by_weekday": ["MO", "WE", "FR"],
                              "until": "2030-01-16T08:30:00Z"})
    got = instances(ev, w["id"], "2029-12-01T00:00:00Z", "2030-03-01T00:00:00Z")
    assert [i["starts_at"] for i in got["data"]] == [
        "2030-01-02T08:30:00Z", "2030-01-04T08:30:00Z", "2030-01-14T08:30:00Z",
        "2030-01-16T08:30:00Z"]
    # daily every 3 days, a window in the middle of the series
    d = ev.create(ev.alice, starts_at="2030-01-30T23:00:00Z", recurrence={"freq": "daily",
                                                                           "interval": 3})
    got = instances(ev, d["id"], "2030-02-05T00:00:00Z", "2030-02-12T00:00:00Z")
    assert [i["starts_at"] for i in got["data"]] == [
        "2030-02-05T23:00:00Z", "2030-02-08T23:00:00Z", "2030-02-11T23:00:00Z"]
    # bounded: two years of a daily series stop at EVENTS_INSTANCES_MAX (500)
    daily = ev.create(ev.alice, starts_at="2030-01-01T00:00:00Z", recurrence={"freq": "daily"})
    got = instances(ev, daily["id"], "2030-01-01T00:00:00Z", "2032-01-01T00:00:00Z")
    assert len(got["data"]) == 500 and got["truncated"]
    # rules the schema cannot say, and the schema's own
    for rule, pointer in [({"freq": "daily", "count": 2, "until": "2030-02-01T00:00:00Z"},
                           "/recurrence/until"),
                          ({"freq": "daily", "by_weekday": ["MO"]}, "/recurrence/by_weekday"),
                          ({"freq": "yearly"}, "/recurrence/freq"),
                          ({"freq": "weekly", "by_weekday": ["XX"]}, "/recurrence/by_weekday/0")]:
        doc = problem(ev.call("POST", "/events", token=ev.alice,
                              json={"title": "r", "starts_at": "2030-01-01T00:00:00Z",
                                    "recurrence": rule}), 422)
        assert any(e["pointer"] == pointer for e in doc["errors"]), (rule, doc)

    # exceptions: one instance moved and renamed, one cancelled; the series untouched
    rid = 1896822000  # 2030-02-08T23:00:00Z
    r = ev.call("PUT", "/events/%s/instances/%d" % (d["id"], rid), token=ev.alice,
                json={"title": "moved", "starts_at": "2030-02-09T10:00:00Z"})
    assert r.status_code == 200, r.text
    assert r.json()["exception"] is True and r.json()["title"] == "moved"
    r = ev.call("PUT", "/events/%s/instances/%d" % (d["id"], rid + 3 * 86400), token=ev.alice,
                json={"cancelled": True})
    assert r.status_code == 200, r.text
    got = instances(ev, d["id"], "2030-02-05T00:00:00Z", "2030-02-15T00:00:00Z")
    assert [(i["recurrence_id"], i["starts_at"], i["title"], i["exception"])
            for i in got["data"]] == [
        (rid - 3 * 86400, "2030-02-05T23:00:00Z", "an event", False),
        (rid, "2030-02-09T10:00:00Z", "moved", True),
        (rid + 6 * 86400, "2030-02-14T23:00:00Z", "an event", False)]
    assert ev.get(ev.alice, d["id"]).json()["version"] == 1
    problem(ev.call("PUT", "/events/%s/instances/%d" % (d["id"], rid + 1), token=ev.alice,
                    json={"title": "x"}), 404)
    problem(ev.call("PUT", "/events/%s/instances/%d" % (d["id"], rid), token=ev.bob,
                    json={"title": "x"}), 403)
    problem(ev.call("PUT", "/events/%s/instances/%d" % (m["id"], 1), token=ev.alice,
                    json={"title": "x"}), 404)
    audit = ev.call("GET", "/admin/audit", token=ev.admin,
                    params={"action": "event.instance"}).json()["data"]
    assert len(audit) == 2 and verify(ev)["ok"]


# ---------------------------------------------------------------- retention

def test_retention_purge_anonymise_hold(fresh):
    ev = fresh
    for name, action in (("short", "purge"), ("private", "anonymise")):
        r = ev.call("PUT", "/admin/event-types/" + name, token=ev.admin,
                    json={"retention_days": 1, "retention_action": action})
        assert r.status_code == 201, r.text
    problem(ev.call("PUT", "/admin/event-types/x", token=ev.alice, json={}), 403)
    types = {t["name"]: t for t in ev.call("GET", "/event-types", token=ev.bob).json()["data"]}
    assert types["short"]["retention_days"] == 1 and types["general"]["retention_days"] is None
    gone = ev.create(ev.alice, title="old", type="short")
    ev.walk(ev.alice, gone["id"], ["cancelled"])
    anon = ev.create(ev.alice, title="Private name", type="private", description="details")
    ev.walk(ev.alice, anon["id"], ["cancelled"])
    kept = ev.create(ev.alice, title="held", type="short")
    kept = ev.walk(ev.alice, kept["id"], ["cancelled"])
    ev.call("POST", "/events/%s/hold" % kept["id"], token=ev.admin, json={"reason": "case"})
    live = ev.create(ev.alice, title="still open", type="short")
    # nothing is due yet
    run = lambda now: ev.call("POST", "/admin/events/retention", token=ev.admin,
                              json={"now": now})
    rep = run("2020-01-01T00:00:00Z").json()
    assert rep == {"expired": 0, "anonymised": 0, "purged": 0, "held_skipped": 0}, rep
    # two days on: one purged (soft), one anonymised, the held one skipped
    day = lambda n: (datetime.datetime.utcnow() + datetime.timedelta(days=n)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    rep = run(day(2)).json()
    assert rep == {"expired": 2, "anonymised": 1, "purged": 0, "held_skipped": 1}, rep
    problem(ev.get(ev.alice, gone["id"]), 404)
    a = ev.get(ev.alice, anon["id"]).json()
    assert a["title"] == "[anonymised]" and a["description"] == ""
    assert ev.get(ev.alice, kept["id"]).status_code == 200
    assert ev.get(ev.alice, live["id"]).status_code == 200
    assert ev.db.exec("SELECT count(*) FROM events WHERE id = '%s'" % gone["id"]) == 1
    # after the grace period (30 days) the soft-deleted one is gone for good, via the CLI
    p = ev.cli(["events", "retention", "--now", day(40)])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["purged"] == 1, p.stdout
    assert ev.db.exec("SELECT count(*) FROM events WHERE id = '%s'" % gone["id"]) == 0
    actions = [r["action"] for r in ev.call("GET", "/admin/audit", token=ev.admin,
                                            params={"actor": "retention"}).json()["data"]]
    assert sorted(actions) == ["event.anonymise", "event.hard_delete", "event.purge"], actions
    assert verify(ev)["ok"]


# ---------------------------------------------------------------- approvals

def test_approvals_by_role_and_all_named_users(ev):
    mod, mod_id = ev.user("mod-%s@example.com" % ev.tag, "moderator")
    carol, carol_id = ev.user("carol-%s@example.com" % ev.tag)
    dave, dave_id = ev.user("dave-%s@example.com" % ev.tag)
    r = ev.call("PUT", "/admin/event-types/change", token=ev.admin,
                json={"requires_approval": True,
                      "approval_steps": [{"role": "moderator", "mode": "any"},
                                         {"users": [carol_id, dave_id], "mode": "all"}]})
    assert r.status_code == 201, r.text
    doc = ev.create(ev.alice, type="change", classification="public")
    eid = doc["id"]
    d = problem(ev.move(ev.alice, eid, "scheduled", 1), 409)
    assert "not submitted" in d["detail"]
    decide = lambda tok, decision, reason="": ev.call(
        "POST", "/events/%s/approval/decision" % eid, token=tok,
        json={"decision": decision, "reason": reason})
    problem(decide(mod, "approve"), 409)  # nothing submitted yet
    r = ev.call("POST", "/events/%s/approval" % eid, token=ev.alice)
    assert r.status_code == 201 and r.json()["state"] == "pending", r.text
    problem(ev.call("POST", "/events/%s/approval" % eid, token=ev.alice), 409)
    problem(decide(ev.bob, "approve"), 403)       # not a moderator
    problem(decide(carol, "approve"), 403)        # named for step 2, not step 1
    assert decide(mod, "approve").json()["step"] == 1
    problem(decide(mod, "approve"), 403)          # step 2 is carol's and dave's
    assert decide(carol, "approve").json()["state"] == "pending"  # all: dave too
    problem(decide(carol, "approve"), 409)
    final = decide(dave, "approve").json()
    assert final.get("state") == "approved" and len(final["decisions"]) == 3, final
    assert ev.move(ev.alice, eid, "scheduled", 1).status_code == 200
    # a rejection needs a reason, ends the request, and a new one can follow
    e2 = ev.create(ev.alice, type="change")["id"]
    ev.call("POST", "/events/%s/approval" % e2, token=ev.alice)
    problem(ev.call("POST", "/events/%s/approval/decision" % e2, token=mod,
                    json={"decision": "reject"}), 422)
    r = ev.call("POST", "/events/%s/approval/decision" % e2, token=mod,
                json={"decision": "reject", "reason": "too risky"})
    assert r.json()["state"] == "rejected" and r.json()["reason"] == "too risky", r.text
    d = problem(ev.move(ev.alice, e2, "scheduled", 1), 409)
    assert "rejected" in d["detail"]
    # the submitter was notified of both outcomes (in-app), once each
    inbox = ev.call("GET", "/notifications", token=ev.alice).json()["data"]
    got = sorted((n["data"]["event_id"], n["data"]["state"]) for n in inbox
                 if n["type"] == "event.approval")
    assert got == sorted([(eid, "approved"), (e2, "rejected")]), inbox
    assert [n for n in inbox if n["data"].get("event_id") == e2][0]["data"]["body"].endswith(
        "too risky")
    assert ev.call("POST", "/events/%s/approval" % e2, token=ev.alice).status_code == 201
    # a type without approval: submitting is refused, scheduling is not gated
    e3 = ev.create(ev.alice)["id"]
    problem(ev.call("POST", "/events/%s/approval" % e3, token=ev.alice), 409)
    actions = [x["action"] for x in ev.call("GET", "/admin/audit", token=ev.admin,
                                            params={"entity_id": eid}).json()["data"]]
    assert actions[:5] == ["event.transition", "event.approve", "event.approve",
                           "event.approve", "event.submit"], actions
    assert verify(ev)["ok"]


# ---------------------------------------------------------------- budget and costs

def test_costs_totals_and_budget_alerts(ev):
    doc = ev.create(ev.alice, budget={"amount": 1000, "currency": "EUR"},
                    risk={"level": "medium", "score": 40, "notes": "weather"})
    eid = doc["id"]
    add = lambda cat, amount, tok=None: ev.call("POST", "/events/%s/costs" % eid,
                                                token=tok or ev.alice,
                                                json={"category": cat, "amount": amount})
    r = add("travel", 500)
    assert r.status_code == 201 and r.json()["total"] == 500 and not r.json()["over_budget"]
    problem(add("travel", 1, ev.bob), 403)
    problem(add("Travel!", 1), 422)
    problem(add("travel", -1), 422)
    add("food", 350)    # past 80 %
    r = add("food", 200)  # past the budget
    body = r.json()
    assert body["total"] == 1050 and body["over_budget"] is True, body
    assert body["by_category"] == {"travel": 500, "food": 550}
    alerts = [x["diff"]["alert"]["to"] for x in ev.call(
        "GET", "/admin/audit", token=ev.admin,
        params={"entity_id": eid, "action": "event.budget_alert"}).json()["data"]]
    assert alerts == ["over_budget", "threshold"], alerts
    cid = [c for c in body["data"] if c["category"] == "travel"][0]["id"]
    assert ev.call("DELETE", "/events/%s/costs/%s" % (eid, cid), token=ev.alice).status_code == 204
    body = ev.call("GET", "/events/%s/costs" % eid, token=ev.bob).json()
    assert body["total"] == 550 and not body["over_budget"]
    ev.call("POST", "/events/%s/hold" % eid, token=ev.admin, json={"reason": "audit"})
    problem(add("travel", 1), 423)
    assert verify(ev)["ok"]


# ---------------------------------------------------------------- the rules engine

def test_type_rules_every_broken_rule_listed(ev):
    rules = [
        {"id": "small-budget", "field": "budget.amount", "op": "<=", "value": 10000,
         "unless": {"field": "risk.level", "op": "=", "value": "low"}},
        {"id": "short", "field": "duration", "op": "<=", "value": "30d",
         "message": "may last at most 30 days"},
        {"id": "room-needed", "field": "custom.room", "op": "present",
         "when": {"field": "classification", "op": "in", "value": ["confidential",
                                                                   "restricted"]}},
    ]
    schema = {"type": "object", "properties": {"room": {"type": "integer", "minimum": 1}}}
    r = ev.call("PUT", "/admin/event-types/project", token=ev.admin,
                json={"rules": rules, "custom_schema": schema})
    assert r.status_code == 201, r.text
    d = problem(ev.call("PUT", "/admin/event-types/broken", token=ev.admin,
                        json={"custom_schema": {"type": "object", "oneOf": []}}), 422)
    assert d["errors"][0]["pointer"] == "/custom_schema"
    bad = {"title": "big", "type": "project", "starts_at": "2030-01-01T00:00:00Z",
           "ends_at": "2030-03-01T00:00:00Z", "budget": {"amount": 50000, "currency": "EUR"},
           "risk": {"level": "high"}, "classification": "confidential",
           "custom": {"floor": 2, "room": 0}}
    d = problem(ev.call("POST", "/events", token=ev.alice, json=bad), 422)
    got = {(e["pointer"], e.get("rule")) for e in d["errors"]}
    assert got == {("/budget/amount", "small-budget"), ("/ends_at", "short"),
                   ("/custom/room", "custom_schema")}, d
    assert "30 days" in [e for e in d["errors"] if e["rule"] == "short"][0]["message"]
    # low risk lifts the budget cap; the room must then be present
    ok = dict(bad, risk={"level": "low"}, ends_at="2030-01-20T00:00:00Z", custom={"floor": 2})
    d = problem(ev.call("POST", "/events", token=ev.alice, json=ok), 422)
    assert [(e["pointer"], e["rule"]) for e in d["errors"]] == [("/custom/room", "room-needed")]
    ok["custom"] = {"room": 12}
    doc = ev.create(ev.alice, **ok)
    # the rules hold on every write: a PATCH that breaks one is refused
    d = problem(ev.patch(ev.alice, doc["id"], 1, risk={"level": "critical"}), 422)
    assert [e["rule"] for e in d["errors"]] == ["small-budget"]
    assert ev.patch(ev.alice, doc["id"], 1, budget={"amount": 9000}).status_code == 200


def test_escalation_after_a_deadline(ev):
    mod, _ = ev.user("mod-%s@example.com" % ev.tag, "moderator")
    r = ev.call("PUT", "/admin/event-types/urgent", token=ev.admin,
                json={"requires_approval": True,
                      "approval_steps": [{"role": "moderator", "deadline": "1s"}]})
    assert r.status_code == 201, r.text
    eid = ev.create(ev.alice, type="urgent")["id"]
    ev.call("POST", "/events/%s/approval" % eid, token=ev.alice)
    sweep = lambda now=None: ev.call("POST", "/admin/events/escalation", token=ev.admin,
                                     json={"now": now} if now else {}).json()
    assert sweep("2000-01-01T00:00:00Z") == {"escalated": 0}  # not due yet
    later = (datetime.datetime.utcnow() + datetime.timedelta(seconds=30)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    assert sweep(later) == {"escalated": 1}
    assert sweep(later) == {"escalated": 0}  # once
    step = ev.call("GET", "/events/%s/approval" % eid, token=ev.alice).json()["steps"][0]
    assert step["role"] == "admin" and step["escalated"] is True, step
    # the moderator no longer decides; an admin does
    problem(ev.call("POST", "/events/%s/approval/decision" % eid, token=mod,
                    json={"decision": "approve"}), 403)
    r = ev.call("POST", "/events/%s/approval/decision" % eid, token=ev.admin,
                json={"decision": "approve"})
    assert r.json()["state"] == "approved", r.text
    p = ev.cli(["events", "escalate"])
    assert p.returncode == 0 and json.loads(p.stdout) == {"escalated": 0}, p.stdout + p.stderr
    esc = ev.call("GET", "/admin/audit", token=ev.admin,
                  params={"action": "event.escalate"}).json()["data"]
    assert len(esc) == 1 and esc[0]["actor_id"] == "escalation" and verify(ev)["ok"]


@pytest.mark.parametrize("db", ["postgres"])
def test_escalation_runs_on_its_schedule(request, keel, tmp_path, db):
    """EVENTS_ESCALATION_SCHEDULE: the job queue's scheduler runs the sweep
    (job kind events.escalation) with no one calling the admin route."""
    request.param = db
    ev = with_users(start(keel, request, tmp_path, EVENTS_ESCALATION_SCHEDULE="@every 1s"))
    r = ev.call("GET", "/admin/job-schedules", token=ev.admin)
    assert r.status_code == 200, r.text
    items = {s["name"]: s for s in r.json()["items"]}
    # retention and recurrence: "" = not scheduled (notify.prune is the notifications')
    assert "events.escalation" in items and not {"events.retention",
                                                 "events.recurrence"} & set(items), items
    assert items["events.escalation"]["kind"] == "events.escalation"
    assert items["events.escalation"]["next_fire_at"] > 0
    r = ev.call("PUT", "/admin/event-types/urgent", token=ev.admin,
                json={"requires_approval": True,
                      "approval_steps": [{"role": "moderator", "deadline": "1s"}]})
    assert r.status_code == 201, r.text
    eid = ev.create(ev.alice, type="urgent")["id"]
    assert ev.call("POST", "/events/%s/approval" % eid, token=ev.alice).status_code in (200, 201)
    step = lambda: ev.call("GET", "/events/%s/approval" % eid, token=ev.alice).json()["steps"][0]
    wait_for(lambda: step().get("escalated") is True, timeout=10, what="the scheduled escalation")
    assert step()["role"] == "admin"
    esc = ev.call("GET", "/admin/audit", token=ev.admin,
                  params={"action": "event.escalate"}).json()["data"]
    assert len(esc) == 1 and esc[0]["actor_id"] == "escalation"
    jobs = ev.call("GET", "/admin/jobs", token=ev.admin,
                   params={"kind": "events.escalation", "state": "completed"}).json()
    assert jobs["jobs"] and all(j["kind"] == "events.escalation" for j in jobs["jobs"]), jobs
    last = [s for s in ev.call("GET", "/admin/job-schedules", token=ev.admin).json()["items"]
            if s["name"] == "events.escalation"][0]
    assert last["last_fire_at"] is not None


@pytest.mark.parametrize("db", ["sqlite"])
def test_recurrence_materialised_on_its_schedule(request, keel, tmp_path, db):
    """EVENTS_RECURRENCE_SCHEDULE: the job events.recurrence writes every
    series' instances for EVENTS_RECURRENCE_HORIZON into event_instances;
    GET /event-instances reads them across series with the lists'
    visibility; an exception changes its row at once."""
    request.param = db
    ev = with_users(start(keel, request, tmp_path, EVENTS_RECURRENCE_SCHEDULE="@every 1s",
                          EVENTS_RECURRENCE_HORIZON="3d"))
    fmt = lambda t: datetime.datetime.utcfromtimestamp(t).strftime("%Y-%m-%dT%H:%M:%SZ")
    t0 = (int(time.time()) // 3600 + 1) * 3600  # the next full hour
    mine = ev.create(ev.alice, title="stand-up", starts_at=fmt(t0), ends_at=fmt(t0 + 900),
                     recurrence={"freq": "daily"})["id"]
    hidden = ev.create(ev.bob, title="secret", starts_at=fmt(t0 + 60),
                       classification="restricted", recurrence={"freq": "daily"})["id"]
    rng = {"from": fmt(t0 - 60), "to": fmt(t0 + 3 * 86400)}
    cal = lambda tok: ev.call("GET", "/event-instances", token=tok, params=rng)
    wait_for(lambda: len(cal(ev.admin).json()["data"]) == 6, timeout=10,
             what="the series materialised (3 days of two daily series)")
    got = cal(ev.alice).json()
    assert [(i["event_id"], i["starts_at"]) for i in got["data"]] == \
        [(mine, fmt(t0 + k * 86400)) for k in range(3)], got  # bob's restricted one: not hers
    assert got["data"][0]["ends_at"] == fmt(t0 + 900) and got["truncated"] is False
    assert {i["event_id"] for i in cal(ev.bob).json()["data"]} == {mine, hidden}
    # cancel the second instance, move the third: the rows follow at once
    r = ev.call("PUT", "/events/%s/instances/%d" % (mine, t0 + 86400), token=ev.alice,
                json={"cancelled": True})
    assert r.status_code == 200, r.text
    r = ev.call("PUT", "/events/%s/instances/%d" % (mine, t0 + 2 * 86400), token=ev.alice,
                json={"title": "moved", "starts_at": fmt(t0 + 2 * 86400 + 600)})
    assert r.status_code == 200, r.text
    got = cal(ev.alice).json()["data"]
    assert [(i["starts_at"], i["title"], i["exception"]) for i in got] == \
        [(fmt(t0), "stand-up", False), (fmt(t0 + 2 * 86400 + 600), "moved", True)], got
    # and stay so after the next sweep
    n = lambda: len(ev.call("GET", "/admin/jobs", token=ev.admin,
                            params={"kind": "events.recurrence", "state": "completed"}
                            ).json()["jobs"])
    runs = n()
    wait_for(lambda: n() > runs, timeout=10, what="another sweep")
    assert cal(ev.alice).json()["data"] == got
    problem(ev.call("GET", "/event-instances", token=ev.alice,
                    params={"from": rng["to"], "to": rng["from"]}), 422)


def test_api_keys_and_if_match_forms(ev):
    p = ev.cli(["apikey", "create", "--name", "svc", "--scopes", "events:read,events:write"])
    assert p.returncode == 0, p.stderr
    key = p.stdout.strip()
    p = ev.cli(["apikey", "create", "--name", "ro", "--scopes", "events:read"])
    ro = p.stdout.strip()
    secret = ev.create(ev.alice, title="restricted one", classification="restricted")
    open_ = ev.create(ev.alice, title="open one")
    lst = ev.call("GET", "/events", key=key, params={"count": "true",
                                                     "owner": ev.alice_id}).json()
    assert lst["total"] == 1 and lst["data"][0]["id"] == open_["id"]
    problem(ev.call("GET", "/events", key="keel_00000000_nope"), 401)
    assert ev.call("GET", "/events/" + secret["id"], key=key).status_code == 404
    # a key names the owner; it may change what it sees but never delete
    r = ev.call("POST", "/events", key=key, json={"title": "from a service",
                                                  "starts_at": "2030-01-01T00:00:00Z"})
    assert problem(r, 422)["errors"][0]["pointer"] == "/owner_id"
    r = ev.call("POST", "/events", key=key, json={"title": "for bob", "owner_id": ev.bob_id,
                                                  "starts_at": "2030-01-01T00:00:00Z"})
    assert r.status_code == 201 and r.json()["owner_id"] == ev.bob_id, r.text
    r = ev.call("POST", "/events", key=key, json={"title": "for nobody", "owner_id": "nobody",
                                                  "starts_at": "2030-01-01T00:00:00Z"})
    assert problem(r, 422)["errors"][0]["pointer"] == "/owner_id"
    problem(ev.call("POST", "/events", key=ro, json={"title": "x", "owner_id": ev.bob_id,
                                                    "starts_at": "2030-01-01T00:00:00Z"}), 403)
    r = ev.call("PATCH", "/events/" + open_["id"], key=key, json={"title": "renamed"},
                headers={"If-Match": "*"})
    assert r.status_code == 200 and r.json()["version"] == 2, r.text
    problem(ev.call("DELETE", "/events/" + open_["id"], key=key), 403)
    # If-Match forms: weak or malformed tags never match
    for tag in ('W/"2"', "2", '"two"', '""'):
        problem(ev.call("PATCH", "/events/" + open_["id"], token=ev.alice, json={"title": "t"},
                        headers={"If-Match": tag}), 412)
    audit = ev.call("GET", "/admin/audit", token=ev.admin,
                    params={"entity_id": open_["id"], "action": "event.update"}).json()["data"]
    assert audit[0]["actor_kind"] == "apikey"
