"""Claims: which worker is evaluating which group, so two workers writing into one evaluation
directory never evaluate (and store) the same group (issue 14).

A worker claims a group before evaluating it: `<eval dir>/claims/<group>.claim`, created with
O_CREAT|O_EXCL and held under an exclusive `flock` for as long as the worker works on it. The claim
is removed once the group is stored. The rule for a claim left behind (its worker was killed): a
claim is held while its process lives, because the kernel (or the NFS server, after its lease)
drops a dead process's lock; a worker that finds a claim file nobody locks takes it over. A live
worker's claim, a resubmitted array task's old self still running included, is never taken.

After taking a claim the worker checks that the group is still not done in any store (another
worker may have finished it between the worker's plan and its claim): the finisher stores the
group before it removes its claim, so that check sees every group finished before the claim.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

from metasft.errors import MetasftError

if TYPE_CHECKING:  # not imported at run time: the experiment's stage plan reads CLAIMS_DIR without torch
    from metasft.eval.schedule import Group

CLAIMS_DIR = "claims"  # in the evaluation's output directory


class ClaimError(MetasftError):
    """The evaluation directory cannot hold claims (a file system without file locks)."""


def claim_name(group: Group) -> str:
    """`<model>.<task>.<n>shot.seed<seed>.<digest>.claim`: readable, and unique for any names."""
    key = json.dumps([group.model, group.task, group.n_shots, group.seed])
    readable = re.sub(r"[^\w-]+", "_", f"{group.model}.{group.task}")[:80]
    return f"{readable}.{group.n_shots}shot.seed{group.seed}.{hashlib.sha256(key.encode()).hexdigest()[:12]}.claim"


class Claims:
    """The claims of one evaluation directory, as taken by this process (`take`, `release`)."""

    def __init__(self, eval_dir: Path, worker: str):
        self.dir = Path(eval_dir) / CLAIMS_DIR
        self.worker = worker  # who claims: shown in the claim file, for a person reading it
        self._held: dict[Group, int] = {}  # group -> the open, locked file descriptor

    def take(self, group: Group) -> bool:
        """Claim `group`; False if a live worker holds it."""
        path = self.dir / claim_name(group)
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
        except FileExistsError:
            try:
                fd = os.open(path, os.O_RDWR)  # someone's claim: take it over if nobody holds its lock
            except FileNotFoundError:
                return self.take(group)  # released in between: claim it afresh
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
                return False
            raise ClaimError(f"{self.dir}: cannot lock a claim file ({e.strerror}); evaluate into a directory on a "
                            f"file system with file locks") from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current != os.fstat(fd).st_ino:  # its holder released (removed) it before we locked it
            os.close(fd)
            return self.take(group)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"group": [group.model, group.task, group.n_shots, group.seed], "worker": self.worker,
                                 "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode())
        self._held[group] = fd
        return True

    def release(self, group: Group) -> None:
        """Remove the claim of `group` (after storing it), then drop its lock."""
        fd = self._held.pop(group)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.dir / claim_name(group))
        os.close(fd)

    def release_all(self) -> None:
        for group in list(self._held):
            self.release(group)
