package events

import (
	"sync/atomic"

	"github.com/cloudevents/sdk-go/v2/types"
)

// uriRefCache parses URI-references, remembering the last one: the inputs
// of one producer share their source, and every output has the consumer's,
// so the hot path parses a source once instead of once per event. It is
// safe for concurrent use; a different text replaces the remembered one.
type uriRefCache struct {
	last atomic.Pointer[parsedURIRef]
}

type parsedURIRef struct {
	text string
	ref  types.URIRef
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
	c.last.Store(&parsedURIRef{text: s, ref: *u})
	return *u, true
}

// inputSources and outputSources are apart so that the two alternating on
// the hot path do not evict each other.
var inputSources, outputSources uriRefCache
