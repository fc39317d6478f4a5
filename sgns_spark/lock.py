"""One live run per run root: a lock file with its holder, refreshed while the run lives.

``<root>/_LOCK`` holds JSON ``{"host", "pid", "job", "started_utc"}``. A job creates it
(atomically where the file system can) before any work and deletes it when it ends. Its
heartbeat is the file's modification time, which the holder sets to now every
`HEARTBEAT_SECONDS` without rewriting the file: a rewrite replaced it by a delete and a rename,
and between the two another run could find the root free and take it. A lock is *stale*, and
taken over with a message, when its holder is a process of this host that no longer exists, or
when its heartbeat is older than `STALE_AFTER_SECONDS` (its holder, on whatever host, was killed
without cleaning up). Only the run holding ``<root>/_LOCK.takeover`` deletes a stale lock
(`RunLock._take_over`).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import time

from py4j.protocol import Py4JJavaError

from sgns_spark.errors import JVM_CALL_ENDED, DamagedFileError, UserError, java_causes, jvm_gone
from sgns_spark.layout import LOCK_FILE, TAKEOVER_FILE
from sgns_spark.storage import Storage

HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 600.0  # twenty missed heartbeats
ACQUIRE_ATTEMPTS = 5  # tries to create the lock when another run releases or abandons it meanwhile
TAKEOVER_WAIT_SECONDS = 0.2  # between tries while another run holds the takeover guard (it takes milliseconds)
TAKEOVER_STALE_SECONDS = 60.0  # a guard this old was left by a run killed in the middle of a takeover


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


def stale_reason(holder: dict, heartbeat: float, stale_after: float = STALE_AFTER_SECONDS) -> str | None:
    """Why the lock of `holder`, last refreshed at `heartbeat` (seconds since the epoch), no
    longer protects a live run, or None while it does (`stale_after` seconds without a heartbeat)."""
    if holder.get("host") == socket.gethostname() and not process_exists(int(holder.get("pid", -1))):
        return f"its holder, pid {holder.get('pid')} on this host, is gone"
    age = time.time() - heartbeat
    if age > stale_after:
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
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "job": job,
                       "started_utc": utc_now().isoformat(timespec="seconds")}
        self.stopped = threading.Event()
        self.heartbeat = threading.Thread(target=self._beat, name="sgns-spark-lock-heartbeat", daemon=True)

    def __enter__(self) -> RunLock:
        for _ in range(ACQUIRE_ATTEMPTS):
            if self.storage.create_exclusive(LOCK_FILE, json.dumps(self.holder)):
                self.heartbeat.start()
                return self
            found = self._read(LOCK_FILE)
            if found is None:  # released or taken over meanwhile
                continue
            holder, heartbeat = found
            reason = stale_reason(holder, heartbeat)
            if reason is None:
                raise UserError(
                    f"run root {self.storage.root} is in use by the {holder.get('job')} job of pid "
                    f"{holder.get('pid')} on host {holder.get('host')} since {holder.get('started_utc')}; "
                    f"wait for it to end, or delete {self.storage.path(LOCK_FILE)} if that run is dead"
                )
            self._take_over(holder, reason)
        raise UserError(f"could not take the lock {self.storage.path(LOCK_FILE)}: other runs keep taking it; "
                        "start one run per root")

    def _read(self, relative: str) -> tuple[dict, float] | None:
        """The holder and heartbeat of lock file `relative`, or None when it is gone. A file that
        another run deleted and made again between the two reads is read again."""
        try:
            return self.storage.read_json(relative), self.storage.modified_at(relative)
        except (DamagedFileError, Py4JJavaError):
            if not self.storage.exists(relative):
                return None
        return self.storage.read_json(relative), self.storage.modified_at(relative)

    def _take_over(self, holder: dict, reason: str) -> None:
        """Delete the stale lock of `holder`, holding the takeover guard, once it is still that lock.

        Two runs that found one lock stale both deleted it, and the later delete could remove the
        lock the other had just made, so both ran (two threads racing: at race 1 in one try, race
        4 in another). Only the holder of the guard deletes, and only the lock it judged stale;
        the other waits for the guard and then finds the first's lock, live. A guard left by a run
        killed in a takeover is taken over in the same way as a lock (its holder gone, or older
        than `TAKEOVER_STALE_SECONDS`).
        """
        if not self.storage.create_exclusive(TAKEOVER_FILE, json.dumps(self.holder)):
            guard = self._read(TAKEOVER_FILE)
            if guard is not None and stale_reason(*guard, stale_after=TAKEOVER_STALE_SECONDS) is not None:
                self.storage.delete(TAKEOVER_FILE)
            time.sleep(TAKEOVER_WAIT_SECONDS)
            return
        try:
            found = self._read(LOCK_FILE)
            if found is not None and found[0] == holder:
                print(f"[lock] taking over the lock of {self.storage.root}: {reason}", flush=True)
                self.storage.delete(LOCK_FILE)
        finally:
            self.storage.delete(TAKEOVER_FILE)

    def _beat(self) -> None:
        """Refresh the heartbeat until the lock is released. A refresh that fails (a file system
        that does not answer) is tried again at the next beat, with one line when the failures
        start and one when they end: the job goes on, and only a lock left unrefreshed for
        `STALE_AFTER_SECONDS` could be taken over."""
        failing = False
        while not self.stopped.wait(HEARTBEAT_SECONDS):
            try:
                self.storage.touch(LOCK_FILE)
            except Py4JJavaError as error:
                if not failing:
                    print(f"[lock] warning: the heartbeat of {self.storage.path(LOCK_FILE)} cannot be refreshed "
                          f"({java_causes(error)[-1][1]}); retrying every {HEARTBEAT_SECONDS:.0f} s (another run "
                          f"may take the lock over once it is {STALE_AFTER_SECONDS:.0f} s old)", flush=True)
                failing = True
                continue
            except JVM_CALL_ENDED:  # the JVM is gone; the job ends with its own line
                return
            if failing:
                print(f"[lock] the heartbeat of {self.storage.path(LOCK_FILE)} is refreshed again", flush=True)
                failing = False

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.heartbeat.join()
        try:
            self.storage.delete(LOCK_FILE)
        except Exception as error:  # noqa: BLE001 - raised again unless the JVM is gone or the job failed
            if exc_info[1] is None and not jvm_gone(error):
                raise
            # the lock stays, its holder's process ends: the next run on the root takes it over. A job
            # that failed ends with its own error, not the release's (a JVM shutting down under it, say)
