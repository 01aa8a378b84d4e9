#!/usr/bin/env bash
# A local Apache Kafka broker (KRaft, one node) assembled from Maven Central and run with Java 17.
#
#   kafka.sh fetch                         resolve the broker's jars into deploy/kafka/lib (mvn)
#   kafka.sh start DIR [PORT] [CTRL_PORT]  format DIR (once), start, wait until ready; pid in DIR/pid
#   kafka.sh stop DIR                      stop it (SIGTERM, then SIGKILL after 30 s)
#
# Binds 127.0.0.1 only. Heap: KAFKA_HEAP (default 512m). KAFKA_EXTRA_PROPERTIES: a file appended
# to server.properties (later keys win: SSL/SASL_SSL listeners); KAFKA_SCRAM: a SCRAM user made
# when DIR is formatted, e.g. 'SCRAM-SHA-512=[name=carescore,password=...]'.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
LIB="$HERE/lib"
HEAP="${KAFKA_HEAP:-512m}"

fetch() {
  if [ -f "$LIB/.complete" ] && [ "$LIB/.complete" -nt "$HERE/pom.xml" ]; then return; fi
  command -v mvn >/dev/null || { echo "kafka.sh: mvn (Maven) is needed to fetch the broker" >&2; exit 1; }
  rm -rf "$LIB"
  mvn -B -q -f "$HERE/pom.xml" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DoutputDirectory="$LIB" -DincludeScope=runtime
  touch "$LIB/.complete"
}

java_cmd() { java -Dlog4j2.configurationFile="$HERE/log4j2.properties" -cp "$LIB/*" "$@"; }

start() {
  local dir port ctrl
  dir="$(mkdir -p "$1" && cd "$1" && pwd)"; port="${2:-9092}"; ctrl="${3:-9093}"
  fetch
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "kafka.sh: already running in $dir (pid $(cat "$dir/pid"))"; return
  fi
  sed -e "s|@PORT@|$port|g" -e "s|@CONTROLLER_PORT@|$ctrl|g" -e "s|@LOG_DIRS@|$dir/data|g" \
      "$HERE/server.properties.in" > "$dir/server.properties"
  if [ -n "${KAFKA_EXTRA_PROPERTIES:-}" ]; then cat "$KAFKA_EXTRA_PROPERTIES" >> "$dir/server.properties"; fi
  local scram=()
  if [ -n "${KAFKA_SCRAM:-}" ]; then scram=(--add-scram "$KAFKA_SCRAM"); fi
  if [ ! -f "$dir/data/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
        -c "$dir/server.properties" "${scram[@]}" > "$dir/format.log" 2>&1
  fi
  nohup java -Xms"$HEAP" -Xmx"$HEAP" -Dlog4j2.configurationFile="$HERE/log4j2.properties" \
      -cp "$LIB/*" kafka.Kafka "$dir/server.properties" > "$dir/broker.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 240); do
    if grep -q "Kafka Server started" "$dir/broker.log" 2>/dev/null; then
      echo "kafka.sh: broker ready on 127.0.0.1:$port (data in $dir)"; return
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "kafka.sh: broker exited; last lines of $dir/broker.log:" >&2; tail -20 "$dir/broker.log" >&2; exit 1
    fi
    sleep 0.25
  done
  echo "kafka.sh: broker not ready after 60 s (see $dir/broker.log)" >&2; exit 1
}

stop() {
  local dir="$1" pid
  [ -f "$dir/pid" ] || { echo "kafka.sh: nothing running in $dir"; return; }
  pid="$(cat "$dir/pid")"
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$dir/pid"
  echo "kafka.sh: stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) sed -n '2,11p' "$0"; exit 2 ;;
esac
