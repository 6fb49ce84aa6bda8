"""Exclusive sections: work that runs while no other vCPU executes guest code, and the CPU list.

Mirrors cpu-common.c at upstream 77251365ec: `start_exclusive` / `end_exclusive`, `cpu_exec_start` /
`cpu_exec_end` (which every accelerator calls around running guest code: kvm_cpu_exec around its KVM_RUN
loop, with the BQL dropped), `exclusive_idle`, `pending_cpus`, `exclusive_cond`, `exclusive_resume`, and
`cpu_list_add`. An exclusive section counts the vCPUs that are `running`, marks each `has_waiter` and kicks
it, and waits on exclusive_cond until the last has left with cpu_exec_end; a vCPU (or anyone) arriving at
cpu_exec_start meanwhile, not counted, waits on exclusive_resume for end_exclusive. `async_safe_run_on_cpu`
queues work that process_queued_cpu_work (cpus.py) runs inside such a section, the BQL dropped first.

Before e533f45d7d ("cpus-common: nuke finish_safe_work", May 2019, QEMU 4.1) `cpu_list_add` ended with
`finish_safe_work`: a cpu_exec_start and cpu_exec_end of the new CPU, on the thread creating it - the main
thread in a CPU hot-add, holding the BQL. If a vCPU was inside an exclusive section, that thread waited on
exclusive_resume with the BQL held, while the section's work waited for the BQL: `cpu_list_add_fix = false`.

qemu_cpu_list_lock is a real lock here (a `threading.Lock`), held only between two of a thread's effects,
never across one: the cooperative engines never find it taken, the threads engine gets the mutual exclusion
QEMU relies on. A qemu_cond_wait on it drops it around the engine's wait, passing the generation the caller
saw while holding it, so an end_exclusive in between is not lost. Departure: cpu_exec_end signals
exclusive_cond, the model broadcasts it - only the one thread inside start_exclusive ever waits on it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .cpus import CPUState, WorkItem, qemu_cpu_kick, queue_work_on_cpu
from .effects import Block, BqlLock, BqlUnlock, Effect, QemuCond

if TYPE_CHECKING:
    from .machine import Machine


@dataclass(eq=False, repr=False)
class CpuList:
    """cpu-common.c's statics: qemu_cpu_list_lock and what it guards."""

    exclusive_cond: QemuCond = field(default_factory=lambda: QemuCond("exclusive_cond"))
    exclusive_resume: QemuCond = field(default_factory=lambda: QemuCond("exclusive_resume"))
    lock: threading.Lock = field(default_factory=threading.Lock)  # qemu_cpu_list_lock
    # >= 1 while a thread is inside start_exclusive/end_exclusive: 1 + the running vCPUs still to leave.
    pending_cpus: int = 0

    def conds(self) -> tuple[QemuCond, ...]:
        return (self.exclusive_cond, self.exclusive_resume)

    def key(self) -> tuple[Any, ...]:
        return (self.pending_cpus,)


def _cond_wait(cl: CpuList, cond: QemuCond, site: str) -> Generator[Effect, Any, None]:
    """qemu_cond_wait(cond, &qemu_cpu_list_lock): called and returning with the lock held."""
    seen = (cond.generation,)
    cl.lock.release()
    try:
        yield Block((cond,), None, site=site, what=cond.name, seen=seen)
    finally:
        cl.lock.acquire()


def exclusive_idle(cl: CpuList, site: str) -> Generator[Effect, Any, None]:
    """cpu-common.c exclusive_idle: wait, the CPU list lock held, until no exclusive section is pending."""
    while cl.pending_cpus:
        yield from _cond_wait(cl, cl.exclusive_resume, site)


def start_exclusive(cpu: CPUState) -> Generator[Effect, Any, None]:
    """cpu-common.c start_exclusive, on `cpu`'s thread outside cpu_exec: make every other vCPU leave guest
    code and wait until each has."""
    assert not cpu.running, "start_exclusive inside cpu_exec"
    if cpu.exclusive_context_count:
        cpu.exclusive_context_count += 1
        return
    machine = cpu.machine
    cl = machine.cpu_list
    cl.lock.acquire()
    try:
        yield from exclusive_idle(cl, "start_exclusive")
        cl.pending_cpus = 1
        running = 0
        for other in machine.cpus:
            if other.running:
                other.has_waiter = True
                running += 1
                qemu_cpu_kick(other)
        cl.pending_cpus = running + 1
        machine.trace("start_exclusive", cpu=cpu.cpu_index, running=running)
        while cl.pending_cpus > 1:
            yield from _cond_wait(cl, cl.exclusive_cond, "start_exclusive")
    finally:
        cl.lock.release()
    cpu.exclusive_context_count = 1
    machine.trace("exclusive_started", cpu=cpu.cpu_index)


def end_exclusive(cpu: CPUState) -> None:
    """cpu-common.c end_exclusive: the section is over; everyone in exclusive_idle may go on."""
    cpu.exclusive_context_count -= 1
    if cpu.exclusive_context_count:
        return
    cl = cpu.machine.cpu_list
    with cl.lock:
        cl.pending_cpus = 0
        cl.exclusive_resume.broadcast()
    cpu.machine.trace("end_exclusive", cpu=cpu.cpu_index)


def cpu_exec_start(cpu: CPUState, site: str = "cpu_exec_start") -> Generator[Effect, Any, None]:
    """cpu-common.c cpu_exec_start: `running`, unless an exclusive section that did not count this CPU is
    pending, which it waits out first. `site` names the caller for the trace."""
    cpu.running = True
    cl = cpu.machine.cpu_list
    if not cl.pending_cpus:
        return
    cl.lock.acquire()
    try:
        if not cpu.has_waiter:
            cpu.running = False
            yield from exclusive_idle(cl, site)
            cpu.running = True
    finally:
        cl.lock.release()


def cpu_exec_end(cpu: CPUState) -> None:
    """cpu-common.c cpu_exec_end: not running; if an exclusive section counted this CPU, one fewer to wait
    for, and the last wakes it."""
    cpu.running = False
    cl = cpu.machine.cpu_list
    if not cl.pending_cpus:
        return
    with cl.lock:
        if cpu.has_waiter:
            cpu.has_waiter = False
            cl.pending_cpus -= 1
            if cl.pending_cpus == 1:
                cl.exclusive_cond.broadcast()


def cpu_list_add(machine: Machine, cpu: CPUState) -> Generator[Effect, Any, None]:
    """cpu-common.c cpu_list_add, from cpu_exec_realizefn on the thread creating the CPU. Before e533f45d7d
    (`cpu_list_add_fix = false`) it ended with finish_safe_work: cpu_exec_start and cpu_exec_end of the new
    CPU, which waits out a pending exclusive section - with whatever locks the caller holds."""
    machine.trace("cpu_list_add", cpu=cpu.cpu_index, thread=machine.thread_name(),
                  finish_safe_work=not machine.settings.cpu_list_add_fix)
    if machine.settings.cpu_list_add_fix:
        return
    yield from cpu_exec_start(cpu, f"cpu_list_add -> finish_safe_work -> cpu_exec_start(CPU {cpu.cpu_index})")
    cpu_exec_end(cpu)


def async_safe_run_on_cpu(cpu: CPUState, func: Callable[[CPUState], Generator[Effect, Any, None]],
                          name: str) -> None:
    """cpu-common.c async_safe_run_on_cpu: queue `func` to run on `cpu`'s thread inside an exclusive
    section, with the BQL dropped (process_queued_cpu_work); nobody waits for it."""
    def exclusive_item(target: CPUState) -> Generator[Effect, Any, None]:
        """process_queued_cpu_work's branch for an exclusive item."""
        yield BqlUnlock("process_queued_cpu_work")
        yield from start_exclusive(target)
        yield from func(target)
        end_exclusive(target)
        yield BqlLock("process_queued_cpu_work")

    queue_work_on_cpu(cpu, WorkItem(exclusive_item, name, exclusive=True))
