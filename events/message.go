package events

import (
	"bytes"
	"context"
	"strings"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/nats-io/nats.go"
)

// specs are sdk-go's attribute tables with our header prefix.
var specs = spec.WithPrefix(HeaderPrefix)

// Message adapts a NATS message to sdk-go's binding.Message, so that sdk-go's
// own machinery (binding.ToEvent, binding.Write, transformers) can read what
// EncodeNATS writes. It follows the same header conventions as DecodeNATS:
// binary mode when a ce-specversion header names a version sdk-go knows,
// otherwise structured mode when Content-Type is
// application/cloudevents+json, otherwise binding.EncodingUnknown. It can be
// read any number of times; Finish does nothing (acknowledging the NATS
// message is the caller's business).
//
// DecodeNATS is the checked, cheaper path this package uses itself; Message
// is for interoperability with code that wants sdk-go's machinery. Do not
// feed it untrusted structured-mode payloads: sdk-go v2.16.2's JSON reader
// panics on some (for example {"data_base64":1,"specversion":"1.0"}), where
// DecodeNATS returns an error.
type Message struct {
	header  nats.Header
	data    []byte
	version spec.Version
	format  format.Format
}

var (
	_ binding.Message               = (*Message)(nil)
	_ binding.MessageMetadataReader = (*Message)(nil)
)

// NewMessage wraps the headers and payload of a NATS message (a *nats.Msg's
// Header and Data, or a jetstream.Msg's Headers() and Data()).
func NewMessage(h nats.Header, data []byte) binding.Message {
	m := &Message{header: h, data: data}
	if v, ok := headerValue(h, headerSpecVersion); ok {
		m.version = specs.Version(v)
	}
	if m.version == nil {
		if ct, ok := headerValue(h, HeaderContentType); ok && mediaType(ct) == ContentTypeStructured {
			m.format = format.JSON
		}
	}
	return m
}

// ReadEncoding implements binding.MessageReader.
func (m *Message) ReadEncoding() binding.Encoding {
	switch {
	case m.version != nil:
		return binding.EncodingBinary
	case m.format != nil:
		return binding.EncodingStructured
	}
	return binding.EncodingUnknown
}

// ReadStructured implements binding.MessageReader.
func (m *Message) ReadStructured(ctx context.Context, w binding.StructuredWriter) error {
	if m.format == nil {
		return binding.ErrNotStructured
	}
	return w.SetStructuredEvent(ctx, m.format, bytes.NewReader(m.data))
}

// ReadBinary implements binding.MessageReader. Content-Type is written last,
// so that it wins over a ce-datacontenttype header as in DecodeNATS.
func (m *Message) ReadBinary(_ context.Context, w binding.BinaryWriter) error {
	if m.version == nil {
		return binding.ErrNotBinary
	}
	var contentType *string
	for k, vs := range m.header {
		if len(vs) == 0 {
			continue
		}
		if len(k) < len(HeaderPrefix) || !strings.EqualFold(k[:len(HeaderPrefix)], HeaderPrefix) {
			if strings.EqualFold(k, HeaderContentType) {
				contentType = &vs[0]
			}
			continue
		}
		name := lowerASCII(k[len(HeaderPrefix):])
		var err error
		if attr := m.version.Attribute(HeaderPrefix + name); attr != nil {
			err = w.SetAttribute(attr, vs[0])
		} else {
			err = w.SetExtension(name, vs[0])
		}
		if err != nil {
			return err
		}
	}
	if contentType != nil {
		if err := w.SetAttribute(m.version.AttributeFromKind(spec.DataContentType), *contentType); err != nil {
			return err
		}
	}
	if len(m.data) > 0 {
		return w.SetData(bytes.NewBuffer(m.data))
	}
	return nil
}

// GetAttribute implements binding.MessageMetadataReader.
func (m *Message) GetAttribute(k spec.Kind) (spec.Attribute, interface{}) {
	if m.version == nil {
		return nil, nil
	}
	attr := m.version.AttributeFromKind(k)
	if attr == nil {
		return nil, nil
	}
	name := HeaderPrefix + attr.Name()
	if k == spec.DataContentType {
		if v, ok := headerValue(m.header, HeaderContentType); ok {
			return attr, v
		}
	}
	if v, ok := headerValue(m.header, name); ok {
		return attr, v
	}
	return attr, nil
}

// GetExtension implements binding.MessageMetadataReader.
func (m *Message) GetExtension(name string) interface{} {
	if v, ok := headerValue(m.header, HeaderPrefix+strings.ToLower(name)); ok {
		return v
	}
	return nil
}

// Finish implements binding.Message; it does nothing.
func (m *Message) Finish(error) error { return nil }
