#!/usr/bin/env bash
# bench/run.sh — the benchmarks of BENCHMARKS.md in one command.
#
#   bench/run.sh                 all workloads, RUNS=3 rounds
#   bench/run.sh W1 W3           a subset (W1 W1s W2 W3 W4 W5 W6)
#   RUNS=1 DUR=5s bench/run.sh   fewer and shorter runs
#   SMOKE=1 bench/run.sh         every workload once for a few seconds,
#                                failing on anything unexpected (CI)
#
# It installs what it needs (Postfix, Cyrus SASL, chasquid, openssl,
# strace, rspamd for W1s; Go must be on PATH or in /usr/local/go), builds
# submitd, submitd-bench, the go-smtp ceiling and maddy, starts the five
# servers on loopback ports with one self-signed ECDSA certificate, runs
# each workload against each server in turn (the servers interleaved within every round,
# each server restarted for each run so peak memory is per run), and writes
# the table of medians into BENCHMARKS.md between its "results" markers
# (WRITE=0: print only). W1s runs W1 against submitd without and with
# content scanning, by an rspamd started on loopback with the tests'
# configuration (internal/testutil/rspamd), side by side; its table
# follows the other.
#
# Every run must give its figures with no failure its workload does not
# expect (each run names the replies it expects with -expect: a flood's
# refusals, R21's refusal of a new network), and every server must still
# run when its load ends. Anything else (a limit the benchmark runs into, a
# changed reply, a crash, a figure missing) is listed at the end and makes
# run.sh exit 1, so the benchmark cannot silently measure something else.
# The figures themselves are printed, never judged: SMOKE=1 is too short
# for them to mean anything.
#
# Everything lives in a temporary directory (KEEP=1 keeps it); nothing is
# installed outside the packages and nothing of Postfix's is left running.
set -euo pipefail

SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then
	RUNS=1 DUR=${DUR:-2s} WRITE=0
fi
RUNS=${RUNS:-3}
DUR=${DUR:-8s}
WRITE=${WRITE:-1}
KEEP=${KEEP:-0}
# W5's flood and W6's refusals last longer than the others' DUR: a flood
# needs time to fill the server's password checks. The smoke floods on
# fewer connections and sets up W4's sessions fewer at a time: on a busy CI
# machine a peer without a bound on its password hashes would take
# gigabytes, and submitd would answer logins that wait over hash_wait with
# 454, neither of which is what the smoke is for.
FLOOD=15s FLOODC=200 REFUSE=5s IDLE=200 IDLEPAR=8 NACCT=200 FSYNC_MSGS=500
if [ "$SMOKE" = 1 ]; then
	FLOOD=5s FLOODC=20 REFUSE=2s IDLE=40 IDLEPAR=4 NACCT=40 FSYNC_MSGS=100
fi
# W1s-rate's arrival rate, messages a second: a tenth or less of what
# submitd scanning with rspamd accepts on two busy cores.
SCAN_RATE=20
MADDY_VERSION=v0.8.1

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

ALL="W1 W1s W2 W3 W4 W5 W6"
SEL=${*:-$ALL}
for w in $SEL; do
	case " $ALL " in *" $w "*) ;; *) echo "run.sh: unknown workload $w (want some of: $ALL)" >&2; exit 2 ;; esac
done
SCAN=0
case " $SEL " in *" W1s "*) SCAN=1 ;; esac

# Loopback ports: submitd 4587/4465 (admin and metrics 4025), ceiling 3587/3465, Postfix 5587/5465,
# maddy 6587/6465, chasquid 7587/7465 (and its port 25 on 7025), smtp-sink 2625,
# rspamd 8333 (its controller 8334).
S_SUB=127.0.0.1:4587 S_SUBS=127.0.0.1:4465 S_ADMIN=127.0.0.1:4025
C_SUB=127.0.0.1:3587 C_SUBS=127.0.0.1:3465
P_SUB=127.0.0.1:5587 P_SUBS=127.0.0.1:5465
M_SUB=127.0.0.1:6587 M_SUBS=127.0.0.1:6465
Q_SUB=127.0.0.1:7587 Q_SUBS=127.0.0.1:7465 Q_SMTP=127.0.0.1:7025
SINK=127.0.0.1:2625
R_NORMAL=127.0.0.1:8333 R_CONTROLLER=127.0.0.1:8334
PASS=bench-password

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- what the machine needs ---------------------------------------------
install_packages() {
	local need=()
	command -v postfix >/dev/null || need+=(postfix)
	command -v smtp-sink >/dev/null || need+=(postfix)
	command -v saslpasswd2 >/dev/null || need+=(sasl2-bin)
	ls /usr/lib/*/sasl2/libplain.so* >/dev/null 2>&1 || need+=(libsasl2-modules)
	command -v openssl >/dev/null || need+=(openssl)
	command -v strace >/dev/null || need+=(strace)
	command -v chasquid >/dev/null || need+=(chasquid)
	if [ "$SCAN" = 1 ] && ! command -v rspamd >/dev/null; then need+=(rspamd); fi
	[ ${#need[@]} -eq 0 ] && return
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	log "installing ${need[*]}"
	# "No configuration": the system's Postfix stays unconfigured and
	# stopped; the benchmark runs a private instance.
	echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
	# chasquid's and rspamd's packages start their daemons on the system's
	# ports; the benchmark runs its own instances, so the system's are
	# stopped.
	local pkgs=(postfix sasl2-bin libsasl2-modules openssl strace chasquid)
	if [ "$SCAN" = 1 ]; then pkgs+=(rspamd); fi
	if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >/dev/null; then
		$sudo apt-get update >/dev/null
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${pkgs[@]}" >/dev/null
	fi
	if [ -d /run/systemd/system ]; then
		$sudo systemctl disable --now chasquid.service chasquid.socket >/dev/null 2>&1 || true
		$sudo systemctl disable --now rspamd.service >/dev/null 2>&1 || true
	fi
}
install_packages
[ "$(id -u)" -eq 0 ] || { echo "run.sh: Postfix's private instance needs root" >&2; exit 1; }
command -v go >/dev/null || export PATH=$PATH:/usr/local/go/bin
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

W=$(mktemp -d /tmp/submitd-bench.XXXXXX)
# Postfix's daemons run as the postfix user and must reach their files.
chmod 755 "$W"
BIN=$W/bin
RES=$W/results.jsonl
FAILS=$W/failures.txt
: >"$FAILS"
: >"$RES"
PIDS=()
cleanup() {
	set +e
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	[ -f "$W/postfix/queue/pid/master.pid" ] && postfix -c "$W/postfix/etc" stop >/dev/null 2>&1
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	if [ "$KEEP" = 1 ]; then log "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'log "run.sh: failed at line $LINENO: $BASH_COMMAND"' ERR

log "building into $BIN"
go build -o "$BIN/submitd" ./cmd/submitd
go build -o "$BIN/submitd-bench" ./cmd/submitd-bench
go build -o "$BIN/ceiling" ./bench/ceiling
# maddy is fetched into a scratch module and then built inside its own
# module directory with its own go.mod: built from the scratch module, Go
# would pick newer dependencies, with which it does not compile.
mkdir -p "$W/maddy-mod"
(
	cd "$W/maddy-mod"
	go mod init bench/maddy >/dev/null 2>&1
	go get -tool "github.com/foxcpp/maddy/cmd/maddy@$MADDY_VERSION" >/dev/null 2>&1 ||
		go get -tool "github.com/foxcpp/maddy/cmd/maddy@$MADDY_VERSION"
	cd "$(go list -m -f '{{.Dir}}' github.com/foxcpp/maddy)"
	go build -o "$BIN/maddy" ./cmd/maddy
)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
	-subj /CN=localhost -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
chmod 644 "$W/key.pem"

wait_port() { # host:port
	local i
	for i in $(seq 100); do
		(exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "run.sh: nothing listens on $1" >&2
	return 1
}

for a in $S_SUB $S_SUBS $C_SUB $C_SUBS $P_SUB $P_SUBS $M_SUB $M_SUBS $Q_SUB $Q_SUBS $Q_SMTP 127.0.2.53:53 $SINK \
	$R_NORMAL $R_CONTROLLER; do
	if (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null; then
		echo "run.sh: $a is in use; stop what listens there first" >&2
		exit 1
	fi
done

# --- smtp-sink, the delivery target of every server ----------------------
smtp-sink -u postfix "$SINK" 1024 >"$W/sink.log" 2>&1 &
PIDS+=($!)
wait_port $SINK

# --- submitd --------------------------------------------------------------
# Configured like a bulk sender's node; limits differ from the defaults only
# where a workload needs it: per_domain = 20 matches Postfix's
# default_destination_concurrency_limit, since all mail goes to one sink;
# the sink speaks no TLS; the sending limits are off (SPEC R19: 0 = no
# limit), since 200 accounts of one domain send thousands of messages a
# minute; and the benchmark mails like a compromised account, so a trip of
# [contain] only warns (the signals are still counted). Everything else,
# auth.min_duration, the guard and the login guard included, is the
# default.
SD=$W/submitd
mkdir -p "$SD"
cat >"$SD/submitd.toml" <<EOF
hostname = "bench.test"
data_dir = "$SD/data"
[listen]
smtp = ""
submission = "$S_SUB"
submissions = "$S_SUBS"
[tls]
cert = "$W/cert.pem"
key = "$W/key.pem"
[queue]
per_domain = 20
[delivery]
smarthost = "$SINK"
smarthost_tls = "none"
[admin]
listen = "$S_ADMIN"
[sending]
messages_per_hour = 0
recipients_per_hour = 0
recipients_per_day = 0
new_recipients_per_day = 0
[sending.domain]
messages_per_hour = 0
recipients_per_hour = 0
recipients_per_day = 0
new_recipients_per_day = 0
[contain]
action = "warn"
EOF
# W1s's submitd: the same node, scanning every message with the
# benchmark's rspamd before its 250 (SPEC R22). An rspamd that does not
# answer defers the message (451) instead of letting it pass unscanned, so
# that a run cannot measure submitd without the scan unnoticed.
{
	cat "$SD/submitd.toml"
	cat <<EOF
[scan]
rspamd_url = "http://$R_NORMAL"
on_error = "tempfail"
EOF
} >"$SD/submitd-scan.toml"
sd() { SUBMITD_CONFIG="$SD/submitd.toml" "$BIN/submitd" "$@"; }
sd domain add bench.test >/dev/null
"$BIN/submitd-bench" accounts -n $NACCT -password $PASS >"$W/accounts.txt"
# W5's legitimate logins: accounts that are not flooded.
"$BIN/submitd-bench" accounts -n $NACCT -user 'probe%d@bench.test' -password $PASS >>"$W/accounts.txt"
# W4's sessions log in with bcrypt: argon2id takes 19 MiB per login, which
# the Go runtime gives back only after its next collection, and an idle
# server collects rarely; W5 measures that memory.
"$BIN/submitd-bench" accounts -n $IDLE -user 'idle%d@bench.test' -scheme bcrypt -password $PASS >>"$W/accounts.txt"
sd account import "$W/accounts.txt" >/dev/null
SPID=""
start_submitd() { # [CONFIG]
	# Started directly, not through sd, so that $! is submitd itself.
	SUBMITD_CONFIG="${1:-$SD/submitd.toml}" "$BIN/submitd" serve >>"$SD/serve.log" 2>&1 &
	SPID=$!
	PIDS+=($SPID)
	wait_port $S_SUB
	wait_port $S_SUBS
}
stop_submitd() { kill "$SPID"; wait "$SPID" 2>/dev/null || true; }

# --- the go-smtp ceiling --------------------------------------------------
CPID=""
start_ceiling() {
	"$BIN/ceiling" -smtp $C_SUB -smtps $C_SUBS -cert "$W/cert.pem" -key "$W/key.pem" \
		-password $PASS -block 127.8.0.1/32 2>>"$W/ceiling.log" &
	CPID=$!
	PIDS+=($CPID)
	wait_port $C_SUB
	wait_port $C_SUBS
}
stop_ceiling() { kill "$CPID"; wait "$CPID" 2>/dev/null || true; }

# --- Postfix: a private instance with Cyrus SASL (sasldb) ----------------
PF=$W/postfix
mkdir -p "$PF/etc/sasl" "$PF/queue" "$PF/data"
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.test
mydestination =
mynetworks = 127.0.0.1/32
inet_protocols = ipv4
relayhost = [${SINK%:*}]:${SINK#*:}
maillog_file = $PF/maillog
maillog_file_prefixes = $PF
# No DNS here: no reverse lookup of clients, no lookups for the relay host.
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtpd_tls_cert_file = $W/cert.pem
smtpd_tls_key_file = $W/key.pem
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtp_tls_security_level = none
EOF
cat >"$PF/etc/master.cf" <<EOF
$P_SUB  inet n - n - - smtpd
$P_SUBS inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
proxywrite unix - - n - 1 proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
# Debian's Cyrus SASL reads CONFIG_DIRECTORY/sasl/smtpd.conf.
cat >"$PF/etc/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN
sasldb_path: $PF/sasldb2
EOF
for i in $(seq 0 $((NACCT - 1))); do
	echo $PASS | saslpasswd2 -p -c -f "$PF/sasldb2" -u bench.test "bench$i"
done
chown postfix "$PF/sasldb2"
chown -R postfix "$PF/data"
postfix -c "$PF/etc" set-permissions >/dev/null 2>&1 || true
postfix -c "$PF/etc" check
PPID_PF=""
start_postfix() {
	postfix -c "$PF/etc" start >/dev/null 2>&1
	wait_port $P_SUB
	wait_port $P_SUBS
	PPID_PF=$(tr -d ' ' <"$PF/queue/pid/master.pid")
}
stop_postfix() {
	postfix -c "$PF/etc" stop >/dev/null 2>&1 || true
	local i
	for i in $(seq 100); do kill -0 "$PPID_PF" 2>/dev/null || return 0; sleep 0.1; done
}
PF_QUEUE="find $PF/queue/maildrop $PF/queue/incoming $PF/queue/active $PF/queue/deferred $PF/queue/hold -type f"
SD_QUEUE="SUBMITD_CONFIG=$SD/submitd.toml $BIN/submitd queue list"

# --- chasquid: Debian's package, its own users database (scrypt) ----------
# chasquid delivers to the MX of the recipient's domain, on the port of its
# testing flag. It runs in a mount namespace of its own whose
# /etc/resolv.conf names a DNS server of the benchmark's on loopback
# (submitd-bench dns), which gives sink.bench.example an MX of itself at
# 127.0.0.1 and says every other name does not exist: the machine's own DNS
# may be slow or unreachable, and chasquid would retry later.
CQ=$W/chasquid
CQ_RCPT=sink@sink.bench.example
CQ_DNS=127.0.2.53
mkdir -p "$CQ/etc/certs/bench.test" "$CQ/etc/domains/bench.test" "$CQ/data"
cp "$W/cert.pem" "$CQ/etc/certs/bench.test/fullchain.pem"
cp "$W/key.pem" "$CQ/etc/certs/bench.test/privkey.pem"
echo "nameserver $CQ_DNS" >"$CQ/resolv.conf"
"$BIN/submitd-bench" dns -listen $CQ_DNS:53 -name sink.bench.example -addr ${SINK%:*} >"$CQ/dns.log" 2>&1 &
PIDS+=($!)
cat >"$CQ/etc/chasquid.conf" <<EOF
hostname: "bench.test"
smtp_address: "$Q_SMTP"
submission_address: "$Q_SUB"
submission_over_tls_address: "$Q_SUBS"
mail_delivery_agent_bin: "/bin/false"
data_dir: "$CQ/data"
mail_log_path: "$CQ/mail.log"
EOF
# One scrypt entry made by chasquid-util (its default parameters), given
# to every account: a hash per account would take chasquid-util a third of
# a second each, and chasquid has no credential cache for a salt to defeat.
chasquid-util -C="$CQ/etc" user-add "bench0@bench.test" --password=$PASS >/dev/null
awk -v n=$NACCT '
	/^users: \{/ { inblock = 1; block = ""; next }
	inblock && /^  key: / { next }
	inblock && /^\}/ { inblock = 0; next }
	inblock { block = block $0 "\n" }
	END {
		for (i = 0; i < n; i++) {
			printf "users: {\n  key: \"bench%d\"\n%s}\n", i, block
			printf "users: {\n  key: \"probe%d\"\n%s}\n", i, block
		}
	}' "$CQ/etc/domains/bench.test/users" >"$CQ/users.new"
mv "$CQ/users.new" "$CQ/etc/domains/bench.test/users"
chasquid-util -C="$CQ/etc" authenticate "probe$((NACCT - 1))@bench.test" --password=$PASS >/dev/null
QPID=""
start_chasquid() {
	unshare -m sh -c 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"' sh "$CQ/resolv.conf" \
		chasquid -config_dir "$CQ/etc" -testing__outgoing_smtp_port "${SINK#*:}" -logfile "$CQ/chasquid.log" &
	QPID=$!
	PIDS+=($QPID)
	wait_port $Q_SUB
	wait_port $Q_SUBS
}
stop_chasquid() { kill "$QPID"; wait "$QPID" 2>/dev/null || true; }
CQ_QUEUE="find $CQ/data/queue -type f"

# --- maddy: built above, accounts in a file table (argon2id) --------------
# The same argon2id parameters as submitd's (19 MiB, 2 passes, 1 lane), one
# hash for every account as for chasquid; maddy has no credential cache.
# Submission checks the sender against the login (authorize_sender), as
# submitd does, and queues for the sink with 20 deliveries at a time.
MD=$W/maddy
mkdir -p "$MD/state" "$MD/run"
MHASH=$("$BIN/maddy" hash --hash argon2 --argon2-time 2 --argon2-memory 19456 --argon2-threads 1 -p $PASS)
for i in $(seq 0 $((NACCT - 1))); do
	echo "bench$i@bench.test: $MHASH"
	echo "probe$i@bench.test: $MHASH"
done >"$MD/passwd"
cat >"$MD/maddy.conf" <<EOF
state_dir $MD/state
runtime_dir $MD/run
hostname bench.test
tls file $W/cert.pem $W/key.pem
log $MD/maddy.log
auth.pass_table local_authdb {
    table file $MD/passwd
}
target.smtp sink {
    targets tcp://$SINK
    starttls no
}
target.queue outbound {
    target &sink
    max_parallelism 20
    autogenerated_msg_domain bench.test
    bounce {
        default_destination {
            reject 550 5.0.0 "No bounces in the benchmark"
        }
    }
}
submission tcp://$M_SUB tls://$M_SUBS {
    auth &local_authdb
    source bench.test {
        check {
            authorize_sender {
                user_to_email identity
            }
        }
        default_destination {
            deliver_to &outbound
        }
    }
    default_source {
        reject 501 5.1.8 "Non-local sender domain"
    }
}
EOF
MPID=""
start_maddy() {
	"$BIN/maddy" -config "$MD/maddy.conf" run >>"$MD/stderr.log" 2>&1 &
	MPID=$!
	PIDS+=($MPID)
	wait_port $M_SUB
	wait_port $M_SUBS
}
stop_maddy() { kill "$MPID"; wait "$MPID" 2>/dev/null || true; }
MD_QUEUE="find $MD/state/outbound -type f"

# --- rspamd: W1s's content scanner, one for the whole run ----------------
# Started with the configuration the tests start theirs with
# (internal/testutil/rspamd: Debian's rules, no Redis, one normal worker),
# its resolver the benchmark's DNS server, which says no name but the
# sink's exists, so no check waits on the network; and the tests' cache of
# compiled rules. Its first start on a machine compiles them (tens of
# seconds); until the compiled rules are loaded its worker matches without
# them, slower, so a start on an empty cache waits until the cache has
# stopped changing.
RS=$W/rspamd
RSPID=""
rspamd_ping() {
	local reply
	reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2" && printf "GET /ping HTTP/1.0\r\n\r\n" >&3 && head -1 <&3' \
		sh "${R_NORMAL%:*}" "${R_NORMAL#*:}" 2>/dev/null) || return 1
	case $reply in *" 200 "*) return 0 ;; esac
	return 1
}
start_rspamd() {
	local hs=${TMPDIR:-/tmp}/submitd-rspamd-hs-cache cold=0 t0 i user=_rspamd
	mkdir -p "$RS/db"
	cp -r internal/testutil/rspamd/. "$RS/"
	# rspamd drops privileges to its own user, which writes here.
	chmod 777 "$RS" "$RS/db"
	[ -n "$(ls -A "$hs" 2>/dev/null)" ] || cold=1
	mkdir -p "$hs"
	chmod 777 "$hs"
	id "$user" >/dev/null 2>&1 || user=nobody
	t0=$(date +%s)
	rspamd -f -c "$RS/rspamd.conf" --var=LOCAL_CONFDIR="$RS" --var=DBDIR="$RS/db" --var=RUNDIR="$RS" \
		--var=LOGDIR="$RS" --var=HS_CACHE="$hs" --var=NAMESERVER="$CQ_DNS:53" --var=NORMAL="$R_NORMAL" \
		--var=CONTROLLER="$R_CONTROLLER" -u "$user" -g "$(id -gn "$user")" >"$RS/stdout.log" 2>&1 &
	RSPID=$!
	PIDS+=($RSPID)
	for i in $(seq 1500); do
		rspamd_ping && break
		kill -0 "$RSPID" 2>/dev/null || { cat "$RS/stdout.log" "$RS/rspamd.log" >&2; echo "run.sh: rspamd exited" >&2; exit 1; }
		[ "$i" -lt 1500 ] || { echo "run.sh: rspamd does not answer on $R_NORMAL after 5 minutes" >&2; exit 1; }
		sleep 0.2
	done
	if [ "$cold" = 1 ]; then
		# rspamd writes each class of compiled rules as it is done, and
		# loads them all a second after the last.
		local last="" now
		for i in $(seq 60); do
			now=$(ls -l "$hs" | md5sum)
			[ "$now" = "$last" ] && break
			last=$now
			sleep 5
		done
	fi
	log "rspamd ready after $(($(date +%s) - t0))s (compiled rules cache in $hs$([ $cold = 1 ] && echo ', empty before'))"
}
if [ "$SCAN" = 1 ]; then start_rspamd; fi

# --- one run --------------------------------------------------------------
start_srv() { # SRV: start it; $pid is its process, $tree set for Postfix
	tree=""
	case $1 in
	submitd) start_submitd; pid=$SPID ;;
	submitd+rspamd) start_submitd "$SD/submitd-scan.toml"; pid=$SPID ;;
	ceiling) start_ceiling; pid=$CPID ;;
	postfix) start_postfix; pid=$PPID_PF; tree=-pid-tree ;;
	chasquid) start_chasquid; pid=$QPID ;;
	maddy) start_maddy; pid=$MPID ;;
	esac
}
stop_srv() { # SRV: wait for its queue to empty and stop it
	case $1 in
	submitd | submitd+rspamd) drain_queue "$SD_QUEUE"; stop_submitd ;;
	ceiling) stop_ceiling ;;
	postfix) drain_queue "$PF_QUEUE"; stop_postfix ;;
	chasquid) drain_queue "$CQ_QUEUE"; stop_chasquid ;;
	maddy) drain_queue "$MD_QUEUE"; stop_maddy ;;
	esac
}
queue_cmd() { # SRV: the command that prints nothing once its queue is empty
	case $1 in
	submitd | submitd+rspamd) echo "$SD_QUEUE" ;; postfix) echo "$PF_QUEUE" ;;
	chasquid) echo "$CQ_QUEUE" ;; maddy) echo "$MD_QUEUE" ;;
	esac
}
rcpt() { # SRV: the recipient, one at the sink
	case $1 in chasquid) echo $CQ_RCPT ;; *) echo sink@example.net ;; esac
}

# fail MESSAGE: a fault of the run, listed at the end (run.sh then exits 1).
fail() {
	echo "$*" >>"$FAILS"
	log "FAULT: $*"
}

# bench W SRV RUN ARGS...: start SRV, run the load, wait for its queue to
# empty (outside the measurement), stop it. A run that has failures its
# workload does not expect or lacks a figure (submitd-bench -strict), gives
# no result, or outlives its server is a fault.
bench() {
	local w=$1 srv=$2 r=$3 pid tree out=$W/run.out lines
	shift 3
	start_srv "$srv"
	if [ -n "${WARMUP:-}" ]; then
		# Not measured: every account logs in once, as returning customers
		# have; a server with a credential cache answers later logins from it.
		# Four at a time, so that no login waits past submitd's hash_wait
		# (and leaves its account out of the cache) on a busy machine.
		log "warm-up $w $srv"
		"$BIN/submitd-bench" $WARMUP -to "$(rcpt "$srv")" >"$out" 2>&1 ||
			fail "$w $srv warm-up: $(tail -1 "$out")"
	fi
	log "run $r/$RUNS $w $srv"
	lines=$(wc -l <"$RES")
	if ! "$BIN/submitd-bench" -strict -json "$RES" -tag w="$w" -tag srv="$srv" -tag run="$r" -pid "$pid" $tree \
		-to "$(rcpt "$srv")" "$@" >"$out" 2>&1; then
		fail "$w $srv run $r: $(tail -1 "$out")"
	fi
	sed 's/^/    /' "$out" >&2
	[ "$(wc -l <"$RES")" -gt "$lines" ] || fail "$w $srv run $r: no figures"
	kill -0 "$pid" 2>/dev/null || fail "$w $srv run $r: the server exited during the load (see its log in $W)"
	stop_srv "$srv"
}

# drain_queue CMD: wait (up to two minutes) until CMD prints nothing, so
# that one run's deliveries do not load the next.
drain_queue() {
	local i
	for i in $(seq 600); do
		[ -z "$(sh -c "$1" 2>/dev/null)" ] && return 0
		sleep 0.2
	done
	fail "queue still not empty after two minutes: $1"
}

addr() { # SRV starttls|implicit
	case $1-$2 in
	submitd-starttls | submitd+rspamd-starttls) echo $S_SUB ;; submitd-implicit) echo $S_SUBS ;;
	ceiling-starttls) echo $C_SUB ;; ceiling-implicit) echo $C_SUBS ;;
	postfix-starttls) echo $P_SUB ;; postfix-implicit) echo $P_SUBS ;;
	chasquid-starttls) echo $Q_SUB ;; chasquid-implicit) echo $Q_SUBS ;;
	maddy-starttls) echo $M_SUB ;; maddy-implicit) echo $M_SUBS ;;
	esac
}

# order RUN SRV...: the servers rotated by the round number, so that no
# server always runs first (on a cold cache) or last (after the others'
# deliveries and garbage).
order() {
	local r=$1
	shift
	local n=$# i
	for i in $(seq 0 $((n - 1))); do
		local k=$(((i + r - 1) % n + 1))
		echo "${!k}"
	done
}

# flood_expect SRV: what a wrong-password flood gets besides 535, and what
# the flooded login's owner gets from a new network. submitd: a full
# password-check pool answers 454 (SPEC R16a; uncached logins too), the
# guard closes the connection that reaches the limit and refuses the
# address's next ones with 554 (R11), and R21 refuses a login under attack
# from a new network with 535.
flood_expect() { # SRV: sets EXPECT
	EXPECT=()
	case $1 in
	submitd) EXPECT=(-expect "454 4.7.0" -expect "closed by server" -expect "reset by server" -expect "554 5.1.0"
		-expect "uncached=454 4.7.0" -expect "owner-trusted=454 4.7.0"
		-expect "owner-new=535 5.1.0" -expect "owner-new=454 4.7.0") ;;
	# chasquid and maddy check every password as it comes, with no bound on
	# the hashes under way (scrypt and argon2id, 16 and 19 MiB each): under
	# the flood a login can take longer than the client's 30 s, and the
	# share served says how many did not. maddy 0.8.1 answers a wrong
	# password with "454 4.7.0 auth: invalid credentials", a temporary
	# reply, instead of 535 (RFC 4954 §6); chasquid closes a connection
	# after too many errors with "421 4.5.0".
	chasquid) EXPECT=(-expect "421 4.5.0" -expect timeout -expect cached=timeout -expect uncached=timeout
		-expect owner-trusted=timeout -expect owner-new=timeout) ;;
	maddy) EXPECT=(-wrong-reply 454 -expect timeout -expect cached=timeout -expect uncached=timeout
		-expect owner-trusted=timeout -expect owner-new=timeout) ;;
	esac
}

# W1's load, also W1s's and that of the fsync count.
W1_LOAD=(-c 20 -sources 20 -src 127.1.0.1 -accounts 20 -size 4096)

# The ceiling takes any login with the right password; the others know
# bench0…bench199@bench.test and, for W5, probe0…probe199@bench.test. Each
# workload dials from its own range of 127.x addresses (W1s, W1's load,
# from W1's), so blocks left by W5 and W6 touch no other workload.
workload() { # W RUN
	local w=$1 r=$2 srv
	case $w in
	W1) for srv in $(order "$r" ceiling submitd postfix chasquid maddy); do
		local drain=()
		[ $srv != ceiling ] && drain=(-drain-cmd "$(queue_cmd $srv)")
		bench W1 $srv "$r" -addr "$(addr $srv starttls)" "${W1_LOAD[@]}" -duration "$DUR" "${drain[@]}"
	done ;;
	# W1 against submitd without and with content scanning, side by side:
	# as fast as it goes (closed loop, W1s) and at SCAN_RATE messages a
	# second (open loop, W1s-rate), where neither submitd nor rspamd is
	# saturated and a scan's time is its own, not a queue's. The scanning
	# runs read submitd's scan metrics around the load, which also checks
	# that every message was scanned and passed ("no action").
	W1s) for run in $(order "$r" off on off-rate on-rate); do
		local srv=submitd w=W1s args=("${W1_LOAD[@]}" -duration "$DUR")
		case $run in on*) srv=submitd+rspamd args+=(-scan-metrics "http://$S_ADMIN/metrics") ;; esac
		case $run in *-rate) w=W1s-rate args+=(-rate "$SCAN_RATE" -tag rate="$SCAN_RATE") ;; esac
		bench $w $srv "$r" -addr "$(addr $srv starttls)" "${args[@]}"
	done
		kill -0 "$RSPID" 2>/dev/null || fail "W1s run $r: rspamd exited (see its log in $RS)" ;;
	W2) for sec in starttls implicit; do
		for srv in $(order "$r" ceiling submitd postfix chasquid maddy); do
			WARMUP="-addr $(addr $srv $sec) -tls $sec -k 1 -c 4 -sources 20 -src 127.2.0.1 -accounts $NACCT -n $NACCT -size 1024" \
				bench "W2${sec:0:1}" $srv "$r" -addr "$(addr $srv $sec)" -tls $sec -k 1 -c 20 -sources 20 \
				-src 127.2.0.1 -accounts $NACCT -size 4096 -duration "$DUR"
		done
	done ;;
	W3) for srv in $(order "$r" ceiling submitd); do
		bench W3 $srv "$r" -addr "$(addr $srv starttls)" -c 10 -sources 10 -src 127.3.0.1 \
			-accounts 10 -size 1048576 -duration "$DUR"
	done ;;
	W4) for srv in $(order "$r" ceiling submitd); do
		bench W4 $srv "$r" -mode idle -addr "$(addr $srv starttls)" -c $IDLE -sources $((IDLE / 20)) -src 127.4.0.1 \
			-user 'idle%d@bench.test' -accounts $IDLE -setup-parallel $IDLEPAR -duration 1s -timeout 120s
	done ;;
	# The flood guesses 20 logins, so that each is under attack (SPEC R21:
	# 20 failures from networks it never logged in from) within the first
	# seconds; the legitimate logins use accounts it leaves alone.
	W5) for srv in $(order "$r" ceiling submitd chasquid maddy); do
		flood_expect $srv
		bench W5 $srv "$r" -mode flood -addr "$(addr $srv starttls)" -c $FLOODC -sources 2000 -src 127.5.0.1 \
			-accounts 20 -probe-user 'probe%d@bench.test' -probe-accounts $NACCT \
			-probe-every 100ms -probe-src 127.9.0.1 -owner-new-src 127.10.0.1 -duration $FLOOD "${EXPECT[@]}"
	done
		# The next round floods from the same addresses; it starts unblocked.
		sd unblock 127.5.0.0/16 127.9.0.0/16 127.10.0.0/16 >/dev/null ;;
	W6) for sec in starttls implicit; do
		local tag=W6p
		[ $sec = implicit ] && tag=W6i
		for srv in $(order "$r" ceiling submitd); do
			bench $tag $srv "$r" -mode refused -addr "$(addr $srv $sec)" -tls $sec -c 8 \
				-blocked-src 127.8.0.1 -accounts 1 -duration $REFUSE
		done
	done ;;
	esac
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u +%s)
for r in $(seq "$RUNS"); do
	for w in $SEL; do workload "$w" "$r"; done
done

# --- fsync calls per message ----------------------------------------------
# A count, which tracing does not change, so it is taken once, apart from
# the timed runs: W1's load for 500 messages (SMOKE=1: 100) under strace, from the start
# of the load until the queue is empty again (accepting and delivering).
# wait_traced PID STRACE: wait until strace (process STRACE) has attached
# to every thread of PID, so that the load's first fsync calls are counted.
wait_traced() {
	local i
	for i in $(seq 300); do
		grep -q '^TracerPid:[[:space:]]*0$' /proc/"$1"/task/*/status 2>/dev/null || return 0
		kill -0 "$2" 2>/dev/null || break
		sleep 0.1
	done
	fail "strace did not attach to process $1"
}
count_fsyncs() { # SRV
	local srv=$1 pid tree out=$W/strace-$1.txt
	start_srv "$srv"
	strace -f -c -e trace=fsync,fdatasync -o "$out" -p "$pid" 2>/dev/null &
	local tpid=$!
	wait_traced "$pid" "$tpid"
	log "fsync count W1 $srv"
	"$BIN/submitd-bench" -strict -json "$W/fsync.jsonl" -tag w=W1f -tag srv="$srv" -addr "$(addr $srv starttls)" \
		-to "$(rcpt "$srv")" "${W1_LOAD[@]}" -n $FSYNC_MSGS -duration 2m \
		>"$W/run.out" 2>&1 || fail "W1f $srv: $(tail -1 "$W/run.out")"
	drain_queue "$(queue_cmd "$srv")"
	kill -INT $tpid
	wait $tpid 2>/dev/null || true
	local calls ok
	calls=$(awk '$NF == "fsync" || $NF == "fdatasync" { s += $4 } END { print s + 0 }' "$out")
	ok=$(tail -1 "$W/fsync.jsonl" | sed 's/.*"ok":\([0-9]*\).*/\1/')
	if [ "${ok:-0}" -gt 0 ]; then
		printf '{"tags":{"w":"W1f","srv":"%s"},"mode":"send","ok":%s,"fsyncs_per_msg":%s}\n' \
			"$srv" "$ok" "$(awk -v c="$calls" -v n="$ok" 'BEGIN { printf "%.2f", c / n }')" >>"$RES"
		log "    $calls fsync calls for $ok messages"
	fi
	stop_srv "$srv"
}
case " $SEL " in *" W1 "*)
	for srv in submitd postfix chasquid maddy; do count_fsyncs $srv; done ;;
esac

LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table ------------------------------------------------------------
TABLE=$W/table.md
{
	echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (with local changes)')"
	echo "by \`bench/run.sh $SEL\` with RUNS=$RUNS DUR=$DUR in $(( $(date -u +%s) - START ))s:"
	echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')),"
	echo "$(df --output=fstype "$W" | tail -1 | tr -d ' ') filesystem, Linux $(uname -r), $(go version | cut -d' ' -f3),"
	echo "Postfix $(postconf -d -h mail_version 2>/dev/null), chasquid $(dpkg-query -W -f '${Version}' chasquid 2>/dev/null), maddy $MADDY_VERSION;"
	echo "$(free -g | awk '/^Mem:/ { print $2 }') GiB of memory; load average $LOAD0 before, $LOAD1 after."
	echo "(A load average above the core count means other work shared the machine: the ratios,"
	echo "taken side by side, still compare; the absolute figures are then low.)"
	echo
	"$BIN/submitd-bench" table "$RES"
} >"$TABLE"
cat "$TABLE"
if [ "$WRITE" = 1 ] && grep -q '<!-- results start -->' BENCHMARKS.md; then
	cp "$RES" "$ROOT/bench/results.jsonl"
	awk -v table="$TABLE" '
		/<!-- results start -->/ { print; while ((getline l < table) > 0) print l; skip = 1; next }
		/<!-- results end -->/ { skip = 0 }
		!skip' BENCHMARKS.md >"$W/BENCHMARKS.md"
	cp "$W/BENCHMARKS.md" BENCHMARKS.md
	log "table written into BENCHMARKS.md; raw results in bench/results.jsonl"
fi

# --- faults ----------------------------------------------------------------
if [ -s "$FAILS" ]; then
	echo >&2
	echo "run.sh: $(wc -l <"$FAILS") fault(s): the benchmark did not measure what it says:" >&2
	sed 's/^/  /' "$FAILS" >&2
	exit 1
fi
[ "$SMOKE" = 1 ] && log "smoke: every workload ran against every server with no fault"
exit 0
