// Package redisconn opens the Redis client that submitd's shared counters
// (the guard of SPEC R11 and the sending limits) use, from the URL an
// operator writes in the configuration.
package redisconn

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Open returns a client for url, in one of these forms:
//
//   - redis://[user:password@]host:port/db, or rediss://… for TLS: one server;
//   - unix:///path/to/socket?db=N: one server on a Unix socket;
//   - redis://[user:password@]sentinel:26379/db?master_name=NAME&addr=sentinel2:26379…:
//     the master that Sentinel names NAME, found through the listed sentinels
//     (user and password are the sentinels'; a password for the master goes
//     in the password parameter);
//   - redis+cluster://[user:password@]node:6379?addr=node2:6379…, or
//     rediss+cluster://… for TLS: a Redis Cluster reached through the listed
//     nodes.
//
// Query parameters are go-redis's (dial_timeout, read_timeout, pool_size
// and the like). Open does not connect: go-redis dials on first use and
// redials after a failure, which is what lets the callers carry on without
// Redis and resume when it returns.
func Open(rawURL string) (redis.UniversalClient, error) {
	bad := func(err error) (redis.UniversalClient, error) {
		// The reasons of url.Parse quote the URL, password and all.
		return nil, errors.New(redact(rawURL, fmt.Sprintf("redis URL %q: %v", rawURL, err)))
	}
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok {
		return bad(fmt.Errorf("want redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"))
	}
	switch scheme {
	case "redis+cluster", "rediss+cluster":
		opt, err := redis.ParseClusterURL(strings.TrimSuffix(scheme, "+cluster") + "://" + rest)
		if err != nil {
			return bad(err)
		}
		return redis.NewClusterClient(opt), nil
	case "redis", "rediss":
		u, err := url.Parse(rawURL)
		if err != nil {
			return bad(err)
		}
		if u.Query().Has("master_name") {
			opt, err := redis.ParseFailoverURL(rawURL)
			if err != nil {
				return bad(err)
			}
			if opt.MasterName == "" {
				return bad(fmt.Errorf("master_name is empty"))
			}
			return redis.NewFailoverClient(opt), nil
		}
		fallthrough
	case "unix":
		opt, err := redis.ParseURL(rawURL)
		if err != nil {
			return bad(err)
		}
		return redis.NewClient(opt), nil
	}
	return bad(fmt.Errorf("want redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"))
}

// redact replaces the password of rawURL in msg with "xxxxx", so that an
// error message naming the URL can go to the log.
func redact(rawURL, msg string) string {
	_, rest, _ := strings.Cut(rawURL, "://")
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return msg
	}
	_, pw, ok := strings.Cut(rest[:at], ":")
	if !ok || pw == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, pw, "xxxxx")
	// url.Parse may quote the password escaped.
	if esc := url.QueryEscape(pw); esc != pw {
		msg = strings.ReplaceAll(msg, esc, "xxxxx")
	}
	return msg
}
