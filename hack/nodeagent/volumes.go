package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// saMountPath is where a pod's service account credentials are mounted (rest.InClusterConfig
// reads them there).
const saMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

// podFiles are the host paths of one pod: <work dir>/pods/<namespace>_<name>_<uid>.
type podFiles struct{ dir string }

func filesOf(workDir string, pod *corev1.Pod) podFiles {
	return podFiles{dir: filepath.Join(workDir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID))}
}

func (f podFiles) volume(name string) string { return filepath.Join(f.dir, "volumes", name) }
func (f podFiles) log(container string) string {
	return filepath.Join(f.dir, container+".log")
}
func (f podFiles) termination() string { return filepath.Join(f.dir, "termination-log") }
func (f podFiles) pid() string         { return filepath.Join(f.dir, "pid") }
func (f podFiles) kubeconfig() string  { return filepath.Join(f.dir, "kubeconfig") }
func (f podFiles) home() string        { return filepath.Join(f.dir, "home") }

// tokenSource issues service account tokens bound to a pod (the TokenRequest API).
type tokenSource interface {
	token(ctx context.Context, pod *corev1.Pod, p *corev1.ServiceAccountTokenProjection) (string, time.Time, error)
}

// tokenFile is a materialized service account token, refreshed before it expires.
type tokenFile struct {
	path       string
	mode       os.FileMode
	projection *corev1.ServiceAccountTokenProjection
	issued     time.Time
	expires    time.Time
}

// due reports whether the token has lived 80% of its life, when the kubelet renews it.
func (t *tokenFile) due(now time.Time) bool {
	return !now.Before(t.issued.Add(t.expires.Sub(t.issued) * 8 / 10))
}

// materializer writes a pod's volumes into its directory.
type materializer struct {
	objs   objects
	tokens tokenSource
}

// materialize writes every volume of pod under files and returns the token files to refresh.
// Missing sources that are not optional are errors the caller retries.
func (m materializer) materialize(ctx context.Context, pod *corev1.Pod, files podFiles) ([]*tokenFile, error) {
	var tokens []*tokenFile
	for _, v := range pod.Spec.Volumes {
		dir := files.volume(v.Name)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		s := v.VolumeSource
		var err error
		switch {
		case s.EmptyDir != nil:
		case s.ConfigMap != nil:
			err = m.configMap(ctx, pod.Namespace, dir, s.ConfigMap.Name, s.ConfigMap.Items, s.ConfigMap.Optional, mode(s.ConfigMap.DefaultMode, 0o644))
		case s.Secret != nil:
			err = m.secret(ctx, pod.Namespace, dir, s.Secret.SecretName, s.Secret.Items, s.Secret.Optional, mode(s.Secret.DefaultMode, 0o644))
		case s.DownwardAPI != nil:
			err = downward(pod, dir, s.DownwardAPI.Items, mode(s.DownwardAPI.DefaultMode, 0o644))
		case s.Projected != nil:
			def := mode(s.Projected.DefaultMode, 0o644)
			for _, src := range s.Projected.Sources {
				switch {
				case src.ConfigMap != nil:
					err = m.configMap(ctx, pod.Namespace, dir, src.ConfigMap.Name, src.ConfigMap.Items, src.ConfigMap.Optional, def)
				case src.Secret != nil:
					err = m.secret(ctx, pod.Namespace, dir, src.Secret.Name, src.Secret.Items, src.Secret.Optional, def)
				case src.DownwardAPI != nil:
					err = downward(pod, dir, src.DownwardAPI.Items, def)
				case src.ServiceAccountToken != nil:
					t := &tokenFile{path: filepath.Join(dir, src.ServiceAccountToken.Path), mode: def, projection: src.ServiceAccountToken}
					err = m.refresh(ctx, pod, t)
					tokens = append(tokens, t)
				}
				if err != nil {
					break
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
	}
	return tokens, nil
}

// refresh requests a new token and writes it.
func (m materializer) refresh(ctx context.Context, pod *corev1.Pod, t *tokenFile) error {
	tok, exp, err := m.tokens.token(ctx, pod, t.projection)
	if err != nil {
		return fmt.Errorf("service account token for %s: %w", pod.Spec.ServiceAccountName, err)
	}
	t.issued, t.expires = time.Now(), exp
	return writeFile(t.path, []byte(tok), t.mode)
}

func mode(p *int32, def os.FileMode) os.FileMode {
	if p == nil {
		return def
	}
	return os.FileMode(*p) & 0o777 // #nosec G115 -- a file mode, validated by the API server
}

func (m materializer) configMap(ctx context.Context, ns, dir, name string, items []corev1.KeyToPath, opt *bool, def os.FileMode) error {
	cm, err := m.objs.configMap(ctx, ns, name)
	if apierrors.IsNotFound(err) && optional(opt) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("configMap %s: %w", name, err)
	}
	data := make(map[string][]byte, len(cm.Data)+len(cm.BinaryData))
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return writeKeys(dir, "configMap "+name, data, items, optional(opt), def)
}

func (m materializer) secret(ctx context.Context, ns, dir, name string, items []corev1.KeyToPath, opt *bool, def os.FileMode) error {
	s, err := m.objs.secret(ctx, ns, name)
	if apierrors.IsNotFound(err) && optional(opt) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("secret %s: %w", name, err)
	}
	return writeKeys(dir, "secret "+name, s.Data, items, optional(opt), def)
}

// writeKeys writes the selected keys (all when items is empty) as files, as the kubelet's
// configMap and secret volumes do.
func writeKeys(dir, what string, data map[string][]byte, items []corev1.KeyToPath, opt bool, def os.FileMode) error {
	if len(items) == 0 {
		for _, k := range sortedKeys(data) {
			if err := writeFile(filepath.Join(dir, k), data[k], def); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if opt {
				continue
			}
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		if err := writeFile(filepath.Join(dir, it.Path), v, mode(it.Mode, def)); err != nil {
			return err
		}
	}
	return nil
}

func downward(pod *corev1.Pod, dir string, items []corev1.DownwardAPIVolumeFile, def os.FileMode) error {
	for _, it := range items {
		if it.FieldRef == nil {
			return fmt.Errorf("downwardAPI %s: only fieldRef is supported", it.Path)
		}
		v, err := fieldValue(pod, it.FieldRef.FieldPath)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, it.Path), []byte(v), mode(it.Mode, def)); err != nil {
			return err
		}
	}
	return nil
}

// writeFile replaces a file atomically, so that a reader never sees half a token.
func writeFile(path string, data []byte, perm os.FileMode) error {
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil { // #nosec G703 -- under the pod directory; item paths are validated by the API server
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	cerr := f.Chmod(perm)
	if err := errors.Join(werr, cerr, f.Close()); err != nil {
		_ = os.Remove(f.Name()) // #nosec G703 -- the temporary file just made
		return err
	}
	return os.Rename(f.Name(), path) // #nosec G703 -- see MkdirAll above
}

// mountPaths maps the container's mount paths, and its termination message path, to the host
// paths that play them.
func mountPaths(c *corev1.Container, files podFiles) map[string]string {
	m := map[string]string{}
	for _, vm := range c.VolumeMounts {
		host := files.volume(vm.Name)
		if vm.SubPath != "" {
			host = filepath.Join(host, vm.SubPath)
		}
		m[vm.MountPath] = host
	}
	tp := c.TerminationMessagePath
	if tp == "" {
		tp = corev1.TerminationMessagePathDefault
	}
	m[tp] = files.termination()
	return m
}

// podKubeconfig returns the kubeconfig of a pod's service account: the API server, the CA
// and the token of the volume mounted at saMountPath (tokenFile, so that a refreshed token is
// read again). It returns nil when the pod has no service account token.
func podKubeconfig(server string, paths pathMap, namespace string) *clientcmdapi.Config {
	dir := paths.path(saMountPath)
	if dir == saMountPath {
		return nil
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: server, CertificateAuthority: filepath.Join(dir, "ca.crt")}
	cfg.AuthInfos["serviceaccount"] = &clientcmdapi.AuthInfo{TokenFile: filepath.Join(dir, "token")}
	cfg.Contexts["serviceaccount"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "serviceaccount", Namespace: namespace}
	cfg.CurrentContext = "serviceaccount"
	return cfg
}

func writeKubeconfig(cfg *clientcmdapi.Config, path string) error {
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("encode kubeconfig: %w", err)
	}
	return writeFile(path, data, 0o600)
}

// hostPort splits an API server URL into the host and port of KUBERNETES_SERVICE_HOST/PORT.
func hostPort(server string) (string, string) {
	hp := strings.TrimPrefix(strings.TrimPrefix(server, "https://"), "http://")
	hp, _, _ = strings.Cut(hp, "/")
	if i := strings.LastIndex(hp, ":"); i > strings.LastIndex(hp, "]") {
		return strings.Trim(hp[:i], "[]"), hp[i+1:]
	}
	return strings.Trim(hp, "[]"), "443"
}
