package main

import (
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Reasons of a refused pod: its status.reason and the Warning event's reason.
const (
	ReasonImageNotSupported  = "ImageNotSupported"
	ReasonPodNotSupported    = "PodNotSupported"
	ReasonVolumeNotSupported = "VolumeNotSupported"
	ReasonEnvNotSupported    = "EnvNotSupported"
)

// imagePolicy maps image repositories to the local binary each one stands for.
type imagePolicy struct {
	sluiceRepo string
	binaries   map[string]string
}

func newImagePolicy(sluiceImage, binary string, extra map[string]string) imagePolicy {
	p := imagePolicy{sluiceRepo: repository(sluiceImage), binaries: map[string]string{}}
	for repo, bin := range extra {
		p.binaries[repository(repo)] = bin
	}
	p.binaries[p.sluiceRepo] = binary
	return p
}

// binary returns the program that plays image, or "" when the image is not accepted.
func (p imagePolicy) binary(image string) string {
	return p.binaries[repository(image)]
}

// repository returns an image reference without its tag and digest, normalized the way
// container runtimes do (busybox and docker.io/library/busybox are the same repository).
func repository(image string) string {
	ref, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	first, rest, hasSlash := strings.Cut(ref, "/")
	if !hasSlash {
		return "docker.io/library/" + ref
	}
	if !strings.ContainsAny(first, ".:") && first != "localhost" {
		return "docker.io/" + ref
	}
	if first == "index.docker.io" {
		return "docker.io/" + rest
	}
	return ref
}

// refusal says why the agent does not run a pod.
type refusal struct {
	reason  string
	message string
}

func refuse(reason, format string, args ...any) *refusal {
	return &refusal{reason: reason, message: fmt.Sprintf(format, args...)}
}

// supportedFieldPaths are the downward API fields the agent fills (labels and annotations by
// key too).
var supportedFieldPaths = map[string]bool{
	"metadata.name": true, "metadata.namespace": true, "metadata.uid": true,
	"spec.nodeName": true, "spec.serviceAccountName": true,
	"status.podIP": true, "status.podIPs": true, "status.hostIP": true, "status.hostIPs": true,
}

func fieldPathSupported(p string) bool {
	if supportedFieldPaths[p] {
		return true
	}
	return strings.HasPrefix(p, "metadata.labels['") || strings.HasPrefix(p, "metadata.annotations['")
}

// admit decides whether the agent can run pod, and with which binary. It is pure: a refusal
// is final, the pod will never run here.
func admit(pod *corev1.Pod, images imagePolicy) (string, *refusal) {
	if len(pod.Spec.Containers) != 1 || len(pod.Spec.InitContainers) > 0 || len(pod.Spec.EphemeralContainers) > 0 {
		return "", refuse(ReasonPodNotSupported,
			"the sluice node agent (a test harness for Jobs) runs pods of exactly one container and no init containers; this pod has %d containers and %d init containers",
			len(pod.Spec.Containers), len(pod.Spec.InitContainers))
	}
	c := &pod.Spec.Containers[0]
	bin := images.binary(c.Image)
	if bin == "" {
		return "", refuse(ReasonImageNotSupported,
			"image %q is not the Sluice image (%s, any tag): the sluice node agent runs no containers, only the local sluice binary for that image",
			c.Image, images.sluiceRepo)
	}
	if len(c.Command) > 0 && path.Base(c.Command[0]) != path.Base(bin) {
		return "", refuse(ReasonPodNotSupported,
			"command %q: the image's program is %s; command[0] may only name it", c.Command[0], path.Base(bin))
	}
	for _, v := range pod.Spec.Volumes {
		s := v.VolumeSource
		switch {
		case s.ConfigMap != nil, s.Secret != nil, s.EmptyDir != nil:
		case s.DownwardAPI != nil:
			for _, it := range s.DownwardAPI.Items {
				if it.FieldRef == nil || !fieldPathSupported(it.FieldRef.FieldPath) {
					return "", refuse(ReasonVolumeNotSupported, "volume %q: only fieldRef items of metadata and spec.nodeName are supported", v.Name)
				}
			}
		case s.Projected != nil:
			for _, src := range s.Projected.Sources {
				if src.ClusterTrustBundle != nil || src.PodCertificate != nil {
					return "", refuse(ReasonVolumeNotSupported, "volume %q: projected sources may be configMap, secret, downwardAPI and serviceAccountToken", v.Name)
				}
				if d := src.DownwardAPI; d != nil {
					for _, it := range d.Items {
						if it.FieldRef == nil || !fieldPathSupported(it.FieldRef.FieldPath) {
							return "", refuse(ReasonVolumeNotSupported, "volume %q: only fieldRef items of metadata and spec.nodeName are supported", v.Name)
						}
					}
				}
			}
		default:
			return "", refuse(ReasonVolumeNotSupported,
				"volume %q: the sluice node agent supports configMap, secret, emptyDir, downwardAPI and projected volumes only", v.Name)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			continue
		}
		switch {
		case e.ValueFrom.FieldRef != nil:
			if !fieldPathSupported(e.ValueFrom.FieldRef.FieldPath) {
				return "", refuse(ReasonEnvNotSupported, "env %s: fieldRef %s is not supported by the sluice node agent", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil, e.ValueFrom.ConfigMapKeyRef != nil:
		case e.ValueFrom.ResourceFieldRef != nil:
			switch e.ValueFrom.ResourceFieldRef.Resource {
			case "limits.memory", "requests.memory", "limits.cpu", "requests.cpu":
			default:
				return "", refuse(ReasonEnvNotSupported, "env %s: resourceFieldRef %s is not supported by the sluice node agent", e.Name, e.ValueFrom.ResourceFieldRef.Resource)
			}
		default:
			return "", refuse(ReasonEnvNotSupported, "env %s: only value, fieldRef, resourceFieldRef, secretKeyRef and configMapKeyRef are supported by the sluice node agent", e.Name)
		}
	}
	return bin, nil
}
