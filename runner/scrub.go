package runner

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// scrubber removes credentials from text that leaves the runner: status messages, log lines,
// the termination message. It knows the run's DSNs and their passwords, and also masks
// anything shaped like a credential-carrying URL or a password setting.
type scrubber struct {
	secrets []string
}

var (
	urlUserinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@`)
	passwordKV  = regexp.MustCompile(`(?i)(password\s*=\s*)('[^']*'|\S+)`)
)

const redacted = "****"

func newScrubber(dsns map[string]string) *scrubber {
	s := &scrubber{}
	for _, dsn := range dsns {
		s.add(dsn)
	}
	return s
}

// add registers a DSN: the DSN itself and its password are secrets.
func (s *scrubber) add(dsn string) {
	if dsn == "" {
		return
	}
	s.secrets = append(s.secrets, dsn)
	if cfg, err := pgconn.ParseConfig(dsn); err == nil && cfg.Password != "" {
		s.secrets = append(s.secrets, cfg.Password)
		s.secrets = append(s.secrets, url.QueryEscape(cfg.Password), url.PathEscape(cfg.Password))
	}
}

// scrub returns text without secrets.
func (s *scrubber) scrub(text string) string {
	if s != nil {
		for _, secret := range s.secrets {
			if len(secret) >= 3 {
				text = strings.ReplaceAll(text, secret, redacted)
			}
		}
	}
	text = urlUserinfo.ReplaceAllString(text, "${1}"+redacted+"@")
	return passwordKV.ReplaceAllString(text, "${1}"+redacted)
}
