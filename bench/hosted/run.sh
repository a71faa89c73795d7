#!/usr/bin/env bash
# Hosted benchmark: the same workloads under glibc (no preload), jemalloc,
# mimalloc, tcmalloc (Debian packages) and region-heap (the shim,
# libregionheap.so), in interleaved rounds; prints one Markdown table of
# medians with ratios to glibc.
#
#   bench/hosted/run.sh                 5 rounds, full sizes (about 15 min)
#   ROUNDS=3 bench/hosted/run.sh        3 rounds
#   QUICK=1 bench/hosted/run.sh         small inputs, 1 round: a smoke run
#
# Other knobs: ALLOCATORS=glibc,tcmalloc,region-heap (a subset, glibc
# first), ONLY=python3,git (rows whose label starts so), METRIC=cpu (time
# rows in user+system CPU seconds, throughput rows per CPU second: steadier
# when other processes share the machine), BENCH_DATA=dir
# (generated inputs, kept between runs; default /tmp/region-heap-bench),
# CARGO_TARGET_DIR (where the shim is built, as for cargo).
#
# It installs what is missing with apt-get (sudo when not root): gcc,
# python3, git, GNU time and the three allocators.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
quick=${QUICK:-0}
if [ "$quick" = 1 ]; then rounds=${ROUNDS:-1}; else rounds=${ROUNDS:-5}; fi
allocators=${ALLOCATORS:-glibc,jemalloc,mimalloc,tcmalloc,region-heap}
data=${BENCH_DATA:-/tmp/region-heap-bench}
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$target_dir" in /*) ;; *) target_dir=$root/$target_dir ;; esac

install_missing() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return
    local sudo=()
    [ "$(id -u)" = 0 ] || sudo=(sudo)
    echo "installing ${missing[*]}" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# The shared object a Debian package installs, by file name.
package_lib() {
    dpkg -L "$1" | grep -E "/$2\$" | head -n 1
}

install_missing gcc libc6-dev python3 git coreutils time \
    libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4

bin=$data/bin
mkdir -p "$bin"
for src in larson bench_simple bench_thread alloc_test prodcons tiny_threads mixed_small \
    tree_rebuild large loop_small loop_mixed; do
    gcc -O2 -Wall -Wextra -Werror -fno-builtin -pthread \
        -o "$bin/$src" "$here/$src.c" -lm
done

specs=()
for name in ${allocators//,/ }; do
    case "$name" in
    glibc) specs+=("glibc=") ;;
    jemalloc) specs+=("jemalloc=$(package_lib libjemalloc2 libjemalloc.so.2)") ;;
    mimalloc) specs+=("mimalloc=$(package_lib libmimalloc2.0 libmimalloc.so.2)") ;;
    tcmalloc) specs+=("tcmalloc=$(package_lib libtcmalloc-minimal4 libtcmalloc_minimal.so.4)") ;;
    region-heap)
        (cd "$root" && CARGO_TARGET_DIR=$target_dir cargo build --release -q -p region-heap-shim) >&2
        specs+=("region-heap=$target_dir/release/libregionheap.so")
        ;;
    *) echo "unknown allocator $name" >&2 && exit 2 ;;
    esac
done
libs=()
for spec in "${specs[@]}"; do
    path=${spec#*=}
    if [ -n "$path" ] && [ ! -f "$path" ]; then
        echo "missing library for ${spec%%=*}: $path" >&2
        exit 1
    fi
    libs+=(--lib "$spec")
done

args=(--bin "$bin" --data "$data" --rounds "$rounds" "${libs[@]}")
[ "$quick" = 1 ] && args+=(--quick)
[ -n "${ONLY:-}" ] && args+=(--only "$ONLY")
[ -n "${METRIC:-}" ] && args+=(--metric "$METRIC")
echo "command: QUICK=$quick ROUNDS=$rounds ALLOCATORS=$allocators METRIC=${METRIC:-wall} bench/hosted/run.sh"
echo "versions: glibc $(dpkg-query -W -f='${Version}' libc6)," \
    "jemalloc $(dpkg-query -W -f='${Version}' libjemalloc2)," \
    "mimalloc $(dpkg-query -W -f='${Version}' libmimalloc2.0)," \
    "tcmalloc $(dpkg-query -W -f='${Version}' libtcmalloc-minimal4)," \
    "region-heap $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(git -C "$root" diff --quiet 2>/dev/null || echo '(uncommitted changes)')," \
    "python3 $(/usr/bin/python3 -c 'import platform; print(platform.python_version())')," \
    "$(git --version), $(sort --version | head -n 1)"
exec /usr/bin/python3 "$here/measure.py" "${args[@]}"
