#!/bin/sh
# Cost of each integrity feature against the plain build, in one run.
#
# Builds benches/features.rs once per feature set (release, bench profile),
# then runs the builds round-robin for ROUNDS rounds (default 5), each round
# on the same fixed-seed operation stream, so that every build sees the same
# machine load. Prints a Markdown table: median ns per allocate+free pair,
# min, max, and the ratio of the medians to the plain build.
#
#   sh benches/features.sh                 # 5 rounds, 1,000,000 pairs, 1,000 live blocks
#   ROUNDS=3 FEATURES_PAIRS=200000 sh benches/features.sh
set -eu
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
out=${TMPDIR:-/tmp}/region-heap-features.$$
mkdir -p "$out"
trap 'rm -rf "$out"' EXIT
configs="plain crc guard scramble trace all"

features_of() {
    case $1 in
    plain) echo "" ;;
    all) echo "crc,guard,scramble,trace" ;;
    *) echo "$1" ;;
    esac
}

for c in $configs; do
    f=$(features_of "$c")
    exe=$(cargo bench --bench features --no-run --features "$f" --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    [ -n "$exe" ] || { echo "cannot build the $c benchmark" >&2; exit 1; }
    cp "$exe" "$out/bench-$c"
done

round=1
while [ "$round" -le "$ROUNDS" ]; do
    for c in $configs; do
        FEATURES_ROUND=$round "$out/bench-$c" >>"$out/results"
    done
    round=$((round + 1))
done

echo "| build | ns per pair (median of $ROUNDS) | min | max | vs plain |"
echo "|---|---:|---:|---:|---:|"
plain=$(awk '$1 == "plain" { print $2 }' "$out/results" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
for c in $configs; do
    awk -v c="$c" '$1 == c { print $2 }' "$out/results" | sort -n |
        awk -v c="$c" -v p="$plain" '{ v[NR] = $1 } END {
            m = v[int((NR + 1) / 2)]
            printf "| %s | %.1f | %.1f | %.1f | x%.2f |\n", c, m, v[1], v[NR], m / p
        }'
done
