package media

// BatchedDatagrams counts the datagrams s sent through fan-out batches.
func BatchedDatagrams(s *SFU) uint64 {
	if s.batch == nil {
		return 0
	}
	return s.batch.batched.Load()
}

// BatchStreams counts the SSRCs registered with s's batches: one per bound
// subscriber track.
func BatchStreams(s *SFU) int {
	if s.batch == nil {
		return 0
	}
	return len(*s.batch.streams.Load())
}

// RxStreams counts the SSRCs registered with s's fast receive path.
func RxStreams(s *SFU) int {
	if s.batch == nil {
		return 0
	}
	return len(*s.batch.rx.Load())
}

// PublisherState is the state of p's publisher connection as the SFU sees
// it ("none" without one).
func PublisherState(p *Participant) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pub == nil {
		return "none"
	}
	return p.pub.ConnectionState().String()
}
