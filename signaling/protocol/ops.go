package protocol

import (
	"context"
	"encoding/json"
)

// OpFunc performs one op of the wire protocol for actor with the request's
// raw args and returns the reply's result.
type OpFunc func(ctx context.Context, a Actor, args json.RawMessage) (any, error)

// Op adapts a typed operation to an OpFunc that decodes its args strictly.
func Op[T any](f func(ctx context.Context, a Actor, args T) (any, error)) OpFunc {
	return func(ctx context.Context, a Actor, raw json.RawMessage) (any, error) {
		args, derr := DecodeArgs[T](raw)
		if derr != nil {
			return nil, derr
		}
		return f(ctx, a, args)
	}
}
