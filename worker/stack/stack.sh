#!/usr/bin/env bash
# `sentiment-stack` (scripts/stack in the repository). Local services for development and tests: a single-node
# Apache Kafka 4.x broker (KRaft, broker and controller in one JVM, jars from Maven Central) and a redis-server,
# both bound to 127.0.0.1, with all
# their files under .stack/ in STACK_HOME (the current folder). No Docker needed. Usage: sentiment-stack help
# Ships inside the worker package (worker/stack/), with the files beside it, so that a pip install has it.
#
# Secured mode (`sentiment-stack up --secure`, or STACK_SECURE=1): Kafka accepts only SASL_SSL with
# SCRAM-SHA-512 users, Redis only TLS with ACL users; certificates, passwords and ACLs are generated under
# .stack/secure/ on other ports, so it runs beside the plain stack.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Where .stack/ goes: the repository's root for scripts/stack, the current folder for sentiment-stack.
STACK_HOME=$(cd "${STACK_HOME:-.}" && pwd)
NAME=${STACK_NAME:-sentiment-stack}
SECURE=${STACK_SECURE:-0}
ARGS=()
for arg in "$@"; do
    if [[ $arg == --secure ]]; then SECURE=1; else ARGS+=("$arg"); fi
done
set -- "${ARGS[@]+"${ARGS[@]}"}"
[[ $SECURE == 1 || $SECURE == 0 ]] || { echo "stack: error: STACK_SECURE must be 0 or 1" >&2; exit 2; }
if [[ $SECURE == 1 ]]; then
    STACK_DIR=${STACK_DIR:-$STACK_HOME/.stack/secure}
    KAFKA_PORT=${STACK_KAFKA_PORT:-9192}
    CONTROLLER_PORT=${STACK_CONTROLLER_PORT:-9193}
    REDIS_PORT=${STACK_REDIS_PORT:-6391}
else
    STACK_DIR=${STACK_DIR:-$STACK_HOME/.stack}
    KAFKA_PORT=${STACK_KAFKA_PORT:-9092}
    CONTROLLER_PORT=${STACK_CONTROLLER_PORT:-9093}
    REDIS_PORT=${STACK_REDIS_PORT:-6390}
fi
HOST=127.0.0.1
# Off for the fault suite, as in most production clusters: a missing topic then stays missing.
AUTO_CREATE_TOPICS=${STACK_AUTO_CREATE_TOPICS:-true}
# A second plaintext listener that advertises another port, where the fault suite's TCP proxy listens, so
# clients that bootstrap through the proxy keep talking through it (the broker's metadata names the proxy).
PROXIED_PORT=${STACK_PROXIED_PORT:-}
PROXY_PORT=${STACK_PROXY_PORT:-}
KAFKA_VERSION=${STACK_KAFKA_VERSION:-4.3.1}
WAIT_S=${STACK_WAIT_S:-120}
STOP_WAIT_S=${STACK_STOP_WAIT_S:-30}
KAFKA_HEAP_OPTS=${STACK_KAFKA_HEAP_OPTS:--Xmx768m -Xms256m}
# SerialGC and C1-only JIT: the broker here serves tests on a small shared machine, where a quick start and
# a small footprint matter more than peak throughput.
KAFKA_JVM_OPTS=${STACK_KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError}

POM=$HERE/kafka/pom.xml
KDIR=$STACK_DIR/kafka
RDIR=$STACK_DIR/redis
KPID=$STACK_DIR/kafka.pid
RPID=$STACK_DIR/redis.pid
ENV_FILE=$STACK_DIR/env
KLOG=$KDIR/server.log
RLOG=$RDIR/redis.log
PY=${STACK_PYTHON:-python3}
TLS_DIR=$STACK_DIR/tls
SECRETS_DIR=$STACK_DIR/secrets

die() { echo "stack: error: $*" >&2; exit 1; }
note() { echo "stack: $*"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# shellcheck disable=SC2015 # "A && B || die": die when either test fails, which is the point
valid_port() { [[ $1 =~ ^[0-9]+$ ]] && (($1 > 0 && $1 < 65536)) || die "bad port '$1' (set by STACK_*_PORT)"; }

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# Prints the PID recorded in $1 if that process is alive, not a zombie, and its command line contains $2
# (so a recycled PID never gets mistaken for ours).
live_pid() {
    local file=$1 pattern=$2 pid state
    [[ -s $file ]] || return 1
    pid=$(<"$file")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(proc_state "$pid") || return 1
    [[ $state != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$pattern" || return 1
    echo "$pid"
}
kafka_pid() { live_pid "$KPID" "$KDIR/server.properties"; }
redis_pid() { live_pid "$RPID" "redis-server"; }

proc_state() { awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null; }

# A fault test may SIGSTOP a server; waiting on it would only time out, so say what is going on instead.
refuse_paused() {
    local name=$1 pid=$2
    [[ $(proc_state "$pid") != T ]] ||
        die "$name (pid $pid) is paused (SIGSTOP): resume it with 'kill -CONT $pid' or restart it with '$NAME restart-${name,,}'"
}

rss_mib() { ps -o rss= -p "$1" 2>/dev/null | awk '{ printf "%.0f MiB", $1 / 1024 }'; }

redis_ping() {
    if [[ $SECURE == 1 ]]; then
        # the default user is off: ping as the admin user, over TLS (password via env, not argv)
        [[ $(REDISCLI_AUTH=$(<"$SECRETS_DIR/redis-admin") timeout 3 redis-cli -h "$HOST" -p "$REDIS_PORT" \
            --tls --cacert "$TLS_DIR/ca.crt" --user admin ping 2>/dev/null) == PONG ]]
    elif command -v redis-cli >/dev/null; then
        # timeout: a paused server accepts the connection but never answers
        [[ $(timeout 3 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
    else
        local reply
        exec 4<>"/dev/tcp/$HOST/$REDIS_PORT" 2>/dev/null || return 1
        printf 'PING\r\n' >&4
        IFS= read -r -t 2 reply <&4 || reply=
        exec 4>&-
        [[ $reply == +PONG* ]]
    fi
}

have_kafka_python() { [[ -x $PY ]] && "$PY" -c 'import kafka' 2>/dev/null; }

# Waits until a metadata request to $1 lists a broker. $2: seconds, $3: PID that must stay alive (or "").
# Exit codes: 0 ready, 1 timed out, 3 the process died.
kafka_wait() {
    local bootstrap=$1 timeout=$2 pid=${3:-}
    if have_kafka_python; then
        STACK_CLIENT_ARGS=$(kafka_client_args) "$PY" - "$bootstrap" "$timeout" "$pid" <<'PYEOF'
import json, logging, os, sys, time
logging.disable(logging.CRITICAL)  # a refused connection while the broker boots is expected, not news
from kafka import KafkaAdminClient
bootstrap, timeout, pid = sys.argv[1], float(sys.argv[2]), sys.argv[3]
extra = json.loads(os.environ.get("STACK_CLIENT_ARGS") or "{}")
deadline = time.monotonic() + timeout
while True:
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=3000,
                                 request_timeout_ms=3000, reconnect_backoff_max_ms=500, **extra)
        try:
            if admin.describe_cluster()["brokers"]:
                sys.exit(0)
        finally:
            admin.close()
    except Exception:
        pass
    if pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            sys.exit(3)
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.3)
PYEOF
    else
        [[ $SECURE == 0 ]] || die "the secured stack needs kafka-python in $PY to check the broker"
        local deadline=$(($(date +%s) + ${timeout%.*}))
        while :; do
            java -Dlog4j2.level=OFF -cp "$KDIR/libs/*" "$HERE/kafka/KafkaReady.java" "$bootstrap" \
                >/dev/null 2>&1 && return 0
            [[ -z $pid ]] || kill -0 "$pid" 2>/dev/null || return 3
            (($(date +%s) < deadline)) || return 1
            sleep 0.5
        done
    fi
}

# kafka-python arguments (JSON) for the secured listener, as the admin user; "{}" for the plain stack.
kafka_client_args() {
    if [[ $SECURE == 1 ]]; then
        printf '{"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "admin", "sasl_plain_password": "%s", "ssl_cafile": "%s"}' \
            "$(<"$SECRETS_DIR/kafka-admin")" "$TLS_DIR/ca.crt"
    else
        echo "{}"
    fi
}

# Certificates (secure/certs) and one random password per user, kept across restarts. Passwords are
# hex, so they need no quoting in JAAS, ACL or URL syntax.
ensure_secure_material() {
    bash "$HERE/secure/certs" "$TLS_DIR" || die "could not create the TLS certificates in $TLS_DIR"
    (umask 077 && mkdir -p "$SECRETS_DIR")
    local name
    for name in kafka-admin kafka-worker redis-admin redis-worker; do
        [[ -s $SECRETS_DIR/$name ]] ||
            (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$SECRETS_DIR/$name")
    done
}

need_java() {
    command -v java >/dev/null ||
        die "java not found: Kafka needs Java 17+ (apt-get install -y openjdk-17-jre-headless)"
    local major
    major=$(java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit }')
    # shellcheck disable=SC2015 # die when either test fails
    [[ $major =~ ^[0-9]+$ ]] && ((major >= 17)) ||
        die "Kafka 4 needs Java 17+, found '$(java -version 2>&1 | head -1)' (apt-get install -y openjdk-17-jre-headless)"
}

# The broker classpath: fetched once per Kafka version/pom change from Maven Central (fast from ~/.m2).
ensure_kafka_libs() {
    local stamp
    stamp="$KAFKA_VERSION $(cksum <"$POM" | cut -d' ' -f1)"
    [[ -f $KDIR/libs/.stamp && $(<"$KDIR/libs/.stamp") == "$stamp" ]] && return 0
    # Another stack dir (the secured stack, a test's own) links the default stack's jars when they match.
    local shared=$STACK_HOME/.stack/kafka/libs
    if [[ $shared != "$KDIR/libs" && -f $shared/.stamp && $(<"$shared/.stamp") == "$stamp" ]]; then
        rm -rf "$KDIR/libs"
        ln -s "$shared" "$KDIR/libs"
        return 0
    fi
    command -v mvn >/dev/null ||
        die "mvn not found: Maven fetches the Kafka jars once (apt-get install -y maven)"
    note "fetching Apache Kafka $KAFKA_VERSION jars with Maven (log: $KDIR/mvn.log)"
    rm -rf "$KDIR/libs.tmp"
    if ! mvn -B -q -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
        -Dkafka.version="$KAFKA_VERSION" -DoutputDirectory="$KDIR/libs.tmp" >"$KDIR/mvn.log" 2>&1; then
        tail -n 20 "$KDIR/mvn.log" >&2
        die "Maven could not fetch the Kafka jars (full log: $KDIR/mvn.log)"
    fi
    rm -rf "$KDIR/libs"
    mv "$KDIR/libs.tmp" "$KDIR/libs"
    echo "$stamp" >"$KDIR/libs/.stamp"
}

listener_config() {
    if [[ $SECURE == 0 && -n $PROXIED_PORT ]]; then
        [[ -n $PROXY_PORT ]] || die "STACK_PROXIED_PORT needs STACK_PROXY_PORT (the port the proxy listens on)"
        cat <<EOF
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,PROXIED://$HOST:$PROXIED_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,PROXIED://$HOST:$PROXY_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,PROXIED:PLAINTEXT,CONTROLLER:PLAINTEXT
EOF
        return
    fi
    if [[ $SECURE == 0 ]]; then
        cat <<EOF
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
EOF
        return
    fi
    # Clients and the broker itself (inter-broker) use SASL_SSL with SCRAM-SHA-512; the users are created
    # at format time (--add-scram). Only the KRaft controller listener stays plaintext, on loopback: it
    # speaks the controller protocol only, never serves clients' reads or writes.
    cat <<EOF
listeners=SASL_SSL://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=SASL_SSL://$HOST:$KAFKA_PORT
inter.broker.listener.name=SASL_SSL
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(<"$SECRETS_DIR/kafka-admin")";
ssl.keystore.type=PEM
ssl.keystore.location=$TLS_DIR/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.crt
ssl.client.auth=none
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:ANONYMOUS
EOF
}

# The worker user's Kafka ACLs (secure/kafka-worker.acl), created as admin; creating an ACL that
# exists already is a no-op, so this runs on every start.
apply_kafka_acls() {
    [[ $SECURE == 1 ]] || return 0
    STACK_CLIENT_ARGS=$(kafka_client_args) "$PY" - "$HOST:$KAFKA_PORT" "$HERE/secure/kafka-worker.acl" \
        >"$KDIR/acl.log" 2>&1 <<'PYEOF2' || die "could not create the worker's Kafka ACLs: $(tail -n 1 "$KDIR/acl.log")"
import json, logging, os, sys
logging.disable(logging.CRITICAL)
from kafka.admin import (ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, KafkaAdminClient,
                         ResourcePattern, ResourceType)
bootstrap, path = sys.argv[1], sys.argv[2]
acls = []
for line in open(path):
    if not line.strip() or line.startswith("#"):
        continue
    rtype, pattern, name, ops = line.split()
    resource = ResourcePattern(ResourceType[rtype.upper()], name, ACLResourcePatternType[pattern.upper()])
    acls += [ACL("User:worker", "*", ACLOperation[op], ACLPermissionType.ALLOW, resource) for op in ops.split(",")]
admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000, **json.loads(os.environ["STACK_CLIENT_ARGS"]))
try:
    result = admin.create_acls(acls)
finally:
    admin.close()
if result["failed"]:
    sys.exit(f"{len(result['failed'])} ACLs failed, e.g. {result['failed'][0]}")
print(f"{len(result['succeeded'])} ACLs for User:worker")
PYEOF2
}

write_kafka_config() {
    cp "$HERE/kafka/log4j2.properties" "$KDIR/log4j2.properties"
    # A static voter set (controller.quorum.voters) rather than a --standalone dynamic quorum: the dynamic
    # one records the controller's endpoint in the metadata log, so changing STACK_CONTROLLER_PORT would
    # strand formatted storage; with static voters the port lives only in this file.
    # umask: in secured mode the file holds the inter-broker password
    (umask 077 && : >"$KDIR/server.properties")
    cat >"$KDIR/server.properties" <<EOF
# Written by $NAME on every start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
$(listener_config)
controller.listener.names=CONTROLLER
log.dirs=$KDIR/data
num.partitions=1
default.replication.factor=1
auto.create.topics.enable=$AUTO_CREATE_TOPICS
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
# After a kill -9 the restarted broker waits until the controller expires its old session; the 9 s default
# would make every fault-test restart that much slower. Still far above any plausible stall on loopback.
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=4000
num.network.threads=2
num.io.threads=4
background.threads=4
EOF
}

set_java_cmd() {
    local -a heap jvm
    read -r -a heap <<<"$KAFKA_HEAP_OPTS"
    read -r -a jvm <<<"$KAFKA_JVM_OPTS"
    JCMD=(java "${heap[@]}" "${jvm[@]}" -Djava.awt.headless=true -Dkafka.logs.dir="$KDIR"
        -Dlog4j2.configurationFile="$KDIR/log4j2.properties" -cp "$KDIR/libs/*")
}

start_kafka() {
    local pid
    if pid=$(kafka_pid); then
        refuse_paused Kafka "$pid"
        return 0
    fi
    if port_open "$KAFKA_PORT"; then
        if kafka_wait "$HOST:$KAFKA_PORT" 5 ""; then
            note "reusing a Kafka broker already listening on $HOST:$KAFKA_PORT (not started here; 'down' leaves it alone)"
            KAFKA_FOREIGN=1
            return 0
        fi
        die "port $HOST:$KAFKA_PORT is taken by something that is not a Kafka broker (set STACK_KAFKA_PORT)"
    fi
    port_open "$CONTROLLER_PORT" &&
        die "controller port $HOST:$CONTROLLER_PORT is taken (set STACK_CONTROLLER_PORT)"
    need_java
    mkdir -p "$KDIR"
    [[ $SECURE == 0 ]] || ensure_secure_material
    ensure_kafka_libs
    write_kafka_config
    set_java_cmd
    if [[ ! -f $KDIR/data/meta.properties ]]; then
        local cluster_id
        cluster_id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))' 2>/dev/null) ||
            cluster_id=$("${JCMD[@]}" kafka.tools.StorageTool random-uuid)
        local -a scram=()
        [[ $SECURE == 0 ]] || scram=(
            --add-scram "SCRAM-SHA-512=[name=admin,password=$(<"$SECRETS_DIR/kafka-admin")]"
            --add-scram "SCRAM-SHA-512=[name=worker,password=$(<"$SECRETS_DIR/kafka-worker")]"
        )
        "${JCMD[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$KDIR/server.properties" \
            "${scram[@]+"${scram[@]}"}" >"$KDIR/format.log" 2>&1 ||
            die "formatting Kafka storage failed: $(tail -n 3 "$KDIR/format.log" | tr '\n' ' ') (log: $KDIR/format.log)"
        note "formatted Kafka storage in $KDIR/data (cluster id $cluster_id)"
    fi
    rm -f "$KPID"
    # setsid: the broker must outlive this shell and ignore Ctrl-C aimed at the caller (e.g. a pytest run).
    # The inner shell writes its own PID and then execs java, so the PID file names the JVM itself.
    # fd 9 (the lock) is closed so that the broker never holds the lock.
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid bash -c 'cd "$1" && echo $$ >"$2" && shift 2 && exec "$@"' stack-kafka "$KDIR" "$KPID" \
        nohup "${JCMD[@]}" kafka.Kafka "$KDIR/server.properties" >>"$KDIR/stdout.log" 2>&1 </dev/null 9>&- &
    disown
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s $KPID ]] && return 0
        sleep 0.1
    done
    die "Kafka did not start (see $KDIR/stdout.log and $KLOG)"
}

wait_kafka() {
    local pid rc=0
    [[ ${KAFKA_FOREIGN:-0} == 1 ]] && return 0
    pid=$(<"$KPID")
    kafka_wait "$HOST:$KAFKA_PORT" "$WAIT_S" "$pid" || rc=$?
    case $rc in
    0) ;;
    3) die "Kafka exited while starting; last lines of $KLOG: $(tail -n 5 "$KLOG" 2>/dev/null | tr '\n' ' ') (also $KDIR/stdout.log)" ;;
    *) die "Kafka did not answer on $HOST:$KAFKA_PORT within ${WAIT_S}s (see $KLOG)" ;;
    esac
}

# default: off; admin: everything (stack checks, tests, operators); worker: secure/redis-worker.acl.
# Passwords are stored as SHA-256 hashes (#...), so the ACL file holds no secret.
write_redis_acl() {
    local rules
    rules=$(grep -v '^#' "$HERE/secure/redis-worker.acl" | tr '\n' ' ')
    (umask 077 && cat >"$RDIR/users.acl" <<EOF
user default off
user admin on #$(tr -d '\n' <"$SECRETS_DIR/redis-admin" | sha256sum | cut -d' ' -f1) ~* &* +@all
user worker on #$(tr -d '\n' <"$SECRETS_DIR/redis-worker" | sha256sum | cut -d' ' -f1) $rules
EOF
    )
}

start_redis() {
    local pid
    if pid=$(redis_pid); then
        refuse_paused Redis "$pid"
        return 0
    fi
    if port_open "$REDIS_PORT"; then
        if redis_ping; then
            note "reusing a Redis already listening on $HOST:$REDIS_PORT (not started here; 'down' leaves it alone)"
            return 0
        fi
        die "port $HOST:$REDIS_PORT is taken by something that does not answer Redis PING (set STACK_REDIS_PORT)"
    fi
    command -v redis-server >/dev/null ||
        die "redis-server not found: install Redis 7 (apt-get install -y redis-server); the Debian service need not run"
    mkdir -p "$RDIR"
    rm -f "$RPID"
    local -a listen=(--port "$REDIS_PORT")
    if [[ $SECURE == 1 ]]; then
        command -v redis-cli >/dev/null || die "the secured stack needs redis-cli (apt-get install -y redis-tools)"
        ensure_secure_material
        write_redis_acl
        # TLS only (no plaintext port); clients verify the server, the server does not ask for client certs
        listen=(--port 0 --tls-port "$REDIS_PORT" --tls-cert-file "$TLS_DIR/server.crt"
            --tls-key-file "$TLS_DIR/server.key" --tls-ca-cert-file "$TLS_DIR/ca.crt" --tls-auth-clients no
            --aclfile "$RDIR/users.acl")
    fi
    redis-server --bind "$HOST" "${listen[@]}" --dir "$RDIR" --appendonly yes --daemonize yes \
        --pidfile "$RPID" --logfile "$RLOG" --protected-mode yes 9>&- ||
        die "redis-server failed to start (see $RLOG)"
}

wait_redis() {
    local deadline=$(($(date +%s) + WAIT_S))
    until redis_ping; do
        (($(date +%s) < deadline)) || die "Redis did not answer PING on $HOST:$REDIS_PORT within ${WAIT_S}s (see $RLOG)"
        sleep 0.1
    done
}

write_env() {
    if [[ $SECURE == 0 ]]; then
        cat >"$ENV_FILE.tmp" <<EOF
export SENTIMENT_KAFKA_BOOTSTRAP_SERVERS=$HOST:$KAFKA_PORT
export SENTIMENT_REDIS_URL=redis://$HOST:$REDIS_PORT/0
EOF
    else
        # The worker's users; passwords by file (*_FILE), never inline. The admin passwords are in
        # $SECRETS_DIR/{kafka,redis}-admin.
        cat >"$ENV_FILE.tmp" <<EOF
export SENTIMENT_KAFKA_BOOTSTRAP_SERVERS=$HOST:$KAFKA_PORT
export SENTIMENT_KAFKA_SECURITY_PROTOCOL=SASL_SSL
export SENTIMENT_KAFKA_SASL_MECHANISM=SCRAM-SHA-512
export SENTIMENT_KAFKA_SASL_USERNAME=worker
export SENTIMENT_KAFKA_SASL_PASSWORD_FILE=$SECRETS_DIR/kafka-worker
export SENTIMENT_KAFKA_SSL_CAFILE=$TLS_DIR/ca.crt
export SENTIMENT_REDIS_URL=rediss://$HOST:$REDIS_PORT/0
export SENTIMENT_REDIS_USERNAME=worker
export SENTIMENT_REDIS_PASSWORD_FILE=$SECRETS_DIR/redis-worker
export SENTIMENT_REDIS_SSL_CA_CERTS=$TLS_DIR/ca.crt
EOF
    fi
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# SIGTERM, then SIGKILL after STOP_WAIT_S. SIGCONT too, because a fault test may have left it SIGSTOPped,
# and a stopped process never acts on SIGTERM.
stop_pid() {
    local name=$1 pid=$2 file=$3 i
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_WAIT_S * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        [[ $(proc_state "$pid") == Z ]] && break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null && [[ $(proc_state "$pid") != Z ]]; then
        note "$name (pid $pid) ignored SIGTERM for ${STOP_WAIT_S}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
    note "stopped $name (pid $pid)"
}

stop_kafka() {
    local pid
    if pid=$(kafka_pid); then stop_pid Kafka "$pid" "$KPID"; else rm -f "$KPID"; fi
}
stop_redis() {
    local pid
    if pid=$(redis_pid); then stop_pid Redis "$pid" "$RPID"; else rm -f "$RPID"; fi
}

lock() {
    mkdir -p "$STACK_DIR"
    exec 9>"$STACK_DIR/.lock"
    # Several test sessions may call `up` at once; they queue here instead of racing to start twice.
    # Children are started with 9>&- so that a long-lived server never holds this lock.
    flock -w $((WAIT_S + 120)) 9 || die "another $NAME command holds $STACK_DIR/.lock"
}

paused_note() { if [[ $(proc_state "$1") == T ]]; then echo " (PAUSED)"; fi; }

summary() {
    local pid
    if pid=$(kafka_pid); then
        echo "kafka: pid $pid$(paused_note "$pid"), $([[ $SECURE == 1 ]] && echo SASL_SSL || echo PLAINTEXT) $HOST:$KAFKA_PORT, controller $HOST:$CONTROLLER_PORT, rss $(rss_mib "$pid"), log $KLOG"
    elif port_open "$KAFKA_PORT"; then
        echo "kafka: $HOST:$KAFKA_PORT answers, but not a broker started by $NAME"
    else
        echo "kafka: not running"
        return 1
    fi
    if pid=$(redis_pid); then
        echo "redis: pid $pid$(paused_note "$pid"), $([[ $SECURE == 1 ]] && echo "TLS+ACL ")$HOST:$REDIS_PORT, rss $(rss_mib "$pid"), log $RLOG"
    elif redis_ping; then
        echo "redis: $HOST:$REDIS_PORT answers, but not a server started by $NAME"
    else
        echo "redis: not running"
        return 1
    fi
}

cmd_up() {
    local t0
    t0=$(now)
    lock
    start_redis
    start_kafka
    wait_redis
    wait_kafka
    apply_kafka_acls
    write_env
    summary
    note "up in $(since "$t0")s; for a shell: source $ENV_FILE"
}

cmd_down() {
    lock
    stop_kafka
    stop_redis
    rm -f "$ENV_FILE"
}

cmd_restart_kafka() {
    local t0
    t0=$(now)
    lock
    stop_kafka
    start_kafka
    wait_kafka
    write_env
    note "Kafka back in $(since "$t0")s (pid $(<"$KPID"))"
}

cmd_restart_redis() {
    local t0
    t0=$(now)
    lock
    stop_redis
    start_redis
    wait_redis
    note "Redis back in $(since "$t0")s (pid $(<"$RPID"))"
}

cmd_reset() {
    cmd_down
    rm -rf "$KDIR/data" "$RDIR"
    note "deleted Kafka and Redis data (jars kept)"
}

usage() {
    cat <<EOF
usage: $NAME COMMAND [--secure]

  up              start Kafka ($HOST:$KAFKA_PORT) and Redis ($HOST:$REDIS_PORT) unless running; wait until both answer
  down            stop what 'up' started (SIGTERM, SIGKILL after ${STOP_WAIT_S}s)
  status          show what runs (exit 1 if a service is down)
  restart-kafka   stop and start the broker (e.g. after kill -9); storage is kept
  restart-redis   stop and start Redis; data is kept (appendonly)
  reset           down, then delete Kafka and Redis data

--secure (or STACK_SECURE=1): Kafka SASL_SSL/SCRAM-SHA-512 only, Redis TLS + ACL users only, on ports
  9192/9193/6391 in .stack/secure/ by default; certificates in tls/, passwords in secrets/ (users worker
  and admin), worker settings in env. Same commands; pass --secure to each.

Files: $STACK_DIR/{kafka.pid,redis.pid,env,kafka/server.log,redis/redis.log}
Environment: STACK_KAFKA_PORT (9092), STACK_CONTROLLER_PORT (9093), STACK_REDIS_PORT (6390),
  STACK_KAFKA_VERSION ($KAFKA_VERSION), STACK_WAIT_S ($WAIT_S), STACK_DIR (.stack),
  STACK_AUTO_CREATE_TOPICS (true), STACK_PROXIED_PORT + STACK_PROXY_PORT (a second listener advertised
  at the proxy's port; the fault suite's network faults use it)
EOF
}

for p in "$KAFKA_PORT" "$CONTROLLER_PORT" "$REDIS_PORT" ${PROXIED_PORT:+"$PROXIED_PORT"} ${PROXY_PORT:+"$PROXY_PORT"}; do
    valid_port "$p"
done
[[ $AUTO_CREATE_TOPICS == true || $AUTO_CREATE_TOPICS == false ]] ||
    die "STACK_AUTO_CREATE_TOPICS must be true or false"

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) summary ;;
restart-kafka) cmd_restart_kafka ;;
restart-redis) cmd_restart_redis ;;
reset) cmd_reset ;;
help | -h | --help) usage ;;
"")
    echo "$NAME: error: no command (try: $NAME help)" >&2
    exit 2
    ;;
*)
    echo "$NAME: error: unknown command '$1' (try: $NAME help)" >&2
    exit 2
    ;;
esac
