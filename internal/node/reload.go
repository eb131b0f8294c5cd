package node

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sort"
	"strings"

	"submitd/internal/admin"
	"submitd/internal/config"
	"submitd/internal/delivery"
	"submitd/internal/smtpd"
)

// restartOnly are the settings a reload leaves as they were, by key; one
// ending in "." names a whole table. Each is named in the reply and the
// log when the file changes it, and takes effect at the next start:
//
//   - hostname, data_dir, [store]: what the stores, the spool and the
//     queue were opened with;
//   - [listen], [listener], [admin] listen and tls: the bound sockets;
//   - [tls] reload_interval and [acme]: how the certificate set was
//     started (its files, [tls] cert, key and certificate, are reloaded);
//   - the prefix lengths of [guard] and [login_guard], and [guard] store
//     and redis_url: what the counted state is keyed by and kept in;
//   - [login_guard] enabled: whether the per-login count runs at all;
//   - [contain] rise_days and max_accounts, which size the detector's
//     memory;
//   - [log] format, and level when the process log has no LevelVar.
//
// A reloader (AddReloader) takes its keys off this list.
var restartOnly = []string{
	"hostname", "data_dir", "store.",
	"listen.", "listener.", "admin.listen", "admin.tls", "tls.", "tls.reload_interval", "acme.",
	"guard.ipv4_prefix", "guard.ipv6_prefix", "guard.store", "guard.redis_url",
	"login_guard.enabled", "login_guard.ipv4_prefix", "login_guard.ipv6_prefix",
	"contain.rise_days", "contain.max_accounts",
	"log.format",
}

// reloader is one extra step of Reload (AddReloader).
type reloader struct {
	// keys are the settings it puts in force, as in restartOnly.
	keys []string
	// prepare checks and builds them; commit puts them in force.
	prepare func(ctx context.Context, cfg *config.Config) (commit func(), err error)
}

// AddReloader adds a step to Reload for the settings keys (a key ending in
// "." names a whole table), which then no longer need a restart. At every
// reload, whether its keys changed or not (a certificate file may have
// been replaced under the same name), prepare gets the new configuration,
// already validated, and builds what it needs without changing anything:
// its error leaves the whole node as it was. The commit it returns (nil:
// nothing to do) runs with the other packages' swaps. The certificates ([tls]) are meant to
// come in this way. Call it before Run.
func (n *Node) AddReloader(keys []string, prepare func(ctx context.Context, cfg *config.Config) (commit func(), err error)) {
	n.reloaders = append(n.reloaders, reloader{keys: keys, prepare: prepare})
}

// CurrentConfig returns the configuration in force: the one the node was
// built from, or the last one Reload put in force, with the settings that
// need a restart as they were at the start.
func (n *Node) CurrentConfig() *config.Config { return n.cur.Load() }

// Reload reads the configuration file again (ConfigPath), validates it
// whole, and puts it in force without dropping a session: the SMTP
// server's limits, timeouts, networks, replies and AUTH settings, the
// guard, the per-login watch, the sending limits, the containment's
// thresholds, action and notifications, the delivery sender and the
// queue's retries, the admin server's settings, the session records'
// retention and the log level. Connections accepted from then on get the
// new settings at once; open sessions go on with those they started with.
// The settings of restartOnly are left as they were.
//
// applied names the settings that changed and are now in force, restart
// those that changed but wait for a restart, both as config keys
// ("limits.max_connections_per_ip"). A file that does not load or
// validate changes nothing; the error says why, naming the file's line
// (config.Load).
func (n *Node) Reload(ctx context.Context) (applied, restart []string, err error) {
	n.reload.Lock()
	defer n.reload.Unlock()
	// systemd (Type=notify) hears of the reload as sd_notify(3) says.
	n.NotifyReloading()
	defer n.NotifyReady("serving")
	next, err := config.Load(n.ConfigPath)
	if err != nil {
		n.Log.Error("reload: the configuration file does not load; nothing changed", "err", err)
		n.reloaded(false)
		return nil, nil, err
	}
	cur := n.CurrentConfig()
	restart = n.keepRestartOnly(cur, next)
	applied = ChangedKeys(cur, next)
	commit, err := n.prepareReload(ctx, next, applied)
	if err != nil {
		n.Log.Error("reload: the configuration cannot be put in force; nothing changed", "err", err)
		n.reloaded(false)
		return nil, nil, err
	}
	commit()
	n.cur.Store(next)
	n.reloaded(true)
	n.Log.Info("reload: "+admin.ReloadSummary(applied, restart), "config", n.ConfigPath,
		"applied", strings.Join(applied, " "), "restart", strings.Join(restart, " "))
	return applied, restart, nil
}

// prepareReload builds everything next needs that can fail, changing
// nothing, and returns the function that puts it all in force.
func (n *Node) prepareReload(ctx context.Context, next *config.Config, changed []string) (commit func(), err error) {
	replies, err := smtpd.NewReplies(next.Replies, next.Auth.UniformFailures)
	if err != nil {
		return nil, err
	}
	// A new authenticator or sender starts empty (no cached answers, no
	// open connections), so one is made only when its settings changed.
	// The old one serves the sessions and deliveries under way to their
	// end.
	a := n.Authenticator()
	if anyKey(changed, "auth.password_scheme", "auth.cache_ttl", "auth.hash_workers", "auth.hash_queue", "auth.hash_wait") {
		if a, err = n.newAuthenticator(next); err != nil {
			return nil, err
		}
	}
	var sender delivery.Sender
	if anyKey(changed, "delivery.") {
		ds := DeliverySettings(next)
		// The day's TLS results and the cached MTA-STS policies go on
		// across the new sender.
		n.setDeliveryTLS(&ds)
		if sender, err = delivery.New(ds, n.Log); err != nil {
			return nil, err
		}
	}
	var commits []func()
	for _, r := range n.reloaders {
		c, err := r.prepare(ctx, next)
		if err != nil {
			return nil, err
		}
		commits = append(commits, c)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(next.Log.Level)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	return func() {
		n.auth.Store(a)
		n.Server.SetSettings(ServerSettings(next, replies, a))
		n.Queue.Set(QueueSettings(next, sender))
		// The guards' configurations were checked by config.Validate.
		if err := n.Guard.SetConfig(GuardConfig(next)); err != nil {
			n.Log.Error("reload: [guard] not applied", "err", err)
		}
		if err := n.LoginGuard.SetConfig(AdminLoginConfig(next)); err != nil {
			n.Log.Error("reload: [admin] login limits not applied", "err", err)
		}
		if n.Logins != nil {
			n.Logins.SetConfig(LoginWatchConfig(next))
		}
		n.Sending.SetLimits(SendingLimits(next))
		n.Admin.SetSettings(AdminSettings(next))
		n.setContain(next)
		n.SessionLog.SetRetention(next.SessionLog.Retention.D())
		if n.LogLevel != nil {
			n.LogLevel.Set(level)
		}
		for _, c := range commits {
			if c != nil {
				c()
			}
		}
	}, nil
}

// keepRestartOnly sets the settings of next that need a restart back to
// their values in cur, and returns the keys of those that differed.
func (n *Node) keepRestartOnly(cur, next *config.Config) []string {
	keys := slices.Clone(restartOnly)
	if n.LogLevel == nil {
		keys = append(keys, "log.level")
	}
	for _, r := range n.reloaders {
		keys = slices.DeleteFunc(keys, func(k string) bool { return anyKey([]string{k}, r.keys...) || anyKey(r.keys, k) })
	}
	curFields, nextFields := fields(cur), fields(next)
	var out []string
	for key, nv := range nextFields {
		if !anyKey([]string{key}, keys...) {
			continue
		}
		cv := curFields[key]
		if !reflect.DeepEqual(cv.Interface(), nv.Interface()) {
			out = append(out, key)
			nv.Set(cv)
		}
	}
	sort.Strings(out)
	return out
}

// ChangedKeys lists the settings that differ between a and b, by their
// keys in the config file ("limits.max_connections_per_ip", or
// "replies.auth_failed" for one entry of a table of free keys), sorted.
func ChangedKeys(a, b *config.Config) []string {
	fa, fb := fields(a), fields(b)
	var out []string
	for key, va := range fa {
		vb := fb[key]
		if va.Kind() == reflect.Map {
			for _, k := range mapKeys(va, vb) {
				x, y := va.MapIndex(k), vb.MapIndex(k)
				if x.IsValid() != y.IsValid() || x.IsValid() && !reflect.DeepEqual(x.Interface(), y.Interface()) {
					out = append(out, key+"."+k.String())
				}
			}
			continue
		}
		if !reflect.DeepEqual(va.Interface(), vb.Interface()) {
			out = append(out, key)
		}
	}
	sort.Strings(out)
	return out
}

// mapKeys is the union of the keys of two maps of the same type.
func mapKeys(a, b reflect.Value) []reflect.Value {
	seen := map[any]bool{}
	var out []reflect.Value
	for _, m := range []reflect.Value{a, b} {
		for _, k := range m.MapKeys() {
			if !seen[k.Interface()] {
				seen[k.Interface()] = true
				out = append(out, k)
			}
		}
	}
	return out
}

// fields maps each setting of c to its value, by its key in the config
// file. A struct without a key of its own (Sending's embedded limits)
// adds its fields to its parent's table.
func fields(c *config.Config) map[string]reflect.Value {
	out := map[string]reflect.Value{}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
			fv := v.Field(i)
			switch {
			case f.Anonymous && name == "":
				walk(fv, prefix)
			case name == "" || name == "-":
			case fv.Kind() == reflect.Struct:
				walk(fv, prefix+name+".")
			default:
				out[prefix+name] = fv
			}
		}
	}
	walk(reflect.ValueOf(c).Elem(), "")
	return out
}

// anyKey reports whether one of keys is one of patterns, where a pattern
// ending in "." stands for every key of that table.
func anyKey(keys []string, patterns ...string) bool {
	for _, k := range keys {
		for _, p := range patterns {
			if k == p || strings.HasSuffix(p, ".") && strings.HasPrefix(k, p) {
				return true
			}
		}
	}
	return false
}
