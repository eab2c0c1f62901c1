package events

import (
	"sync/atomic"

	"github.com/cloudevents/sdk-go/v2/types"
)

// uriRefCache parses URI-references, remembering the last one: the inputs
// of one producer share their source, and every output has the consumer's,
// so the hot path parses a source once instead of once per event, and
// formats it (sourceText) once instead of at every check and encoding. It
// is safe for concurrent use; a different text replaces the remembered one.
type uriRefCache struct {
	last atomic.Pointer[parsedURIRef]
}

type parsedURIRef struct {
	text      string       // as parsed
	ref       types.URIRef // what types.ParseURIRef(text) gave
	formatted string       // ref.String(), which may differ from text
}

// parse returns what types.ParseURIRef(s) returns, as a value, and false
// where that is nil. The value shares nothing mutable with the cache: a
// url.URL's only pointer, User, is immutable.
func (c *uriRefCache) parse(s string) (types.URIRef, bool) {
	if p := c.last.Load(); p != nil && p.text == s {
		return p.ref, true
	}
	u := types.ParseURIRef(s)
	if u == nil {
		return types.URIRef{}, false
	}
	c.last.Store(&parsedURIRef{text: s, ref: *u, formatted: u.String()})
	return *u, true
}

// format returns u.String() if u is the remembered reference.
func (c *uriRefCache) format(u types.URIRef) (string, bool) {
	if p := c.last.Load(); p != nil && p.ref == u {
		return p.formatted, true
	}
	return "", false
}

// sourceText returns u.String(), from the caches when u is the source they
// remember. url.URL is compared field by field; its one pointer, User, is
// then the one parse handed out with the cached value, and a url.Userinfo is
// not changed in place by anything in this module (nor meant to be: its
// fields are unexported).
func sourceText(u types.URIRef) string {
	if s, ok := inputSources.format(u); ok {
		return s
	}
	if s, ok := outputSources.format(u); ok {
		return s
	}
	return u.String()
}

// inputSources and outputSources are apart so that the two alternating on
// the hot path do not evict each other.
var inputSources, outputSources uriRefCache
