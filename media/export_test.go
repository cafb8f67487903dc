package media

// BatchedDatagrams counts the datagrams s sent through fan-out batches.
func BatchedDatagrams(s *SFU) uint64 {
	if s.batch == nil {
		return 0
	}
	return s.batch.batched.Load()
}
