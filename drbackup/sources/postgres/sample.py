"""The sample database of ``drbackup demo``: customers, orders and their lines, with keys,
a CHECK constraint, jsonb and sequences (what a drill proves), about 20 MB."""

from __future__ import annotations

SAMPLE_SQL = """
CREATE TABLE customers (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, name text NOT NULL,
                        created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id),
                     placed_at timestamptz NOT NULL, total numeric(12,2) NOT NULL, notes jsonb);
CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders(id), line int NOT NULL,
                          sku text NOT NULL, qty int NOT NULL CHECK (qty > 0), price numeric(10,2) NOT NULL,
                          PRIMARY KEY (order_id, line));
INSERT INTO customers (email, name, created_at)
  SELECT 'user' || g || '@example.com', md5(g::text), timestamptz '2025-01-01' + g * interval '7 minutes'
  FROM generate_series(1, 20000) g;
INSERT INTO orders (customer_id, placed_at, total, notes)
  SELECT 1 + (g * 7919) % 20000, timestamptz '2025-06-01' + g * interval '3 minutes', (g % 997) + 0.99,
         jsonb_build_object('channel', (ARRAY['web','app','store'])[1 + g % 3], 'gift', g % 11 = 0)
  FROM generate_series(1, 60000) g;
INSERT INTO order_items SELECT o, l, 'SKU-' || ((o * l) % 5000), 1 + (o + l) % 4, ((o * l) % 200) + 0.5
  FROM generate_series(1, 60000) o, generate_series(1, 3) l;
"""


def load_sample_database(cluster, name: str) -> None:
    """Create database ``name`` in ``cluster`` (an EphemeralCluster) and fill it."""
    cluster.create_database(name)
    cluster.execute(SAMPLE_SQL, dbname=name)
