package roomcluster

import "context"

// ForcePlacement makes r place every new room on node (set before the
// relay serves requests).
func (r *Relay) ForcePlacement(node string) {
	f := placeFunc(func(ctx context.Context, roomID string) (string, error) {
		if n, err := r.owner(ctx, roomID); err != nil || n != "" {
			return n, err
		}
		return node, nil
	})
	r.placeFn.Store(&f)
}

// ForceForward makes r send every enterRoom to node, whoever owns the room.
func (r *Relay) ForceForward(node string) {
	f := placeFunc(func(context.Context, string) (string, error) { return node, nil })
	r.placeFn.Store(&f)
}
