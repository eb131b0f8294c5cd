// Package redisconn opens the Redis client that submitd's shared counters
// (the guard of SPEC R11 and the sending limits) use, from the URL an
// operator writes in the configuration.
package redisconn

import (
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Open returns a client for url: redis://[user:password@]host:port/db,
// rediss://… for TLS, or unix:///path/to/socket?db=N. It does not connect:
// go-redis dials on first use and redials after a failure, which is what
// lets the callers carry on without Redis and resume when it returns.
func Open(url string) (redis.UniversalClient, error) {
	switch {
	case strings.HasPrefix(url, "redis://"), strings.HasPrefix(url, "rediss://"), strings.HasPrefix(url, "unix://"):
		opt, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("redis URL %q: %w", url, err)
		}
		return redis.NewClient(opt), nil
	}
	return nil, fmt.Errorf("redis URL %q: want redis://, rediss:// or unix://", url)
}
