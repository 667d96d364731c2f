-- Demo items: backs the GET /db?id=N benchmark endpoint (SQLite).
-- 10,000 rows generated in SQL, so the data needs no fixture file.

-- migrate:up
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
);

INSERT INTO items (id, name, price_cents)
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 10000)
SELECT n, printf('item %05d', n), 100 + (n * 7919) % 9900 FROM seq;

-- migrate:down
DROP TABLE items;
