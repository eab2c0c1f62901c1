// Package k8s holds pandabridge's Kubernetes manifests (kustomize: base/,
// overlays/, components/, embedded in this package) and renders them the way
// `kubectl kustomize` does, so that tests can check what would be applied.
//
// Its tests check the project's invariants on every Variant; the separate
// module in verify/ submits every Variant to a real kube-apiserver.
package k8s

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// tree is deploy/k8s's kustomize tree, YAML files only.
//
//go:embed base overlays components
var tree embed.FS

// A Variant is one way of deploying pandabridge: an overlay, possibly with
// components the overlay does not include by itself.
type Variant struct {
	// Name identifies the variant in test output.
	Name string
	// Overlay is the directory under deploy/k8s, e.g. "overlays/prod".
	Overlay string
	// Components are extra directories under deploy/k8s added to the
	// overlay, e.g. "components/ingest".
	Components []string
	// Production says the variant must meet production's invariants
	// (replicas, anti-affinity, pinned image).
	Production bool
}

// Variants are every deployment the repository offers: the two overlays as
// they are (both include components/ingest), and prod with each component
// that is not in an overlay.
var Variants = []Variant{
	{Name: "dev", Overlay: "overlays/dev"},
	{Name: "prod", Overlay: "overlays/prod", Production: true},
	{Name: "prod+hpa", Overlay: "overlays/prod", Components: []string{"components/hpa"}, Production: true},
}

// Render runs kustomize on v, as `kubectl kustomize` would, and returns the
// YAML stream.
func Render(v Variant) ([]byte, error) {
	mem := filesys.MakeFsInMemory()
	const root = "/k8s"
	err := fs.WalkDir(tree, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := tree.ReadFile(p)
		if err != nil {
			return err
		}
		return mem.WriteFile(path.Join(root, p), b)
	})
	if err != nil {
		return nil, err
	}
	dir := path.Join(root, v.Overlay)
	if len(v.Components) > 0 {
		// As a user enables a component: listed in the overlay's own
		// kustomization, after the components it already lists, so that its
		// namespace, images, generators and patches apply.
		k, err := tree.ReadFile(path.Join(v.Overlay, "kustomization.yaml"))
		if err != nil {
			return nil, err
		}
		var kust map[string]any
		if err := yaml.Unmarshal(k, &kust); err != nil {
			return nil, fmt.Errorf("%s: %s/kustomization.yaml: %w", v.Name, v.Overlay, err)
		}
		list, ok := kust["components"].([]any)
		if kust["components"] != nil && !ok {
			return nil, fmt.Errorf("%s: %s/kustomization.yaml: components is not a list", v.Name, v.Overlay)
		}
		for _, c := range v.Components {
			rel, err := filepath.Rel(v.Overlay, c)
			if err != nil {
				return nil, err
			}
			if slices.Contains(list, any(filepath.ToSlash(rel))) {
				return nil, fmt.Errorf("%s: %s already includes %s", v.Name, v.Overlay, c)
			}
			list = append(list, filepath.ToSlash(rel))
		}
		kust["components"] = list
		if k, err = yaml.Marshal(kust); err != nil {
			return nil, err
		}
		if err := mem.WriteFile(path.Join(dir, "kustomization.yaml"), k); err != nil {
			return nil, err
		}
	}
	m, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(mem, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", v.Name, err)
	}
	return m.AsYaml()
}

// Objects renders v and returns its objects, in kustomize's output order.
func Objects(v Variant) ([]*unstructured.Unstructured, error) {
	y, err := Render(v)
	if err != nil {
		return nil, err
	}
	return Decode(y)
}
