package smoke

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluice-dev/sluice/test/testenv"
)

func TestPostgresAnswersAndKeepsASchema(t *testing.T) {
	dsn := testenv.NewPostgresDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()

	var versionNum int
	var version string
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, version()").Scan(&versionNum, &version); err != nil {
		t.Fatalf("server version: %v", err)
	}
	if versionNum < 150000 {
		t.Errorf("PostgreSQL %d, want 15 or later", versionNum)
	}
	t.Logf("real %s", version)

	steps := []string{
		"CREATE SCHEMA analytics",
		"CREATE TABLE analytics.smoke (id bigint PRIMARY KEY, name text NOT NULL)",
		"INSERT INTO analytics.smoke VALUES (1, 'a'), (2, 'b') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
		"INSERT INTO analytics.smoke VALUES (2, 'c') ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
	}
	for _, s := range steps {
		if _, err := conn.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	var n int
	var name string
	if err := conn.QueryRow(ctx, "SELECT count(*), max(name) FROM analytics.smoke").Scan(&n, &name); err != nil {
		t.Fatalf("count: %v", err)
	}
	if n != 2 || name != "c" {
		t.Errorf("after two upserts: %d rows, max(name)=%q; want 2 rows and %q", n, name, "c")
	}
	if _, err := conn.Exec(ctx, "DROP SCHEMA analytics CASCADE"); err != nil {
		t.Fatalf("drop schema: %v", err)
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'analytics')").Scan(&exists); err != nil {
		t.Fatalf("check schema: %v", err)
	}
	if exists {
		t.Error("schema analytics still exists after DROP")
	}
}
