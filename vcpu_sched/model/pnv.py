"""The powernv machine (TCG only): POWER10 core direct controls, and the firmware that uses them.

Mirrors hw/ppc/pnv_core.c (`pnv_core_cpu_reset`, `pnv_core_power10_xscom_read`,
`pnv_core_power10_xscom_write`) and the instructions the firmware uses: `stop` (target/ppc
`helper_pminsn`), `msgsnd` / `msgclr` (`helper_book3s_msgsnd`, a hypervisor doorbell), mtspr.

Theory of operation: firmware stops a thread through the core's DIRECT_CONTROLS register, which
pauses the vCPU (`cpu_pause`) and marks it `quiesced` (the RAS status reads that back). A pause is a
side-band state: the monitor's `stop` / `cont` resumes every vCPU, the firmware-stopped one included.
Before the seed's fix, quiesced was only a status bit, so the resumed thread wakes on the next
doorbell and runs. With the fix a quiesced thread takes no interrupt, so it stays asleep until the
firmware starts it. The two orderings of the direct-control writes (pre-fix: pause, then quiesced;
post-fix: quiesced, maybe_interrupt, then pause) are those of the reference.

Departures: one core's registers are modelled, addressed by (core, register) instead of an xscom
address; the firmware is a short program, not skiboot; the sreset control only resumes the thread.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..verdicts import LOST_INTERRUPTS, RAN_WHILE_STOPPED, WRONG_CORE_STATUS
from .cpus import CPUState, async_run_on_cpu, cpu_pause, cpu_resume
from .effects import Effect
from .guest import Compute, GuestProgram, SpinUntil, wait_for_monitor
from .interrupts import ppc_cpu_reset_hold, ppc_maybe_interrupt, ppc_set_irq, ppc_store_lpcr
from .ppc import LPCR_EEE, LPCR_HDEE, LPCR_LPES0, MSR_HV, MSR_ME, MSR_SF, PPC_BIT, PSSCR_EC, PSSCR_ESL, Interrupt
from .timebase import cpu_ppc_tb_reset

if TYPE_CHECKING:
    from .machine import Machine

PNV10_XSCOM_EC_CORE_THREAD_STATE = 0x412
PNV10_XSCOM_EC_CORE_DIRECT_CONTROLS = 0x449
PNV10_XSCOM_EC_CORE_RAS_STATUS = 0x454

FIRMWARE_ENTRY = 0x10
SECONDARY_IDLE_ENTRY = 0x30010
MS = 1_000_000


@dataclass(frozen=True)
class Xscom:
    """An xscom access to a core register (an MMIO access: the memory core takes the BQL)."""

    core: int
    reg: int
    write: bool = False
    value: int = 0


@dataclass(frozen=True)
class Mtspr:
    spr: str  # "LPCR" or "PSSCR"
    value: int


@dataclass(frozen=True)
class Msgsnd:
    """msgsnd: a hypervisor doorbell to another thread."""

    target: int


@dataclass(frozen=True)
class Msgclr:
    """msgclr: clear this thread's hypervisor doorbell."""


@dataclass(frozen=True)
class Stop:
    """The `stop` instruction (power-saving state; with PSSCR[EC]=1 the LPCR exit bits decide)."""


@dataclass(frozen=True)
class Uart:
    """A line on the firmware console (an MMIO write to the UART)."""

    text: str


PnvOp = Xscom | Mtspr | Msgsnd | Msgclr | Stop | Uart


@dataclass
class Pnv:
    """PnvMachineState, reduced to the POWER10 cores' direct controls."""

    machine: Machine
    heartbeat: dict[int, int] = field(default_factory=dict)

    def core_threads(self, core: int) -> list[CPUState]:
        threads = self.machine.settings.threads
        return self.machine.cpus[core * threads:(core + 1) * threads]

    def machine_reset(self) -> Generator[Effect, Any, None]:
        """pnv_reset -> pnv_core_reset -> pnv_core_cpu_reset for every thread."""
        for cpu in self.machine.cpus:
            self.pnv_core_cpu_reset(cpu)
        self.machine.outcome.online = {cpu.cpu_index for cpu in self.machine.cpus}  # every thread runs
        yield from ()

    def pnv_core_cpu_reset(self, cpu: CPUState) -> None:
        """hw/ppc/pnv_core.c pnv_core_cpu_reset: every thread starts running in hypervisor mode."""
        env = cpu.env
        cpu.start_powered_off = False
        ppc_cpu_reset_hold(cpu)
        env.msr = MSR_SF | MSR_HV | MSR_ME
        env.quiesced = False
        env.nip = FIRMWARE_ENTRY if cpu.cpu_index == 0 else SECONDARY_IDLE_ENTRY
        env.entry_gen += 1
        ppc_store_lpcr(cpu, LPCR_LPES0)
        cpu_ppc_tb_reset(cpu)

    def xscom_read(self, core: int, reg: int) -> int:
        """hw/ppc/pnv_core.c pnv_core_power10_xscom_read."""
        val = 0
        for i, cpu in enumerate(self.core_threads(core)):
            if reg == PNV10_XSCOM_EC_CORE_THREAD_STATE and cpu.halted:
                val |= PPC_BIT(56 + i)
            if reg == PNV10_XSCOM_EC_CORE_RAS_STATUS and cpu.env.quiesced:
                val |= PPC_BIT(0 + 8 * i) | PPC_BIT(1 + 8 * i)
        self.machine.trace("pnv_xscom_read", core=core, reg=hex(reg), value=hex(val))
        return val

    def xscom_write(self, core: int, reg: int, val: int) -> None:
        """hw/ppc/pnv_core.c pnv_core_power10_xscom_write, DIRECT_CONTROLS, with the fix's ordering."""
        self.machine.trace("pnv_xscom_write", core=core, reg=hex(reg), value=hex(val))
        if reg != PNV10_XSCOM_EC_CORE_DIRECT_CONTROLS:
            return
        post_fix = self.machine.fix_quiesced
        for i, cpu in enumerate(self.core_threads(core)):
            env = cpu.env
            if val & PPC_BIT(7 + 8 * i):  # stop
                if post_fix:
                    env.quiesced = True
                    ppc_maybe_interrupt(cpu)
                    cpu_pause(cpu)
                else:
                    cpu_pause(cpu)
                    env.quiesced = True
            if val & PPC_BIT(6 + 8 * i) or val & PPC_BIT(3 + 8 * i):  # start, clear maint (treated alike)
                env.quiesced = False
                if post_fix:
                    ppc_maybe_interrupt(cpu)
                cpu_resume(cpu)
            if val & PPC_BIT(4 + 8 * i):  # sreset
                env.quiesced = False
                if post_fix:
                    ppc_maybe_interrupt(cpu)
                async_run_on_cpu(cpu, _nmi_resume, "pnv_cpu_do_nmi_resume")

    def exec_op(self, cpu: CPUState, op: PnvOp) -> int:
        """The TCG helpers behind the firmware's instructions (called with the BQL held)."""
        env = cpu.env
        if isinstance(op, Xscom):
            if op.write:
                self.xscom_write(op.core, op.reg, op.value)
                return 0
            return self.xscom_read(op.core, op.reg)
        if isinstance(op, Mtspr):
            if op.spr == "LPCR":
                ppc_store_lpcr(cpu, op.value)
            else:
                env.psscr = op.value
            return 0
        if isinstance(op, Msgsnd):
            ppc_set_irq(self.machine.cpus[op.target], Interrupt.HDOORBELL, True)
            return 0
        if isinstance(op, Msgclr):
            ppc_set_irq(cpu, Interrupt.HDOORBELL, False)
            return 0
        if isinstance(op, Stop):
            # helper_pminsn: halt; with PSSCR[EC] the wake-up comes in as a system reset.
            cpu.halted = True
            env.resume_as_sreset = bool(env.psscr & PSSCR_EC)
            ppc_maybe_interrupt(cpu)
            cpu.exit_request = True
            return 0
        self.machine.console(cpu, op.text)
        return 0


def _nmi_resume(cpu: CPUState) -> None:
    """hw/ppc/pnv.c pnv_cpu_do_nmi_resume, reduced: the thread leaves its stopped state."""
    cpu.halted = False
    cpu_resume(cpu)


def _threads_idle(pnv: Pnv, state: int) -> bool:
    threads = len(pnv.core_threads(0))
    return all(state & PPC_BIT(56 + i) for i in range(1, threads))


def firmware_program(machine: Machine) -> GuestProgram:
    """Thread 0: stop thread 1 with the direct controls, check it stays stopped, start it again."""
    pnv = machine.pnv
    assert pnv is not None
    out = machine.outcome
    yield Uart("OPAL v7.1 (vcpu_sched model) starting on thread 0")
    while True:
        state = yield Xscom(0, PNV10_XSCOM_EC_CORE_THREAD_STATE)
        if _threads_idle(pnv, state):
            break
        yield Compute(MS, "wait for the secondary threads to enter stop")
    yield Uart("OPAL: secondary threads idle in stop")
    yield Xscom(0, PNV10_XSCOM_EC_CORE_DIRECT_CONTROLS, write=True, value=PPC_BIT(7 + 8 * 1))
    ras = yield Xscom(0, PNV10_XSCOM_EC_CORE_RAS_STATUS)
    state = yield Xscom(0, PNV10_XSCOM_EC_CORE_THREAD_STATE)
    if not ras & PPC_BIT(8):
        yield Uart(f"OPAL: thread 1 not quiesced after stop (RAS status {ras:#x})")
        out.fail(WRONG_CORE_STATUS, f"RAS status {ras:#x} does not show thread 1 quiesced")
    yield Uart("OPAL: thread 1 stopped")
    yield Uart(f"OPAL: core 0 RAS status {ras:#x}, thread state {state:#x}")
    yield Compute(100 * MS, "firmware work while thread 1 is stopped (the monitor acts meanwhile)")
    yield from wait_for_monitor(machine)
    beats = pnv.heartbeat.get(1, 0)
    yield Msgsnd(1)
    yield Compute(10 * MS, "give thread 1 the chance to (wrongly) run")
    if pnv.heartbeat.get(1, 0) != beats:
        yield Uart("OPAL: thread 1 ran while stopped by direct controls!")
        out.fail(RAN_WHILE_STOPPED, "thread 1 woke on a doorbell and ran while stopped by direct controls")
    else:
        yield Xscom(0, PNV10_XSCOM_EC_CORE_DIRECT_CONTROLS, write=True, value=PPC_BIT(6 + 8 * 1))
        woke = yield SpinUntil(lambda: pnv.heartbeat.get(1, 0) > beats, 1_000_000_000, "thread 1 restart")
        if woke:
            yield Uart("OPAL: thread 1 restarted")
        else:
            yield Uart("OPAL: thread 1 did not restart")
            out.fail(LOST_INTERRUPTS, "thread 1 never took its doorbell after start")
    machine.guest_finished()
    yield Mtspr("PSSCR", PSSCR_EC | PSSCR_ESL)
    while True:
        yield Stop()


def idle_thread_program(machine: Machine, cpu_index: int) -> GuestProgram:
    """A secondary thread: enable doorbell and external wake-ups, then stop; count every wake-up."""
    pnv = machine.pnv
    assert pnv is not None
    yield Mtspr("LPCR", LPCR_LPES0 | LPCR_HDEE | LPCR_EEE)
    yield Mtspr("PSSCR", PSSCR_EC | PSSCR_ESL)
    while True:
        yield Stop()
        yield Msgclr()
        pnv.heartbeat[cpu_index] = pnv.heartbeat.get(cpu_index, 0) + 1
        machine.guest_memory.changed.broadcast()
