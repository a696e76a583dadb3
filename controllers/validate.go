package controllers

import (
	"fmt"
	"slices"
	"strings"
	"time"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	etlv1 "github.com/sluice-dev/sluice/api/v1alpha1"
)

// specProblem is why a spec cannot run. It is terminal: only a new spec (or a new operator
// configuration) fixes it, so the pipeline is Stalled and nothing is retried.
type specProblem struct {
	// Reason is one of ReasonInvalidSpec, ReasonTargetNotAllowed, ReasonUnknownConnection,
	// ReasonConnectionNotGranted, ReasonTargetNotGranted, ReasonTableNotReplicable.
	Reason  string
	Message string
}

func (p *specProblem) Error() string { return p.Reason + ": " + p.Message }

// isSpecReason reports whether a Ready reason is a specProblem's.
func isSpecReason(reason string) bool {
	switch reason {
	case etlv1.ReasonInvalidSpec, etlv1.ReasonTargetNotAllowed, etlv1.ReasonUnknownConnection,
		etlv1.ReasonConnectionNotGranted, etlv1.ReasonTargetNotGranted, etlv1.ReasonTableNotReplicable:
		return true
	}
	return false
}

// targetCheck is the whitelist verdict on spec.target, kept apart from specProblem because the
// TargetAllowed condition reports it even when something else is wrong.
type targetCheck struct {
	Allowed bool
	Reason  string
	Message string
}

// checkTarget judges spec.target against the whitelist of cfg.
func checkTarget(spec *etlv1.ETLPipelineSpec, cfg *configv1.OperatorConfig) targetCheck {
	t, err := etlv1.ParseTarget(spec.Target.Name)
	if err != nil {
		return targetCheck{Reason: etlv1.ReasonInvalidSpec, Message: err.Error()}
	}
	var allowed bool
	switch t.Kind {
	case etlv1.SinkPostgres:
		allowed = cfg.PostgresTableAllowed(spec.Target.Name)
	case etlv1.SinkElasticsearch:
		allowed = cfg.ElasticsearchIndexAllowed(t.Object)
	}
	if !allowed {
		return targetCheck{Reason: etlv1.ReasonTargetNotAllowed,
			Message: fmt.Sprintf("target %s is not in the operator's whitelist (allowedTargets)", spec.Target.Name)}
	}
	return targetCheck{Allowed: true, Reason: etlv1.ReasonTargetAllowed,
		Message: fmt.Sprintf("target %s is in the operator's whitelist", spec.Target.Name)}
}

// tenant is the namespace a pipeline lives in, as the grants judge it.
type tenant struct {
	Name   string
	Labels map[string]string
}

// validateSpec checks what the CRD's schema and CEL rules cannot: the schedule parses, the
// task plan is well formed (again: the API server may predate a rule), the target is
// whitelisted, every connection exists in the operator configuration, the pipeline's
// namespace is granted them, and a CDC pipeline's source connection may replicate its table.
// It returns nil for a spec that may run. The first problem wins, in this order: InvalidSpec,
// TargetNotAllowed, UnknownConnection, ConnectionNotGranted, TargetNotGranted,
// TableNotReplicable.
func validateSpec(spec *etlv1.ETLPipelineSpec, cfg *configv1.OperatorConfig, ns tenant) *specProblem {
	if msgs := invalidSpecMessages(spec); len(msgs) > 0 {
		return &specProblem{Reason: etlv1.ReasonInvalidSpec, Message: strings.Join(msgs, "; ")}
	}
	if msg := scheduleTooFrequent(spec.Schedule, cfg.Runner.MinInterval(), time.Now()); msg != "" {
		return &specProblem{Reason: etlv1.ReasonInvalidSpec, Message: msg}
	}
	if tc := checkTarget(spec, cfg); !tc.Allowed {
		return &specProblem{Reason: tc.Reason, Message: tc.Message}
	}
	if msgs := unknownConnections(spec, cfg); len(msgs) > 0 {
		return &specProblem{Reason: etlv1.ReasonUnknownConnection, Message: strings.Join(msgs, "; ")}
	}
	use := cfg.UseOf(spec.Source.Connection, spec.Target.Name, spec.Target.Connection)
	if refused := cfg.Grants().Check(use, ns.Name, ns.Labels); refused != nil {
		return &specProblem{Reason: refused.Reason, Message: refused.Message}
	}
	if spec.Mode == etlv1.ModeCDC {
		if conn := cfg.PostgresConnection(spec.Source.Connection); conn != nil {
			if msg := conn.ReplicationRefusal(spec.Source.Table); msg != "" {
				return &specProblem{Reason: etlv1.ReasonTableNotReplicable, Message: msg}
			}
		}
	}
	return nil
}

// scheduleTooFrequent refuses a schedule whose ticks come closer than the operator's
// runner.minScheduleInterval, "" when it is fine: one Job per run, too many runs pile up.
// The gap is measured over the next few ticks from now (a cron expression may tick unevenly).
func scheduleTooFrequent(schedule string, minInterval time.Duration, now time.Time) string {
	if schedule == "" || minInterval <= 0 {
		return ""
	}
	sched, err := parseSchedule(schedule)
	if err != nil {
		return "" // reported as invalid already
	}
	prev := sched.Next(now)
	for range 24 {
		next := sched.Next(prev)
		if next.IsZero() || prev.IsZero() {
			return ""
		}
		if gap := next.Sub(prev); gap < minInterval {
			return fmt.Sprintf("spec.schedule %q starts a run every %s; the operator's minimum is %s (runner.minScheduleInterval)",
				schedule, gap, minInterval)
		}
		prev = next
	}
	return ""
}

func invalidSpecMessages(spec *etlv1.ETLPipelineSpec) []string {
	var msgs []string
	add := func(format string, args ...any) { msgs = append(msgs, fmt.Sprintf(format, args...)) }

	if spec.Schedule != "" {
		if _, err := parseSchedule(spec.Schedule); err != nil {
			add("spec.schedule: %v", err)
		}
	}
	target, err := etlv1.ParseTarget(spec.Target.Name)
	if err != nil {
		add("spec.target.name: %v", err)
	} else if spec.Target.Action != "" && target.Kind != etlv1.SinkElasticsearch {
		add("spec.target.action: applies only to an Elasticsearch target (es:<index>)")
	}
	cdc := spec.Mode == etlv1.ModeCDC
	if cdc && spec.Target.Action == etlv1.ActionUpdate {
		add("spec.target.action: Update does not apply to CDC mode: a change carries the whole row, and a row deleted and " +
			"inserted again would be merged into the deleted row's document; CDC indexes whole documents (Index, the default)")
	}
	if len(spec.Tasks) > 0 {
		seen := map[string]bool{}
		for i, task := range spec.Tasks {
			if seen[task.Name] {
				add("spec.tasks[%d].name: duplicate task name %q", i, task.Name)
			}
			seen[task.Name] = true
			hasSQL, hasPython := strings.TrimSpace(task.SQL) != "", strings.TrimSpace(task.Python) != ""
			switch {
			case hasSQL == hasPython:
				add("spec.tasks[%d] (%s): a task must have exactly one of sql or python", i, task.Name)
			case cdc && hasSQL:
				add("spec.tasks[%d] (%s): a CDC pipeline reads source.table: sql tasks do not apply (python tasks do)", i, task.Name)
			case cdc: // python tasks only: no first sql task
			case i == 0 && !hasSQL:
				add("spec.tasks[0] (%s): the first task must be an sql task", task.Name)
			case i > 0 && hasSQL:
				add("spec.tasks[%d] (%s): only the first task may be an sql task", i, task.Name)
			}
		}
	} else if !cdc && strings.TrimSpace(spec.Source.Query) == "" {
		add("spec.source.query: one of source.query (legacy mode) or tasks (tasks mode) is required")
	}
	if cdc {
		msgs = append(msgs, invalidCDCMessages(&spec.Source)...)
	} else if spec.Source.Table != "" || len(spec.Source.Columns) > 0 {
		add("spec.source.table, spec.source.columns: apply only to CDC mode")
	}
	if spec.Mode == etlv1.ModeIncremental && spec.Source.Cursor.Column == "" {
		add("spec.source.cursor.column: required when mode is Incremental")
	}
	if len(spec.Source.Cursor.KeyColumns) == 0 {
		add("spec.source.cursor.keyColumns: at least one key column is required")
	}
	if dup := firstDuplicate(spec.Source.Cursor.KeyColumns); dup != "" {
		add("spec.source.cursor.keyColumns: duplicate column %q", dup)
	}
	if dup := firstDuplicate(spec.Target.Key); dup != "" {
		add("spec.target.key: duplicate column %q", dup)
	}
	if spec.BatchSize < 0 || spec.BatchSize > 100000 {
		add("spec.batchSize: %d is outside 1..100000", spec.BatchSize)
	}
	if spec.TransformTimeout != nil && spec.TransformTimeout.Duration <= 0 {
		add("spec.transformTimeout: must be positive")
	}
	if spec.Retry.InitialBackoff != nil && spec.Retry.InitialBackoff.Duration <= 0 {
		add("spec.retry.initialBackoff: must be positive")
	}
	return msgs
}

// invalidCDCMessages checks the source of a CDC pipeline: one table, read with its key (the
// table's primary key) and, optionally, a subset of its columns that keeps the key.
func invalidCDCMessages(src *etlv1.SourceSpec) []string {
	var msgs []string
	add := func(format string, args ...any) { msgs = append(msgs, fmt.Sprintf(format, args...)) }
	if strings.TrimSpace(src.Table) == "" {
		add("spec.source.table: required when mode is CDC")
	}
	if strings.TrimSpace(src.Query) != "" {
		add("spec.source.query: a CDC pipeline reads source.table: source.query does not apply")
	}
	if src.Cursor.Column != "" {
		add("spec.source.cursor.column: does not apply to CDC: the write-ahead log orders the changes; keyColumns name the table's primary key")
	}
	if len(src.Columns) > 0 {
		if dup := firstDuplicate(src.Columns); dup != "" {
			add("spec.source.columns: duplicate column %q", dup)
		}
		for _, k := range src.Cursor.KeyColumns {
			if !slices.Contains(src.Columns, k) {
				add("spec.source.columns: must include the key column %q (source.cursor.keyColumns)", k)
			}
		}
	}
	return msgs
}

func firstDuplicate(values []string) string {
	seen := map[string]bool{}
	for _, v := range values {
		if seen[v] {
			return v
		}
		seen[v] = true
	}
	return ""
}

// unknownConnections lists the connections spec names (explicitly or by default) that the
// operator configuration does not define.
func unknownConnections(spec *etlv1.ETLPipelineSpec, cfg *configv1.OperatorConfig) []string {
	var msgs []string
	if cfg.PostgresConnection(spec.Source.Connection) == nil {
		msgs = append(msgs, fmt.Sprintf("spec.source.connection: %q is not a postgres connection of the operator", spec.Source.Connection))
	}
	target, err := etlv1.ParseTarget(spec.Target.Name)
	if err != nil {
		return msgs
	}
	switch target.Kind {
	case etlv1.SinkPostgres:
		if name := targetConnection(spec, cfg, target.Kind); cfg.PostgresConnection(name) == nil && name != spec.Source.Connection {
			msgs = append(msgs, fmt.Sprintf("spec.target.connection: %q is not a postgres connection of the operator", name))
		}
	case etlv1.SinkElasticsearch:
		if cfg.ElasticsearchConnection(spec.Target.Connection) == nil {
			if spec.Target.Connection == "" {
				msgs = append(msgs, "spec.target.connection: the operator has no single or `default` elasticsearch connection; name one")
			} else {
				msgs = append(msgs, fmt.Sprintf("spec.target.connection: %q is not an elasticsearch connection of the operator", spec.Target.Connection))
			}
		}
	}
	return msgs
}

// targetConnection resolves the sink's connection name: target.connection, else the source
// connection for a Postgres target, else the configuration's only (or `default`)
// Elasticsearch connection. It returns "" when none resolves.
func targetConnection(spec *etlv1.ETLPipelineSpec, cfg *configv1.OperatorConfig, kind etlv1.SinkKind) string {
	if spec.Target.Connection != "" {
		return spec.Target.Connection
	}
	if kind == etlv1.SinkPostgres {
		return spec.Source.Connection
	}
	if es := cfg.ElasticsearchConnection(""); es != nil {
		return es.Name
	}
	return ""
}
