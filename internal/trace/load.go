package trace

import (
	"context"
	"fmt"
	"strings"
)

// rows are a query's rows, from database/sql or pgx.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Close()
	Err() error
}

// reader is what load needs of a database: the two stores read the same
// tables with the same queries, differing only in how a list of values is
// passed.
type reader interface {
	// in is the condition that col is one of n values, the query's
	// parameters: "col IN (?, ?)" or "col = ANY($1)".
	in(col string, n int) string
	// rows runs q with ids as the values of its in.
	rows(ctx context.Context, q string, ids []string) (rows, error)
}

// load reads the messages ids, in that order, with their events when
// events is set; a message known only by its events (see migrations) is
// returned with what they tell. Each table is read once for all of ids,
// not once per message.
func load(ctx context.Context, r reader, ids []string, events bool) ([]*Message, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	byID := make(map[string]*Message, len(ids))
	for _, id := range ids {
		byID[id] = &Message{QueueID: id, Rcpts: []Rcpt{}}
	}
	// known are the messages with a row of their own.
	known := map[string]bool{}
	err := scanAll(ctx, r, `SELECT queue_id, received, session_id, client_ip, account, sender, subject, message_id, size, kind
		FROM trace_messages WHERE `+r.in("queue_id", len(ids)), ids, func(rs rows) error {
		m := Message{Rcpts: []Rcpt{}}
		var received int64
		err := rs.Scan(&m.QueueID, &received, &m.SessionID, &m.ClientIP, &m.Account, &m.From, &m.Subject, &m.MessageID, &m.Size, &m.Kind)
		m.Received = fromNanos(received)
		if p := byID[m.QueueID]; err == nil && p != nil {
			*p, known[m.QueueID] = m, true
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	err = scanAll(ctx, r, `SELECT queue_id, rcpt, state, reply, host, updated, next FROM trace_rcpts
		WHERE `+r.in("queue_id", len(ids))+` ORDER BY queue_id, seq, rcpt`, ids, func(rs rows) error {
		var id string
		var rc Rcpt
		var updated, next int64
		err := rs.Scan(&id, &rc.Addr, &rc.State, &rc.Reply, &rc.Host, &updated, &next)
		rc.Updated, rc.Next = fromNanos(updated), fromNanos(next)
		if m := byID[id]; err == nil && m != nil {
			m.Rcpts = append(m.Rcpts, rc)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []*Message
	for _, id := range ids {
		m := byID[id]
		if !known[id] && len(m.Rcpts) == 0 {
			continue
		}
		if events {
			m.Events = []Event{}
			err = scanAll(ctx, r, `SELECT rcpt, time, kind, host, tls, reply, next, detail FROM trace_events
				WHERE `+r.in("queue_id", 1)+` ORDER BY id`, []string{id}, func(rs rows) error {
				e := Event{QueueID: id}
				var t, next int64
				err := rs.Scan(&e.Rcpt, &t, &e.Kind, &e.Host, &e.TLS, &e.Reply, &next, &e.Detail)
				e.Time, e.Next = fromNanos(t), fromNanos(next)
				m.Events = append(m.Events, e)
				return err
			})
			if err != nil {
				return nil, err
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// loadMessage reads one message with its events, as Store.Message answers.
func loadMessage(ctx context.Context, r reader, queueID string) (*Message, error) {
	ms, err := load(ctx, r, []string{queueID}, true)
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, fmt.Errorf("%s: %w", queueID, ErrNotFound)
	}
	return ms[0], nil
}

// scanAll runs q with ids and calls each for every row.
func scanAll(ctx context.Context, r reader, q string, ids []string, each func(rows) error) error {
	rs, err := r.rows(ctx, strings.TrimSpace(q), ids)
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	defer rs.Close()
	for rs.Next() {
		if err := each(rs); err != nil {
			return fmt.Errorf("trace: %w", err)
		}
	}
	if err := rs.Err(); err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	return nil
}
