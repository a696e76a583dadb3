package runner

import "os"

// maxTermination is what Kubernetes keeps of a termination message.
const maxTermination = 4096

// writeTermination leaves a short message where Kubernetes shows it in the pod's status
// (terminationMessagePath). It is best effort: outside a pod the path is usually not writable.
func writeTermination(path, msg string) {
	if path == "" {
		return
	}
	if len(msg) > maxTermination {
		msg = msg[:maxTermination]
	}
	_ = os.WriteFile(path, []byte(msg), 0o600)
}
