"""One live run per run root: a lock file with its holder, refreshed while the run lives.

``<root>/_LOCK`` holds JSON ``{"host", "pid", "job", "started_utc", "heartbeat_utc"}``. A job
creates it (atomically where the file system can) before any work and deletes it when it
ends. A lock is *stale*, and taken over with a message, when its holder is a process of this
host that no longer exists, or when its heartbeat is older than `STALE_AFTER_SECONDS`
(its holder, on whatever host, was killed without cleaning up). The holder rewrites the
heartbeat every `HEARTBEAT_SECONDS`.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading

from sgns_spark.errors import UserError
from sgns_spark.layout import LOCK_FILE
from sgns_spark.storage import Storage

HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 600.0  # twenty missed heartbeats
ACQUIRE_ATTEMPTS = 5  # tries to create the lock when another run releases or abandons it meanwhile


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def process_exists(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def stale_reason(holder: dict) -> str | None:
    """Why the lock of `holder` no longer protects a live run, or None while it does."""
    if holder.get("host") == socket.gethostname() and not process_exists(int(holder.get("pid", -1))):
        return f"its holder, pid {holder.get('pid')} on this host, is gone"
    heartbeat = datetime.datetime.fromisoformat(holder.get("heartbeat_utc", "1970-01-01T00:00:00+00:00"))
    age = (utc_now() - heartbeat).total_seconds()
    if age > STALE_AFTER_SECONDS:
        return f"its heartbeat is {age:.0f} s old"
    return None


class RunLock:
    """A context manager holding ``<root>/_LOCK`` for one job.

    Raises
    ------
    UserError
        On entry, when another live run holds the root.
    """

    def __init__(self, storage: Storage, job: str):
        self.storage, self.job = storage, job
        started = utc_now().isoformat(timespec="seconds")
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "job": job,
                       "started_utc": started, "heartbeat_utc": started}
        self.stopped = threading.Event()
        self.heartbeat = threading.Thread(target=self._beat, name="sgns-spark-lock-heartbeat", daemon=True)

    def __enter__(self) -> RunLock:
        for _ in range(ACQUIRE_ATTEMPTS):
            if self.storage.create_exclusive(LOCK_FILE, json.dumps(self.holder)):
                self.heartbeat.start()
                return self
            if not self.storage.exists(LOCK_FILE):  # released between the two calls
                continue
            holder = self.storage.read_json(LOCK_FILE)
            reason = stale_reason(holder)
            if reason is None:
                raise UserError(
                    f"run root {self.storage.root} is in use by the {holder.get('job')} job of pid "
                    f"{holder.get('pid')} on host {holder.get('host')} since {holder.get('started_utc')}; "
                    f"wait for it to end, or delete {self.storage.path(LOCK_FILE)} if that run is dead"
                )
            print(f"[lock] taking over the lock of {self.storage.root}: {reason}", flush=True)
            self.storage.delete(LOCK_FILE)
        raise UserError(f"could not take the lock {self.storage.path(LOCK_FILE)}: other runs keep taking it; "
                        "start one run per root")

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            self.holder["heartbeat_utc"] = utc_now().isoformat(timespec="seconds")
            self.storage.write_text(LOCK_FILE, json.dumps(self.holder))

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.heartbeat.join()
        self.storage.delete(LOCK_FILE)
