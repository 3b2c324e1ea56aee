"""A watchdog that notices a lost rank of a distributed run and names it.

When one rank of a gloo / NCCL job dies, the others learn it late and badly: gloo's next
collective fails with ``Connection closed by peer [addr]:port`` (no rank), NCCL's waits for its
own timeout (minutes) and a frozen rank keeps the others waiting for the process group's timeout
(30 minutes by default). :class:`RankWatchdog` runs two daemon threads in every rank:

* a beat thread increments this rank's counter in the rendezvous store (the process group's
  ``TCPStore``) every ``interval`` seconds and reads the peers' counters;
* a check thread declares a peer lost when its process is gone (same host: its pid no longer
  exists or is a zombie, found within one ``interval``), when its counter did not move for
  ``timeout`` seconds (any host: a dead node, a frozen process), or when the store itself can no
  longer be reached (it lives in rank 0's process unless a launcher such as torchrun hosts it).

A verdict is handed to ``on_lost`` (which by default ends the process with status 1 after
logging it), unless the main thread asked for it with :meth:`RankWatchdog.explain` because a
collective failed: then the main thread raises an error naming the lost rank itself. A rank that
finishes normally calls :meth:`RankWatchdog.stop`, which marks it done, so that its exit is not
taken for a loss.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Callable, Optional

logger = logging.getLogger(__name__)


def _boot_id() -> str:
    try:
        with open('/proc/sys/kernel/random/boot_id') as f:
            return f.read().strip()
    except OSError:
        return ''


def process_alive(pid: int) -> bool:
    """Whether ``pid`` names a live (not zombie) process of this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f'/proc/{pid}/stat') as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
        return state not in ('Z', 'X')
    except (OSError, IndexError):
        return True


class RankWatchdog:
    """Heartbeats through a ``torch.distributed`` store; see the module docstring.

    Args:
        store: the rendezvous store shared by all ranks (e.g. the default process group's).
        rank: this process's rank.
        world_size: the number of ranks.
        timeout: seconds without a heartbeat (or without reaching the store) after which a rank
            is declared lost.
        interval: seconds between heartbeats.
        prefix: a key prefix unique to this run (the ranks must agree on it).
        store_host: who runs the store, named in the message when it cannot be reached
            (``'rank 0'`` or ``'the launcher'``).
        on_lost: called with the message when a rank is found lost and the main thread is not
            waiting in :meth:`explain`; the default logs it and ends the process with status 1.
        grace: seconds ``on_lost`` waits for a normal :meth:`stop` (a peer that finished just
            before this rank) before it acts.
    """

    def __init__(self, store, rank: int, world_size: int, timeout: float = 60.0,
                 interval: float = 2.0, prefix: str = 'densekit/watchdog/',
                 store_host: str = 'rank 0', on_lost: Optional[Callable[[str], None]] = None,
                 grace: Optional[float] = None) -> None:
        if timeout <= interval:
            raise ValueError(f'RankWatchdog: timeout ({timeout}) must exceed interval ({interval})')
        self.store, self.rank, self.world_size = store, rank, world_size
        self.timeout, self.interval = float(timeout), float(interval)
        self.prefix, self.store_host = prefix, store_host
        self.on_lost = on_lost or _exit_on_lost
        self.grace = 2 * self.interval if grace is None else float(grace)
        self.verdict: Optional[str] = None
        self._found = threading.Event()
        self._stopped = threading.Event()
        self._main_waiting = False
        self._peers = [r for r in range(world_size) if r != rank]
        self._count = {r: None for r in self._peers}
        now = time.monotonic()
        self._seen = {r: now for r in self._peers}
        self._info: dict = {}
        self._store_ok = now
        self._store_error: Optional[str] = None
        self._threads: list = []

    def _key(self, kind: str, rank: int) -> str:
        return f'{self.prefix}{kind}/{rank}'

    # ------------------------------------------------------------------------ lifecycle
    def start(self) -> 'RankWatchdog':
        info = dict(host=socket.gethostname(), boot=_boot_id(), pid=os.getpid())
        self.store.set(self._key('info', self.rank), json.dumps(info))
        self.store.add(self._key('beat', self.rank), 1)
        for target, name in ((self._beat_loop, 'beat'), (self._check_loop, 'check')):
            t = threading.Thread(target=target, name=f'densekit-watchdog-{name}', daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """This rank ends normally: stop watching and tell the peers not to miss it."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        try:
            self.store.set(self._key('done', self.rank), '1')
        except Exception:  # noqa: BLE001 (the store may be gone already at the end of a run)
            pass

    def explain(self, wait: float) -> Optional[str]:
        """Called by the main thread after a failed collective: waits up to ``wait`` seconds for
        a verdict and returns it (``None`` if every rank seems alive); ``on_lost`` is then not
        called, the caller raises instead."""
        self._main_waiting = True
        self._found.wait(wait)
        return self.verdict

    # -------------------------------------------------------------------------- threads
    def _beat_loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.store.add(self._key('beat', self.rank), 1)
                for r in self._peers:
                    count = self.store.add(self._key('beat', r), 0)
                    if count != self._count[r]:
                        self._count[r], self._seen[r] = count, time.monotonic()
                self._store_ok = time.monotonic()
            except Exception as e:  # noqa: BLE001 (any store failure: the host is gone)
                self._store_error = f'{type(e).__name__}: {e}'.strip()

    def _peer_info(self, r: int) -> Optional[dict]:
        if r not in self._info:
            try:
                key = self._key('info', r)
                if not self.store.check([key]):
                    return None
                self._info[r] = json.loads(self.store.get(key))
            except Exception:  # noqa: BLE001
                return None
        return self._info[r]

    def _peer_done(self, r: int) -> bool:
        try:
            return self.store.check([self._key('done', r)])
        except Exception:  # noqa: BLE001
            return False

    def _lost(self) -> Optional[str]:
        now = time.monotonic()
        host, boot = socket.gethostname(), _boot_id()
        for r in self._peers:
            info = self._peer_info(r)
            if info and info['host'] == host and info['boot'] == boot and not process_alive(info['pid']):
                if not self._peer_done(r):
                    return f'rank {r} (pid {info["pid"]} on {host}) has exited'
        if self._store_error is not None and now - self._store_ok > self.interval:
            return (f'the rendezvous store, run by {self.store_host}, cannot be reached '
                    f'({self._store_error}): {self.store_host} was lost')
        if now - self._store_ok > self.timeout:
            return (f'the rendezvous store, run by {self.store_host}, has not answered for '
                    f'{now - self._store_ok:.0f} s: {self.store_host} was lost')
        for r in self._peers:
            if now - self._seen[r] > self.timeout and not self._peer_done(r):
                where = self._peer_info(r) or {}
                at = f' (pid {where["pid"]} on {where["host"]})' if where else ''
                return f'rank {r}{at} has sent no heartbeat for {now - self._seen[r]:.0f} s'
        return None

    def _check_loop(self) -> None:
        while not self._stopped.wait(self.interval / 2):
            why = self._lost()
            if why is None:
                continue
            self.verdict = f'rank {self.rank} of {self.world_size} lost contact: {why}'
            self._found.set()
            if self._main_waiting or self._stopped.wait(self.grace) or self._main_waiting:
                return
            self.on_lost(self.verdict)
            return


def _exit_on_lost(message: str) -> None:
    logger.error('%s; exiting', message)
    for handler in logging.getLogger().handlers + logger.handlers:
        handler.flush()
    import sys
    print(f'RankWatchdog: {message}; exiting with status 1', file=sys.stderr, flush=True)
    os._exit(1)
