package runner

import (
	"encoding/json"
	"fmt"

	configv1 "github.com/sluice-dev/sluice/api/config/v1alpha1"
	"github.com/sluice-dev/sluice/runner/failure"
)

// checkGrants judges again, before anything is read, whether the pipeline's namespace may use
// the connections and the target of the run: the manager judged them when it made the Job,
// but the configuration the runner reads may have changed since. The namespace's labels are
// the ones the manager saw (EnvNamespaceLabels): the runner may not read namespaces.
func checkGrants(cfg *configv1.OperatorConfig, pl *plan, lookupEnv func(string) (string, bool)) error {
	ns, _ := lookupEnv(configv1.EnvPipelineNamespace)
	var labels map[string]string
	if raw, ok := lookupEnv(configv1.EnvNamespaceLabels); ok && raw != "" {
		if err := json.Unmarshal([]byte(raw), &labels); err != nil {
			return failure.Business(fmt.Errorf("%s: want a JSON object of strings: %w", configv1.EnvNamespaceLabels, err))
		}
	}
	use := cfg.UseOf(pl.sourceConn, pl.spec.Target.Name, pl.sinkConn)
	if refused := cfg.Grants().Check(use, ns, labels); refused != nil {
		return failure.Business(refused)
	}
	return nil
}
