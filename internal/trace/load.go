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
// tables with the same queries, differing only in the placeholder.
type reader interface {
	// placeholder is the query parameter, "?" or "$1".
	placeholder() string
	// row scans the one row of q with parameter id into dest; false when
	// there is none.
	row(ctx context.Context, q, id string, dest ...any) (bool, error)
	// rows runs q with parameter id.
	rows(ctx context.Context, q, id string) (rows, error)
}

// load reads the messages ids, with their events when events is set; a
// message known only by its events (see migrations) is returned with what
// they tell.
func load(ctx context.Context, r reader, ids []string, events bool) ([]*Message, error) {
	ph := r.placeholder()
	var out []*Message
	for _, id := range ids {
		m := &Message{QueueID: id, Rcpts: []Rcpt{}}
		var received int64
		known, err := r.row(ctx, `SELECT received, session_id, client_ip, account, sender, subject, message_id, size, kind
			FROM trace_messages WHERE queue_id = `+ph, id, &received, &m.SessionID, &m.ClientIP, &m.Account, &m.From,
			&m.Subject, &m.MessageID, &m.Size, &m.Kind)
		if err != nil {
			return nil, fmt.Errorf("trace: %w", err)
		}
		m.Received = fromNanos(received)
		err = scanAll(ctx, r, `SELECT rcpt, state, reply, host, updated, next FROM trace_rcpts
			WHERE queue_id = `+ph+` ORDER BY seq, rcpt`, id, func(rs rows) error {
			var rc Rcpt
			var updated, next int64
			err := rs.Scan(&rc.Addr, &rc.State, &rc.Reply, &rc.Host, &updated, &next)
			rc.Updated, rc.Next = fromNanos(updated), fromNanos(next)
			m.Rcpts = append(m.Rcpts, rc)
			return err
		})
		if err != nil {
			return nil, err
		}
		if !known && len(m.Rcpts) == 0 {
			continue
		}
		if events {
			m.Events = []Event{}
			err = scanAll(ctx, r, `SELECT rcpt, time, kind, host, tls, reply, next, detail FROM trace_events
				WHERE queue_id = `+ph+` ORDER BY id`, id, func(rs rows) error {
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

// scanAll runs q with id and calls each for every row.
func scanAll(ctx context.Context, r reader, q, id string, each func(rows) error) error {
	rs, err := r.rows(ctx, strings.TrimSpace(q), id)
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
