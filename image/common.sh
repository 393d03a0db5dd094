# Sourced by image/build and image/check: where things are, the pinned tools,
# and a throwaway registry. Not a script of its own.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${ICS_CACHE:-$HOME/.cache/ics-operator}
# Cargo's target directory, wherever the developer keeps it; the image and
# its SBOM are written beside the binaries.
target=${CARGO_TARGET_DIR:-$root/target}
out=${IMAGE_OUT:-$target/image}
rust_target=x86_64-unknown-linux-musl
repository=${IMAGE_REPOSITORY:-ghcr.io/carerecord/ics-operator}

# Tools that .ci/run installs into $ICS_CACHE/bin; PATH is tried first so a
# developer's own copies work too. The versions are pinned in .ci/run.
tool() { # name -> path, or a message saying how to get it
  local path
  path=$(command -v "$1" 2>/dev/null || echo "$cache/bin/$1")
  [ -x "$path" ] || { echo "$1 not found: run .ci/run once, or install it as .ci/run does" >&2; return 1; }
  echo "$path"
}

# The workspace version, from Cargo (not from a second copy of the number).
workspace_version() {
  cargo metadata --no-deps --format-version 1 --manifest-path "$root/Cargo.toml" \
    | python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "ics-operator"))'
}

# Starts go-containerregistry's in-memory registry on a free loopback port
# (port 0: the kernel picks one, so parallel runs and the lead's services never
# collide) and sets $registry_addr. The registry holds nothing on disk and is
# stopped by stop_registry (callers trap it).
registry_pid=""
start_registry() {
  local log=$1 i registry
  registry=$(tool registry)
  : >"$log"
  "$registry" -port 0 >"$log" 2>&1 &
  registry_pid=$!
  for i in $(seq 1 100); do
    registry_addr=$(sed -n 's/.*serving on port \([0-9]*\).*/localhost:\1/p' "$log")
    [ -n "$registry_addr" ] && return 0
    kill -0 "$registry_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the local registry did not start:" >&2; cat "$log" >&2; return 1
}
stop_registry() {
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true  # its exit status is the signal's
  fi
  registry_pid=""
  return 0
}
