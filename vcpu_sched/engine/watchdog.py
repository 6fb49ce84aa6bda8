"""The lockup detector and its report, in the spirit of Linux's hung-task and soft-lockup detectors.

It watches the threads whose progress the guest and its management wait for: the boot CPU's vCPU thread,
the main loop (the monitor) and, while a migration runs, the migration thread. A thread that has been
blocked in QEMU (on the BQL or a condition) for longer than the threshold of guest time is stuck. A slow
boot whose threads still get the BQL, however late, never trips it: the clock restarts every time they get
through.

The report's CPU table is the machine's live state; its causal chain comes from explain.py, computed
from the events the run has emitted, as `analyze` computes it from a log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..explain import Facts, Wait, chain
from ..model.cpus import CPU_INTERRUPT_HARD, CPUState
from ..model.excp import ppc_next_unmasked_interrupt
from ..model.machine import Machine
from ..model.migration import MIGRATION_THREAD
from ..model.ppc import PSSCR_EC, decode_lpcr, pending_names
from ..result import CpuRow, Lockup
from .bql import BqlStatistics

NS = 1_000_000_000


class Spin(NamedTuple):
    """A halted vCPU's thread seen going round its loop without sleeping: since when, and its counts then."""

    since_ns: int
    iterations: int
    excp_hlt: int
    holds: int
    sleeps: int


class Watchdog:
    """Checks for a stuck boot CPU or main loop; `check` returns a Lockup once one is found.

    Beside it, a progress watchdog (`spinning`): a halted vCPU whose thread, for the threshold, went round
    its loop only to have kvm_cpu_exec return EXCP_HLT, never slept, and took the BQL again each turn. Nothing
    waits for it, so no lockup is seen, but it burns a host CPU and hammers the BQL for nothing. (A thread
    that never lets the BQL go is the lockup's business, so it is not counted here.)
    """

    def __init__(self, machine: Machine, bql: BqlStatistics, threshold_ns: int,
                 iterations: Callable[[CPUState], int], facts: Facts) -> None:
        self.machine = machine
        self.facts = facts
        self.bql = bql
        self.threshold_ns = threshold_ns
        self.iterations = iterations
        # The migration thread too, once started: management waits for it as it waits for the monitor.
        self.watched = (machine.cpus[0].name, "main", MIGRATION_THREAD)
        self.spins: dict[int, Spin] = {}
        self.stop_asked: dict[int, tuple[int, int]] = {}  # cpu -> (first seen with `stop` set, guest entries then)

    def _stuck_since(self, thread: str) -> int | None:
        """Since when a watched thread is blocked - not counting a vCPU asleep on its own halt_cond, which
        is an idle CPU (cpu_thread_is_idle), as a vCPU ceded inside KVM_RUN is."""
        blocked = self.bql.blocked.get(thread)
        if blocked is None or blocked.what.startswith("halt_cond"):
            return None
        return blocked.since_ns

    def next_check_ns(self, now: int) -> int:
        """How long to sleep before the next check: a quarter of the threshold, or less if a watched
        thread would reach the threshold sooner (so a lockup is reported as soon as it is one)."""
        wait = max(self.threshold_ns // 4, 1_000_000)
        for thread in self.watched:
            since = self._stuck_since(thread)
            if since is not None:
                wait = min(wait, max(since + self.threshold_ns - now, 1))
        return wait

    def check(self, now: int) -> Lockup | None:
        for thread in self.watched:
            since = self._stuck_since(thread)
            if since is not None and now - since >= self.threshold_ns:
                return self.report(thread, now)
        return None

    def spinning(self, now: int) -> str | None:
        """The progress watchdog: why a vCPU's thread is found going round for the threshold without progress
        (spinning while halted, or entering the guest again and again while asked to stop), or None."""
        return self._spinning_halted(now) or self._running_on_when_stopped(now)

    def _running_on_when_stopped(self, now: int) -> str | None:
        """A vCPU asked to stop (`stop`, cpu_pause) that kept entering guest code for the threshold and never
        reached qemu_cpu_stop: whoever waits in pause_all_vcpus waits for it, and nothing it does helps."""
        for cpu in self.machine.cpus:
            if not cpu.stop:
                self.stop_asked.pop(cpu.cpu_index, None)
                continue
            since, entries = self.stop_asked.setdefault(cpu.cpu_index, (now, cpu.guest_entries))
            if now - since >= self.threshold_ns and cpu.guest_entries > entries:
                return (f"{cpu.name} was asked to stop {(now - since) / NS:g} s ago or more and has entered guest "
                        f"code {cpu.guest_entries - entries:,} times since without stopping: its thread never "
                        f"reached qemu_cpu_stop, so every pause_all_vcpus caller waits for it")
        return None

    def _spinning_halted(self, now: int) -> str | None:
        for cpu in self.machine.cpus:
            sample = Spin(now, self.iterations(cpu), cpu.stats.get("excp_hlt", 0),
                          self.bql.stats(cpu.name).holds, cpu.stats.get("sleeps", 0))
            last = self.spins.get(cpu.cpu_index)
            turns = sample.iterations - last.iterations if last else 0
            if (last is None or not cpu.halted or sample.sleeps != last.sleeps
                    or sample.excp_hlt - last.excp_hlt < turns or sample.holds - last.holds < turns or turns == 0):
                self.spins[cpu.cpu_index] = sample
                continue
            if now - last.since_ns >= self.threshold_ns:
                return (f"{cpu.name} spun for {(now - last.since_ns) / NS:g} s while halted: in each of its "
                        f"{turns:,} loop turns kvm_cpu_exec returned EXCP_HLT and the thread took the BQL again, "
                        "and it never slept (a host CPU burnt, the BQL taken and dropped for nothing)")
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
            chain=chain(self.facts, Wait(stuck_thread, blocked.what, blocked.site, blocked.since_ns), bql.owner,
                        holder.cpu_index if holder else None, bql.owner_since_ns, bql.owner_site,
                        self.iterations(holder) if holder else 0, now,
                        Wait("main", main_blocked.what, main_blocked.site, main_blocked.since_ns)
                        if main_blocked else None),
            cpus=[self.row(cpu) for cpu in machine.cpus],
            main_loop_blocked_s=(now - main_blocked.since_ns) / NS if main_blocked else None,
            main_loop_waits_for=main_blocked.what if main_blocked else None,
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
        if self.machine.arch.name != "ppc64":  # another target: its own state where ppc shows its LPCR
            return CpuRow(cpu=cpu.cpu_index, thread=cpu.name, where=where, halted=cpu.halted, quiesced=False,
                          hard=bool(cpu.interrupt_request & CPU_INTERRUPT_HARD), lpcr="-",
                          lpcr_decoded=self.machine.arch.cpu_state_text(cpu), psscr_ec=None, pending=[],
                          would_take="-", loop_iterations=self.iterations(cpu))
        decision = ppc_next_unmasked_interrupt(env, cpu.halted, quiesced_guard=self.machine.fix_quiesced)
        return CpuRow(
            cpu=cpu.cpu_index, thread=cpu.name, where=where, halted=cpu.halted, quiesced=env.quiesced,
            hard=bool(cpu.interrupt_request & CPU_INTERRUPT_HARD), lpcr=hex(env.lpcr),
            lpcr_decoded=decode_lpcr(env.lpcr, env.model),
            psscr_ec=bool(env.psscr & PSSCR_EC) if env.model.has_psscr else None,
            pending=pending_names(env.pending_interrupts), would_take=decision.name,
            loop_iterations=self.iterations(cpu),
        )
