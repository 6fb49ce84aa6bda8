"""Generic vCPU scheduling: CPUState, kicks, interrupts, the work queue and the idle wait.

Mirrors system/cpus.c, cpu-common.c and hw/core/cpu-common.c. Theory of operation: a vCPU thread
sleeps in exactly one place, `qemu_wait_io_event` (`qemu_process_cpu_events` since QEMU 10.2), on its
`halt_cond`, and only while
`cpu_thread_is_idle` says so. Anything that wants the thread to look again (new work, an interrupt,
a stop request) broadcasts that condition (`qemu_cpu_kick`). A halted CPU with CPU_INTERRUPT_HARD set
is *not* idle (`cpu_has_work`), so the thread goes round its loop again instead of sleeping: that is
the hinge of the RTAS-stopped hang.

Functions that can block are generators yielding effects (see effects.py); the rest are plain.
"""

from __future__ import annotations

import contextvars
import functools
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..versions import has
from .effects import CondWait, Effect, QemuCond

if TYPE_CHECKING:
    from .machine import Machine

CPU_INTERRUPT_HARD = 0x0002  # include/exec/cpu-interrupt.h

EXCP_INTERRUPT = 0x10000  # include/exec/cpu-all.h: async interruption
EXCP_HLT = 0x10001  # hlt instruction reached
EXCP_DEBUG = 0x10002
EXCP_HALTED = 0x10003

# QEMU's thread-local current_cpu: the vCPU whose thread is running (None on the main thread).
current_cpu: contextvars.ContextVar[CPUState | None] = contextvars.ContextVar("current_cpu", default=None)
# Not QEMU's: the name of a thread that is neither a vCPU's nor the main loop (the migration thread).
current_thread: contextvars.ContextVar[str] = contextvars.ContextVar("current_thread", default="main")


@dataclass(eq=False, repr=False)
class WorkItem:
    """struct qemu_work_item (cpu-common.c). An `exclusive` item's func is a generator function that runs
    the work inside an exclusive section, the BQL dropped (exclusive.async_safe_run_on_cpu makes it)."""

    func: Callable[[CPUState], Any]
    name: str
    done: bool = False
    exclusive: bool = False


@dataclass(eq=False, repr=False)
class CPUState:
    """CPUState (include/hw/core/cpu.h) with the target CPU's env attached (PowerPCCPU's CPUPPCState,
    S390CPU's CPUS390XState): the target code that reads it knows which."""

    machine: Machine
    cpu_index: int
    env: Any
    halt_cond: QemuCond
    kick_cond: QemuCond  # stands for SIG_IPI / immediate_exit reaching a thread inside KVM_RUN
    kernel_irq_cond: QemuCond  # the kernel waking a vCPU ceded in KVM for an in-kernel interrupt
    kvm_mutex_cond: QemuCond  # the kernel's vcpu->mutex let go: KVM_RUN returned to userspace
    start_powered_off: bool = True  # spapr_create_vcpu sets it on every spapr vCPU, CPU0 included
    halted: bool = True
    created: bool = False  # cpu_thread_signal_created: the vCPU thread is up (qemu_init_vcpu waits for it)
    stop: bool = False
    stopped: bool = False
    unplug: bool = False
    interrupt_request: int = 0
    exit_request: bool = False
    thread_kicked: bool = False
    vcpu_dirty: bool = False
    immediate_exit: bool = False
    exception_index: int = -1
    work_list: deque[WorkItem] = field(default_factory=deque)
    current_work: str = ""  # not QEMU's: the run_on_cpu function running now, for the trace
    guest_entries: int = 0  # not QEMU's: how often the thread entered guest code (the progress watchdog's count)
    running: bool = False  # between cpu_exec_start and cpu_exec_end (exclusive.py)
    has_waiter: bool = False  # an exclusive section counts on this CPU's cpu_exec_end
    exclusive_context_count: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    @functools.cached_property
    def name(self) -> str:
        """The vCPU thread's name, as QEMU names it (made once: neither the index nor the accelerator changes)."""
        return f"CPU {self.cpu_index}/{self.machine.settings.accel.upper()}"

    def conds(self) -> tuple[QemuCond, ...]:
        """Every condition this vCPU's threads and kernel side sleep on."""
        return (self.halt_cond, self.kick_cond, self.kernel_irq_cond, self.kvm_mutex_cond)

    def count(self, what: str, n: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + n

    def loop_snapshot(self) -> tuple[Any, ...]:
        """Everything one turn of the thread loop reads. Two equal snapshots around a turn taken with
        the BQL held mean the turn changed nothing, and the next one will do exactly the same until
        something outside the BQL (a kick, queued work, a stop request) touches this CPU."""
        return (self.halted, self.stop, self.stopped, self.interrupt_request, self.exit_request,
                self.thread_kicked, self.vcpu_dirty, len(self.work_list), self.machine.runstate,
                self.immediate_exit, *self.env.loop_state())


def cpu_is_stopped(cpu: CPUState) -> bool:
    """system/cpus.c cpu_is_stopped."""
    return cpu.stopped or cpu.machine.runstate != "running"


def cpu_can_run(cpu: CPUState) -> bool:
    """system/cpus.c cpu_can_run."""
    return not (cpu.stop or cpu_is_stopped(cpu))


def cpu_has_work(cpu: CPUState) -> bool:
    """hw/core/cpu-system.c cpu_has_work: the target's has_work (ppc: HARD only; s390x: not when stopped)."""
    return cpu.machine.arch.cpu_has_work(cpu)


def cpu_thread_is_idle(cpu: CPUState) -> bool:
    """system/cpus.c cpu_thread_is_idle, in QEMU's order.

    The accel hook at the end is KVM's `kvm_vcpu_thread_is_idle` = !kvm_halt_in_kernel(), true on ppc
    (no KVM_CAP_IRQCHIP: model/kvm.py kvm_irqchip_create), and TCG's default (true).
    """
    if cpu.stop or cpu.work_list:
        return False
    if cpu_is_stopped(cpu):
        return True
    if not cpu.halted or cpu_has_work(cpu):
        return False
    return not cpu.machine.kvm_halt_in_kernel


def qemu_cpu_kick(cpu: CPUState) -> None:
    """system/cpus.c qemu_cpu_kick: broadcast halt_cond, then cpus_kick_thread (SIG_IPI once)."""
    cpu.halt_cond.broadcast()
    cpu.count("kicks")
    if cpu.machine.traced("qemu_cpu_kick"):  # thread_name() costs a lookup nobody needs when nothing listens
        cpu.machine.trace("qemu_cpu_kick", cpu=cpu.cpu_index, by=cpu.machine.thread_name())
    if cpu.machine.settings.accel == "kvm":
        if cpu.thread_kicked:
            return
        cpu.thread_kicked = True
        # kvm_ipi_signal -> kvm_cpu_kick: the current or next KVM_RUN returns -EINTR.
        cpu.immediate_exit = True
    else:
        # TCG's kick: mttcg_kick_vcpu_thread -> cpu_exit before QEMU 10.2, tcg_kick_vcpu_thread (9cf342b491)
        # since; either sets exit_request (and icount_decr, which the model folds into it).
        cpu.exit_request = True
    cpu.kick_cond.broadcast()


def cpu_exit(cpu: CPUState) -> None:
    """hw/core/cpu-common.c cpu_exit: set exit_request. Since dcb46ecb2e (QEMU 10.2) it also kicks the
    thread with the accelerator's kick (qemu_cpu_kick), so it reaches a KVM vCPU and a sleeping one too."""
    cpu.exit_request = True
    if kick_by_exit(cpu):
        qemu_cpu_kick(cpu)


def kick_by_exit(cpu: CPUState) -> bool:
    """f8217ae54e ("cpus: properly kick CPUs out of inner execution loop", QEMU 10.2): the places that
    send a vCPU's thread back to its events function (queue_work_on_cpu, cpu_pause, and in spapr
    rtas_stop_self, h_cede) call cpu_exit instead of qemu_cpu_kick or setting exit_request."""
    return has(cpu.machine.settings.qemu_version, "f8217ae54e")


def exit_or_kick(cpu: CPUState) -> None:
    """The kick of queue_work_on_cpu, cpu_pause and rtas_stop_self: cpu_exit since f8217ae54e, qemu_cpu_kick
    before."""
    if kick_by_exit(cpu):
        cpu_exit(cpu)
    else:
        qemu_cpu_kick(cpu)


def cpu_interrupt(cpu: CPUState, mask: int) -> None:
    """system/cpus.c cpu_interrupt -> generic_handle_interrupt (KVM and, in this model, TCG)."""
    cpu.interrupt_request |= mask
    if current_cpu.get() is not cpu:
        qemu_cpu_kick(cpu)


def cpu_reset_interrupt(cpu: CPUState, mask: int) -> None:
    """hw/core/cpu-common.c cpu_reset_interrupt: clear the bits, no kick (callers hold the BQL)."""
    cpu.interrupt_request &= ~mask


def cpu_reset(cpu: CPUState) -> None:
    """hw/core/cpu-common.c cpu_common_reset_hold: halted follows start_powered_off."""
    cpu.interrupt_request = 0
    cpu.halted = cpu.start_powered_off
    cpu.exception_index = -1
    cpu.exit_request = False


def qemu_cpu_stop(cpu: CPUState, exit: bool) -> None:
    """system/cpus.c qemu_cpu_stop (on the vCPU's own thread): stopped, then tell the pause_all_vcpus
    callers. Before 96bce6831b (QEMU 2.6) with qemu_cond_signal, which wakes one of them."""
    cpu.stop = False
    cpu.stopped = True
    if exit:
        cpu_exit(cpu)
    machine = cpu.machine
    if machine.settings.pause_cond_broadcast:
        machine.pause_cond.broadcast()
    else:
        woke = machine.pause_cond.signal()
        machine.trace("qemu_cond_signal", cpu=cpu.cpu_index, cond=machine.pause_cond.name, woke=woke)


def cpu_stop_current(machine: Machine) -> None:
    """system/cpus.c cpu_stop_current, on the thread of the vCPU that asks (a reset or shutdown request from
    the guest): since 0ec7e6779f (QEMU 4.0) `stop` and cpu_exit, so the thread stops at the top of its loop.
    Before it (`stop_current_fix = false`) qemu_cpu_stop(cpu, true): stopped at once, though the thread is
    still in the middle of its exit, and pause_all_vcpus may return and a reset begin while it runs on."""
    cpu = current_cpu.get()
    if cpu is None:
        return
    if machine.settings.stop_current_fix:
        cpu.stop = True
        cpu_exit(cpu)
    else:
        qemu_cpu_stop(cpu, True)
    machine.trace("cpu_stop_current", cpu=cpu.cpu_index, stopped=cpu.stopped)


def cpu_pause(cpu: CPUState) -> None:
    """system/cpus.c cpu_pause."""
    if current_cpu.get() is cpu:
        qemu_cpu_stop(cpu, True)
    else:
        cpu.stop = True
        exit_or_kick(cpu)


def cpu_resume(cpu: CPUState) -> None:
    """system/cpus.c cpu_resume."""
    cpu.machine.paused_by = None
    cpu.stop = False
    cpu.stopped = False
    qemu_cpu_kick(cpu)


def _run_work(cpu: CPUState, func: Callable[[CPUState], None], name: str) -> None:
    outer, cpu.current_work = cpu.current_work, name
    try:
        func(cpu)
    finally:
        cpu.current_work = outer


def process_queued_cpu_work(cpu: CPUState) -> Generator[Effect, Any, None]:
    """cpu-common.c process_queued_cpu_work: run every item with the BQL held, then wake the waiters. An
    exclusive item (async_safe_run_on_cpu) runs with the BQL dropped, inside start_exclusive/end_exclusive."""
    if not cpu.work_list:
        return
    while cpu.work_list:
        wi = cpu.work_list.popleft()
        cpu.machine.trace("process_queued_cpu_work", cpu=cpu.cpu_index, work=wi.name)
        if wi.exclusive:  # the BQL dropped, start_exclusive, the work, end_exclusive, the BQL back (exclusive.py)
            outer, cpu.current_work = cpu.current_work, wi.name
            try:
                yield from wi.func(cpu)
            finally:
                cpu.current_work = outer
        else:
            _run_work(cpu, wi.func, wi.name)
        wi.done = True
    cpu.machine.work_cond.broadcast()


def qemu_wait_io_event_common(cpu: CPUState) -> Generator[Effect, Any, None]:
    """system/cpus.c qemu_wait_io_event_common."""
    cpu.thread_kicked = False
    if cpu.stop:
        qemu_cpu_stop(cpu, False)
    if cpu.work_list:  # process_queued_cpu_work's own first check, made before a generator is created
        yield from process_queued_cpu_work(cpu)


def qemu_wait_io_event(cpu: CPUState) -> Generator[Effect, Any, None]:
    """system/cpus.c qemu_wait_io_event (up to QEMU 10.1): sleep on halt_cond (BQL dropped) while idle."""
    yield from _sleep_while_idle(cpu, "qemu_wait_io_event")
    yield from qemu_wait_io_event_common(cpu)


def qemu_process_cpu_events(cpu: CPUState) -> Generator[Effect, Any, None]:
    """system/cpus.c qemu_process_cpu_events (since 871de7078f renamed qemu_wait_io_event, QEMU 10.2):
    since 9a191d3782 it clears exit_request first, for every accelerator."""
    cpu.exit_request = False
    yield from _sleep_while_idle(cpu, "qemu_process_cpu_events")
    yield from qemu_wait_io_event_common(cpu)  # renamed qemu_process_cpu_events_common, unchanged


def _sleep_while_idle(cpu: CPUState, function: str) -> Generator[Effect, Any, None]:
    slept = False
    while cpu_thread_is_idle(cpu):
        if not slept:
            cpu.machine.trace(f"{function}_sleep", cpu=cpu.cpu_index, halted=cpu.halted)
            cpu.count("sleeps")
            slept = True
        yield CondWait(cpu.halt_cond, function)
    if slept:
        cpu.machine.trace(f"{function}_wake", cpu=cpu.cpu_index)


def cpu_events(cpu: CPUState) -> Generator[Effect, Any, None]:
    """What a vCPU thread's loop calls after running guest code, in the chosen QEMU version."""
    if not cpu.machine.new_loop:
        return qemu_wait_io_event(cpu)
    return qemu_process_cpu_events(cpu)


def queue_work_on_cpu(cpu: CPUState, wi: WorkItem) -> None:
    """cpu-common.c queue_work_on_cpu."""
    cpu.work_list.append(wi)
    exit_or_kick(cpu)  # f8217ae54e: "exit the inner loop and reach qemu_wait_io_event_common()"


def run_on_cpu(cpu: CPUState, func: Callable[[CPUState], None], name: str) -> Generator[Effect, Any, None]:
    """system/cpus.c run_on_cpu -> cpu-common.c do_run_on_cpu.

    On the target's own thread the function runs at once. Otherwise the caller queues it, kicks, and
    waits on qemu_work_cond; every wait drops the BQL and must take it back before `done` is seen.
    """
    if current_cpu.get() is cpu:
        _run_work(cpu, func, name)
        return
    machine = cpu.machine
    wi = WorkItem(func, name)
    machine.trace("run_on_cpu", cpu=cpu.cpu_index, work=name, caller=machine.thread_name())
    queue_work_on_cpu(cpu, wi)
    while not wi.done:
        yield CondWait(machine.work_cond, f"run_on_cpu({name}) -> CPU {cpu.cpu_index}")


def async_run_on_cpu(cpu: CPUState, func: Callable[[CPUState], None], name: str) -> None:
    """cpu-common.c async_run_on_cpu."""
    queue_work_on_cpu(cpu, WorkItem(func, name))  # nobody waits for it


def cpu_thread_signal_created(cpu: CPUState) -> None:
    """system/cpus.c cpu_thread_signal_created, on the new vCPU thread with the BQL held."""
    cpu.created = True
    cpu.machine.cpu_cond.broadcast()


def qemu_init_vcpu_wait(cpu: CPUState) -> Generator[Effect, Any, None]:
    """system/cpus.c qemu_init_vcpu, its end: once the accelerator has started the thread, the caller waits
    on qemu_cpu_cond (the BQL dropped) until the thread says it is created."""
    while not cpu.created:
        yield CondWait(cpu.machine.cpu_cond, f"qemu_init_vcpu -> CPU {cpu.cpu_index}")


def all_vcpus_paused(machine: Machine) -> bool:
    """system/cpus.c all_vcpus_paused."""
    return all(cpu.stopped for cpu in machine.cpus)


def pause_all_vcpus(machine: Machine) -> Generator[Effect, Any, None]:
    """system/cpus.c pause_all_vcpus (BQL held, not on a vCPU thread): ask every vCPU to stop, then wait on
    qemu_pause_cond until all have, kicking them again after each wake-up. Any thread may call it (the
    main loop, the migration thread); two may wait at once, since each wait drops the BQL."""
    machine.trace("pause_all_vcpus", thread=machine.thread_name())
    for cpu in machine.cpus:
        cpu_pause(cpu)
    while not all_vcpus_paused(machine):
        yield CondWait(machine.pause_cond, "pause_all_vcpus")
        for cpu in machine.cpus:
            if not cpu.stopped:
                qemu_cpu_kick(cpu)
    machine.paused_by = machine.thread_name()  # what the caller now believes: no vCPU runs
    machine.trace("pause_all_vcpus_done", thread=machine.paused_by)


def resume_all_vcpus(machine: Machine) -> None:
    """system/cpus.c resume_all_vcpus. Since f962cac4c2 (QEMU 5.0) only while the run state is running:
    before it, it also resumed the vCPUs that another thread's pause_all_vcpus was still waiting for."""
    if machine.runstate != "running" and machine.settings.vm_stop_fix:
        return
    machine.trace("resume_all_vcpus", thread=machine.thread_name())
    for cpu in machine.cpus:
        cpu_resume(cpu)


def do_vm_stop(machine: Machine, state: str) -> Generator[Effect, Any, None]:
    """system/cpus.c do_vm_stop: if the VM runs, pause every vCPU and set `state`. Since f962cac4c2 (QEMU 5.0)
    the run state first: before it a second pause_all_vcpus caller, arriving while the first waited on
    qemu_pause_cond, still found the VM running and paused it too."""
    if machine.runstate != "running":
        return
    if machine.settings.vm_stop_fix:
        machine.runstate = state
        yield from pause_all_vcpus(machine)
    else:
        yield from pause_all_vcpus(machine)
        machine.runstate = state
    machine.trace("vm_stopped", state=state, by=machine.thread_name())


def vm_stop_force_state(machine: Machine, state: str) -> Generator[Effect, Any, None]:
    """system/cpus.c vm_stop_force_state: stop a running VM into `state`; a stopped one only changes state."""
    if machine.runstate == "running":
        yield from do_vm_stop(machine, state)
    else:
        machine.runstate = state


def vm_start(machine: Machine) -> None:
    """system/cpus.c vm_start (`cont`): run state running, resume every vCPU."""
    machine.runstate = "running"
    resume_all_vcpus(machine)
