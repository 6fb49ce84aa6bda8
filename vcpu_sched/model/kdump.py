"""A crash into a kdump kernel: the old kernel stops its other CPUs, kexecs, and the kdump kernel boots.

Mirrors Linux 6.12's arch/powerpc/kexec/crash.c (`crash_kexec_prepare_cpus`, `crash_ipi_callback`,
`crash_kexec_secondary`, `is_via_system_reset`), kernel/traps.c `system_reset_exception` with pseries
`pseries_system_reset_exception` -> `smp_handle_nmi_ipi`, platforms/pseries/smp.c
`pseries_cause_nmi_ipi` (H_SIGNAL_SYS_RESET), kernel/misc_64.S `kexec_wait` and head_64.S's hold loop
(`__secondary_hold`, `generic_secondary_smp_init` waiting for `paca->cpu_start`), and the kdump kernel's
own boot: kernel/prom.c numbers CPUs in device-tree order, `smp_init` starts up to `maxcpus=`. The
device tree the kdump kernel gets is the loader's (`kdump_fdt_cpus`): kexec-tools' fs2dt for kexec_load,
the kernel's own update_cpus_node for kexec_file_load.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .guest import (
    BOOT_SPIN_NS,
    BUSY_LOOP_NS,
    MACHINE_CHECK_FWNMI,
    MS,
    SYSTEM_RESET_FWNMI,
    Compute,
    GuestProgram,
    Hcall,
    SpinUntil,
    console,
    cpu_up,
    rtas,
    secondary_program,
)
from .spapr_abi import (
    H_CEDE,
    H_SET_MODE,
    H_SET_MODE_RESOURCE_ADDR_TRANS_MODE,
    H_SET_MODE_RESOURCE_LE,
    H_SIGNAL_SYS_RESET,
    H_SIGNAL_SYS_RESET_ALLBUTSELF,
    RTAS_IBM_NMI_REGISTER,
)

if TYPE_CHECKING:
    from .machine import Machine

NMI_IPI_WAIT_NS = 1_000_000_000  # crash_send_ipi: smp_send_nmi_ipi's delay_us (1 s)
CRASH_IPI_TIMEOUT_NS = 10_000_000_000  # crash_kexec_prepare_cpus: IPI_TIMEOUT (10 s)
PRIMARY_TIMEOUT_NS = 500_000_000  # crash_kexec_prepare_cpus after a system reset: mdelay(PRIMARY_TIMEOUT)
HOLD_SPIN_NS = 3_600_000_000_000  # a hold loop with no timeout (kexec_wait, the secondaries' cpu_start)


def kdump_fdt_cpus(live: list[int], threads: int, syscall: str) -> tuple[int, ...]:
    """The CPUs of the kdump kernel's device tree in its order, from the old kernel's live /cpus (`live`:
    hardware thread ids, node by node). A node is a core: QEMU's hw/ppc/spapr.c `spapr_dt_one_cpu` (at
    77251365ec) writes one per core, its unit address the vCPU id of thread 0, its threads listed in
    ibm,ppc-interrupt-server#s, and Linux numbers a node's threads together (setup-common.c `assign_threads`).

    - kexec_load: kexec-tools kexec/fs2dt.c `putnode` (at 29898e1, unchanged since bd2cfb7, 2014) reads
      /proc/device-tree with scandir and `comparefunc`, which orders nodes of one base name by the length
      of the name, then by strcmp: by unit address. A hotplugged core comes where its address puts it.
    - kexec_file_load: Linux arch/powerpc/kexec/core_64.c `update_cpus_node` (torvalds/linux 0857beff9c;
      called by file_load_64.c `setup_new_fdt_ppc64` at every load, and by crash.c `update_crash_fdt` on
      crash hotplug) deletes /cpus and re-adds each cpu node in live order with libfdt `fdt_add_subnode`,
      which places a new node right after its parent's properties (fdt_rw.c `fdt_add_subnode_namelen`),
      ahead of the ones added before it: the live order reversed."""
    cores: dict[int, list[int]] = {}
    for hw in live:
        cores.setdefault(hw // threads, []).append(hw)
    nodes = sorted(cores.values()) if syscall == "kexec_load" else list(reversed(cores.values()))
    return tuple(hw for node in nodes for hw in node)


@dataclass(eq=False, repr=False)
class Crash:
    """What a crashing kernel shares with its other CPUs (arch/powerpc/kexec/crash.c, misc_64.S)."""

    cpu: int  # crashing_cpu
    dt_cpus: tuple[int, ...]  # the CPUs of the device tree the kdump kernel was loaded with (kdump_fdt_cpus)
    nmi_pending: set[int]  # nmi_ipi_pending_mask
    via_system_reset: bool = False  # is_via_system_reset: the others were reset too, no IPI is sent
    cpus_in_crash: int = 0
    kexec_flag: bool = False  # the other CPUs may leave kexec_wait for the new kernel's 0x60

    def key(self, index: Callable[[int], int]) -> tuple[Any, ...]:
        return (index(self.cpu), tuple(map(index, self.dt_cpus)), sorted(map(index, self.nmi_pending)),
                self.via_system_reset, self.cpus_in_crash, self.kexec_flag)


def crash_kexec(machine: Machine, cpu_index: int, via_system_reset: bool = False) -> GuestProgram:
    """The panic on `cpu_index`: default_machine_crash_shutdown -> crash_kexec_prepare_cpus sends every
    other CPU an NMI IPI (pseries_cause_nmi_ipi: H_SIGNAL_SYS_RESET to all but itself) - unless the crash
    came from a system reset, which reached the others too: then it only waits PRIMARY_TIMEOUT - waits
    for the online CPUs to enter crash_ipi_callback, then kexecs into the kdump kernel here, releasing
    the others from kexec_wait."""
    mem, out = machine.guest_memory, machine.outcome
    if not via_system_reset:
        yield console("sysrq: Trigger a crash")
        yield console(f"Kernel panic - not syncing: sysrq triggered crash (CPU: {cpu_index})")
    ncpus = len(out.online - {cpu_index})
    settings = machine.settings
    dt = kdump_fdt_cpus(mem.dt_cpus, settings.threads, settings.kexec_syscall)
    crash = mem.crash = Crash(cpu_index, dt, set(), via_system_reset)
    yield console("Sending IPI to other CPUs")
    if via_system_reset:
        yield Compute(PRIMARY_TIMEOUT_NS, "mdelay(PRIMARY_TIMEOUT)")
    else:
        crash.nmi_pending |= out.online - {cpu_index}
        yield Hcall(H_SIGNAL_SYS_RESET, (H_SIGNAL_SYS_RESET_ALLBUTSELF,))
        yield SpinUntil(lambda: not crash.nmi_pending, NMI_IPI_WAIT_NS, "nmi_ipi_pending_mask")
    responded = yield SpinUntil(lambda: crash.cpus_in_crash >= ncpus, CRASH_IPI_TIMEOUT_NS, "cpus_in_crash")
    if responded:
        yield console("IPI complete")
    else:
        yield console(f"ERROR: {ncpus - crash.cpus_in_crash} cpu(s) not responding")
    yield console("kexec: Starting switchover sequence.")
    yield Compute(30 * MS, "kexec_sequence: copy the kdump kernel's first 0x100 bytes to 0")
    mem.cpu_start.clear()  # the new kernel's pacas and callin map
    mem.callin_map.clear()
    crash.kexec_flag = True
    mem.changed.broadcast()
    yield from kdump_kernel(machine, cpu_index)


def system_reset_program(machine: Machine, cpu_index: int) -> GuestProgram:
    """The kernel's FWNMI system-reset handler (system_reset_exception -> pseries_system_reset_exception
    -> smp_handle_nmi_ipi): a CPU with an NMI IPI pending runs its function, crash_ipi_callback; any
    other calls crash_kexec: the first CPU there crashes (the kdump path of a hypervisor NMI); the others,
    whose kexec lock is taken, go through crash_kexec_secondary to crash_ipi_callback. The handler's first step
    loads the paca from SPRG_PACA, which a CPU holds only once the kernel has started it. A CPU that
    QEMU resets without the kernel ever starting it (never started, hotplugged and not yet onlined) runs
    on with SPRG_PACA = 0 (r13 = 0) in real mode: exception-64s.h's GEN_INT_ENTRY saves registers at
    paca offsets from physical 0 and LOAD_HANDLER jumps through the kernel base read from 0x18, so it
    takes interrupt after interrupt, each saving r9-r13, CFAR, PPR and CTR into `exgen` at 0x80-0xcf:
    the exit path of head_64.S `__secondary_hold`, which kexec_sequence copies to 0x60 from the kdump
    kernel's first 0x100 bytes. The spin itself (before 0xb8) survives, so CPUs kexec_wait releases
    there spin on and never reach generic_secondary_smp_init (`kdump_smp_init`: "Processor N is stuck.");
    QEMU's query-cpu-stopped-state answers NOT_STOPPED for them. (Linux 6.12; confirmed on a real QEMU
    11.1.3 and 7.2: after inject-nmi the kdump kernel finds the crashed kernel's other CPU stuck.)"""
    mem = machine.guest_memory
    if cpu_index not in mem.sprg_paca:
        mem.hold_loop_overwritten = True
        mem.changed.broadcast()
        while True:
            yield Compute(BUSY_LOOP_NS, "real-mode interrupts with r13 = 0, saving over low memory")
    crash = mem.crash
    if crash is None:  # a reset from the hypervisor (inject-nmi): crash_kexec, won by the first CPU here
        yield from crash_kexec(machine, cpu_index, via_system_reset=True)
        machine.guest_finished()
        while True:
            yield Hcall(H_CEDE)
    crash.nmi_pending.discard(cpu_index)
    crash.cpus_in_crash += 1
    mem.changed.broadcast()
    # crash_ipi_callback waits for time_to_dump, then kexec_smp_wait; the crashing CPU releases it at kexec.
    while not (yield SpinUntil(lambda: crash.kexec_flag, HOLD_SPIN_NS, "kexec_wait")):
        pass
    # The new kernel's __secondary_hold, then generic_secondary_smp_init: a CPU whose hardware id is not
    # in the kdump kernel's device tree finds no paca and goes back to kexec_wait. A CPU reset without a
    # paca has overwritten the hold loop's way out: it spins there for good.
    if mem.hold_loop_overwritten:
        while True:
            yield SpinUntil(lambda: False, HOLD_SPIN_NS, "__secondary_hold, its exit path overwritten")
    if cpu_index not in crash.dt_cpus:
        while True:
            yield SpinUntil(lambda: False, HOLD_SPIN_NS, "kexec_wait")
    while not (yield SpinUntil(lambda: cpu_index in mem.cpu_start, HOLD_SPIN_NS, "generic_secondary_smp_init")):
        pass
    yield from secondary_program(machine, cpu_index)


def kdump_kernel(machine: Machine, cpu_index: int) -> GuestProgram:
    """The kdump kernel's early boot on the crashing CPU up to its FWNMI registration (the lines
    aef92d87c5 shows before the hang), its SMP bring-up (`maxcpus=` `kdump_cpus`: only itself by
    default), then the rest of its boot."""
    # early_setup -> configure_exceptions, as in every kernel: reloc-on exceptions (AIL=3), LE exceptions.
    yield Hcall(H_SET_MODE, (3, H_SET_MODE_RESOURCE_ADDR_TRANS_MODE, 0, 0))
    if machine.settings.guest_endian == "le":
        yield Hcall(H_SET_MODE, (1, H_SET_MODE_RESOURCE_LE, 0, 0))
    yield console("numa:   NODE_DATA [mem 0x47f33c80-0x47f3ffff]")
    yield rtas(RTAS_IBM_NMI_REGISTER, 2, 1, SYSTEM_RESET_FWNMI, MACHINE_CHECK_FWNMI)  # pseries fwnmi_init
    yield Compute(50 * MS, "the rest of the kdump kernel's boot up to smp_init")
    yield from kdump_smp_init(machine, cpu_index)
    yield console(f"kdump: kernel booted on CPU {cpu_index}, saving vmcore")


def kdump_smp_init(machine: Machine, cpu_index: int) -> GuestProgram:
    """smp_init in the kdump kernel: its logical CPU numbers follow the device tree it was given
    (`kdump_fdt_cpus`): kernel/prom.c `early_init_dt_scan_cpus` makes the booting CPU the logical number of
    its place in the tree (`boot_cpuid = found`), and setup-common.c `smp_setup_cpu_maps` numbers the
    nodes in tree order. The boot core is renumbered to 0 only when its place is at or past nr_cpu_ids
    (`boot_core_hwid`, 0875f1ceba97, v6.8), which `maxcpus=` does not lower (only nr_cpus= would): not
    here. kernel/cpu.c `cpuhp_bringup_mask(cpu_present_mask, setup_max_cpus)` then walks the first
    `maxcpus=` (`kdump_cpus`) of them in that order, the booting one counted where it stands: a kdump
    kernel with maxcpus=1 booted on logical CPU 1 still brings up CPU 0 (seen on a real QEMU, whose kit
    loads with kexec_load: "Processor 0 is stuck." from a maxcpus=1 kdump kernel on CPU 1)."""
    mem, out = machine.guest_memory, machine.outcome
    dt = list(mem.crash.dt_cpus) if mem.crash is not None else [cpu_index]
    out.online = {cpu_index}
    first = dt[:machine.settings.kdump_cpus]
    out.wanted = len(set(first) | {cpu_index})
    if out.wanted == 1:
        return
    yield console("smp: Bringing up secondary CPUs ...")
    for n, hw in enumerate(first):
        if hw != cpu_index:
            yield Compute(5 * MS, "cpu_up prepare, interrupt controller set-up")
            yield from cpu_up(machine, n, BOOT_SPIN_NS, hw)
    count = len(out.online)
    yield console(f"smp: Brought up 1 node, {count} CPU{'s' if count != 1 else ''}")
