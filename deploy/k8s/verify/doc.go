// Package verify submits every deployment variant of deploy/k8s to a real
// kube-apiserver (built from k8s.io/kubernetes by ./tools, backed by etcd) as
// a server-side dry run with strict field validation, in namespaces that
// enforce the restricted PodSecurity profile, with the KEDA and
// prometheus-operator CRDs installed. Any error or warning fails.
//
// It is a module of its own so that the main module's `go test ./...` never
// needs those servers. Run it with ./run.sh, which builds them once into a
// cache directory.
package verify
