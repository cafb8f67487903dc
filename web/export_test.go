package web

// WritersStarted is how many writer goroutines s has started.
func WritersStarted(s *Server) int64 { return s.writersStarted.Load() }
