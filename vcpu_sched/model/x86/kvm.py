"""The x86 side of KVM: QEMU's exit handling and a fake kernel behind KVM_RUN, with the in-kernel irqchip.

QEMU side, target/i386/kvm/kvm.c at upstream 77251365ec: `kvm_arch_process_async_events` returns 0 under
the in-kernel irqchip (halted vCPUs wait in the kernel); `kvm_arch_handle_exit` passes KVM_EXIT_HYPERV to
`kvm_hv_handle_exit` (hyperv.py), without the BQL. A port write (the serial console) is KVM_EXIT_IO,
which accel/kvm/kvm-all.c kvm_cpu_exec dispatches to the device, whose memory region takes the BQL
(prepare_mmio_access). Departure: the model handles it in kvm_arch_handle_exit, with the same lock.

Kernel side, after Linux arch/x86/kvm: a HLT halts the vCPU inside KVM_RUN until an interrupt
(kvm_emulate_halt, kvm_vcpu_block); an AP starts in KVM_MP_STATE_UNINITIALIZED and waits there for
INIT/SIPI, which the in-kernel LAPIC delivers (kvm_apic_accept_events); a SynIC MSR write (SCONTROL,
SIMP, SIEFP) is stored by the kernel and then reported with KVM_EXIT_HYPERV_SYNIC (hyperv.c synic_exit).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..accel import execute_guest, runner_at
from ..cpus import CPUState
from ..effects import Block, BqlLock, BqlUnlock, Effect
from ..guest import GuestRunner
from ..kvm import EINTR, KvmExit, with_vcpu_mutex
from .cpu import (
    HV_X64_MSR_SCONTROL,
    HV_X64_MSR_SIEFP,
    HV_X64_MSR_SIMP,
    KVM_MP_STATE_HALTED,
    KVM_MP_STATE_RUNNABLE,
    KVM_MP_STATE_UNINITIALIZED,
    x86_kvm,
)
from .hyperv import kvm_hv_handle_exit

SYNIC_MSRS = {HV_X64_MSR_SCONTROL: "SCONTROL", HV_X64_MSR_SIMP: "SIMP", HV_X64_MSR_SIEFP: "SIEFP"}


class Hlt(NamedTuple):
    """HLT with interrupts enabled (the idle loop): the kernel halts the vCPU until an interrupt."""


class Wrmsr(NamedTuple):
    """WRMSR `msr` <- `value`."""

    msr: int
    value: int


class Outb(NamedTuple):
    """A line out of the serial port (COM1, 0x3f8): one KVM_EXIT_IO per line in the model."""

    text: str


class Ipi(NamedTuple):
    """A write to the LAPIC's ICR: INIT + SIPI to start AP `dest` at `vector` (`start`), else a fixed
    interrupt (a function-call IPI)."""

    dest: int
    start: bool = False
    vector: int = 0


@dataclass(eq=False, repr=False)
class X86KvmVcpu:
    """The kernel's view of one x86 vCPU (struct kvm_vcpu with its LAPIC)."""

    mp_state: int = KVM_MP_STATE_UNINITIALIZED
    runner: GuestRunner | None = None
    entry_gen: int = 0
    sipi_vector: int | None = None  # a SIPI the LAPIC has accepted, not yet taken by the vCPU
    irq_pending: bool = False  # an interrupt for this vCPU in its LAPIC
    exit_op: Any = None  # the operation QEMU is handling
    in_run: bool = False

    def key(self) -> tuple[Any, ...]:
        return (self.mp_state, self.entry_gen, self.sipi_vector, self.irq_pending, self.exit_op, self.in_run,
                self.runner.compute_left if self.runner else None)


@dataclass(eq=False, repr=False)
class X86Kvm:
    vcpus: list[X86KvmVcpu] = field(default_factory=list)
    hv_synic: bool = True  # QEMU enabled KVM_CAP_HYPERV_SYNIC (-cpu ...,hv-synic)


def kvm_arch_process_async_events(cpu: CPUState) -> bool:
    """target/i386/kvm/kvm.c kvm_arch_process_async_events: 0 with the in-kernel irqchip (no MCE or INIT
    is raised in QEMU here)."""
    return False


def kvm_arch_put_registers(cpu: CPUState, level: int) -> None:
    """target/i386/kvm/kvm.c kvm_arch_put_registers: the registers (a new entry point starts the program
    there) and the MP state (kvm_put_mp_state)."""
    vcpu = x86_kvm(cpu).vcpus[cpu.cpu_index]
    env = cpu.env
    vcpu.mp_state = env.mp_state
    if env.entry_gen != vcpu.entry_gen:
        vcpu.entry_gen = env.entry_gen
        vcpu.runner = runner_at(cpu, env.eip, env.entry_gen)
        vcpu.exit_op = None
        vcpu.sipi_vector = None
        vcpu.irq_pending = False


def kvm_vcpu_ioctl_run(cpu: CPUState) -> Generator[Effect, Any, tuple[int, KvmExit | None]]:
    """ioctl(KVM_RUN), the kernel side (with the vCPU's mutex held: kvm.with_vcpu_mutex)."""
    vcpu = x86_kvm(cpu).vcpus[cpu.cpu_index]
    return (yield from with_vcpu_mutex(cpu, vcpu, _kvm_run(cpu, vcpu)))


def _kvm_run(cpu: CPUState, vcpu: X86KvmVcpu) -> Generator[Effect, Any, tuple[int, KvmExit | None]]:
    if vcpu.exit_op is not None and vcpu.runner is not None:
        vcpu.runner.advance()
        vcpu.exit_op = None
    while True:
        if vcpu.mp_state == KVM_MP_STATE_UNINITIALIZED and vcpu.sipi_vector is not None:
            _accept_sipi(cpu, vcpu)
        if vcpu.mp_state == KVM_MP_STATE_HALTED and vcpu.irq_pending:
            vcpu.irq_pending = False
            vcpu.mp_state = KVM_MP_STATE_RUNNABLE
            if vcpu.runner is not None:
                vcpu.runner.advance()
        if vcpu.mp_state != KVM_MP_STATE_RUNNABLE:  # kvm_vcpu_block: until an interrupt, a SIPI or a kick
            if cpu.immediate_exit:
                return -EINTR, None
            yield Block((cpu.kick_cond, cpu.kernel_irq_cond), None)
            continue
        op = yield from execute_guest(cpu, vcpu.runner, lambda: cpu.immediate_exit)
        if op is None:
            return -EINTR, None
        assert vcpu.runner is not None
        if isinstance(op, Hlt):
            vcpu.mp_state = KVM_MP_STATE_HALTED  # kvm_emulate_halt; a pending interrupt ends it at once
            continue
        if isinstance(op, Ipi):
            _apic_send_ipi(cpu, op)
            vcpu.runner.advance()
            continue
        if isinstance(op, Wrmsr):
            name = SYNIC_MSRS.get(op.msr)
            if name is None or not x86_kvm(cpu).hv_synic:
                vcpu.runner.advance()
                continue
            vcpu.exit_op = op
            return 0, KvmExit("HYPERV", op=op, detail=f"SYNIC {name}")
        if isinstance(op, Outb):
            vcpu.exit_op = op
            return 0, KvmExit("IO", op=op, detail="serial")
        raise TypeError(f"CPU {cpu.cpu_index}: the x86 guest did {op!r}")


def _accept_sipi(cpu: CPUState, vcpu: X86KvmVcpu) -> None:
    """lapic.c kvm_apic_accept_events: the AP leaves wait-for-SIPI at the vector's real-mode entry."""
    vector, vcpu.sipi_vector = vcpu.sipi_vector, None
    assert vector is not None
    vcpu.mp_state = KVM_MP_STATE_RUNNABLE
    vcpu.entry_gen += 1
    vcpu.runner = runner_at(cpu, vector << 12, vcpu.entry_gen)
    cpu.env.mp_state = KVM_MP_STATE_RUNNABLE
    cpu.machine.trace("kvm_apic_accept_events", cpu=cpu.cpu_index, vector=hex(vector))


def _apic_send_ipi(cpu: CPUState, op: Ipi) -> None:
    """lapic.c kvm_apic_send_ipi -> __apic_accept_irq: INIT+SIPI or a fixed interrupt, in the kernel."""
    machine = cpu.machine
    if not 0 <= op.dest < len(machine.cpus):
        return
    target = machine.cpus[op.dest]
    vcpu = x86_kvm(cpu).vcpus[op.dest]
    if op.start:
        if vcpu.mp_state == KVM_MP_STATE_UNINITIALIZED:
            vcpu.sipi_vector = op.vector
    else:
        vcpu.irq_pending = True
    target.kernel_irq_cond.broadcast()


def kvm_arch_handle_exit(cpu: CPUState, run: KvmExit) -> Generator[Effect, Any, int]:
    """target/i386/kvm/kvm.c kvm_arch_handle_exit: KVM_EXIT_HYPERV to kvm_hv_handle_exit; and (departure,
    see above) the serial port's KVM_EXIT_IO."""
    if run.reason == "HYPERV":
        return kvm_hv_handle_exit(cpu, run.op)
    yield BqlLock("kvm_handle_io")  # prepare_mmio_access: the serial device is not lockless
    cpu.machine.console(cpu, run.op.text)
    yield BqlUnlock("kvm_handle_io")
    return 0


def x86_post_irq(cpu: CPUState) -> None:
    """An interrupt from QEMU's devices to `cpu` through the in-kernel irqchip (an ACPI SCI: kvm_set_irq)."""
    x86_kvm(cpu).vcpus[cpu.cpu_index].irq_pending = True
    cpu.kernel_irq_cond.broadcast()
