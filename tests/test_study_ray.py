"""The Ray backend: a local Ray instance trains a 2-run study (each run a Ray task); a two-node Ray
cluster whose worker nodes cannot see the study directory trains through a storage, and survives
losing its worker node mid-run."""
from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml

from vitlab.io import read_jsonl
from vitlab.study import open_index, run_study

ray = pytest.importorskip("ray")

SPEC = {
    "name": "tiny_ray",
    "base": {
        "device": "cpu",
        "data": {"name": "synthetic", "synthetic_train": 400, "synthetic_test": 200, "val_fraction": 0.2},
        "model": {"name": "vit_nano", "dim": 32, "depth": 1, "num_heads": 2},
        "train": {"epochs": 2, "batch_size": 64, "eval_batch_size": 200},
    },
    "vary": {"model.attn_norm": ["softmax", "cosine"]},
    "seeds": [0],
}


def test_local_ray_instance_runs_a_two_run_study(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    out = tmp_path / "study"
    result = run_study(spec, out, workers=2, backend="ray", progress=False)
    assert result.ok and result.counts == {"completed": 2}
    assert not ray.is_initialized()  # the instance it started is shut down
    recs = open_index(out).runs()
    assert [r.level_label for r in recs] == ["softmax", "cosine"]
    for r in recs:
        assert r.status == "completed" and r.attempts == 1
        assert [e["epoch"] for e in r.epochs] == [1, 2]
        assert len(read_jsonl(out / "runs" / r.run_id / "metrics.jsonl")) == 2
        # the run config the Ray task trained with: threads from the per-task CPU share
        cfg = yaml.safe_load((out / "runs" / r.run_id / "config.yaml").read_text())
        assert cfg["train"]["threads"] >= 1 and cfg["train"]["progress"] is False
    # a rerun finds everything done and starts no Ray instance
    again = run_study(spec, out, workers=2, backend="ray", progress=False)
    assert again.ok and again.trained == []


# ---------------------------------------------------------------------------------------------- a cluster
# Each Ray node runs in its own mount namespace (`unshare -m`), which (1) hides the study directory from
# the worker nodes under a private tmpfs, as on machines that share no file system, and (2) names exactly
# the processes of a node: killing a node is killing every process of its namespace.

RAY = Path(sys.executable).with_name("ray")
CLUSTER_SPEC = {**SPEC, "name": "tiny_cluster",
                "base": {**SPEC["base"], "data": {**SPEC["base"]["data"], "synthetic_train": 300, "synthetic_test": 100},
                         "train": {**SPEC["base"]["train"], "threads": 1}}}
PAUSE_ENV = "VITLAB_TEST_PAUSE_AFTER_EPOCH1"
TIMING_KEYS = {"epoch_time_s", "throughput_img_s", "train_time_s", "train_cpu_s", "minutes", "data_time_frac"}


@functools.lru_cache(maxsize=1)
def cluster_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root: worker nodes run in a private mount namespace (unshare -m) that hides the study directory"
    if shutil.which("unshare") is None or not RAY.exists():
        return "needs the unshare and ray commands"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot mount in a private namespace here ({probe.stderr.decode().strip()[:100]})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def mount_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


class Node:
    """`ray start --block ARGS` in a new mount namespace, with tmpfs over each path of `hide`."""

    def __init__(self, args: list[str], hide: list[Path], env: dict, log: Path):
        mounts = "".join(f"mount -t tmpfs tmpfs {shlex.quote(str(p))} && " for p in hide)
        ports = ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                 "--metrics-export-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                 "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]
        cmd = shlex.join([str(RAY), "start", "--block", "--disable-usage-stats", *ports, *args])
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", mounts + "exec " + cmd],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        ours, deadline = mount_ns("self"), time.monotonic() + 10
        while (ns := mount_ns(self.proc.pid)) == ours and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ns and ns != ours, "unshare -m did not take effect"
        self.ns = ns

    def pids(self) -> list[int]:
        return [int(p) for p in os.listdir("/proc") if p.isdigit() and mount_ns(p) == self.ns]

    def sees(self, path: Path) -> bool:
        """Whether this node's processes see `path` (looked up through the node's own mounts)."""
        return Path(f"/proc/{self.proc.pid}/root{path}").exists()

    def kill(self) -> None:
        """SIGKILL every process of the node (as when its machine is lost), until none is left."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        self.proc.wait(timeout=10)
        self.log.close()


def wait_for_cpus(address: str, cpus: float, env: dict, timeout: float = 120) -> None:
    code = ("import ray, sys, time\n"
            f"ray.init(address={address!r}, log_to_driver=False)\n"
            f"t = time.time() + {timeout}\n"
            f"while ray.available_resources().get('CPU', 0) < {cpus} and time.time() < t: time.sleep(0.2)\n"
            f"sys.exit(0 if ray.available_resources().get('CPU', 0) >= {cpus} else 1)\n")
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=timeout + 60,
                          capture_output=True).returncode == 0, f"the cluster never offered {cpus} CPUs"


def pause_after_first_epoch(cfg, out, resume=True, on_epoch=None, progress=None, context=None):
    """The real trainer; on a node started with PAUSE_ENV it sleeps after publishing epoch 1 (a window to
    lose the node mid-run). Sleeping changes no result."""
    import os as _os
    import time as _time

    from vitlab.training import run_training

    def hook(epoch, row):
        stop = on_epoch(epoch, row) if on_epoch is not None else False
        if epoch == 1 and _os.environ.get(PAUSE_ENV):
            _time.sleep(float(_os.environ[PAUSE_ENV]))
        return stop

    return run_training(cfg, out, resume=resume, on_epoch=hook, progress=progress, context=context)


def untimed_files(run: Path) -> tuple[list[dict], dict]:
    metrics = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_jsonl(run / "metrics.jsonl")]
    summary = json.loads((run / "summary.json").read_text())
    return metrics, {k: v for k, v in summary.items() if k not in TIMING_KEYS}


@pytest.mark.skipif(cluster_skip_reason() is not None, reason=str(cluster_skip_reason()))
def test_cluster_without_a_shared_file_system_loses_nothing_when_a_node_dies(tmp_path, monkeypatch):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test trainer travels by value
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(CLUSTER_SPEC))
    hidden = tmp_path / "coordinator"  # the study directories live here: worker nodes see an empty tmpfs
    hidden.mkdir()
    (hidden / "marker").write_text("only the coordinator sees this")
    bucket = tmp_path / "bucket"  # the storage every node reaches (an object store on a real cluster)
    temp = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))  # Ray's sockets need a short path
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nodes do not have this vitlab:
    env["RAY_AUTH_MODE"] = "disabled"  # it is shipped to them (runtime_env py_modules)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ip = ray._private.services.get_node_ip_address()
    port = free_port()
    address = f"{ip}:{port}"
    nodes: list[Node] = []
    try:
        nodes.append(Node(["--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false",
                           "--ray-client-server-port", str(free_port()), "--temp-dir", str(temp)],
                          [], env, tmp_path / "head.log"))
        node_a = Node(["--address", address, "--num-cpus", "2"], [hidden],  # PAUSE_ENV: see the trainer
                      {**env, "VITLAB_SCRATCH": str(tmp_path / "scratch-a"), PAUSE_ENV: "120"}, tmp_path / "a.log")
        nodes.append(node_a)
        wait_for_cpus(address, 2, env)
        assert (hidden / "marker").exists() and not node_a.sees(hidden / "marker")

        # 1. every run arrives in storage; the coordinator mirrors it; a rerun finds nothing to do
        url = f"file://{bucket}/first"
        first = run_study(spec, hidden / "first", workers=2, backend="ray", ray_address=address, storage=url,
                          cpus_per_run=1, progress=False)
        assert first.ok and first.counts == {"completed": 2}, first.errors
        ids = sorted(r.run_id for r in open_index(hidden / "first").runs())
        for rid in ids:
            stored = {p.relative_to(bucket / "first" / "runs" / rid).as_posix()
                      for p in (bucket / "first" / "runs" / rid).rglob("*")
                      if p.is_file() and not p.name.startswith(".")}  # not the run's lock (study/lease.py)
            assert stored == {"config.yaml", "metrics.jsonl", "summary.json", "confusion_test.csv",
                              "checkpoints/last.pt", "checkpoints/best.pt"}
            assert len(read_jsonl(hidden / "first" / "runs" / rid / "metrics.jsonl")) == 2
        again = run_study(spec, hidden / "first", workers=2, backend="ray", ray_address=address,
                          cpus_per_run=1, progress=False)
        assert again.ok and again.trained == []

        # 2. node A dies after epoch 1 of both runs; a fresh node B resumes them from storage
        url = f"file://{bucket}/second"
        lost = threading.Event()

        def lose_node_a_mid_run():
            runs = bucket / "second" / "runs"
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if len([p for p in runs.glob("*/metrics.jsonl") if p.read_text().strip()]) == 2:
                    node_a.kill()
                    lost.set()
                    nodes.append(Node(["--address", address, "--num-cpus", "2"], [hidden],
                                      {**env, "VITLAB_SCRATCH": str(tmp_path / "scratch-b")}, tmp_path / "b.log"))
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=lose_node_a_mid_run, daemon=True)
        killer.start()
        second = run_study(spec, hidden / "second", workers=2, backend="ray", ray_address=address, storage=url,
                           cpus_per_run=1, progress=False, trainer=pause_after_first_epoch)
        killer.join(timeout=10)
        assert lost.is_set(), "node A was never lost mid-run"
        assert second.ok and second.counts == {"completed": 2}, second.errors
        recs = open_index(hidden / "second").runs()
        assert sorted(r.run_id for r in recs) == ids and all(r.attempts == 2 for r in recs)
        for rid in ids:  # resumed from the epoch-1 checkpoint in storage: as if never interrupted
            assert untimed_files(hidden / "second" / "runs" / rid) == untimed_files(hidden / "first" / "runs" / rid)
        assert not list((bucket / "second").rglob(".lease"))
    finally:
        for node in reversed(nodes):
            node.kill()
        shutil.rmtree(temp, ignore_errors=True)


def test_ray_runtime_env_ships_vitlab_and_optionally_its_dependencies():
    import vitlab
    from vitlab.study.backends import ray_runtime_env

    env = ray_runtime_env()
    assert env["py_modules"] == [str(Path(vitlab.__file__).parent)] and "__pycache__" in env["excludes"]
    assert "pip" not in env  # by default the nodes bring vitlab's dependencies themselves
    reqs = ray_runtime_env(pip=True, storage_location="s3://bucket/study")["pip"]
    names = [r.split(">")[0].split("=")[0].split("<")[0] for r in reqs]
    assert "torch" not in names and "ray" not in names  # the cluster's own
    assert {"numpy", "pyyaml", "torchmetrics", "fsspec", "s3fs"} <= set(names)
    assert "gcsfs" not in names and ray_runtime_env(pip=True, storage_location="gs://b/x")["pip"][-1] == "gcsfs"
    from vitlab.errors import UserError

    with pytest.raises(UserError, match="--ray-pip: only used with --backend ray"):
        run_study(SPEC, "unused", ray_pip=True, progress=False)
    assert not Path("unused").exists()
