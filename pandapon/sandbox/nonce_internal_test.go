package sandbox

import (
	"strconv"
	"testing"
	"time"

	"github.com/pandabridge/pandabridge/pandapon"
)

func TestNonceStoreRemembersForTheSkewWindowAndForgetsAfter(t *testing.T) {
	var n nonceStore
	t0 := time.UnixMilli(1715669977082)
	if !n.use("a", t0) {
		t.Fatal("first use refused")
	}
	// Other traffic keeps arriving; "a" must stay refused for the whole window.
	for s := time.Duration(0); s <= pandapon.MaxClockSkew; s += 30 * time.Second {
		n.use("filler"+strconv.Itoa(int(s)), t0.Add(s))
		if n.use("a", t0.Add(s)) {
			t.Fatalf("nonce reused %v later was accepted", s)
		}
	}
	// Two windows later, everything but the newest generation is gone.
	later := t0.Add(2*pandapon.MaxClockSkew + time.Second)
	n.use("b", later)
	n.use("c", later.Add(pandapon.MaxClockSkew+time.Second))
	if got := n.len(); got != 2 {
		t.Errorf("store holds %d nonces after two idle windows, want 2 (b and c): memory is not bounded", got)
	}
	if !n.use("a", later.Add(pandapon.MaxClockSkew+time.Second)) {
		t.Error("nonce still refused long after the window")
	}
}
