package smtpd

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"submitd/internal/scan"
	"submitd/internal/testutil"
)

// bigSpamMsg is spamMsg with a body of about size bytes, its last line
// last.
func bigSpamMsg(size int, last string) string {
	line := "lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n"
	return spamMsg(strings.Repeat(line, size/len(line)) + last)
}

// withMaxMessageSize raises the server's message size limit.
func withMaxMessageSize(n int64) envOption {
	return withServer(func(s *Server) { s.Limits.MaxMessageSize = n })
}

// recordingScanner is an HTTP scanner that keeps the body of each request
// by its Queue-Id and answers "no action".
type recordingScanner struct {
	*httptest.Server
	mu     sync.Mutex
	bodies map[string][]byte
}

func newRecordingScanner(t *testing.T) *recordingScanner {
	rs := &recordingScanner{bodies: map[string][]byte{}}
	rs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil || int64(len(b)) != r.ContentLength {
			http.Error(w, fmt.Sprintf("read %d bytes of %d: %v", len(b), r.ContentLength, err), http.StatusBadRequest)
			return
		}
		rs.mu.Lock()
		rs.bodies[r.Header.Get("Queue-Id")] = b
		rs.mu.Unlock()
		fmt.Fprint(w, `{"action":"no action","score":0.5,"required_score":15}`)
	}))
	t.Cleanup(rs.Close)
	return rs
}

func (rs *recordingScanner) body(qid string) []byte {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.bodies[qid]
}

// TestScanSendsQueuedBytes: the scanner gets, byte for byte, the message
// as it is queued (SPEC R22), for a small message the spool holds in
// memory until its commit and for larger ones it writes to tmp/ first,
// over DATA and BDAT.
func TestScanSendsQueuedBytes(t *testing.T) {
	rs := newRecordingScanner(t)
	e := newTestEnv(t, withMaxMessageSize(8<<20), withScanner(scan.Config{URL: rs.URL}, nil))
	c := e.login("smtp", "jan@firma.cz")
	for _, size := range []int{1 << 10, 200 << 10, 3 << 20} {
		for _, bdat := range []bool{false, true} {
			data := bigSpamMsg(size, "the end\r\n")
			var got string
			if bdat {
				c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
				c.expect("RCPT TO:<eva@example.org>", "250 ")
				c.send(fmt.Sprintf("BDAT %d LAST", len(data)))
				io.WriteString(c.conn, data)
				got = c.last()
			} else {
				got = c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, data)
			}
			matchSID(t, got, "250 2.0.0 SID queued as "+got[strings.LastIndex(got, " ")+1:])
			qid := got[strings.LastIndex(got, " ")+1:]
			queued := e.content(qid)
			if !strings.HasSuffix(queued, "\r\n"+data) {
				t.Fatalf("%d bytes, BDAT %v: the queued message does not end with the one sent", size, bdat)
			}
			if scanned := rs.body(qid); !bytes.Equal(scanned, []byte(queued)) {
				t.Errorf("%d bytes, BDAT %v: the scanner got %d bytes, not the %d queued", size, bdat, len(scanned), len(queued))
			}
		}
	}
}

// tmpFiles counts the files in the spool's tmp/.
func (e *testEnv) tmpFiles() int {
	e.t.Helper()
	ents, err := os.ReadDir(filepath.Join(e.spool.Dir(), "tmp"))
	if err != nil {
		e.t.Fatal(err)
	}
	return len(ents)
}

// TestScanRefusesLargeMessage: a real rspamd reads a message of a
// megabyte, larger than the spool keeps in memory, to its end, where
// GTUBE is, in the text part after an attachment; the message is refused
// and leaves nothing in the spool, tmp/ included (SPEC R22).
func TestScanRefusesLargeMessage(t *testing.T) {
	rs := testutil.StartRspamd(t)
	e := newTestEnv(t, withMaxMessageSize(2<<20), withScanner(scan.Config{URL: rs.URL}, nil))
	c := e.login("smtp", "jan@firma.cz")
	line := "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0\r\n"
	data := "From: Jan <jan@firma.cz>\r\nTo: eva@example.org\r\nSubject: offer\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		strings.Repeat(line, (1<<20)/len(line)) +
		"--b1\r\nContent-Type: text/plain\r\n\r\n" + testutil.GTUBE + "\r\n--b1--\r\n"
	got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, data)
	matchSID(t, got, "550 5.7.1 SID message refused as spam: Gtube pattern")
	if envs := e.spooled(); len(envs) != 0 {
		t.Fatalf("a refused message was queued: %+v", envs)
	}
	if n := e.tmpFiles(); n != 0 {
		t.Errorf("tmp/ holds %d files after the refusal", n)
	}
}

// TestScanUploadTimeout: a scanner that takes none of a message of
// megabytes costs the session the scan's timeout, upload included, and
// the message is queued intact, unscanned (on_error = "accept").
func TestScanUploadTimeout(t *testing.T) {
	done := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}))
	t.Cleanup(func() { close(done); hang.Close() })
	const timeout = 300 * time.Millisecond
	e := newTestEnv(t, withMaxMessageSize(8<<20), withScanner(scan.Config{URL: hang.URL, Timeout: timeout}, nil))
	c := e.login("smtp", "jan@firma.cz")
	data := bigSpamMsg(3<<20, "the end\r\n")
	got := c.sendMessage("jan@firma.cz", []string{"eva@example.org"}, data)
	sid := matchSID(t, got, "250 2.0.0 SID queued as "+got[strings.LastIndex(got, " ")+1:])
	if !strings.HasSuffix(e.content(got[strings.LastIndex(got, " ")+1:]), "\r\n"+data) {
		t.Error("the queued message is not the one sent")
	}
	if ev := scanEvents(e.endSession(c, sid)); len(ev) != 1 || !strings.HasSuffix(ev[0], ": unscanned (timeout)") {
		t.Errorf("scan events %q", ev)
	}
	if n := e.tmpFiles(); n != 0 {
		t.Errorf("tmp/ holds %d files", n)
	}
}

// TestScanHoldsNoCopy: messages of 3 MiB being scanned at once hold no
// copy of themselves in memory for the scan, which reads them from the
// spool: with max_connections sessions each able to have one scanned, a
// copy would let authenticated clients make the server hold
// max_connections × max_size. The heap is measured after a collection
// while all the scans wait for the scanner's answer, against the heap once
// they have been answered and the sessions wait for their next command;
// the bound leaves room for each scan's buffers (spool, HTTP), far below
// a copy's 3 MiB.
func TestScanHoldsNoCopy(t *testing.T) {
	const k, size = 8, 3 << 20
	var arrived atomic.Int32
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil || n != r.ContentLength {
			http.Error(w, "short body", http.StatusBadRequest)
			return
		}
		arrived.Add(1)
		<-release
		fmt.Fprint(w, `{"action":"no action","score":0.5,"required_score":15}`)
	}))
	t.Cleanup(slow.Close)
	e := newTestEnv(t, withMaxMessageSize(8<<20), withScanner(scan.Config{URL: slow.URL, Timeout: time.Minute}, nil))
	data := []byte(bigSpamMsg(size, "the end\r\n") + ".\r\n")
	var clients []*client
	for range k {
		c := e.login("smtp", "jan@firma.cz")
		c.expect("MAIL FROM:<jan@firma.cz>", "250 ")
		c.expect("RCPT TO:<eva@example.org>", "250 ")
		c.expect("DATA", "354 ")
		clients = append(clients, c)
	}
	replies := make(chan string, k)
	for _, c := range clients {
		go func() {
			if _, err := c.conn.Write(data); err != nil {
				replies <- err.Error()
				return
			}
			l, err := c.r.ReadString('\n')
			if err != nil {
				l = err.Error()
			}
			replies <- l
		}()
	}
	testutil.WaitFor(t, time.Minute, "all the messages at the scanner", func() bool { return arrived.Load() == k })
	// Two collections: what sync.Pools hold survives the first.
	var during, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&during)
	close(release)
	for range k {
		if l := <-replies; !strings.HasPrefix(l, "250 ") {
			t.Errorf("reply %q", l)
		}
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(during.HeapAlloc) - int64(after.HeapAlloc)
	t.Logf("%d scans of %d bytes in flight: heap %+d KiB", k, len(data), held>>10)
	if held > k<<20 {
		t.Errorf("%d scans of %d bytes in flight hold %d KiB, more than 1 MiB each", k, len(data), held>>10)
	}
}
