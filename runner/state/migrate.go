// Package state keeps the runner's durable state in the `etl` schema of the state database:
// etl_state (one row per pipeline: the fencing epoch, the checkpoints, the current run's
// counters), etl_runs (one row per run) and etl_rejects (the rows a pipeline refused).
package state

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// migrationLockKey serializes migrations of runners starting at the same time. Any constant
// works as long as nothing else in the database uses it; this one spells "sluice" in ASCII.
const migrationLockKey int64 = 0x736c75696365

// migrations are applied in order, each once. Append only: never edit an applied one.
var migrations = []string{
	// 1: the pipeline state and the run log.
	`CREATE TABLE etl.etl_state (
		namespace              text        NOT NULL,
		name                   text        NOT NULL,
		-- epoch fences zombies: +1 per claim; checkpoint writes require the claimer's epoch.
		epoch                  bigint      NOT NULL,
		run_id                 text        NOT NULL,
		generation             bigint      NOT NULL,
		claimed_at             timestamptz NOT NULL,
		-- counters of run_id's committed batches, carried over by a replacement pod.
		rows_read              bigint      NOT NULL DEFAULT 0,
		rows_written           bigint      NOT NULL DEFAULT 0,
		batches                bigint      NOT NULL DEFAULT 0,
		-- the incremental position, kept across runs.
		incremental_columns    text[],
		incremental_checkpoint text[],
		incremental_at         timestamptz,
		-- the position of an unfinished full run, valid only for that run (or its resume).
		full_run_id            text,
		full_generation        bigint,
		full_columns           text[],
		full_checkpoint        text[],
		full_at                timestamptz,
		PRIMARY KEY (namespace, name)
	)`,
	`CREATE TABLE etl.etl_runs (
		namespace    text        NOT NULL,
		name         text        NOT NULL,
		run_id       text        NOT NULL,
		epoch        bigint      NOT NULL,
		mode         text        NOT NULL,
		generation   bigint      NOT NULL,
		started_at   timestamptz NOT NULL,
		finished_at  timestamptz,
		rows_read    bigint      NOT NULL DEFAULT 0,
		rows_written bigint      NOT NULL DEFAULT 0,
		batches      bigint      NOT NULL DEFAULT 0,
		outcome      text        NOT NULL,
		error_class  text,
		error        text,
		PRIMARY KEY (namespace, name, run_id)
	)`,
	// 2: the conditional checkpoint write. It raises instead of updating nothing, so that the
	// batch sent with it in one transaction rolls back: SLF01 when the epoch is stale (another
	// runner claimed the pipeline), SLF02 when the checkpoint is not the one the batch was
	// read after (an earlier batch of a pipeline failed). A NULL p_expected skips that check.
	`CREATE FUNCTION etl.advance(
		p_namespace text, p_name text, p_epoch bigint, p_full boolean, p_run_id text, p_generation bigint,
		p_columns text[], p_checkpoint text[], p_rows_read bigint, p_rows_written bigint, p_batches bigint,
		p_expected text[])
	RETURNS void LANGUAGE plpgsql AS $$
	DECLARE
		v_current text[];
	BEGIN
		SELECT CASE WHEN p_full THEN full_checkpoint ELSE incremental_checkpoint END INTO v_current
		FROM etl.etl_state WHERE namespace = p_namespace AND name = p_name AND epoch = p_epoch
		FOR UPDATE;
		IF NOT FOUND THEN
			RAISE EXCEPTION 'pipeline %/% is no longer claimed with epoch %', p_namespace, p_name, p_epoch
				USING ERRCODE = 'SLF01';
		END IF;
		IF p_expected IS NOT NULL AND v_current IS DISTINCT FROM p_expected THEN
			RAISE EXCEPTION 'pipeline %/%: checkpoint is %, the batch was read after %', p_namespace, p_name,
				v_current, p_expected USING ERRCODE = 'SLF02';
		END IF;
		IF p_checkpoint IS NULL THEN
			UPDATE etl.etl_state SET rows_read = rows_read + p_rows_read,
				rows_written = rows_written + p_rows_written, batches = batches + p_batches
			WHERE namespace = p_namespace AND name = p_name;
		ELSIF p_full THEN
			UPDATE etl.etl_state SET rows_read = rows_read + p_rows_read,
				rows_written = rows_written + p_rows_written, batches = batches + p_batches,
				full_run_id = p_run_id, full_generation = p_generation, full_columns = p_columns,
				full_checkpoint = p_checkpoint, full_at = now()
			WHERE namespace = p_namespace AND name = p_name;
		ELSE
			UPDATE etl.etl_state SET rows_read = rows_read + p_rows_read,
				rows_written = rows_written + p_rows_written, batches = batches + p_batches,
				incremental_columns = p_columns, incremental_checkpoint = p_checkpoint, incremental_at = now()
			WHERE namespace = p_namespace AND name = p_name;
		END IF;
	END
	$$`,
	// 4: the stream's identity. The state of a pipeline belongs to its UID and to a
	// fingerprint of what defines its stream (source connection, cursor, keys, target, target
	// connection); a claim that finds another one starts the stream from an empty checkpoint.
	// full_stream fingerprints an unfinished Full run (the stream plus the reader query and
	// the transforms), which a resume continues only when it is unchanged.
	`ALTER TABLE etl.etl_state
		ADD COLUMN pipeline_uid text,
		ADD COLUMN stream       text,
		ADD COLUMN full_stream  text`,
	`ALTER TABLE etl.etl_runs ADD COLUMN pipeline_uid text`,
	// 6: deletes. rows_deleted counts the deletes of committed batches like rows_written
	// counts the upserts; rows_swept is what a completed Mirror run removed at its end.
	`ALTER TABLE etl.etl_state ADD COLUMN rows_deleted bigint NOT NULL DEFAULT 0`,
	`ALTER TABLE etl.etl_runs
		ADD COLUMN rows_deleted bigint NOT NULL DEFAULT 0,
		ADD COLUMN rows_swept   bigint NOT NULL DEFAULT 0`,
	// 8: etl.advance with the deletes' counter; the 12-argument one stays for older runners.
	`CREATE FUNCTION etl.advance(
		p_namespace text, p_name text, p_epoch bigint, p_full boolean, p_run_id text, p_generation bigint,
		p_columns text[], p_checkpoint text[], p_rows_read bigint, p_rows_written bigint, p_batches bigint,
		p_expected text[], p_rows_deleted bigint)
	RETURNS void LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM etl.advance(p_namespace, p_name, p_epoch, p_full, p_run_id, p_generation, p_columns,
			p_checkpoint, p_rows_read, p_rows_written, p_batches, p_expected);
		IF p_rows_deleted <> 0 THEN
			UPDATE etl.etl_state SET rows_deleted = rows_deleted + p_rows_deleted
			WHERE namespace = p_namespace AND name = p_name;
		END IF;
	END
	$$`,
	// 9: rejects (spec.errors). rows_rejected counts the rows of committed batches that went
	// to etl_rejects; rejects_replayed the rejected rows a replay wrote.
	`ALTER TABLE etl.etl_state ADD COLUMN rows_rejected bigint NOT NULL DEFAULT 0`,
	`ALTER TABLE etl.etl_runs
		ADD COLUMN rows_rejected    bigint NOT NULL DEFAULT 0,
		ADD COLUMN rejects_replayed bigint NOT NULL DEFAULT 0`,
	// 11: the rows a pipeline refused, one per reader key: a key refused again replaces its
	// row (attempts counts the refusals), a key written since is removed. Rows are written
	// in the transaction of the batch's checkpoint, so a reject is never lost or doubled.
	`CREATE TABLE etl.etl_rejects (
		namespace     text        NOT NULL,
		name          text        NOT NULL,
		pipeline_uid  text,
		run_id        text        NOT NULL,
		-- the reader's key columns and the row's values of them, in Postgres' text form.
		key_columns   text[]      NOT NULL,
		key           jsonb       NOT NULL,
		cursor_column text,
		cursor_value  text,
		-- transform (a python task raised) or sink (the target refused the row).
		stage         text        NOT NULL,
		task          text,
		-- the SQLSTATE, the Elasticsearch error type or the Python exception type.
		error_class   text        NOT NULL,
		message       text        NOT NULL,
		"row"         jsonb,
		rejected_at   timestamptz NOT NULL DEFAULT now(),
		attempts      integer     NOT NULL DEFAULT 1,
		PRIMARY KEY (namespace, name, key)
	)`,
	// 12: what a person reads, and how they purge.
	`CREATE VIEW etl.rejects AS
		SELECT namespace, name, run_id,
			jsonb_object(key_columns, ARRAY(SELECT jsonb_array_elements_text(key))) AS key,
			cursor_column, cursor_value, stage, task, error_class, message, "row", rejected_at, attempts
		FROM etl.etl_rejects`,
	`CREATE FUNCTION etl.purge_rejects(p_namespace text, p_name text, p_before timestamptz DEFAULT NULL)
	RETURNS bigint LANGUAGE sql AS $$
		WITH purged AS (
			DELETE FROM etl.etl_rejects
			WHERE namespace = p_namespace AND name = p_name AND (p_before IS NULL OR rejected_at < p_before)
			RETURNING 1)
		SELECT count(*) FROM purged
	$$`,
	// 14: checkpoint changes a person asked for (kubectl sluice checkpoint), recorded in the
	// run log with who asked and the checkpoint they set.
	`ALTER TABLE etl.etl_runs ADD COLUMN requested_by text, ADD COLUMN checkpoint text[]`,
	// 15: the replication slots and publications CDC pipelines created in their sources,
	// so that a deleted pipeline, or one whose stream changed, has them dropped.
	`CREATE TABLE etl.etl_slots (
		namespace    text        NOT NULL,
		name         text        NOT NULL,
		pipeline_uid text        NOT NULL,
		connection   text        NOT NULL,
		slot         text        NOT NULL,
		publication  text        NOT NULL,
		created_at   timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (connection, slot)
	)`,
}

// Migrate creates or upgrades the `etl` schema. It is idempotent and safe to run from many
// runners at once: the whole upgrade runs in one transaction under an advisory lock, so a
// second runner waits and then finds nothing left to do.
func Migrate(ctx context.Context, conn *pgx.Conn) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate etl schema: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockKey); err != nil {
		return fmt.Errorf("migrate etl schema: lock: %w", err)
	}
	for _, stmt := range []string{
		"CREATE SCHEMA IF NOT EXISTS etl",
		`CREATE TABLE IF NOT EXISTS etl.schema_migrations (
			version    integer     PRIMARY KEY,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`,
	} {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("migrate etl schema: %w", err)
		}
	}
	var current int
	if err := tx.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM etl.schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("migrate etl schema: read version: %w", err)
	}
	if current > len(migrations) {
		return fmt.Errorf("migrate etl schema: database is at version %d, this runner knows %d: use a newer runner", current, len(migrations))
	}
	for v := current + 1; v <= len(migrations); v++ {
		if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
			return fmt.Errorf("migrate etl schema to version %d: %w", v, err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO etl.schema_migrations (version) VALUES ($1)", v); err != nil {
			return fmt.Errorf("migrate etl schema to version %d: %w", v, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate etl schema: commit: %w", err)
	}
	return nil
}
