"""The blocking points of QEMU's threads, as effects an engine performs.

Theory of operation (the "sans-IO" style of h11): every QEMU thread in the model (each vCPU thread and
the main loop) is a generator. Ordinary model code runs synchronously between two `yield`s; at a point
where the real thread could block or spend time it yields one of the effects below, and the engine
performs it (through engine/core.py, which turns each effect into the primitives an engine provides)
and sends back the result. So the QEMU loop exists once, and every engine drives that same copy.

Conditions are `QemuCond` objects. Broadcasting one is not a blocking point (QEMU's kick broadcasts
`halt_cond` without needing the BQL), so it is a plain call that the engine hears through `WakeHub`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, TypeAlias


class WakeHub(Protocol):
    """What an engine provides to the model: the guest clock, wake-ups of parked threads, and new threads
    (a hotplugged vCPU's, started by qemu_init_vcpu while the VM runs)."""

    def now_ns(self) -> int: ...

    def notify(self, cond: QemuCond) -> None: ...

    def spawn(self, name: str, factory: Callable[[], Thread]) -> None: ...


class _NoEngine:
    def now_ns(self) -> int:
        return 0

    def notify(self, cond: QemuCond) -> None:
        return None

    def spawn(self, name: str, factory: Callable[[], Thread]) -> None:
        raise RuntimeError(f"no engine runs this machine: cannot start thread {name}")


@dataclass(eq=False, repr=False)
class Waiter:
    """One thread's qemu_cond_wait on a QemuCond: `signalled` once a qemu_cond_signal chose it."""

    thread: str
    signalled: bool = False


@dataclass(eq=False, repr=False)
class QemuCond:
    """A QemuCond (util/qemu-thread-posix.c), or any other thing a thread can sleep on.

    `generation` counts broadcasts, so an engine can tell whether one happened while it looked away.
    `waiters` are the threads in qemu_cond_wait on it, longest waiting first: a broadcast wakes them all,
    a signal the first only.
    """

    name: str
    hub: WakeHub = field(default_factory=_NoEngine, repr=False)
    generation: int = 0
    waiters: list[Waiter] = field(default_factory=list, repr=False)

    def broadcast(self) -> None:
        """qemu_cond_broadcast."""
        self.generation += 1
        if self.waiters:
            self.waiters.clear()
        self.hub.notify(self)

    def signal(self) -> str | None:
        """qemu_cond_signal: wake one waiter and return its thread, or None when nobody waits (the signal is
        lost). Which waiter POSIX leaves open; glibc's condition variable wakes in about the order the waits
        began, and so does the model: the longest waiting."""
        if not self.waiters:
            return None
        waiter = self.waiters.pop(0)
        waiter.signalled = True
        self.hub.notify(self)
        return waiter.thread


class BqlLock(NamedTuple):
    """bql_lock(): take the Big QEMU Lock; `site` is the caller, as QEMU's qemu_mutex_lock trace shows."""

    site: str


class BqlUnlock(NamedTuple):
    """bql_unlock()."""

    site: str


class CondWait(NamedTuple):
    """qemu_cond_wait(cond, &bql): drop the BQL, sleep until a broadcast, take the BQL back.

    The three steps are one: no broadcast may fall between the caller's last check and its sleep (the
    engine core takes the condition's `generation` before the BQL is dropped, and the sleep ends at once
    if it has moved).
    """

    cond: QemuCond
    site: str


class Spend(NamedTuple):
    """The thread is busy on a host CPU for `ns` nanoseconds of guest time.

    `spin` names a vCPU whose thread loop iteration this is. The engine core may fast-forward a run of
    iterations that change nothing (see `CPUState.loop_snapshot`) until one of `wake` is broadcast.
    """

    ns: int
    spin: Any = None
    wake: tuple[QemuCond, ...] = ()


class Block(NamedTuple):
    """Sleep outside QEMU's locks until one of `wake` is broadcast or `timeout_ns` passes.

    Used for guest execution inside KVM_RUN (a kick ends it), for waits in the guest, and for the main
    loop's poll. The engine sends back the nanoseconds that passed.

    A `site` makes it a wait inside QEMU that the watchdog watches like a condition wait (a QemuEvent,
    a kernel vCPU mutex, an RCU grace period, a qemu_cond_wait on a mutex other than the BQL): `what` names
    the thing waited for. `seen` are the conditions' generations when the caller checked what it waits for,
    under its own lock (default: when the engine takes the effect): a broadcast since then ends the wait.
    """

    wake: tuple[QemuCond, ...]
    timeout_ns: int | None
    site: str = ""
    what: str = ""
    seen: tuple[int, ...] = ()


Effect: TypeAlias = BqlLock | BqlUnlock | CondWait | Spend | Block
Thread: TypeAlias = Generator[Effect, Any, Any]
