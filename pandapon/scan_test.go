package pandapon

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math/bits"
	"math/rand/v2"
	"strings"
	"testing"
)

// FuzzScanEnvelopeMatchesEncodingJSON holds the single-pass scanner to
// encoding/json's verdicts: the same validity for any input, and for a
// valid object the same envelope members as decoding with encoding/json.
func FuzzScanEnvelopeMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		okQuery, string(seedQueryData), `{"code":200,"msg":"SUCCESS","data":{"a":[1,2.5e-3,-0,true,false,null,"\u00e9\n"]}}`,
		`{"code":"200","requestId":7,"developId":null,"data":null}`, `[1,2]`, `"str"`, `-`, `01`, `1.`, `1e`, `{"a":1,}`,
		`{"a" 1}`, `{"code":200}x`, "{\"msg\":\"a\tb\"}", `{"msg":"\x"}`, `{"msg":"\u12"}`, `  {"data" : { } }  `,
		`{"code":200,"code":404}`, `{"Code":200}`, "\xff", `{"msg":"\xff"}`, `[[[[]]]]`, ``, ` `, `nul`, `true`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, isObject, err := scanEnvelope(b)
		if valid := json.Valid(b); valid != (err == nil) {
			t.Fatalf("scanner says valid=%v (%v), encoding/json says %v, for %q", err == nil, err, valid, b)
		}
		if err != nil {
			return
		}
		var generic any
		_ = json.Unmarshal(b, &generic)
		_, ok := generic.(map[string]any)
		if ok != isObject {
			t.Fatalf("isObject=%v for %q", isObject, b)
		}
		if !ok {
			return
		}
		// encoding/json matches struct fields case-insensitively; the
		// scanner does not (PandaPon's keys are exact). Compare only inputs
		// where that cannot matter.
		var raw map[string]json.RawMessage
		if json.Unmarshal(b, &raw) != nil {
			return
		}
		for k := range raw {
			for _, name := range []string{"requestId", "code", "developId", "msg", "data"} {
				if k != name && strings.EqualFold(k, name) {
					return
				}
			}
		}
		for name, got := range map[string][]byte{"requestId": m.requestID, "code": m.code, "developId": m.developID, "msg": m.msg, "data": m.data} {
			want, present := raw[name]
			if present != (got != nil) || (present && !bytes.Equal(bytes.TrimSpace(want), got)) {
				// Duplicate keys: RawMessage keeps the last, as the scanner does.
				t.Fatalf("member %s: scanner %q, encoding/json %q (present %v) in %q", name, got, want, present, b)
			}
		}
	})
}

func TestDecodeEnvelopeKeepsDataAsASubsliceOfTheBody(t *testing.T) {
	body := []byte(`{"requestId":"r-1","code":200,"developId":3455555555555552,"msg":"成功","data":{"x":12.50}}`)
	env, err := decodeEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	if string(env.Data) != `{"x":12.50}` || env.Msg != "成功" || env.RequestID.Value != "r-1" || env.DevelopID.Value != "3455555555555552" || env.Code.Value != 200 {
		t.Errorf("envelope %+v", env)
	}
	for _, bad := range []string{`{"code":200,"msg":5}`, `{"code":"x"}`, `{"msg":"ok"}`, `[200]`, `{"code":200,"requestId":{}}`} {
		if _, err := decodeEnvelope([]byte(bad)); err == nil {
			t.Errorf("decodeEnvelope(%s) succeeded", bad)
		}
	}
}

// BenchmarkScanEnvelope: the scanner alone over the seed page's query
// answer (most of its bytes are in strings).
func BenchmarkScanEnvelope(b *testing.B) {
	body := []byte(`{"requestId":null,"code":200,"developId":null,"msg":"成功","data":` + string(seedQueryData) + `}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, _, err := scanEnvelope(body); err != nil {
			b.Fatal(err)
		}
	}
}

// TestStringSpecialsFindsTheFirstSpecialByte: the word-at-a-time skip of
// scanner.str stops exactly at the first '"', '\\' or control character,
// whatever the bytes around it (multi-byte UTF-8, DEL, other specials).
func TestStringSpecialsFindsTheFirstSpecialByte(t *testing.T) {
	first := func(w [8]byte) int {
		for i, c := range w {
			if c == '"' || c == '\\' || c < 0x20 {
				return i
			}
		}
		return 8
	}
	check := func(w [8]byte) {
		t.Helper()
		got := 8
		if m := stringSpecials(binary.LittleEndian.Uint64(w[:])); m != 0 {
			got = bits.TrailingZeros64(m) >> 3
		}
		if want := first(w); got != want {
			t.Fatalf("stringSpecials(% x): first special at %d, want %d", w, got, want)
		}
	}
	fillers := []byte{0x20, 0x21, 'a', '#', ']', 0x5d, 0x7f, 0x80, 0xe6, 0xff}
	specials := []byte{'"', '\\'}
	for c := byte(0); c < 0x20; c++ {
		specials = append(specials, c)
	}
	for _, f := range fillers {
		for pos := 0; pos < 8; pos++ {
			for _, sp := range specials {
				var w [8]byte
				for i := range w {
					w[i] = f
				}
				w[pos] = sp
				check(w)
				for _, later := range specials { // a second special after the first
					if pos < 7 {
						w[7] = later
						check(w)
					}
				}
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		check(w)
	}
}
