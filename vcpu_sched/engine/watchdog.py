"""The lockup detector and its report, in the spirit of Linux's hung-task and soft-lockup detectors.

It watches two threads that must keep getting the BQL for the guest to make progress: the boot CPU's
vCPU thread and the main loop (the monitor). A thread that has been blocked in QEMU (on the BQL or a
condition) for longer than the threshold of guest time is stuck. A slow boot whose threads still get
the BQL, however late, never trips it: the clock restarts every time they get through.

The report is built from the machine's live state and the timestamps in `machine.notes`; each
sentence of the causal chain is written only if the fact behind it holds, so a different mechanism
gives a different explanation (or none).
"""

from __future__ import annotations

from collections.abc import Callable

from ..model.cpus import CPU_INTERRUPT_HARD, CPUState, cpu_has_work, cpu_thread_is_idle
from ..model.excp import ppc_next_unmasked_interrupt
from ..model.kvm import kvm_arch_process_async_events
from ..model.machine import Machine
from ..model.ppc import PSSCR_EC, Interrupt, decode_lpcr, pending_names
from ..result import CpuRow, Lockup
from .bql import BqlStatistics

NS = 1_000_000_000


def _s(ns: int) -> str:
    return f"{ns / NS:.6f} s"


class Watchdog:
    """Checks for a stuck boot CPU or main loop; `check` returns a Lockup once one is found."""

    def __init__(self, machine: Machine, bql: BqlStatistics, threshold_ns: int,
                 iterations: Callable[[CPUState], int]) -> None:
        self.machine = machine
        self.bql = bql
        self.threshold_ns = threshold_ns
        self.iterations = iterations
        self.watched = (machine.cpus[0].name, "main")

    def next_check_ns(self, now: int) -> int:
        """How long to sleep before the next check: a quarter of the threshold, or less if a watched
        thread would reach the threshold sooner (so a lockup is reported as soon as it is one)."""
        wait = max(self.threshold_ns // 4, 1_000_000)
        for thread in self.watched:
            blocked = self.bql.blocked.get(thread)
            if blocked is not None:
                wait = min(wait, max(blocked.since_ns + self.threshold_ns - now, 1))
        return wait

    def check(self, now: int) -> Lockup | None:
        for thread in self.watched:
            blocked = self.bql.blocked.get(thread)
            if blocked is not None and now - blocked.since_ns >= self.threshold_ns:
                return self.report(thread, now)
        return None

    # --- the report ------------------------------------------------------------------------------

    def _cpu_by_thread(self, thread: str | None) -> CPUState | None:
        return next((c for c in self.machine.cpus if c.name == thread), None)

    def report(self, stuck_thread: str, now: int) -> Lockup:
        machine, bql = self.machine, self.bql
        stuck = self._cpu_by_thread(stuck_thread)
        blocked = bql.blocked[stuck_thread]
        holder = self._cpu_by_thread(bql.owner)
        held = now - bql.owner_since_ns if bql.owner else 0
        main_blocked = bql.blocked.get("main")
        return Lockup(
            stuck_cpu=stuck.cpu_index if stuck else None,
            stuck_thread=stuck_thread,
            waiting_for=blocked.what,
            waiting_since_s=blocked.since_ns / NS,
            wait_site=blocked.site,
            bql_holder=holder.cpu_index if holder else None,
            bql_holder_thread=bql.owner,
            holder_site=bql.owner_site,
            held_for_s=held / NS,
            holder_iterations=self.iterations(holder) if holder else 0,
            chain=self.chain(stuck_thread, holder, now),
            cpus=[self.row(cpu) for cpu in machine.cpus],
            main_loop_blocked_s=(now - main_blocked.since_ns) / NS if main_blocked else None,
        )

    def row(self, cpu: CPUState) -> CpuRow:
        env = cpu.env
        blocked = self.bql.blocked.get(cpu.name)
        if self.bql.owner == cpu.name:
            where = "holds BQL"
        elif blocked is not None:
            where = f"waits {blocked.what}"
        else:
            where = "in guest (KVM_RUN)" if self.machine.kvm is not None else "in guest"
        decision = ppc_next_unmasked_interrupt(env, cpu.halted, quiesced_guard=self.machine.fix_quiesced)
        return CpuRow(
            cpu=cpu.cpu_index, thread=cpu.name, where=where, halted=cpu.halted, quiesced=env.quiesced,
            hard=bool(cpu.interrupt_request & CPU_INTERRUPT_HARD), lpcr=hex(env.lpcr),
            lpcr_decoded=decode_lpcr(env.lpcr, env.model),
            psscr_ec=bool(env.psscr & PSSCR_EC) if env.model.has_psscr else None,
            pending=pending_names(env.pending_interrupts), would_take=decision.name,
            loop_iterations=self.iterations(cpu),
        )

    def chain(self, stuck_thread: str, holder: CPUState | None, now: int) -> list[str]:
        machine, notes, bql = self.machine, self.machine.notes, self.bql
        blocked = bql.blocked[stuck_thread]
        if holder is None:
            who = bql.owner or "nobody"
            return [f"{stuck_thread} has waited for {blocked.what} at {blocked.site} since "
                    f"{_s(blocked.since_ns)}; the BQL is held by {who} at {bql.owner_site or '-'}."]
        h, env = holder.cpu_index, holder.env
        chain: list[str] = []
        if holder.halted:
            state = "quiesced" if env.quiesced else "not quiesced"
            chain.append(f"CPU {h} is halted, as spapr leaves a secondary before start-cpu "
                         f"(start_powered_off; {state}).")
        if h in notes.dec_raised and env.pending(Interrupt.DECR):
            chain.append(f"A decrementer interrupt (PPC_INTERRUPT_DECR) has been pending in QEMU for CPU {h} "
                         f"since its reset at {_s(notes.dec_raised[h])}: with timebase commit e8291ec16da8 "
                         "applied, cpu_ppc_tb_reset stores DEC=-1 through the internal path that skips the "
                         "KVM check.")
        if h in notes.lpcr_overwritten:
            t, before, after = notes.lpcr_overwritten[h]
            chain.append(f"At {_s(t)} a KVM register get (kvm_arch_get_registers, from cpu_synchronize_state) "
                         f"overwrote QEMU's LPCR {hex(before)} ({decode_lpcr(before, env.model)}) with KVM's "
                         f"{hex(after)} ({decode_lpcr(after, env.model)}): KVM never accepted the cleared "
                         "wake-up (PECE) bits, so they are set again.")
        if h in notes.ec_lost:
            chain.append(f"The same sync at {_s(notes.ec_lost[h])} brought PSSCR[EC] back as 0: KVM stores "
                         "PSSCR masked with PSSCR_GUEST_VIS, which lacks EC.")
        if h in notes.hard_set and holder.interrupt_request & CPU_INTERRUPT_HARD:
            t, decision = notes.hard_set[h]
            chain.append(f"At {_s(t)} ppc_maybe_interrupt found {decision.name} deliverable ({decision.rule}) "
                         "and set CPU_INTERRUPT_HARD.")
        if kvm_arch_process_async_events(holder) and machine.kvm is not None:
            chain.append(f"Each turn of CPU {h}'s thread, kvm_cpu_exec returns EXCP_HLT at once "
                         "(kvm_arch_process_async_events returns halted) before it ever drops the BQL.")
        if not cpu_thread_is_idle(holder) and cpu_has_work(holder):
            chain.append(f"qemu_wait_io_event never sleeps: cpu_thread_is_idle is false because cpu_has_work "
                         f"(CPU_INTERRUPT_HARD); CPU {h}'s thread has gone round "
                         f"{self.iterations(holder):,} times holding the BQL for {_s(now - bql.owner_since_ns)}.")
        else:
            chain.append(f"CPU {h}'s thread holds the BQL at {bql.owner_site} since {_s(bql.owner_since_ns)}.")
        waiting = f"{stuck_thread} waits for {blocked.what} in {blocked.site} since {_s(blocked.since_ns)}"
        if notes.last_set_all_lpcrs is not None and "do_lpcr_sync" in blocked.site:
            t, why = notes.last_set_all_lpcrs
            waiting += f", inside spapr_set_all_lpcrs for {why} (started {_s(t)})"
        chain.append(waiting + ": it cannot return from run_on_cpu without the BQL, so it is locked up.")
        main_blocked = bql.blocked.get("main")
        if main_blocked is not None and stuck_thread != "main":
            chain.append(f"The main loop (monitor) has also waited for the BQL since {_s(main_blocked.since_ns)}.")
        return chain
