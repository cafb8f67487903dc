package signaling

// KillClusterLoops closes the Redis client of the loops of e's cluster
// node (cluster.LoopClient). With the client of its operations closed
// too, the node is cut off Redis as by SIGKILL.
func KillClusterLoops(e *Engine) {
	if e.cl != nil {
		_ = e.cl.loops()
	}
}
