package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

const (
	leaseNamespace = "kube-node-lease"
	leaseDuration  = 40 * time.Second
	// nodeStatusEvery: the node status is refreshed every this many Lease renewals, as the
	// kubelet does when nothing changes.
	nodeStatusEvery = 6
	// kubeletVersion is what `kubectl get nodes` shows in the VERSION column.
	kubeletVersion = "sluice-nodeagent"
)

// nodeStatus is the status the agent reports for its Node: Ready, reachable on 127.0.0.1 for
// `kubectl logs`, and plainly not a kubelet.
func nodeStatus(name string, port int32, readySince, now metav1.Time) corev1.NodeStatus {
	cpu := resource.MustParse(strconv.Itoa(runtime.NumCPU()))
	pods := resource.MustParse("110")
	return corev1.NodeStatus{
		Capacity:    corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourcePods: pods},
		Allocatable: corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourcePods: pods},
		Conditions: []corev1.NodeCondition{{
			Type:               corev1.NodeReady,
			Status:             corev1.ConditionTrue,
			Reason:             "NodeAgentReady",
			Message:            "sluice node agent: a test harness for Jobs, not a kubelet; pods run as local processes",
			LastHeartbeatTime:  now,
			LastTransitionTime: readySince,
		}},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: localIP},
			{Type: corev1.NodeHostName, Address: name},
		},
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: port}},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion:          kubeletVersion,
			OperatingSystem:         runtime.GOOS,
			Architecture:            runtime.GOARCH,
			ContainerRuntimeVersion: "nodeagent://local-process",
			OSImage:                 "none (pods run as local processes of the host)",
		},
	}
}

// registerNode creates the Node, or finds it, and reports it Ready.
func (a *agent) registerNode(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: a.o.nodeName,
		Labels: map[string]string{
			corev1.LabelHostname: a.o.nodeName,
			corev1.LabelOSStable: runtime.GOOS, corev1.LabelArchStable: runtime.GOARCH,
		},
	}}
	if _, err := a.node.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create node %s: %w", a.o.nodeName, err)
	}
	a.readySince = metav1.Now()
	return a.patchNodeStatus(ctx)
}

func (a *agent) patchNodeStatus(ctx context.Context) error {
	st := nodeStatus(a.o.nodeName, a.port, a.readySince, metav1.Now())
	body, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return fmt.Errorf("encode node status: %w", err)
	}
	if _, err := a.node.CoreV1().Nodes().PatchStatus(ctx, a.o.nodeName, body); err != nil {
		return fmt.Errorf("patch status of node %s: %w", a.o.nodeName, err)
	}
	return nil
}

// renewLease renews the node's Lease in kube-node-lease, creating it the first time.
func (a *agent) renewLease(ctx context.Context) error {
	leases := a.node.CoordinationV1().Leases(leaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, a.o.nodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		l = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: a.o.nodeName, Namespace: leaseNamespace},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(a.o.nodeName),
				LeaseDurationSeconds: ptr.To(int32(leaseDuration / time.Second)),
				RenewTime:            &now,
			},
		}
		if n, err := a.node.CoreV1().Nodes().Get(ctx, a.o.nodeName, metav1.GetOptions{}); err == nil {
			// Like the kubelet's: the Lease goes with its Node.
			l.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: n.Name, UID: n.UID}}
		}
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.RenewTime = &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// heartbeat renews the Lease every period and refreshes the node status now and then.
func (a *agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(a.o.heartbeat)
	defer t.Stop()
	for n := 0; ; n++ {
		if err := a.renewLease(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("renew node lease", "error", err.Error())
		}
		if n%nodeStatusEvery == nodeStatusEvery-1 {
			err := a.patchNodeStatus(ctx)
			if apierrors.IsNotFound(err) {
				// Someone deleted the Node: register it again, as the kubelet does.
				err = a.registerNode(ctx)
			}
			if err != nil && ctx.Err() == nil {
				a.log.Warn("refresh node status", "error", err.Error())
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
