"""Sockets inside a lab namespace without forking: a short-lived thread enters the namespace (setns affects only
the calling thread) and opens the socket there; the socket stays in that namespace for its life.

`vmshadow.lab.probe.open_socket` forks a child (pyroute2) to do the same; a fork from a process with many threads
(the SAE, HTTP servers, drivers) hung here once a lock held by another thread was copied into the child."""

from __future__ import annotations

import ctypes
import os
import socket
import threading

from vmshadow.domain.errors import InputError, Issue

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


def ns_socket(namespace: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket living in `namespace` (`InputError` when there is no such namespace)."""
    path = os.path.join(NETNS_DIR, namespace)
    if "/" in namespace or not os.path.exists(path):
        raise InputError(Issue("lab", f"no network namespace {namespace!r}", field="namespace"))
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def make() -> None:  # this thread ends in the namespace: nothing else ever runs on it
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {namespace}: {os.strerror(err)}")
            finally:
                os.close(fd)
            made.append(socket.socket(family, kind, proto))
        except BaseException as exc:  # handed to the caller's thread
            failed.append(exc)

    thread = threading.Thread(target=make, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]
