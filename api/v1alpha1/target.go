package v1alpha1

import (
	"fmt"
	"strings"
)

// SinkKind is the kind of sink a target names.
type SinkKind string

const (
	// SinkPostgres is an `analytics.<table>` target.
	SinkPostgres SinkKind = "postgres"
	// SinkElasticsearch is an `es:<index>` target.
	SinkElasticsearch SinkKind = "elasticsearch"
)

const (
	postgresTargetPrefix      = "analytics."
	elasticsearchTargetPrefix = "es:"
)

// ParsedTarget is a target name split into its kind and object.
type ParsedTarget struct {
	Kind SinkKind
	// Schema is "analytics" for a Postgres target, empty otherwise.
	Schema string
	// Object is the table name or the index name.
	Object string
}

// ParseTarget splits `analytics.<table>` or `es:<index>`.
func ParseTarget(name string) (ParsedTarget, error) {
	switch {
	case strings.HasPrefix(name, postgresTargetPrefix) && len(name) > len(postgresTargetPrefix):
		table := strings.TrimPrefix(name, postgresTargetPrefix)
		if strings.ContainsAny(table, ".\"") {
			return ParsedTarget{}, fmt.Errorf("target %q: table name must be a plain identifier", name)
		}
		return ParsedTarget{Kind: SinkPostgres, Schema: "analytics", Object: table}, nil
	case strings.HasPrefix(name, elasticsearchTargetPrefix) && len(name) > len(elasticsearchTargetPrefix):
		return ParsedTarget{Kind: SinkElasticsearch, Object: strings.TrimPrefix(name, elasticsearchTargetPrefix)}, nil
	default:
		return ParsedTarget{}, fmt.Errorf("target %q: want analytics.<table> or es:<index>", name)
	}
}

// SinkKey returns the sink key columns: target.key, or the source key columns by default.
func (s *ETLPipelineSpec) SinkKey() []string {
	if len(s.Target.Key) > 0 {
		return s.Target.Key
	}
	return s.Source.Cursor.KeyColumns
}

// ReaderSQL returns the reader query: the first task's SQL in tasks mode, else source.query.
func (s *ETLPipelineSpec) ReaderSQL() string {
	if len(s.Tasks) > 0 {
		return s.Tasks[0].SQL
	}
	return s.Source.Query
}
