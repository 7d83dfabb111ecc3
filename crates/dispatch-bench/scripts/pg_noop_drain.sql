-- The noop drain's SQL alone, for comparing index layouts of `runs` on
-- PostgreSQL (issue #33): 20,000 queued runs drained in claims of 512
-- (state to starting + one event each; finish: state to succeeded + two
-- events + an attempt row each), in one transaction. Run it against a
-- database a `dispatch worker --database-url` has migrated (it TRUNCATEs
-- runs and what references them):
--   psql -h 127.0.0.1 -U postgres -d DB -f pg_noop_drain.sql   # prints drain_ms
TRUNCATE runs, events, attempts CASCADE;
INSERT INTO runs (id, version, parcel_digest, parcel_name, operation, status, state, attempt,
  payload, brief_sha256, created_at, updated_at)
SELECT lpad(to_hex(g), 26, '0'), 1, repeat('d', 64), 'bench', 'run', 'queued', '{"status":"queued"}', 0,
  '{}', repeat('b', 64), g, g FROM generate_series(1, 20000) g;
VACUUM ANALYZE runs;
CHECKPOINT;
DO $$
DECLARE t0 timestamptz := clock_timestamp(); n int; ids text[];
BEGIN
  LOOP
    SELECT array_agg(id) INTO ids FROM (SELECT id FROM runs WHERE status = 'queued'
      ORDER BY priority DESC, created_at, id LIMIT 512) s;
    EXIT WHEN ids IS NULL;
    UPDATE runs SET status = 'starting', state = '{"status":"starting","helper":0}', attempt = attempt + 1,
      version = version + 1, updated_at = updated_at + 1, lease_owner = 'w', lease_expires_at = 99999999999,
      fence = fence + 1 WHERE id = ANY(ids);
    INSERT INTO events (run_id, attempt, at, type, data) SELECT i, 1, 1, 'state', '{"from":"queued","to":"starting"}' FROM unnest(ids) i;
    UPDATE runs SET status = 'succeeded', state = '{"status":"succeeded","exit_code":0}', version = version + 2,
      updated_at = updated_at + 2, lease_owner = NULL, lease_expires_at = NULL WHERE id = ANY(ids);
    INSERT INTO events (run_id, attempt, at, type, data) SELECT i, 1, 2, 'state', '{"from":"starting","to":"running"}' FROM unnest(ids) i;
    INSERT INTO events (run_id, attempt, at, type, data) SELECT i, 1, 2, 'state', '{"from":"running","to":"succeeded","exit_code":0}' FROM unnest(ids) i;
    INSERT INTO attempts (run_id, number, started_at, ended_at, status, exit_code) SELECT i, 1, 1, 2, 'succeeded', 0 FROM unnest(ids) i;
  END LOOP;
  RAISE NOTICE 'drain_ms %', round(extract(epoch FROM clock_timestamp() - t0) * 1000);
END $$;
