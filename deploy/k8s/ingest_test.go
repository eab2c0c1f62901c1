package k8s_test

import (
	"bytes"
	"encoding/json"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/pandabridge/pandabridge/delivery"
)

// isServe says whether c runs `publisher serve` (components/ingest).
func isServe(c corev1.Container) bool {
	return program(c) == "publisher" && slices.Contains(append(slices.Clone(c.Command[1:]), c.Args...), "serve")
}

// serveContainers are the `publisher serve` containers of m.
func (m *manifests) serveContainers() (out []struct {
	podTemplate
	corev1.Container
}) {
	for _, p := range m.templates() {
		for _, c := range p.spec.Spec.Containers {
			if isServe(c) {
				out = append(out, struct {
					podTemplate
					corev1.Container
				}{p, c})
			}
		}
	}
	return out
}

// Both overlays run the ingest: a variant without it would mean a test
// below checks nothing.
func TestBothOverlaysRunTheIngest(t *testing.T) {
	for _, m := range variants(t) {
		if len(m.serveContainers()) == 0 {
			t.Errorf("%s: runs no `publisher serve` (components/ingest)", m.Name)
		}
	}
}

// serve refuses to start without an authentication source of POST /events
// unless PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED=true. Production never sets
// that, and has a source the kubelet will not start the pod without.
func TestServeIsAlwaysAuthenticated(t *testing.T) {
	for _, m := range variants(t) {
		for _, sc := range m.serveContainers() {
			where := sc.where + " container " + sc.Name
			env := m.env(t, where, sc.Container)
			if v, ok := env["PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED"]; ok {
				if b, err := strconv.ParseBool(v); err != nil || b {
					t.Errorf("%s: PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED=%s: POST /events must never accept anyone in the repository's manifests", where, v)
				}
			}
			var sources []string
			for _, name := range []string{"PANDABRIDGE_INGEST_TOKENS_FILE", "PANDABRIDGE_INGEST_WEBHOOK_SECRETS_FILE"} {
				file, ok := env[name]
				if !ok {
					continue
				}
				optional, problem := secretFile(&sc.spec.Spec, sc.Container, file, secretFiles[name])
				if problem == "" && !optional {
					sources = append(sources, name)
				}
			}
			if len(sources) == 0 {
				t.Errorf("%s: neither PANDABRIDGE_INGEST_TOKENS_FILE nor PANDABRIDGE_INGEST_WEBHOOK_SECRETS_FILE names a key the Secret volume requires: "+
					"serve would start only with PANDABRIDGE_INGEST_ALLOW_UNAUTHENTICATED", where)
			}
		}
	}
}

// sharedWithConsumer are the variables the ingest and the consumer must agree
// on: the same NATS, the same subjects, and streams created the same way by
// whichever starts first.
var sharedWithConsumer = []string{
	"NATS_URL", "NATS_CREDS", "PANDABRIDGE_SUBJECT_PREFIX",
	"PANDABRIDGE_STREAM_REPLICAS", "PANDABRIDGE_STREAM_MAX_AGE", "PANDABRIDGE_DUPLICATE_WINDOW",
}

func TestServeAndConsumerAgreeOnNATSAndStreams(t *testing.T) {
	consumerVars, publisherVars := programEnv(t, "consumer"), programEnv(t, "publisher")
	for _, name := range sharedWithConsumer {
		if _, ok := publisherVars[name]; !ok {
			t.Errorf("cmd/publisher does not read %s", name)
		}
	}
	for _, m := range variants(t) {
		for _, sc := range m.serveContainers() {
			where := sc.where + " container " + sc.Name
			serve := m.env(t, where, sc.Container)
			consumers := 0
			for _, p := range m.templates() {
				if p.namespace != sc.namespace {
					continue
				}
				for _, c := range p.spec.Spec.Containers {
					if program(c) != "consumer" {
						continue
					}
					consumers++
					cons := m.env(t, p.where, c)
					for _, name := range sharedWithConsumer {
						s, sok := serve[name]
						if !sok {
							s = publisherVars[name].Default
						}
						v, cok := cons[name]
						if !cok {
							v = consumerVars[name].Default
						}
						if s != v {
							t.Errorf("%s: %s=%q (%s), but %s has %q (%s)", where, name, s, setOrDefault(sok), p.where, v, setOrDefault(cok))
						}
					}
					// Both read the consumer's ConfigMap: the same key, not a copy.
					for _, name := range sharedWithConsumer {
						ref := configMapKeyRef(sc.Container, name)
						if ref == nil || ref.Key != name || !slices.ContainsFunc(c.EnvFrom, func(ef corev1.EnvFromSource) bool {
							return ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == ref.Name
						}) {
							t.Errorf("%s: %s must come from the key %s of the ConfigMap that %s takes whole", where, name, name, p.where)
						}
					}
				}
			}
			if consumers == 0 {
				t.Errorf("%s: no consumer in namespace %s to agree with", where, sc.namespace)
			}
		}
	}
}

func setOrDefault(set bool) string {
	if set {
		return "set"
	}
	return "the program's default"
}

func configMapKeyRef(c corev1.Container, name string) *corev1.ConfigMapKeySelector {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil {
			return e.ValueFrom.ConfigMapKeyRef
		}
	}
	return nil
}

// PANDABRIDGE_INGEST_ADDR listens on the port the probes, Service and
// NetworkPolicy use.
func TestServeListensOnItsDeclaredPort(t *testing.T) {
	publisherVars := programEnv(t, "publisher")
	for _, m := range variants(t) {
		for _, sc := range m.serveContainers() {
			where := sc.where + " container " + sc.Name
			addr, ok := m.env(t, where, sc.Container)["PANDABRIDGE_INGEST_ADDR"]
			if !ok {
				addr = publisherVars["PANDABRIDGE_INGEST_ADDR"].Default
			}
			_, port, err := net.SplitHostPort(addr)
			n, perr := strconv.Atoi(port)
			if err != nil || perr != nil {
				t.Errorf("%s: PANDABRIDGE_INGEST_ADDR=%q: not host:port", where, addr)
				continue
			}
			if !slices.ContainsFunc(sc.Ports, func(p corev1.ContainerPort) bool { return int(p.ContainerPort) == n }) {
				t.Errorf("%s: PANDABRIDGE_INGEST_ADDR=%q, but the container declares no port %d", where, addr, n)
			}
		}
	}
}

// The webhook targets file is in a mounted ConfigMap of the manifests, is
// one the program accepts, and every target's signing secret and URL are
// reachable: secretFile is a key of the credentials Secret, and the
// NetworkPolicy admits the URL's port.
func TestWebhookTargetsFile(t *testing.T) {
	for _, m := range variants(t) {
		for _, sc := range m.serveContainers() {
			where := sc.where + " container " + sc.Name
			env := m.env(t, where, sc.Container)
			file, ok := env["PANDABRIDGE_WEBHOOK_TARGETS_FILE"]
			if !ok {
				continue
			}
			content, problem := m.configMapFile(&sc.spec.Spec, sc.Container, file)
			if problem != "" {
				t.Errorf("%s: PANDABRIDGE_WEBHOOK_TARGETS_FILE=%s: %s", where, file, problem)
				continue
			}
			// As delivery.LoadTargets decodes it, without reading the secrets.
			dec := json.NewDecoder(bytes.NewReader([]byte(content)))
			dec.DisallowUnknownFields()
			var targets []delivery.Target
			if err := dec.Decode(&targets); err != nil || targets == nil {
				t.Errorf("%s: %s: not a JSON array of targets: %v", where, file, err)
				continue
			}
			if err := delivery.ValidateTargets(targets); err != nil {
				t.Errorf("%s: %s: %v", where, file, err)
			}
			egress := m.egressOf(sc.podTemplate)
			for _, tg := range targets {
				if _, problem := secretFile(&sc.spec.Spec, sc.Container, tg.SecretFile, ""); problem != "" {
					t.Errorf("%s: webhook target %q: secretFile %s: %s", where, tg.Name, tg.SecretFile, problem)
				}
				if port, err := urlPort(tg.URL); err == nil && !admits(egress, egressRules, "", port, corev1.ProtocolTCP) {
					t.Errorf("%s: webhook target %q: egress to port %d is not allowed", where, tg.Name, port)
				}
			}
			// Targets are added by operators: HTTPS must be open already.
			if !admits(egress, egressRules, "", 443, corev1.ProtocolTCP) {
				t.Errorf("%s: egress to HTTPS (443) for webhook targets is not allowed", where)
			}
		}
	}
}

// configMapFile returns the content of file, mounted into c from a ConfigMap
// of the manifests, or says what is wrong.
func (m *manifests) configMapFile(spec *corev1.PodSpec, c corev1.Container, file string) (string, string) {
	for _, vm := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(path.Clean(file), path.Clean(vm.MountPath)+"/")
		if !ok || vm.SubPath != "" {
			continue
		}
		for _, vol := range spec.Volumes {
			if vol.Name != vm.Name {
				continue
			}
			if vol.ConfigMap == nil {
				return "", "volume " + vol.Name + " is not a ConfigMap"
			}
			cm := m.configMap(vol.ConfigMap.Name)
			if cm == nil {
				return "", "ConfigMap " + vol.ConfigMap.Name + " is not in the manifests"
			}
			key := rel
			if len(vol.ConfigMap.Items) > 0 {
				key = ""
				for _, it := range vol.ConfigMap.Items {
					if path.Clean(it.Path) == rel {
						key = it.Key
					}
				}
			}
			content, ok := cm.Data[key]
			if !ok {
				return "", "ConfigMap " + cm.Name + " has no key for " + rel
			}
			return content, ""
		}
	}
	return "", "no volume is mounted at " + path.Dir(file)
}

// egressOf returns the NetworkPolicies restricting p's egress.
func (m *manifests) egressOf(p podTemplate) []*networkingv1.NetworkPolicy {
	var out []*networkingv1.NetworkPolicy
	for _, np := range m.netpols {
		sel, _ := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if np.Namespace == p.namespace && sel.Matches(labels.Set(p.spec.Labels)) && slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			out = append(out, np)
		}
	}
	return out
}

func egressRules(np *networkingv1.NetworkPolicy) [][]networkingv1.NetworkPolicyPort {
	var out [][]networkingv1.NetworkPolicyPort
	for _, r := range np.Spec.Egress {
		out = append(out, r.Ports)
	}
	return out
}
