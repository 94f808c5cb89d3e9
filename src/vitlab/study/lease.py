"""A lease on a run held in storage: one worker trains a run at a time, across machines.

`flock` (lock.py) guards a run directory on one machine; machines that share only a storage need an
object instead. The holder writes an owner object `{token, machine, pid, beat, renewed}` and renews it
from a heartbeat thread every `ttl_s / 4` seconds; it checks the object still names it before each
publish (`check()`), so a worker that lost its lease stops writing. A waiter takes the lease over when

- there is none (released by its holder when the run ends), or
- the holder ran on this very machine and its process is gone (a killed worker: no wait), or
- the owner object has not changed for `ttl_s` seconds *as timed by the waiter's own clock* (a lost
  node): clocks of different machines are never compared.

Object stores offer no compare-and-swap through fsspec, so taking a lease is write, wait `SETTLE_S`,
read back: of two racing writers, the one whose object is not read back backs off.

One protocol for every coordinator: a storage that is a directory on this machine (a path, file://, a
network mount) may also be some study's own directory, whose workers train in place under the run
directory's flock (lock.py) and take no lease. So a lease there also takes that flock, for as long as
it is held: a coordinator in place and one using its directory as `--storage` never train one run at once.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ..io import pid_alive
from ..jsonread import MalformedFile, parse_json
from .lock import RUN_LOCK, DirLock
from .storage import Storage

#: Seconds without a heartbeat after which a lease counts as abandoned.
LEASE_TTL_S = 60.0
#: Seconds between writing a lease and reading it back to confirm it is ours.
SETTLE_S = 0.3
#: Seconds between looks at a lease held by someone else.
POLL_S = 1.0
#: A lease object is a few hundred bytes; a larger one is foreign (held until it goes stale).
MAX_LEASE_BYTES = 64 * 2 ** 10

_ACTIVE: set["Lease"] = set()  # leases held by this process (released when its coordinator dies)


class LeaseLost(RuntimeError):
    """Another worker took this run's lease over: this one must stop writing the run."""


def machine_id() -> str:
    """Who can judge a pid: the host name, the kernel boot and the pid namespace ("" when unknown)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{socket.gethostname()}|{boot}|{pidns}"


class Lease:
    """The lease object `key` in `storage`; `acquire()`, then `check()` before writes, `release()`."""

    def __init__(self, storage: Storage, key: str, ttl_s: float = LEASE_TTL_S):
        self.storage, self.key, self.ttl_s = storage, key, ttl_s
        self.token = uuid.uuid4().hex
        self.beat = 0
        self.held = False
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        root = storage.local_dir()  # the run directory's flock, which in-place workers hold (module doc)
        self.flock = DirLock(root.joinpath(*key.split("/")[:-1]), RUN_LOCK, root=root) if root is not None else None

    # ------------------------------------------------------------------ reading
    def read(self) -> dict | None:
        data = self.storage.get(self.key)
        if data is None:
            return None
        try:
            owner = parse_json(data, self.key) if len(data) <= MAX_LEASE_BYTES else {}
        except MalformedFile:
            return {}  # torn or foreign: treated as held until it goes stale
        return owner if isinstance(owner, dict) else {}

    def describe(self, owner: dict | None) -> str:
        if not owner:
            held = self.flock is not None and self.flock.fd is None and self.flock.path.exists()
            return f"pid {self.flock.holder()} (in place)" if held else "nobody"
        return f"pid {owner.get('pid', '?')} on {str(owner.get('machine', '?')).split('|')[0] or '?'}"

    def abandoned_here(self, owner: dict) -> bool:
        """The holder ran on this machine and its process is gone."""
        mine = machine_id()
        return bool(mine) and owner.get("machine") == mine and isinstance(owner.get("pid"), int) \
            and not pid_alive(owner["pid"])

    # ------------------------------------------------------------------ taking
    def _write(self) -> None:
        self.beat += 1
        self.storage.put(self.key, json.dumps({"token": self.token, "machine": machine_id(), "pid": os.getpid(),
                                               "beat": self.beat, "renewed": time.time(),
                                               "ttl_s": self.ttl_s}).encode())

    def acquire(self, wait_s: float) -> bool:
        """Take the lease, waiting up to `wait_s` seconds for its holder; False when it is still held."""
        deadline = time.monotonic() + wait_s
        try:
            return self._acquire(deadline)
        finally:
            if not self.held and self.flock is not None:
                self.flock.release()

    def _acquire(self, deadline: float) -> bool:
        seen, seen_at = None, 0.0
        while True:
            if self.flock is not None and self.flock.fd is None and not self.flock.try_acquire():
                if time.monotonic() >= deadline:  # a worker trains the run in place
                    return False
                time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
                continue
            owner = self.read()
            now = time.monotonic()
            if owner != seen:
                seen, seen_at = owner, now
            if owner is None or self.abandoned_here(owner) or now - seen_at >= self.ttl_s:
                self._write()
                time.sleep(SETTLE_S)
                back = self.read()
                if back is not None and back.get("token") == self.token:
                    self.held = True
                    _ACTIVE.add(self)
                    self._thread = threading.Thread(target=self._heartbeat, name="vitlab-lease", daemon=True)
                    self._thread.start()
                    return True
                seen, seen_at = back, time.monotonic()  # someone else won the race: wait for them
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                owner = self.read()
                if owner is None or owner.get("token") != self.token:
                    self.lost = True
                    return
                self._write()
            except Exception:  # storage briefly away: the next beat tries again; check() decides
                continue

    # ------------------------------------------------------------------ holding
    def check(self) -> None:
        """Raise LeaseLost unless the lease is still ours."""
        if not self.held:
            raise LeaseLost(f"{self.key}: not held")
        owner = None if self.lost else self.read()
        if self.lost or owner is None or owner.get("token") != self.token:
            self.lost = True
            raise LeaseLost(f"{self.key}: taken over by {self.describe(owner)}; this worker stops writing the run")

    def release(self) -> None:
        """Stop renewing and remove the lease object if it is still ours."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        _ACTIVE.discard(self)
        if not self.held:
            return
        self.held = False
        try:
            owner = self.read()
            if owner is not None and owner.get("token") == self.token:
                self.storage.delete(self.key)
        except Exception:  # it goes stale by itself
            pass
        finally:
            if self.flock is not None:
                self.flock.release()


def release_active(timeout_s: float = 2.0) -> None:
    """Release this process's leases within `timeout_s` (a worker whose coordinator died, on its way out)."""
    leases = list(_ACTIVE)
    if not leases:
        return
    t = threading.Thread(target=lambda: [lease.release() for lease in leases], daemon=True)
    t.start()
    t.join(timeout_s)


__all__ = ["LEASE_TTL_S", "Lease", "LeaseLost", "machine_id", "release_active"]
