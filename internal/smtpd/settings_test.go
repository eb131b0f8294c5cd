package smtpd

import (
	"slices"
	"strings"
	"testing"
)

// SetSettings puts new limits and replies in force for the connections
// accepted after it, at once; a session open before goes on with the ones
// it started with, and its slot counts against the new per-IP limit.
func TestSetSettings(t *testing.T) {
	e := newTestEnv(t)
	old := e.dial("smtp")
	old.last()
	if !slices.Contains(old.reply0("EHLO client.test"), "250-SIZE 65536") {
		t.Fatal("no SIZE 65536 before the change")
	}

	st := *e.srv.CurrentSettings()
	st.Limits.MaxConnsPerIP = 2
	st.Limits.MaxMessageSize = 2048
	replies, err := NewReplies(map[string]string{ReplyTooManyConns: "{sid} only two at once from {ip}"}, false)
	if err != nil {
		t.Fatal(err)
	}
	st.Replies = replies
	e.srv.SetSettings(st)

	second := e.dial("smtp")
	second.last()
	if !slices.Contains(second.reply0("EHLO client.test"), "250-SIZE 2048") {
		t.Error("a new connection does not get the new SIZE")
	}
	matchSID(t, e.dial("smtp").last(), "421 4.7.0 SID only two at once from 127.0.0.1")
	// The open session keeps the SIZE it was offered.
	if got := old.reply0("EHLO client.test"); !slices.Contains(got, "250-SIZE 65536") {
		t.Errorf("the open session's EHLO after the change: %s", strings.Join(got, " | "))
	}
}
