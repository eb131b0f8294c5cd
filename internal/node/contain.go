package node

import (
	"context"
	"encoding/json"
	"time"

	"submitd/internal/admin"
	"submitd/internal/config"
	"submitd/internal/contain"
	"submitd/internal/directory"
)

// containActor names the automatic holds in the audit log.
const containActor = "system:contain"

// Thresholds turns [contain] into the detector's thresholds.
func Thresholds(cfg *config.Config) contain.Thresholds {
	c := cfg.Contain
	return contain.Thresholds{
		LimitHits: c.LimitHits, LimitWindow: c.LimitWindow.D(),
		BounceShare: c.BounceShare, BounceMin: c.BounceMin, BounceWindow: c.BounceWindow.D(),
		Networks: c.Networks, NetworksWindow: c.NetworksWindow.D(),
		RiseFactor: c.RiseFactor, RiseFloor: c.RiseFloor, RiseDays: c.RiseDays,
		Spam: c.Spam, SpamWindow: c.SpamWindow.D(),
	}
}

// newDetector makes the detector before the queue and the SMTP server,
// which report to it; its trips reach the containment made later
// (newContainment), before anything is served.
func (n *Node) newDetector() {
	n.Detector = contain.NewDetector(Thresholds(n.Config), n.Config.Contain.MaxAccounts, nil, func(t contain.Trip) {
		if c := n.Contain; c != nil {
			c.Trip(t)
		}
	})
}

// newContainment makes what acts on trips (SPEC R20), and holds again the
// mail of the accounts held before the start.
func (n *Node) newContainment(ctx context.Context) error {
	cfg := n.Config
	store, err := contain.NewSQLite(ctx, n.DB)
	if err != nil {
		return err
	}
	// The webhook runs even without a URL, so that a reload can set one.
	n.Webhook = contain.NewWebhook(contain.WebhookConfig{
		URL: cfg.Contain.Webhook, Timeout: cfg.Contain.WebhookTimeout.D(), Attempts: cfg.Contain.WebhookAttempts, Log: n.Log,
	})
	n.Server.Activity = n.Detector
	// SPEC R22: refused and flagged messages are the spam signal.
	n.Server.OnSpam = n.Detector.Spam
	if n.Sending != nil {
		// SPEC R19's refusals are the limits signal.
		n.Sending.OnLimit(n.Detector.LimitHit)
	}
	n.Contain = contain.New(contain.Config{
		Directory: n.Directory, Store: store, Sessions: n.Server, Credentials: forgetter{n}, Queue: n.Queue,
		Action: cfg.Contain.Action, Notifiers: n.notifiers(cfg), Log: n.Log,
		Count: n.Metrics.Contain(n.Detector.Tracked),
		Audit: func(ctx context.Context, action, target string, after any) error {
			b, err := json.Marshal(after)
			if err != nil {
				return err
			}
			_, err = n.AdminStore.AddAudit(ctx, admin.Entry{Time: time.Now(), Actor: containActor, Action: action, Target: target, After: b})
			return err
		},
		Audited: func(ctx context.Context, action, target string, since time.Time) (bool, error) {
			es, _, err := n.AdminStore.Audit(ctx, admin.AuditQuery{Actor: containActor, Action: action, Target: target, Limit: 1})
			return err == nil && len(es) > 0 && !es[0].Time.Before(since), err
		},
	})
	n.Contain.SetDetector(n.Detector)
	n.Admin.SetHeld(n.Contain)
	return n.Contain.Restore(ctx)
}

// notifiers are those [contain] webhook and support_address ask for.
func (n *Node) notifiers(cfg *config.Config) []contain.Notifier {
	var out []contain.Notifier
	if cfg.Contain.Webhook != "" {
		out = append(out, n.Webhook)
	}
	if cfg.Contain.SupportAddress != "" {
		out = append(out, &contain.Mail{To: cfg.Contain.SupportAddress, Hostname: cfg.Hostname, Submit: func(to string, msg []byte) error { return n.spoolFromNull([]string{to}, msg) }, Log: n.Log})
	}
	return out
}

// setContain puts [contain] of cfg in force (a reload): the thresholds,
// the action and the notifications.
func (n *Node) setContain(cfg *config.Config) {
	c := cfg.Contain
	n.Detector.SetThresholds(Thresholds(cfg))
	n.Contain.SetAction(c.Action)
	n.Webhook.SetTarget(c.Webhook, c.WebhookTimeout.D(), c.WebhookAttempts)
	n.Contain.SetNotifiers(n.notifiers(cfg))
}

// forgetter drops what the node caches of an account at once, its cached
// credentials and its cached directory entry, without waiting for the
// change log: a hold must take effect at the next AUTH, and so must a
// release.
type forgetter struct{ n *Node }

// Forget implements contain.Credentials.
func (f forgetter) Forget(account string) int {
	if f.n.Accounts != nil {
		f.n.Accounts.Changed(directory.Change{Kind: directory.ChangeAccess, Name: account})
	}
	return f.n.Authenticator().Forget(account)
}

// runContainment runs the containment and the webhook until ctx ends; the
// returned channel closes when both have stopped.
func (n *Node) runContainment(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		go n.Webhook.Run(ctx)
		n.Contain.Run(ctx)
	}()
	return done
}
