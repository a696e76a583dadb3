-- Sample data for make demo: a source schema (public.orders, public.customers) and the
-- analytics tables the sample pipelines write into. Re-running it starts the demo afresh.
DROP TABLE IF EXISTS public.orders, public.customers, analytics.orders, analytics.customers;
DROP SCHEMA IF EXISTS etl CASCADE;
CREATE SCHEMA IF NOT EXISTS analytics;

CREATE TABLE public.customers (
  id         bigint PRIMARY KEY,
  email      text NOT NULL,
  country    text,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL
);
INSERT INTO public.customers
SELECT i,
       CASE WHEN i % 7 = 0 THEN '  Customer' || i || '@Example.COM ' ELSE 'customer' || i || '@example.com' END,
       (ARRAY['de', 'fr', 'us', 'br', NULL])[1 + i % 5],
       timestamptz '2025-01-01' + i * interval '1 minute',
       timestamptz '2025-06-01' + i * interval '1 second'
FROM generate_series(1, 20000) AS i;
CREATE INDEX ON public.customers (updated_at, id);

CREATE TABLE public.orders (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL,
  status      text NOT NULL,
  total_cents bigint NOT NULL,
  updated_at  timestamptz NOT NULL
);
INSERT INTO public.orders
SELECT i,
       1 + i % 20000,
       (ARRAY['new', 'paid', 'shipped', 'delivered'])[1 + i % 4],
       (i * 7919) % 100000,
       timestamptz '2025-06-01' + i * interval '1 second'
FROM generate_series(1, 100000) AS i;
CREATE INDEX ON public.orders (updated_at, id);

CREATE TABLE analytics.orders (
  id          bigint PRIMARY KEY,
  customer_id bigint NOT NULL,
  total_cents bigint NOT NULL,
  status      text NOT NULL,
  updated_at  timestamptz NOT NULL
);
CREATE TABLE analytics.customers (
  id         bigint PRIMARY KEY,
  email      text NOT NULL,
  country    text,
  created_at timestamptz NOT NULL
);
ANALYZE;
