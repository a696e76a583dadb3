// Package v1alpha1 holds the ETLPipeline API of Sluice (group etl.sluice.dev).
//
// The package is deliberately light: types, validation markers, condition and reason constants
// and small pure helpers. It imports only apimachinery.
//
// +kubebuilder:object:generate=true
// +groupName=etl.sluice.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of the ETLPipeline API.
	GroupVersion = schema.GroupVersion{Group: "etl.sluice.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the API's types with a runtime.Scheme.
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds the API's types to a runtime.Scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &ETLPipeline{}, &ETLPipelineList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
