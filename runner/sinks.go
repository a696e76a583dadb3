package runner

import (
	"context"

	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
	"github.com/sluice-dev/sluice/runner/sink"
	"github.com/sluice-dev/sluice/runner/sink/elasticsearch"
	"github.com/sluice-dev/sluice/runner/sink/postgres"
)

// sinkOpener opens the sink of a plan on a session. It may use the session's Postgres
// connections; a sink with connections of its own (Elasticsearch) opens them from the plan.
type sinkOpener func(ctx context.Context, pl *plan, s *session) (sink.Sink, error)

// sinkOpeners is the one place that maps a target kind to its sink: a new sink is a package
// under runner/sink and a line here.
var sinkOpeners = map[etlv1.SinkKind]sinkOpener{
	etlv1.SinkPostgres:      openPostgres,
	etlv1.SinkElasticsearch: openElasticsearch,
}

func openPostgres(_ context.Context, pl *plan, s *session) (sink.Sink, error) {
	return postgres.New(s.sinkConn, pl.target.Schema, pl.target.Object, pl.sinkKey), nil
}

// openElasticsearch checks the whitelist again and resolves the connection's URLs and
// credentials; no request is made before Prepare.
func openElasticsearch(_ context.Context, pl *plan, s *session) (sink.Sink, error) {
	var opts elasticsearch.Options
	if s.metrics != nil {
		opts.OnItemFailures = s.metrics.ElasticsearchItemFailures
	}
	return elasticsearch.Open(pl.cfg, elasticsearch.Target{
		Index: pl.target.Object, Key: pl.sinkKey, Action: pl.spec.Target.Action,
		Alias: pl.spec.Target.FullSync == etlv1.FullSyncMirror && pl.mode == etlv1.ModeIncremental,
	}, pl.spec.Target.Connection, pl.lookupEnv, opts)
}
