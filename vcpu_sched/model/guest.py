"""The guest: a Linux-like pseries boot, as programs of guest operations.

Mirrors what Linux 6.12 does on pseries (arch/powerpc/kernel/prom_init.c, setup_64.c
`configure_exceptions`, platforms/pseries/smp.c `smp_startup_cpu`, kernel/smp.c `__cpu_up`,
kernel/smp.c `smp_init`) and the order seen in a real TCG boot (reference §12). A program is a
generator of guest operations; whoever executes the guest (FakeKvm's KVM_RUN or the TCG loop)
interprets them, and an hcall that the kernel does not handle becomes an exit to QEMU.

Departures: the console writes one line per H_PUT_TERM_CHAR (real hvc writes 16 bytes per call); the
interrupt-controller set-up hcalls before each start-cpu and the kernel's CPU-online handshake are
folded into the boot CPU's per-CPU compute time.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from .effects import QemuCond

if TYPE_CHECKING:
    from .machine import Machine

# hcall numbers (include/hw/ppc/spapr.h)
H_REGISTER_VPA = 0xDC
H_CEDE = 0xE0
H_PUT_TERM_CHAR = 0x58
H_SET_MODE = 0x31C
KVMPPC_H_RTAS = 0xF000
KVMPPC_H_CAS = 0xF002
HCALL_NAMES = {H_REGISTER_VPA: "H_REGISTER_VPA", H_CEDE: "H_CEDE", H_PUT_TERM_CHAR: "H_PUT_TERM_CHAR",
               H_SET_MODE: "H_SET_MODE", KVMPPC_H_RTAS: "H_RTAS", KVMPPC_H_CAS: "H_CAS"}

H_SET_MODE_RESOURCE_ADDR_TRANS_MODE = 3
H_SET_MODE_RESOURCE_LE = 4

# RTAS tokens (RTAS_TOKEN_BASE 0x2000 + index, hw/ppc/spapr_rtas.c) and Linux's QCSS states
RTAS_QUERY_CPU_STOPPED_STATE = 0x2005
RTAS_START_CPU = 0x2006
RTAS_STOP_SELF = 0x2007
RTAS_NAMES = {RTAS_QUERY_CPU_STOPPED_STATE: "query-cpu-stopped-state", RTAS_START_CPU: "start-cpu",
              RTAS_STOP_SELF: "stop-self"}
QCSS_STOPPED, QCSS_STOPPING, QCSS_NOT_STOPPED = 0, 1, 2

SPAPR_ENTRY_POINT = 0x100
GENERIC_SECONDARY_SMP_INIT = 0xC000000000000080 & 0x0FFFFFFFFFFFFFFF  # __pa(generic_secondary_smp_init)
BOOT_SPIN_NS = 5_000_000_000  # __cpu_up's callin wait during boot (boot_spin_ms = 5 s)
MS = 1_000_000


@dataclass
class RtasArgs:
    """struct rtas_args in guest memory: token, nargs, nret, then args and rets (32-bit BE words)."""

    token: int
    nargs: int
    nret: int
    args: list[int]
    rets: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.rets:
            self.rets = [0] * self.nret


@dataclass(frozen=True)
class Compute:
    """The guest executes instructions for `ns` of guest time."""

    ns: int
    what: str = ""


@dataclass(frozen=True)
class Hcall:
    """`sc 1`: a hypercall. `text` carries a console line; `rtas` the RTAS argument buffer."""

    nr: int
    args: tuple[int, ...] = ()
    text: str = ""
    rtas: RtasArgs | None = None


@dataclass(frozen=True)
class SpinUntil:
    """Busy-wait in the guest until `done()` or `timeout_ns`; the program receives whether it was done."""

    done: Callable[[], bool]
    timeout_ns: int
    what: str = ""


@dataclass(frozen=True)
class StoreDecr:
    """mtspr DEC: under KVM the kernel handles it; under TCG it reaches cpu_ppc_store_decr."""

    value: int


GuestOp: TypeAlias = Compute | Hcall | SpinUntil | StoreDecr
GuestProgram: TypeAlias = Generator[GuestOp, Any, None]


@dataclass
class GuestMemory:
    """The bits of guest memory CPUs communicate through; `changed` wakes guest spin-waits."""

    changed: QemuCond
    callin_map: set[int] = field(default_factory=set)


@dataclass
class GuestOutcome:
    """What the guest itself reports: console lines and the CPUs it brought up."""

    console: list[tuple[int, str]] = field(default_factory=list)
    online: set[int] = field(default_factory=lambda: {0})
    stuck: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    smp_done: bool = False


def rtas(token: int, nargs: int, nret: int, *args: int) -> Hcall:
    return Hcall(KVMPPC_H_RTAS, (), rtas=RtasArgs(token, nargs, nret, list(args)))


def console(text: str) -> Hcall:
    return Hcall(H_PUT_TERM_CHAR, (0,), text=text)


def _called_in(mem: GuestMemory, n: int) -> Callable[[], bool]:
    return lambda: n in mem.callin_map


def boot_cpu_program(machine: Machine) -> GuestProgram:
    """SLOF/prom_init, early_setup's H_SET_MODE calls, then pseries SMP bring-up on the boot CPU."""
    rng = machine.rng
    smp = machine.settings.smp
    mem = machine.guest_memory
    out = machine.outcome
    yield Compute(40 * MS, "SLOF")
    yield console("Preparing to boot Linux version 6.12.0 (vcpu_sched guest)")
    yield Compute(5 * MS, "prom_init")
    yield Hcall(KVMPPC_H_CAS, ())
    yield console("Calling ibm,client-architecture-support... done")
    yield console("instantiating rtas at 0x000000002fff0000... done")
    yield console("prom_hold_cpus: skipped")
    yield console("Quiescing Open Firmware ...")
    yield console("Booting Linux via __start() @ 0x0000000000440000 ...")
    yield Compute(2 * MS, "early_setup")
    # configure_exceptions: pseries_enable_reloc_on_exc, then pseries_little_endian_exceptions.
    yield Hcall(H_SET_MODE, (3, H_SET_MODE_RESOURCE_ADDR_TRANS_MODE, 0, 0))
    yield Hcall(H_SET_MODE, (1, H_SET_MODE_RESOURCE_LE, 0, 0))
    yield StoreDecr(0x7FFFFFFF)  # time_init programs the boot CPU's DEC
    yield Compute(rng.randint(1_200, 1_800) * MS, "start_kernel up to smp_init")
    yield console("smp: Bringing up secondary CPUs ...")
    for n in range(1, smp):
        yield Compute(rng.randint(4, 23) * MS // 4, "cpu_up prepare, interrupt controller set-up")
        query = rtas(RTAS_QUERY_CPU_STOPPED_STATE, 1, 2, n)
        yield query
        assert query.rtas is not None
        status, state = query.rtas.rets
        if status != 0:
            yield console(f"RTAS query-cpu-stopped-state failed: {status}")
        # smp_startup_cpu: NOT_STOPPED means "already out of firmware": start-cpu is never called.
        if not (status == 0 and state == QCSS_NOT_STOPPED):
            start = rtas(RTAS_START_CPU, 3, 1, n, GENERIC_SECONDARY_SMP_INIT, n)
            yield start
            assert start.rtas is not None
            if start.rtas.rets[0] != 0:
                yield console(f"start-cpu failed: {start.rtas.rets[0]}")
                yield console(f"smp: failed starting cpu {n} (rc -2)")
                out.failures.append(f"start-cpu of CPU {n} failed: {start.rtas.rets[0]}")
                continue
        called_in = yield SpinUntil(_called_in(mem, n), BOOT_SPIN_NS, f"callin of CPU {n}")
        if not called_in:
            yield console(f"Processor {n} is stuck.")
            out.stuck.append(n)
            continue
        yield Compute(rng.randint(4, 23) * MS * 3 // 4, "give_timebase, wait for cpu_online")
        out.online.add(n)
    count = len(out.online)
    yield console(f"smp: Brought up 1 node, {count} CPU{'s' if count != 1 else ''}")
    out.smp_done = True
    machine.guest_finished()
    while True:
        yield Hcall(H_CEDE)


def secondary_program(machine: Machine, cpu_index: int) -> GuestProgram:
    """generic_secondary_smp_init -> start_secondary: call in, then idle in H_CEDE."""
    rng = machine.rng
    first = cpu_index == 1
    yield Compute(8 * MS if first else rng.randint(200, 400) * 1000, "secondary start-up")
    yield Hcall(H_REGISTER_VPA, (1, cpu_index, 0))
    yield StoreDecr(0x7FFFFFFF)
    machine.guest_memory.callin_map.add(cpu_index)
    machine.guest_memory.changed.broadcast()
    while True:
        yield Hcall(H_CEDE)


def program_at(machine: Machine, cpu_index: int, nip: int) -> GuestProgram | None:
    """The program the guest has at an entry address (None: nothing to run there)."""
    if nip == SPAPR_ENTRY_POINT:
        return boot_cpu_program(machine)
    if nip == GENERIC_SECONDARY_SMP_INIT:
        return secondary_program(machine, cpu_index)
    return None


class GuestRunner:
    """The guest's instruction stream on one vCPU: the current operation and how far it has got."""

    def __init__(self, program: GuestProgram, nip: int) -> None:
        self.nip = nip
        self._program = program
        self.op: GuestOp | None = None
        self.compute_left = 0
        self.spin_deadline: int | None = None
        self.awaiting_result = False
        self.advance(None, first=True)

    def advance(self, value: Any = None, first: bool = False) -> None:
        """Finish the current operation (handing the program `value`) and fetch the next."""
        self.awaiting_result = False
        try:
            self.op = next(self._program) if first else self._program.send(value)
        except StopIteration:
            self.op = None
        self.compute_left = self.op.ns if isinstance(self.op, Compute) else 0
        self.spin_deadline = None
