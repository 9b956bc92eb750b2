#!/bin/sh
# compare.sh runs imsec's tunnel and wireguard-go side by side with the same
# harness (imsec bench tunnel, go run ./bench/wgcompare) and prints a table:
# one row per mode and imsec algorithm pair, with wireguard-go's figures of
# the same mode measured in the same run and the ratios ours / theirs.
#
#   bench/compare.sh [-d DURATION] [-m "netstack tun"] [-r ROUNDS] [-s SIZES] [-o FILE]
#
# -d  length of each TCP stream (default 10s; each small-packet direction
#     runs half of it)
# -m  modes to run (default: netstack, plus tun when run as root)
# -r  rounds (default 1); with more, each figure is the median of the
#     rounds, ours and theirs alternating so that a change in load hits both
# -s  also measure packets/s at these inner packet sizes (comma-separated
#     bytes: --sizes of both harnesses)
# -o  also write the medians as a results file for 'imsec bench chart' and
#     make charts (the layout of bench/chart.Results: docs/results/DATE.json)
#
# Needs go and jq; tun mode needs root, ip(8) and iperf3. Binaries are built
# into a temporary directory that is removed at the end. Run it on a quiet
# machine: the two cores are shared by everything else that runs.
set -eu

duration=10s
modes=netstack
rounds=1
sizes=
outfile=
if [ "$(id -u)" = 0 ]; then modes="netstack tun"; fi
while getopts d:m:r:s:o: o; do
	case $o in
	d) duration=$OPTARG ;;
	m) modes=$OPTARG ;;
	r) rounds=$OPTARG ;;
	s) sizes=$OPTARG ;;
	o) outfile=$OPTARG ;;
	*) echo "usage: $0 [-d DURATION] [-m MODES] [-r ROUNDS] [-s SIZES] [-o FILE]" >&2; exit 2 ;;
	esac
done
command -v jq >/dev/null || { echo "compare.sh: needs jq" >&2; exit 1; }

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
(cd "$root" && go build -o "$tmp/imsec" ./cmd/imsec && go build -o "$tmp/wgcompare" ./bench/wgcompare)

# run NAME CMD...: run a measurement, append its JSON to $tmp/NAME.
run() {
	name=$1
	shift
	if [ -n "$sizes" ]; then set -- "$@" --sizes "$sizes"; fi
	echo "== $name: $*" >&2
	"$@" --json >>"$tmp/$name"
}

i=0
while [ "$i" -lt "$rounds" ]; do
	for m in $modes; do
		run "wg-$m" "$tmp/wgcompare" --mode "$m" --duration "$duration"
		run "ours-$m-cbc" "$tmp/imsec" bench tunnel --mode "$m" --ealg aes-cbc --alg hmac-sha-1-96 --duration "$duration"
		run "ours-$m-gcm" "$tmp/imsec" bench tunnel --mode "$m" --ealg aes-gcm --duration "$duration"
		run "ours-$m-nopad" "$tmp/imsec" bench tunnel --mode "$m" --ealg aes-cbc --alg hmac-sha-1-96 --batch-pad -1 --duration "$duration"
	done
	i=$((i + 1))
done

# med FILE FIELD: the median of FIELD over the rounds in FILE.
med() {
	jq -s "map(.$2) | sort | .[(length - 1) / 2 | floor]" "$tmp/$1"
}

printf '\n%-9s %-38s %9s %9s %6s %9s %9s %6s %6s %8s %8s\n' \
	mode "ours" "Gbit/s" "wg Gbit/s" ratio "pkt/s" "wg pkt/s" ratio "pad B" "CPU s/Gb" "wg CPU"
for m in $modes; do
	wg_g=$(med "wg-$m" gbps)
	wg_p=$(med "wg-$m" pps)
	wg_c=$(med "wg-$m" cpu_s_per_gbit)
	for a in cbc gcm nopad; do
		f="ours-$m-$a"
		name=$(jq -rs '.[0] | "\(.ealg)/\(.alg)"' "$tmp/$f")
		if [ "$a" = nopad ]; then name="$name --batch-pad -1"; fi
		g=$(med "$f" gbps)
		p=$(med "$f" pps)
		pad=$(med "$f" pad_per_packet)
		c=$(med "$f" cpu_s_per_gbit)
		printf '%-9s %-38s %9.3f %9.3f %6.2f %9.0f %9.0f %6.2f %6.1f %8.3f %8.3f\n' \
			"$m" "$name" "$g" "$wg_g" "$(echo "$g / $wg_g" | bc -l)" \
			"$p" "$wg_p" "$(echo "$p / $wg_p" | bc -l)" "$pad" "$c" "$wg_c"
	done
done
# The targets of the issue: TCP ratios against wireguard-go (aes-cbc at
# least 1.0, aes-gcm 1.3 in tun mode and 1.5 in netstack mode) and, in tun
# mode, 200k small packets/s in each direction.
printf '\ntargets:\n'
verdict() { # NAME VALUE MIN
	if [ "$(echo "$2 >= $3" | bc -l)" = 1 ]; then v=met; else v="NOT met"; fi
	printf '  %-44s %12.3f  >= %-8s %s\n' "$1" "$2" "$3" "$v"
}
for m in $modes; do
	wg_g=$(med "wg-$m" gbps)
	gcm_min=1.5
	if [ "$m" = tun ]; then gcm_min=1.3; fi
	verdict "$m aes-cbc/hmac-sha-1-96 Gbit/s vs wg" "$(echo "$(med "ours-$m-cbc" gbps) / $wg_g" | bc -l)" 1.0
	verdict "$m aes-gcm Gbit/s vs wg" "$(echo "$(med "ours-$m-gcm" gbps) / $wg_g" | bc -l)" "$gcm_min"
	if [ "$m" = tun ]; then
		verdict "tun aes-cbc small packets/s (slower direction)" "$(med "ours-$m-cbc" pps)" 200000
		verdict "tun aes-gcm small packets/s (slower direction)" "$(med "ours-$m-gcm" pps)" 200000
	fi
done
printf '\nevery round (Gbit/s; slower-direction pkt/s; CPU s/Gbit):\n'
for f in $(cd "$tmp" && ls wg-* ours-* 2>/dev/null); do
	printf '  %-18s %s\n' "$f" "$(jq -s -c 'map([(.gbps*1000|round/1000), (.pps|round), (.cpu_s_per_gbit*1000|round/1000)])' "$tmp/$f")"
done
cat <<EOF

wg is wireguard-go (ChaCha20-Poly1305, MTU 1420) measured by the same harness
in the same run; ratio = ours / wg. pkt/s is the slower direction of the
small-packet test ($(echo "$duration") / 2 per direction). pad B is the mean
ESP padding our tunnel added per small packet to send runs of them in one
GSO send (--batch-pad; the last row turns it off). CPU is per Gbit of the
TCP stream (see 'imsec bench tunnel --help'). $rounds round(s), medians.
EOF

# The medians as a results file: each run is the median of its rounds,
# field by field (and size by size).
if [ -n "$outfile" ]; then
	today=$(date -u +%F)
	src="bench/compare.sh -d $duration -m \"$modes\" -r $rounds${sizes:+ -s $sizes}: medians of $rounds round(s)"
	for f in $(cd "$tmp" && ls wg-* ours-*); do
		case $f in
		wg-*) impl=wireguard-go variant= ;;
		*-nopad) impl=imsec variant="--batch-pad -1" ;;
		*) impl=imsec variant= ;;
		esac
		jq -s --arg impl "$impl" --arg variant "$variant" --arg today "$today" --arg src "$src" '
			def med: sort | .[(length - 1) / 2 | floor];
			{impl: $impl, variant: $variant, measured: $today, source: $src,
			 result: (.[0] + (reduce ("gbps", "pps", "cpu_s_per_gbit", "pps_ab", "pps_ba", "loss_ab", "loss_ba", "pad_per_packet", "duration_s") as $k
				({}; .[$k] = ([$in[][$k]] | med)))
				+ {pps_by_size: ([.[].pps_by_size // []] | transpose | map(select(. != null)
				| {size: .[0].size, pps: (map(.pps) | med), pps_ab: (map(.pps_ab) | med), pps_ba: (map(.pps_ba) | med)}))})}
			' --slurpfile in "$tmp/$f" "$tmp/$f" >>"$tmp/runs.json"
	done
	jq -s --arg today "$today" --arg machine "$(nproc) CPUs, $(uname -srm)" \
		'{date: $today, machine: $machine, tunnel: .}' "$tmp/runs.json" >"$outfile"
	echo "results file: $outfile" >&2
fi
