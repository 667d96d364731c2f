-- Demo items: backs the GET /db?id=N benchmark endpoint (PostgreSQL).
-- 10,000 rows generated in SQL, so the data needs no fixture file.

-- migrate:up
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO items (id, name, price_cents)
SELECT n, 'item ' || lpad(n::text, 5, '0'), 100 + (n * 7919) % 9900
FROM generate_series(1, 10000) AS n;

-- migrate:down
DROP TABLE items;
