"""The q35 board under KVM: its CPUs, its reset and CPU hot-add.

Reset (hw/i386/pc.c pc_machine_reset -> qemu_devices_reset, then cpu_synchronize_all_post_reset), read at
upstream 77251365ec: target/i386/cpu.c x86_cpu_reset_hold leaves the BSP runnable at the reset vector and
every AP halted, KVM_MP_STATE_UNINITIALIZED (waiting for INIT/SIPI in the kernel's LAPIC).

CPU hot-add, `device_add <model>-x86_64-cpu,socket-id=N,core-id=0,thread-id=0` on the main thread with
the BQL held: hw/i386/x86-common.c x86_cpu_pre_plug (the checks), then target/i386/cpu.c
x86_cpu_realizefn in its order - cpu_exec_realizefn -> cpu-common.c `cpu_list_add` (exclusive.py), then
`qemu_init_vcpu` (the thread starts; the caller waits for it with the BQL dropped), the CPU's reset, and
hw/core/cpu-common.c cpu_common_realizefn, which for a hotplugged CPU puts its registers into KVM
(`cpu_synchronize_post_init`, a run_on_cpu) and resumes it - then the hotplug handler, x86_cpu_plug ->
hw/acpi/cpu.c acpi_cpu_plug_cb, which marks the CPU inserted and raises the ACPI CPU-hotplug event.
Departures: CPUs are plugged in order (the model indexes them by position); the topology is one thread
per socket; the event reaches the guest as a word of guest memory (x86/guest.py).
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ..arch import Arch
from ..cpus import CPUState, cpu_resume, qemu_init_vcpu_wait, run_on_cpu
from ..effects import Effect
from ..exclusive import cpu_list_add
from ..kvm import kvm_vcpu_thread_fn
from ..qapi import QmpError
from .cpu import (
    KVM_MP_STATE_RUNNABLE,
    KVM_MP_STATE_UNINITIALIZED,
    MP_STATE_NAMES,
    CPUX86State,
    x86_cpu_has_work,
    x86_kvm,
)
from .guest import HOTPLUG_WORD, RESET_VECTOR, program_at
from .kvm import (
    X86Kvm,
    X86KvmVcpu,
    kvm_arch_handle_exit,
    kvm_arch_process_async_events,
    kvm_arch_put_registers,
    kvm_vcpu_ioctl_run,
)

if TYPE_CHECKING:
    from ..machine import Machine

MACHINE_TYPE = "q35"
CPU_MODEL = "Skylake-Server"


class X86Machine:
    """The board's state: the fake kernel."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.kvm = X86Kvm([X86KvmVcpu() for _ in range(machine.settings.smp)], hv_synic=machine.settings.hv_synic)

    def key(self) -> tuple[Any, ...]:
        return tuple(v.key() for v in self.kvm.vcpus)


def x86_cpu_reset_hold(cpu: CPUState) -> None:
    """target/i386/cpu.c x86_cpu_reset_hold: the BSP at the reset vector, every AP halted and waiting for
    INIT/SIPI; a new entry either way."""
    bsp = cpu.cpu_index == 0
    env = cpu.env
    cpu.interrupt_request = 0
    cpu.halted = not bsp
    env.mp_state = KVM_MP_STATE_RUNNABLE if bsp else KVM_MP_STATE_UNINITIALIZED
    env.eip = RESET_VECTOR if bsp else 0
    env.entry_gen += 1
    env.msr_hv_synic_control = env.msr_hv_synic_msg_page = env.msr_hv_synic_evt_page = 0


def _post_reset(cpu: CPUState) -> None:
    kvm_arch_put_registers(cpu, 2)  # do_kvm_cpu_synchronize_post_reset
    cpu.vcpu_dirty = False


def _post_init(cpu: CPUState) -> None:
    kvm_arch_put_registers(cpu, 3)  # do_kvm_cpu_synchronize_post_init
    cpu.vcpu_dirty = False


def pc_machine_reset(machine: Machine) -> Generator[Effect, Any, None]:
    """hw/i386/pc.c pc_machine_reset: reset every CPU, then put the state into KVM on each vCPU's thread."""
    for cpu in machine.cpus:
        x86_cpu_reset_hold(cpu)
    for cpu in machine.cpus:
        yield from run_on_cpu(cpu, _post_reset, "do_kvm_cpu_synchronize_post_reset")


def cpu_type(machine: Machine) -> str:
    return f"{machine.settings.cpu}-x86_64-cpu"


def device_add_x86_cpu(machine: Machine, args: dict[str, Any]) -> Generator[Effect, Any, None]:
    """qdev_device_add of an x86 CPU, on the main thread with the BQL held; QmpError on bad input."""
    settings = machine.settings
    if args.get("driver") != cpu_type(machine):
        raise QmpError("GenericError", f"Invalid CPU type, expected cpu type: '{cpu_type(machine)}'")
    ids = {}
    for prop in ("socket-id", "core-id", "thread-id"):
        value = args.get(prop, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            raise QmpError("GenericError", f"Parameter '{prop}' expects int32")
        ids[prop] = value
    socket = ids["socket-id"]
    slots = settings.maxcpus or settings.smp
    if ids["core-id"] or ids["thread-id"]:  # x86_cpu_pre_plug, with one core of one thread per socket
        raise QmpError("GenericError", "Invalid CPU core-id/thread-id: this machine has 1 core of 1 thread a socket")
    if not 0 <= socket < slots:
        raise QmpError("GenericError", f"Invalid CPU socket-id: {socket} must be in range 0:{slots - 1}")
    if socket < len(machine.cpus):
        raise QmpError("GenericError", f"CPU[{socket}] with APIC ID {socket} exists")
    if socket != len(machine.cpus):
        raise QmpError("GenericError", f"socket-id {socket}: the model plugs CPUs in order (next: {len(machine.cpus)})")
    board = machine.x86
    assert board is not None
    cpu = machine.add_cpu(socket, CPUX86State(apic_id=socket))
    board.kvm.vcpus.append(X86KvmVcpu())
    yield from cpu_list_add(machine, cpu)  # x86_cpu_realizefn -> cpu_exec_realizefn
    machine.start_thread(cpu.name, functools.partial(kvm_vcpu_thread_fn, cpu))  # qemu_init_vcpu
    yield from qemu_init_vcpu_wait(cpu)
    x86_cpu_reset_hold(cpu)  # cpu_reset: an AP, waiting for INIT/SIPI
    yield from run_on_cpu(cpu, _post_init, "do_kvm_cpu_synchronize_post_init")
    cpu_resume(cpu)  # cpu_common_realizefn, hotplugged
    mem = machine.guest_memory  # x86_cpu_plug -> acpi_cpu_plug_cb -> acpi_send_event(ACPI_CPU_HOTPLUG_STATUS)
    mem.words[HOTPLUG_WORD] = max(mem.words.get(HOTPLUG_WORD, settings.smp), socket + 1)
    mem.changed.broadcast()
    machine.trace("acpi_cpu_plug_cb", cpu=cpu.cpu_index)


class X86Arch(Arch):
    """target/i386 under KVM with the in-kernel irqchip, on this board."""

    name = "x86_64"
    cpu_has_work = staticmethod(x86_cpu_has_work)
    kvm_arch_process_async_events = staticmethod(kvm_arch_process_async_events)
    kvm_arch_put_registers = staticmethod(kvm_arch_put_registers)
    kvm_vcpu_ioctl_run = staticmethod(kvm_vcpu_ioctl_run)
    kvm_arch_handle_exit = staticmethod(kvm_arch_handle_exit)
    program_at = staticmethod(program_at)

    def cpu_state_text(self, cpu: CPUState) -> str:
        vcpu = x86_kvm(cpu).vcpus[cpu.cpu_index]
        return f"mp_state={MP_STATE_NAMES[vcpu.mp_state]}"

    def machine_reset(self, machine: Machine) -> Generator[Effect, Any, None]:
        return pc_machine_reset(machine)
