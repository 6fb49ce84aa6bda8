"""The s390x side of KVM: QEMU's exit handling and a fake kernel behind KVM_RUN.

QEMU side, target/s390x/kvm/kvm.c at upstream 77251365ec: `kvm_arch_handle_exit` takes the BQL,
synchronises the registers (`kvm_cpu_synchronize_state`: a register get, several ioctls), handles the
intercept - an instruction (SIGP through `kvm_s390_handle_sigp`, which sets the condition code; the
SCLP console's SERVC) or a CPU stop (`do_stop_interrupt`) - drops the BQL and returns EXCP_INTERRUPT,
so every handled exit ends kvm_cpu_exec and the thread looks at its queued work next.
`kvm_arch_process_async_events` returns `halted`, as on ppc.

Kernel side, after Linux arch/s390/kvm/sigp.c: QEMU enables KVM_CAP_S390_USER_SIGP, so the kernel keeps
SENSE, EXTERNAL CALL, (conditional) EMERGENCY SIGNAL and SENSE RUNNING (`handle_sigp_order_in_user_space`
returns 0 for them) and hands every other order to QEMU as an instruction intercept. An enabled wait
(the idle loop) blocks in the kernel until an interrupt or a kick.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..accel import execute_guest, runner_at
from ..cpus import EXCP_HALTED, EXCP_INTERRUPT, CPUState
from ..effects import Block, BqlLock, BqlUnlock, Effect
from ..guest import GuestRunner
from ..kvm import EINTR, KvmExit, with_vcpu_mutex
from .cpu import S390_CPU_STATE_STOPPED, s390_cpu_set_state, s390_kvm
from .sigp import (
    ORDER_NAMES,
    SIGP_CC_ORDER_CODE_ACCEPTED,
    SIGP_CC_STATUS_STORED,
    SIGP_COND_EMERGENCY,
    SIGP_EMERGENCY,
    SIGP_EXTERNAL_CALL,
    SIGP_SENSE,
    SIGP_SENSE_RUNNING,
    SIGP_STAT_STOPPED,
    handle_sigp,
)

KVM_GET_REGS_NS = 1_000  # kvm_arch_get_registers: KVM_GET_REGS, KVM_GET_SREGS, KVM_GET_FPU, ONE_REGs
_KERNEL_ORDERS = (SIGP_SENSE, SIGP_EXTERNAL_CALL, SIGP_EMERGENCY, SIGP_COND_EMERGENCY, SIGP_SENSE_RUNNING)
ICPT_INSTRUCTION = 0x04
ICPT_CPU_STOP = 0x28


class Sigp(NamedTuple):
    """The SIGP instruction: `order` to CPU `dst`; the program receives (cc, status)."""

    order: int
    dst: int
    param: int = 0


class Servc(NamedTuple):
    """SERVC: an SCLP request, here a line for the SCLP console."""

    text: str


class EnabledWait(NamedTuple):
    """The idle loop: a wait PSW with interrupts enabled; the kernel keeps the vCPU until one comes."""


@dataclass(eq=False, repr=False)
class S390KvmVcpu:
    """The kernel's view of one s390x vCPU."""

    mp_state: int = S390_CPU_STATE_STOPPED
    runner: GuestRunner | None = None
    entry_gen: int = 0
    exit_op: Any = None  # the instruction QEMU is handling
    op_ret: Any = None  # what QEMU answered (a SIGP's condition code and status)
    stop_pending: bool = False
    restart_pending: bool = False
    in_run: bool = False

    def key(self) -> tuple[Any, ...]:
        return (self.mp_state, self.entry_gen, self.exit_op, self.op_ret, self.stop_pending,
                self.restart_pending, self.in_run, self.runner.compute_left if self.runner else None)


@dataclass(eq=False, repr=False)
class S390Kvm:
    vcpus: list[S390KvmVcpu] = field(default_factory=list)


def kvm_arch_put_registers(cpu: CPUState, level: int) -> None:
    """target/s390x/kvm/kvm.c kvm_arch_put_registers: the PSW (and everything else) into the kernel; a new
    PSW starts the program there."""
    vcpu = s390_kvm(cpu).vcpus[cpu.cpu_index]
    env = cpu.env
    if env.entry_gen != vcpu.entry_gen:
        vcpu.entry_gen = env.entry_gen
        vcpu.runner = runner_at(cpu, env.psw_addr, env.entry_gen)
        vcpu.exit_op = vcpu.op_ret = None


def kvm_cpu_synchronize_state(cpu: CPUState) -> Generator[Effect, Any, None]:
    """accel/kvm/kvm-all.c kvm_cpu_synchronize_state on the vCPU's own thread: a register get unless the
    vCPU is dirty already. The ioctls take time (the thread is in the kernel, the BQL held)."""
    if not cpu.vcpu_dirty:
        yield Block((), KVM_GET_REGS_NS)
        cpu.vcpu_dirty = True


def kvm_vcpu_ioctl_run(cpu: CPUState) -> Generator[Effect, Any, tuple[int, KvmExit | None]]:
    """ioctl(KVM_RUN), the kernel side (with the vCPU's mutex held: kvm.with_vcpu_mutex)."""
    vcpu = s390_kvm(cpu).vcpus[cpu.cpu_index]
    return (yield from with_vcpu_mutex(cpu, vcpu, _kvm_run(cpu, vcpu)))


def _kvm_run(cpu: CPUState, vcpu: S390KvmVcpu) -> Generator[Effect, Any, tuple[int, KvmExit | None]]:
    runner = vcpu.runner
    if vcpu.exit_op is not None and runner is not None:
        runner.advance(vcpu.op_ret)
        vcpu.exit_op = vcpu.op_ret = None
    while True:
        if vcpu.stop_pending:  # the stop interrupt: the kernel stops the vCPU and tells QEMU
            vcpu.stop_pending = False
            return 0, KvmExit("S390_SIEIC", detail="ICPT_CPU_STOP")
        op = yield from execute_guest(cpu, runner, lambda: cpu.immediate_exit)
        if op is None:
            return -EINTR, None
        assert runner is not None
        if isinstance(op, EnabledWait):
            # kvm_s390_handle_wait: the vCPU blocks in the kernel; a kick makes KVM_RUN return -EINTR.
            yield Block((cpu.kick_cond,), None)
            continue
        if isinstance(op, Sigp) and op.order in _KERNEL_ORDERS:
            runner.advance(_kernel_sigp(cpu, op))
            continue
        vcpu.exit_op = op
        detail = f"SIGP {ORDER_NAMES.get(op.order, hex(op.order))}" if isinstance(op, Sigp) else "SERVC"
        return 0, KvmExit("S390_SIEIC", op=op, detail=detail)


def _kernel_sigp(cpu: CPUState, op: Sigp) -> tuple[int, int]:
    """arch/s390/kvm/sigp.c: SENSE answered in the kernel from the target's mp_state; the others (no
    interrupt delivery is modelled) accepted."""
    vcpus = s390_kvm(cpu).vcpus
    if not 0 <= op.dst < len(vcpus):
        return 3, 0
    if op.order == SIGP_SENSE and vcpus[op.dst].mp_state == S390_CPU_STATE_STOPPED:
        return SIGP_CC_STATUS_STORED, SIGP_STAT_STOPPED
    return SIGP_CC_ORDER_CODE_ACCEPTED, 0


def do_stop_interrupt(cpu: CPUState) -> None:
    """target/s390x/sigp.c do_stop_interrupt: STOPPED; the last CPU to stop shuts the machine down."""
    if s390_cpu_set_state(S390_CPU_STATE_STOPPED, cpu) == 0:
        cpu.machine.trace("qemu_system_shutdown_request", cause="guest-shutdown")
    cpu.env.sigp_order = 0


def kvm_arch_handle_exit(cpu: CPUState, run: KvmExit) -> Generator[Effect, Any, int]:
    """target/s390x/kvm/kvm.c kvm_arch_handle_exit -> handle_intercept -> handle_instruction."""
    vcpu = s390_kvm(cpu).vcpus[cpu.cpu_index]
    yield BqlLock("kvm_arch_handle_exit")
    yield from kvm_cpu_synchronize_state(cpu)
    ret = 0
    op = run.op
    if run.detail == "ICPT_CPU_STOP":
        do_stop_interrupt(cpu)
        ret = EXCP_HALTED
    elif isinstance(op, Sigp):
        vcpu.op_ret = yield from handle_sigp(cpu, op.order, op.dst, op.param)  # kvm_s390_handle_sigp + setcc
    elif isinstance(op, Servc):
        cpu.machine.console(cpu, op.text)  # sclp_service_call: the SCLP console's write event
        vcpu.op_ret = 0
    yield BqlUnlock("kvm_arch_handle_exit")
    return EXCP_INTERRUPT if ret == 0 else ret


def kvm_arch_process_async_events(cpu: CPUState) -> bool:
    """target/s390x/kvm/kvm.c kvm_arch_process_async_events: `halted` (a STOPPED CPU is halted)."""
    return cpu.halted
