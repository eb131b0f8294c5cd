package node

// MetricsAddr is the address /metrics is served on: the admin listener's,
// or "" when [admin] listen is "".
func (n *Node) MetricsAddr() string { return n.AdminAddr() }
