// Package webhook delivers Switchboard's events to the application's
// backend: each event is POSTed as JSON to every URL of webhooks.urls,
// signed with webhooks.secret (Sign, Verify), with an event ID that stays
// the same across retries, retried with capped exponential backoff and
// jitter until it is accepted (2xx) or older than webhooks.max_age.
//
// The path of an event: an observer (Notifier: the signaling engine's,
// calls' and rooms' notes) calls Sender.Publish, which never blocks: it
// hands the event to a bounded channel (webhooks.queue_size; when it is
// full the event is dropped and counted). One goroutine writes what arrives
// to the durable Queue (the SQLite table webhook_deliveries in the server's
// database, so that deliveries survive a restart); a dispatcher goroutine
// claims due deliveries and hands them to webhooks.workers worker
// goroutines, each request bounded by webhooks.timeout. A slow or dead
// endpoint therefore ties up only the workers, never the caller of Publish.
//
// Deliveries of events with the same ordering key (the invitation, call,
// room or user they are about) reach one URL in the order they were
// published: a delivery waits while an earlier one with its key is queued.
//
// Package web is the transport layer; this is its outgoing half. It
// imports no metrics library: the server's metrics satisfy Metrics.
package webhook
