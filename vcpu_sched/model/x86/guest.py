"""The x86 guest: a Linux-like boot with Hyper-V's VMBus driver, which enables every CPU's SynIC, and CPU
hot-add through ACPI.

After Linux 6.12: arch/x86/kernel/smpboot.c (`do_boot_cpu`: INIT + SIPI to the AP's trampoline, then wait
for its call-in), drivers/hv/hv.c `hv_synic_enable_regs` (SIMP, SIEFP, the SINTs, then SCONTROL - three
writes that reach QEMU), which drivers/hv/vmbus_drv.c registers as a CPU hotplug state, so it runs on
every online CPU at the driver's start and on each CPU brought online later, on that CPU. The VMBus is
QEMU's `-device vmbus-bridge` (since 5.0). e533f45d7d's 2019 reports came from Windows guests, which
enable each processor's SynIC as it starts too. Departures: the boot CPU polls guest memory for the ACPI
CPU-hotplug event instead of taking its SCI; `online` of a hot-added CPU (udev's `echo 1 > .../online`)
follows 1-3 ms after the event, a figure of ours.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ...verdicts import STUCK_CPU
from ..guest import Compute, GuestProgram, SpinUntil
from .cpu import (
    HV_SIEFP_ENABLE,
    HV_SIMP_ENABLE,
    HV_SYNIC_ENABLE,
    HV_X64_MSR_SCONTROL,
    HV_X64_MSR_SIEFP,
    HV_X64_MSR_SIMP,
)
from .kvm import Hlt, Ipi, Outb, Wrmsr

if TYPE_CHECKING:
    from ..machine import Machine

RESET_VECTOR = 0xFFFFFFF0
TRAMPOLINE_VECTOR = 0x9A  # the SIPI vector: the real-mode trampoline at 0x9a000
MS = 1_000_000
US = 1_000
CALLIN_TIMEOUT_NS = 10_000_000_000  # do_boot_cpu waits 10 s for the AP's call-in
HOTPLUG_WAIT_NS = 60_000_000_000
HOTPLUG_WORD = "acpi_cpu_hotplug"  # the CPUs QEMU's ACPI CPU hotplug interface reports inserted
HV_X64_MSR_SINT2 = 0x40000092  # VMBUS_MESSAGE_SINT: the kernel handles it, QEMU does not see it
PAGE = 0x1000


def _word(machine: Machine, name: str) -> Callable[[], bool]:
    words = machine.guest_memory.words
    return lambda: words.get(name, 0) != 0


def _added_beyond(words: dict[str, int], seen: int) -> Callable[[], bool]:
    return lambda: words.get(HOTPLUG_WORD, seen) > seen


def hv_synic_enable_regs(machine: Machine, cpu_index: int) -> Generator[Any, Any, None]:
    """drivers/hv/hv.c hv_synic_enable_regs: the message page, the event page, the VMBus SINT, enable."""
    base = 0x7F000000 + cpu_index * 2 * PAGE
    yield Wrmsr(HV_X64_MSR_SIMP, base | HV_SIMP_ENABLE)
    yield Wrmsr(HV_X64_MSR_SIEFP, base + PAGE | HV_SIEFP_ENABLE)
    yield Wrmsr(HV_X64_MSR_SINT2, 0x30)
    yield Wrmsr(HV_X64_MSR_SCONTROL, HV_SYNIC_ENABLE)


def do_boot_cpu(machine: Machine, n: int) -> Generator[Any, Any, bool]:
    """smpboot.c native_kick_ap -> do_boot_cpu: INIT + SIPI, then wait for the AP to call in and go online."""
    yield Outb(f"smpboot: Booting Node 0 Processor {n} APIC {n:#x}")
    yield Ipi(n, start=True, vector=TRAMPOLINE_VECTOR)
    if not (yield SpinUntil(_word(machine, f"online:{n}"), CALLIN_TIMEOUT_NS, f"CPU {n} online")):
        yield Outb(f"smpboot: do_boot_cpu failed(-1) to wakeup CPU#{n}")
        machine.outcome.fail(STUCK_CPU, f"CPU {n} did not come online")
        return False
    machine.outcome.online.add(n)
    return True


def boot_program(machine: Machine) -> GuestProgram:
    """The BSP from the reset vector: firmware, the kernel's boot, the APs, the VMBus driver, the workload."""
    out, words = machine.outcome, machine.guest_memory.words
    yield Compute(30 * MS, "firmware (SeaBIOS) and the boot loader")
    yield Outb("Linux version 6.12.0 (vcpu_sched guest) x86_64")
    yield Compute(machine.rng.randint(200, 300) * MS, "start_kernel up to smp_init")
    yield Outb("smp: Bringing up secondary CPUs ...")
    out.online = {0}
    for n in range(1, machine.settings.smp):
        yield from do_boot_cpu(machine, n)
    count = len(out.online)
    yield Outb(f"smp: Brought up 1 node, {count} CPU{'s' if count != 1 else ''}")
    out.boots += 1
    yield Compute(machine.rng.randint(20, 40) * MS, "device initcalls")
    # vmbus_bus_init: cpuhp_setup_state(CPUHP_AP_ONLINE_DYN, "hyperv/vmbus:online", hv_synic_init, ...) runs
    # hv_synic_init on each online CPU (the others through a function-call IPI), and on every later one.
    words["vmbus"] = 1
    yield from hv_synic_enable_regs(machine, 0)
    for n in sorted(out.online - {0}):
        words[f"call:{n}"] = 1
        yield Ipi(n)
        yield SpinUntil(_word(machine, f"synic:{n}"), CALLIN_TIMEOUT_NS, f"CPU {n}'s SynIC")
    yield Outb("hv_vmbus: Vmbus version:5.3")
    if machine.settings.workload == "hotplug-online":
        yield from hotplug_online(machine)
    machine.guest_finished()
    while True:
        yield Hlt()


def hotplug_online(machine: Machine) -> Generator[Any, Any, None]:
    """Online each CPU that ACPI reports hot-added (drivers/acpi/acpi_processor.c, then udev's online), as
    many as the monitor script adds."""
    out, words = machine.outcome, machine.guest_memory.words
    adds = sum(1 for _, command in machine.settings.monitor if command.split()[0] == "device_add")
    out.wanted = len(out.online) + adds
    yield Outb("acpi: waiting for CPU hot-add")
    seen = machine.settings.smp
    while len(out.online) < out.wanted:
        if not (yield SpinUntil(_added_beyond(words, seen), HOTPLUG_WAIT_NS, "ACPI CPU hot-add")):
            yield Outb("acpi: no CPU was added")
            return
        n = seen
        seen += 1
        yield Outb(f"CPU{n} has been hot-added")
        yield Compute(machine.rng.randint(1_000, 3_000) * US, "udev: echo 1 > /sys/devices/system/cpu/cpuN/online")
        if not (yield from do_boot_cpu(machine, n)):
            return
    yield Outb(f"smp: {len(out.online)} CPUs online after the hot-add")


def secondary_program(machine: Machine, cpu_index: int) -> GuestProgram:
    """The trampoline -> start_secondary: call in; SynIC on (a CPU onlined once the VMBus driver runs);
    online; then the idle loop, running function calls IPI'd to it."""
    mem = machine.guest_memory
    words = mem.words
    yield Compute(machine.rng.randint(200, 400) * US, "trampoline, start_secondary")
    mem.callin_map.add(cpu_index)
    if words.get("vmbus"):
        yield from hv_synic_enable_regs(machine, cpu_index)
    words[f"online:{cpu_index}"] = 1
    mem.changed.broadcast()
    while True:
        yield Hlt()
        if words.pop(f"call:{cpu_index}", 0):
            yield from hv_synic_enable_regs(machine, cpu_index)
            words[f"synic:{cpu_index}"] = 1
            mem.changed.broadcast()


def program_at(machine: Machine, cpu_index: int, addr: int) -> GuestProgram | None:
    """The program at a vCPU's entry: the reset vector (the BSP) or the SIPI trampoline."""
    if addr == RESET_VECTOR:
        return boot_program(machine)
    if addr == TRAMPOLINE_VECTOR << 12:
        return secondary_program(machine, cpu_index)
    return None
