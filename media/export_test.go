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
