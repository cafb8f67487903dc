package cluster

// Kill stops the loops without leaving: the node key expires by itself, as
// when the process is killed with SIGKILL.
func (m *Membership) Kill() { m.life.stop() }

// Kill stops the writer and leaves the entries in Redis.
func (r *Registry) Kill() { r.life.stop() }

// Sweeps is how many looks for dead nodes this node completed.
func (m *Membership) Sweeps() int64 { return m.sweeps.Load() }
