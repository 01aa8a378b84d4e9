#!/usr/bin/env bash
# A local Keycloak (OpenID Connect provider) from Maven Central (org.keycloak:keycloak-quarkus-dist),
# run on a JDK >= 21, with the realms in deploy/keycloak/*-realm.json imported: carescore (the app's)
# and elsewhere (another issuer, for the tests). Both are LOCAL TEST REALMS whose passwords and client
# secrets are public (README.md beside this file): never import them into a real IdP.
#
#   keycloak.sh fetch                resolve the server into deploy/keycloak/dist (mvn) and pre-build it
#   keycloak.sh start DIR [PORT]     start on 127.0.0.1:PORT (default 8180), data in DIR; wait until the
#                                    realm's discovery document answers; pid in DIR/pid
#   keycloak.sh stop DIR             stop it (SIGTERM, then SIGKILL after 30 s)
#   keycloak.sh java                 print the JDK it runs on (exit 1, saying why, when there is none)
#
# Binds 127.0.0.1 only, HTTP only: a local test IdP, not a deployment. Heap: KEYCLOAK_HEAP (default
# 512m). Java: KEYCLOAK_JAVA_HOME, else the newest JDK >= 21 under /usr/lib/jvm.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
DIST="$HERE/dist/keycloak"
REALM="carescore"
HEAP="${KEYCLOAK_HEAP:-512m}"
MIN_JAVA=21

# The major version of the JDK at $1 (from its release file, else from `java -version`).
java_major() {
  local v=""
  if [ -f "$1/release" ]; then v="$(sed -n 's/^JAVA_VERSION="\([^"]*\)".*/\1/p' "$1/release")"; fi
  if [ -z "$v" ] && [ -x "$1/bin/java" ]; then
    v="$("$1/bin/java" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -1)"
  fi
  v="${v#1.}"; echo "${v%%[.+-]*}"
}

find_java() {
  if [ -n "${KEYCLOAK_JAVA_HOME:-}" ]; then
    local m; m="$(java_major "$KEYCLOAK_JAVA_HOME")"
    if [ ! -x "$KEYCLOAK_JAVA_HOME/bin/java" ] || [ -z "$m" ] || [ "$m" -lt "$MIN_JAVA" ]; then
      echo "keycloak.sh: KEYCLOAK_JAVA_HOME=$KEYCLOAK_JAVA_HOME is not a Java $MIN_JAVA+ (found '${m:-none}')" >&2
      exit 1
    fi
    echo "$KEYCLOAK_JAVA_HOME"; return
  fi
  local best="" best_m=0 d m
  for d in /usr/lib/jvm/*/; do
    d="${d%/}"
    [ -x "$d/bin/java" ] && [ ! -L "$d" ] || continue
    m="$(java_major "$d")"
    if [ -n "$m" ] && [ "$m" -ge "$MIN_JAVA" ] && [ "$m" -gt "$best_m" ]; then best="$d"; best_m="$m"; fi
  done
  if [ -z "$best" ]; then
    echo "keycloak.sh: Keycloak needs Java $MIN_JAVA or newer and none was found under /usr/lib/jvm" \
         "(the machine's java is: $(java -version 2>&1 | head -1)); install one or set KEYCLOAK_JAVA_HOME" >&2
    exit 1
  fi
  echo "$best"
}

fetch() {
  if [ -f "$DIST/.complete" ] && [ "$DIST/.complete" -nt "$HERE/pom.xml" ]; then return; fi
  command -v mvn >/dev/null || { echo "keycloak.sh: mvn (Maven) is needed to fetch Keycloak" >&2; exit 1; }
  local java_home; java_home="$(find_java)"
  # target/ holds the dependency plugin's "already unpacked" markers: without it, a re-fetch unpacks anew.
  rm -rf "$HERE/dist" "$HERE/dist.tmp" "$HERE/target"
  mvn -B -q -f "$HERE/pom.xml" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:unpack-dependencies \
      -DoutputDirectory="$HERE/dist.tmp" -DincludeArtifactIds=keycloak-quarkus-dist -DincludeTypes=zip
  mkdir -p "$HERE/dist"
  mv "$HERE"/dist.tmp/keycloak-[0-9]* "$DIST"
  rm -rf "$HERE/dist.tmp" "$HERE/target"
  # Build once here (Quarkus augmentation, ~tens of seconds) so that each start is `--optimized`
  # and never writes into dist/. dev-file = the embedded H2 database, in each start's own DIR;
  # cache=local: no cluster (JGroups would listen on the machine's other addresses).
  JAVA_HOME="$java_home" "$DIST/bin/kc.sh" build --db=dev-file --cache=local > "$HERE/dist/build.log" 2>&1 || {
    echo "keycloak.sh: kc.sh build failed; last lines of $HERE/dist/build.log:" >&2
    tail -20 "$HERE/dist/build.log" >&2; exit 1
  }
  touch "$DIST/.complete"
}

# DIR/home: a Keycloak home of its own for this instance (its data/ holds the H2 database and the
# realm to import), sharing the distribution's jars (lib/lib, read-only) through a symlink.
make_home() {
  local home="$1/home" f
  mkdir -p "$home/lib" "$home/data/import"
  for f in bin conf providers themes; do [ -e "$home/$f" ] || cp -a "$DIST/$f" "$home/$f"; done
  for f in "$DIST"/lib/*; do
    case "$(basename "$f")" in
      lib) ln -sfn "$f" "$home/lib/lib" ;;
      *) [ -e "$home/lib/$(basename "$f")" ] || cp -a "$f" "$home/lib/" ;;
    esac
  done
  cp "$HERE"/*-realm.json "$home/data/import/"
}

start() {
  local dir port java_home url
  dir="$(mkdir -p "$1" && cd "$1" && pwd)"; port="${2:-8180}"
  fetch
  java_home="$(find_java)"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "keycloak.sh: already running in $dir (pid $(cat "$dir/pid"))"; return
  fi
  make_home "$dir"
  # setsid: Keycloak (kc.sh and its java) in a process group of its own, so stop can end both.
  JAVA_HOME="$java_home" JAVA_OPTS_KC_HEAP="-Xms64m -Xmx$HEAP" \
    setsid nohup "$dir/home/bin/kc.sh" start --optimized \
      --http-enabled=true --http-host=127.0.0.1 --http-port="$port" --hostname-strict=false --cache=local \
      --import-realm > "$dir/keycloak.log" 2>&1 < /dev/null &
  echo $! > "$dir/pid"
  url="http://127.0.0.1:$port/realms/$REALM/.well-known/openid-configuration"
  for _ in $(seq 1 720); do
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
      echo "keycloak.sh: Keycloak ready on http://127.0.0.1:$port (realm $REALM, Java" \
           "$(java_major "$java_home"), data in $dir)"; return
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "keycloak.sh: Keycloak exited; last lines of $dir/keycloak.log:" >&2; tail -30 "$dir/keycloak.log" >&2
      exit 1
    fi
    sleep 0.25
  done
  echo "keycloak.sh: Keycloak not ready after 180 s (see $dir/keycloak.log)" >&2; exit 1
}

stop() {
  local dir="$1" pid
  [ -f "$dir/pid" ] || { echo "keycloak.sh: nothing running in $dir"; return; }
  pid="$(cat "$dir/pid")"
  if kill -0 -- "-$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 -- "-$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
  fi
  rm -f "$dir/pid"
  echo "keycloak.sh: stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  java) find_java ;;
  *) sed -n '2,14p' "$0"; exit 2 ;;
esac
