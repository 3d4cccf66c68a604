#!/usr/bin/env bash
# A local three-node Pitboss cluster behind nginx, private and on loopback only:
# its own redis-server (no persistence), its own PostgreSQL (initdb in DIR, trust
# authentication, 127.0.0.1 only), three `pitboss serve` nodes and nginx with
# docs/cluster/nginx.conf in front. Nothing is installed or changed outside DIR
# (except, when run as root and DIR is not reachable by the `postgres` user, a
# PostgreSQL directory under /tmp that `stop` removes).
#
#   local-cluster.sh start DIR [-- PITBOSS_SERVE_ARGS...]
#   local-cluster.sh status DIR
#   local-cluster.sh stop DIR
#
# start   creates DIR (which must not hold a cluster already), starts everything,
#         waits until nginx answers /readyz, and prints the URLs. Arguments after
#         `--` go to every `pitboss serve` (e.g. `-- --demo`, `-- --log debug`);
#         they must not repeat --listen, --node, --data-dir, --redis-url or
#         --database-url, which the script sets. If anything fails to start,
#         what did start is stopped again and the logs' tails are printed.
# status  prints what runs: every recorded process, its PID and port, and the
#         answer of each node's and nginx's /readyz.
# stop    stops exactly the processes `start` recorded (by PID; PostgreSQL with
#         `pg_ctl stop`) and leaves DIR, logs included, for inspection.
#
# Environment:
#   PITBOSS_BIN   the pitboss binary [default: `pitboss` on PATH, else
#                 target/release/pitboss, else target/debug/pitboss]
#   NGINX_PORT    nginx's port [default: 8080]
#   NODE_PORTS    the three nodes' ports, comma- or space-separated [default: free]
#   REDIS_PORT    redis-server's port [default: free]
#   PG_PORT       PostgreSQL's port [default: free]
#   NGINX_BIN     nginx [default: nginx on PATH, else /usr/sbin/nginx]
#   PITBOSS_PG_BINDIR  directory of initdb/pg_ctl/createdb
#                 [default: the newest /usr/lib/postgresql/*/bin]
#
# DIR afterwards:
#   cluster.env            what was started: key=value lines (PIDs, ports, URLs)
#   node1.log ...          each node's log (nodeN/ is its --data-dir, unused)
#   redis/redis.log        redis-server's log
#   postgres/postgres.log  PostgreSQL's log (postgres/data is the cluster)
#   nginx/                 nginx's prefix: nginx.conf (a copy of
#                          docs/cluster/nginx.conf), pitboss-upstreams.conf,
#                          pitboss-listen.conf, logs/access.log, logs/error.log
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$script_dir/../.." && pwd)
readonly script_dir repo_dir
readonly NODES=3
readonly DATABASE=pitboss
# Seconds a node may take to become ready, and to drain on stop (its default
# --shutdown-timeout-secs is 10).
readonly START_WAIT=60
readonly STOP_WAIT=20

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

die() {
  printf 'local-cluster: %s\n' "$*" >&2
  exit 1
}

say() {
  printf '%s\n' "$*"
}

# --- state: DIR/cluster.env, one key=value per line ---------------------------

state_file=
state_set() {
  local key=$1 value=$2 tmp
  tmp="$state_file.tmp"
  { grep -v "^$key=" "$state_file" 2>/dev/null || true; printf '%s=%s\n' "$key" "$value"; } >"$tmp"
  mv "$tmp" "$state_file"
}

state_get() {
  local key=$1 line
  line=$(grep "^$key=" "$state_file" 2>/dev/null | tail -n 1) || true
  printf '%s' "${line#*=}"
}

# --- processes ------------------------------------------------------------------

# Whether PID runs (a zombie does not count).
alive() {
  local pid=$1 stat
  [[ -n $pid ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r /proc/$pid/stat ]]; then
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]] || return 1
  fi
  return 0
}

# Whether PID runs and is still the process that was recorded: its command line
# contains MARKER (a path or port of this cluster), so a recycled PID is left alone.
ours() {
  local pid=$1 marker=$2 cmdline
  alive "$pid" || return 1
  [[ -r /proc/$pid/cmdline ]] || return 0
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmdline == *"$marker"* ]]
}

# Waits up to SECONDS for PID to exit.
wait_gone() {
  local pid=$1 seconds=$2 i
  for ((i = 0; i < seconds * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  ! alive "$pid"
}

# stop_processes SIGNAL SECONDS NAME MARKER [NAME MARKER]...: sends SIGNAL to
# each recorded process NAME that is still ours (so they stop together), waits
# up to SECONDS for each, and SIGKILLs one that is still there.
stop_processes() {
  local signal=$1 seconds=$2 name marker pid i
  shift 2
  local names=() pids=()
  while (($# >= 2)); do
    name=$1
    marker=$2
    shift 2
    pid=$(state_get "${name}_pid")
    if ours "$pid" "$marker"; then
      kill "-$signal" "$pid" 2>/dev/null || true
      names+=("$name")
      pids+=("$pid")
    elif [[ -n $pid ]]; then
      say "$name (pid $pid) was not running"
    fi
  done
  for i in "${!pids[@]}"; do
    if wait_gone "${pids[i]}" "$seconds"; then
      say "stopped ${names[i]} (pid ${pids[i]})"
    else
      kill -KILL "${pids[i]}" 2>/dev/null || true
      wait_gone "${pids[i]}" 5 || true
      say "killed ${names[i]} (pid ${pids[i]}): still there ${seconds}s after SIG$signal"
    fi
  done
}

# --- network ----------------------------------------------------------------------

# Whether something accepts connections on 127.0.0.1:PORT.
port_in_use() {
  (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# A port nobody listens on, below Linux's ephemeral range and not in
# $taken_ports (the caller adds it there). Another program may still take it
# before it is bound.
taken_ports=" "
free_port() {
  local port i
  for ((i = 0; i < 200; i++)); do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    [[ $taken_ports == *" $port "* ]] && continue
    port_in_use "$port" && continue
    printf '%s' "$port"
    return 0
  done
  die "found no free port"
}

# The HTTP status of GET PATH on 127.0.0.1:PORT, or nothing.
http_status() {
  local port=$1 path=$2 line='' code=''
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 0
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1:%s\r\n\r\n' "$path" "$port" >&3
    IFS= read -r -t 5 line <&3 || true
    read -r _ code _ <<<"$line" || true
    printf '%s' "$code"
  ) 2>/dev/null || true
}

# Whether redis-server on PORT answers PING.
redis_ping() {
  local port=$1 line=
  (
    exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 line <&3 || exit 1
    [[ $line == +PONG* ]]
  ) 2>/dev/null
}

# --- tools ---------------------------------------------------------------------------

as_root() {
  [[ $(id -u) == 0 ]]
}

find_pitboss() {
  local target=${CARGO_TARGET_DIR:-$repo_dir/target} found=
  if [[ -n ${PITBOSS_BIN:-} ]]; then
    found=$(command -v "$PITBOSS_BIN") || die "PITBOSS_BIN=$PITBOSS_BIN is not an executable"
  elif found=$(command -v pitboss); then
    :
  elif [[ -x $target/release/pitboss ]]; then
    found=$target/release/pitboss
  elif [[ -x $target/debug/pitboss ]]; then
    found=$target/debug/pitboss
  else
    die "no pitboss binary: build it (cargo build --release --bin pitboss) or set PITBOSS_BIN"
  fi
  [[ $found == /* ]] || found="$PWD/$found"
  printf '%s' "$found"
}

find_nginx() {
  if [[ -n ${NGINX_BIN:-} ]]; then
    command -v "$NGINX_BIN"
  elif command -v nginx; then
    :
  elif [[ -x /usr/sbin/nginx ]]; then
    printf '%s\n' /usr/sbin/nginx
  else
    return 1
  fi
}

# The newest PostgreSQL server binaries (Debian keeps them off PATH).
find_pg_bindir() {
  local dir best='' version best_version=-1
  if [[ -n ${PITBOSS_PG_BINDIR:-} ]]; then
    [[ -x $PITBOSS_PG_BINDIR/initdb ]] || return 1
    printf '%s\n' "$PITBOSS_PG_BINDIR"
    return 0
  fi
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/createdb ]] || continue
    version=${dir#/usr/lib/postgresql/}
    version=${version%%/*}
    [[ $version =~ ^[0-9]+$ ]] || continue
    if ((version > best_version)); then
      best=$dir
      best_version=$version
    fi
  done
  [[ -n $best ]] || return 1
  printf '%s\n' "$best"
}

# Sets nginx_bin, redis_bin, pg_bindir; on anything missing, says what to install.
check_tools() {
  local packages=()
  nginx_bin=$(find_nginx) || packages+=(nginx)
  redis_bin=$(command -v redis-server) || packages+=(redis-server)
  pg_bindir=$(find_pg_bindir) || packages+=(postgresql)
  if as_root && ! command -v runuser >/dev/null; then
    packages+=(util-linux)
  fi
  if ((${#packages[@]})); then
    local sudo=
    as_root || sudo="sudo "
    die "missing: ${packages[*]}. Install them (Debian/Ubuntu) with:
    ${sudo}apt-get install -y ${packages[*]}
(PostgreSQL's server binaries are looked for in /usr/lib/postgresql/*/bin, or set PITBOSS_PG_BINDIR)"
  fi
  if as_root && ! id -u postgres >/dev/null 2>&1; then
    die "as root, PostgreSQL runs as the user postgres, which does not exist (Debian's postgresql package creates it); run this script as another user"
  fi
}

# Runs a PostgreSQL server tool, as the `postgres` user when we are root
# (PostgreSQL refuses to run as root), from / so that user may enter the cwd.
pg_tool() {
  local tool=$1
  shift
  if as_root; then
    (cd / && runuser -u postgres -- "$pg_bindir/$tool" "$@")
  else
    (cd / && "$pg_bindir/$tool" "$@")
  fi
}

# --- start ---------------------------------------------------------------------------

# Prints the last lines of every log in the cluster directory.
print_log_tails() {
  local log
  for log in "$dir"/node*.log "$dir/redis/redis.log" "$(state_get postgres_dir)/postgres.log" \
    "$dir/postgres-initdb.log" "$dir/nginx/logs/error.log" "$dir/nginx/logs/stdout.log"; do
    [[ -f $log ]] || continue
    printf -- '--- %s (last 30 lines)\n' "$log" >&2
    tail -n 30 "$log" >&2 || true
  done
}

start_failed() {
  local status=$?
  trap - EXIT
  if ((status != 0)); then
    printf 'local-cluster: start failed; stopping what was started\n' >&2
    print_log_tails
    stop_all >&2 || true
  fi
  exit "$status"
}

start_redis() {
  local port=$1
  mkdir -p "$dir/redis"
  "$redis_bin" --bind 127.0.0.1 --port "$port" --protected-mode yes \
    --save '' --appendonly no --dir "$dir/redis" --daemonize no \
    </dev/null >>"$dir/redis/redis.log" 2>&1 &
  state_set redis_pid "$!"
  state_set redis_port "$port"
  local i
  for ((i = 0; i < START_WAIT * 10; i++)); do
    redis_ping "$port" && break
    alive "$(state_get redis_pid)" || die "redis-server exited"
    sleep 0.1
  done
  redis_ping "$port" || die "redis-server does not answer on port $port"
  state_set redis_url "redis://127.0.0.1:$port/"
  say "redis-server   127.0.0.1:$port (pid $(state_get redis_pid))"
}

start_postgres() {
  local port=$1 root=$dir/postgres
  mkdir -p "$root"
  if as_root; then
    chown postgres "$root"
    # DIR's parents may be closed to `postgres` (a private temporary directory):
    # then use a directory of its own under /tmp, removed again by `stop`.
    if ! runuser -u postgres -- test -w "$root" 2>/dev/null; then
      rmdir "$root"
      root=$(mktemp -d /tmp/pitboss-cluster-pg.XXXXXX)
      chown postgres "$root"
      ln -s "$root" "$dir/postgres"
    fi
  fi
  state_set postgres_dir "$root"
  state_set postgres_bindir "$pg_bindir"
  pg_tool initdb -D "$root/data" --auth=trust --username=postgres --encoding=UTF8 \
    --locale=C --no-sync >"$dir/postgres-initdb.log" 2>&1 ||
    die "initdb failed (see $dir/postgres-initdb.log)"
  # Loopback TCP only, no Unix socket (DIR's path may be too long for one).
  cat >>"$root/data/postgresql.conf" <<EOF

# local-cluster.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 200
EOF
  pg_tool pg_ctl start -D "$root/data" -l "$root/postgres.log" -w -t "$START_WAIT" \
    >>"$dir/postgres-initdb.log" 2>&1 ||
    die "PostgreSQL did not start (see $root/postgres.log)"
  state_set postgres_pid "$(head -n 1 "$root/data/postmaster.pid")"
  state_set postgres_port "$port"
  "$pg_bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DATABASE" ||
    die "createdb $DATABASE failed"
  state_set database_url "postgres://postgres@127.0.0.1:$port/$DATABASE"
  say "PostgreSQL     127.0.0.1:$port (pid $(state_get postgres_pid), data $root/data)"
}

start_node() {
  local n=$1 port=$2 pid i status=
  mkdir -p "$dir/node$n"
  # nginx on this machine is the only proxy: its X-Forwarded-For names the
  # client, so per-address limits count players, not nginx.
  "$pitboss_bin" serve --listen "127.0.0.1:$port" --node "node$n" --data-dir "$dir/node$n" \
    --redis-url "$(state_get redis_url)" --database-url "$(state_get database_url)" \
    --trusted-proxies 127.0.0.1 \
    "${serve_args[@]}" </dev/null >"$dir/node$n.log" 2>&1 &
  pid=$!
  state_set "node${n}_pid" "$pid"
  state_set "node${n}_port" "$port"
  for ((i = 0; i < START_WAIT * 10; i++)); do
    status=$(http_status "$port" /readyz)
    [[ $status == 200 ]] && break
    alive "$pid" || die "node$n exited (see $dir/node$n.log)"
    sleep 0.1
  done
  [[ $status == 200 ]] || die "node$n is not ready after ${START_WAIT}s (see $dir/node$n.log)"
  say "pitboss node$n  127.0.0.1:$port (pid $pid)"
}

start_nginx() {
  local port=$1 prefix=$dir/nginx n i status=
  mkdir -p "$prefix/logs"
  cp "$script_dir/nginx.conf" "$prefix/nginx.conf"
  printf 'listen 127.0.0.1:%s;\n' "$port" >"$prefix/pitboss-listen.conf"
  for ((n = 1; n <= NODES; n++)); do
    printf 'server 127.0.0.1:%s max_fails=2 fail_timeout=10s;\n' "$(state_get "node${n}_port")"
  done >"$prefix/pitboss-upstreams.conf"
  local args=(-c "$prefix/nginx.conf" -p "$prefix/" -e "$prefix/logs/error.log")
  "$nginx_bin" -t -q "${args[@]}" || die "nginx rejects $prefix/nginx.conf"
  "$nginx_bin" "${args[@]}" -g 'daemon off;' </dev/null >>"$prefix/logs/stdout.log" 2>&1 &
  state_set nginx_pid "$!"
  state_set nginx_port "$port"
  for ((i = 0; i < START_WAIT * 10; i++)); do
    status=$(http_status "$port" /readyz)
    [[ $status == 200 ]] && break
    alive "$(state_get nginx_pid)" || die "nginx exited (see $prefix/logs/error.log)"
    sleep 0.1
  done
  [[ $status == 200 ]] || die "nginx does not answer /readyz with 200 after ${START_WAIT}s"
  state_set url "http://127.0.0.1:$port"
  say "nginx          127.0.0.1:$port (pid $(state_get nginx_pid))"
}

cmd_start() {
  if [[ -e $dir/cluster.env ]]; then
    die "$dir already holds a cluster (see: $0 status $dir); stop it and use a fresh DIR"
  fi
  check_tools
  pitboss_bin=$(find_pitboss)

  local nginx_port=${NGINX_PORT:-8080} node_ports=() redis_port pg_port n port
  [[ $nginx_port =~ ^[0-9]+$ ]] || die "NGINX_PORT=$nginx_port is not a port"
  port_in_use "$nginx_port" && die "port $nginx_port (NGINX_PORT) is in use"
  taken_ports+="$nginx_port "
  if [[ -n ${NODE_PORTS:-} ]]; then
    read -r -a node_ports <<<"${NODE_PORTS//,/ }"
    ((${#node_ports[@]} == NODES)) || die "NODE_PORTS must name $NODES ports"
  else
    for ((n = 0; n < NODES; n++)); do
      node_ports+=("$(free_port)")
      taken_ports+="${node_ports[n]} "
    done
  fi
  taken_ports+="${node_ports[*]} "
  redis_port=${REDIS_PORT:-$(free_port)}
  taken_ports+="$redis_port "
  pg_port=${PG_PORT:-$(free_port)}
  for port in "${node_ports[@]}" "$redis_port" "$pg_port"; do
    [[ $port =~ ^[0-9]+$ ]] || die "$port is not a port"
    port_in_use "$port" && die "port $port is in use"
  done

  # From here on a failure stops whatever was started.
  : >"$state_file"
  trap start_failed EXIT
  # The services outlive this script and the terminal it ran in.
  trap '' HUP
  state_set dir "$dir"
  state_set pitboss_bin "$pitboss_bin"
  state_set started_at "$(date -u +%Y-%m-%dT%H:%M:%SZ)"

  start_redis "$redis_port"
  start_postgres "$pg_port"
  # One after the other: the first applies the database migrations.
  for ((n = 1; n <= NODES; n++)); do
    start_node "$n" "${node_ports[n - 1]}"
  done
  start_nginx "$nginx_port"
  trap - EXIT

  local url database_url demo=0 given=0 arg
  url=$(state_get url)
  database_url=$(state_get database_url)
  for arg in "${serve_args[@]}"; do
    [[ $arg == --demo ]] && demo=1
    [[ $arg == --demo-password || $arg == --demo-password=* ]] && given=1
  done
  say ""
  say "Pitboss cluster ready: $NODES nodes behind nginx, all on 127.0.0.1."
  say "  entry point     $url/   (WebSocket: ws://127.0.0.1:${url##*:}/ws)"
  say "  agent console   $url/console"
  say "  health          $url/healthz   $url/readyz"
  say "  redis           $(state_get redis_url)"
  say "  database        $database_url"
  say "  state and logs  $dir (cluster.env, node1.log ... node$NODES.log, nginx/logs/)"
  if ((demo)); then
    # The first node creates the demo accounts and keeps their password in the
    # store (unless one is given with --demo-password); every node logs it.
    local password
    if ((given)); then
      password="the one given with --demo-password"
    else
      password=$(grep -o 'password=[^ ]*' "$dir/node1.log" | tail -n 1 | cut -d= -f2) || true
    fi
    say ""
    say "Demo casino page: $url/   (the chat widget is in the corner)"
    say "Demo agents: ayla (en, tr), olga (ru, az, en), sam (supervisor); password: ${password:-see $dir/node1.log}"
  fi
  say ""
  say "Add an agent:"
  say "  echo 'correct-horse-battery' | $(printf '%q' "$pitboss_bin") agent add deniz --password-stdin \\"
  say "      --languages en --departments general --capacity 3 --database-url $database_url"
  say "Status and stop:"
  say "  $(printf '%q' "$0") status $(printf '%q' "$dir")"
  say "  $(printf '%q' "$0") stop $(printf '%q' "$dir")"
}

# --- stop and status -------------------------------------------------------------------

stop_all() {
  local n nodes=() pid root bindir
  # nginx first (no new connections), fast shutdown: a graceful one would wait for
  # every WebSocket to close.
  stop_processes TERM 10 nginx "$dir/nginx/nginx.conf"
  # The nodes drain together: clients are told 1012, queued writes finish.
  for ((n = 1; n <= NODES; n++)); do
    nodes+=("node$n" "$dir/node$n")
  done
  stop_processes TERM "$STOP_WAIT" "${nodes[@]}"
  stop_processes TERM 10 redis "127.0.0.1:$(state_get redis_port)"
  root=$(state_get postgres_dir)
  bindir=$(state_get postgres_bindir)
  pid=$(state_get postgres_pid)
  if [[ -n $root && -n $bindir && -f $root/data/postmaster.pid ]]; then
    pg_bindir=$bindir
    if pg_tool pg_ctl stop -D "$root/data" -m fast -w -t "$STOP_WAIT" >/dev/null 2>&1 ||
      pg_tool pg_ctl stop -D "$root/data" -m immediate -w >/dev/null 2>&1; then
      say "stopped PostgreSQL (pid $pid)"
    else
      say "PostgreSQL (pid $pid) did not stop: pg_ctl stop -D $root/data failed" >&2
    fi
  elif [[ -n $pid ]]; then
    say "PostgreSQL (pid $pid) is not running"
  fi
  # A PostgreSQL directory outside DIR (root, DIR closed to `postgres`): keep its
  # log in DIR and remove it.
  if [[ -n $root && $root != "$dir"/* && -d $root ]] && ! alive "$pid"; then
    cp "$root/postgres.log" "$dir/postgres.log" 2>/dev/null || true
    rm -rf "$root"
    rm -f "$dir/postgres"
    state_set postgres_log "$dir/postgres.log"
  fi
  state_set stopped_at "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}

cmd_stop() {
  [[ -f $state_file ]] || die "no cluster in $dir (no cluster.env)"
  stop_all
  say "stopped; logs and data are left in $dir"
}

cmd_status() {
  [[ -f $state_file ]] || die "no cluster in $dir (no cluster.env)"
  local name pid port marker state code n
  printf '%-10s %-8s %-6s %s\n' PROCESS PID PORT STATE
  for name in redis postgres $(for ((n = 1; n <= NODES; n++)); do printf 'node%s ' "$n"; done) nginx; do
    pid=$(state_get "${name}_pid")
    port=$(state_get "${name}_port")
    [[ -n $pid ]] || continue
    case $name in
      redis) marker="127.0.0.1:$port" ;;
      postgres) marker="$(state_get postgres_dir)/data" ;;
      nginx) marker="$dir/nginx/nginx.conf" ;;
      *) marker="$dir/$name" ;;
    esac
    if ours "$pid" "$marker"; then
      state=running
      if [[ $name == node* || $name == nginx ]]; then
        code=$(http_status "$port" /readyz)
        state+=" (readyz ${code:-no answer})"
      fi
    else
      state=stopped
    fi
    printf '%-10s %-8s %-6s %s\n' "$name" "$pid" "$port" "$state"
  done
  [[ -z $(state_get stopped_at) ]] || say "stopped at $(state_get stopped_at)"
  say "entry point: $(state_get url)   database: $(state_get database_url)"
}

# --- main --------------------------------------------------------------------------------

main() {
  local command=${1:-}
  case $command in
    start | stop | status) ;;
    -h | --help | help)
      usage
      return 0
      ;;
    *)
      usage >&2
      return 2
      ;;
  esac
  [[ $# -ge 2 && -n $2 ]] || die "usage: $0 $command DIR"
  dir=$2
  shift 2
  serve_args=()
  if [[ $command == start ]]; then
    if (($#)); then
      [[ $1 == -- ]] || die "unexpected argument $1 (pitboss serve arguments go after --)"
      shift
      serve_args=("$@")
    fi
    mkdir -p "$dir"
  elif (($#)); then
    die "unexpected argument $1"
  fi
  [[ -d $dir ]] || die "no directory $dir"
  dir=$(cd "$dir" && pwd)
  state_file=$dir/cluster.env
  "cmd_$command"
}

dir=
serve_args=()
pitboss_bin=
nginx_bin=
redis_bin=
pg_bindir=
main "$@"
