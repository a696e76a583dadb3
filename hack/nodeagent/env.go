package main

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
)

// objects fetches the ConfigMaps and Secrets a pod refers to (the API server, or a fake in
// tests).
type objects interface {
	configMap(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	secret(ctx context.Context, namespace, name string) (*corev1.Secret, error)
}

// envList is a process environment that keeps the order of first definition; a later
// definition of a name replaces its value, as in a container.
type envList struct {
	names  []string
	values map[string]string
}

func newEnvList() *envList { return &envList{values: map[string]string{}} }

func (l *envList) set(name, value string) {
	if _, ok := l.values[name]; !ok {
		l.names = append(l.names, name)
	}
	l.values[name] = value
}

func (l *envList) lookup(name string) (string, bool) {
	v, ok := l.values[name]
	return v, ok
}

// environ returns the NAME=value list of os/exec.
func (l *envList) environ() []string {
	out := make([]string, 0, len(l.names))
	for _, n := range l.names {
		out = append(out, n+"="+l.values[n])
	}
	return out
}

// fieldValue returns the downward API value of a fieldRef path.
func fieldValue(pod *corev1.Pod, fieldPath string) (string, error) {
	if key, ok := strings.CutPrefix(fieldPath, "metadata.labels['"); ok {
		return pod.Labels[strings.TrimSuffix(key, "']")], nil
	}
	if key, ok := strings.CutPrefix(fieldPath, "metadata.annotations['"); ok {
		return pod.Annotations[strings.TrimSuffix(key, "']")], nil
	}
	switch fieldPath {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs", "status.hostIP", "status.hostIPs":
		return localIP, nil
	}
	return "", fmt.Errorf("fieldRef %s is not supported", fieldPath)
}

// resolveEnv returns the environment of container c of pod: base first (the variables the
// agent provides), then envFrom, then env with $(VAR) references expanded, as the kubelet
// does. A missing Secret, ConfigMap or key that is not optional is an error the caller
// retries (the kubelet's CreateContainerConfigError).
func resolveEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, objs objects, base *envList) (*envList, error) {
	env := newEnvList()
	for _, n := range base.names {
		env.set(n, base.values[n])
	}
	ns := pod.Namespace
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm, err := objs.configMap(ctx, ns, from.ConfigMapRef.Name)
			if apierrors.IsNotFound(err) && optional(from.ConfigMapRef.Optional) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("envFrom configMap %s: %w", from.ConfigMapRef.Name, err)
			}
			for _, k := range sortedKeys(cm.Data) {
				env.set(from.Prefix+k, cm.Data[k])
			}
		case from.SecretRef != nil:
			s, err := objs.secret(ctx, ns, from.SecretRef.Name)
			if apierrors.IsNotFound(err) && optional(from.SecretRef.Optional) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("envFrom secret %s: %w", from.SecretRef.Name, err)
			}
			for _, k := range sortedKeys(s.Data) {
				env.set(from.Prefix+k, string(s.Data[k]))
			}
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env.set(e.Name, expand(e.Value, env.lookup))
			continue
		}
		v, ok, err := envSourceValue(ctx, pod, e, objs)
		if err != nil {
			return nil, err
		}
		if ok {
			env.set(e.Name, v)
		}
	}
	return env, nil
}

// envSourceValue resolves one valueFrom; ok is false when an optional source is missing.
func envSourceValue(ctx context.Context, pod *corev1.Pod, e corev1.EnvVar, objs objects) (string, bool, error) {
	src := e.ValueFrom
	switch {
	case src.FieldRef != nil:
		v, err := fieldValue(pod, src.FieldRef.FieldPath)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		v, err := resourceValue(pod, src.ResourceFieldRef)
		return v, err == nil, err
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := objs.configMap(ctx, pod.Namespace, ref.Name)
		if apierrors.IsNotFound(err) && optional(ref.Optional) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("env %s: configMap %s: %w", e.Name, ref.Name, err)
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if optional(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("env %s: configMap %s has no key %q", e.Name, ref.Name, ref.Key)
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := objs.secret(ctx, pod.Namespace, ref.Name)
		if apierrors.IsNotFound(err) && optional(ref.Optional) {
			return "", false, nil
		}
		if err != nil {
			return "", false, fmt.Errorf("env %s: secret %s: %w", e.Name, ref.Name, err)
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), true, nil
		}
		if optional(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("env %s: secret %s has no key %q", e.Name, ref.Name, ref.Key)
	}
	return "", false, fmt.Errorf("env %s: unsupported valueFrom", e.Name)
}

func optional(p *bool) bool { return p != nil && *p }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// expand replaces $(NAME) with the value of NAME and $$ with $, leaving unknown references as
// they are: the kubelet's rules for env values, command and args.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
			b.WriteByte(next)
			i++
		}
	}
	return b.String()
}

// pathMap maps container paths (mount paths) to the host paths that play them.
type pathMap []pathMapping

type pathMapping struct {
	container string
	host      string
}

func newPathMap(m map[string]string) pathMap {
	var pm pathMap
	for c, h := range m {
		c = strings.TrimRight(c, "/")
		if c == "" {
			continue // a mount at / cannot be played by a directory
		}
		pm = append(pm, pathMapping{container: c, host: h})
	}
	// The longest container path wins: /etc/sluice/es inside /etc/sluice.
	sort.Slice(pm, func(i, j int) bool {
		if len(pm[i].container) != len(pm[j].container) {
			return len(pm[i].container) > len(pm[j].container)
		}
		return pm[i].container < pm[j].container
	})
	return pm
}

// path rewrites v when it is a mapped container path or a path below one.
func (pm pathMap) path(v string) string {
	for _, m := range pm {
		if v == m.container {
			return m.host
		}
		if rest, ok := strings.CutPrefix(v, m.container+"/"); ok {
			return strings.TrimRight(m.host, "/") + "/" + rest
		}
	}
	return v
}

// arg rewrites an argument: a path, or the value of --flag=<path> or -flag=<path>.
func (pm pathMap) arg(v string) string {
	if strings.HasPrefix(v, "-") {
		if flag, val, ok := strings.Cut(v, "="); ok {
			return flag + "=" + pm.path(val)
		}
		return v
	}
	return pm.path(v)
}

// resourceValue is what the kubelet gives a resourceFieldRef of a container with its limits
// or requests set (this agent knows no node allocatable to fall back to): the quantity
// divided by the divisor (1 by default), rounded up.
func resourceValue(pod *corev1.Pod, ref *corev1.ResourceFieldSelector) (string, error) {
	name := ref.ContainerName
	if name == "" {
		name = pod.Spec.Containers[0].Name
	}
	for _, c := range pod.Spec.Containers {
		if c.Name != name {
			continue
		}
		kind, res, _ := strings.Cut(ref.Resource, ".")
		list := c.Resources.Limits
		if kind == "requests" {
			list = c.Resources.Requests
		}
		q, ok := list[corev1.ResourceName(res)]
		if !ok {
			return "", fmt.Errorf("resourceFieldRef %s: container %s sets none", ref.Resource, name)
		}
		divisor := ref.Divisor
		if divisor.IsZero() {
			divisor = resource.MustParse("1")
		}
		if res == "cpu" {
			return strconv.FormatInt((q.MilliValue()+divisor.MilliValue()-1)/divisor.MilliValue(), 10), nil
		}
		return strconv.FormatInt((q.Value()+divisor.Value()-1)/divisor.Value(), 10), nil
	}
	return "", fmt.Errorf("resourceFieldRef: no container %s", name)
}
