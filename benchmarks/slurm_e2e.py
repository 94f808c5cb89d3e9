"""A real single-node SLURM on this machine trains a 4-run study through `--backend slurm`; one task is
cancelled mid-run (scancel) and every task meets its time limit (--time 1 min: SLURM's USR2 warning,
submitit requeues it), and the results must equal those of the same study trained uninterrupted by
the local backend.

    sudo python benchmarks/slurm_e2e.py          # as root: installs slurm-wlm and munge (Debian/Ubuntu)

It installs the packages when missing (apt-get), writes /etc/slurm/slurm.conf for one node with this
machine's CPUs, starts munged, slurmctld and slurmd, and leaves them running (rerunning is fine).
Exit 0 when the results are identical. Takes 3-5 minutes on 2 free cores once the packages are there.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# The tasks import this checkout's vitlab too (sbatch passes the environment on).
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)

from vitlab.io import read_jsonl  # noqa: E402
from vitlab.study import open_index, run_study  # noqa: E402

#: Each run: many short epochs, so that a task cut off by its time limit has checkpointed some.
SPEC = {
    "name": "slurm_e2e",
    "base": {
        "device": "cpu",
        "data": {"name": "synthetic", "synthetic_train": 600, "synthetic_test": 200, "val_fraction": 0.2},
        "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
        "train": {"epochs": 12, "batch_size": 32, "eval_batch_size": 200, "threads": 1},
    },
    "vary": {"model.attn_norm": ["softmax", "cosine"]},
    "seeds": [0, 1],
    # time 1 min, warned 30 s before: every task is requeued at least once on a loaded machine
    "slurm": {"time": 1, "signal_delay_s": 30, "max_requeues": 20},
}
SLURM_CONF = """ClusterName=vitlab
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
JobRequeue=1
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
KillWait=5
MinJobAge=30
NodeName={host} CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
TIMING = ("time", "throughput", "wall", "_s", "minutes")


def sh(cmd: str, check: bool = True) -> str:
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise SystemExit(f"failed: {cmd}\n{out.stdout}{out.stderr}")
    return out.stdout


def start_slurm() -> None:
    if shutil.which("slurmctld") is None or shutil.which("munged") is None:
        sh("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge")
    host = socket.gethostname()
    for d in ("/var/spool/slurmctld", "/var/spool/slurmd", "/var/log/slurm", "/etc/slurm"):
        os.makedirs(d, exist_ok=True)
    Path("/etc/slurm/slurm.conf").write_text(SLURM_CONF.format(host=host, cpus=len(os.sched_getaffinity(0))))
    if not Path("/etc/munge/munge.key").exists():
        sh("mungekey --create || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1")
        sh("chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key")
    sh("mkdir -p /run/munge && chown munge:munge /run/munge")
    if sh("pgrep -x munged", check=False).strip() == "":
        sh("runuser -u munge -- /usr/sbin/munged")
    for daemon in ("slurmctld", "slurmd"):
        if sh(f"pgrep -x {daemon}", check=False).strip() == "":
            sh(f"/usr/sbin/{daemon}")
    deadline = time.monotonic() + 60
    while "idle" not in sh("sinfo -h -o %T", check=False) and "mix" not in sh("sinfo -h -o %T", check=False):
        if time.monotonic() > deadline:
            raise SystemExit("SLURM did not come up: " + sh("sinfo", check=False) + sh("tail -5 /var/log/slurm/*.log", check=False))
        sh(f"scontrol update nodename={host} state=resume", check=False)
        time.sleep(1)


def trained(d: dict) -> dict:
    return {k: v for k, v in d.items() if not any(t in k for t in TIMING)}


def cancel_one_mid_run(out: Path, stop: threading.Event) -> list[str]:
    """scancel the first task whose run has checkpointed 2 epochs; the job IDs cancelled."""
    while not stop.is_set():
        for run in sorted((out / "runs").glob("*")):
            jobs = (json.loads((run / "slurm_job.json").read_text()) if (run / "slurm_job.json").is_file() else {}).get("jobs")
            if jobs and len(read_jsonl(run / "metrics.jsonl")) >= 2:
                sh(f"scancel {jobs[-1]['job_id']}")
                print(f"scancel {jobs[-1]['job_id']} (run {run.name} after epoch {len(read_jsonl(run / 'metrics.jsonl'))})")
                return [jobs[-1]["job_id"]]
        time.sleep(0.5)
    return []


def main() -> int:
    t0 = time.monotonic()
    start_slurm()
    print(f"SLURM up in {time.monotonic() - t0:.0f} s: {sh('sinfo -h').strip()}")
    work = Path(tempfile.mkdtemp(prefix="vitlab-slurm-e2e-"))
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    t1 = time.monotonic()
    stop = threading.Event()
    cancelled: list[str] = []
    watcher = threading.Thread(target=lambda: cancelled.extend(cancel_one_mid_run(work / "slurm", stop)), daemon=True)
    watcher.start()
    result = run_study(spec, work / "slurm", workers=2, backend="slurm", progress=True)
    stop.set()
    print(f"SLURM study: {result.counts} in {time.monotonic() - t1:.0f} s")
    t2 = time.monotonic()
    base = run_study(spec, work / "local", workers=2, progress=False)
    print(f"local study: {base.counts} in {time.monotonic() - t2:.0f} s")
    requeues = sum(Path(j["stdout"]).read_text().count("Requeued") + Path(j["stderr"]).read_text().count("Requeued")
                   for run in (work / "slurm" / "runs").iterdir()
                   for j in json.loads((run / "slurm_job.json").read_text())["jobs"]
                   if Path(j["stdout"]).exists() and Path(j["stderr"]).exists())
    ok = result.ok and base.ok and bool(cancelled)
    mine = {r.run_id: r for r in open_index(work / "slurm").runs()}
    for rec in open_index(work / "local").runs():
        same = trained(mine[rec.run_id].summary) == trained(rec.summary) and \
            [trained(r) for r in read_jsonl(work / "slurm" / "runs" / rec.run_id / "metrics.jsonl")] == \
            [trained(r) for r in read_jsonl(work / "local" / "runs" / rec.run_id / "metrics.jsonl")]
        print(f"run {rec.run_id}: {'identical' if same else 'DIFFERENT'} (attempts {mine[rec.run_id].attempts})")
        ok = ok and same
    print(f"time-limit requeues: {requeues}; cancelled: {cancelled}; total {time.monotonic() - t0:.0f} s; "
          f"load {os.getloadavg()[0]:.1f}; study dirs in {work}")
    ok = ok and requeues > 0
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
