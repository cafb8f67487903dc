package client

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/switchboard-rtc/switchboard/signaling/protocol"
)

// Names with a special meaning in WaitEvent and ExpectNoEvent.
const (
	// UnmatchedReply is the Name of an Event carrying a reply no call was
	// waiting for; as a name argument it matches only such replies.
	UnmatchedReply = ""
	// AnyEvent as a name argument matches every event and unmatched reply.
	AnyEvent = "*"
)

// Event is an event frame, or a reply no call was waiting for.
type Event struct {
	// Name is the event's name; UnmatchedReply ("") for a reply.
	Name string
	// Data is the event's data; for a reply, its result (nil for an error).
	Data json.RawMessage

	// Reply is set for an unmatched reply, with the reply's ID and its error
	// (nil when it carried a result).
	Reply bool
	ID    string
	Err   *protocol.Error
}

// Decode unmarshals Data into v. For an unmatched error reply it returns
// Err.
func (e Event) Decode(v any) error {
	if e.Err != nil {
		return e.Err
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		return fmt.Errorf("client: decoding %s: %w", e, err)
	}
	return nil
}

// String renders the event for test failures.
func (e Event) String() string {
	var s string
	switch {
	case e.Reply && e.Err != nil:
		s = fmt.Sprintf("reply %q error %s", e.ID, e.Err)
	case e.Reply:
		s = fmt.Sprintf("reply %q result %s", e.ID, e.Data)
	default:
		s = fmt.Sprintf("%s %s", e.Name, e.Data)
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func (e Event) matches(name string, match func(Event) bool) bool {
	switch {
	case name == AnyEvent:
	case name == UnmatchedReply:
		if !e.Reply {
			return false
		}
	default:
		if e.Reply || e.Name != name {
			return false
		}
	}
	return match == nil || match(e)
}

func (c *Client) takeTurn(ctx context.Context) error {
	select {
	case c.evTurn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) endTurn() { <-c.evTurn }

// Next returns the oldest event or unmatched reply: from the backlog, else
// from Events. It fails with ctx's error, or an error matching ErrClosed once
// the connection has ended and every event has been consumed.
func (c *Client) Next(ctx context.Context) (Event, error) {
	if err := c.takeTurn(ctx); err != nil {
		return Event{}, err
	}
	defer c.endTurn()
	if len(c.backlog) > 0 {
		ev := c.backlog[0]
		c.backlog = c.backlog[1:]
		return ev, nil
	}
	select {
	case ev, ok := <-c.events:
		if !ok {
			return Event{}, fmt.Errorf("client: no more events: %w", c.err)
		}
		return ev, nil
	case <-ctx.Done():
		return Event{}, ctx.Err()
	}
}

// WaitEvent returns the oldest event named name (see UnmatchedReply and
// AnyEvent) for which match (nil: any) returns true, taking it out of the
// backlog or reading Events until one arrives. Events read meanwhile that do
// not match stay in the backlog for later calls. On failure (ctx, end of the
// connection) the error names the events left in the backlog.
func (c *Client) WaitEvent(ctx context.Context, name string, match func(Event) bool) (Event, error) {
	if err := c.takeTurn(ctx); err != nil {
		return Event{}, fmt.Errorf("client: waiting for event %q: %w", name, err)
	}
	defer c.endTurn()
	for i, ev := range c.backlog {
		if ev.matches(name, match) {
			c.backlog = append(c.backlog[:i:i], c.backlog[i+1:]...)
			return ev, nil
		}
	}
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				return Event{}, fmt.Errorf("client: waiting for event %q (unconsumed: %s): %w", name, c.backlogSummary(), c.err)
			}
			if ev.matches(name, match) {
				return ev, nil
			}
			c.backlog = append(c.backlog, ev)
		case <-ctx.Done():
			return Event{}, fmt.Errorf("client: waiting for event %q (unconsumed: %s): %w", name, c.backlogSummary(), ctx.Err())
		}
	}
}

// WaitReply waits for the unmatched reply with the given id (as sent by
// SendRaw) and returns its result, or its *protocol.Error.
func (c *Client) WaitReply(ctx context.Context, id string) (json.RawMessage, error) {
	ev, err := c.WaitEvent(ctx, UnmatchedReply, func(e Event) bool { return e.ID == id })
	if err != nil {
		return nil, err
	}
	if ev.Err != nil {
		return nil, ev.Err
	}
	return ev.Data, nil
}

// ExpectNoEvent returns an error if an event named name (see UnmatchedReply
// and AnyEvent) is in the backlog or arrives within d; the event is left in
// the backlog. Other events read meanwhile go to the backlog. It returns nil
// when d passes or the connection ends without such an event, and ctx's
// error if ctx ends first.
func (c *Client) ExpectNoEvent(ctx context.Context, d time.Duration, name string) error {
	if err := c.takeTurn(ctx); err != nil {
		return err
	}
	defer c.endTurn()
	for _, ev := range c.backlog {
		if ev.matches(name, nil) {
			return fmt.Errorf("client: unexpected event %q: %s", name, ev)
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				return nil
			}
			c.backlog = append(c.backlog, ev)
			if ev.matches(name, nil) {
				return fmt.Errorf("client: unexpected event %q: %s", name, ev)
			}
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// backlogSummary names the backlog's events, for errors. The caller holds
// the turn.
func (c *Client) backlogSummary() string {
	if len(c.backlog) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, ev := range c.backlog {
		if i == 10 {
			fmt.Fprintf(&b, ", … %d more", len(c.backlog)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if ev.Reply {
			fmt.Fprintf(&b, "reply %q", ev.ID)
		} else {
			b.WriteString(ev.Name)
		}
	}
	return b.String()
}
