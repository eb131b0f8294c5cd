package spool

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"submitd/internal/ids"
)

// The benchmarks below compare, in one run, ways to make many sessions'
// messages durable at once:
//
//   - unbatched: every message file fsynced, renamed, and the directory
//     fsynced, each writer on its own (the spool before group commit);
//   - filegroup: every file fdatasynced by its writer, renamed, and one
//     directory fsync shared by the writers under way at once;
//   - syncfs: files written and renamed unsynced, then one syncfs(2) per
//     batch for the whole file system;
//   - segment: a segment log at its best: each message buffered in memory,
//     appended as one CRC-framed record to one open file, one fdatasync per
//     batch (no files, no index, no compaction, no removal);
//   - spool: the Spool as it is (journal up to journalMax, filegroup above).
//
// Each reports messages per second and syncs per message.

// benchWriters runs n writers that share b.N calls of one between them.
func benchWriters(b *testing.B, n int, one func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := one(); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// counted wraps a sync function to count its calls.
func counted(n *atomic.Int64, f func(*os.File) error) func(*os.File) error {
	return func(fl *os.File) error { n.Add(1); return f(fl) }
}

func benchEnv() *Envelope {
	return &Envelope{From: "jan@firma.cz", To: []string{"eva@example.org"}, Account: "jan@firma.cz",
		SessionID: "piWs1j0010jifNx01iWsdh", ClientIP: "127.0.0.1", Received: time.Now()}
}

// fileCommit writes one message file to tmp/, syncs it with syncFile (nil:
// not at all), renames it into place and then makes the directory durable
// with syncDir.
func fileCommit(dir string, body []byte, syncFile func(*os.File) error, syncDir func() error) error {
	id := ids.Queue(time.Now())
	tmp := filepath.Join(dir, "tmp", id)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "%s{\"id\":%q}\n", magic, id)
	f.Write(body)
	fmt.Fprintf(f, "end %016x %08x\n", len(body), crc32.Checksum(body, castagnoli))
	if syncFile != nil {
		if err := syncFile(f); err != nil {
			return err
		}
	}
	f.Close()
	if err := os.Rename(tmp, filepath.Join(dir, id+msgExt)); err != nil {
		return err
	}
	return syncDir()
}

// segLog is the write path of a segment log, for comparison only.
type segLog struct {
	mu sync.Mutex
	f  *os.File
	g  *group
}

func (l *segLog) commit(body []byte) error {
	// The message must be complete before it goes into the shared file, so
	// a session buffers it (a real log would spill large ones to a file).
	var rec bytes.Buffer
	id := ids.Queue(time.Now())
	fmt.Fprintf(&rec, "rec %08x %08x %s\n", len(body), crc32.Checksum(body, castagnoli), id)
	rec.Write(body)
	l.mu.Lock()
	_, err := l.f.Write(rec.Bytes())
	l.mu.Unlock()
	if err != nil {
		return err
	}
	return l.g.wait()
}

// sysSyncfs is syncfs(2)'s number on linux/amd64, which the syscall
// package does not name; the benchmark is only meant to run there.
const sysSyncfs = 306

func syncfs(f *os.File) error {
	_, _, e := syscall.Syscall(sysSyncfs, f.Fd(), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// BenchmarkDurable compares the designs side by side for 1, 20 and 50
// concurrent writers and 4 KiB and 1 MiB messages.
func BenchmarkDurable(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		body := bytes.Repeat([]byte("x"), size)
		for _, n := range []int{1, 20, 50} {
			name := func(design string) string { return fmt.Sprintf("%s/%dKiB/writers=%d", design, size>>10, n) }
			b.Run(name("unbatched"), func(b *testing.B) {
				dir := b.TempDir()
				os.Mkdir(filepath.Join(dir, "tmp"), 0o750)
				var syncs atomic.Int64
				benchWriters(b, n, func() error {
					return fileCommit(dir, body, counted(&syncs, (*os.File).Sync),
						func() error { syncs.Add(1); return syncDir(dir) })
				})
				b.ReportMetric(float64(syncs.Load())/float64(b.N), "syncs/msg")
			})
			b.Run(name("filegroup"), func(b *testing.B) {
				dir := b.TempDir()
				os.Mkdir(filepath.Join(dir, "tmp"), 0o750)
				var syncs atomic.Int64
				g := newGroup(func() error { syncs.Add(1); return syncDir(dir) })
				benchWriters(b, n, func() error { return fileCommit(dir, body, counted(&syncs, fdatasync), g.wait) })
				b.ReportMetric(float64(syncs.Load())/float64(b.N), "syncs/msg")
			})
			b.Run(name("syncfs"), func(b *testing.B) {
				dir := b.TempDir()
				os.Mkdir(filepath.Join(dir, "tmp"), 0o750)
				d, _ := os.Open(dir)
				defer d.Close()
				var syncs atomic.Int64
				g := newGroup(func() error { syncs.Add(1); return syncfs(d) })
				benchWriters(b, n, func() error { return fileCommit(dir, body, nil, g.wait) })
				b.ReportMetric(float64(syncs.Load())/float64(b.N), "syncs/msg")
			})
			b.Run(name("spool"), func(b *testing.B) {
				s, _ := Open(b.TempDir(), slog.New(slog.DiscardHandler))
				var syncs atomic.Int64
				s.syncFile = counted(&syncs, fdatasync)
				dir := s.dir
				s.group = newGroup(func() error { syncs.Add(1); return syncDir(dir) })
				benchWriters(b, n, func() error {
					w, err := s.Create(benchEnv())
					if err != nil {
						return err
					}
					w.Write(body)
					return w.Commit()
				})
				b.ReportMetric(float64(syncs.Load())/float64(b.N), "syncs/msg")
			})
			b.Run(name("segment"), func(b *testing.B) {
				f, err := os.OpenFile(filepath.Join(b.TempDir(), "segment"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				var syncs atomic.Int64
				l := &segLog{f: f, g: newGroup(func() error { syncs.Add(1); return fdatasync(f) })}
				benchWriters(b, n, func() error { return l.commit(body) })
				b.ReportMetric(float64(syncs.Load())/float64(b.N), "syncs/msg")
			})
		}
	}
}

// benchCommit writes and commits 4 KiB messages.
func benchCommit(b *testing.B, writers int) {
	s, _ := Open(b.TempDir(), slog.New(slog.DiscardHandler))
	body := strings.Repeat("x", 4096)
	benchWriters(b, writers, func() error {
		w, err := s.Create(benchEnv())
		if err != nil {
			return err
		}
		io.WriteString(w, body)
		return w.Commit()
	})
}

// BenchmarkCommit measures the durable write behind every 250 (SPEC R15).
func BenchmarkCommit(b *testing.B) { benchCommit(b, 1) }

// BenchmarkCommitParallel is the same from 50 writers at once.
func BenchmarkCommitParallel(b *testing.B) { benchCommit(b, 50) }

// BenchmarkCommitRemove measures a small message's life in the spool,
// commit and removal after delivery, with the syncs both take: the spool
// before group commit (file fsync, directory fsync, directory fsync again
// for the removal) against the Spool as it is.
func BenchmarkCommitRemove(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 4<<10)
	for _, n := range []int{1, 20, 50} {
		b.Run(fmt.Sprintf("unbatched/writers=%d", n), func(b *testing.B) {
			dir := b.TempDir()
			os.Mkdir(filepath.Join(dir, "tmp"), 0o750)
			var syncs atomic.Int64
			benchWriters(b, n, func() error {
				id := ""
				err := fileCommit(dir, body, counted(&syncs, (*os.File).Sync), func() error {
					syncs.Add(1)
					return syncDir(dir)
				})
				if err != nil {
					return err
				}
				names, _ := filepath.Glob(filepath.Join(dir, "*"+msgExt))
				if len(names) > 0 {
					id = names[0]
				}
				os.Remove(id)
				syncs.Add(1)
				return syncDir(dir)
			})
			b.ReportMetric(float64(syncs.Load())/float64(b.N), "syncs/msg")
		})
		b.Run(fmt.Sprintf("spool/writers=%d", n), func(b *testing.B) {
			s, _ := Open(b.TempDir(), slog.New(slog.DiscardHandler))
			var syncs atomic.Int64
			s.syncFile = counted(&syncs, fdatasync)
			dir := s.dir
			s.group = newGroup(func() error { syncs.Add(1); return syncDir(dir) })
			benchWriters(b, n, func() error {
				env := benchEnv()
				w, err := s.Create(env)
				if err != nil {
					return err
				}
				w.Write(body)
				if err := w.Commit(); err != nil {
					return err
				}
				return s.Remove(env.ID)
			})
			b.ReportMetric(float64(syncs.Load())/float64(b.N), "syncs/msg")
		})
	}
}
