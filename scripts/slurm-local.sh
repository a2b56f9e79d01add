#!/usr/bin/env bash
# A one-node Slurm on this machine, brought up by hand to check that `srun` starts
# mllm4rec's ranks (docs/scale.md, "Slurm"): munged, slurmctld and slurmd run from a
# scratch folder with a minimal slurm.conf naming this host and its CPUs; then
#   srun -n 2 --mpi=pmix build/mllm4rec ranker eval ...
# is compared with one process's metrics.json, byte for byte. Every daemon is stopped
# at the end (also on failure or Ctrl-C); nothing under /etc is written.
#
#   scripts/slurm-local.sh [WORK_DIR]      (root; needs slurm-wlm: apt-get install slurm-wlm)
#
# Environment: MLLM4REC_BIN (build/mllm4rec), MLLM4REC_SLURM_USERS (48: users of the
# generated dataset), MLLM4REC_SLURM_MPI (pmix: srun's --mpi plugin).
set -eu
cd "$(dirname "$0")/.."
BIN=${MLLM4REC_BIN:-build/mllm4rec}
MPI=${MLLM4REC_SLURM_MPI:-pmix}
USERS=${MLLM4REC_SLURM_USERS:-48}
W=${1:-$(mktemp -d /tmp/mllm4rec-slurm.XXXXXX)}
W=$(cd "$W" && pwd)
HOST=$(hostname -s)
CPUS=$(nproc)
for c in munged slurmctld slurmd srun; do
  command -v $c >/dev/null || { echo "slurm-local: $c not found (apt-get install slurm-wlm)" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "slurm-local: $BIN not built (make)" >&2; exit 1; }
[ -f /etc/munge/munge.key ] || { echo "slurm-local: /etc/munge/munge.key missing (the munge package makes it)" >&2; exit 1; }

mkdir -p "$W/ctld" "$W/d" "$W/munge"
PIDS=""
# the daemons' pids, read once they run (each removes its pid file while it shuts down)
note_pid() {
  for i in $(seq 1 50); do
    [ -s "$W/$1.pid" ] && { PIDS="$PIDS $(cat "$W/$1.pid")"; return 0; }
    sleep 0.1
  done
  echo "slurm-local: $1 did not start (see $W/$1.log)" >&2
  return 1
}
# the step daemons of this slurmd (found by the SLURM_CONF they inherit; slurmstepd reports a step's end to slurmctld after
# srun has returned: the daemons must outlive it)
steps() {
  for d in /proc/[0-9]*; do
    case "$(tr '\0' ' ' 2>/dev/null <"$d/cmdline")" in
      "slurmstepd: "*) tr '\0' '\n' 2>/dev/null <"$d/environ" | grep -qx "SLURM_CONF=$W/slurm.conf" && echo "${d#/proc/}" ;;
    esac
  done
}
# once the steps have ended (up to 30 s): SIGTERM to each daemon, the last started
# first, up to 20 s for it to end, then SIGKILL
stop() {
  for i in $(seq 1 300); do [ -z "$(steps)" ] && break; sleep 0.1; done
  for p in $(steps); do kill -9 "$p" 2>/dev/null || true; done
  for p in $(echo $PIDS | tr ' ' '\n' | tac); do
    kill "$p" 2>/dev/null || true
    for i in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
}
trap stop EXIT

# munge: its own socket, the machine's key
munged --force --socket="$W/munge/munge.socket" --pid-file="$W/munged.pid" \
  --log-file="$W/munged.log" --seed-file="$W/munge/munge.seed"
note_pid munged

cat >"$W/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$W/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$W/ctld
SlurmdSpoolDir=$W/d
SlurmctldPidFile=$W/slurmctld.pid
SlurmdPidFile=$W/slurmd.pid
SlurmctldLogFile=$W/slurmctld.log
SlurmdLogFile=$W/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$HOST CPUs=$CPUS State=UNKNOWN
PartitionName=local Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
export SLURM_CONF="$W/slurm.conf"
slurmctld -f "$SLURM_CONF"
note_pid slurmctld
slurmd -f "$SLURM_CONF"
note_pid slurmd
for i in $(seq 1 30); do
  sinfo -h -o %T 2>/dev/null | grep -q idle && break
  sleep 1
done
sinfo >&2

# what srun tells a task
echo "== srun -n 2 env (the launcher's variables a task sees)" >&2
srun -n 2 --mpi="$MPI" sh -c 'echo "task $SLURM_PROCID of $SLURM_STEP_NUM_TASKS: PMIX_RANK=${PMIX_RANK:-} PMI_RANK=${PMI_RANK:-} OMPI_COMM_WORLD_SIZE=${OMPI_COMM_WORLD_SIZE:-}"' >&2

# the check: ranker eval on a generated dataset (stories260K), 1 process against srun -n 2
D="$W/world"
mkdir -p "$D"
/usr/bin/python3 - "$D" "$USERS" <<'EOF'
import random, sys
d, n = sys.argv[1], int(sys.argv[2])
r = random.Random(1)
words = "red house river night story city garden winter silent storm".split()
ni = 60
with open(f"{d}/items.tsv", "w") as f:
    f.write("item_id\tsource_id\ttitle\timage\tcaption\n")
    for i in range(1, ni + 1):
        f.write(f"{i}\t{i}\tThe {words[i % 10]} {words[i * 7 % 10]} of the {words[i * 3 % 10]} (19{50 + i % 50})\t\t\n")
seqs = {}
with open(f"{d}/sequences.tsv", "w") as f:
    f.write("user_id\tsource_user_id\titems\n")
    for u in range(1, n + 1):
        s = [r.randrange(1, ni + 1) for _ in range(20)]
        seqs[u] = s
        f.write(f"{u}\t{u}\t{' '.join(map(str, s))}\n")
with open(f"{d}/meta.json", "w") as f:
    f.write('{"format_version": 1, "format": "movielens", "name": "ml-latest-small", "counts": {"after": '
            f'{{"users": {n}, "items": {ni}, "interactions": {20 * n}}}}}}}\n')
with open(f"{d}/cands.tsv", "w") as f:
    f.write("split\tuser_id\tlabel\titems\tscores\n")
    for split, at in (("val", 18), ("test", 19)):
        for u in range(1, n + 1):
            label = seqs[u][at]
            others = [i for i in range(1, ni + 1) if i != label]
            r.shuffle(others)
            c = others[:19]
            c.insert(r.randrange(20), label)
            f.write(f"{split}\t{u}\t{label}\t{','.join(map(str, c))}\t{','.join(str(20 - k) for k in range(20))}\n")
EOF
ARGS="ranker eval --dataset $D --candidates $D/cands.tsv --model models/stories260K.gguf --threads 1 --max-tokens 512"
"$BIN" $ARGS --out "$W/one" >/dev/null 2>"$W/one.log"
echo "== srun -n 2 --mpi=$MPI $BIN $ARGS" >&2
rc=0
srun -n 2 --mpi="$MPI" "$BIN" $ARGS --out "$W/two" >/dev/null 2>"$W/two.log" || rc=$?
cat "$W/two.log" >&2
if [ $rc -ne 0 ]; then
  echo "slurm-local: srun exit $rc" >&2
  exit 1
fi
grep -q "on 2 ranks" "$W/two.log" || { echo "slurm-local: the ranks did not form one job of 2" >&2; exit 1; }
if cmp -s "$W/one/metrics.json" "$W/two/metrics.json"; then
  echo "slurm-local: srun -n 2 --mpi=$MPI wrote the metrics.json of one process (byte for byte); folder $W"
else
  echo "slurm-local: metrics.json of srun -n 2 differs from one process's ($W)" >&2
  exit 1
fi
