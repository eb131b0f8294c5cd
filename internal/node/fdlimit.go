package node

import (
	"log/slog"
	"syscall"

	"submitd/internal/config"
)

// fdReserve is what the process needs besides sessions and deliveries: the
// listeners, the database and its journal files, the spool lock, logs, DNS
// sockets and the runtime's own descriptors.
const fdReserve = 64

// fdNeed is the most file descriptors the configured limits may hold at
// once: each session has its socket and, while it receives a message, a
// spool file; each delivery has its socket, the spool file it reads and a
// DNS socket.
func fdNeed(cfg *config.Config) uint64 {
	return 2*uint64(cfg.Limits.MaxConnections) + 3*uint64(cfg.Queue.Workers) + fdReserve
}

// checkFileLimit warns when the limits may need more file descriptors than
// RLIMIT_NOFILE allows. The server survives running out (the listeners wait
// and retry), but meanwhile every listener stops accepting and messages
// cannot be spooled, so max_connections should stop clients first. The Go
// runtime has already raised the soft limit to the hard limit at start, so
// the soft limit read here is the most the process can have.
func checkFileLimit(cfg *config.Config, log *slog.Logger) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	if need := fdNeed(cfg); need > rl.Cur {
		log.Warn("limits.max_connections and queue.workers may need more file descriptors than RLIMIT_NOFILE allows; raise the limit (LimitNOFILE= under systemd) or lower limits.max_connections",
			"max_connections", cfg.Limits.MaxConnections, "workers", cfg.Queue.Workers, "needed", need, "rlimit_nofile", rl.Cur)
	}
}
