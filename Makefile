# keel — one Makefile. `make` builds build/keel and build/libkeel.a.
# See README.md: `make run` and `make test` are the two commands that matter.
#
# Two kinds of goal. The front goals (run, test, deps, deps-test, bench,
# bench-db, fuzz) first install what is missing (scripts/deps.sh, apt-get
# only for absent packages) and then build in a second make invocation, so
# every flag below is computed after the install and `make -j` never
# compiles before the headers are there. Every other goal only builds:
# when something it needs is missing it stops with one line naming
# `make deps` (or `make deps-test`).

CC       ?= gcc
CLANG    ?= clang-14
PYTHON   ?= /usr/bin/python3
BUILD    ?= build
PREFIX   ?= /usr/local
DESTDIR  ?=

# The libraries libkeel links against (pkg-config names): the link line of
# build/keel, of the examples, of keel.pc and of docs/extending.md.
PKGS     := libuv jansson sqlite3 zlib libsodium hiredis libcurl
SYSLIBS  := -ldl -lpthread -lm
# libpq and libjwt are loaded at run time (src/store/db_pg.c,
# src/auth/jwt.c); only their headers are needed to build.
BUILD_ONLY_PKGS := libpq libjwt

FRONT_GOALS := run test deps deps-test bench bench-db bench-ws bench-events bench-uploads bench-auth \
               fuzz clean help check-layers
TEST_GOALS  := unit unit-db e2e asan asan-db fuzz-run fuzz-short test-suites lint-deploy test-scale \
               bench-instr bench-baseline test-build fuzz-build
BUILD_GOALS := $(filter-out $(FRONT_GOALS),$(if $(MAKECMDGOALS),$(MAKECMDGOALS),all))
ifneq ($(BUILD_GOALS),)
  NEEDED := $(PKGS) $(BUILD_ONLY_PKGS) $(if $(filter $(TEST_GOALS),$(BUILD_GOALS)),cmocka)
  MISSING := $(strip $(shell command -v $(CC) >/dev/null 2>&1 || echo $(CC); \
      command -v pkg-config >/dev/null 2>&1 || echo pkg-config; \
      for p in $(NEEDED); do pkg-config --exists $$p 2>/dev/null || echo $$p; done))
  ifneq ($(MISSING),)
    $(error keel: cannot build, missing: $(MISSING); run 'make $(if $(filter $(TEST_GOALS),$(BUILD_GOALS)),deps-test,deps)' to install what is missing (Debian/Ubuntu))
  endif
endif

# -Werror in `make test` (and so in CI: STRICT=1), not in a user's plain
# build: a newer compiler's new warning must not break it.
STRICT   ?=
WARN     := -Wall -Wextra -Wstrict-prototypes -Wmissing-prototypes -Wshadow \
            $(if $(filter 1,$(STRICT)),-Werror)
CFLAGS   ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -D_GNU_SOURCE -Iinclude -Isrc \
             $(shell pkg-config --cflags $(PKGS) $(BUILD_ONLY_PKGS) 2>/dev/null) -MMD -MP
LDLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) $(SYSLIBS)

LIB_SRC  := $(wildcard src/core/*.c src/auth/*.c src/schema/*.c src/obs/*.c src/mw/*.c src/store/*.c src/resil/*.c src/svc/*.c)
APP_SRC  := $(wildcard src/app/*.c) src/main.c
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
# web/docs (the /docs page) compiled into libkeel (scripts/embed_web.sh)
WEB_FILES := $(wildcard web/docs/*)
LIB_GEN  := $(BUILD)/gen/web_assets.c
LIB_OBJ  += $(BUILD)/gen/web_assets.o
# the job queue's own migration (migrations/*/0003_jobs.sql) compiled into
# libkeel, so a service on the library gets the jobs table (docs/jobs.md)
JOBS_SQL := migrations/sqlite/0003_jobs.sql migrations/postgres/0003_jobs.sql \
  migrations/sqlite/0012_job_schedules.sql migrations/postgres/0012_job_schedules.sql
LIB_OBJ  += $(BUILD)/gen/jobs_migrations.o
# templates/mail (the built-in mail templates) compiled into libkeel
# (scripts/embed_mail.sh, docs/mail.md)
MAIL_FILES := $(wildcard templates/mail/*)
LIB_OBJ  += $(BUILD)/gen/mail_templates.o
APP_OBJ  := $(APP_SRC:%.c=$(BUILD)/obj/%.o)
# migrations/ compiled into build/keel (docs/migrations.md)
MIGRATION_SQL := $(wildcard migrations/sqlite/*.sql migrations/postgres/*.sql)
APP_OBJ  += $(BUILD)/gen/migrations.o
# the git revision, for GET /api/v1/admin/info (scripts/build_info.sh)
APP_OBJ  += $(BUILD)/gen/build_info.o
# web/dashboard (GET /dashboard) compiled into build/keel (scripts/embed_web.sh)
DASH_FILES := $(wildcard web/dashboard/*)
APP_OBJ  += $(BUILD)/gen/dashboard_assets.o
# web/chat (/realtime/client.js and the /chat page) compiled into build/keel
# (scripts/embed_web.sh; docs/realtime.md, "Browser client")
CHAT_FILES := $(wildcard web/chat/*)
APP_OBJ  += $(BUILD)/gen/chat_assets.o
UNIT_SRC := $(shell find tests/unit -name 'test_*.c' 2>/dev/null | sort)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
EXAMPLE  := $(BUILD)/hello-service
EXAMPLES := $(EXAMPLE) $(BUILD)/orders-service
TOOLS    := $(BUILD)/parse_request $(BUILD)/phase_service $(BUILD)/jobs_service

ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

.PHONY: all deps deps-test run test test-suites unit test-js e2e asan fuzz fuzz-run fuzz-short bench clean help \
        bench-instr bench-baseline \
        install uninstall print-ldlibs FORCE

all: $(BUILD)/keel $(BUILD)/libkeel.a $(EXAMPLES) $(TOOLS)

help:
	@echo "make            build build/keel, build/libkeel.a, examples"
	@echo "make run        install what is missing, build, start the reference service"
	@echo "make test       unit + e2e tests, again under ASan+UBSan, short fuzz runs"
	@echo "make bench      benchmark keel against its peers: a result in bench/results/, build/bench/report.md"
	@echo "make bench-instr  instructions per request under callgrind against bench/baseline.json (3 % gate)"
	@echo "make bench-uploads  100 MiB upload + 1 GiB download against Fastify (bench/uploads/run.py)"
	@echo "make bench-auth  GET /auth/me against Express/Fastify, argon2 login + /health p99 (bench/auth/run.py)"
	@echo "make bench-baseline  rewrite bench/baseline.json from a fresh bench-instr run (commit it)"
	@echo "make bench-ws   WebSocket at 10,000 connections against npm ws and Socket.IO (build/bench/ws/report.md)"
	@echo "make fuzz       long libFuzzer runs (FUZZ_SECONDS=300 each)"
	@echo "make lint-deploy check deploy/ (nginx, HAProxy, Caddy, Prometheus, systemd, k8s)"
	@echo "make clean      remove build/"

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

# Objects depend on the flags they were built with: `make test` (STRICT=1,
# -Werror) after a plain `make` recompiles instead of trusting objects
# that were allowed to warn.
FLAGS_STAMP := $(BUILD)/.cflags
ifneq ($(BUILD_GOALS),)
  $(shell mkdir -p $(BUILD); echo '$(CC) $(ALL_CFLAGS)' | cmp -s - $(FLAGS_STAMP) || \
      echo '$(CC) $(ALL_CFLAGS)' > $(FLAGS_STAMP))
endif

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/libkeel.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/keel: $(APP_OBJ) $(BUILD)/libkeel.a
	$(CC) $(ALL_CFLAGS) -o $@ $(APP_OBJ) $(BUILD)/libkeel.a $(LDLIBS)

# The directories are prerequisites too, so adding or removing a file
# regenerates the table.
$(BUILD)/gen/migrations.c: scripts/embed_migrations.sh scripts/c_string.sh $(MIGRATION_SQL) \
		$(wildcard migrations migrations/sqlite migrations/postgres)
	@mkdir -p $(dir $@)
	scripts/embed_migrations.sh migrations app_migrations > $@.tmp
	@mv $@.tmp $@

$(BUILD)/gen/migrations.o: $(BUILD)/gen/migrations.c include/keel/migrate.h include/keel/db.h
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/gen/jobs_migrations.c: scripts/embed_migrations.sh scripts/c_string.sh $(JOBS_SQL)
	@mkdir -p $(BUILD)/gen/jobs_sql/sqlite $(BUILD)/gen/jobs_sql/postgres
	cp migrations/sqlite/0003_jobs.sql migrations/sqlite/0012_job_schedules.sql $(BUILD)/gen/jobs_sql/sqlite/
	cp migrations/postgres/0003_jobs.sql migrations/postgres/0012_job_schedules.sql $(BUILD)/gen/jobs_sql/postgres/
	scripts/embed_migrations.sh $(BUILD)/gen/jobs_sql keel_jobs_migrations > $@.tmp
	@mv $@.tmp $@

$(BUILD)/gen/jobs_migrations.o: $(BUILD)/gen/jobs_migrations.c include/keel/migrate.h
	$(CC) $(ALL_CFLAGS) -c $< -o $@

# Regenerated on every build but replaced only when its text changes (a
# new commit): then one file is recompiled and build/keel relinked.
$(BUILD)/gen/build_info.c: FORCE
	@mkdir -p $(dir $@)
	@scripts/build_info.sh > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv $@.tmp $@; fi

$(BUILD)/gen/build_info.o: $(BUILD)/gen/build_info.c src/app/build_info.h
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/gen/web_assets.c: scripts/embed_web.sh scripts/c_string.sh $(WEB_FILES) web/docs
	@mkdir -p $(dir $@)
	scripts/embed_web.sh web/docs > $@.tmp
	@mv $@.tmp $@

$(BUILD)/gen/web_assets.o: $(BUILD)/gen/web_assets.c src/svc/svc_internal.h
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/gen/dashboard_assets.c: scripts/embed_web.sh scripts/c_string.sh $(DASH_FILES) web/dashboard
	@mkdir -p $(dir $@)
	scripts/embed_web.sh web/dashboard app_dashboard_assets app_asset app/app.h > $@.tmp
	@mv $@.tmp $@

$(BUILD)/gen/dashboard_assets.o: $(BUILD)/gen/dashboard_assets.c src/app/app.h
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/gen/chat_assets.c: scripts/embed_web.sh scripts/c_string.sh $(CHAT_FILES) web/chat
	@mkdir -p $(dir $@)
	scripts/embed_web.sh web/chat app_chat_assets app_asset app/chat.h > $@.tmp
	@mv $@.tmp $@

$(BUILD)/gen/chat_assets.o: $(BUILD)/gen/chat_assets.c src/app/chat.h src/app/app.h
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/gen/mail_templates.c: scripts/embed_mail.sh scripts/c_string.sh $(MAIL_FILES) templates/mail
	@mkdir -p $(dir $@)
	scripts/embed_mail.sh templates/mail > $@.tmp
	@mv $@.tmp $@

$(BUILD)/gen/mail_templates.o: $(BUILD)/gen/mail_templates.c src/store/mail_internal.h
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(BUILD)/%-service: examples/%-service/main.c $(BUILD)/libkeel.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libkeel.a $(LDLIBS)

$(BUILD)/parse_request: tests/tools/parse_request.c $(BUILD)/libkeel.a
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libkeel.a $(LDLIBS)

$(BUILD)/phase_service: tests/tools/phase_service.c $(BUILD)/libkeel.a
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libkeel.a $(LDLIBS)

$(BUILD)/jobs_service: tests/tools/jobs_service.c $(BUILD)/libkeel.a
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libkeel.a $(LDLIBS)

# keel's side of the job-queue benchmark (bench/jobs/run.sh)
$(BUILD)/jobs_bench: bench/jobs/jobs_bench.c $(BUILD)/libkeel.a
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libkeel.a $(LDLIBS)

# keel's side of the WebSocket fan-out / idle-connection benchmark (bench/ws/run.sh)
$(BUILD)/bench/fanout_service: bench/ws/fanout_service.c $(BUILD)/libkeel.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libkeel.a $(LDLIBS)

# the OTLP/HTTP receiver of the tracing benchmark (bench/trace.sh): no libkeel
$(BUILD)/bench/otlp_sink: bench/otlp_sink.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $<

# the WebSocket load client (bench/ws/wsbench.c): no libkeel, its own framing
$(BUILD)/bench/wsbench: bench/ws/wsbench.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libkeel.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libkeel.a $(LDLIBS) -lcmocka

# the reference service's own suites (tests/unit/app) link its objects, not main.o
APP_TEST_OBJ := $(filter-out $(BUILD)/obj/src/main.o,$(APP_OBJ))
$(BUILD)/tests/app/%: tests/unit/app/%.c $(APP_TEST_OBJ) $(BUILD)/libkeel.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(APP_TEST_OBJ) $(BUILD)/libkeel.a $(LDLIBS) -lcmocka

run:
	@scripts/deps.sh build
	@$(MAKE) --no-print-directory all
	@mkdir -p data
	exec $(BUILD)/keel serve

# with a throw-away redis-server (KEEL_TEST_REDIS_URL) for the Redis suites
unit: $(UNIT_BIN)
	@tests/support/with_redis.sh sh -c 'set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done'

e2e: all
	KEEL_BIN=$(abspath $(BUILD)/keel) KEEL_EXAMPLE_BIN=$(abspath $(EXAMPLE)) \
	  KEEL_PARSE_BIN=$(abspath $(BUILD)/parse_request) \
	  KEEL_PHASE_BIN=$(abspath $(BUILD)/phase_service) \
	  KEEL_JOBS_BIN=$(abspath $(BUILD)/jobs_service) \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

# The browser client's logic (web/chat/client.js) under node with a mock
# WebSocket; the real browser is tests/e2e/test_chat_browser.py.
test-js:
	node --test tests/js/client.test.mjs

# The same unit and e2e suites, built with clang under ASan+UBSan.
asan:
	$(MAKE) --no-print-directory BUILD=build/asan CC=$(CLANG) CFLAGS="$(ASAN_FLAGS)" \
	  all unit e2e KEEL_SANITIZED=1

# The library is compiled once for every harness (instrumented for
# coverage, without libFuzzer's main), then each harness links against it.
FUZZ_CFLAGS = -std=gnu11 -g -O1 -D_GNU_SOURCE -Iinclude -Isrc \
              $(shell pkg-config --cflags $(PKGS) $(BUILD_ONLY_PKGS) 2>/dev/null) -MMD -MP
FUZZ_OBJ := $(LIB_SRC:%.c=$(BUILD)/fuzz/obj/%.o) $(BUILD)/fuzz/obj/gen/web_assets.o \
            $(BUILD)/fuzz/obj/gen/jobs_migrations.o \
            $(BUILD)/fuzz/obj/gen/mail_templates.o

$(BUILD)/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

$(BUILD)/fuzz/obj/gen/web_assets.o: $(LIB_GEN)
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

$(BUILD)/fuzz/obj/gen/jobs_migrations.o: $(BUILD)/gen/jobs_migrations.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

$(BUILD)/fuzz/obj/gen/mail_templates.o: $(BUILD)/gen/mail_templates.c
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@

$(BUILD)/fuzz/libkeel-fuzz.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/fuzz/libkeel-fuzz.a
	@mkdir -p $(dir $@)
	$(CLANG) $(FUZZ_CFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< \
	  $(BUILD)/fuzz/libkeel-fuzz.a $(LDLIBS)

FUZZ_SECONDS ?= 300
fuzz:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory fuzz-run

fuzz-run: $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); mkdir -p build/corpus/$$n; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -dict=tests/fuzz/$$n.dict build/corpus/$$n tests/fuzz/corpus/$$n; done

# make test: a short run of each harness on its corpus (new inputs go to a
# scratch directory, never into the committed corpus). FUZZ_SHORT_JOBS
# harnesses run at once (one a core on CI's two: each still gets its
# FUZZ_SHORT_SECONDS of one CPU; the output is kept per harness).
FUZZ_SHORT_SECONDS ?= 10
FUZZ_SHORT_JOBS ?= 2
FUZZ_SHORT_RUNS := $(FUZZ_BIN:$(BUILD)/fuzz/%=fuzz-short/%)
.PHONY: fuzz-short $(FUZZ_SHORT_RUNS)
fuzz-short: $(FUZZ_BIN)
	@$(MAKE) --no-print-directory -j$(FUZZ_SHORT_JOBS) -Otarget $(FUZZ_SHORT_RUNS)

$(FUZZ_SHORT_RUNS): fuzz-short/%: $(BUILD)/fuzz/%
	@n=$*; f=$(BUILD)/fuzz/$$n; d=$(BUILD)/fuzz-scratch/$$n; \
	  rm -rf $$d; mkdir -p $$d; echo "== $$n (corpus + $(FUZZ_SHORT_SECONDS)s)"; \
	  if ! $$f -max_total_time=$(FUZZ_SHORT_SECONDS) -dict=tests/fuzz/$$n.dict $$d tests/fuzz/corpus/$$n \
	       > $$d.log 2>&1; then tail -n 40 $$d.log; echo "fuzz: $$n FAILED"; exit 1; fi; \
	  grep -E '^(Done|#[0-9]+ *DONE)' $$d.log | tail -n 1; echo "fuzz: $$n passed"

test:
	@scripts/deps.sh test
	@$(MAKE) --no-print-directory STRICT=1 test-suites
	@echo "make test: all suites passed"

# The suites run one after another (their timings and loads must not mix),
# but what they need is compiled first with TEST_JOBS compilers at once:
# the plain and the ASan build with every unit suite, and the fuzz
# harnesses (a plain `make test`, as CI runs it, used to compile on one
# core). docs/testing.md has the time budget.
TEST_JOBS ?= 2
.PHONY: test-build fuzz-build
test-build: all $(UNIT_BIN)
fuzz-build: $(FUZZ_BIN)

test-suites:
	$(MAKE) --no-print-directory check-layers
	$(MAKE) --no-print-directory -j$(TEST_JOBS) -Otarget test-build
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory test-js
	$(MAKE) --no-print-directory unit-db
	$(MAKE) --no-print-directory e2e
	$(MAKE) --no-print-directory lint-deploy
	$(MAKE) --no-print-directory test-scale
	$(MAKE) --no-print-directory bench-instr
	$(MAKE) --no-print-directory -j$(TEST_JOBS) -Otarget BUILD=build/asan CC=$(CLANG) \
	  CFLAGS="$(ASAN_FLAGS)" test-build
	$(MAKE) --no-print-directory asan
	$(MAKE) --no-print-directory asan-db
	$(MAKE) --no-print-directory -j$(TEST_JOBS) -Otarget fuzz-build
	$(MAKE) --no-print-directory fuzz-short

# The benchmark system (bench/bench.py; docs/performance.md, "The
# benchmark system"). `make bench`: instructions per request, the
# side-by-side run against the peers (bench/run.sh, interleaved passes) and
# /api/v1/auth/me against the demo /auth/me on SQLite and PostgreSQL, one
# JSON result into bench/results/ and build/bench/report.md with SVG
# charts against bench/baseline.json and the previous runs. Options
# through BENCH_ARGS, e.g. BENCH_ARGS="--rounds 5 --skip authme".
bench:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all
	$(PYTHON) bench/bench.py run $(BENCH_ARGS)

# The regression gate (make test runs it after e2e): user-space
# instructions per request under callgrind for /hello, /json, /echo,
# /auth/me, /api/v1/auth/me and /db (SQLite), against bench/baseline.json;
# fails when one grows by more than 3 %. Always the normal -O2 build in
# build/ (bench.py refuses a sanitizer or -O0 build).
bench-instr:
	@$(MAKE) --no-print-directory BUILD=build all
	$(PYTHON) bench/bench.py instr --json build/bench/instr.json
	$(PYTHON) bench/bench.py check build/bench/instr.json

# A deliberate new reference: rewrites bench/baseline.json (commit it).
bench-baseline:
	@$(MAKE) --no-print-directory BUILD=build all
	$(PYTHON) bench/bench.py instr --json build/bench/instr.json
	$(PYTHON) bench/bench.py baseline build/bench/instr.json

# deploy/, Dockerfile and docker-compose.yml, each checked by the tool
# that runs it (nginx -t, haproxy -c, caddy validate, promtool,
# systemd-analyze, the Kubernetes schema) and by tests/deploy/.
# Three instances on one PostgreSQL and Redis behind nginx, HAProxy and
# Caddy (tests/scale/); figures go to build/scale-report.json.
.PHONY: test-scale
test-scale: all
	KEEL_BIN=$(abspath $(BUILD)/keel) $(PYTHON) -m pytest -q -p no:cacheprovider -s tests/scale $(PYTEST_ARGS)

# CPU per 1,000 requests of keel, nginx, PostgreSQL and Redis through
# nginx and direct (bench/scale/capacity.py; docs/performance.md).
.PHONY: bench-scale
bench-scale: all
	$(PYTHON) bench/scale/capacity.py

.PHONY: lint-deploy
lint-deploy: all
	BUILD=$(BUILD) PYTHON=$(PYTHON) scripts/lint_deploy.sh

# The layer rule (docs/architecture.md) from the #include lines; the
# self-test first proves the check fails on a violating include.
.PHONY: check-layers
check-layers:
	@scripts/check_layers.sh --self-test
	@scripts/check_layers.sh

clean:
	rm -rf build

# ---------------------------------------------------------------- storage tests on PostgreSQL
# (added with the storage layer, docs/storage.md) `make unit` runs the
# store suites on SQLite only; these run every tests/unit/store suite again
# with a throw-away PostgreSQL 15 cluster on a free loopback port
# (tests/support/with_pg.sh: started, exported as KEEL_TEST_PG_URL /
# KEEL_TEST_PG_DIR, always stopped and removed). asan-db: the same under
# ASan+UBSan.
# (and the app's suites that use a database, tests/unit/app)
STORE_BIN := $(filter $(BUILD)/tests/store/% $(BUILD)/tests/app/%,$(UNIT_BIN))
.PHONY: unit-db asan-db
unit-db: $(STORE_BIN)
	tests/support/with_pg.sh sh -c 'set -e; for t in $(STORE_BIN); do echo "== $$t (SQLite + PostgreSQL)"; $$t; done'

asan-db:
	$(MAKE) --no-print-directory BUILD=build/asan CC=$(CLANG) CFLAGS="$(ASAN_FLAGS)" unit-db

-include $(shell find $(BUILD)/obj $(BUILD)/tests $(BUILD)/fuzz -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------- single-query benchmark
# (added with bench/db/) keel's GET /db?id=N against Express 5 and Fastify 5
# with the `pg` package, on one throw-away PostgreSQL 15: bench/db/run.sh,
# figures in docs/performance.md. Options through BENCH_DB_ARGS, e.g.
#   make bench-db BENCH_DB_ARGS="--pool 4,8 --rounds 3"
.PHONY: bench-db
bench-db:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all
	bench/db/run.sh $(BENCH_DB_ARGS)

# ---------------------------------------------------------------- events benchmark
# keel's GET /api/v1/events?limit=50 and POST /api/v1/events against an
# Express 5 + Knex implementation of the same routes (bench/events/), one
# throw-away PostgreSQL, 100,000 events: bench/events/run.py. Options
# through BENCH_EVENTS_ARGS, e.g. make bench-events BENCH_EVENTS_ARGS="--rounds 5"
.PHONY: bench-events
bench-events:
	@scripts/deps.sh bench
	bench/events/run.sh $(BENCH_EVENTS_ARGS)
# ---------------------------------------------------------------- WebSocket benchmark
# (bench/ws/) keel's WebSocket transport at 10,000 connections against the
# npm ws server and Socket.IO (npm packages into $(BUILD)/bench-node only):
# idle RSS per connection, fan-out latency, broadcast rate, echo
# throughput; figures in docs/performance.md. Not part of make test.
#   make bench-ws BENCH_WS_ARGS="--rounds 5 --only fanout,rate"
.PHONY: bench-ws
bench-ws:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all $(BUILD)/bench/fanout_service $(BUILD)/bench/wsbench
	@mkdir -p $(BUILD)/bench-node
	@cmp -s bench/ws/package-lock.json $(BUILD)/bench-node/package-lock.json && \
		[ -d $(BUILD)/bench-node/node_modules/socket.io ] || \
		(cp bench/ws/package.json bench/ws/package-lock.json $(BUILD)/bench-node/ && \
		 cd $(BUILD)/bench-node && npm ci --omit=dev --no-audit --no-fund)
	bench/ws/run.sh --build $(BUILD) $(BENCH_WS_ARGS)

# ---------------------------------------------------------------- uploads and auth benchmarks
# (added with bench/uploads/ and bench/auth/; not part of make test; each
# installs its npm packages into bench/<dir>/node_modules when missing)
# make bench-uploads: 100 MiB multipart upload and 1 GiB download against
# Fastify + @fastify/multipart + @fastify/static (bench/uploads/run.py);
# make bench-auth: GET /auth/me against Express and Fastify, argon2 login
# throughput and /health p99 during the logins (bench/auth/run.py).
# Figures in docs/performance.md. Options: BENCH_UPLOADS_ARGS, BENCH_AUTH_ARGS.
.PHONY: bench-uploads bench-auth
bench-uploads:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all
	$(PYTHON) bench/uploads/run.py $(BENCH_UPLOADS_ARGS)

bench-auth:
	@scripts/deps.sh bench
	@$(MAKE) --no-print-directory all
	$(PYTHON) bench/auth/run.py $(BENCH_AUTH_ARGS)

# ---------------------------------------------------------------- install
# libkeel as a library people install: libkeel.a, include/keel/*.h and
# keel.pc under $(DESTDIR)$(PREFIX). Build against it with
#   cc my_service.c $(pkg-config --cflags --libs keel)
# (tests/e2e/test_install.py does exactly that with examples/hello-service).
KEEL_VERSION := $(shell sed -n 's/^\#define KEEL_VERSION "\(.*\)"/\1/p' include/keel/keel.h)

# written every time: it depends on PREFIX, which make cannot see change
$(BUILD)/keel.pc: FORCE
	@mkdir -p $(dir $@)
	@printf '%s\n' 'prefix=$(PREFIX)' 'exec_prefix=$${prefix}' 'libdir=$${exec_prefix}/lib' \
	  'includedir=$${prefix}/include' '' 'Name: keel' \
	  'Description: production-ready backend service kit: HTTP server, middleware, storage, observability' \
	  'Version: $(KEEL_VERSION)' 'Requires: $(PKGS)' 'Libs: -L$${libdir} -lkeel $(SYSLIBS)' \
	  'Cflags: -I$${includedir}' > $@

install: $(BUILD)/libkeel.a $(BUILD)/keel.pc
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/keel
	install -m 644 $(BUILD)/libkeel.a $(DESTDIR)$(PREFIX)/lib/libkeel.a
	install -m 644 include/keel/*.h $(DESTDIR)$(PREFIX)/include/keel/
	install -m 644 $(BUILD)/keel.pc $(DESTDIR)$(PREFIX)/lib/pkgconfig/keel.pc

FORCE:

uninstall:
	rm -rf $(DESTDIR)$(PREFIX)/include/keel
	rm -f $(DESTDIR)$(PREFIX)/lib/libkeel.a $(DESTDIR)$(PREFIX)/lib/pkgconfig/keel.pc

# The link line for a service on an uninstalled build/libkeel.a, from the
# same list (docs/extending.md shows it; a test keeps the two in step).
print-ldlibs:
	@echo "build/libkeel.a $(LDLIBS)"
