"""Why a thread is stuck: the causal chain, computed once, from the events.

`Facts` reads the event stream - live, fed by the engine core as the model runs, or afterwards, from an
event log - and keeps what the explanation needs: per vCPU whether it is halted and quiesced, whether a
DEC is pending since a timebase reset, the KVM register get that changed its LPCR or dropped PSSCR[EC],
the moment CPU_INTERRUPT_HARD was set, its EXCP_HLT turns and idle sleeps, and the last
`spapr_set_all_lpcrs`. `chain` turns those facts into sentences (`failure_chain` for a guest failure that is
not a hang: an RTAS call the guest could not act on). The watchdog's report and `analyze` both call them,
so they explain a run the same way by construction; each sentence is written only when the
fact behind it is in the events, so a different mechanism gives a different explanation (or none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .model.kvm import kvm_irqchip_create
from .model.migration import MIGRATION_THREAD
from .model.ppc import CPU_MODELS, decode_lpcr
from .versions import RELEASES, cpu_events_function

NS = 1_000_000_000


def _s(ns: int) -> str:
    return f"{ns / NS:.6f} s"


def _int(value: Any) -> int:
    return int(value, 16) if isinstance(value, str) else int(value)


@dataclass(eq=False, repr=False)
class CpuFacts:
    halted: bool | None = None
    halted_by: str = "reset"  # what last halted it: spapr's reset, or the guest's RTAS stop-self
    quiesced: bool | None = None
    hard: bool = False
    dec_pending: bool = False
    dec_raised_ns: int | None = None  # the timebase reset that left a DEC pending
    timebase_reset: str = ""
    lpcr_overwritten: tuple[int, int, int, str] | None = None  # t, QEMU's LPCR before, KVM's after, via
    ec_lost_ns: int | None = None
    hard_set: tuple[int, str, str] | None = None  # t, interrupt, rule (set while halted)
    last_hlt_ns: int | None = None  # kvm_cpu_exec's EXCP_HLT short-cut
    hlt_dropped_bql: bool = False  # ... dropping the BQL on the way (the posted patch, a what-if)
    reset_unhalted: int | None = None  # 2018's spapr_cpu_reset left it running (hotplug_compat_fix = false)
    last_sleep_ns: int | None = None  # qemu_wait_io_event went to sleep


@dataclass(eq=False, repr=False)
class Wait:
    """A thread blocked in QEMU: on what (the BQL or a condition), where, since when."""

    thread: str
    what: str
    site: str
    since_ns: int


@dataclass(eq=False, repr=False)
class Facts:
    """The explanation's facts, from events fed in order with `feed(event, t_ns, fields)`."""

    cpu_model: str = "POWER10"
    accel: str = "kvm"
    cpu_events: str = "qemu_wait_io_event"  # the vCPU loop's function in the QEMU version modelled
    halt_in_kernel: bool = False  # kvm_halt_in_kernel(): KVM calls no halted vCPU idle
    cpus: dict[int, CpuFacts] = field(default_factory=dict)
    set_all_lpcrs: tuple[int, str] | None = None  # t, why
    waits: dict[str, Wait] = field(default_factory=dict)  # threads blocked in QEMU
    # A vCPU ioctl waiting for another vCPU's kernel mutex: caller cpu -> (since, target, ioctl)
    mutex_waits: dict[int, tuple[int, int, str]] = field(default_factory=dict)
    thread_mutex_waits: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # the same, other threads
    in_kvm_run: dict[int, int] = field(default_factory=dict)  # cpu -> since when it is inside KVM_RUN
    rtas: dict[int, str] = field(default_factory=dict)  # cpu -> the RTAS call it made last
    rtas_args: dict[int, list[Any]] = field(default_factory=dict)  # cpu -> that call's arguments
    # (call, the CPU it names) -> t, rets
    rtas_answers: dict[tuple[str, int], tuple[int, list[Any]]] = field(default_factory=dict)
    # cpu -> t, quiesced at its system reset, by what (H_SIGNAL_SYS_RESET, spapr_nmi)
    sysresets: dict[int, tuple[int, bool, str]] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)  # CPUs given an entry state (boot, start-cpu) since a reset
    never_started: set[int] = field(default_factory=set)  # CPUs system-reset before any entry state
    holder: Wait | None = None  # the BQL's holder, where and since when it took it
    # run_on_cpu calls not yet run: caller thread -> (since, target cpu, work)
    run_on_cpu_waits: dict[str, tuple[int, int, str]] = field(default_factory=dict)
    sigp: dict[int, tuple[str, int]] = field(default_factory=dict)  # cpu -> (order, dst) it is handling
    rcu_readers: dict[str, int] = field(default_factory=dict)  # thread -> since when in a read-side section
    rcu_waiting: tuple[int, list[str], bool] | None = None  # since, readers synchronize_rcu waits for, forced
    pauses: dict[str, int] = field(default_factory=dict)  # thread -> when it entered pause_all_vcpus last
    resumed: tuple[int, str] | None = None  # the last resume_all_vcpus: when, by which thread
    pause_signal: tuple[int, int, str | None] | None = None  # the last qemu_cond_signal: when, by CPU, woke whom
    migration_stop: int | None = None  # when the migration thread recorded the run state and began to stop the VM
    stop_current: dict[int, tuple[int, bool]] = field(default_factory=dict)  # cpu -> when it stopped itself, stopped
    pause_done: tuple[int, str] | None = None  # the last pause_all_vcpus to return: when, on which thread
    violation: tuple[int, str] | None = None  # the invariant that broke: when, what
    # The exclusive section in progress: when start_exclusive began, on which CPU, the work it runs (or None)
    exclusive: tuple[int, int, str] | None = None
    work_running: dict[int, str] = field(default_factory=dict)  # cpu -> the queued work its thread runs now
    # A thread that reached cpu_list_add's finish_safe_work while a section was pending: when, thread, new CPU
    list_add_wait: tuple[int, str, int] | None = None

    @classmethod
    def for_log(cls, settings: dict[str, Any]) -> Facts:
        """Facts for a log whose run_start carried `settings` (values checked, defaults for old logs)."""
        kvm = settings.get("accel", "kvm") == "kvm" and settings.get("machine") != "s390-ccw-virtio"
        halt_in_kernel = kvm and kvm_irqchip_create(frozenset(), settings.get("irqchip_fix", True) is not False)
        return cls(str(settings.get("cpu", "POWER10")), str(settings.get("accel", "kvm")),
                   _cpu_events(settings.get("qemu_version")), halt_in_kernel=halt_in_kernel)

    def cpu(self, index: int) -> CpuFacts:
        facts = self.cpus.get(index)
        if facts is None:
            facts = self.cpus[index] = CpuFacts()
        return facts

    def feed(self, event: str, t: int, fields: dict[str, Any]) -> None:
        """Take one event into account. Events from a log may lack fields or carry odd values: those that
        do not say what the explanation needs are passed over."""
        entry = _HANDLERS.get(event)
        if entry is None:
            return
        handler, key, kind = entry
        value = fields.get(key) if key else None
        if key and (not isinstance(value, kind) or isinstance(value, bool)):
            return
        try:
            handler(self, t, fields)
        except (KeyError, TypeError, ValueError):
            return

    def feed_live(self, event: str, t: int, fields: dict[str, Any]) -> None:
        """`feed` for a running model's events, whose fields are always there and of the right type: the
        engine traces the vCPU loop's events on every turn, so the checks a log's events need are left out."""
        entry = _HANDLERS.get(event)
        if entry is not None:
            entry[0](self, t, fields)

    def _state(self, t: int, f: dict[str, Any]) -> None:
        c = self.cpu(f["cpu"])
        if "halted" in f:
            c.halted = bool(f["halted"])
        if "quiesced" in f:
            c.quiesced = bool(f["quiesced"])

    def _reset_vcpu(self, t: int, f: dict[str, Any]) -> None:
        self._state(t, f)
        self.cpu(f["cpu"]).halted_by = "reset"
        self.started.discard(f["cpu"])

    def _rtas_call(self, t: int, f: dict[str, Any]) -> None:
        self.rtas[f["cpu"]] = str(f.get("call"))
        self.rtas_args[f["cpu"]] = list(f.get("args") or [])
        if f.get("call") == "stop-self":
            self.cpu(f["cpu"]).halted_by = "stop-self"

    def _rtas_return(self, t: int, f: dict[str, Any]) -> None:
        args = self.rtas_args.pop(f["cpu"], [])
        if args and isinstance(args[0], int) and isinstance(f.get("rets"), list):
            self.rtas_answers[(str(f.get("call")), args[0])] = (t, f["rets"])

    def _entry(self, t: int, f: dict[str, Any]) -> None:
        self._state(t, f)
        self.started.add(f["cpu"])

    def _sysreset(self, t: int, f: dict[str, Any]) -> None:
        self.sysresets[f["cpu"]] = (t, bool(f.get("quiesced")), str(f.get("by", "H_SIGNAL_SYS_RESET")))
        if f["cpu"] not in self.started:
            self.never_started.add(f["cpu"])

    def _mutex_wait(self, t: int, f: dict[str, Any]) -> None:
        wait = (t, int(f["target"]), str(f.get("ioctl")))
        caller = f.get("cpu")
        if isinstance(caller, int) and not isinstance(caller, bool):
            self.mutex_waits[caller] = wait
        else:  # a thread that is not a vCPU's (the main loop)
            self.thread_mutex_waits[str(caller)] = wait

    def _mutex_got(self, t: int, f: dict[str, Any]) -> None:
        self.mutex_waits.pop(f["cpu"], None)

    def _kvm_run(self, t: int, f: dict[str, Any]) -> None:
        self.in_kvm_run.setdefault(f["cpu"], t)

    def _kvm_exit(self, t: int, f: dict[str, Any]) -> None:
        self.in_kvm_run.pop(f["cpu"], None)

    def _run_on_cpu(self, t: int, f: dict[str, Any]) -> None:
        self.run_on_cpu_waits[str(f["caller"])] = (t, int(f["cpu"]), str(f.get("work")))

    def _start_exclusive(self, t: int, f: dict[str, Any]) -> None:
        cpu = int(f["cpu"])
        self.exclusive = (t, cpu, self.work_running.get(cpu, ""))

    def _end_exclusive(self, t: int, f: dict[str, Any]) -> None:
        self.exclusive = None
        self.list_add_wait = None

    def _list_add(self, t: int, f: dict[str, Any]) -> None:
        if f.get("finish_safe_work") is True and self.exclusive is not None:
            self.list_add_wait = (t, str(f.get("thread")), int(f["cpu"]))

    def _work_done(self, t: int, f: dict[str, Any]) -> None:
        self.work_running[int(f["cpu"])] = str(f.get("work"))
        for caller, (_, target, work) in list(self.run_on_cpu_waits.items()):
            if target == f["cpu"] and work == f.get("work"):
                del self.run_on_cpu_waits[caller]

    def _sigp(self, t: int, f: dict[str, Any]) -> None:
        self.sigp[int(f["cpu"])] = (str(f.get("order")), int(f.get("dst", -1)))

    def _rcu_lock(self, t: int, f: dict[str, Any]) -> None:
        self.rcu_readers[str(f["thread"])] = t

    def _rcu_unlock(self, t: int, f: dict[str, Any]) -> None:
        self.rcu_readers.pop(str(f["thread"]), None)

    def _rcu_wait(self, t: int, f: dict[str, Any]) -> None:
        since = self.rcu_waiting[0] if self.rcu_waiting else t
        self.rcu_waiting = (since, [str(r) for r in f.get("readers", [])], bool(f.get("forced")))

    def _rcu_callback(self, t: int, f: dict[str, Any]) -> None:
        self.rcu_waiting = None

    def _maybe_interrupt(self, t: int, f: dict[str, Any]) -> None:
        self._state(t, f)
        c = self.cpu(f["cpu"])
        c.hard = bool(f.get("hard"))
        if c.hard and not f.get("hard_before") and c.halted:
            c.hard_set = (t, str(f.get("interrupt")), str(f.get("rule")))

    def _tb_reset(self, t: int, f: dict[str, Any]) -> None:
        c = self.cpu(f["cpu"])
        c.dec_pending = bool(f.get("dec_pending"))
        c.timebase_reset = str(f.get("timebase_reset", ""))
        c.dec_raised_ns = t if c.dec_pending else None

    def _set_irq(self, t: int, f: dict[str, Any]) -> None:
        if f.get("irq") == "DECR":
            self.cpu(f["cpu"]).dec_pending = bool(f.get("level"))

    def _get_registers(self, t: int, f: dict[str, Any]) -> None:
        c = self.cpu(f["cpu"])
        before, after = _int(f["lpcr_before"]), _int(f["lpcr"])
        pm = CPU_MODELS[self.cpu_model].lpcr_pm if self.cpu_model in CPU_MODELS else ~0
        if (before & pm) != (after & pm):
            c.lpcr_overwritten = (t, before, after, str(f.get("via", "-")))
        if f.get("psscr_ec_before") and not f.get("psscr_ec"):
            c.ec_lost_ns = t

    def _cpu_exec(self, t: int, f: dict[str, Any]) -> None:
        if f.get("ret") == "EXCP_HLT":
            c = self.cpu(f["cpu"])
            c.last_hlt_ns, c.hlt_dropped_bql = t, f.get("bql_dropped") is True

    def _sleep(self, t: int, f: dict[str, Any]) -> None:
        self._state(t, f)
        self.cpu(f["cpu"]).last_sleep_ns = t

    # The BQL as BqlBook (engine/bql.py) records it: a thread woken from a condition that must then wait
    # for the BQL has been blocked since it began to sleep.
    def _mutex_lock(self, t: int, f: dict[str, Any]) -> None:
        if f.get("owner") is not None:
            thread, before = str(f["thread"]), self.waits.get(str(f["thread"]))
            self.waits[thread] = Wait(thread, "BQL", str(f.get("site")), before.since_ns if before else t)

    def _mutex_locked(self, t: int, f: dict[str, Any]) -> None:
        self.waits.pop(str(f["thread"]), None)
        self.holder = Wait(str(f["thread"]), "BQL", str(f.get("site")), t)

    def _mutex_unlock(self, t: int, f: dict[str, Any]) -> None:
        self.holder = None

    def _cond_wait(self, t: int, f: dict[str, Any]) -> None:
        self.waits[str(f["thread"])] = Wait(str(f["thread"]), str(f.get("cond")), str(f.get("site")), t)

    def _event_wait(self, t: int, f: dict[str, Any]) -> None:
        self.waits[str(f["thread"])] = Wait(str(f["thread"]), str(f.get("what")), str(f.get("site")), t)

    def _event_woken(self, t: int, f: dict[str, Any]) -> None:
        self.waits.pop(str(f["thread"]), None)

    def _cpu_reset_2018(self, t: int, f: dict[str, Any]) -> None:
        self.cpu(f["cpu"]).reset_unhalted = t

    def _pause(self, t: int, f: dict[str, Any]) -> None:
        self.pauses[str(f["thread"])] = t

    def _resume(self, t: int, f: dict[str, Any]) -> None:
        self.resumed = (t, str(f["thread"]))

    def _signal(self, t: int, f: dict[str, Any]) -> None:
        woke = f.get("woke")
        self.pause_signal = (t, f["cpu"], woke if isinstance(woke, str) else None)

    def _migration_stop(self, t: int, f: dict[str, Any]) -> None:
        self.migration_stop = t

    def _stop_current(self, t: int, f: dict[str, Any]) -> None:
        self.stop_current[f["cpu"]] = (t, f.get("stopped") is True)

    def _pause_done(self, t: int, f: dict[str, Any]) -> None:
        self.pause_done = (t, str(f["thread"]))

    def _violation(self, t: int, f: dict[str, Any]) -> None:
        if self.violation is None:
            self.violation = (t, str(f["text"]))

    def _set_all_lpcrs(self, t: int, f: dict[str, Any]) -> None:
        self.set_all_lpcrs = (t, str(f.get("why")))


# event -> (handler, the field it cannot do without, that field's type)
_HANDLERS: dict[str, tuple[Any, str, type]] = {
    "ppc_maybe_interrupt": (Facts._maybe_interrupt, "cpu", int),
    "spapr_reset_vcpu": (Facts._reset_vcpu, "cpu", int),
    "rtas_call": (Facts._rtas_call, "cpu", int),
    "rtas_return": (Facts._rtas_return, "cpu", int),
    "spapr_do_system_reset_on_cpu": (Facts._sysreset, "cpu", int),
    "kvm_vcpu_mutex_wait": (Facts._mutex_wait, "target", int),
    "kvm_vcpu_enable_cap": (Facts._mutex_got, "cpu", int),
    "kvm_vcpu_ioctl_run": (Facts._kvm_run, "cpu", int),
    "kvm_run_exit": (Facts._kvm_exit, "cpu", int),
    "cpu_post_load": (Facts._state, "cpu", int),
    "spapr_cpu_set_entry_state": (Facts._entry, "cpu", int),
    "qemu_wait_io_event_sleep": (Facts._sleep, "cpu", int),
    "qemu_process_cpu_events_sleep": (Facts._sleep, "cpu", int),
    "cpu_ppc_tb_reset": (Facts._tb_reset, "cpu", int),
    "ppc_set_irq": (Facts._set_irq, "cpu", int),
    "kvm_get_registers": (Facts._get_registers, "cpu", int),
    "kvm_cpu_exec": (Facts._cpu_exec, "cpu", int),
    "spapr_set_all_lpcrs": (Facts._set_all_lpcrs, "", object),
    "run_on_cpu": (Facts._run_on_cpu, "caller", str),
    "process_queued_cpu_work": (Facts._work_done, "cpu", int),
    "start_exclusive": (Facts._start_exclusive, "cpu", int),
    "end_exclusive": (Facts._end_exclusive, "cpu", int),
    "cpu_list_add": (Facts._list_add, "cpu", int),
    "sigp_handle": (Facts._sigp, "cpu", int),
    "rcu_read_lock": (Facts._rcu_lock, "ctr", int),
    "rcu_read_unlock": (Facts._rcu_unlock, "", object),
    "rcu_wait_for_readers": (Facts._rcu_wait, "readers", list),
    "rcu_callback": (Facts._rcu_callback, "name", str),
    "pause_all_vcpus": (Facts._pause, "", object),
    "resume_all_vcpus": (Facts._resume, "", object),
    "qemu_cond_signal": (Facts._signal, "cpu", int),
    "migration_global_state": (Facts._migration_stop, "", object),
    "cpu_stop_current": (Facts._stop_current, "cpu", int),
    "spapr_cpu_reset": (Facts._cpu_reset_2018, "cpu", int),
    "pause_all_vcpus_done": (Facts._pause_done, "", object),
    "invariant_violated": (Facts._violation, "text", str),
    "qemu_mutex_lock": (Facts._mutex_lock, "thread", str),
    "qemu_mutex_locked": (Facts._mutex_locked, "thread", str),
    "qemu_mutex_unlock": (Facts._mutex_unlock, "thread", str),
    "qemu_cond_wait": (Facts._cond_wait, "thread", str),
    "qemu_event_wait": (Facts._event_wait, "thread", str),
    "qemu_event_woken": (Facts._event_woken, "thread", str),
}


# The run_on_cpu functions that sync registers, and who calls them (QF paths).
_SYNC_CALLERS = {
    "do_set_compat": " in ppc_set_compat_all's do_set_compat, at CAS (ibm,client-architecture-support)",
    "do_lpcr_sync": " in spapr_set_all_lpcrs's do_lpcr_sync",
}


def _cpu_events(version: Any) -> str:
    """The vCPU loop's function for a log's qemu_version (the old loop when it is missing or unknown)."""
    return cpu_events_function(version) if version in RELEASES else cpu_events_function("10.0")


# The events the explanation reads live: the engine gives the BQL's waits and holder itself, so the
# BQL's own events are read only from a log.
LIVE_FACT_EVENTS = frozenset(name for name, (_, key, _) in _HANDLERS.items() if key != "thread")


def chain(facts: Facts, stuck: Wait, holder: str | None, holder_cpu: int | None, held_since_ns: int,
          holder_site: str, iterations: int, now: int, main_wait: Wait | None) -> list[str]:
    """Why `stuck` is stuck, one sentence per link that the facts show, the holder of the BQL first."""
    if stuck.thread in facts.run_on_cpu_waits:
        cycle = _run_on_cpu_cycle(facts, stuck.thread)
        if cycle:
            return _cross_run_on_cpu_links(facts, cycle, now)
    if stuck.site == "drain_call_rcu":
        return _rcu_links(facts, stuck, now)
    if stuck.site == "pause_all_vcpus":
        return _pause_links(facts, stuck, now)
    if stuck.thread in facts.thread_mutex_waits and holder == stuck.thread:
        return _thread_mutex_links(facts, stuck, now)
    waiter = facts.list_add_wait
    if waiter is not None and facts.exclusive is not None and holder == waiter[1]:
        return _exclusive_links(facts, stuck, now)
    if holder_cpu is None:
        return [f"{stuck.thread} has waited for {stuck.what} at {stuck.site} since {_s(stuck.since_ns)}; the BQL "
                f"is held by {holder or 'nobody'} at {holder_site or '-'}."]
    h, c = holder_cpu, facts.cpu(holder_cpu)
    model = CPU_MODELS.get(facts.cpu_model)
    out: list[str] = []
    if facts.halt_in_kernel and c.halted and not c.hard:
        return _halt_in_kernel_links(facts, h, held_since_ns, iterations, now) + _stuck_links(facts, stuck, main_wait)
    if h in facts.mutex_waits:
        out += _kernel_mutex_links(facts, h, held_since_ns, holder_site, now)
        return out + _stuck_links(facts, stuck, main_wait)
    if c.halted:
        state = "quiesced" if c.quiesced else "not quiesced"
        if c.halted_by == "stop-self":
            out.append(f"CPU {h} is halted: the guest took it offline with RTAS stop-self ({state}).")
        else:
            out.append(f"CPU {h} is halted, as spapr leaves a secondary before start-cpu (start_powered_off; "
                       f"{state}).")
    if c.dec_raised_ns is not None and c.dec_pending:
        why = ("with timebase commit e8291ec16da8 applied, cpu_ppc_tb_reset stores DEC=-1 through the internal "
               "path that skips the KVM check") if c.timebase_reset == "applied" else "cpu_ppc_tb_reset stored DEC=-1"
        out.append(f"A decrementer interrupt (PPC_INTERRUPT_DECR) has been pending in QEMU for CPU {h} since its "
                   f"reset at {_s(c.dec_raised_ns)}: {why}.")
    if c.lpcr_overwritten is not None:
        t, before, after, via = c.lpcr_overwritten
        out.append(f"At {_s(t)} a KVM register get (kvm_arch_get_registers, from cpu_synchronize_state"
                   f"{_SYNC_CALLERS.get(via, f' in {via}' if via != '-' else '')}) overwrote QEMU's LPCR "
                   f"{hex(before)} ({decode_lpcr(before, model)}) with KVM's {hex(after)} "
                   f"({decode_lpcr(after, model)}): KVM never accepted the cleared wake-up (PECE) bits, so they are "
                   "set again.")
    if c.ec_lost_ns is not None:
        out.append(f"The same sync at {_s(c.ec_lost_ns)} brought PSSCR[EC] back as 0: KVM stores PSSCR masked with "
                   "PSSCR_GUEST_VIS, which lacks EC.")
    if c.hard_set is not None and c.hard:
        t, interrupt, rule = c.hard_set
        out.append(f"At {_s(t)} ppc_maybe_interrupt found {interrupt} deliverable ({rule}) and set "
                   "CPU_INTERRUPT_HARD.")
    if facts.accel == "kvm" and c.halted and c.last_hlt_ns is not None and c.last_hlt_ns >= held_since_ns:
        out.append(f"Each turn of CPU {h}'s thread, kvm_cpu_exec returns EXCP_HLT at once "
                   "(kvm_arch_process_async_events returns halted) before it ever drops the BQL.")
    if c.hard and (c.last_sleep_ns is None or c.last_sleep_ns < held_since_ns):
        out.append(f"{facts.cpu_events} never sleeps: cpu_thread_is_idle is false because cpu_has_work "
                   f"(CPU_INTERRUPT_HARD); CPU {h}'s thread has gone round {iterations:,} times holding the BQL "
                   f"for {_s(now - held_since_ns)}.")
    else:
        out.append(f"CPU {h}'s thread holds the BQL at {holder_site} since {_s(held_since_ns)}.")
    return out + _stuck_links(facts, stuck, main_wait)


def cpu_of_thread(thread: str) -> int | None:
    """The vCPU index of a vCPU thread's name ("CPU 3/KVM" -> 3); None for other threads."""
    if thread.startswith("CPU "):
        return int(thread.split()[1].split("/")[0])
    return None


def _thread_of_cpu(facts: Facts, cpu: int) -> str | None:
    return next((t for t in facts.run_on_cpu_waits if t.startswith(f"CPU {cpu}/")), None)


def _run_on_cpu_cycle(facts: Facts, start: str) -> list[str]:
    """The threads that wait in run_on_cpu for one another, starting at `start`, if they form a cycle."""
    seen = [start]
    while True:
        _, target, _ = facts.run_on_cpu_waits[seen[-1]]
        nxt = _thread_of_cpu(facts, target)
        if nxt is None:
            return []
        if nxt == start:
            return seen
        if nxt in seen:
            return []
        seen.append(nxt)


def _cross_run_on_cpu_links(facts: Facts, cycle: list[str], now: int) -> list[str]:
    """A deadlock of run_on_cpu calls: each thread waits for work that the next never processes."""
    out = []
    for thread in cycle:
        since, target, work = facts.run_on_cpu_waits[thread]
        cpu = cpu_of_thread(thread)
        order = facts.sigp.get(cpu) if cpu is not None else None
        why = f", handling SIGP {order[0]} from its guest to CPU {order[1]} (handle_sigp)" if order else ""
        out.append(f"{thread} waits in run_on_cpu since {_s(since)} for CPU {target} to run {work}{why}; the "
                   "BQL is dropped while it waits.")
    began = min(facts.run_on_cpu_waits[t][0] for t in cycle)
    out.append("A vCPU thread runs its queued work only in " + facts.cpu_events + ", at the top of its loop; each "
               f"of {', '.join(cycle)} is inside run_on_cpu instead, waiting for the other: a cross run_on_cpu "
               f"deadlock (not a BQL problem - nobody holds it). It has lasted {_s(now - began)}.")
    if any(cpu_of_thread(t) in facts.sigp for t in cycle):
        out.append("Upstream f9530c3242 lets one SIGP at a time through qemu_sigp_mutex (trylock); the other "
                   "CPU's guest gets condition code 2 (BUSY) and retries, after its thread has run the queued work.")
    return out


def _rcu_links(facts: Facts, stuck: Wait, now: int) -> list[str]:
    """The main thread waits in drain_call_rcu for a grace period that a reader never lets end."""
    out = [f"{stuck.thread} waits in drain_call_rcu since {_s(stuck.since_ns)} (qmp_device_add's failure path, "
           "7bed89958b), with the BQL dropped: the monitor answers nothing until it returns."]
    if facts.rcu_waiting is not None:
        since, readers, forced = facts.rcu_waiting
        inside = [f"{r} (in a read-side section since {_s(facts.rcu_readers[r])})" if r in facts.rcu_readers else r
                  for r in readers]
        out.append(f"The call_rcu thread waits in synchronize_rcu -> wait_for_readers since {_s(since)} for "
                   f"{', '.join(inside)}: an RCU grace period that never ends.")
        tcg = [r for r in readers if r.endswith("/TCG")]
        if tcg:
            out.append(f"{', '.join(tcg)} runs guest code in cpu_exec, which holds rcu_read_lock for as long as it "
                       "executes; a guest busy loop never leaves it.")
        if not forced:
            out.append("No force_rcu notifier kicks the reader out (ef149763a8 + dd47a8f654 add one per TCG vCPU "
                       "thread, which queues do_nothing with async_run_on_cpu).")
    return out


def _invariant_links(facts: Facts) -> list[str]:
    """A vCPU ran while a pause_all_vcpus caller believed every vCPU paused."""
    assert facts.violation is not None
    t, text = facts.violation
    out = []
    for cpu, (since, stopped) in sorted(facts.stop_current.items()):
        if stopped:
            out.append(f"At {_s(since)} CPU {cpu} asked to stop itself (cpu_stop_current, from a reset or shutdown "
                       "request it made) and was marked stopped at once with qemu_cpu_stop (before 0ec7e6779f), "
                       "though its thread was still handling the exit and would enter KVM_RUN again.")
    if facts.pause_done is not None:
        done, thread = facts.pause_done
        out.append(f"At {_s(done)} {thread}'s pause_all_vcpus found every vCPU's stopped flag set and returned: it "
                   "went on as if no vCPU ran (the reset began).")
    out.append(f"At {_s(t)} the invariant broke: {text}.")
    return out


def _halt_in_kernel_links(facts: Facts, h: int, held_since_ns: int, iterations: int, now: int) -> list[str]:
    """A halted vCPU that is never idle because KVM was believed to halt vCPUs in the kernel."""
    c = facts.cpu(h)
    if c.hlt_dropped_bql:
        turn = (f"Each turn of CPU {h}'s thread, kvm_cpu_exec returns EXCP_HLT at once (kvm_arch_process_async_events "
                "returns halted), dropping the BQL on the way as the patch posted in April 2026 has it, and "
                "kvm_vcpu_thread_fn takes it back at once: the thread never waits, so no waiter gets the BQL in "
                f"between. It never sleeps in {facts.cpu_events} and has gone round {iterations:,} times, "
                f"the BQL its own for {_s(now - held_since_ns)}.")
    else:
        turn = (f"Each turn of CPU {h}'s thread, kvm_cpu_exec returns EXCP_HLT at once (kvm_arch_process_async_events "
                "returns halted) before it ever drops the BQL, and the thread never sleeps in "
                f"{facts.cpu_events}: it has gone round {iterations:,} times holding the BQL for "
                f"{_s(now - held_since_ns)}.")
    return [
        f"CPU {h} is halted, as spapr leaves a secondary before start-cpu (start_powered_off).",
        "kvm_irqchip_create set kvm_halt_in_kernel_allowed although the ppc64 kernel offers no KVM_CAP_IRQCHIP: "
        "since 98884e0cc1 its check sits in do_kvm_irqchip_create, whose early return no longer ends the caller "
        "(afa63fc0e3 makes it return -EOPNOTSUPP). So kvm_vcpu_thread_is_idle, the accelerator's say in "
        "cpu_thread_is_idle, calls no halted vCPU idle.",
        turn,
    ]


def _thread_mutex_links(facts: Facts, stuck: Wait, now: int) -> list[str]:
    """A thread other than a vCPU's holds the BQL and waits in a vCPU ioctl for that vCPU's kernel mutex."""
    since, target, ioctl = facts.thread_mutex_waits[stuck.thread]
    out = [f"{stuck.thread} holds the BQL and since {_s(since)} waits in ioctl({ioctl}) on CPU {target}'s vCPU: "
           "the kernel takes that vCPU's mutex first (kvm_vcpu_ioctl)."]
    c = facts.cpu(target)
    if c.reset_unhalted is not None:
        out.append(f"At {_s(c.reset_unhalted)} the hotplugged CPU {target}'s reset (spapr_cpu_reset before "
                   "b12a4efb76) left it running - cpu_reset cleared halted, and halted = 1 comes only after "
                   "ppc_set_compat - so its thread, resumed by realize, entered KVM_RUN.")
    out.append(_held_by_kvm_run(facts, target, "", "", f"{_s(now - since)}, and with the BQL held the monitor and "
                                "every other thread wait too"))
    return out


def _exclusive_links(facts: Facts, stuck: Wait, now: int) -> list[str]:
    """e533f45d7d's AB-BA: a vCPU's exclusive section waits for the BQL, which a thread holds while it waits in
    cpu_list_add -> finish_safe_work for that section to end."""
    assert facts.exclusive is not None and facts.list_add_wait is not None
    began, cpu, work = facts.exclusive
    since, thread, new = facts.list_add_wait
    queued = (" (queued by kvm_hv_handle_exit for its guest's SynIC MSR write, with async_safe_run_on_cpu)"
              if work == "async_synic_update" else " (queued with async_safe_run_on_cpu)")
    out = [f"CPU {cpu}'s thread runs {work or 'safe work'}{queued} inside an exclusive section: "
           f"process_queued_cpu_work dropped the BQL and entered start_exclusive at {_s(began)}, so pending_cpus "
           "stays non-zero until its end_exclusive.",
           f"At {_s(since)} {thread}, holding the BQL (device_add of CPU {new}), reached cpu_list_add, which before "
           f"e533f45d7d ends with finish_safe_work: cpu_exec_start(CPU {new}) found the section pending and waits in "
           "exclusive_idle on exclusive_resume, the BQL still held.",
           f"{work or 'The work'} takes the BQL (qemu_mutex_lock_iothread inside the section): it waits for "
           f"{thread}, which waits for the section to end - an AB-BA deadlock between the BQL and the exclusive "
           f"section, {_s(now - since)} old. The fix takes finish_safe_work out of cpu_list_add: the new vCPU's own "
           "cpu_exec_start waits, without the BQL."]
    if stuck.thread != thread:
        out.append(f"{stuck.thread} waits for {stuck.what} in {stuck.site} since {_s(stuck.since_ns)}, held by "
                   f"{thread}, so it is locked up.")
    else:
        out.append(f"{thread} holds the BQL, so the monitor and every thread that needs the BQL wait too.")
    return out


def _pause_links(facts: Facts, stuck: Wait, now: int) -> list[str]:
    """A thread waits in pause_all_vcpus for vCPUs that will never all stop again, or for a wake-up that went
    to another waiter."""
    me = stuck.thread
    entered = facts.pauses.get(me, stuck.since_ns)
    why = (f" (migration_completion -> vm_stop_force_state(finish-migrate), from {_s(facts.migration_stop)})"
           if me == MIGRATION_THREAD and facts.migration_stop is not None else "")
    out = [f"{me} entered pause_all_vcpus at {_s(entered)}{why} and waits on qemu_pause_cond since "
           f"{_s(stuck.since_ns)}, the BQL dropped, until every vCPU has stopped."]
    others = sorted((t, th) for th, t in facts.pauses.items() if th != me and t <= stuck.since_ns)
    if others:
        t, other = others[-1]
        out.append(f"{other} had entered pause_all_vcpus at {_s(t)} and was waiting on qemu_pause_cond too: each "
                   "wait drops the BQL, so two callers can be inside pause_all_vcpus at once.")
    signal = facts.pause_signal
    if signal is not None and signal[0] >= stuck.since_ns and signal[2] != me:
        t, cpu, woke = signal
        out.append(f"At {_s(t)} CPU {cpu}, the last vCPU to stop, called qemu_cond_signal(qemu_pause_cond) "
                   f"(qemu_cpu_stop before 96bce6831b), which wakes one waiter: it woke {woke or 'nobody'}, not "
                   f"{me}. Every vCPU has stopped, so no vCPU signals again.")
    resumed = facts.resumed
    if resumed is not None and resumed[0] >= entered and resumed[1] != me:
        t, by = resumed
        out.append(f"At {_s(t)} {by}, its own pause_all_vcpus done, ran resume_all_vcpus, clearing every vCPU's "
                   f"stop and stopped while {me} still waited (before f962cac4c2 resume_all_vcpus did not check "
                   "the run state, and do_vm_stop set it only after pausing). The vCPUs run on and are never "
                   "asked to stop again.")
    out.append(f"Nothing will broadcast qemu_pause_cond for {me}: it has waited {_s(now - stuck.since_ns)} and "
               "is locked up.")
    return out


def _kernel_mutex_links(facts: Facts, h: int, held_since_ns: int, holder_site: str, now: int) -> list[str]:
    """The holder of the BQL is not spinning: it waits in a vCPU ioctl for another vCPU's kernel mutex."""
    since, target, ioctl = facts.mutex_waits[h]
    call = facts.rtas.get(h)
    during = f", handling RTAS {call}" if call else ""
    out = [f"CPU {h}'s thread holds the BQL at {holder_site} since {_s(held_since_ns)}{during}, and since "
           f"{_s(since)} it waits in ioctl({ioctl}) on CPU {target}'s vCPU: the kernel takes that vCPU's mutex "
           "first (kvm_vcpu_ioctl)."]
    out.append(_held_by_kvm_run(facts, target, " (in the guest, ceded or running)", "no exit is coming and ",
                                _s(now - since)))
    return out


def _held_by_kvm_run(facts: Facts, target: int, where: str, why: str, lasted: str) -> str:
    """Why a vCPU ioctl's wait for `target`'s kernel mutex does not end: KVM_RUN holds it, nothing ends KVM_RUN."""
    run = facts.in_kvm_run.get(target)
    inside = f"since {_s(run)}" if run is not None else "all along"
    return (f"CPU {target}'s vCPU mutex is held by KVM_RUN: CPU {target} is inside KVM_RUN {inside}{where}, and "
            f"nothing makes it return to QEMU - {why}QEMU does not kick it for this ioctl; the wait has lasted "
            f"{lasted}.")


def _stuck_links(facts: Facts, stuck: Wait, main_wait: Wait | None) -> list[str]:
    out: list[str] = []
    waiting = f"{stuck.thread} waits for {stuck.what} in {stuck.site} since {_s(stuck.since_ns)}"
    if facts.set_all_lpcrs is not None and "do_lpcr_sync" in stuck.site:
        t, why = facts.set_all_lpcrs
        waiting += f", inside spapr_set_all_lpcrs for {why} (started {_s(t)})"
    if "run_on_cpu" in stuck.site:
        out.append(waiting + ": it cannot return from run_on_cpu without the BQL, so it is locked up.")
    else:
        out.append(waiting + ", so it is locked up.")
    if main_wait is not None and stuck.thread != "main":
        out.append(f"The main loop (monitor) has also waited for the BQL since {_s(main_wait.since_ns)}.")
    return out


def failure_chain(facts: Facts) -> list[str]:
    """Why the guest could not start a CPU that QEMU had reset: start-cpu refused it, or the kernel, told
    it was running, kicked it without start-cpu and it never called in."""
    lines: list[str] = []
    if facts.violation is not None:
        return _invariant_links(facts)
    scribblers = sorted(facts.never_started & set(facts.sysresets))
    for (call, cpu), (t, rets) in sorted(facts.rtas_answers.items(), key=lambda item: item[1][0]):
        if (call != "query-cpu-stopped-state" or len(rets) < 2 or rets[1] != 2 or not scribblers
                or cpu in facts.never_started or cpu not in facts.sysresets or t < facts.sysresets[cpu][0]):
            continue
        lines.append(f"query-cpu-stopped-state for CPU {cpu} answered 2 (not stopped) at {_s(t)}: it was running in "
                     "the crashed kernel, so the kdump kernel kicks it in kexec's hold loop. It never calls in: "
                     f"CPU{'s' if len(scribblers) > 1 else ''} {', '.join(map(str, scribblers))}, reset though the "
                     "kernel never started it, entered the system-reset handler with r13 = 0 and saves registers "
                     "over low memory (exgen at 0x80), __secondary_hold's way out.")
    for cpu, reset in sorted(facts.sysresets.items()):
        query = facts.rtas_answers.get(("query-cpu-stopped-state", cpu))
        start = facts.rtas_answers.get(("start-cpu", cpu))
        if (query is None or query[0] < reset[0] or len(query[1]) < 2 or query[1][1] != 2
                or (start is not None and start[0] > query[0]) or cpu not in facts.never_started):
            continue
        lines += [_reset_line(cpu, reset),
                  f"query-cpu-stopped-state for CPU {cpu} answered 2 (not stopped) at {_s(query[0])}: QEMU saw it "
                  "running (before fb802acdc8 the answer is from halted, which the reset cleared), so the kernel "
                  "kicks it without start-cpu.",
                  f"CPU {cpu} never calls in: the kernel had never started it, so it entered the old "
                  "kernel's system-reset handler with no paca, and runs on there."]
    for (call, cpu), (t, rets) in sorted(facts.rtas_answers.items(), key=lambda item: item[1][0]):
        if call != "start-cpu" or not rets or rets[0] != -1:
            continue
        sysreset = facts.sysresets.get(cpu)
        if sysreset is not None:
            lines.append(_reset_line(cpu, sysreset))
        query = facts.rtas_answers.get(("query-cpu-stopped-state", cpu))
        if query is not None and len(query[1]) > 1 and query[1][1] == 0:
            lines.append(f"query-cpu-stopped-state for CPU {cpu} answered 0 (stopped) at {_s(query[0])}: QEMU "
                         "answers from quiesced, so the kernel calls start-cpu.")
        lines.append(f"start-cpu for CPU {cpu} answered -1 (RTAS_OUT_HW_ERROR) at {_s(t)}: rtas_start_cpu "
                     "refuses a CPU that is not halted.")
        if sysreset is not None and sysreset[1] and sysreset[2] in _UNGUARDED:
            lines.append("a1c2dfee4f checks quiesced only in h_signal_sys_reset's broadcast: "
                         f"{_UNGUARDED[sysreset[2]]} resets a quiesced CPU all the same (nmi_fix, a what-if, adds "
                         "the check there).")
        elif sysreset is not None and sysreset[1]:
            lines.append("a1c2dfee4f (sysreset_fix) leaves quiesced CPUs out of H_SIGNAL_SYS_RESET: the CPU stays "
                         "halted and start-cpu starts it.")
    return lines


_RESET_BY = {"H_SIGNAL_SYS_RESET": "from H_SIGNAL_SYS_RESET: the kernel's NMI IPI when it crashes",
             "H_SIGNAL_SYS_RESET unicast": "from H_SIGNAL_SYS_RESET naming this CPU: the guest's NMI to one CPU",
             "spapr_nmi": "from spapr_nmi: the monitor's nmi, QMP inject-nmi",
             "spapr_watchdog": "from the spapr watchdog's dump-restart action: the guest stopped feeding H_WATCHDOG"}
# The system-reset callers a1c2dfee4f left without its quiesced check (77251365ec), as the chain names them.
_UNGUARDED = {"spapr_nmi": "spapr_nmi", "spapr_watchdog": "the spapr watchdog's dump-restart (watchdog_expired)",
              "H_SIGNAL_SYS_RESET unicast": "its unicast branch"}


def _reset_line(cpu: int, reset: tuple[int, bool, str]) -> str:
    state = " while quiesced (RTAS-stopped)" if reset[1] else ""
    return (f"CPU {cpu} took a system reset at {_s(reset[0])}{state} (spapr_do_system_reset_on_cpu, "
            f"{_RESET_BY.get(reset[2], reset[2])}): ppc_cpu_do_system_reset cleared halted"
            + ("; nothing clears quiesced." if reset[1] else "."))
