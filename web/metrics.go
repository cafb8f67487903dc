package web

// Metrics is what the transport reports: connections opening and closing,
// each request by op and result (ok, or the error reason), and connections
// closed because their send queue was full. It must not block. web/metrics
// implements it with Prometheus; the transport knows nothing of how it is
// counted or served.
type Metrics interface {
	ConnOpened()
	ConnClosed()
	Request(op, result string)
	SendQueueOverflow()
	// ConnRejected counts a TCP connection answered 503 and closed because
	// server.max_connections were open.
	ConnRejected()
}

// reporter calls an optional Metrics.
type reporter struct{ m Metrics }

func (r reporter) connOpened() {
	if r.m != nil {
		r.m.ConnOpened()
	}
}

func (r reporter) connClosed() {
	if r.m != nil {
		r.m.ConnClosed()
	}
}

func (r reporter) request(op, result string) {
	if r.m != nil {
		r.m.Request(op, result)
	}
}

func (r reporter) sendQueueOverflow() {
	if r.m != nil {
		r.m.SendQueueOverflow()
	}
}

func (r reporter) connRejected() {
	if r.m != nil {
		r.m.ConnRejected()
	}
}
