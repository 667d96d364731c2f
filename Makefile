# keel — one Makefile. `make` builds build/keel and build/libkeel.a.
# See README.md: `make run` and `make test` are the two commands that matter.

CC       ?= gcc
CLANG    ?= clang-14
PYTHON   ?= /usr/bin/python3
BUILD    ?= build

PKGS     := libuv jansson sqlite3 zlib libsodium hiredis
# libjwt is loaded at run time too (src/auth/jwt.c); its header is needed to build
CFLAGS_JWT := $(shell pkg-config --cflags libjwt 2>/dev/null)
# libpq is loaded at run time (src/store/db_pg.c); its header is needed to build
CFLAGS_PQ := $(shell pkg-config --cflags libpq 2>/dev/null)
WARN     := -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes -Wshadow
CFLAGS   ?= -O2 -g
ALL_CFLAGS = -std=gnu11 $(WARN) $(CFLAGS) -D_GNU_SOURCE -Iinclude -Isrc \
             $(shell pkg-config --cflags $(PKGS) 2>/dev/null) $(CFLAGS_PQ) $(CFLAGS_JWT) -MMD -MP
LDLIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -ldl -lpthread -lm

LIB_SRC  := $(wildcard src/core/*.c src/auth/*.c src/schema/*.c src/obs/*.c src/mw/*.c src/store/*.c src/resil/*.c src/svc/*.c)
APP_SRC  := $(wildcard src/app/*.c) src/main.c
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
# web/docs (the /docs page) compiled into libkeel (scripts/embed_web.sh)
WEB_FILES := $(wildcard web/docs/*)
LIB_GEN  := $(BUILD)/gen/web_assets.c
LIB_OBJ  += $(BUILD)/gen/web_assets.o
APP_OBJ  := $(APP_SRC:%.c=$(BUILD)/obj/%.o)
# migrations/ compiled into build/keel (docs/migrations.md)
MIGRATION_SQL := $(wildcard migrations/sqlite/*.sql migrations/postgres/*.sql)
APP_OBJ  += $(BUILD)/gen/migrations.o
UNIT_SRC := $(shell find tests/unit -name 'test_*.c' 2>/dev/null | sort)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz/%)
EXAMPLE  := $(BUILD)/hello-service
TOOLS    := $(BUILD)/parse_request

ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

.PHONY: all deps deps-test run test unit e2e asan fuzz fuzz-short bench clean help

all: deps $(BUILD)/keel $(BUILD)/libkeel.a $(EXAMPLE) $(TOOLS)

help:
	@echo "make            build build/keel, build/libkeel.a, examples"
	@echo "make run        install what is missing, build, start the reference service"
	@echo "make test       unit + e2e tests, again under ASan+UBSan, short fuzz runs"
	@echo "make bench      benchmark keel against its peers (../shared/bench)"
	@echo "make fuzz       long libFuzzer runs (FUZZ_SECONDS=300 each)"
	@echo "make clean      remove build/"

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

$(BUILD)/obj/%.o: %.c
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

$(BUILD)/gen/web_assets.c: scripts/embed_web.sh scripts/c_string.sh $(WEB_FILES) web/docs
	@mkdir -p $(dir $@)
	scripts/embed_web.sh web/docs > $@.tmp
	@mv $@.tmp $@

$(BUILD)/gen/web_assets.o: $(BUILD)/gen/web_assets.c src/svc/svc_internal.h
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(EXAMPLE): examples/hello-service/main.c $(BUILD)/libkeel.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libkeel.a $(LDLIBS)

$(BUILD)/parse_request: tests/tools/parse_request.c $(BUILD)/libkeel.a
	$(CC) $(ALL_CFLAGS) -o $@ $< $(BUILD)/libkeel.a $(LDLIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libkeel.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests/unit -o $@ $< $(BUILD)/libkeel.a $(LDLIBS) -lcmocka

run: deps all
	@mkdir -p data
	exec $(BUILD)/keel serve

# with a throw-away redis-server (KEEL_TEST_REDIS_URL) for the Redis suites
unit: deps-test $(UNIT_BIN)
	@tests/support/with_redis.sh sh -c 'set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done'

e2e: deps-test all
	KEEL_BIN=$(abspath $(BUILD)/keel) KEEL_EXAMPLE_BIN=$(abspath $(EXAMPLE)) \
	  KEEL_PARSE_BIN=$(abspath $(BUILD)/parse_request) \
	  $(PYTHON) -m pytest -q -p no:cacheprovider tests/e2e $(PYTEST_ARGS)

# The same unit and e2e suites, built with clang under ASan+UBSan.
asan: deps-test
	$(MAKE) --no-print-directory BUILD=build/asan CC=$(CLANG) CFLAGS="$(ASAN_FLAGS)" \
	  all unit e2e KEEL_SANITIZED=1

$(BUILD)/fuzz/%: tests/fuzz/%.c $(LIB_SRC) $(LIB_GEN)
	@mkdir -p $(dir $@)
	$(CLANG) -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -D_GNU_SOURCE \
	  -Iinclude -Isrc $(shell pkg-config --cflags $(PKGS)) $(CFLAGS_PQ) -o $@ $< $(LIB_SRC) $(LIB_GEN) $(LDLIBS)

FUZZ_SECONDS ?= 300
fuzz: deps-test $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); mkdir -p build/corpus/$$n; \
	  echo "== $$n ($(FUZZ_SECONDS)s)"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -dict=tests/fuzz/$$n.dict build/corpus/$$n tests/fuzz/corpus/$$n; done

# make test: a short run of each harness on its corpus (new inputs go to a
# scratch directory, never into the committed corpus).
FUZZ_SHORT_SECONDS ?= 20
fuzz-short: deps-test $(FUZZ_BIN)
	@set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); d=$(BUILD)/fuzz-scratch/$$n; \
	  rm -rf $$d; mkdir -p $$d; echo "== $$n (corpus + $(FUZZ_SHORT_SECONDS)s)"; \
	  if ! $$f -max_total_time=$(FUZZ_SHORT_SECONDS) -dict=tests/fuzz/$$n.dict $$d tests/fuzz/corpus/$$n \
	       > $$d.log 2>&1; then tail -n 40 $$d.log; echo "fuzz: $$n FAILED"; exit 1; fi; \
	  grep -E '^(Done|#[0-9]+ *DONE)' $$d.log | tail -n 1; echo "fuzz: $$n passed"; done

test: deps-test
	$(MAKE) --no-print-directory check-layers
	$(MAKE) --no-print-directory all
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory unit-db
	$(MAKE) --no-print-directory e2e
	$(MAKE) --no-print-directory asan
	$(MAKE) --no-print-directory asan-db
	$(MAKE) --no-print-directory fuzz-short
	@echo "make test: all suites passed"

bench: deps all
	bench/run.sh

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
STORE_BIN := $(filter $(BUILD)/tests/store/%,$(UNIT_BIN))
.PHONY: unit-db asan-db
unit-db: deps-test $(STORE_BIN)
	tests/support/with_pg.sh sh -c 'set -e; for t in $(STORE_BIN); do echo "== $$t (SQLite + PostgreSQL)"; $$t; done'

asan-db: deps-test
	$(MAKE) --no-print-directory BUILD=build/asan CC=$(CLANG) CFLAGS="$(ASAN_FLAGS)" unit-db

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)

# ---------------------------------------------------------------- single-query benchmark
# (added with bench/db/) keel's GET /db?id=N against Express 5 and Fastify 5
# with the `pg` package, on one throw-away PostgreSQL 15: bench/db/run.sh,
# figures in docs/performance.md. Options through BENCH_DB_ARGS, e.g.
#   make bench-db BENCH_DB_ARGS="--pool 4,8 --rounds 3"
.PHONY: bench-db
bench-db: all
	@scripts/deps.sh bench
	bench/db/run.sh $(BENCH_DB_ARGS)
