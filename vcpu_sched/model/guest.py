"""The guest: a Linux-like pseries boot, as programs of guest operations.

Mirrors what Linux 6.12 does on pseries (arch/powerpc/kernel/prom_init.c, setup_64.c
`configure_exceptions`, platforms/pseries/smp.c `smp_startup_cpu`, kernel/smp.c `__cpu_up`,
kernel/smp.c `smp_init`) and the order seen in a real TCG boot (reference §12); a crash and the kdump
kernel are kdump.py's. A program is a
generator of guest operations; whoever executes the guest (FakeKvm's KVM_RUN or the TCG loop)
interprets them, and an hcall that the kernel does not handle becomes an exit to QEMU.

Departures: the console writes one line per H_PUT_TERM_CHAR (real hvc writes 16 bytes per call); the
interrupt-controller set-up hcalls before each start-cpu and the kernel's CPU-online handshake are
folded into the boot CPU's per-CPU compute time.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from ..verdicts import BAD_RTAS_ANSWER, LOST_INTERRUPTS, STUCK_CPU
from .effects import QemuCond
from .spapr_abi import (
    H_CEDE,
    H_EOI,
    H_IPI,
    H_PUT_TERM_CHAR,
    H_REGISTER_PROC_TBL,
    H_REGISTER_VPA,
    H_SET_MODE,
    H_SET_MODE_RESOURCE_ADDR_TRANS_MODE,
    H_SET_MODE_RESOURCE_LE,
    H_SIGNAL_SYS_RESET,
    H_WATCHDOG,
    KVMPPC_H_CAS,
    KVMPPC_H_RTAS,
    LINUX_CAS_PVRS,
    PROC_TBL_GTSE,
    PROC_TBL_MODIFY,
    PROC_TBL_RADIX,
    PROC_TBL_REGISTER,
    PSERIES_HP_ELOG_ACTION_ADD,
    PSERIES_HP_ELOG_RESOURCE_CPU,
    PSERIES_WDTF_ACTION_DUMP_RESTART,
    PSERIES_WDTF_OP_START,
    QCSS_NOT_STOPPED,
    QCSS_STOPPED,
    RTAS_CHECK_EXCEPTION,
    RTAS_EPOW_WARNING,
    RTAS_HOTPLUG_EVENTS,
    RTAS_IBM_NMI_REGISTER,
    RTAS_LOG_V6_EPOW_ACTION_SYSTEM_SHUTDOWN,
    RTAS_LOG_V6_EPOW_MODIFIER_NORMAL,
    RTAS_POWER_OFF,
    RTAS_QUERY_CPU_STOPPED_STATE,
    RTAS_START_CPU,
    RTAS_STOP_SELF,
    RTAS_SYSTEM_REBOOT,
    RTAS_VECTOR_EXTERNAL_INTERRUPT,
)

if TYPE_CHECKING:
    from .kdump import Crash
    from .machine import Machine

GENERIC_SECONDARY_SMP_INIT = 0xC000000000000080 & 0x0FFFFFFFFFFFFFFF  # __pa(generic_secondary_smp_init)
# fwnmi_init's handlers (system_reset_fwnmi, machine_check_fwnmi): real-mode code below 32 MiB; the model
# only needs them to be neither 0x100 (the boot entry) nor each other.
SYSTEM_RESET_FWNMI, MACHINE_CHECK_FWNMI = 0x7000, 0x7100
BOOT_SPIN_NS = 5_000_000_000  # __cpu_up's callin wait during boot (boot_spin_ms = 5 s)
RUNTIME_SPIN_NS = 100_000_000_000  # at run time: 1 ms of spinning, then sleep-polling for up to 100 s
CPU_DIE_WARN_NS = 120_000_000_000  # pseries_cpu_die warns "didn't die after 120 seconds"
IPI_TIMEOUT_NS = 1_000_000_000
WORKLOAD_DELAY_NS = 200_000_000  # from "smp: Brought up" to the scenario's workload
BUSY_LOOP_NS = 10_000_000_000  # the busy-loop workload's while (1);
HOTPLUG_WAIT_NS = 60_000_000_000  # hotplug-online: how long the guest waits for a CPU to be added
PSERIES_WDT_TIMEOUT_S = 60  # drivers/watchdog/pseries-wdt.c: the driver's default timeout
NMI_IPI_DELAY_NS = 1_000_000_000  # smp_send_nmi_ipi's delay_us as its callers pass it (1 s)
MS = 1_000_000
DLPAR_ADD_NS = 2 * 1_000_000  # the guest's work from a DLPAR event to the new core's node (dlpar_cpu_add)
DLPAR_WORD = "dlpar:added"  # the guest's view of a hotplug event: the first new CPU's index
# The event sources' hardware interrupt numbers (include/hw/ppc/spapr_irq.h SPAPR_IRQ_EPOW, SPAPR_IRQ_HOTPLUG),
# by the check-exception mask of their class; the error log's size (Linux's RTAS_ERROR_LOG_MAX)
EVENT_SOURCE_IRQS = {RTAS_EPOW_WARNING: 0x1000, RTAS_HOTPLUG_EVENTS: 0x1001}
RTAS_ERROR_LOG_MAX = 2048
# orderly_poweroff runs /sbin/poweroff: userspace's shutdown (services stopped, file systems synced and
# unmounted) before its reboot(2) reaches kernel_power_off: 1.1 s measured from "Power off requested" to
# "reboot: Power down" with busybox poweroff in the real-QEMU kit's initramfs, QEMU 11.1 TCG (docs/libvirt.md).
POWEROFF_USERSPACE_NS = 1_100_000_000


@dataclass(eq=False, repr=False)
class RtasArgs:
    """struct rtas_args in guest memory: token, nargs, nret, then args and rets (32-bit BE words)."""

    token: int
    nargs: int
    nret: int
    args: list[int]
    rets: list[int] = field(default_factory=list)
    log: dict[str, int] = field(default_factory=dict)  # check-exception's error log buffer, its fields by name

    def __post_init__(self) -> None:
        if not self.rets:
            self.rets = [0] * self.nret


class Compute(NamedTuple):
    """The guest executes instructions for `ns` of guest time."""

    ns: int
    what: str = ""


class Hcall(NamedTuple):
    """`sc 1`: a hypercall. `text` carries a console line; `rtas` the RTAS argument buffer."""

    nr: int
    args: tuple[int, ...] = ()
    text: str = ""
    rtas: RtasArgs | None = None


class SpinUntil(NamedTuple):
    """Busy-wait in the guest until `done()` or `timeout_ns`; the program receives whether it was done."""

    done: Callable[[], bool]
    timeout_ns: int
    what: str = ""


class StoreDecr(NamedTuple):
    """mtspr DEC: under KVM the kernel handles it; under TCG it reaches cpu_ppc_store_decr."""

    value: int


GuestOp: TypeAlias = Any  # Compute | Hcall | SpinUntil | StoreDecr, or a powernv firmware op (pnv.py)
GuestProgram: TypeAlias = Generator[GuestOp, Any, None]


@dataclass(eq=False, repr=False)
class GuestMemory:
    """The bits of guest memory CPUs communicate through; `changed` wakes guest spin-waits."""

    changed: QemuCond
    callin_map: set[int] = field(default_factory=set)
    offline_request: set[int] = field(default_factory=set)
    ipi_sent: dict[int, int] = field(default_factory=dict)
    ipi_acked: dict[int, int] = field(default_factory=dict)
    crash_request: int | None = None  # the CPU asked to crash (sysrq-trigger run there)
    words: dict[str, int] = field(default_factory=dict)  # other shared variables, by name
    # The kernel's live device tree CPUs in its order (of_attach_node puts a hotplugged node first); the
    # kdump kernel gets its loader's order of them (kdump.kdump_fdt_cpus).
    dt_cpus: list[int] = field(default_factory=list)
    sprg_paca: set[int] = field(default_factory=set)  # CPUs that loaded their paca into SPRG_PACA
    # Each CPU's interrupt event queue, which the interrupt controller fills (XIVE's END queue in guest
    # memory): the event sources' interrupts, by their class's check-exception mask
    irq_queue: dict[int, list[int]] = field(default_factory=dict)
    cpu_start: set[int] = field(default_factory=set)  # paca->cpu_start, set by smp_pSeries_kick_cpu
    crash: Crash | None = None
    # A CPU reset with SPRG_PACA = 0 saves registers at paca offsets from physical 0 (EX_* of exgen at
    # 0x80): over __secondary_hold's exit path, which kexec copies to 0x60 (kdump.system_reset_program).
    hold_loop_overwritten: bool = False

    def reset(self) -> None:
        """A system reset: the next boot starts from fresh memory."""
        self.words.clear()
        self.callin_map.clear()
        self.offline_request.clear()
        self.ipi_sent.clear()
        self.ipi_acked.clear()
        self.crash_request = None
        self.dt_cpus.clear()
        self.sprg_paca.clear()
        self.cpu_start.clear()
        self.irq_queue.clear()
        self.crash = None
        self.hold_loop_overwritten = False


# Guest-visible failures, each a verdict of its own (the exit status is 1 for all of them).


class Failure(NamedTuple):
    kind: str
    text: str


@dataclass(eq=False, repr=False)
class GuestOutcome:
    """What the guest itself reports: console lines, the CPUs it brought up, what went wrong."""

    console: list[tuple[int, str]] = field(default_factory=list)
    online: set[int] = field(default_factory=lambda: {0})
    failures: list[Failure] = field(default_factory=list)
    boots: int = 0
    wanted: int = 0  # how many CPUs the guest means to have online (0: all of them)

    def fail(self, kind: str, text: str) -> None:
        self.failures.append(Failure(kind, text))


def rtas(token: int, nargs: int, nret: int, *args: int) -> Hcall:
    return Hcall(KVMPPC_H_RTAS, (), rtas=RtasArgs(token, nargs, nret, list(args)))


def console(text: str) -> Hcall:
    return Hcall(H_PUT_TERM_CHAR, (0,), text=text)


def _called_in(mem: GuestMemory, n: int) -> Callable[[], bool]:
    return lambda: n in mem.callin_map


def _acked(mem: GuestMemory, n: int) -> Callable[[], bool]:
    return lambda: mem.ipi_acked.get(n, 0) >= mem.ipi_sent.get(n, 0)


def query_cpu_stopped_state(n: int) -> Generator[GuestOp, Any, tuple[int, int]]:
    """pseries smp_query_cpu_stopped: (RTAS status, state)."""
    query = rtas(RTAS_QUERY_CPU_STOPPED_STATE, 1, 2, n)
    yield query
    assert query.rtas is not None
    status, state = query.rtas.rets
    if status != 0:
        yield console(f"RTAS query-cpu-stopped-state failed: {status}")
    return status, state


def cpu_up(machine: Machine, n: int, spin_ns: int, hw: int | None = None) -> Generator[GuestOp, Any, bool]:
    """kernel/smp.c __cpu_up with pseries smp_startup_cpu / smp_pSeries_kick_cpu: True if logical CPU n
    (hardware id `hw`, by default n) came up."""
    mem, out = machine.guest_memory, machine.outcome
    hw = n if hw is None else hw
    name = f"CPU {n}" if hw == n else f"CPU {n} (hwid {hw})"
    mem.callin_map.discard(hw)
    status, state = yield from query_cpu_stopped_state(hw)
    # smp_startup_cpu: NOT_STOPPED means "already out of firmware": start-cpu is never called.
    if not (status == 0 and state == QCSS_NOT_STOPPED):
        start = rtas(RTAS_START_CPU, 3, 1, hw, GENERIC_SECONDARY_SMP_INIT, hw)
        yield start
        assert start.rtas is not None
        if start.rtas.rets[0] != 0:
            yield console(f"start-cpu failed: {start.rtas.rets[0]}")
            yield console(f"smp: failed starting cpu {n} (rc -2)")
            out.fail(BAD_RTAS_ANSWER, f"start-cpu of {name} failed: {start.rtas.rets[0]}")
            return False
    mem.cpu_start.add(hw)  # smp_pSeries_kick_cpu: paca->cpu_start = 1
    mem.changed.broadcast()
    called_in = yield SpinUntil(_called_in(mem, hw), spin_ns, f"callin of {name}")
    if not called_in:
        yield console(f"Processor {n} is stuck.")
        out.fail(STUCK_CPU, f"Processor {n} is stuck." + ("" if hw == n else f" (hwid {hw})"))
        return False
    out.online.add(hw)
    return True


def cpu_die(machine: Machine, n: int) -> Generator[GuestOp, Any, bool]:
    """Offline CPU n: ask it to stop itself, then poll query-cpu-stopped-state as pseries_cpu_die does."""
    mem, out = machine.guest_memory, machine.outcome
    mem.offline_request.add(n)
    yield Hcall(H_IPI, (n, 0xFF))
    waited = 0
    while True:
        status, state = yield from query_cpu_stopped_state(n)
        if status == 0 and state == QCSS_STOPPED:
            out.online.discard(n)
            return True
        if status != 0:
            out.fail(BAD_RTAS_ANSWER, f"query-cpu-stopped-state for CPU {n} failed: {status}")
            return False
        waited += MS
        if waited >= CPU_DIE_WARN_NS:
            yield console(f"CPU {n} (hwid {n}) didn't die after 120 seconds")
            out.fail(BAD_RTAS_ANSWER, f"CPU {n} never reported stopped")
            return False
        yield Compute(MS, "pseries_cpu_die poll")


def ipi_check(machine: Machine) -> GuestProgram:
    """Send every online secondary an IPI and wait for each to acknowledge it (smp_call_function)."""
    mem, out = machine.guest_memory, machine.outcome
    for n in sorted(out.online - {0}):
        mem.ipi_sent[n] = mem.ipi_sent.get(n, 0) + 1
        yield Hcall(H_IPI, (n, 0xFF))
        acked = yield SpinUntil(_acked(mem, n), IPI_TIMEOUT_NS, f"IPI ack of CPU {n}")
        if not acked:
            yield console(f"smp: CPU {n} did not answer an IPI within 1 s")
            out.fail(LOST_INTERRUPTS, f"CPU {n} never took the IPI: it takes no interrupts")
            return
    yield console(f"smp: {len(out.online) - 1} CPUs answered IPIs")


def offline_online(machine: Machine) -> GuestProgram:
    """CPU hotplug in a loop: offline every secondary, sync registers (H_SET_MODE), online them again."""
    return _offline_online(machine, sorted(machine.outcome.online - {0}), "secondary CPUs")


def _smt_threads(machine: Machine) -> list[int]:
    """What `ppc64_cpu --smt=off` offlines: every thread but the first of each core."""
    return [n for n in sorted(machine.outcome.online) if n % machine.settings.threads]


def smt_off_on(machine: Machine) -> GuestProgram:
    """`ppc64_cpu --smt=off`, then `--smt=on`: the SMT threads offlined (stop-self, as for any offline),
    registers synced (H_SET_MODE), the threads onlined again."""
    return _offline_online(machine, _smt_threads(machine), "SMT threads")


def offline_kdump(machine: Machine) -> GuestProgram:
    """Offline every secondary (stop-self), stay so a while, then crash into the kdump kernel on CPU 0."""
    return _offline_kdump(machine, sorted(machine.outcome.online - {0}), "secondary CPUs")


def smt_off_kdump(machine: Machine) -> GuestProgram:
    """`ppc64_cpu --smt=off`, stay so a while, then crash into the kdump kernel."""
    return _offline_kdump(machine, _smt_threads(machine), "SMT threads")


def _offline_kdump(machine: Machine, cpus: list[int], what: str) -> GuestProgram:
    if (yield from _offline(machine, cpus, what, 1)):
        machine.outcome.wanted = len(machine.outcome.online)  # they stay offline
        yield from kdump(machine)


def _offline(machine: Machine, cpus: list[int], what: str, loop: int) -> Generator[GuestOp, Any, bool]:
    """Offline `cpus` with stop-self, then keep them offline for `offline_hold_ns` (the monitor may act)."""
    for n in cpus:
        if not (yield from cpu_die(machine, n)):
            return False
    yield console(f"loop {loop}: {len(cpus)} {what} offline")
    if machine.settings.offline_hold_ns:
        yield Compute(machine.settings.offline_hold_ns, f"{what} offline")
        yield from wait_for_monitor(machine)
    return True


def wait_for_monitor(machine: Machine) -> Generator[GuestOp, Any, None]:
    """Poll until the monitor has typed the command whose pattern the console shows: what the guest of a
    real run does (`vcpu-sched real`'s /init, real/guest.py `place_waits`) where a scenario's command must
    come before the guest goes on - after a kernel line, at the start of the workload, and in a hold."""
    while machine.monitor_behind():
        yield Compute(MS, "wait for the monitor")


def _online(machine: Machine, cpus: list[int], prepare: str) -> Generator[GuestOp, Any, bool]:
    """Bring `cpus` up one after the other (cpu_up at run time); False at the first that fails."""
    for n in cpus:
        yield Compute(MS, prepare)
        if not (yield from cpu_up(machine, n, RUNTIME_SPIN_NS)):
            return False
    return True


def _offline_online(machine: Machine, secondaries: list[int], what: str) -> GuestProgram:
    out = machine.outcome
    for loop in range(1, machine.settings.loops + 1):
        if not (yield from _offline(machine, secondaries, what, loop)):
            return
        # Something that syncs every CPU's registers while the secondaries are RTAS-stopped.
        yield Hcall(H_SET_MODE, (3, H_SET_MODE_RESOURCE_ADDR_TRANS_MODE, 0, 0))
        if not (yield from _online(machine, secondaries, "cpu_up prepare")):
            return
        yield console(f"loop {loop}: {len(out.online)} CPUs online")


def kdump(machine: Machine) -> GuestProgram:
    """`echo c > /proc/sysrq-trigger` on one CPU (`crash_cpu`, else drawn from the seed): the kernel
    panics there and kexecs into the kdump kernel on that same CPU. On CPU 0 the crash runs here;
    elsewhere CPU 0 passes the request with an IPI and idles."""
    mem, out = machine.guest_memory, machine.outcome
    crash = machine.settings.crash_cpu
    if crash < 0 or crash not in out.online:
        crash = machine.rng.choice(sorted(out.online))
    if crash == 0:
        yield from machine.crash_kexec(machine, 0)
        return
    mem.crash_request = crash
    yield Hcall(H_IPI, (crash, 0xFF))
    while True:  # until the crashing CPU's NMI IPI reaches this one
        yield Hcall(H_CEDE)


def online_rest(machine: Machine) -> GuestProgram:
    """Online every CPU the boot left RTAS-stopped (`echo 1 > /sys/devices/system/cpu/cpuN/online`)."""
    out = machine.outcome
    out.wanted = machine.settings.smp
    if (yield from _online(machine, [n for n in range(1, machine.settings.smp) if n not in out.online],
                           "cpu_up prepare")):
        yield console(f"smp: {len(out.online)} CPUs online")


def hotplug_online(machine: Machine) -> GuestProgram:
    """Wait for a DLPAR CPU add (`device_add` of a core), then online its CPUs as drmgr does (start-cpu
    after query-cpu-stopped-state) - the hotplugged CPUs stay RTAS-stopped until then."""
    mem, out = machine.guest_memory, machine.outcome
    yield console("dlpar: waiting for a CPU to be added")
    out.wanted = len(out.online) + machine.settings.threads
    added = yield SpinUntil(lambda: DLPAR_WORD in mem.words, HOTPLUG_WAIT_NS, "DLPAR CPU add")
    if not added:
        yield console("dlpar: no CPU was added")
        return
    added = yield from dlpar_cpu_add(machine)
    if (yield from _online(machine, added, "dlpar_online_cpu")):
        yield console(f"smp: {len(out.online)} CPUs online after the hotplug")


def dlpar_cpu_add(machine: Machine, first: int | None = None) -> Generator[GuestOp, Any, list[int]]:
    """platforms/pseries/hotplug-cpu.c dlpar_cpu_add, first half: the core's node is attached to the
    live device tree (drivers/of/dynamic.c `__of_attach_node` links it as /cpus' first child); its
    threads are not started yet. A kdump kernel loaded after this does not keep that order: its loader
    sorts or reverses the nodes (kdump.kdump_fdt_cpus), and the new core comes last either way."""
    mem = machine.guest_memory
    if first is None:
        first = mem.words[DLPAR_WORD]
    # The work between the event and the new node: the hotplug interrupt, RTAS check-exception, the DLPAR
    # work queue, configure-connector. Its length is a guess; what matters is that the guest cannot act on
    # the event while device_add is still plugging the core (a window of microseconds).
    yield Compute(DLPAR_ADD_NS, "dlpar_cpu_add: the event, configure-connector")
    added = list(range(first, first + machine.settings.threads))
    mem.dt_cpus[:0] = added
    yield console(f"pseries-hotplug-cpu: CPU {first} added")
    return added


def hotplug_kdump(machine: Machine) -> GuestProgram:
    """A DLPAR CPU add, then a crash (sysrq-trigger on `crash_cpu`, else drawn from the seed) before the
    guest has started the added CPUs: the kdump kernel gets a device tree that has them."""
    mem = machine.guest_memory
    yield console("dlpar: waiting for a CPU to be added")
    if not (yield SpinUntil(lambda: DLPAR_WORD in mem.words, HOTPLUG_WAIT_NS, "DLPAR CPU add")):
        yield console("dlpar: no CPU was added")
        return
    yield from dlpar_cpu_add(machine)
    yield from kdump(machine)


def idle(machine: Machine) -> GuestProgram:
    """The guest idles - a stand-in for a guest that no longer answers - until the hypervisor's NMI
    (`nmi` on the monitor, QMP inject-nmi, `virsh inject-nmi`) sends it into its kdump kernel."""
    yield console("idle: waiting for an NMI")
    while True:
        yield Hcall(H_CEDE)


def watchdog_dump(machine: Machine) -> GuestProgram:
    """Linux's PAPR watchdog driver (drivers/watchdog/pseries-wdt.c, Linux 6.12) loaded with `action=2`, its
    dump-and-restart action (PSERIES_WDTF_ACTION_DUMP_RESTART; the driver's default is a hard restart), and
    opened by a userspace feeder (watchdog(8), systemd's RuntimeWatchdogSec=): `pseries_wdt_start` is
    H_WATCHDOG with the start operation and the action, watchdog 1, the driver's default 60 s; each ping
    starts it again. Then the guest stops feeding it - a stand-in, like `idle`, for a guest that no
    longer answers - and idles until QEMU's timer expires and its action sends it into its kdump kernel."""
    yield Hcall(H_WATCHDOG, (PSERIES_WDTF_OP_START | PSERIES_WDTF_ACTION_DUMP_RESTART, 1,
                             PSERIES_WDT_TIMEOUT_S * 1000))
    yield console(f"watchdog: pseries-wdt started (dump and restart, {PSERIES_WDT_TIMEOUT_S} s); nobody feeds it")
    while True:
        yield Hcall(H_CEDE)


def sysreset_kdump(machine: Machine) -> GuestProgram:
    """A system reset sent to one CPU the kernel left RTAS-stopped - H_SIGNAL_SYS_RESET naming it, the
    hcall's unicast branch - then a crash into the kdump kernel (sysrq, as `kdump`). Linux's
    `smp_send_nmi_ipi(cpu, ...)` makes that call on pseries (platforms/pseries/smp.c
    `pseries_cause_nmi_ipi`: the CPU's hardware id), but Linux 6.12 names only CPUs it has online (the
    hard-lockup detector's `wd_lockup_ipi`, kernel/watchdog.c): this stands for a guest that names a stopped
    one (another kernel, a test module). The sender waits smp_send_nmi_ipi's 1 s for the target to take
    it, which a CPU without a paca never does. With no stopped CPU the crash comes alone."""
    out = machine.outcome
    stopped = [n for n in range(len(machine.cpus)) if n not in out.online]
    if stopped:
        yield Hcall(H_SIGNAL_SYS_RESET, (stopped[0],))
        yield Compute(NMI_IPI_DELAY_NS, "smp_send_nmi_ipi: wait for the target to take the NMI")
    yield from kdump(machine)


def busy_loop(machine: Machine) -> GuestProgram:
    """A task that spins in guest code on the boot CPU (`while (1);` in a kernel thread, QEMU issue 650's
    reproducer) for BUSY_LOOP_NS: no hcall, no exception, nothing that leaves the accelerator."""
    yield console("busy-loop: CPU 0 spins in guest code")
    yield Compute(BUSY_LOOP_NS, "while (1);")
    yield console("busy-loop: done")


def no_workload(machine: Machine) -> GuestProgram:
    """The boot is the whole scenario."""
    yield from ()


WORKLOADS: dict[str, Callable[[Machine], GuestProgram]] = {
    "none": no_workload,
    "ipi-check": ipi_check,
    "offline-online": offline_online,
    "smt-off-on": smt_off_on,
    "offline-kdump": offline_kdump,
    "smt-off-kdump": smt_off_kdump,
    "kdump": kdump,
    "online-rest": online_rest,
    "busy-loop": busy_loop,
    "hotplug-online": hotplug_online,
    "hotplug-kdump": hotplug_kdump,
    "idle": idle,
    "reboot": no_workload,  # the reboots come between the boots (boot_program)
    "watchdog-dump": watchdog_dump,
    "sysreset-kdump": sysreset_kdump,
}


def boot_cpu_program(machine: Machine) -> GuestProgram:
    """SLOF/prom_init and CAS, early_setup's H_SET_MODE calls (configure_exceptions) and the radix process
    table (early_init_mmu), pseries SMP bring-up, then the scenario's workload."""
    rng = machine.rng
    out = machine.outcome
    mem = machine.guest_memory
    mem.dt_cpus[:] = range(len(machine.cpus))  # QEMU's device tree: every CPU plugged at the reset
    yield Compute(40 * MS, "SLOF")
    yield console("Preparing to boot Linux version 6.12.0 (vcpu_sched guest)")
    yield Compute(5 * MS, "prom_init")
    # Linux lists its logical PVRs (`cas_pvrs = "raw"`: a guest that lists none, so no mode switch at CAS).
    yield Hcall(KVMPPC_H_CAS, LINUX_CAS_PVRS if machine.settings.cas_pvrs == "logical" else ())
    yield console("Calling ibm,client-architecture-support... done")
    yield console("instantiating rtas at 0x000000002fff0000... done")
    yield console("prom_hold_cpus: skipped")
    yield console("Quiescing Open Firmware ...")
    yield console("Booting Linux via __start() @ 0x0000000000440000 ...")
    yield Compute(2 * MS, "early_setup")
    mem.sprg_paca.add(0)
    # configure_exceptions: pseries_enable_reloc_on_exc, then pseries_little_endian_exceptions.
    yield Hcall(H_SET_MODE, (3, H_SET_MODE_RESOURCE_ADDR_TRANS_MODE, 0, 0))
    if machine.settings.guest_endian == "le":  # a big-endian kernel keeps the big-endian exceptions
        yield Hcall(H_SET_MODE, (1, H_SET_MODE_RESOURCE_LE, 0, 0))
    if machine.settings.radix and machine.cpus[0].env.model.mmu_v3:
        # early_init_mmu -> radix: pseries_lpar_register_process_table (PROC_TABLE_NEW|RADIX|GTSE).
        yield Hcall(H_REGISTER_PROC_TBL, (PROC_TBL_MODIFY | PROC_TBL_REGISTER | PROC_TBL_RADIX | PROC_TBL_GTSE,
                                          0, 0, 0))
    # setup_arch -> pSeries_setup_arch -> fwnmi_init
    yield rtas(RTAS_IBM_NMI_REGISTER, 2, 1, SYSTEM_RESET_FWNMI, MACHINE_CHECK_FWNMI)
    yield StoreDecr(0x7FFFFFFF)  # time_init programs the boot CPU's DEC
    yield Compute(rng.randint(1_200, 1_800) * MS, "start_kernel up to smp_init")
    yield console("smp: Bringing up secondary CPUs ...")
    out.online = {0}
    out.wanted = machine.settings.boot_cpus or len(machine.cpus)  # hot-added cores too, after a reset
    for n in range(1, out.wanted):  # maxcpus=N: the rest stay RTAS-stopped
        yield Compute(rng.randint(4, 23) * MS // 4, "cpu_up prepare, interrupt controller set-up")
        if (yield from cpu_up(machine, n, BOOT_SPIN_NS)):
            yield Compute(rng.randint(4, 23) * MS * 3 // 4, "give_timebase, wait for cpu_online")
    count = len(out.online)
    yield console(f"smp: Brought up 1 node, {count} CPU{'s' if count != 1 else ''}")
    out.boots += 1
    if out.boots >= machine.settings.boots:
        yield Compute(WORKLOAD_DELAY_NS, "the rest of the boot")
        yield from wait_for_monitor(machine)
        yield from WORKLOADS[machine.settings.workload](machine)
        machine.guest_finished()
    elif machine.settings.workload == "reboot":
        yield Compute(WORKLOAD_DELAY_NS, "the rest of the boot")
        yield from guest_reboot()
    yield from boot_cpu_idle(machine)


def guest_reboot() -> GuestProgram:
    """`reboot`: kernel/reboot.c kernel_restart -> machine_restart -> arch/powerpc/kernel/rtas.c rtas_restart,
    which calls RTAS system-reboot and spins (for (;;)) until the machine resets it. (Linux stops the other
    CPUs first, smp_send_stop; not modelled: they idle.)"""
    yield console("reboot: Restarting system")
    yield rtas(RTAS_SYSTEM_REBOOT, 0, 1)
    while True:
        yield Compute(10 * MS, "rtas_restart: for (;;)")


def boot_cpu_idle(machine: Machine) -> GuestProgram:
    """The boot CPU's idle task: H_CEDE, and on each wake-up the interrupts its event queue holds - the
    event sources' (arch/powerpc/platforms/pseries/ras.c), each handled, then EOI'd.

    Departure: the guest takes the event sources' interrupts only here (after the workload, or between
    boots), not while a workload runs."""
    queue = machine.guest_memory.irq_queue
    while True:
        yield Hcall(H_CEDE)
        while queue.get(0):
            source = queue[0].pop(0)
            if source == RTAS_EPOW_WARNING:
                yield from ras_epow_interrupt(machine)
            elif source == RTAS_HOTPLUG_EVENTS:
                yield from ras_hotplug_interrupt(machine)


def check_exception(mask: int) -> Generator[GuestOp, Any, tuple[int, dict[str, int]]]:
    """An event source's handler asks RTAS check-exception for the event of its class: (status, the log)."""
    call = rtas(RTAS_CHECK_EXCEPTION, 6, 1, RTAS_VECTOR_EXTERNAL_INTERRUPT, EVENT_SOURCE_IRQS[mask], mask, 0, 0,
                RTAS_ERROR_LOG_MAX)
    yield call
    assert call.rtas is not None
    yield Hcall(H_EOI, (0xFF000000 | EVENT_SOURCE_IRQS[mask],))
    return call.rtas.rets[0], call.rtas.log


def ras_epow_interrupt(machine: Machine) -> GuestProgram:
    """arch/powerpc/platforms/pseries/ras.c ras_epow_interrupt -> rtas_parse_epow_errlog: an EPOW event
    asking for a normal system shutdown is `handle_system_shutdown`'s EPOW_SHUTDOWN_NORMAL case,
    "Power off requested" and orderly_poweroff(true); other actions are not modelled (their sensor
    read, rtas_get_sensor_fast, neither: QEMU answers it only for DR entity sensors)."""
    status, log = yield from check_exception(RTAS_EPOW_WARNING)
    if status != 0 or (log.get("sensor_value", 0) & 0xF) != RTAS_LOG_V6_EPOW_ACTION_SYSTEM_SHUTDOWN:
        return
    if log.get("event_modifier") == RTAS_LOG_V6_EPOW_MODIFIER_NORMAL:
        yield console("Power off requested")
        yield from orderly_poweroff(machine)


def orderly_poweroff(machine: Machine) -> GuestProgram:
    """kernel/reboot.c orderly_poweroff: userspace shuts down, then kernel_power_off ("reboot: Power
    down") -> machine_power_off -> platforms/pseries/setup.c pseries_power_off: RTAS power-off with
    arguments -1, -1; it does not return on QEMU, and if it did the kernel would spin."""
    yield Compute(POWEROFF_USERSPACE_NS, "userspace shutdown (/sbin/poweroff)")
    yield console("reboot: Power down")
    call = rtas(RTAS_POWER_OFF, 2, 1, 0xFFFFFFFF, 0xFFFFFFFF)
    yield call
    assert call.rtas is not None
    yield console(f"RTAS power-off returned {call.rtas.rets[0]}")
    while True:
        yield Compute(MS, "for (;;);")


def ras_hotplug_interrupt(machine: Machine) -> GuestProgram:
    """arch/powerpc/platforms/pseries/ras.c ras_hotplug_interrupt -> queue_hotplug_event ->
    dlpar.c handle_dlpar_errorlog -> hotplug-cpu.c dlpar_cpu: a CPU add by DRC index attaches the core
    (dlpar_cpu_add; one the device tree already has is refused, "already exists") and onlines its
    threads (dlpar_online_cpu)."""
    status, log = yield from check_exception(RTAS_HOTPLUG_EVENTS)
    if (status != 0 or log.get("resource") != PSERIES_HP_ELOG_RESOURCE_CPU
            or log.get("action") != PSERIES_HP_ELOG_ACTION_ADD):
        return
    first = log["index"]
    if first in machine.guest_memory.dt_cpus:
        return
    out = machine.outcome
    added = yield from dlpar_cpu_add(machine, first)
    out.wanted = len(out.online) + len(added)
    if (yield from _online(machine, added, "dlpar_online_cpu")):
        yield console(f"smp: {len(out.online)} CPUs online after the hotplug")


def secondary_program(machine: Machine, cpu_index: int) -> GuestProgram:
    """generic_secondary_smp_init -> start_secondary: call in, then idle in H_CEDE, answering IPIs
    (acknowledge; or, when asked to go offline, RTAS stop-self, which never returns)."""
    rng = machine.rng
    mem = machine.guest_memory
    first = cpu_index == 1 and machine.outcome.boots == 0
    mem.sprg_paca.add(cpu_index)  # generic_secondary_common_init: SET_PACA
    yield Compute(8 * MS if first else rng.randint(200, 400) * 1000, "secondary start-up")
    yield Hcall(H_REGISTER_VPA, (1, cpu_index, 0))
    yield StoreDecr(0x7FFFFFFF)
    mem.callin_map.add(cpu_index)
    mem.changed.broadcast()
    while True:
        yield Hcall(H_CEDE)
        if mem.ipi_acked.get(cpu_index, 0) < mem.ipi_sent.get(cpu_index, 0) or cpu_index in mem.offline_request:
            yield Hcall(H_EOI, (0xFF000000,))
        if mem.ipi_acked.get(cpu_index, 0) < mem.ipi_sent.get(cpu_index, 0):
            mem.ipi_acked[cpu_index] = mem.ipi_sent[cpu_index]
            mem.changed.broadcast()
        if mem.crash_request == cpu_index:
            yield from machine.crash_kexec(machine, cpu_index)
            machine.guest_finished()
            while True:
                yield Hcall(H_CEDE)
        if cpu_index in mem.offline_request:
            mem.offline_request.discard(cpu_index)
            yield rtas(RTAS_STOP_SELF, 0, 0)  # pseries_cpu_offline_self
            yield console("Alas, I survived.")
            machine.outcome.fail(BAD_RTAS_ANSWER, f"stop-self returned on CPU {cpu_index}")


class GuestRunner:
    """The guest's instruction stream on one vCPU: the current operation and how far it has got.

    Finishing an operation only records its result; the program is resumed (and its next operation
    fetched) when the CPU next executes. So guest code between two operations runs at the moment the
    CPU really runs it, not when QEMU finished the previous operation (a cede that halts the CPU, say).
    """

    def __init__(self, program: GuestProgram, entry_gen: int) -> None:
        self.entry_gen = entry_gen
        self._program = program
        self._op: GuestOp | None = None
        self._resume: tuple[Any] | None = (None,)
        self._first = True
        self.compute_left = 0
        self.spin_deadline: int | None = None

    @property
    def op(self) -> GuestOp | None:
        if self._resume is not None:
            (value,) = self._resume
            self._resume = None
            try:
                self._op = next(self._program) if self._first else self._program.send(value)
            except StopIteration:
                self._op = None
            self._first = False
            self.compute_left = self._op.ns if isinstance(self._op, Compute) else 0
            self.spin_deadline = None
        return self._op

    def advance(self, value: Any = None) -> None:
        """Finish the current operation, handing the program `value` when it next runs."""
        self._resume = (value,)
