/* metrics.c — registry, per-worker shards, text and JSON exposition. */
#include "keel/metrics.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

const double keel_latency_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                       0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                       5,      10};
const size_t keel_latency_nbuckets = sizeof(keel_latency_buckets) / sizeof(double);

typedef struct shard shard;

/* A series (keel_metric_series in the API): a pointer to one stays valid
 * for its metric's lifetime, since series are never removed. */
typedef struct keel_metric_series {
    struct keel_metric_series *next;  /* hash chain */
    struct keel_metric_series *order; /* insertion order */
    keel_metric *mt;      /* owner and shard (keel_metric_series_get); */
    shard *sh;            /* NULL in merged tables */
    char *key;            /* label values joined by \x1f */
    uint64_t hash;
    double value;         /* counter / gauge */
    double sum;           /* histogram */
    uint64_t count;
    uint64_t buckets[];   /* histogram: nbuckets (+Inf is count) */
} series;

typedef struct table {
    series **slots;
    size_t nslots, n;
    series *first, *last;
} table;

struct shard {
    pthread_mutex_t mu;
    table t;
};

struct keel_metric {
    keel_metric *next;
    char *name;
    char *help;
    keel_metric_type type;
    size_t nlabels;
    char **labels;
    double *buckets;
    size_t nbuckets;
    keel_metric_value_fn fn;
    void *fn_arg;
    unsigned nshards;
    shard *shards;
};

typedef struct collector {
    struct collector *next;
    void (*fn)(void *arg);
    void *arg;
} collector;

struct keel_metrics {
    unsigned nshards; /* workers + 1 */
    keel_metric *first, *last;
    collector *collectors; /* run before each exposition, in the order added */
    pthread_mutex_t mu;
};

static uint64_t fnv(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static series *table_get(table *t, const char *key, size_t klen, size_t extra,
                         int create)
{
    uint64_t h = fnv(key, klen);
    if (t->nslots) {
        for (series *s = t->slots[h & (t->nslots - 1)]; s; s = s->next)
            if (s->hash == h && strlen(s->key) == klen && memcmp(s->key, key, klen) == 0)
                return s;
    }
    if (!create)
        return NULL;
    if (t->n + 1 > t->nslots * 3 / 4) {
        size_t ns = t->nslots ? t->nslots * 2 : 16;
        series **slots = keel_calloc(ns, sizeof(series *));
        for (series *s = t->first; s; s = s->order) {
            s->next = slots[s->hash & (ns - 1)];
            slots[s->hash & (ns - 1)] = s;
        }
        keel_free(t->slots);
        t->slots = slots;
        t->nslots = ns;
    }
    series *s = keel_calloc(1, sizeof(series) + extra * sizeof(uint64_t));
    s->key = keel_strndup(key, klen);
    s->hash = h;
    s->next = t->slots[h & (t->nslots - 1)];
    t->slots[h & (t->nslots - 1)] = s;
    if (t->last)
        t->last->order = s;
    else
        t->first = s;
    t->last = s;
    t->n++;
    return s;
}

static void table_free(table *t)
{
    series *s = t->first;
    while (s) {
        series *n = s->order;
        keel_free(s->key);
        keel_free(s);
        s = n;
    }
    keel_free(t->slots);
    memset(t, 0, sizeof(*t));
}

keel_metrics *keel_metrics_new(unsigned shards)
{
    keel_metrics *m = keel_calloc(1, sizeof(*m));
    m->nshards = shards + 1;
    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void keel_metrics_free(keel_metrics *m)
{
    if (!m)
        return;
    keel_metric *mt = m->first;
    while (mt) {
        keel_metric *n = mt->next;
        if (mt->shards) {
            for (unsigned i = 0; i < m->nshards; i++) {
                table_free(&mt->shards[i].t);
                pthread_mutex_destroy(&mt->shards[i].mu);
            }
            keel_free(mt->shards);
        }
        for (size_t i = 0; i < mt->nlabels; i++)
            keel_free(mt->labels[i]);
        keel_free(mt->labels);
        keel_free(mt->buckets);
        keel_free(mt->name);
        keel_free(mt->help);
        keel_free(mt);
        mt = n;
    }
    while (m->collectors) {
        collector *c = m->collectors;
        m->collectors = c->next;
        keel_free(c);
    }
    pthread_mutex_destroy(&m->mu);
    keel_free(m);
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for a metric name (colon = 1), the same
 * without colons for a label name. */
static int valid_name(const char *s, int colon)
{
    if (!s || !*s || (*s >= '0' && *s <= '9'))
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || (colon && *s == ':')))
            return 0;
    return 1;
}

/* Label names the exposition can carry: valid, not reserved ("__" is
 * Prometheus's own, "le" a histogram's bucket bound), none twice. */
static int valid_labels(keel_metric_type type, const char *const *labels)
{
    for (size_t i = 0; labels && labels[i]; i++) {
        if (!valid_name(labels[i], 0) || strncmp(labels[i], "__", 2) == 0 ||
            (type == KEEL_HISTOGRAM && strcmp(labels[i], "le") == 0))
            return 0;
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i], labels[j]) == 0)
                return 0;
    }
    return 1;
}

/* A new family, or NULL (nothing declared) when a name is invalid or the
 * name is taken: a second family by one name would make the scrape
 * invalid (two TYPE lines) and hide one of them in the JSON form. */
static keel_metric *declare(keel_metrics *m, const char *name, const char *help,
                            keel_metric_type type, const char *const *labels)
{
    if (!valid_name(name, 1) || !valid_labels(type, labels))
        return NULL;
    keel_metric *mt = keel_calloc(1, sizeof(*mt));
    mt->name = keel_strdup(name);
    mt->help = keel_strdup(help ? help : "");
    mt->type = type;
    while (labels && labels[mt->nlabels])
        mt->nlabels++;
    mt->labels = keel_calloc(mt->nlabels ? mt->nlabels : 1, sizeof(char *));
    for (size_t i = 0; i < mt->nlabels; i++)
        mt->labels[i] = keel_strdup(labels[i]);
    pthread_mutex_lock(&m->mu);
    for (keel_metric *o = m->first; o; o = o->next)
        if (strcmp(o->name, name) == 0) {
            pthread_mutex_unlock(&m->mu);
            for (size_t i = 0; i < mt->nlabels; i++)
                keel_free(mt->labels[i]);
            keel_free(mt->labels);
            keel_free(mt->name);
            keel_free(mt->help);
            keel_free(mt);
            return NULL;
        }
    if (m->last)
        m->last->next = mt;
    else
        m->first = mt;
    m->last = mt;
    pthread_mutex_unlock(&m->mu);
    return mt;
}

static series *lock_series(keel_metric *mt, unsigned idx, const char *const *values);

/* A family without labels has exactly one series: it exists, at 0, from
 * the declaration on (an absent series breaks rate() and alerts). */
static void alloc_shards(keel_metrics *m, keel_metric *mt)
{
    mt->shards = keel_calloc(m->nshards, sizeof(shard));
    for (unsigned i = 0; i < m->nshards; i++)
        pthread_mutex_init(&mt->shards[i].mu, NULL);
    mt->nshards = m->nshards;
}

static void declare_unlabelled(keel_metric *mt)
{
    if (mt->nlabels == 0)
        keel_metric_declare(mt, NULL);
}

keel_metric *keel_metrics_counter(keel_metrics *m, const char *name,
                                  const char *help, const char *const *labels)
{
    keel_metric *mt = declare(m, name, help, KEEL_COUNTER, labels);
    if (!mt)
        return NULL;
    alloc_shards(m, mt);
    declare_unlabelled(mt);
    return mt;
}

keel_metric *keel_metrics_gauge(keel_metrics *m, const char *name,
                                const char *help, const char *const *labels)
{
    keel_metric *mt = declare(m, name, help, KEEL_GAUGE, labels);
    if (!mt)
        return NULL;
    alloc_shards(m, mt);
    declare_unlabelled(mt);
    return mt;
}

keel_metric *keel_metrics_histogram(keel_metrics *m, const char *name,
                                    const char *help, const char *const *labels,
                                    const double *buckets, size_t nbuckets)
{
    keel_metric *mt = declare(m, name, help, KEEL_HISTOGRAM, labels);
    if (!mt)
        return NULL;
    mt->nbuckets = nbuckets;
    mt->buckets = keel_malloc(nbuckets * sizeof(double));
    memcpy(mt->buckets, buckets, nbuckets * sizeof(double));
    alloc_shards(m, mt);
    declare_unlabelled(mt);
    return mt;
}

keel_metric *keel_metrics_find(keel_metrics *m, const char *name)
{
    pthread_mutex_lock(&m->mu);
    keel_metric *mt = m->first;
    while (mt && strcmp(mt->name, name) != 0)
        mt = mt->next;
    pthread_mutex_unlock(&m->mu);
    return mt;
}

void keel_metrics_callback(keel_metrics *m, const char *name, const char *help,
                           keel_metric_type type, keel_metric_value_fn fn, void *arg)
{
    keel_metric *mt = declare(m, name, help, type, NULL);
    if (!mt)
        return;
    mt->fn = fn;
    mt->fn_arg = arg;
}

/* Joins label values with \x1f into buf; returns the length. */
static size_t make_key(const keel_metric *mt, const char *const *values, char *buf,
                       size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < mt->nlabels; i++) {
        const char *v = values && values[i] ? values[i] : "";
        size_t l = strlen(v);
        if (n + l + 1 >= cap)
            l = cap > n + 1 ? cap - n - 1 : 0;
        memcpy(buf + n, v, l);
        n += l;
        if (i + 1 < mt->nlabels && n + 1 < cap)
            buf[n++] = '\x1f';
    }
    buf[n] = '\0';
    return n;
}

static shard *shard_of(keel_metric *mt, unsigned idx)
{
    if (idx >= mt->nshards)
        idx = mt->nshards - 1;
    return &mt->shards[idx];
}

/* Applies one update to s (its shard's lock held). */
static void apply(const keel_metric *mt, series *s, double v, int op)
{
    if (op == 0) {
        s->value += v;
    } else if (op == 1) {
        s->value = v;
    } else {
        for (size_t i = 0; i < mt->nbuckets; i++)
            if (v <= mt->buckets[i]) {
                s->buckets[i]++;
                break;
            }
        s->sum += v;
        s->count++;
    }
}

/* The series of `values` in shard idx (created if needed), its shard's
 * lock held on return; NULL (no lock) for a family without shards. */
static series *lock_series(keel_metric *mt, unsigned idx, const char *const *values)
{
    if (!mt || !mt->shards)
        return NULL;
    char key[512];
    size_t kl = make_key(mt, values, key, sizeof(key));
    shard *sh = shard_of(mt, idx);
    pthread_mutex_lock(&sh->mu);
    series *s = table_get(&sh->t, key, kl, mt->nbuckets, 1);
    s->mt = mt;
    s->sh = sh;
    return s;
}

static void update(keel_metric *mt, unsigned idx, const char *const *values,
                   double v, int op)
{
    series *s = lock_series(mt, idx, values);
    if (!s)
        return;
    apply(mt, s, v, op);
    pthread_mutex_unlock(&s->sh->mu);
}

keel_metric_series *keel_metric_series_get(keel_metric *mt, unsigned shard_idx,
                                           const char *const *values)
{
    series *s = lock_series(mt, shard_idx, values);
    if (s)
        pthread_mutex_unlock(&s->sh->mu);
    return s;
}

static void series_update(keel_metric_series *s, double v, int op)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->sh->mu);
    apply(s->mt, s, v, op);
    pthread_mutex_unlock(&s->sh->mu);
}

void keel_metric_series_add(keel_metric_series *s, double v)
{
    series_update(s, v, 0);
}

void keel_metric_series_observe(keel_metric_series *s, double v)
{
    series_update(s, v, 2);
}

void keel_metric_declare(keel_metric *mt, const char *const *values)
{
    /* in the shared shard: the merge adds every shard, so a 0 there is
     * harmless whichever worker counts the series later */
    series *s = lock_series(mt, UINT32_MAX, values);
    if (s)
        pthread_mutex_unlock(&s->sh->mu);
}

void keel_metric_declare_each(keel_metric *mt, const char *const *values, size_t at,
                              const char *const *each)
{
    if (!mt || at >= mt->nlabels || mt->nlabels > 16)
        return;
    const char *v[16];
    for (size_t i = 0; i < mt->nlabels; i++)
        v[i] = values ? values[i] : "";
    for (size_t i = 0; each && each[i]; i++) {
        v[at] = each[i];
        keel_metric_declare(mt, v);
    }
}

void keel_metrics_on_collect(keel_metrics *m, void (*fn)(void *arg), void *arg)
{
    collector *c = keel_calloc(1, sizeof(*c));
    c->fn = fn;
    c->arg = arg;
    pthread_mutex_lock(&m->mu);
    collector **p = &m->collectors;
    while (*p)
        p = &(*p)->next;
    *p = c;
    pthread_mutex_unlock(&m->mu);
}

static void collect(keel_metrics *m)
{
    pthread_mutex_lock(&m->mu);
    collector *c = m->collectors;
    pthread_mutex_unlock(&m->mu);
    for (; c; c = c->next) /* appended only before the server starts */
        c->fn(c->arg);
}

unsigned keel_metrics_shards(const keel_metrics *m)
{
    return m->nshards;
}

void keel_metric_add(keel_metric *mt, unsigned shard_idx, const char *const *values, double v)
{
    update(mt, shard_idx, values, v, 0);
}

void keel_metric_set(keel_metric *mt, unsigned shard_idx, const char *const *values, double v)
{
    update(mt, shard_idx, values, v, 1);
}

void keel_metric_observe(keel_metric *mt, unsigned shard_idx, const char *const *values,
                         double v)
{
    update(mt, shard_idx, values, v, 2);
}

/* ---------------------------------------------------------------- merge */

/* Merges every shard of mt into one table (caller frees). */
static void merge(keel_metric *mt, table *out)
{
    memset(out, 0, sizeof(*out));
    for (unsigned i = 0; i < mt->nshards; i++) {
        shard *sh = &mt->shards[i];
        pthread_mutex_lock(&sh->mu);
        for (series *s = sh->t.first; s; s = s->order) {
            series *d = table_get(out, s->key, strlen(s->key), mt->nbuckets, 1);
            d->value += s->value; /* per-worker gauges add up too */
            d->sum += s->sum;
            d->count += s->count;
            for (size_t b = 0; b < mt->nbuckets; b++)
                d->buckets[b] += s->buckets[b];
        }
        pthread_mutex_unlock(&sh->mu);
    }
}

static void append_escaped_label(keel_buf *b, const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = v[i];
        if (c == '\\' || c == '"')
            keel_buf_append(b, "\\", 1), keel_buf_append(b, &c, 1);
        else if (c == '\n')
            keel_buf_append(b, "\\n", 2);
        else
            keel_buf_append(b, &c, 1);
    }
}

/* HELP text escapes only backslash and newline (a quote stays as is). */
static void append_escaped_help(keel_buf *b, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            keel_buf_append(b, "\\\\", 2);
        else if (*v == '\n')
            keel_buf_append(b, "\\n", 2);
        else
            keel_buf_append(b, v, 1);
    }
}

/* Writes {a="x",b="y"[,extra]} for a series key. */
static void append_labels(keel_buf *b, const keel_metric *mt, const char *key,
                          const char *extra)
{
    if (mt->nlabels == 0 && !extra)
        return;
    keel_buf_append(b, "{", 1);
    const char *p = key;
    for (size_t i = 0; i < mt->nlabels; i++) {
        const char *e = strchr(p, '\x1f');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (i)
            keel_buf_append(b, ",", 1);
        keel_buf_append_str(b, mt->labels[i]);
        keel_buf_append(b, "=\"", 2);
        append_escaped_label(b, p, l);
        keel_buf_append(b, "\"", 1);
        p = e ? e + 1 : p + l;
    }
    if (extra) {
        if (mt->nlabels)
            keel_buf_append(b, ",", 1);
        keel_buf_append_str(b, extra);
    }
    keel_buf_append(b, "}", 1);
}

static void append_num(keel_buf *b, double v)
{
    if (isinf(v))
        keel_buf_append_str(b, v > 0 ? "+Inf" : "-Inf");
    else if (fabs(v) < 1e15 && v == (double)(int64_t)v)
        keel_buf_printf(b, "%lld", (long long)v);
    else
        keel_buf_printf(b, "%.15g", v);
}

static const char *type_name(keel_metric_type t)
{
    return t == KEEL_COUNTER ? "counter" : t == KEEL_GAUGE ? "gauge" : "histogram";
}

void keel_metrics_render(keel_metrics *m, keel_buf *out)
{
    collect(m);
    for (keel_metric *mt = m->first; mt; mt = mt->next) {
        keel_buf_printf(out, "# HELP %s ", mt->name);
        append_escaped_help(out, mt->help);
        keel_buf_printf(out, "\n# TYPE %s %s\n", mt->name, type_name(mt->type));
        if (mt->fn) {
            keel_buf_append_str(out, mt->name);
            keel_buf_append(out, " ", 1);
            append_num(out, mt->fn(mt->fn_arg));
            keel_buf_append(out, "\n", 1);
            continue;
        }
        table t;
        merge(mt, &t);
        for (series *s = t.first; s; s = s->order) {
            if (mt->type != KEEL_HISTOGRAM) {
                keel_buf_append_str(out, mt->name);
                append_labels(out, mt, s->key, NULL);
                keel_buf_append(out, " ", 1);
                append_num(out, s->value);
                keel_buf_append(out, "\n", 1);
                continue;
            }
            uint64_t cum = 0;
            char le[64];
            for (size_t i = 0; i < mt->nbuckets; i++) {
                cum += s->buckets[i];
                snprintf(le, sizeof(le), "le=\"%g\"", mt->buckets[i]);
                keel_buf_printf(out, "%s_bucket", mt->name);
                append_labels(out, mt, s->key, le);
                keel_buf_printf(out, " %llu\n", (unsigned long long)cum);
            }
            keel_buf_printf(out, "%s_bucket", mt->name);
            append_labels(out, mt, s->key, "le=\"+Inf\"");
            keel_buf_printf(out, " %llu\n", (unsigned long long)s->count);
            keel_buf_printf(out, "%s_sum", mt->name);
            append_labels(out, mt, s->key, NULL);
            keel_buf_append(out, " ", 1);
            append_num(out, s->sum);
            keel_buf_printf(out, "\n%s_count", mt->name);
            append_labels(out, mt, s->key, NULL);
            keel_buf_printf(out, " %llu\n", (unsigned long long)s->count);
        }
        table_free(&t);
    }
}

json_t *keel_metrics_json(keel_metrics *m)
{
    collect(m);
    json_t *root = json_object();
    for (keel_metric *mt = m->first; mt; mt = mt->next) {
        json_t *fam = json_object();
        json_object_set_new(fam, "type", json_string(type_name(mt->type)));
        json_object_set_new(fam, "help", json_string(mt->help));
        json_t *arr = json_array();
        if (mt->fn) {
            json_t *o = json_object();
            json_object_set_new(o, "labels", json_object());
            json_object_set_new(o, "value", json_real(mt->fn(mt->fn_arg)));
            json_array_append_new(arr, o);
        } else {
            table t;
            merge(mt, &t);
            for (series *s = t.first; s; s = s->order) {
                json_t *o = json_object(), *labels = json_object();
                const char *p = s->key;
                for (size_t i = 0; i < mt->nlabels; i++) {
                    const char *e = strchr(p, '\x1f');
                    size_t l = e ? (size_t)(e - p) : strlen(p);
                    json_object_set_new(labels, mt->labels[i], json_stringn(p, l));
                    p = e ? e + 1 : p + l;
                }
                json_object_set_new(o, "labels", labels);
                if (mt->type == KEEL_HISTOGRAM) {
                    json_object_set_new(o, "count", json_integer((json_int_t)s->count));
                    json_object_set_new(o, "sum", json_real(s->sum));
                    json_t *bk = json_object();
                    uint64_t cum = 0;
                    for (size_t i = 0; i < mt->nbuckets; i++) {
                        char le[32];
                        cum += s->buckets[i];
                        snprintf(le, sizeof(le), "%g", mt->buckets[i]);
                        json_object_set_new(bk, le, json_integer((json_int_t)cum));
                    }
                    json_object_set_new(bk, "+Inf", json_integer((json_int_t)s->count));
                    json_object_set_new(o, "buckets", bk);
                } else {
                    json_object_set_new(o, "value", json_real(s->value));
                }
                json_array_append_new(arr, o);
            }
            table_free(&t);
        }
        json_object_set_new(fam, "series", arr);
        json_object_set_new(root, mt->name, fam);
    }
    return root;
}
