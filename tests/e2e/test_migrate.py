"""`keel migrate up|down|status|create` and migrations on `keel serve`,
against SQLite in a temporary directory and against a real PostgreSQL 15
that this module starts itself (tests/support/pg_tmp.sh: initdb + pg_ctl
as the postgres user on a free loopback port), including two keel
processes migrating one database at the same time.

Each test gets its own database: a fresh SQLite file, or a PostgreSQL
database created for it.
"""
import json
import os
import shutil
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import KEEL_BIN, SLACK, build_env, free_port, run_cli, sanitizer_report, start_server

REPO = Path(__file__).resolve().parents[2]
PG_TMP = REPO / "tests" / "support" / "pg_tmp.sh"
EXAMPLE_BIN = os.environ.get("KEEL_EXAMPLE_BIN") or str(REPO / "build" / "hello-service")


# ---------------------------------------------------------------- helpers

def log_lines(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = {"_raw": line}
        out.append(obj if isinstance(obj, dict) else {"_raw": line})
    return out


def migrate(args, url, mdir=None, cwd=None, extra=None):
    env = {"DATABASE_URL": url}
    if mdir:
        env["MIGRATIONS_DIR"] = str(mdir)
    env.update(extra or {})
    p = run_cli(["migrate"] + list(args), env=env, cwd=cwd, timeout=60 * SLACK)
    assert not sanitizer_report(p.stderr), p.stderr
    return p


def applied_versions(p):
    """The versions a run logged as applied (p: a CompletedProcess or its stdout)."""
    text = p if isinstance(p, str) else p.stdout
    return [e.get("version") for e in log_lines(text) if e.get("msg") == "migration applied"]


def status_rows(text):
    """`migrate status` as {version: (name, status, applied_at)}."""
    rows = {}
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and lines[0].split()[:3] == ["VERSION", "NAME", "STATUS"], text
    for line in lines[1:]:
        cols = line.split()
        rows[int(cols[0])] = (cols[1], cols[2], cols[3])
    return rows


def write_migration(mdir, driver, fname, up, down):
    d = Path(mdir) / driver
    d.mkdir(parents=True, exist_ok=True)
    (d / fname).write_text("-- migrate:up\n%s\n-- migrate:down\n%s\n" % (up, down))


def copy_repo_migrations(dst):
    """The repository's first migration (demo items) only: these tests are
    about the mechanism, and number their own files from 0002."""
    shutil.copytree(REPO / "migrations", dst,
                    ignore=lambda d, names: [n for n in names
                                             if n.endswith(".sql") and not n.startswith("0001_")])
    return dst


class Sqlite:
    name = "sqlite"

    def __init__(self, tmp_path):
        self.path = tmp_path / "db" / "keel.db"
        self.url = "sqlite:%s" % self.path

    def scalar(self, sql):
        con = sqlite3.connect(str(self.path))
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()

    def has_table(self, name):
        return self.scalar("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='%s'"
                           % name) == 1


class PgCluster:
    """A throw-away cluster for this module (pg_tmp.sh start / destroy)."""

    def __init__(self):
        if not PG_TMP.exists():
            pytest.fail("tests/support/pg_tmp.sh is missing", pytrace=False)
        p = subprocess.run([str(PG_TMP), "start"], capture_output=True, text=True,
                           timeout=120)
        if p.returncode != 0:
            pytest.fail("could not start PostgreSQL: %s" % p.stderr, pytrace=False)
        env = dict(line.replace("export ", "", 1).split("=", 1)
                   for line in p.stdout.splitlines() if line.startswith("export "))
        self.url = env["KEEL_TEST_PG_URL"]
        self.dir = env["KEEL_TEST_PG_DIR"]

    def psql(self, url, sql):
        p = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url,
                            "-c", sql], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, (sql, p.stderr)
        return p.stdout.strip()

    def destroy(self):
        subprocess.run([str(PG_TMP), "destroy", self.dir], capture_output=True, timeout=120)


class Pg:
    name = "postgres"

    def __init__(self, cluster):
        self.cluster = cluster
        self.db = "keel_e2e_%s" % uuid.uuid4().hex[:12]
        cluster.psql(cluster.url, "CREATE DATABASE %s" % self.db)
        self.url = cluster.url.rsplit("/", 1)[0] + "/" + self.db

    def scalar(self, sql):
        out = self.cluster.psql(self.url, sql)
        return int(out) if out.lstrip("-").isdigit() else out

    def has_table(self, name):
        return self.scalar("SELECT count(*) FROM pg_tables WHERE schemaname='public' "
                           "AND tablename='%s'" % name) == 1

    def drop(self):
        self.cluster.psql(self.cluster.url, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.db)


@pytest.fixture
def pg(pg_cluster):
    db = Pg(pg_cluster)
    yield db
    db.drop()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    if request.param == "sqlite":
        yield Sqlite(tmp_path)
    else:
        d = Pg(request.getfixturevalue("pg_cluster"))
        yield d
        d.drop()


# ---------------------------------------------------------------- the CLI

def test_up_status_down_with_the_embedded_set(db, tmp_path):
    """The compiled-in migrations: no migrations folder next to the binary."""
    p = migrate(["status"], db.url, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert status_rows(p.stdout)[1][:2] == ("demo_items", "pending")
    assert not db.has_table("schema_migrations"), "status must not create anything"

    p = migrate(["up"], db.url, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    versions = applied_versions(p)
    assert versions[:2] == [1, 2] and versions == sorted(versions), versions
    applied = [e for e in log_lines(p.stdout) if e.get("msg") == "migration applied"]
    assert applied[0]["file"].endswith("0001_demo_items.sql (embedded)"), applied
    assert applied[1]["file"].endswith("0002_users_auth.sql (embedded)"), applied
    assert applied[2]["file"].endswith("0003_jobs.sql (embedded)"), applied
    assert db.scalar("SELECT count(*) FROM items") == 10000
    assert db.scalar("SELECT count(*) FROM schema_migrations") == len(versions)
    assert db.has_table("users") and db.has_table("api_keys") and db.has_table("keel_jobs")
    assert db.has_table("files")
    assert any(e["file"].endswith("0004_revoked_tokens_user.sql (embedded)") for e in applied)

    p = migrate(["status"], db.url, cwd=tmp_path)
    name, status, at = status_rows(p.stdout)[1]
    assert (name, status) == ("demo_items", "applied")
    assert time.strptime(at, "%Y-%m-%dT%H:%M:%SZ")
    assert status_rows(p.stdout)[2][:2] == ("users_auth", "applied")
    assert status_rows(p.stdout)[3][:2] == ("jobs", "applied")
    assert status_rows(p.stdout)[4][:2] == ("revoked_tokens_user", "applied")

    p = migrate(["up"], db.url, cwd=tmp_path)
    assert p.returncode == 0 and applied_versions(p) == []
    assert any(e.get("msg") == "migrations up to date" for e in log_lines(p.stdout)), p.stdout

    p = migrate(["down", str(len(versions))], db.url, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert [e.get("version") for e in log_lines(p.stdout)
            if e.get("msg") == "migration rolled back"] == versions[::-1]
    assert not db.has_table("items") and not db.has_table("users")
    assert not db.has_table("keel_jobs")
    assert db.scalar("SELECT count(*) FROM schema_migrations") == 0
    assert status_rows(migrate(["status"], db.url, cwd=tmp_path).stdout)[1][1] == "pending"


def test_down_n_and_reup_from_a_directory(db, tmp_path):
    mdir = copy_repo_migrations(tmp_path / "m")
    for driver in ("sqlite", "postgres"):
        write_migration(mdir, driver, "0002_tags.sql",
                        "CREATE TABLE tags (id INTEGER PRIMARY KEY, tag TEXT NOT NULL);",
                        "DROP TABLE tags;")
        write_migration(mdir, driver, "0003_notes.sql",
                        "CREATE TABLE notes (id INTEGER PRIMARY KEY);", "DROP TABLE notes;")
    p = migrate(["up"], db.url, mdir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert applied_versions(p) == [1, 2, 3]
    p = migrate(["down", "2"], db.url, mdir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not db.has_table("notes") and not db.has_table("tags") and db.has_table("items")
    rows = status_rows(migrate(["status"], db.url, mdir).stdout)
    assert [rows[v][1] for v in (1, 2, 3)] == ["applied", "pending", "pending"]
    p = migrate(["up"], db.url, mdir)
    assert applied_versions(p) == [2, 3]


def test_edited_migration_refused_with_one_line(db, tmp_path):
    mdir = copy_repo_migrations(tmp_path / "m")
    assert migrate(["up"], db.url, mdir).returncode == 0
    f = mdir / db.name / "0001_demo_items.sql"
    f.write_text(f.read_text().replace("DROP TABLE items;", "DROP TABLE IF EXISTS items;"))
    p = migrate(["up"], db.url, mdir)
    assert p.returncode == 1, p.stdout + p.stderr
    lines = [line for line in (p.stdout + p.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert entry["level"] == "error"
    assert str(f) in entry["msg"] and "edited" in entry["msg"], entry
    rows = status_rows(migrate(["status"], db.url, mdir).stdout)
    assert rows[1][1] == "EDITED"
    assert migrate(["status"], db.url, mdir).returncode == 1
    assert migrate(["down"], db.url, mdir).returncode == 1
    assert db.has_table("items")


def test_missing_migration_refused(db, tmp_path):
    mdir = copy_repo_migrations(tmp_path / "m")
    write_migration(mdir, db.name, "0002_tags.sql", "CREATE TABLE tags (id INTEGER);",
                    "DROP TABLE tags;")
    assert migrate(["up"], db.url, mdir).returncode == 0
    (mdir / db.name / "0002_tags.sql").unlink()
    write_migration(mdir, db.name, "0003_more.sql", "CREATE TABLE more (id INTEGER);",
                    "DROP TABLE more;")
    p = migrate(["up"], db.url, mdir)
    assert p.returncode == 1
    errors = [e for e in log_lines(p.stdout) if e.get("level") == "error"]
    assert len(errors) == 1 and "0002_tags" in errors[0]["msg"], p.stdout
    assert not db.has_table("more")
    assert status_rows(migrate(["status"], db.url, mdir).stdout)[2][1] == "MISSING"


def test_failing_migration_leaves_nothing(db, tmp_path):
    mdir = copy_repo_migrations(tmp_path / "m")
    write_migration(mdir, db.name, "0002_broken.sql",
                    "CREATE TABLE half (id INTEGER);\nINSERT INTO half VALUES (1);\n"
                    "INSERT INTO nowhere VALUES (1);", "DROP TABLE half;")
    p = migrate(["up"], db.url, mdir)
    assert p.returncode == 1, p.stdout
    mine = [e for e in log_lines(p.stdout)
            if e.get("level") == "error" and "0002_broken.sql" in e.get("msg", "")]
    assert len(mine) == 1 and "line 4" in mine[0]["msg"], p.stdout
    assert applied_versions(p) == [1]
    assert not db.has_table("half")
    assert db.scalar("SELECT count(*) FROM schema_migrations WHERE version = 2") == 0


@pytest.mark.parametrize("args", [[], ["sideways"], ["down", "0"], ["down", "x"],
                                  ["create"], ["up", "extra"], ["up", "--force"]])
def test_usage_errors_exit_2(tmp_path, args):
    p = migrate(args, "sqlite:%s/x.db" % tmp_path, cwd=tmp_path)
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    assert "migrate" in p.stderr
    assert not (tmp_path / "x.db").exists()


def test_create_writes_both_dialects(tmp_path):
    p = migrate(["create", "add_users"], "sqlite:x.db", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    for driver in ("sqlite", "postgres"):
        f = tmp_path / "migrations" / driver / "0001_add_users.sql"
        assert f.read_text().startswith("-- migrate:up\n"), f
        assert "-- migrate:down" in f.read_text()
    mdir = copy_repo_migrations(tmp_path / "m")
    p = migrate(["create", "add_tags"], "sqlite:x.db", mdir, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (mdir / "postgres" / "0002_add_tags.sql").exists()
    assert str(mdir / "sqlite" / "0002_add_tags.sql") in p.stdout
    # an empty new migration applies and rolls back
    url = "sqlite:%s/db.sqlite" % tmp_path
    assert applied_versions(migrate(["up"], url, mdir)) == [1, 2]
    assert migrate(["down"], url, mdir).returncode == 1  # empty down: irreversible
    assert migrate(["create", "bad name"], url, mdir).returncode == 1


def test_help_lists_migrate_and_example_has_no_database(tmp_path):
    p = run_cli(["--help"], cwd=tmp_path)
    assert "migrate up" in p.stdout and "migrate create NAME" in p.stdout
    if os.access(EXAMPLE_BIN, os.X_OK):
        e = subprocess.run([EXAMPLE_BIN, "migrate", "up"], env=build_env({}), cwd=tmp_path,
                           capture_output=True, text=True, timeout=30)
        assert e.returncode == 2 and "unknown command" in e.stderr
        assert "migrate" not in subprocess.run([EXAMPLE_BIN, "--help"], capture_output=True,
                                               text=True, timeout=30).stdout


# ---------------------------------------------------------------- serve

def test_serve_migrates_before_listening(db, tmp_path):
    srv = start_server({"DATABASE_URL": db.url}, tmp_path)
    try:
        logs = srv.logs()
        msgs = [e.get("msg") for e in logs]
        assert "migration applied" in msgs and "listening" in msgs, msgs
        assert msgs.index("migration applied") < msgs.index("listening"), msgs
        assert db.scalar("SELECT count(*) FROM items") == 10000
    finally:
        assert srv.stop() == 0


def test_serve_without_migrate_on_start(tmp_path):
    db = Sqlite(tmp_path)
    srv = start_server({"DATABASE_URL": db.url, "MIGRATE_ON_START": "false"}, tmp_path)
    try:
        assert "migration applied" not in [e.get("msg") for e in srv.logs()]
        assert not db.path.exists() or not db.has_table("schema_migrations")
    finally:
        assert srv.stop() == 0


def test_serve_refuses_an_edited_migration(tmp_path):
    db = Sqlite(tmp_path)
    mdir = copy_repo_migrations(tmp_path / "m")
    assert migrate(["up"], db.url, mdir).returncode == 0
    f = mdir / "sqlite" / "0001_demo_items.sql"
    f.write_text(f.read_text() + "\n")
    env = build_env({"DATABASE_URL": db.url, "MIGRATIONS_DIR": str(mdir), "PORT": free_port()})
    p = subprocess.run([KEEL_BIN, "serve"], env=env, cwd=tmp_path, capture_output=True,
                       text=True, timeout=30 * SLACK)
    assert p.returncode == 1, p.stdout + p.stderr
    errors = [e for e in log_lines(p.stdout) if e.get("level") == "error"]
    assert len(errors) == 1 and str(f) in errors[0]["msg"], p.stdout
    assert "listening" not in p.stdout


# ---------------------------------------------------------------- concurrency

def run_two(url, mdir, tmp_path):
    env = build_env({"DATABASE_URL": url, "MIGRATIONS_DIR": str(mdir)})
    procs = []
    for i in range(2):
        out = open(tmp_path / ("out%d.log" % i), "w+")
        procs.append((subprocess.Popen([KEEL_BIN, "migrate", "up"], env=env, cwd=tmp_path,
                                       stdout=out, stderr=subprocess.STDOUT), out))
    results = []
    for proc, out in procs:
        rc = proc.wait(timeout=120 * SLACK)
        out.seek(0)
        results.append((rc, out.read()))
        out.close()
    return results


def assert_each_applied_once(results, versions):
    for rc, text in results:
        assert rc == 0, text
        assert not sanitizer_report(text), text
    seen = [v for _, text in results for v in applied_versions(text)]
    assert sorted(seen) == versions, results


def test_two_processes_migrate_one_postgres(pg, tmp_path):
    mdir = tmp_path / "m"
    write_migration(mdir, "postgres", "0001_slow.sql",
                    "CREATE TABLE slow (id INTEGER PRIMARY KEY);\nSELECT pg_sleep(1);\n"
                    "INSERT INTO slow VALUES (1);", "DROP TABLE slow;")
    write_migration(mdir, "postgres", "0002_after.sql",
                    "CREATE TABLE after_slow (id INTEGER);\nSELECT pg_sleep(0.5);",
                    "DROP TABLE after_slow;")
    results = run_two(pg.url, mdir, tmp_path)
    assert_each_applied_once(results, [1, 2])
    waited = sum("waiting for another instance" in text for _, text in results)
    assert waited == 1, results
    assert pg.scalar("SELECT count(*) FROM schema_migrations") == 2
    assert pg.scalar("SELECT count(*) FROM slow") == 1


def test_two_processes_migrate_one_sqlite(tmp_path):
    db = Sqlite(tmp_path)
    mdir = tmp_path / "m"
    # heavy enough to overlap: a couple of million rows generated in SQL
    write_migration(mdir, "sqlite", "0001_slow.sql",
                    "CREATE TABLE slow AS WITH RECURSIVE s(n) AS "
                    "(SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 2000000) SELECT n FROM s;",
                    "DROP TABLE slow;")
    write_migration(mdir, "sqlite", "0002_after.sql", "CREATE TABLE after_slow (id INTEGER);",
                    "DROP TABLE after_slow;")
    db.path.parent.mkdir(parents=True)
    results = run_two(db.url, mdir, tmp_path)
    assert_each_applied_once(results, [1, 2])
    assert db.scalar("SELECT count(*) FROM schema_migrations") == 2
    assert db.scalar("SELECT count(*) FROM slow") == 2000000
