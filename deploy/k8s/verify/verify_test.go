package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/pandabridge/pandabridge/deploy/k8s"
)

// crds are the CustomResourceDefinitions the manifests use, from the Go
// modules of the operators that define them (pinned; fetched from the Go
// module proxy by `go mod download`).
var crds = []struct{ module, file string }{
	{"github.com/kedacore/keda/v2@v2.21.0", "config/crd/bases/keda.sh_scaledobjects.yaml"},
	{"github.com/prometheus-operator/prometheus-operator@v0.85.0", "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"},
}

// podSecurityLabels make a namespace enforce, warn about and audit the
// restricted profile, as docs/kubernetes.md tells operators to.
var podSecurityLabels = map[string]string{
	"pod-security.kubernetes.io/enforce":         "restricted",
	"pod-security.kubernetes.io/enforce-version": "latest",
	"pod-security.kubernetes.io/warn":            "restricted",
	"pod-security.kubernetes.io/warn-version":    "latest",
	"pod-security.kubernetes.io/audit":           "restricted",
	"pod-security.kubernetes.io/audit-version":   "latest",
}

var dryRunStrict = metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldValidation: metav1.FieldValidationStrict}

func TestEveryVariantIsAcceptedByAKubeAPIServer(t *testing.T) {
	bin := os.Getenv("PANDABRIDGE_K8S_BIN")
	if bin == "" {
		t.Fatal("PANDABRIDGE_K8S_BIN is not set: run deploy/k8s/verify/run.sh, which builds kube-apiserver and etcd")
	}
	ctx := t.Context()
	start := time.Now()
	c := startCluster(t, bin)
	t.Logf("etcd and kube-apiserver ready in %s", time.Since(start).Round(time.Millisecond))

	dyn, err := dynamic.NewForConfig(c.config)
	if err != nil {
		t.Fatal(err)
	}
	disco, err := discovery.NewDiscoveryClientForConfig(c.config)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := disco.ServerVersion(); err != nil {
		t.Fatalf("/version: %v", err)
	} else {
		t.Logf("kube-apiserver %s", v.GitVersion)
	}

	start = time.Now()
	installCRDs(ctx, t, dyn)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))
	t.Logf("CRDs installed in %s", time.Since(start).Round(time.Millisecond))

	variants := map[string][]*unstructured.Unstructured{}
	namespaces := map[string]bool{}
	for _, v := range k8s.Variants {
		objs, err := k8s.Objects(v)
		if err != nil {
			t.Fatal(err)
		}
		variants[v.Name] = objs
		for _, o := range objs {
			namespaces[o.GetNamespace()] = true
		}
	}
	for ns := range namespaces {
		if ns == "" {
			t.Fatal("a variant has an object without namespace")
		}
		create(ctx, t, dyn, mapper, namespace(ns), metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
	}

	t.Run("controls", func(t *testing.T) {
		// Each check below would pass vacuously if the server did not do
		// what it is there for; these prove it does.
		ns := slices.Sorted(func(yield func(string) bool) {
			for n := range namespaces {
				if !yield(n) {
					return
				}
			}
		})[0]
		pod := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "v1", "kind": "Pod",
			"metadata": map[string]any{"name": "control", "namespace": ns},
			"spec":     map[string]any{"containers": []any{map[string]any{"name": "c", "image": "busybox:1.37"}}},
		}}
		if _, _, err := dryRun(ctx, dyn, mapper, pod); !apierrors.IsForbidden(err) {
			t.Errorf("a Pod violating PodSecurity restricted was not refused in namespace %s: %v", ns, err)
		}
		dep := variants["prod"][slices.IndexFunc(variants["prod"], func(u *unstructured.Unstructured) bool { return u.GetKind() == "Deployment" })].DeepCopy()
		_ = unstructured.SetNestedField(dep.Object, nil, "spec", "template", "spec", "securityContext")
		if _, warns, err := dryRun(ctx, dyn, mapper, dep); err != nil || !slices.ContainsFunc(warns, func(w string) bool { return strings.Contains(w, "PodSecurity") }) {
			t.Errorf("a Deployment violating PodSecurity restricted drew no warning (warnings %q, error %v)", warns, err)
		}
		dep = variants["prod"][slices.IndexFunc(variants["prod"], func(u *unstructured.Unstructured) bool { return u.GetKind() == "Deployment" })].DeepCopy()
		_ = unstructured.SetNestedField(dep.Object, "x", "spec", "template", "spec", "unknownField")
		if _, _, err := dryRun(ctx, dyn, mapper, dep); err == nil || !strings.Contains(err.Error(), "unknownField") {
			t.Errorf("a Deployment with an unknown field was accepted: %v", err)
		}
		so := variants["prod"][slices.IndexFunc(variants["prod"], func(u *unstructured.Unstructured) bool { return u.GetKind() == "ScaledObject" })].DeepCopy()
		_ = unstructured.SetNestedField(so.Object, "x", "spec", "unknownField")
		if _, _, err := dryRun(ctx, dyn, mapper, so); err == nil || !strings.Contains(err.Error(), "unknownField") {
			t.Errorf("a ScaledObject with an unknown field was accepted: the CRD's schema is not enforced: %v", err)
		}
	})

	for _, v := range k8s.Variants {
		t.Run(v.Name, func(t *testing.T) {
			start := time.Now()
			for _, o := range variants[v.Name] {
				what := fmt.Sprintf("%s %s/%s", o.GetKind(), o.GetNamespace(), o.GetName())
				_, warns, err := dryRun(ctx, dyn, mapper, o)
				if err != nil {
					t.Errorf("%s: refused: %v", what, err)
				}
				for _, w := range warns {
					t.Errorf("%s: warning: %s", what, w)
				}
			}
			t.Logf("%d objects accepted in %s", len(variants[v.Name]), time.Since(start).Round(time.Millisecond))
		})
	}
	if w := strayWarnings.get(); len(w) > 0 {
		t.Errorf("warnings outside the dry runs: %q", w)
	}
}

// dryRun creates o as a server-side dry run with strict field validation
// and returns the server's answer and warnings.
func dryRun(ctx context.Context, dyn dynamic.Interface, mapper meta.RESTMapper, o *unstructured.Unstructured) (*unstructured.Unstructured, []string, error) {
	ctx, w := collectWarnings(ctx)
	res, err := resourceFor(mapper, o)
	if err != nil {
		return nil, nil, err
	}
	out, err := res(dyn, o).Create(ctx, o, dryRunStrict)
	return out, w.get(), err
}

// create really creates o, failing the test on any error or warning.
func create(ctx context.Context, t *testing.T, dyn dynamic.Interface, mapper meta.RESTMapper, o *unstructured.Unstructured, opts metav1.CreateOptions) {
	t.Helper()
	ctx, w := collectWarnings(ctx)
	res, err := resourceFor(mapper, o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res(dyn, o).Create(ctx, o, opts); err != nil {
		t.Fatalf("creating %s %s: %v", o.GetKind(), o.GetName(), err)
	}
	if len(w.get()) > 0 {
		t.Fatalf("creating %s %s: warnings %q", o.GetKind(), o.GetName(), w.get())
	}
}

func resourceFor(mapper meta.RESTMapper, o *unstructured.Unstructured) (func(dynamic.Interface, *unstructured.Unstructured) dynamic.ResourceInterface, error) {
	gvk := o.GroupVersionKind()
	m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", gvk, err)
	}
	return func(dyn dynamic.Interface, o *unstructured.Unstructured) dynamic.ResourceInterface {
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			return dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		return dyn.Resource(m.Resource)
	}, nil
}

func namespace(name string) *unstructured.Unstructured {
	l := map[string]any{}
	for k, v := range podSecurityLabels {
		l[k] = v
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "v1", "kind": "Namespace",
		"metadata": map[string]any{"name": name, "labels": l},
	}}
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRDs creates the CRDs from their modules' files and waits until
// they are established.
func installCRDs(ctx context.Context, t *testing.T, dyn dynamic.Interface) {
	t.Helper()
	for _, c := range crds {
		dir := moduleDir(t, c.module)
		y, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		objs, err := k8s.Decode(y)
		if err != nil {
			t.Fatalf("%s %s: %v", c.module, c.file, err)
		}
		for _, o := range objs {
			cctx, w := collectWarnings(ctx)
			if _, err := dyn.Resource(crdResource).Create(cctx, o, metav1.CreateOptions{}); err != nil {
				t.Fatalf("installing CRD %s from %s: %v", o.GetName(), c.module, err)
			}
			if len(w.get()) > 0 {
				t.Logf("installing CRD %s: warnings %q (theirs, not ours)", o.GetName(), w.get())
			}
			waitFor(t, 30*time.Second, "CRD "+o.GetName(), func() error {
				got, err := dyn.Resource(crdResource).Get(ctx, o.GetName(), metav1.GetOptions{})
				if err != nil {
					return err
				}
				conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
				for _, c := range conds {
					c := c.(map[string]any)
					if c["type"] == "Established" && c["status"] == "True" {
						return nil
					}
				}
				return fmt.Errorf("not established")
			})
		}
	}
}

// moduleDir downloads module@version (through GOPROXY, into the module
// cache) and returns its directory.
func moduleDir(t *testing.T, module string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = t.TempDir() // outside any module: nothing's go.mod or go.sum changes
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GO111MODULE=on")
	out, err := cmd.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &info); err != nil || jerr != nil || info.Dir == "" {
		t.Fatalf("go mod download %s: %v %s %s", module, err, info.Error, out)
	}
	return info.Dir
}
