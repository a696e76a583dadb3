package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/model"
	"sigs.k8s.io/yaml"
)

// EnvPrometheus names the directory holding Debian's prometheus and promtool binaries
// (hack/prometheus.sh).
const EnvPrometheus = "SLUICE_TEST_PROMETHEUS"

// PrometheusDir returns the directory holding the prometheus and promtool binaries.
func PrometheusDir(t TB) string {
	t.Helper()
	return binDir(t, "Prometheus", EnvPrometheus, "prometheus", "promtool")
}

// Promtool returns the path of the promtool binary.
func Promtool(t TB) string {
	t.Helper()
	return filepath.Join(PrometheusDir(t), "promtool")
}

// ScrapeTarget is one static scrape job of a test Prometheus.
type ScrapeTarget struct {
	// JobName becomes the job label of the job's series (and of its up series).
	JobName string
	// Targets are host:port addresses.
	Targets []string
	// Scheme is http (the default) or https.
	Scheme string
	// MetricsPath defaults to /metrics.
	MetricsPath string
	// BearerToken, when set, is sent as "Authorization: Bearer <token>".
	BearerToken string
	// InsecureSkipVerify accepts any certificate of an https target.
	InsecureSkipVerify bool
	// HonorLabels keeps the scraped series' own labels where they collide with the target's
	// (job, instance), as the ServiceMonitor and PodMonitor of config/prometheus do.
	HonorLabels bool
}

// PrometheusConfig configures StartPrometheus.
type PrometheusConfig struct {
	// ScrapeInterval and EvaluationInterval are the global intervals; both default to 1s.
	ScrapeInterval     time.Duration
	EvaluationInterval time.Duration
	// Scrapes are the static scrape jobs.
	Scrapes []ScrapeTarget
	// RuleFiles are paths of PrometheusRule manifests (monitoring.coreos.com/v1, such as
	// config/prometheus/rules.yaml), whose spec.groups are extracted into plain rule files, or
	// of plain rule files (a top-level `groups`), used as they are.
	RuleFiles []string
	// MaxFor, when positive, shortens every alert's `for:` that is longer than it to MaxFor,
	// in the copy of the rules that the test server loads (the files named in RuleFiles are
	// left alone): a test then sees an alert fire within seconds instead of minutes. Without
	// it an alert with a `for:` is pending for that long before it fires.
	MaxFor time.Duration
}

// Prometheus is a real Prometheus server started by StartPrometheus.
type Prometheus struct {
	// URL is the server's base URL, http://127.0.0.1:<port>.
	URL string
	// Dir holds prometheus.yml, the extracted rule files, the storage and the server's log.
	Dir string

	cmd      *exec.Cmd
	done     chan struct{}
	err      error // the process' exit, once done is closed
	log      string
	stopOnce sync.Once
}

// Sample is one element of an instant vector.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Alert is one active alert (pending or firing) as /api/v1/alerts reports it.
type Alert struct {
	// Name is the alertname label.
	Name string
	// State is "pending" or "firing".
	State       string
	Labels      map[string]string
	Annotations map[string]string
	// Value is the alert expression's value, as Prometheus renders it.
	Value string
}

// ExtractRuleGroups returns a plain Prometheus rule file (`groups: ...`) from a PrometheusRule
// manifest (its spec), or the content itself when it already is a plain rule file.
func ExtractRuleGroups(manifest []byte) ([]byte, error) {
	groups, err := ruleGroups(manifest)
	if err != nil {
		return nil, err
	}
	return yaml.Marshal(map[string]any{"groups": groups})
}

func ruleGroups(manifest []byte) ([]any, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(manifest, &doc); err != nil {
		return nil, fmt.Errorf("parse rule file: %w", err)
	}
	if spec, ok := doc["spec"].(map[string]any); ok {
		if kind, _ := doc["kind"].(string); kind != "PrometheusRule" {
			return nil, fmt.Errorf("kind %q is not PrometheusRule", kind)
		}
		doc = spec
	}
	groups, ok := doc["groups"].([]any)
	if !ok || len(groups) == 0 {
		return nil, errors.New("no rule groups (neither spec.groups nor groups)")
	}
	return groups, nil
}

// shortenFor caps the `for:` of every alerting rule of groups at limit.
func shortenFor(groups []any, limit time.Duration) error {
	for _, g := range groups {
		group, _ := g.(map[string]any)
		rules, _ := group["rules"].([]any)
		for _, r := range rules {
			rule, _ := r.(map[string]any)
			s, ok := rule["for"].(string)
			if !ok {
				continue
			}
			d, err := model.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("rule %v: for %q: %w", rule["alert"], s, err)
			}
			if time.Duration(d) > limit {
				rule["for"] = promDuration(limit)
			}
		}
	}
	return nil
}

// promDuration renders d as Prometheus writes durations (1s, 1m30s, 500ms).
func promDuration(d time.Duration) string { return model.Duration(d).String() }

// StartPrometheus writes a configuration for cfg, starts a real Prometheus server on a free
// loopback port with storage in a temporary directory, waits until it is ready, and stops it
// (and removes the directory) at cleanup.
func StartPrometheus(t TB, cfg PrometheusConfig) *Prometheus {
	t.Helper()
	bin := filepath.Join(PrometheusDir(t), "prometheus")
	dir, err := os.MkdirTemp("", "sluice-prometheus-")
	if err != nil {
		t.Fatalf("prometheus: temporary directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })

	configPath, err := writePrometheusConfig(dir, cfg)
	if err != nil {
		t.Fatalf("prometheus: %v", err)
	}
	if out, err := exec.CommandContext(context.Background(), filepath.Join(filepath.Dir(bin), "promtool"), "check", "config", configPath).CombinedOutput(); err != nil {
		t.Fatalf("prometheus: promtool check config %s: %v\n%s", configPath, err, out)
	}

	// A port that was free a moment ago may be taken by the time the server binds it: try a
	// few.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p, err := startPrometheusProcess(bin, dir, configPath)
		if err != nil {
			lastErr = err
			continue
		}
		t.Cleanup(p.stop)
		if err := p.waitReady(60 * time.Second); err != nil {
			p.stop()
			lastErr = err
			continue
		}
		return p
	}
	t.Fatalf("prometheus: %v", lastErr)
	return nil
}

type promScrapeConfig struct {
	JobName       string              `json:"job_name"`
	Scheme        string              `json:"scheme,omitempty"`
	MetricsPath   string              `json:"metrics_path,omitempty"`
	HonorLabels   bool                `json:"honor_labels,omitempty"`
	Authorization *promAuthorization  `json:"authorization,omitempty"`
	TLSConfig     *promTLSConfig      `json:"tls_config,omitempty"`
	StaticConfigs []promStaticTargets `json:"static_configs"`
}

type promAuthorization struct {
	Type        string `json:"type"`
	Credentials string `json:"credentials"`
}

type promTLSConfig struct {
	InsecureSkipVerify bool `json:"insecure_skip_verify"`
}

type promStaticTargets struct {
	Targets []string `json:"targets"`
}

func writePrometheusConfig(dir string, cfg PrometheusConfig) (string, error) {
	scrape := cfg.ScrapeInterval
	if scrape <= 0 {
		scrape = time.Second
	}
	eval := cfg.EvaluationInterval
	if eval <= 0 {
		eval = time.Second
	}
	timeout := min(scrape, 10*time.Second)

	var ruleFiles []string
	for i, path := range cfg.RuleFiles {
		content, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("rule file: %w", err)
		}
		groups, err := ruleGroups(content)
		if err != nil {
			return "", fmt.Errorf("rule file %s: %w", path, err)
		}
		if cfg.MaxFor > 0 {
			if err := shortenFor(groups, cfg.MaxFor); err != nil {
				return "", fmt.Errorf("rule file %s: %w", path, err)
			}
		}
		plain, err := yaml.Marshal(map[string]any{"groups": groups})
		if err != nil {
			return "", err
		}
		out := filepath.Join(dir, fmt.Sprintf("rules-%d-%s", i, filepath.Base(path)))
		if err := os.WriteFile(out, plain, 0o600); err != nil {
			return "", err
		}
		ruleFiles = append(ruleFiles, out)
	}

	scrapes := make([]promScrapeConfig, 0, len(cfg.Scrapes))
	for _, s := range cfg.Scrapes {
		if s.JobName == "" || len(s.Targets) == 0 {
			return "", fmt.Errorf("scrape job %q: a job name and at least one target are needed", s.JobName)
		}
		sc := promScrapeConfig{
			JobName:       s.JobName,
			Scheme:        s.Scheme,
			MetricsPath:   s.MetricsPath,
			HonorLabels:   s.HonorLabels,
			StaticConfigs: []promStaticTargets{{Targets: s.Targets}},
		}
		if s.BearerToken != "" {
			sc.Authorization = &promAuthorization{Type: "Bearer", Credentials: s.BearerToken}
		}
		if s.InsecureSkipVerify {
			sc.TLSConfig = &promTLSConfig{InsecureSkipVerify: true}
		}
		scrapes = append(scrapes, sc)
	}

	conf := map[string]any{
		"global": map[string]any{
			"scrape_interval":     promDuration(scrape),
			"scrape_timeout":      promDuration(timeout),
			"evaluation_interval": promDuration(eval),
		},
		"rule_files":     ruleFiles,
		"scrape_configs": scrapes,
	}
	out, err := yaml.Marshal(conf)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return "", err
	}
	return path, nil
}

func freeLoopbackPort() (int, error) {
	l, err := (&net.ListenConfig{}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startPrometheusProcess(bin, dir, configPath string) (*Prometheus, error) {
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, fmt.Errorf("free port: %w", err)
	}
	data, err := os.MkdirTemp(dir, "data-")
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, fmt.Sprintf("prometheus-%d.log", port))
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	// The server lives as long as the test: it is stopped by stop, not by a context.
	cmd := exec.CommandContext(context.Background(), bin,
		"--config.file="+configPath,
		"--storage.tsdb.path="+data,
		"--web.listen-address="+addr,
		"--log.level=info",
	)
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	p := &Prometheus{URL: "http://" + addr, Dir: dir, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.err = cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *Prometheus) stop() {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

func (p *Prometheus) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-p.done:
			return fmt.Errorf("prometheus exited before it was ready (%v):\n%s", p.err, p.LogTail(40))
		default:
		}
		status, _, err := p.get(context.Background(), "/-/ready", nil)
		if err == nil && status == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("prometheus at %s not ready after %s (last: %d %v):\n%s", p.URL, timeout, status, err, p.LogTail(40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// LogTail returns the last n lines of the server's log.
func (p *Prometheus) LogTail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (p *Prometheus) get(ctx context.Context, path string, query url.Values) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := p.URL + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// api calls an endpoint of the HTTP API and decodes its data into out.
func (p *Prometheus) api(path string, query url.Values, out any) error {
	status, body, err := p.get(context.Background(), path, query)
	if err != nil {
		return err
	}
	var envelope struct {
		Status    string          `json:"status"`
		Data      json.RawMessage `json:"data"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		return fmt.Errorf("%s: HTTP %d, not an API answer: %.200s", path, status, body)
	}
	if envelope.Status != "success" {
		return fmt.Errorf("%s: %s: %s", path, envelope.ErrorType, envelope.Error)
	}
	return json.Unmarshal(envelope.Data, out)
}

// Query evaluates an instant query at the current time (/api/v1/query). A scalar result is
// one sample without labels; a range vector or a string fails the test.
func (p *Prometheus) Query(t TB, promql string) []Sample {
	t.Helper()
	samples, err := p.query(promql)
	if err != nil {
		t.Fatalf("prometheus query %q: %v", promql, err)
	}
	return samples
}

func (p *Prometheus) query(promql string) ([]Sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.api("/api/v1/query", url.Values{"query": {promql}}, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		}
		if err := json.Unmarshal(data.Result, &result); err != nil {
			return nil, err
		}
		samples := make([]Sample, 0, len(result))
		for _, r := range result {
			v, err := sampleValue(r.Value)
			if err != nil {
				return nil, err
			}
			samples = append(samples, Sample{Labels: r.Metric, Value: v})
		}
		return samples, nil
	case "scalar":
		var value [2]any
		if err := json.Unmarshal(data.Result, &value); err != nil {
			return nil, err
		}
		v, err := sampleValue(value)
		if err != nil {
			return nil, err
		}
		return []Sample{{Labels: map[string]string{}, Value: v}}, nil
	default:
		return nil, fmt.Errorf("result type %s: only instant vectors and scalars are supported", data.ResultType)
	}
}

func sampleValue(v [2]any) (float64, error) {
	s, ok := v[1].(string)
	if !ok {
		return 0, fmt.Errorf("sample value %v is not a string", v[1])
	}
	return strconv.ParseFloat(s, 64)
}

// Alerts returns the active alerts, pending and firing (/api/v1/alerts), by name then labels.
func (p *Prometheus) Alerts(t TB) []Alert {
	t.Helper()
	alerts, err := p.alerts()
	if err != nil {
		t.Fatalf("prometheus alerts: %v", err)
	}
	return alerts
}

func (p *Prometheus) alerts() ([]Alert, error) {
	var data struct {
		Alerts []struct {
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
			State       string            `json:"state"`
			Value       string            `json:"value"`
		} `json:"alerts"`
	}
	if err := p.api("/api/v1/alerts", nil, &data); err != nil {
		return nil, err
	}
	alerts := make([]Alert, 0, len(data.Alerts))
	for _, a := range data.Alerts {
		alerts = append(alerts, Alert{Name: a.Labels["alertname"], State: a.State, Labels: a.Labels, Annotations: a.Annotations, Value: a.Value})
	}
	sort.Slice(alerts, func(i, j int) bool {
		if alerts[i].Name != alerts[j].Name {
			return alerts[i].Name < alerts[j].Name
		}
		return fmt.Sprint(alerts[i].Labels) < fmt.Sprint(alerts[j].Labels)
	})
	return alerts, nil
}

// WaitForAlert polls the active alerts until one named name whose labels include labels is in
// one of states (any state when none is given), and returns it. It fails the test after
// timeout, with the alerts, the rule and target health, and the tail of the server's log.
func (p *Prometheus) WaitForAlert(t TB, name string, labels map[string]string, timeout time.Duration, states ...string) Alert {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last []Alert
	var lastErr error
	for time.Now().Before(deadline) {
		last, lastErr = p.alerts()
		for _, a := range last {
			if a.Name == name && hasLabels(a.Labels, labels) && (len(states) == 0 || contains(states, a.State)) {
				return a
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("prometheus: no alert %s %v in state %v after %s (last error: %v); active alerts: %+v\n%s", name, labels, states, timeout, lastErr, last, p.diagnostics())
	return Alert{}
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Diagnostics says how the targets and rules fare, for a failure message.
func (p *Prometheus) Diagnostics() string { return p.diagnostics() }

func (p *Prometheus) diagnostics() string {
	var b strings.Builder
	var targets struct {
		ActiveTargets []struct {
			ScrapeURL string `json:"scrapeUrl"`
			Health    string `json:"health"`
			LastError string `json:"lastError"`
		} `json:"activeTargets"`
	}
	if err := p.api("/api/v1/targets", nil, &targets); err == nil {
		for _, tg := range targets.ActiveTargets {
			fmt.Fprintf(&b, "target %s: %s %s\n", tg.ScrapeURL, tg.Health, tg.LastError)
		}
	}
	var rules struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Name      string `json:"name"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := p.api("/api/v1/rules", nil, &rules); err == nil {
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				if r.Health != "ok" {
					fmt.Fprintf(&b, "rule %s/%s: %s %s\n", g.Name, r.Name, r.Health, r.LastError)
				}
			}
		}
	}
	fmt.Fprintf(&b, "log:\n%s", p.LogTail(20))
	return b.String()
}
