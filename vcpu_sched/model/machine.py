"""A whole QEMU process: the pseries machine, its vCPUs, the kernel, the guest and the main thread.

Mirrors the start-up path of system/vl.c (`qemu_init`: create vCPUs, `qemu_system_reset`, `vm_start`)
and util/main-loop.c (`main_loop_wait`, which takes the BQL for timers, the monitor and chardevs).
The scenario's monitor commands (monitor.py) run there when their console pattern has appeared.
The Machine is plain state; an engine runs the generators from `threads()` and installs a `WakeHub`.

Nothing here exists for the diagnosis: the watchdog and `analyze` explain a hang from the trace events
(explain.py), which never feed back into behaviour.
"""

from __future__ import annotations

import collections
import functools
import random
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, NamedTuple

from ..config import RunSettings
from ..verdicts import INVARIANT
from ..versions import new_loop
from .arch import Arch, PpcArch
from .cpus import CPUState, current_cpu, current_thread, resume_all_vcpus
from .effects import Block, BqlLock, BqlUnlock, Effect, QemuCond, Spend, Thread, WakeHub
from .exclusive import CpuList
from .guest import GuestMemory, GuestOutcome, GuestProgram, GuestRunner
from .kdump import crash_kexec
from .kvm import FakeKvm, kvm_irqchip_create, kvm_vcpu_thread_fn
from .monitor import monitor_command
from .ppc import CPU_MODELS, CPUPPCState
from .qapi import QmpError
from .qmp_cmds import qmp_dispatch
from .rcu import Rcu, call_rcu_thread, rcu_register_thread
from .runstate import main_loop_should_exit, qemu_system_reset
from .spapr import Spapr
from .tcg import mttcg_cpu_thread_fn

if TYPE_CHECKING:
    from .pnv import Pnv
    from .s390x.machine import S390CcwMachine
    from .x86.machine import X86Machine

MAIN_LOOP_POLL_NS = 10_000_000  # main_loop_wait wakes at least this often for timers (10 ms)

Tracer = Callable[[str, int, dict[str, Any]], None]


class MonitorRequest(NamedTuple):
    """An in-band QMP command waiting for the main loop; `reply` gets {"return": ...} or {"error": ...}."""

    name: str
    args: dict[str, Any]
    reply: Callable[[dict[str, Any]], None]


def _no_trace(event: str, t_ns: int, fields: dict[str, Any]) -> None:
    return None


class Machine:
    """The QEMU process being modelled."""

    def __init__(self, settings: RunSettings, tracer: Tracer = _no_trace,
                 console_out: Callable[[int, str], None] | None = None) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        fixes = set(settings.fix.split("+"))
        self.fix_quiesced = "quiesced" in fixes  # the seed's patch
        self.fix_migration = "migration" in fixes  # its follow-up: quiesced in the migration stream
        self.fix_lpcr_sync = "lpcr-sync" in fixes  # a what-if: spapr's LPCR kept to what KVM accepts
        self.runstate = "prelaunch"
        # The vCPU loop of the chosen QEMU (versions.new_loop), asked on every turn of every vCPU thread.
        self.new_loop = new_loop(settings.qemu_version)
        self.hub: WakeHub | None = None
        self.tracer = tracer
        self._tracing = tracer is not _no_trace
        self._only: frozenset[str] | None = None
        self._console_out = console_out
        self.work_cond = QemuCond("qemu_work_cond")
        self.pause_cond = QemuCond("qemu_pause_cond")
        self.cpu_cond = QemuCond("qemu_cpu_cond")
        self.main_loop_cond = QemuCond("main_loop")
        self.finished_cond = QemuCond("guest_finished")
        self.guest_memory = GuestMemory(QemuCond("guest_memory"))
        self.outcome = GuestOutcome()
        self.finished = False  # the guest's program ended and no migration is still under way
        self.guest_done = False
        self.paused_by: str | None = None  # the thread whose pause_all_vcpus returned, until a vCPU resumes
        self.migrations_active = 0
        # `vcpu-sched qemu`: -S, -name, the QMP requests the main loop runs, where their events go.
        self.start_paused = False
        self.name = ""
        self.qmp_chardev = "compat_monitor0"
        self.monitor_requests: collections.deque[MonitorRequest] = collections.deque()
        # The monitor script (settings.monitor): the next command, when it comes once its pattern has shown
        # (settings.monitor_delay_ns), and the console line the search for its pattern starts at.
        self.monitor_entry = 0
        self.monitor_due: int | None = None
        self.monitor_console_seen = 0
        self.qmp_event: Callable[[str, dict[str, Any] | None], None] = lambda name, data: None
        self.quit_requested = False
        self.thread_ids: dict[str, int] = {}  # thread name -> OS thread id, filled by the engine
        # QEMU_CLOCK_VIRTUAL timers the main loop runs (util/qemu-timer.c): name -> (expiry, callback)
        self.timers: dict[str, tuple[int, Callable[[], None]]] = {}
        self.rcu = Rcu()
        # The guest's panic path into its kdump kernel (kdump.py), which the guest's programs reach through
        # the machine: the kdump kernel runs the guest's own secondary program.
        self.crash_kexec: Callable[[Machine, int], GuestProgram] = crash_kexec
        self.tcg_runners: dict[int, GuestRunner] = {}
        # kvm_halt_in_kernel(): halted vCPUs run KVM_RUN and are never idle in QEMU (kvm_irqchip_create). The
        # s390x kernel's KVM_CAP_S390_IRQCHIP is not modelled: docs/departures.md.
        self.kvm_halt_in_kernel = False
        self.kvm: FakeKvm | None = None
        self.pnv: Pnv | None = None
        self.s390: S390CcwMachine | None = None
        self.x86: X86Machine | None = None
        self.spapr: Spapr
        self.arch: Arch
        self.cpu_list = CpuList()
        if settings.machine == "q35":
            from .x86.cpu import CPUX86State
            from .x86.machine import X86Arch, X86Machine

            self.arch = X86Arch()
            self.cpus = [self._cpu(i, CPUX86State(apic_id=i)) for i in range(settings.smp)]
            self.x86 = X86Machine(self)
            self.kvm_halt_in_kernel = kvm_irqchip_create(frozenset({"KVM_CAP_IRQCHIP"}), settings.irqchip_fix)
            return
        if settings.machine == "s390-ccw-virtio":
            from .s390x.cpu import CPUS390XState
            from .s390x.machine import S390Arch, S390CcwMachine

            self.arch = S390Arch()
            self.cpus = [self._cpu(i, CPUS390XState()) for i in range(settings.smp)]
            self.s390 = S390CcwMachine(self)
            return
        self.arch = PpcArch()
        model = CPU_MODELS[settings.cpu]
        self.cpus = [self._cpu(i, CPUPPCState(model)) for i in range(settings.smp)]
        if settings.accel == "kvm":
            self.kvm = FakeKvm.create(model, settings.host_lpcr, settings.radix, settings.smp, settings.threads)
            self.kvm.keeps_ec = settings.psscr_ec_kvm == "kept"
            self.kvm.ail_filter = settings.kvm_ail_filter
            self.kvm.irqchip = settings.kernel_irqchip
            self.kvm_halt_in_kernel = kvm_irqchip_create(self.kvm.caps, settings.irqchip_fix)
        self.spapr = Spapr(self)
        if settings.machine == "powernv":
            from .pnv import Pnv  # loaded only for the machine that has it

            self.pnv = Pnv(self)

    def add_cpu(self, index: int, env: Any) -> CPUState:
        """A vCPU created while the machine runs (hotplug): its conditions reach the engine too."""
        cpu = self._cpu(index, env)
        self.cpus.append(cpu)
        if self.hub is not None:
            for cond in cpu.conds():
                cond.hub = self.hub
        return cpu

    def board_key(self) -> tuple[Any, ...]:
        """The board's and the CPU list's state, for the explorer's state hash."""
        if self.s390 is not None:
            board = self.s390.key()
        elif self.x86 is not None:
            board = self.x86.key()
        else:
            board = (self.spapr.fwnmi_system_reset_addr,)
        return (*board, *self.cpu_list.key())

    def start_thread(self, name: str, factory: Callable[[], Thread]) -> None:
        """qemu_thread_create for a thread started while the machine runs."""
        assert self.hub is not None, "no engine runs this machine"
        self.thread_ids.setdefault(name, self.thread_ids.get("main", 0))  # the threads engine sets its own
        self.hub.spawn(name, factory)

    # --- timers (util/qemu-timer.c) -----------------------------------------------------------------

    def timer_mod(self, name: str, expire_ns: int, callback: Callable[[], None]) -> None:
        """timer_mod: (re)arm timer `name` to run `callback` on the main loop at `expire_ns`."""
        self.timers[name] = (expire_ns, callback)

    def timer_del(self, name: str) -> bool:
        """timer_del; True when the timer was pending (what timer_pending said before it)."""
        return self.timers.pop(name, None) is not None

    def qemu_clock_run_timers(self) -> None:
        """qemu_clock_run_all_timers, from main_loop_wait with the BQL held: each expired timer, earliest
        first, disarmed before its callback runs. Departure: main_loop_wait does not shorten its poll for a
        timer's deadline, so a timer runs up to one poll period (10 ms) late."""
        now = self.now_ns()
        for name, (expire, callback) in sorted(self.timers.items(), key=lambda item: item[1][0]):
            if expire <= now and self.timers.get(name) == (expire, callback):
                del self.timers[name]
                callback()

    def _cpu(self, i: int, env: Any) -> CPUState:
        return CPUState(self, i, env, QemuCond(f"halt_cond[{i}]"), QemuCond(f"kick[{i}]"),
                        QemuCond(f"kernel_irq[{i}]"), QemuCond(f"kvm_vcpu_mutex[{i}]"))

    # --- engine interface ------------------------------------------------------------------------

    def attach(self, hub: WakeHub) -> None:
        """Let an engine hear broadcasts and supply the clock."""
        self.hub = hub
        for cond in self.all_conds():
            cond.hub = hub

    def all_conds(self) -> list[QemuCond]:
        conds = [self.work_cond, self.pause_cond, self.cpu_cond, self.main_loop_cond, self.finished_cond,
                 self.guest_memory.changed, *self.rcu.conds(), *self.cpu_list.conds()]
        for cpu in self.cpus:
            conds += cpu.conds()
        return conds

    def threads(self) -> list[tuple[str, Callable[[], Thread]]]:
        """(thread name, generator factory) for every QEMU thread: the main thread first."""
        vcpu_fn = kvm_vcpu_thread_fn if self.settings.accel == "kvm" else mttcg_cpu_thread_fn
        threads: list[tuple[str, Callable[[], Thread]]] = [("main", self.qemu_main)]
        threads += [(cpu.name, functools.partial(vcpu_fn, cpu)) for cpu in self.cpus]
        threads.append(("call_rcu", functools.partial(call_rcu_thread, self)))
        return threads

    @property
    def logging(self) -> bool:
        """Whether every event reaches a listener (an event log, a test), not only those the engine's
        explanation reads (set_tracer's `only`)."""
        return self._tracing and self._only is None

    def set_tracer(self, tracer: Tracer, only: frozenset[str] | None = None) -> None:
        """Send trace events to `tracer` (an engine that watches the events wraps the log's): all of them,
        or, when nothing else listens, `only` those (the rest cost nothing then)."""
        self.tracer = tracer
        self._tracing = True
        self._only = only

    def now_ns(self) -> int:
        return self.hub.now_ns() if self.hub is not None else 0

    def traced(self, event: str) -> bool:
        """Whether `trace(event, ...)` would reach a listener."""
        return self._tracing and (self._only is None or event in self._only)

    def trace(self, event: str, **fields: Any) -> None:
        if self._tracing and (self._only is None or event in self._only):
            self.tracer(event, self.now_ns(), fields)

    def thread_name(self) -> str:
        cpu = current_cpu.get()
        return cpu.name if cpu is not None else current_thread.get()

    # --- what the guest and the model report ------------------------------------------------------

    def console(self, cpu: CPUState, text: str) -> None:
        """hw/char/spapr_vty.c h_put_term_char: a line on hvc0."""
        self.outcome.console.append((self.now_ns(), text))
        self.trace("console", cpu=cpu.cpu_index, text=text)
        if self._console_out is not None:
            self._console_out(self.now_ns(), text)

    def guest_finished(self) -> None:
        self.guest_done = True
        self.trace("guest_finished", online=sorted(self.outcome.online),
                   failures=[f.kind for f in self.outcome.failures])
        self.maybe_finished()

    def invariant_violated(self, invariant: str, text: str) -> None:
        """A safety invariant broke (model/accel.py checks them): the run ends with verdict `invariant`."""
        if self.finished:
            return
        self.outcome.fail(INVARIANT, text)
        self.trace("invariant_violated", invariant=invariant, text=text)
        self.guest_done = self.finished = True
        self.finished_cond.broadcast()

    def maybe_finished(self) -> None:
        """The run's work is done once the guest's program has ended and every migration asked for has
        completed (as a harness waits for query-migrate to say so)."""
        if self.guest_done and not self.migrations_active and not self.finished:
            self.finished = True
            self.finished_cond.broadcast()

    # --- the main thread -------------------------------------------------------------------------

    def _pattern_line(self, pattern: str) -> int | None:
        """The first console line since the last command's that shows `pattern`; an empty pattern is the
        last command's own line (the command follows the previous one at once)."""
        lines = self.outcome.console
        if not pattern:
            return self.monitor_console_seen - 1 if self.monitor_console_seen else (0 if lines else None)
        return next((i for i in range(self.monitor_console_seen, len(lines)) if pattern in lines[i][1]), None)

    def monitor_behind(self) -> bool:
        """The monitor script's next command has its pattern on the console but has not run yet."""
        if self.monitor_entry >= len(self.settings.monitor):
            return False
        pattern = self.settings.monitor[self.monitor_entry][0]
        return self.monitor_due is not None or self._pattern_line(pattern) is not None

    def qemu_main(self) -> Generator[Effect, Any, None]:
        """system/vl.c qemu_init (reset, vm_start), then util/main-loop.c's loop."""
        rcu_register_thread(self, "main")  # rcu_init_complete registers the main thread
        yield BqlLock("qemu_init")
        yield from qemu_system_reset(self)
        if not self.start_paused:  # -S: prelaunch until `cont`
            self.runstate = "running"
            self.trace("vm_start")
            resume_all_vcpus(self)
        yield BqlUnlock("qemu_init")
        hold = self.settings.main_loop_hold_ns
        script = self.settings.monitor
        while True:
            due = self.monitor_due
            wait = MAIN_LOOP_POLL_NS if due is None else max(0, min(MAIN_LOOP_POLL_NS, due - self.now_ns()))
            yield Block((self.main_loop_cond,), wait)
            yield BqlLock("main_loop_wait")
            if hold:
                yield Spend(hold)  # a slow device model or monitor command, BQL held
            while self.monitor_entry < len(script):
                pattern, command = script[self.monitor_entry]
                if self.monitor_due is None:
                    hit = self._pattern_line(pattern)
                    if hit is None:
                        break
                    self.monitor_console_seen = hit + 1
                    self.monitor_due = self.now_ns() + self.settings.monitor_delay_ns(self.monitor_entry)
                    if self.monitor_due > self.now_ns():
                        self.trace("monitor_pattern_seen", command=command, due_ns=self.monitor_due)
                if self.now_ns() < self.monitor_due:
                    break
                self.monitor_entry += 1
                self.monitor_due = None
                yield from monitor_command(self, command)
            while self.monitor_requests:
                request = self.monitor_requests.popleft()
                try:
                    answer: dict[str, Any] = {"return": (yield from qmp_dispatch(self, request.name, request.args))}
                except QmpError as e:
                    answer = {"error": {"class": e.error_class, "desc": e.desc}}
                request.reply(answer)
            self.qemu_clock_run_timers()
            yield from main_loop_should_exit(self)
            yield BqlUnlock("main_loop_wait")
