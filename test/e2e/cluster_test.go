package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// podsOf returns the pods of a Job.
func podsOf(ns, job string) []corev1.Pod {
	GinkgoHelper()
	var list corev1.PodList
	Expect(getJSON(&list, "pods", "-n", ns, "-l", "job-name="+job)).To(Succeed())
	return list.Items
}

func getPod(ns, name string) (*corev1.Pod, error) {
	pod := &corev1.Pod{}
	if err := getJSON(pod, "pod", name, "-n", ns); err != nil {
		return nil, err
	}
	return pod, nil
}

// terminated returns the terminated state of a pod's only container, or nil.
func terminated(pod *corev1.Pod) *corev1.ContainerStateTerminated {
	if len(pod.Status.ContainerStatuses) != 1 {
		return nil
	}
	return pod.Status.ContainerStatuses[0].State.Terminated
}

// podPhase returns a function polling the phase of a pod, for Eventually.
func podPhase(ns, name string) func() (corev1.PodPhase, error) {
	return func() (corev1.PodPhase, error) {
		pod, err := getPod(ns, name)
		if err != nil {
			return "", err
		}
		return pod.Status.Phase, nil
	}
}

// alive reports whether a process exists and is not a zombie (a killed process whose parent
// has not reaped it yet is dead for this purpose).
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses.
	s := string(stat)
	i := strings.LastIndex(s, ")")
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z'
}

func shPod(name, script string, extraArgs ...string) string {
	args := append([]string{"-c", script, "sh"}, extraArgs...)
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = strconv.Quote(a)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 5
  containers:
  - name: sh
    image: %s
    args: [%s]
`, name, shImage, strings.Join(quoted, ", "))
}

var _ = Describe("The local cluster", func() {
	var ns string
	BeforeEach(func() { ns = newNamespace() })

	It("completes a Job of the Sluice image by running the freshly built sluice binary", func() {
		apply(ns, `apiVersion: batch/v1
kind: Job
metadata:
  name: version
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: sluice
        image: ghcr.io/sluice-dev/sluice:some-other-tag
        args: ["version"]
`)
		mustKubectl("wait", "-n", ns, "--for=condition=Complete", "job/version", "--timeout=60s")

		pods := podsOf(ns, "version")
		Expect(pods).To(HaveLen(1))
		Expect(pods[0].Status.Phase).To(Equal(corev1.PodSucceeded))
		term := terminated(&pods[0])
		Expect(term).NotTo(BeNil())
		Expect(term.ExitCode).To(BeZero())
		Expect(term.Reason).To(Equal("Completed"))
		Expect(mustKubectl("logs", "-n", ns, "job/version")).To(Equal("sluice " + sluiceVersion + "\n"))
	})

	It("replaces a failing pod through the real Job controller, then fails the Job with the true exit code", func() {
		apply(ns, `apiVersion: batch/v1
kind: Job
metadata:
  name: broken
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: sluice
        image: ghcr.io/sluice-dev/sluice:latest
        args: ["no-such-command"]
        terminationMessagePolicy: FallbackToLogsOnError
`)
		mustKubectl("wait", "-n", ns, "--for=condition=Failed", "job/broken", "--timeout=80s")

		var job batchv1.Job
		Expect(getJSON(&job, "job", "broken", "-n", ns)).To(Succeed())
		Expect(job.Status.Conditions).To(ContainElement(And(
			HaveField("Type", batchv1.JobFailed),
			HaveField("Reason", batchv1.JobReasonBackoffLimitExceeded),
		)))
		pods := podsOf(ns, "broken")
		Expect(pods).To(HaveLen(2), "the first pod and its one replacement")
		for i := range pods {
			Expect(pods[i].Status.Phase).To(Equal(corev1.PodFailed))
			term := terminated(&pods[i])
			Expect(term).NotTo(BeNil())
			Expect(term.ExitCode).To(BeEquivalentTo(2))
			Expect(term.Reason).To(Equal("Error"))
			// FallbackToLogsOnError: the tail of the log, as the kubelet gives it.
			Expect(term.Message).To(ContainSubstring(`unknown command "no-such-command"`))
		}
	})

	It("reports the termination message the program wrote to its terminationMessagePath", func() {
		apply(ns, shPod("last-words", `echo "bad input on line 3" > "$1"; exit 3`, "/dev/termination-log"))
		Eventually(podPhase(ns, "last-words")).WithTimeout(30 * time.Second).Should(Equal(corev1.PodFailed))
		pod, err := getPod(ns, "last-words")
		Expect(err).NotTo(HaveOccurred())
		term := terminated(pod)
		Expect(term).NotTo(BeNil())
		Expect(term.ExitCode).To(BeEquivalentTo(3))
		Expect(term.Message).To(Equal("bad input on line 3\n"))
	})

	It("refuses a pod of another image with a Warning event and a Failed pod", func() {
		apply(ns, `apiVersion: v1
kind: Pod
metadata:
  name: other
spec:
  restartPolicy: Never
  containers:
  - name: busybox
    image: busybox:1.36
    command: ["sleep", "3600"]
`)
		Eventually(func() (string, error) {
			return kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name=other,reason=ImageNotSupported",
				"-o", "jsonpath={range .items[*]}{.type} {.message}{end}")
		}).WithTimeout(30 * time.Second).Should(And(HavePrefix("Warning "), ContainSubstring(`"busybox:1.36"`)))
		Eventually(podPhase(ns, "other")).WithTimeout(10 * time.Second).Should(Equal(corev1.PodFailed))
		pod, err := getPod(ns, "other")
		Expect(err).NotTo(HaveOccurred())
		Expect(pod.Status.Reason).To(Equal("ImageNotSupported"))
		Expect(terminated(pod)).To(BeNil(), "a refused container never ran")
	})

	It("kills the process group of a running pod that is deleted", func() {
		// $$$$ is $$ once the kubelet's $(VAR) expansion has made $$ of it.
		apply(ns, shPod("sleeper", `sleep 300 & echo "child=$!"; echo "shell=$$$$"; wait`))
		pids := regexp.MustCompile(`(?m)^(child|shell)=(\d+)$`)
		var found [][]string
		Eventually(func() (int, error) {
			out, err := kubectl("logs", "-n", ns, "sleeper")
			found = pids.FindAllStringSubmatch(out, -1)
			return len(found), err
		}).WithTimeout(30 * time.Second).Should(Equal(2))
		Expect(podPhase(ns, "sleeper")()).To(Equal(corev1.PodRunning))
		var procs []int
		for _, m := range found {
			pid, err := strconv.Atoi(m[2])
			Expect(err).NotTo(HaveOccurred())
			Expect(alive(pid)).To(BeTrue(), "%s process %d runs", m[1], pid)
			procs = append(procs, pid)
		}

		mustKubectl("delete", "pod", "sleeper", "-n", ns, "--timeout=60s")
		for _, pid := range procs {
			Eventually(func() bool { return alive(pid) }).WithTimeout(5*time.Second).Should(BeFalse(), "process %d is gone", pid)
		}
		_, err := getPod(ns, "sleeper")
		Expect(err).To(MatchError(ContainSubstring("NotFound")))
	})

	It("gives the process the env of Secrets, ConfigMaps and the downward API, and the files of a ConfigMap volume", func() {
		mustKubectl("create", "secret", "generic", "creds", "-n", ns, "--from-literal=password=s3cret")
		mustKubectl("create", "configmap", "settings", "-n", ns, "--from-literal=greeting=hello", "--from-literal=app.conf=mode=demo")
		apply(ns, `apiVersion: v1
kind: Pod
metadata:
  name: env
spec:
  restartPolicy: Never
  containers:
  - name: sh
    image: `+shImage+`
    args:
    - -c
    - |
      echo "PASSWORD=$PASSWORD"
      echo "GREETING=$GREETING"
      echo "COMBINED=$COMBINED"
      echo "POD_NAME=$POD_NAME"
      echo "CFG_greeting=$CFG_greeting"
      echo "MISSING=${MISSING-unset}"
      echo "FILE=$(cat "$1")"
    - sh
    - /etc/settings/app.conf
    env:
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: creds, key: password}}
    - name: GREETING
      valueFrom: {configMapKeyRef: {name: settings, key: greeting}}
    - name: MISSING
      valueFrom: {secretKeyRef: {name: no-such-secret, key: x, optional: true}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: COMBINED
      value: $(GREETING)-world
    envFrom:
    - prefix: CFG_
      configMapRef: {name: settings}
    volumeMounts:
    - name: settings
      mountPath: /etc/settings
      readOnly: true
  volumes:
  - name: settings
    configMap: {name: settings}
`)
		Eventually(podPhase(ns, "env")).WithTimeout(30 * time.Second).Should(Equal(corev1.PodSucceeded))
		Expect(mustKubectl("logs", "-n", ns, "env")).To(Equal(strings.Join([]string{
			"PASSWORD=s3cret",
			"GREETING=hello",
			"COMBINED=hello-world",
			"POD_NAME=env",
			"CFG_greeting=hello",
			"MISSING=unset",
			"FILE=mode=demo",
		}, "\n") + "\n"))
	})

	It("lets the process talk to the API server as the pod's service account through KUBECONFIG", func() {
		apply(ns, `apiVersion: v1
kind: Pod
metadata:
  name: whoami
spec:
  restartPolicy: Never
  containers:
  - name: kubectl
    image: `+kubectlImage+`
    args: ["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]
`)
		Eventually(podPhase(ns, "whoami")).WithTimeout(30 * time.Second).Should(Equal(corev1.PodSucceeded))
		Expect(mustKubectl("logs", "-n", ns, "whoami")).To(Equal("system:serviceaccount:" + ns + ":default"))
	})
})
