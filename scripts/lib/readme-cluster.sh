# Sourced by the kill-gaps scripts: the README's cluster (three masters, three storages,
# replicas 2, on loopback) from the docs/examples of the same version, in a temporary
# directory, with `replicast client transfers` about to run.
#
# Needs: bin (the replicast binary), examples (its docs/examples), prefix (ports 7xxx become
# PREFIX7xxx, so that several clusters can run on one host). Defines: dir (the cluster's
# directory, the current one after sourcing), pid_of (node name -> pid), start NAME (starts
# the node of NAME.toml: master, master-2, master-3, storage, storage-2, storage-3). The
# cluster is running (every storage up) when this returns; every node is killed at exit.
dir=$(mktemp -d)
declare -A pid_of
cleanup() {
  for pid in "${pid_of[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  [ -z "${transfers:-}" ] || kill -9 "$transfers" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
cp -r "$examples"/* "$dir"
cd "$dir"
"$bin" certs init --out certs \
  --node master-1,master-2,master-3,storage-1,storage-2,storage-3,client-1 >/dev/null
for i in 2 3; do
  sed "s/\"master-1\"/\"master-$i\"/; s/certs\/master-1/certs\/master-$i/g; \
       s/data\/master-1/data\/master-$i/; s/listen = \"127.0.0.1:7000\"/listen = \"127.0.0.1:700$((i-1))\"/" \
    master.toml > master-$i.toml
  sed "s/storage-1/storage-$i/g; s/7101/710$i/" storage.toml > storage-$i.toml
done
group=$((RANDOM % 200 + 20))
sed -i "s/127\.0\.0\.1:7\([0-9][0-9][0-9]\)/127.0.0.1:${prefix}7\1/g; \
        s/239\.255\.42\.1:7200/239.255.42.$group:${prefix}7200/" ./*.toml
mkdir -p data
# Output files are appended: a restarted node keeps what its first run said.
start() { "$bin" node --config "$1.toml" >>"$1.out" 2>>"$1.err" & pid_of[$1]=$!; disown; }
for node in master master-2 master-3 storage storage-2 storage-3; do start "$node"; done
for _ in $(seq 300); do
  grep -qh "running storage-1,storage-2,storage-3" master*.out && break
  sleep 0.2
done
grep -qh "running storage-1,storage-2,storage-3" master*.out || { echo "the cluster did not start"; exit 1; }
