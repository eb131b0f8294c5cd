#!/usr/bin/env bash
# bench/run.sh — the benchmarks of BENCHMARKS.md in one command.
#
#   bench/run.sh                 all workloads, RUNS=3 rounds
#   bench/run.sh W1 W3           a subset (W1 W2 W3 W4 W5 W6)
#   RUNS=1 DUR=5s bench/run.sh   fewer and shorter runs
#
# It installs what it needs (Postfix, Cyrus SASL, openssl; Go must be on
# PATH or in /usr/local/go), builds submitd, submitd-bench and the go-smtp
# ceiling, starts the three servers on loopback ports with one self-signed
# ECDSA certificate, runs each workload against each server in turn (the
# servers interleaved within every round, each server restarted for each
# run so peak memory is per run), and writes the table of medians into
# BENCHMARKS.md between its "results" markers (WRITE=0: print only).
#
# Everything lives in a temporary directory (KEEP=1 keeps it); nothing is
# installed outside the packages and nothing of Postfix's is left running.
set -euo pipefail

RUNS=${RUNS:-3}
DUR=${DUR:-8s}
WRITE=${WRITE:-1}
KEEP=${KEEP:-0}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

ALL="W1 W2 W3 W4 W5 W6"
SEL=${*:-$ALL}
for w in $SEL; do
	case " $ALL " in *" $w "*) ;; *) echo "run.sh: unknown workload $w (want some of: $ALL)" >&2; exit 2 ;; esac
done

# Loopback ports: submitd 4587/4465 (admin and metrics 4025), ceiling 3587/3465, Postfix 5587/5465,
# smtp-sink 2625.
S_SUB=127.0.0.1:4587 S_SUBS=127.0.0.1:4465 S_ADMIN=127.0.0.1:4025
C_SUB=127.0.0.1:3587 C_SUBS=127.0.0.1:3465
P_SUB=127.0.0.1:5587 P_SUBS=127.0.0.1:5465
SINK=127.0.0.1:2625
PASS=bench-password
NACCT=200

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
	[ ${#need[@]} -eq 0 ] && return
	local sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	log "installing ${need[*]}"
	# "No configuration": the system's Postfix stays unconfigured and
	# stopped; the benchmark runs a private instance.
	echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
	if ! $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y postfix sasl2-bin libsasl2-modules openssl strace >/dev/null; then
		$sudo apt-get update >/dev/null
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y postfix sasl2-bin libsasl2-modules openssl strace >/dev/null
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

for a in $S_SUB $S_SUBS $C_SUB $C_SUBS $P_SUB $P_SUBS $SINK; do
	if (exec 3<>"/dev/tcp/${a%:*}/${a#*:}") 2>/dev/null; then
		echo "run.sh: $a is in use; stop what listens there first" >&2
		exit 1
	fi
done

# --- smtp-sink, the delivery target of submitd and Postfix ---------------
smtp-sink -u postfix "$SINK" 1024 >"$W/sink.log" 2>&1 &
PIDS+=($!)
wait_port $SINK

# --- submitd --------------------------------------------------------------
# Limits differ from the defaults only where a workload needs it:
# per_domain = 20 matches Postfix's default_destination_concurrency_limit,
# since all mail goes to one sink; the sink speaks no TLS; the benchmark
# mails like a compromised account, so a trip of [contain] only warns (the
# signals are still counted). Everything else, auth.min_duration and the
# guard included, is the default.
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
[contain]
action = "warn"
EOF
sd() { SUBMITD_CONFIG="$SD/submitd.toml" "$BIN/submitd" "$@"; }
sd domain add bench.test >/dev/null
"$BIN/submitd-bench" accounts -n $NACCT -password $PASS >"$W/accounts.txt"
# W4's sessions log in with bcrypt: argon2id takes 19 MiB per login, which
# the Go runtime gives back only after its next collection, and an idle
# server collects rarely; W5 measures that memory.
"$BIN/submitd-bench" accounts -n $NACCT -user 'idle%d@bench.test' -scheme bcrypt -password $PASS >>"$W/accounts.txt"
sd account import "$W/accounts.txt" >/dev/null
SPID=""
start_submitd() {
	# Started directly, not through sd, so that $! is submitd itself.
	SUBMITD_CONFIG="$SD/submitd.toml" "$BIN/submitd" serve >>"$SD/serve.log" 2>&1 &
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

# --- one run --------------------------------------------------------------
# bench W SRV RUN ARGS...: start SRV, run the load, wait for its queue to
# empty (outside the measurement), stop it.
bench() {
	local w=$1 srv=$2 r=$3 pid tree=""
	shift 3
	case $srv in
	submitd) start_submitd; pid=$SPID ;;
	ceiling) start_ceiling; pid=$CPID ;;
	postfix) start_postfix; pid=$PPID_PF; tree=-pid-tree ;;
	esac
	if [ -n "${WARMUP:-}" ]; then
		# Not measured: every account logs in once, as returning customers
		# have; a server with a credential cache answers later logins from it.
		log "warm-up $w $srv"
		"$BIN/submitd-bench" $WARMUP >/dev/null 2>&1 || log "warm-up $w $srv failed"
	fi
	log "run $r/$RUNS $w $srv"
	"$BIN/submitd-bench" -json "$RES" -tag w="$w" -tag srv="$srv" -tag run="$r" -pid "$pid" $tree "$@" 2>&1 |
		sed 's/^/    /' >&2 || log "run $r $w $srv failed"
	case $srv in
	submitd) drain_queue "$SD_QUEUE"; stop_submitd ;;
	ceiling) stop_ceiling ;;
	postfix) drain_queue "$PF_QUEUE"; stop_postfix ;;
	esac
}

# drain_queue CMD: wait (up to two minutes) until CMD prints nothing, so
# that one run's deliveries do not load the next.
drain_queue() {
	local i
	for i in $(seq 600); do
		[ -z "$(sh -c "$1" 2>/dev/null)" ] && return 0
		sleep 0.2
	done
	log "queue still not empty: $1"
}

addr() { # SRV starttls|implicit
	case $1-$2 in
	submitd-starttls) echo $S_SUB ;; submitd-implicit) echo $S_SUBS ;;
	ceiling-starttls) echo $C_SUB ;; ceiling-implicit) echo $C_SUBS ;;
	postfix-starttls) echo $P_SUB ;; postfix-implicit) echo $P_SUBS ;;
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

# The ceiling takes any login with the right password; submitd and Postfix
# know bench0…bench199@bench.test. Each workload dials from its own range
# of 127.x addresses, so blocks left by W5 and W6 touch no other workload.
workload() { # W RUN
	local w=$1 r=$2 srv
	case $w in
	W1) for srv in $(order "$r" ceiling submitd postfix); do
		local drain=()
		[ $srv = submitd ] && drain=(-drain-cmd "$SD_QUEUE")
		[ $srv = postfix ] && drain=(-drain-cmd "$PF_QUEUE")
		bench W1 $srv "$r" -addr "$(addr $srv starttls)" -c 20 -sources 20 -src 127.1.0.1 \
			-accounts 20 -size 4096 -duration "$DUR" "${drain[@]}"
	done ;;
	W2) for sec in starttls implicit; do
		for srv in $(order "$r" ceiling submitd postfix); do
			WARMUP="-addr $(addr $srv $sec) -tls $sec -k 1 -c 20 -sources 20 -src 127.2.0.1 -accounts $NACCT -n $NACCT -size 1024" \
				bench "W2${sec:0:1}" $srv "$r" -addr "$(addr $srv $sec)" -tls $sec -k 1 -c 20 -sources 20 \
				-src 127.2.0.1 -accounts $NACCT -size 4096 -duration "$DUR"
		done
	done ;;
	W3) for srv in $(order "$r" ceiling submitd); do
		bench W3 $srv "$r" -addr "$(addr $srv starttls)" -c 10 -sources 10 -src 127.3.0.1 \
			-accounts 10 -size 1048576 -duration "$DUR"
	done ;;
	W4) for srv in $(order "$r" ceiling submitd); do
		bench W4 $srv "$r" -mode idle -addr "$(addr $srv starttls)" -c 200 -sources 10 -src 127.4.0.1 \
			-user 'idle%d@bench.test' -accounts $NACCT -duration 1s -timeout 120s
	done ;;
	W5) for srv in $(order "$r" ceiling submitd); do
		bench W5 $srv "$r" -mode flood -addr "$(addr $srv starttls)" -c 200 -sources 2000 -src 127.5.0.1 \
			-accounts $NACCT -probe-every 200ms -probe-src 127.9.0.1 -duration 15s
	done
		# The next round floods from the same addresses; it starts unblocked.
		sd unblock 127.5.0.0/16 127.9.0.0/16 >/dev/null ;;
	W6) for sec in starttls implicit; do
		local tag=W6p
		[ $sec = implicit ] && tag=W6i
		for srv in $(order "$r" ceiling submitd); do
			bench $tag $srv "$r" -mode refused -addr "$(addr $srv $sec)" -tls $sec -c 8 \
				-blocked-src 127.8.0.1 -accounts 1 -duration 5s
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
# the timed runs: W1's load for 500 messages under strace, from the start
# of the load until the queue is empty again (accepting and delivering).
count_fsyncs() { # SRV
	local srv=$1 pid queue out=$W/strace-$1.txt
	case $srv in
	submitd) start_submitd; pid=$SPID queue=$SD_QUEUE ;;
	postfix) start_postfix; pid=$PPID_PF queue=$PF_QUEUE ;;
	esac
	strace -f -c -e trace=fsync,fdatasync -o "$out" -p "$pid" 2>/dev/null &
	local tpid=$!
	sleep 1
	log "fsync count W1 $srv"
	"$BIN/submitd-bench" -json "$W/fsync.jsonl" -tag w=W1f -tag srv="$srv" -addr "$(addr $srv starttls)" \
		-c 20 -sources 20 -src 127.1.0.1 -accounts 20 -size 4096 -n 500 -duration 2m >/dev/null 2>&1 || true
	drain_queue "$queue"
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
	case $srv in submitd) stop_submitd ;; postfix) stop_postfix ;; esac
}
case " $SEL " in *" W1 "*)
	if command -v strace >/dev/null; then count_fsyncs submitd; count_fsyncs postfix; fi ;;
esac

LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the table ------------------------------------------------------------
TABLE=$W/table.md
{
	echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (with local changes)')"
	echo "by \`bench/run.sh $SEL\` with RUNS=$RUNS DUR=$DUR in $(( $(date -u +%s) - START ))s:"
	echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')),"
	echo "$(df --output=fstype "$W" | tail -1 | tr -d ' ') filesystem, Linux $(uname -r), $(go version | cut -d' ' -f3),"
	echo "Postfix $(postconf -d -h mail_version 2>/dev/null); load average $LOAD0 before, $LOAD1 after."
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
