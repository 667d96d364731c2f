/* keel/keel.h — everything public in keel. */
#ifndef KEEL_KEEL_H
#define KEEL_KEEL_H

#include "arena.h"
#include "auth.h"
#include "common.h"
#include "config.h"
#include "db.h"
#include "events.h"
#include "health.h"
#include "http.h"
#include "http_client.h"
#include "json.h"
#include "lock.h"
#include "log.h"
#include "metrics.h"
#include "multipart.h"
#include "mw.h"
#include "net.h"
#include "range.h"
#include "ratelimit.h"
#include "redis.h"
#include "cache.h"
#include "resil.h"
#include "rl_store.h"
#include "router.h"
#include "schema.h"
#include "server.h"
#include "service.h"

#define KEEL_VERSION "0.1.0"

#endif
