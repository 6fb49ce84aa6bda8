"""QEMU's RCU: readers, grace periods and the call_rcu thread (util/rcu.c, include/qemu/rcu.h), in the two
shapes a modelled release has: ef149763a8's (November 2021, which added the force_rcu notifiers; QEMU 6.2 to
10.1) and 55d98e3ede's "force quiescent state" (October 2025; reverted by ddb4d9d174 and reapplied by
649a78aa32 before 11.0, so in 10.2 and later).

Theory of operation: a registered thread's reader record holds the global grace-period counter's value
while it is inside a read-side critical section, 0 outside. `synchronize_rcu` advances the counter and
`wait_for_readers` waits until every registered reader is either outside or inside a section that began
after the advance; it sleeps on `rcu_gp_event`, which a reader sets when it leaves its section while a
writer waits. `call_rcu1` queues a callback for the call_rcu thread, which waits for a grace period and
then runs the callbacks with the BQL. `drain_call_rcu` (qmp_device_add calls it since 7bed89958b) drops
the BQL, queues a callback of its own and waits for it. While it waits, `wait_for_readers` calls every
still-active reader's force_rcu notifiers (ef149763a8); the TCG vCPU threads register one (dd47a8f654)
that kicks the vCPU out of cpu_exec - the `force_rcu` switch.

Since 55d98e3ede the call_rcu thread no longer naps to let callbacks pile up: it starts a grace period at
the first callback, and `wait_for_readers` polls (10 ms naps) until the grace period ends by itself, or
forces it - calls every reader's force_rcu notifiers once and sleeps on `rcu_gp_event` - when 30 callbacks
are queued, after 5 naps, or at once while a drain_call_rcu waits.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..versions import has
from .effects import Block, BqlLock, BqlUnlock, Effect, QemuCond

if TYPE_CHECKING:
    from .machine import Machine

RCU_GP_LOCKED = 1
RCU_GP_CTR = 2
RCU_CALL_MIN_SIZE = 30
CALL_RCU_POLL_NS = 10_000_000  # call_rcu_thread's g_usleep(10000); wait_for_readers' since 55d98e3ede
RCU_FORCE_AFTER_SLEEPS = 5  # wait_for_readers (55d98e3ede): naps before it forces the grace period


@dataclass(eq=False, repr=False)
class RcuReader:
    """struct rcu_reader_data of one registered thread."""

    thread: str
    ctr: int = 0
    depth: int = 0
    waiting: bool = False
    force_rcu: list[Callable[[], None]] = field(default_factory=list)

    def key(self) -> tuple[Any, ...]:
        return (self.thread, self.ctr, self.depth, self.waiting, len(self.force_rcu))


@dataclass(eq=False, repr=False)
class Rcu:
    """util/rcu.c's globals."""

    gp_event: QemuCond = field(default_factory=lambda: QemuCond("rcu_gp_event"))
    call_ready_event: QemuCond = field(default_factory=lambda: QemuCond("rcu_call_ready_event"))
    gp_ctr: int = RCU_GP_LOCKED
    registry: dict[str, RcuReader] = field(default_factory=dict)
    callbacks: collections.deque[tuple[str, Callable[[], None]]] = field(default_factory=collections.deque)
    call_count: int = 0
    in_drain_call_rcu: int = 0

    def conds(self) -> list[QemuCond]:
        return [self.gp_event, self.call_ready_event]

    def key(self, without: frozenset[str] = frozenset()) -> tuple[Any, ...]:
        """The state, readers in name order; `without` leaves some readers out (the explorer puts a vCPU
        thread's reader with its vCPU, where symmetry reduction can rename it)."""
        return (self.gp_ctr, self.call_count, self.in_drain_call_rcu, tuple(name for name, _ in self.callbacks),
                tuple(r.key() for name, r in sorted(self.registry.items()) if name not in without))


def rcu_register_thread(machine: Machine, thread: str) -> RcuReader:
    """rcu_register_thread: add this thread's reader record to the registry."""
    reader = machine.rcu.registry[thread] = RcuReader(thread)
    return reader


def rcu_read_lock(machine: Machine, reader: RcuReader) -> None:
    """include/qemu/rcu.h rcu_read_lock: the outermost lock takes a snapshot of the counter."""
    reader.depth += 1
    if reader.depth == 1:
        reader.ctr = machine.rcu.gp_ctr
        if machine.traced("rcu_read_lock"):
            machine.trace("rcu_read_lock", thread=reader.thread, ctr=reader.ctr)


def rcu_read_unlock(machine: Machine, reader: RcuReader) -> None:
    """include/qemu/rcu.h rcu_read_unlock: the outermost unlock leaves the section and wakes a waiting
    writer."""
    reader.depth -= 1
    if reader.depth:
        return
    reader.ctr = 0
    if machine.traced("rcu_read_unlock"):
        machine.trace("rcu_read_unlock", thread=reader.thread)
    if reader.waiting:
        reader.waiting = False
        machine.rcu.gp_event.broadcast()


def _gp_ongoing(rcu: Rcu, reader: RcuReader) -> bool:
    """rcu_gp_ongoing: inside a section that began before the current grace period."""
    return reader.ctr != 0 and reader.ctr != rcu.gp_ctr


def force_quiescent_state(machine: Machine) -> bool:
    """Is this QEMU's RCU 55d98e3ede's (10.2 and later), which forces grace periods, or the older one?"""
    return has(machine.settings.qemu_version, "55d98e3ede")


def wait_for_readers(machine: Machine) -> Generator[Effect, Any, None]:
    """util/rcu.c wait_for_readers: until every reader has passed a quiescent state."""
    if force_quiescent_state(machine):
        yield from _wait_for_readers_forcing(machine)
    else:
        yield from _wait_for_readers_notifying(machine)


def _wait_for_readers_notifying(machine: Machine) -> Generator[Effect, Any, None]:
    """wait_for_readers from ef149763a8 to 55d98e3ede: sleep on rcu_gp_event; while a drain_call_rcu waits,
    call the force_rcu notifiers of the readers still inside on every pass."""
    rcu = machine.rcu
    pending = dict(rcu.registry)
    while True:
        for reader in pending.values():
            reader.waiting = True
        for name, reader in list(pending.items()):
            if not _gp_ongoing(rcu, reader):
                del pending[name]
                reader.waiting = False
            elif rcu.in_drain_call_rcu:
                for notify in reader.force_rcu:
                    notify()
        if not pending:
            return
        machine.trace("rcu_wait_for_readers", readers=sorted(pending), gp_ctr=rcu.gp_ctr,
                      forced=bool(rcu.in_drain_call_rcu and any(r.force_rcu for r in pending.values())))
        yield Block((rcu.gp_event,), None, site="synchronize_rcu -> wait_for_readers", what="rcu_gp_event")


def _wait_for_readers_forcing(machine: Machine) -> Generator[Effect, Any, None]:
    """wait_for_readers since 55d98e3ede (649a78aa32): poll with 10 ms naps; force the grace period - every
    registered reader's notifiers once, then sleep on rcu_gp_event - when callbacks pile up, after five naps,
    or while a drain_call_rcu waits."""
    rcu = machine.rcu
    pending = dict(rcu.registry)
    sleeps = 0
    forced = False
    while True:
        if not forced and (rcu.call_count >= RCU_CALL_MIN_SIZE or sleeps >= RCU_FORCE_AFTER_SLEEPS
                           or rcu.in_drain_call_rcu):
            forced = True
            for reader in rcu.registry.values():
                for notify in reader.force_rcu:
                    notify()
                reader.waiting = True
        for name, reader in list(pending.items()):
            if not _gp_ongoing(rcu, reader):
                del pending[name]
                reader.waiting = False
        if not pending:
            return
        machine.trace("rcu_wait_for_readers", readers=sorted(pending), gp_ctr=rcu.gp_ctr,
                      forced=forced and any(r.force_rcu for r in pending.values()))
        if forced:
            yield Block((rcu.gp_event,), None, site="synchronize_rcu -> wait_for_readers", what="rcu_gp_event")
        else:
            yield Block((), CALL_RCU_POLL_NS)
            sleeps += 1


def synchronize_rcu(machine: Machine) -> Generator[Effect, Any, None]:
    """util/rcu.c synchronize_rcu (64-bit counter): advance the grace period, wait for the readers."""
    rcu = machine.rcu
    if rcu.registry:
        rcu.gp_ctr += RCU_GP_CTR
        yield from wait_for_readers(machine)


def call_rcu1(machine: Machine, name: str, func: Callable[[], None]) -> None:
    """util/rcu.c call_rcu1: queue a callback for the call_rcu thread and wake it."""
    rcu = machine.rcu
    rcu.callbacks.append((name, func))
    rcu.call_count += 1
    rcu.call_ready_event.broadcast()


def call_rcu_thread(machine: Machine) -> Generator[Effect, Any, None]:
    """util/rcu.c call_rcu_thread: wait for callbacks (before 55d98e3ede, a few 10 ms naps to let them pile
    up; since, none), a grace period, then run them with the BQL."""
    rcu = machine.rcu
    rcu_register_thread(machine, "call_rcu")
    forcing = force_quiescent_state(machine)
    while True:
        if forcing:
            while (n := rcu.call_count) == 0:
                yield Block((rcu.call_ready_event,), None)
            yield from synchronize_rcu(machine)
            rcu.call_count -= n
        else:
            tries = 0
            n = rcu.call_count
            while n == 0 or (n < RCU_CALL_MIN_SIZE and (tries := tries + 1) <= 5):
                yield Block((), CALL_RCU_POLL_NS)
                if n == 0:
                    n = rcu.call_count
                    while n == 0:
                        yield Block((rcu.call_ready_event,), None)
                        n = rcu.call_count
                n = rcu.call_count
            rcu.call_count -= n
            yield from synchronize_rcu(machine)
        yield BqlLock("call_rcu_thread")
        for _ in range(n):
            name, func = rcu.callbacks.popleft()
            machine.trace("rcu_callback", name=name)
            func()
        yield BqlUnlock("call_rcu_thread")


def drain_call_rcu(machine: Machine) -> Generator[Effect, Any, None]:
    """util/rcu.c drain_call_rcu, called with the BQL held: drop it, queue a callback, wait for it to run
    (every callback queued before it has then run), take the BQL back."""
    rcu = machine.rcu
    done = QemuCond("drain_complete_event", hub=rcu.gp_event.hub)
    finished: list[bool] = []

    def drain_rcu_callback() -> None:
        finished.append(True)
        done.broadcast()

    yield BqlUnlock("drain_call_rcu")
    rcu.in_drain_call_rcu += 1
    call_rcu1(machine, "drain_rcu_callback", drain_rcu_callback)
    while not finished:
        yield Block((done,), None, site="drain_call_rcu", what="drain_complete_event")
    rcu.in_drain_call_rcu -= 1
    yield BqlLock("drain_call_rcu")
