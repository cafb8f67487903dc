package webhook_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rtc/switchboard/calls"
	"github.com/switchboard-rtc/switchboard/signaling/protocol"
	"github.com/switchboard-rtc/switchboard/web/webhook"
	"github.com/switchboard-rtc/switchboard/web/webtest"
)

// These tests run the whole server (web/webtest) with webhooks.urls set to
// an httptest endpoint, and check what the app's backend receives.

func startStack(t *testing.T, e *endpoint, mutate func(*webhook.Config)) *webtest.Stack {
	t.Helper()
	cfg := testConfig(e.URL)
	if mutate != nil {
		mutate(&cfg)
	}
	return webtest.Start(t, webtest.Options{Webhooks: &cfg})
}

// collector keeps the events the endpoint received, by invitation.
type collector struct {
	e   *endpoint
	all []received
}

// until reads events until cond holds on what was read (deadline 10s).
func (c *collector) until(t *testing.T, what string, cond func([]received) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond(c.all) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; got %v", what, types(c.all, ""))
		}
		r := c.e.next(t)
		if r.verr != nil {
			t.Fatalf("event %s: signature does not verify: %v", r.body, r.verr)
		}
		c.all = append(c.all, r)
	}
}

// about returns the data's inviteID (or "").
func about(r received) string {
	var d struct {
		InviteID string `json:"inviteID"`
	}
	_ = json.Unmarshal(r.event.Data, &d)
	return d.InviteID
}

// types lists the types of the events about inviteID ("" for all), in order.
func types(rs []received, inviteID string) []string {
	var out []string
	for _, r := range rs {
		if inviteID == "" || about(r) == inviteID {
			out = append(out, r.event.Type)
		}
	}
	return out
}

func find[T any](t *testing.T, rs []received, typ, inviteID string) T {
	t.Helper()
	for _, r := range rs {
		if r.event.Type == typ && about(r) == inviteID {
			var v T
			if err := json.Unmarshal(r.event.Data, &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no %s for %s", typ, inviteID)
	var zero T
	return zero
}

func has(typ, inviteID string) func([]received) bool {
	return func(rs []received) bool { return slices.Contains(types(rs, inviteID), typ) }
}

func secs(n int) *int { return &n }

// TestPushRingAndStop: an invitation to an offline user sends push.ring
// after invitation.created, and push.stop after its end, whatever ends it:
// a cancel, an answer from a device that connected since, a timeout. An
// online invitee gets no push at all.
func TestPushRingAndStop(t *testing.T) {
	e := newEndpoint(t, nil)
	s := startStack(t, e, nil)
	c := &collector{e: e}
	ctx := t.Context()
	alice, carol := s.Dial("alice"), s.Dial("carol")
	push := &protocol.OfflinePushInfo{Title: "alice is calling", Desc: "Video call", Ext: `{"room":"r1"}`, IOSSound: "ring.caf"}

	// Cancelled.
	cancelled, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "bob", Timeout: secs(30), OfflinePushInfo: push})
	if err != nil {
		t.Fatal(err)
	}
	// Online invitee: no push.
	online, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "carol", OfflinePushInfo: push})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Cancel(ctx, cancelled, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := carol.WaitEvent(ctx, protocol.EvReceiveNewInvitation, nil); err != nil {
		t.Fatal(err)
	}
	if err := carol.Reject(ctx, online, "busy"); err != nil {
		t.Fatal(err)
	}
	c.until(t, "push.stop of the cancelled invitation and carol's rejection", func(rs []received) bool {
		return has(webhook.TypePushStop, cancelled)(rs) && has(webhook.TypeInvitationRejected, online)(rs)
	})
	want := []string{webhook.TypeInvitationCreated, webhook.TypePushRing, webhook.TypeInvitationCancelled, webhook.TypePushStop}
	if got := types(c.all, cancelled); !slices.Equal(got, want) {
		t.Errorf("events of the cancelled invitation: %v, want %v", got, want)
	}
	ring := find[webhook.PushRingData](t, c.all, webhook.TypePushRing, cancelled)
	if ring.UserID != "bob" || ring.Inviter != "alice" || ring.OfflinePushInfo == nil || *ring.OfflinePushInfo != *push ||
		ring.TimeoutMs < 29000 || ring.TimeoutMs > 30000 || ring.Deadline == 0 {
		t.Errorf("push.ring = %+v (push info %+v)", ring, ring.OfflinePushInfo)
	}
	if stop := find[webhook.PushStopData](t, c.all, webhook.TypePushStop, cancelled); stop.UserID != "bob" || stop.Reason != "cancelled" {
		t.Errorf("push.stop = %+v", stop)
	}
	if got := types(c.all, online); slices.Contains(got, webhook.TypePushRing) || slices.Contains(got, webhook.TypePushStop) {
		t.Errorf("online invitee's invitation sent %v, want no push", got)
	}

	// Answered on a device that connected after the ring: the phone that
	// rang must stop.
	answered, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "bob", OfflinePushInfo: push})
	if err != nil {
		t.Fatal(err)
	}
	c.until(t, "push.ring for bob", has(webhook.TypePushRing, answered))
	bob := s.Dial("bob")
	if _, err := bob.WaitEvent(ctx, protocol.EvReceiveNewInvitation, nil); err != nil {
		t.Fatal(err)
	}
	if err := bob.Accept(ctx, answered, ""); err != nil {
		t.Fatal(err)
	}
	c.until(t, "push.stop after bob accepted", has(webhook.TypePushStop, answered))
	if stop := find[webhook.PushStopData](t, c.all, webhook.TypePushStop, answered); stop.Reason != "accepted" {
		t.Errorf("push.stop = %+v, want reason accepted", stop)
	}
	want = []string{webhook.TypeInvitationCreated, webhook.TypePushRing, webhook.TypeInvitationAccepted, webhook.TypePushStop}
	if got := types(c.all, answered); !slices.Equal(got, want) {
		t.Errorf("events of the answered invitation: %v, want %v", got, want)
	}

	// Timed out (dave has never connected).
	timedOut, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "dave", Timeout: secs(1), OfflinePushInfo: push})
	if err != nil {
		t.Fatal(err)
	}
	c.until(t, "push.stop after the timeout", has(webhook.TypePushStop, timedOut))
	want = []string{webhook.TypeInvitationCreated, webhook.TypePushRing, webhook.TypeInvitationTimedOut, webhook.TypePushStop}
	if got := types(c.all, timedOut); !slices.Equal(got, want) {
		t.Errorf("events of the timed-out invitation: %v, want %v", got, want)
	}
	// Presence was reported too.
	c.until(t, "user.online for alice", func(rs []received) bool { return slices.Contains(types(rs, ""), webhook.TypeUserOnline) })
}

// TestCallOpPushes: the call op's offlinePushInfo rings an offline callee;
// an offlinePushInfo over limits.max_push_info_bytes is refused.
func TestCallOpPushes(t *testing.T) {
	e := newEndpoint(t, nil)
	s := startStack(t, e, nil)
	c := &collector{e: e}
	ctx := t.Context()
	alice := s.Dial("alice")
	push := &protocol.OfflinePushInfo{Title: "alice", Desc: "Audio call"}
	var res calls.CallResult
	if err := alice.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: "bob", MediaType: calls.MediaAudio, OfflinePushInfo: push}, &res); err != nil {
		t.Fatal(err)
	}
	c.until(t, "push.ring of the call", has(webhook.TypePushRing, res.InviteID))
	if ring := find[webhook.PushRingData](t, c.all, webhook.TypePushRing, res.InviteID); ring.UserID != "bob" || *ring.OfflinePushInfo != *push {
		t.Errorf("push.ring = %+v", ring)
	}
	big := &protocol.OfflinePushInfo{Ext: string(make([]byte, 5000))}
	err := alice.Do(ctx, calls.OpCall, calls.CallArgs{Invitee: "carol", OfflinePushInfo: big}, &res)
	if pe := (*protocol.Error)(nil); !asProtocolError(err, &pe) || pe.Code != protocol.ErrDataTooLarge.Code {
		t.Fatalf("call with a %d-byte offlinePushInfo: %v, want data_too_large", big.Size(), err)
	}
}

// TestDeadEndpointDoesNotSlowInvites: with the endpoint hanging on every
// request (until the webhook timeout), invitations are answered as fast as
// without webhooks: each stays far below the webhook timeout.
func TestDeadEndpointDoesNotSlowInvites(t *testing.T) {
	e := newEndpoint(t, nil)
	e.hang.Store(true)
	const timeout = 10 * time.Second
	s := startStack(t, e, func(c *webhook.Config) { c.Timeout, c.Workers, c.QueueSize = timeout, 1, 16 })
	ctx := t.Context()
	alice := s.Dial("alice")
	push := &protocol.OfflinePushInfo{Title: "alice"}
	var worst time.Duration
	for i := range 40 { // more events than workers and hand-off slots together
		start := time.Now()
		id, err := alice.Invite(ctx, protocol.InviteArgs{Invitee: "bob", OfflinePushInfo: push})
		if err == nil {
			err = alice.Cancel(ctx, id, "")
		}
		if err != nil {
			t.Fatalf("invite %d: %v", i, err)
		}
		worst = max(worst, time.Since(start))
	}
	t.Logf("worst invite+cancel round trip with the endpoint hanging: %v", worst)
	if worst > timeout/5 {
		t.Errorf("an invite+cancel took %v with the webhook endpoint hanging; want far below the webhook timeout %v", worst, timeout)
	}
}

func asProtocolError(err error, target **protocol.Error) bool {
	return errors.As(err, target)
}

// TestWebhookMetrics: deliveries by result, their latency and the queue
// length are on /metrics.
func TestWebhookMetrics(t *testing.T) {
	e := newEndpoint(t, func(n int64) int {
		if n == 1 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	cfg := testConfig(e.URL)
	s := webtest.Start(t, webtest.Options{Webhooks: &cfg, Metrics: true})
	s.Dial("alice") // user.online
	c := &collector{e: e}
	c.until(t, "user.online retried and delivered", func(rs []received) bool {
		return len(rs) >= 2 && rs[len(rs)-1].status == http.StatusOK
	})
	want := []string{`switchboard_webhook_deliveries_total{result="failed"} 1`, `switchboard_webhook_deliveries_total{result="ok"}`,
		`switchboard_webhook_delivery_seconds_count`, `switchboard_webhook_queue_length`}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(s.HTTP.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		missing := ""
		for _, w := range want {
			if !strings.Contains(string(body), w) {
				missing = w
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %q", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
