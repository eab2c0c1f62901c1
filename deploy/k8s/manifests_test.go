package k8s_test

import (
	"fmt"
	"maps"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	psaapi "k8s.io/pod-security-admission/api"
	psapolicy "k8s.io/pod-security-admission/policy"

	"github.com/pandabridge/pandabridge/callbacks"
	"github.com/pandabridge/pandabridge/deploy/k8s"
	"github.com/pandabridge/pandabridge/pandapon/sandbox"
	"github.com/pandabridge/pandabridge/webhooks"
)

const (
	// image is pandabridge's own image; its containers run one of cmd/*.
	image = "ghcr.io/pandabridge/pandabridge"
	// credentialsSecret is the Secret the operator creates; the manifests only reference it.
	credentialsSecret = "pandabridge-credentials"
	// sandboxOnlyLabel marks the one Secret a manifest may carry: the dev
	// overlay's copy of the sandbox's published credentials.
	sandboxOnlyLabel = "pandabridge.io/sandbox-only"
	// shutdownAfterDrain bounds what a program does after its drain deadline:
	// the consumer stops its HTTP server (5s in cmd/consumer) and flushes;
	// publisher serve waits for its webhook deliveries and drains NATS.
	shutdownAfterDrain = 5 * time.Second
)

// secretFiles are the variables naming files that must come from the
// credentials Secret, with the Secret key each file must be.
var secretFiles = map[string]string{
	"PANDAPON_ACCESS_SECRET_FILE":             "access-secret",
	"NATS_CREDS":                              "nats.creds",
	"PANDABRIDGE_INGEST_TOKENS_FILE":          "ingest-tokens",
	"PANDABRIDGE_INGEST_WEBHOOK_SECRETS_FILE": "ingest-webhook-secrets",
	"PANDABRIDGE_CALLBACK_TOKEN_FILE":         "callback-token",
}

// devOnlyKeys are the keys dev's generated Secret may hold besides the
// sandbox's access-secret, each checked as the program checks it. Their
// values are published in the repository: they must say so.
var devOnlyKeys = map[string]func(string) error{
	"ingest-tokens": func(v string) error {
		for _, t := range strings.Fields(v) {
			if len(t) < 16 {
				return fmt.Errorf("a token has %d characters; publisher serve wants at least 16", len(t))
			}
		}
		return nil
	},
	"ingest-webhook-secrets": func(v string) error { _, err := webhooks.ParseSecret(v); return err },
	"callback-token":         callbacks.ValidateToken,
}

// devOnlyPrefix starts every value of devOnlyKeys.
const devOnlyPrefix = "dev-only-"

// customKinds are the objects of CRDs (not in client-go's scheme) the
// manifests may use; verify/ checks them against the CRDs' schemas.
var customKinds = map[string]bool{
	"keda.sh/v1alpha1, Kind=ScaledObject":           true,
	"monitoring.coreos.com/v1, Kind=ServiceMonitor": true,
}

// manifests is one rendered Variant, decoded strictly into client-go's types.
type manifests struct {
	k8s.Variant
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	configMaps      []*corev1.ConfigMap
	secrets         []*corev1.Secret
	serviceAccounts []*corev1.ServiceAccount
	pdbs            []*policyv1.PodDisruptionBudget
	netpols         []*networkingv1.NetworkPolicy
	hpas            []*autoscalingv2.HorizontalPodAutoscaler
	custom          []*unstructured.Unstructured
	all             []metav1.Object
}

var (
	renderOnce sync.Once
	rendered   []*manifests
	renderErr  error
)

// variants renders and decodes every Variant once per test binary.
func variants(t *testing.T) []*manifests {
	t.Helper()
	renderOnce.Do(func() { rendered, renderErr = renderAll() })
	if renderErr != nil {
		t.Fatal(renderErr)
	}
	return rendered
}

func renderAll() ([]*manifests, error) {
	strict := serializer.NewCodecFactory(clientgoscheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var out []*manifests
	for _, v := range k8s.Variants {
		y, err := k8s.Render(v)
		if err != nil {
			return nil, err
		}
		docs, err := k8s.Documents(y)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", v.Name, err)
		}
		m := &manifests{Variant: v}
		for _, doc := range docs {
			u, err := k8s.Decode(doc)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", v.Name, err)
			}
			if customKinds[u[0].GroupVersionKind().String()] {
				m.custom = append(m.custom, u[0])
				m.all = append(m.all, u[0])
				continue
			}
			obj, gvk, err := strict.Decode(doc, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: decoding strictly with client-go's scheme: %w\n%s", v.Name, err, doc)
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				m.deployments = append(m.deployments, o)
			case *corev1.Service:
				m.services = append(m.services, o)
			case *corev1.ConfigMap:
				m.configMaps = append(m.configMaps, o)
			case *corev1.Secret:
				m.secrets = append(m.secrets, o)
			case *corev1.ServiceAccount:
				m.serviceAccounts = append(m.serviceAccounts, o)
			case *policyv1.PodDisruptionBudget:
				m.pdbs = append(m.pdbs, o)
			case *networkingv1.NetworkPolicy:
				m.netpols = append(m.netpols, o)
			case *autoscalingv2.HorizontalPodAutoscaler:
				m.hpas = append(m.hpas, o)
			default:
				// A new kind needs its invariants added here first.
				return nil, fmt.Errorf("%s: %s is a kind these tests do not check yet", v.Name, gvk)
			}
			m.all = append(m.all, obj.(metav1.Object))
		}
		out = append(out, m)
	}
	return out, nil
}

// program returns the cmd/* a container of our image runs ("consumer",
// "publisher", …), or "" for another image.
func program(c corev1.Container) string {
	if !strings.HasPrefix(c.Image, image+":") && !strings.HasPrefix(c.Image, image+"@") {
		return ""
	}
	if len(c.Command) == 0 {
		return "?"
	}
	return strings.TrimPrefix(c.Command[0], "/")
}

func (m *manifests) configMap(name string) *corev1.ConfigMap {
	for _, cm := range m.configMaps {
		if cm.Name == name {
			return cm
		}
	}
	return nil
}

// env resolves a container's environment as the kubelet would (env over
// envFrom; ConfigMap references looked up). Values from a resourceFieldRef
// are "<resourceFieldRef>". Problems are reported, not fatal.
func (m *manifests) env(t *testing.T, where string, c corev1.Container) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			cm := m.configMap(ef.ConfigMapRef.Name)
			if cm == nil {
				if ef.ConfigMapRef.Optional == nil || !*ef.ConfigMapRef.Optional {
					t.Errorf("%s: envFrom ConfigMap %q is not in the manifests", where, ef.ConfigMapRef.Name)
				}
				continue
			}
			for k, v := range cm.Data {
				out[ef.Prefix+k] = v
			}
		case ef.SecretRef != nil:
			t.Errorf("%s: envFrom Secret %q: secrets are mounted as files, never put in the environment", where, ef.SecretRef.Name)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			out[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			optional := ref.Optional != nil && *ref.Optional
			cm := m.configMap(ref.Name)
			v, ok := "", false
			if cm != nil {
				v, ok = cm.Data[ref.Key]
			}
			switch {
			case ok:
				out[e.Name] = v
			case !optional:
				t.Errorf("%s: env %s: ConfigMap %q has no key %q", where, e.Name, ref.Name, ref.Key)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			t.Errorf("%s: env %s comes from Secret %q: secrets are mounted as files, never put in the environment", where, e.Name, e.ValueFrom.SecretKeyRef.Name)
		case e.ValueFrom.ResourceFieldRef != nil:
			out[e.Name] = "<resourceFieldRef>"
		default:
			out[e.Name] = "<fieldRef>"
		}
	}
	return out
}

type podTemplate struct {
	where     string // "variant: Deployment/name"
	namespace string
	replicas  *int32
	spec      *corev1.PodTemplateSpec
	selector  *metav1.LabelSelector
}

func (m *manifests) templates() []podTemplate {
	var out []podTemplate
	for _, d := range m.deployments {
		out = append(out, podTemplate{m.Name + ": Deployment/" + d.Name, d.Namespace, d.Spec.Replicas, &d.Spec.Template, d.Spec.Selector})
	}
	return out
}

// selected returns the pod templates in namespace ns whose labels sel matches.
func (m *manifests) selected(ns string, sel labels.Selector) []podTemplate {
	var out []podTemplate
	for _, p := range m.templates() {
		if p.namespace == ns && sel.Matches(labels.Set(p.spec.Labels)) {
			out = append(out, p)
		}
	}
	return out
}

func containers(spec *corev1.PodSpec) []corev1.Container {
	return append(slices.Clone(spec.InitContainers), spec.Containers...)
}

func hasPort(spec *corev1.PodSpec, port intstr.IntOrString) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if (port.Type == intstr.String && p.Name == port.StrVal) || (port.Type == intstr.Int && p.ContainerPort == port.IntVal) {
				return true
			}
		}
	}
	return false
}

func TestEveryObjectDecodesStrictlyAndIsNamespaced(t *testing.T) {
	for _, m := range variants(t) {
		if len(m.deployments) == 0 {
			t.Errorf("%s: renders no Deployment", m.Name)
		}
		for _, o := range m.all {
			if o.GetNamespace() == "" {
				t.Errorf("%s: %s has no namespace: the overlay must set one", m.Name, o.GetName())
			}
		}
	}
}

func TestEveryContainerHasProbesRequestsAndLimits(t *testing.T) {
	for _, m := range variants(t) {
		for _, p := range m.templates() {
			for _, c := range containers(&p.spec.Spec) {
				where := p.where + " container " + c.Name
				if c.LivenessProbe == nil || c.ReadinessProbe == nil {
					t.Errorf("%s: needs both a liveness and a readiness probe", where)
				}
				for _, probe := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
					if probe == nil {
						continue
					}
					var port *intstr.IntOrString
					if probe.HTTPGet != nil {
						port = &probe.HTTPGet.Port
					} else if probe.TCPSocket != nil {
						port = &probe.TCPSocket.Port
					}
					if port != nil && !hasPort(&p.spec.Spec, *port) {
						t.Errorf("%s: a probe targets port %s, which no container declares", where, port)
					}
				}
				for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					req, hasReq := c.Resources.Requests[r]
					lim, hasLim := c.Resources.Limits[r]
					if !hasReq || !hasLim {
						t.Errorf("%s: needs a %s request and limit", where, r)
					} else if req.Cmp(lim) > 0 {
						t.Errorf("%s: %s request %s above its limit %s", where, r, req.String(), lim.String())
					}
				}
			}
		}
	}
}

func TestEveryPodMeetsRestrictedPodSecurity(t *testing.T) {
	eval, err := psapolicy.NewEvaluator(psapolicy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	restricted := psaapi.LevelVersion{Level: psaapi.LevelRestricted, Version: psaapi.LatestVersion()}
	for _, m := range variants(t) {
		for _, p := range m.templates() {
			res := psapolicy.AggregateCheckResults(eval.EvaluatePod(restricted, &p.spec.ObjectMeta, &p.spec.Spec))
			if !res.Allowed {
				t.Errorf("%s: violates PodSecurity %s: %s: %s", p.where, restricted, res.ForbiddenReason(), res.ForbiddenDetail())
			}
			// Beyond "restricted": nothing writes the image, and nothing needs the API.
			for _, c := range containers(&p.spec.Spec) {
				if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
					t.Errorf("%s container %s: needs readOnlyRootFilesystem: true", p.where, c.Name)
				}
			}
			if a := p.spec.Spec.AutomountServiceAccountToken; a == nil || *a {
				t.Errorf("%s: needs automountServiceAccountToken: false (no pod here calls the Kubernetes API)", p.where)
			}
		}
	}
}

func TestSelectorsAndReferencesMatch(t *testing.T) {
	for _, m := range variants(t) {
		for _, p := range m.templates() {
			sel, err := metav1.LabelSelectorAsSelector(p.selector)
			if err != nil || sel.Empty() || !sel.Matches(labels.Set(p.spec.Labels)) {
				t.Errorf("%s: selector %v does not match its pod template's labels %v (%v)", p.where, p.selector, p.spec.Labels, err)
			}
			if sa := p.spec.Spec.ServiceAccountName; sa != "" && !slices.ContainsFunc(m.serviceAccounts, func(s *corev1.ServiceAccount) bool { return s.Name == sa }) {
				t.Errorf("%s: ServiceAccount %q is not in the manifests", p.where, sa)
			}
		}
		for _, s := range m.services {
			pods := m.selected(s.Namespace, labels.SelectorFromSet(s.Spec.Selector))
			if len(s.Spec.Selector) == 0 || len(pods) == 0 {
				t.Errorf("%s: Service/%s selects no pod template (selector %v)", m.Name, s.Name, s.Spec.Selector)
			}
			for _, port := range s.Spec.Ports {
				for _, p := range pods {
					if !hasPort(&p.spec.Spec, port.TargetPort) {
						t.Errorf("%s: Service/%s port %s targets %s, which %s does not declare", m.Name, s.Name, port.Name, port.TargetPort.String(), p.where)
					}
				}
			}
		}
		for _, pdb := range m.pdbs {
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err != nil || sel.Empty() || len(m.selected(pdb.Namespace, sel)) == 0 {
				t.Errorf("%s: PodDisruptionBudget/%s selects no pod template", m.Name, pdb.Name)
			}
		}
		for _, np := range m.netpols {
			sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			pods := m.selected(np.Namespace, sel)
			if err != nil || sel.Empty() || len(pods) == 0 {
				t.Errorf("%s: NetworkPolicy/%s selects no pod template", m.Name, np.Name)
			}
			for _, rule := range np.Spec.Ingress {
				for _, port := range rule.Ports {
					for _, p := range pods {
						if port.Port != nil && !hasPort(&p.spec.Spec, *port.Port) {
							t.Errorf("%s: NetworkPolicy/%s admits port %s, which %s does not declare", m.Name, np.Name, port.Port.String(), p.where)
						}
					}
				}
			}
		}
		hasDeployment := func(name string) bool {
			return slices.ContainsFunc(m.deployments, func(d *appsv1.Deployment) bool { return d.Name == name })
		}
		for _, h := range m.hpas {
			if h.Spec.ScaleTargetRef.Kind != "Deployment" || !hasDeployment(h.Spec.ScaleTargetRef.Name) {
				t.Errorf("%s: HorizontalPodAutoscaler/%s scales %s/%s, not a Deployment of the manifests", m.Name, h.Name, h.Spec.ScaleTargetRef.Kind, h.Spec.ScaleTargetRef.Name)
			}
		}
		for _, u := range m.custom {
			switch u.GetKind() {
			case "ScaledObject":
				kind, _, _ := unstructured.NestedString(u.Object, "spec", "scaleTargetRef", "kind")
				name, _, _ := unstructured.NestedString(u.Object, "spec", "scaleTargetRef", "name")
				if (kind != "" && kind != "Deployment") || !hasDeployment(name) {
					t.Errorf("%s: ScaledObject/%s scales %s/%s, not a Deployment of the manifests", m.Name, u.GetName(), kind, name)
				}
			case "ServiceMonitor":
				want, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
				endpoints, _, _ := unstructured.NestedSlice(u.Object, "spec", "endpoints")
				var svcs []*corev1.Service
				for _, s := range m.services {
					if s.Namespace == u.GetNamespace() && len(want) > 0 && labels.SelectorFromSet(want).Matches(labels.Set(s.Labels)) {
						svcs = append(svcs, s)
					}
				}
				if len(svcs) == 0 {
					t.Errorf("%s: ServiceMonitor/%s selects no Service (matchLabels %v)", m.Name, u.GetName(), want)
				}
				for _, e := range endpoints {
					port, _, _ := unstructured.NestedString(e.(map[string]any), "port")
					for _, s := range svcs {
						if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == port }) {
							t.Errorf("%s: ServiceMonitor/%s scrapes port %q, which Service/%s does not name", m.Name, u.GetName(), port, s.Name)
						}
					}
				}
			}
		}
	}
}

func TestEveryVariableSetIsOneTheProgramReads(t *testing.T) {
	read := map[string]map[string]envVar{}
	for _, m := range variants(t) {
		for _, p := range m.templates() {
			for _, c := range containers(&p.spec.Spec) {
				prog := program(c)
				if prog == "" {
					continue // not our image: its own documentation rules
				}
				where := p.where + " container " + c.Name
				if _, err := os.Stat(filepath.Join("..", "..", "cmd", prog)); err != nil {
					t.Errorf("%s: runs %v, which is not a command of cmd/", where, c.Command)
					continue
				}
				if read[prog] == nil {
					read[prog] = programEnv(t, prog)
				}
				for name, value := range m.env(t, where, c) {
					v, ok := read[prog][name]
					switch {
					case goRuntimeEnv[name]:
					case !ok:
						t.Errorf("%s: sets %s, which cmd/%s never reads", where, name, prog)
					case strings.HasPrefix(value, "<"):
					default:
						if problem := v.checkValue(value); problem != "" {
							t.Errorf("%s: %s=%q: %s", where, name, value, problem)
						}
					}
				}
			}
		}
		// A ConfigMap's every key is read by every container taking it whole.
		for _, cm := range m.configMaps {
			used := false
			for _, p := range m.templates() {
				for _, c := range containers(&p.spec.Spec) {
					for _, ef := range c.EnvFrom {
						used = used || (ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == cm.Name)
					}
					for _, e := range c.Env {
						used = used || (e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil && e.ValueFrom.ConfigMapKeyRef.Name == cm.Name)
					}
				}
				for _, vol := range p.spec.Spec.Volumes {
					used = used || (vol.ConfigMap != nil && vol.ConfigMap.Name == cm.Name)
					if vol.Projected != nil {
						for _, src := range vol.Projected.Sources {
							used = used || (src.ConfigMap != nil && src.ConfigMap.Name == cm.Name)
						}
					}
				}
			}
			if !used {
				t.Errorf("%s: ConfigMap/%s is used by no container", m.Name, cm.Name)
			}
		}
	}
}

func TestSecretsAreOnlyReferencedAsFiles(t *testing.T) {
	for _, m := range variants(t) {
		for _, s := range m.secrets {
			// Only dev's copy of the sandbox's published credentials, and only
			// where PandaPon is the in-cluster sandbox.
			if m.Production || s.Labels[sandboxOnlyLabel] != "true" || s.Name != credentialsSecret {
				t.Errorf("%s: Secret/%s is inlined in the manifests: reference a Secret the operator creates instead", m.Name, s.Name)
				continue
			}
			for k, v := range s.Data {
				check, devOnly := devOnlyKeys[k]
				switch {
				case k == "access-secret":
					if string(v) != sandbox.DefaultAccessSecret {
						t.Errorf("%s: Secret/%s key %s holds something other than the sandbox's published secret", m.Name, s.Name, k)
					}
				case !devOnly:
					t.Errorf("%s: Secret/%s key %s: only access-secret and the dev-only keys %v may be generated", m.Name, s.Name, k, slices.Sorted(maps.Keys(devOnlyKeys)))
				case !strings.HasPrefix(string(v), devOnlyPrefix):
					t.Errorf("%s: Secret/%s key %s: a published value must start with %q", m.Name, s.Name, k, devOnlyPrefix)
				default:
					if err := check(string(v)); err != nil {
						t.Errorf("%s: Secret/%s key %s: publisher serve would refuse it: %v", m.Name, s.Name, k, err)
					}
				}
			}
		}
		for _, cm := range m.configMaps {
			for k := range cm.Data {
				if strings.Contains(k, "SECRET") && !strings.HasSuffix(k, "_FILE") {
					t.Errorf("%s: ConfigMap/%s holds %s: a secret in a ConfigMap", m.Name, cm.Name, k)
				}
			}
		}
		for _, p := range m.templates() {
			for _, c := range containers(&p.spec.Spec) {
				where := p.where + " container " + c.Name
				env := m.env(t, where, c)
				if _, ok := env["PANDAPON_ACCESS_SECRET"]; ok {
					t.Errorf("%s: sets PANDAPON_ACCESS_SECRET; use PANDAPON_ACCESS_SECRET_FILE and the mounted Secret", where)
				}
				if program(c) == "consumer" {
					if _, ok := env["PANDAPON_ACCESS_SECRET_FILE"]; !ok {
						t.Errorf("%s: the consumer needs PANDAPON_ACCESS_SECRET_FILE", where)
					}
					if base := env["PANDAPON_BASE_URL"]; slices.ContainsFunc(m.secrets, func(s *corev1.Secret) bool { return s.Labels[sandboxOnlyLabel] == "true" }) && strings.HasPrefix(base, "https://api.pandapon.com") {
						t.Errorf("%s: sends the sandbox's credentials to %s", where, base)
					}
				}
				for name, key := range secretFiles {
					file, ok := env[name]
					if !ok {
						continue
					}
					if _, problem := secretFile(&p.spec.Spec, c, file, key); problem != "" {
						t.Errorf("%s: %s=%s: %s", where, name, file, problem)
					}
					// Where the manifests generate the Secret, the key must be
					// in it: the program refuses a variable naming a missing file.
					for _, s := range m.secrets {
						if _, has := s.Data[key]; s.Name == credentialsSecret && s.Namespace == p.namespace && !has {
							t.Errorf("%s: sets %s, but the generated Secret/%s has no key %s", where, name, s.Name, key)
						}
					}
				}
			}
		}
	}
}

// secretFile says what is wrong with file as key `key` of the credentials
// Secret mounted into c, or "". key "" accepts any key. optional says that
// the kubelet starts the pod without the key (the file is then missing).
func secretFile(spec *corev1.PodSpec, c corev1.Container, file, key string) (optional bool, problem string) {
	for _, vm := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(path.Clean(file), path.Clean(vm.MountPath)+"/")
		if !ok || vm.SubPath != "" {
			continue
		}
		for _, vol := range spec.Volumes {
			if vol.Name != vm.Name {
				continue
			}
			// A Secret volume, or the Secret sources of a projected one.
			type source struct {
				name     string
				items    []corev1.KeyToPath
				optional *bool
			}
			var sources []source
			switch {
			case vol.Secret != nil:
				sources = append(sources, source{vol.Secret.SecretName, vol.Secret.Items, vol.Secret.Optional})
			case vol.Projected != nil:
				for _, src := range vol.Projected.Sources {
					if src.Secret != nil {
						sources = append(sources, source{src.Secret.Name, src.Secret.Items, src.Secret.Optional})
					}
				}
			}
			for _, src := range sources {
				opt := src.optional != nil && *src.optional
				if src.name != credentialsSecret {
					continue
				}
				if len(src.items) == 0 {
					if rel != key && key != "" {
						return opt, "the file must be the Secret's key " + key
					}
					return opt, ""
				}
				for _, it := range src.items {
					if path.Clean(it.Path) == rel && (key == "" || it.Key == key) {
						return opt, ""
					}
				}
			}
			if len(sources) == 0 {
				return false, "not in a volume of Secret " + credentialsSecret
			}
			if key == "" {
				return false, "the volume projects no key of Secret " + credentialsSecret + " there"
			}
			return false, "the volume does not project key " + key + " of Secret " + credentialsSecret + " there"
		}
	}
	return false, "no volume is mounted at " + path.Dir(file)
}

func TestGracePeriodOutlastsTheDrain(t *testing.T) {
	checked := map[string]int{}
	for _, m := range variants(t) {
		for _, p := range m.templates() {
			for _, c := range p.spec.Spec.Containers {
				prog := program(c)
				if prog != "consumer" && !isServe(c) {
					continue
				}
				where := p.where + " container " + c.Name
				drain := programEnv(t, prog)["PANDABRIDGE_DRAIN_TIMEOUT"].Default
				if v, ok := m.env(t, where, c)["PANDABRIDGE_DRAIN_TIMEOUT"]; ok {
					drain = v
				}
				d, err := time.ParseDuration(drain)
				if err != nil {
					t.Fatalf("%s: PANDABRIDGE_DRAIN_TIMEOUT=%q: %v", where, drain, err)
				}
				// The kubelet counts the grace period from the start of
				// preStop; SIGTERM comes after it.
				var preStop time.Duration
				if h := c.Lifecycle; h != nil && h.PreStop != nil {
					switch {
					case h.PreStop.Sleep != nil:
						preStop = time.Duration(h.PreStop.Sleep.Seconds) * time.Second
					default:
						t.Errorf("%s: a preStop hook other than sleep: its duration cannot be checked", where)
					}
				}
				grace := 30 * time.Second // Kubernetes' default
				if g := p.spec.Spec.TerminationGracePeriodSeconds; g != nil {
					grace = time.Duration(*g) * time.Second
				}
				if grace <= preStop+d+shutdownAfterDrain {
					t.Errorf("%s: terminationGracePeriodSeconds %s must exceed preStop %s + PANDABRIDGE_DRAIN_TIMEOUT %s + %s, or work in flight is killed mid-way", where, grace, preStop, d, shutdownAfterDrain)
				}
				checked[prog]++
			}
		}
	}
	for _, prog := range []string{"consumer", "publisher"} {
		if checked[prog] == 0 {
			t.Errorf("no %s container checked: the check would pass vacuously", prog)
		}
	}
}

func TestImagesArePinned(t *testing.T) {
	for _, m := range variants(t) {
		for _, p := range m.templates() {
			for _, c := range containers(&p.spec.Spec) {
				where := p.where + " container " + c.Name
				ref := c.Image[strings.LastIndex(c.Image, "/")+1:]
				switch {
				case m.Production && program(c) != "" && !regexp.MustCompile(`@sha256:[0-9a-f]{64}$`).MatchString(c.Image):
					t.Errorf("%s: production runs %s; pin it by digest", where, c.Image)
				case !strings.ContainsAny(ref, ":@") || strings.HasSuffix(ref, ":latest"):
					t.Errorf("%s: image %s has no version", where, c.Image)
				}
			}
		}
	}
}

func TestProductionIsHighlyAvailable(t *testing.T) {
	for _, m := range variants(t) {
		if !m.Production {
			continue
		}
		minimum := map[string]int64{} // Deployment → autoscaler minimum
		for _, h := range m.hpas {
			if h.Spec.MinReplicas != nil {
				minimum[h.Spec.ScaleTargetRef.Name] = int64(*h.Spec.MinReplicas)
			} else {
				minimum[h.Spec.ScaleTargetRef.Name] = 1
			}
		}
		for _, u := range m.custom {
			if u.GetKind() == "ScaledObject" {
				name, _, _ := unstructured.NestedString(u.Object, "spec", "scaleTargetRef", "name")
				n, found, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "minReplicaCount")
				if !found {
					n = 0.0 // KEDA's default: scale to zero
				}
				f, ok := n.(float64) // JSON numbers
				if !ok {
					t.Fatalf("%s: ScaledObject/%s minReplicaCount %v is not a number", m.Name, u.GetName(), n)
				}
				minimum[name] = int64(f)
			}
		}
		for _, d := range m.deployments {
			where := m.Name + ": Deployment/" + d.Name
			if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
				t.Errorf("%s: needs at least 2 replicas", where)
			}
			if n, ok := minimum[d.Name]; ok && n < 2 {
				t.Errorf("%s: its autoscaler may go down to %d replicas; production needs at least 2", where, n)
			}
			if a := d.Spec.Template.Spec.Affinity; a == nil || a.PodAntiAffinity == nil {
				t.Errorf("%s: needs pod anti-affinity so replicas do not share a node", where)
			}
			if !slices.ContainsFunc(m.pdbs, func(pdb *policyv1.PodDisruptionBudget) bool {
				sel, _ := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
				return sel.Matches(labels.Set(d.Spec.Template.Labels))
			}) {
				t.Errorf("%s: needs a PodDisruptionBudget", where)
			}
		}
	}
}

func TestNetworkPoliciesAdmitOnlyWhatIsNeeded(t *testing.T) {
	for _, m := range variants(t) {
		for _, p := range m.templates() {
			if p.spec.Labels["app.kubernetes.io/name"] != "pandabridge" {
				continue
			}
			var ingress, egress []*networkingv1.NetworkPolicy
			for _, np := range m.netpols {
				sel, _ := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
				if np.Namespace != p.namespace || !sel.Matches(labels.Set(p.spec.Labels)) {
					continue
				}
				if slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
					ingress = append(ingress, np)
				}
				if slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
					egress = append(egress, np)
				}
			}
			if len(ingress) == 0 || len(egress) == 0 {
				t.Errorf("%s: needs a NetworkPolicy restricting both ingress and egress", p.where)
				continue
			}
			for _, c := range p.spec.Spec.Containers {
				for _, port := range c.Ports {
					if !admits(ingress, func(np *networkingv1.NetworkPolicy) [][]networkingv1.NetworkPolicyPort {
						var out [][]networkingv1.NetworkPolicyPort
						for _, r := range np.Spec.Ingress {
							out = append(out, r.Ports)
						}
						return out
					}, port.Name, port.ContainerPort, corev1.ProtocolTCP) {
						t.Errorf("%s: port %s (%d) is not admitted by any NetworkPolicy: probes and scrapes would fail", p.where, port.Name, port.ContainerPort)
					}
				}
				if program(c) == "" {
					continue
				}
				egressPorts := func(np *networkingv1.NetworkPolicy) [][]networkingv1.NetworkPolicyPort {
					var out [][]networkingv1.NetworkPolicyPort
					for _, r := range np.Spec.Egress {
						out = append(out, r.Ports)
					}
					return out
				}
				if !admits(egress, egressPorts, "", 53, corev1.ProtocolUDP) {
					t.Errorf("%s: egress to DNS (53/UDP) is not allowed", p.where)
				}
				env := m.env(t, p.where, c)
				for _, name := range []string{"NATS_URL", "PANDAPON_BASE_URL"} {
					for _, raw := range strings.Split(env[name], ",") {
						if raw == "" {
							continue
						}
						port, err := urlPort(raw)
						if err != nil {
							t.Errorf("%s: %s=%q: %v", p.where, name, raw, err)
							continue
						}
						if !admits(egress, egressPorts, "", port, corev1.ProtocolTCP) {
							t.Errorf("%s: egress to %s (%s, port %d) is not allowed", p.where, name, raw, port)
						}
					}
				}
			}
		}
	}
}

// admits says whether one of the rules of nps allows the port.
func admits(nps []*networkingv1.NetworkPolicy, rules func(*networkingv1.NetworkPolicy) [][]networkingv1.NetworkPolicyPort, name string, number int32, proto corev1.Protocol) bool {
	for _, np := range nps {
		for _, ports := range rules(np) {
			if len(ports) == 0 {
				return true
			}
			for _, p := range ports {
				pr := corev1.ProtocolTCP
				if p.Protocol != nil {
					pr = *p.Protocol
				}
				if pr != proto {
					continue
				}
				switch {
				case p.Port == nil:
					return true
				case p.Port.Type == intstr.String && p.Port.StrVal == name && name != "":
					return true
				case p.Port.Type == intstr.Int && (p.Port.IntVal == number || (p.EndPort != nil && p.Port.IntVal <= number && number <= *p.EndPort)):
					return true
				}
			}
		}
	}
	return false
}

func urlPort(raw string) (int32, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return 0, err
	}
	if p := u.Port(); p != "" {
		var n int32
		_, err := fmt.Sscan(p, &n)
		return n, err
	}
	switch u.Scheme {
	case "nats", "tls":
		return 4222, nil
	case "https":
		return 443, nil
	case "http":
		return 80, nil
	}
	return 0, fmt.Errorf("no port for scheme %q", u.Scheme)
}

func TestDevNATSIsTheReleaseTheTestsUse(t *testing.T) {
	gomod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	match := regexp.MustCompile(`github\.com/nats-io/nats-server/v2 v(\S+)`).FindSubmatch(gomod)
	if match == nil {
		t.Fatal("go.mod does not require github.com/nats-io/nats-server/v2")
	}
	for _, m := range variants(t) {
		for _, p := range m.templates() {
			for _, c := range p.spec.Spec.Containers {
				if strings.HasPrefix(c.Image, "nats:") && c.Image != "nats:"+string(match[1]) {
					t.Errorf("%s: runs %s, but the project is tested against nats-server %s (go.mod)", p.where, c.Image, match[1])
				}
			}
		}
	}
}

func TestDockerfileBuildsEveryCommandTheManifestsRun(t *testing.T) {
	dockerfile, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	copied := map[string]bool{}
	for _, line := range strings.Split(string(dockerfile), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && strings.EqualFold(f[0], "COPY") {
			copied[f[len(f)-1]] = true
		}
	}
	for _, m := range variants(t) {
		for _, p := range m.templates() {
			for _, c := range containers(&p.spec.Spec) {
				if program(c) != "" && (len(c.Command) == 0 || !copied[c.Command[0]]) {
					t.Errorf("%s container %s: runs %v, which the Dockerfile does not COPY into the image", p.where, c.Name, c.Command)
				}
				// The image's consumer is built with -tags=nodev: it has no -dev mode.
				for _, arg := range append(append([]string{}, c.Command...), c.Args...) {
					if strings.HasPrefix(arg, "-dev") || strings.HasPrefix(arg, "--dev") {
						t.Errorf("%s container %s: passes %s, but the image's consumer is built without the -dev mode", p.where, c.Name, arg)
					}
				}
			}
		}
	}
}
