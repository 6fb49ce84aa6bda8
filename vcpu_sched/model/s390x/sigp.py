"""SIGP orders QEMU handles: target/s390x/sigp.c (read at upstream 77251365ec; the lock as f9530c3242
added it in September 2016, then in target-s390x/kvm.c).

`handle_sigp` runs on the initiating vCPU's thread with the BQL held (kvm_arch_handle_exit took it).
Orders that act on another CPU do so with `run_on_cpu`, which drops the BQL while it waits for the
target's thread to run the work. Two vCPUs that exit with SIGPs for each other at the same time can
each end up waiting in run_on_cpu for a thread that is itself waiting there, not in qemu_wait_io_event
where queued work runs: a deadlock. The fix (`sigp_lock`) lets one SIGP at a time through a global
mutex taken with trylock; the loser answers condition code 2 (BUSY) and the guest retries.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from ..cpus import CPUState, run_on_cpu
from ..effects import Effect
from ..kvm import KVM_PUT_RESET_STATE
from .cpu import (
    S390_CPU_STATE_OPERATING,
    S390_CPU_STATE_STOPPED,
    s390_cpu_set_state,
    s390_kvm,
)

SIGP_SENSE = 0x01
SIGP_EXTERNAL_CALL = 0x02
SIGP_EMERGENCY = 0x03
SIGP_START = 0x04
SIGP_STOP = 0x05
SIGP_RESTART = 0x06
SIGP_STOP_STORE_STATUS = 0x09
SIGP_INITIAL_CPU_RESET = 0x0B
SIGP_CPU_RESET = 0x0C
SIGP_SET_PREFIX = 0x0D
SIGP_COND_EMERGENCY = 0x13
SIGP_SENSE_RUNNING = 0x15
ORDER_NAMES = {SIGP_SENSE: "SENSE", SIGP_EXTERNAL_CALL: "EXTERNAL_CALL", SIGP_EMERGENCY: "EMERGENCY",
               SIGP_START: "START", SIGP_STOP: "STOP", SIGP_RESTART: "RESTART",
               SIGP_STOP_STORE_STATUS: "STOP_STORE_STATUS", SIGP_INITIAL_CPU_RESET: "INITIAL_CPU_RESET",
               SIGP_CPU_RESET: "CPU_RESET", SIGP_SET_PREFIX: "SET_PREFIX", SIGP_COND_EMERGENCY: "COND_EMERGENCY",
               SIGP_SENSE_RUNNING: "SENSE_RUNNING"}

SIGP_CC_ORDER_CODE_ACCEPTED = 0
SIGP_CC_STATUS_STORED = 1
SIGP_CC_BUSY = 2
SIGP_CC_NOT_OPERATIONAL = 3

SIGP_STAT_INCORRECT_STATE = 0x200
SIGP_STAT_STOPPED = 0x40
SIGP_STAT_INVALID_ORDER = 0x02

RESTART_PSW_ADDR = 0x1C0  # the lowcore's restart new PSW: Linux points it at its restart handler


@dataclass(eq=False, repr=False)
class SigpInfo:
    """struct SigpInfo: the order's parameter and what it answers."""

    param: int = 0
    cc: int = SIGP_CC_ORDER_CODE_ACCEPTED
    status: int = 0

    def set_status(self, status: int) -> None:
        self.status = status
        self.cc = SIGP_CC_STATUS_STORED


def sigp_sense(dst: CPUState, si: SigpInfo) -> None:
    """sigp.c sigp_sense: under KVM the kernel answers SENSE itself; QEMU would say invalid order."""
    if dst.machine.settings.accel == "kvm":
        si.set_status(SIGP_STAT_INVALID_ORDER)
        return
    if dst.env.cpu_state != S390_CPU_STATE_STOPPED:
        si.cc = SIGP_CC_ORDER_CODE_ACCEPTED
    else:
        si.set_status(SIGP_STAT_STOPPED)


def sigp_start(cpu: CPUState, si: SigpInfo) -> None:
    """sigp.c sigp_start (on the target's thread): a stopped CPU becomes OPERATING."""
    if cpu.env.cpu_state == S390_CPU_STATE_STOPPED:
        s390_cpu_set_state(S390_CPU_STATE_OPERATING, cpu)
    si.cc = SIGP_CC_ORDER_CODE_ACCEPTED


def sigp_stop(cpu: CPUState, si: SigpInfo) -> None:
    """sigp.c sigp_stop: a halted CPU stops at once; a running one gets a stop interrupt in KVM."""
    if cpu.env.cpu_state == S390_CPU_STATE_OPERATING:
        if cpu.halted:
            s390_cpu_set_state(S390_CPU_STATE_STOPPED, cpu)
        else:
            cpu.env.sigp_order = SIGP_STOP
            s390_kvm(cpu).vcpus[cpu.cpu_index].stop_pending = True  # cpu_inject_stop -> kvm_s390_vcpu_interrupt
    si.cc = SIGP_CC_ORDER_CODE_ACCEPTED


def do_restart_interrupt(cpu: CPUState) -> None:
    """target/s390x/interrupt.c do_restart_interrupt: load the restart new PSW."""
    cpu.env.psw_addr = RESTART_PSW_ADDR
    cpu.env.entry_gen += 1


def sigp_restart(cpu: CPUState, si: SigpInfo) -> None:
    """sigp.c sigp_restart (77251365ec): a stopped CPU is synced, set OPERATING (which unhalts it) and only
    then takes the restart interrupt (upstream's comment: so that loading the PSW may halt it again under
    TCG); a running one gets it injected in KVM."""
    if cpu.env.cpu_state == S390_CPU_STATE_STOPPED:
        cpu.vcpu_dirty = True  # cpu_synchronize_state on its own thread: QEMU's copy is the one to put
        s390_cpu_set_state(S390_CPU_STATE_OPERATING, cpu)
        do_restart_interrupt(cpu)
    elif cpu.env.cpu_state == S390_CPU_STATE_OPERATING:
        s390_kvm(cpu).vcpus[cpu.cpu_index].restart_pending = True  # cpu_inject_restart
    si.cc = SIGP_CC_ORDER_CODE_ACCEPTED


def sigp_initial_cpu_reset(cpu: CPUState, si: SigpInfo) -> None:
    """sigp.c sigp_initial_cpu_reset (77251365ec), on the target's thread: cpu_synchronize_state, the
    initial CPU reset - target/s390x/cpu.c s390_cpu_reset_hold: no order pending, STOPPED, and under KVM
    kvm_s390_reset_vcpu_initial (KVM_S390_INITIAL_RESET, whose normal-reset part drops the vCPU's local
    interrupts: a pending stop or restart) - then cpu_synchronize_post_reset puts QEMU's state back, so
    the vCPU is clean again. The architected registers the reset clears are not modelled."""
    cpu.vcpu_dirty = True  # cpu_synchronize_state on its own thread
    cpu.env.sigp_order = 0
    s390_cpu_set_state(S390_CPU_STATE_STOPPED, cpu)
    vcpu = s390_kvm(cpu).vcpus[cpu.cpu_index]
    vcpu.stop_pending = vcpu.restart_pending = False
    cpu.machine.arch.kvm_arch_put_registers(cpu, KVM_PUT_RESET_STATE)  # cpu_synchronize_post_reset
    cpu.vcpu_dirty = False
    si.cc = SIGP_CC_ORDER_CODE_ACCEPTED


def sigp_set_prefix(cpu: CPUState, si: SigpInfo) -> None:
    """sigp.c sigp_set_prefix: only a stopped CPU's prefix may change."""
    if cpu.env.cpu_state != S390_CPU_STATE_STOPPED:
        si.set_status(SIGP_STAT_INCORRECT_STATE)
        return
    si.cc = SIGP_CC_ORDER_CODE_ACCEPTED


_ON_TARGET = {SIGP_START: sigp_start, SIGP_STOP: sigp_stop, SIGP_RESTART: sigp_restart,
              SIGP_SET_PREFIX: sigp_set_prefix, SIGP_INITIAL_CPU_RESET: sigp_initial_cpu_reset}


def handle_sigp_single_dst(cpu: CPUState, dst: CPUState | None, order: int,
                           si: SigpInfo) -> Generator[Effect, Any, int]:
    """sigp.c handle_sigp_single_dst."""
    if dst is None:
        return SIGP_CC_NOT_OPERATIONAL
    if dst.env.sigp_order != 0 and order not in (SIGP_CPU_RESET, SIGP_INITIAL_CPU_RESET):
        return SIGP_CC_BUSY  # only resets break a pending stop
    if order == SIGP_SENSE:
        sigp_sense(dst, si)
    elif order in _ON_TARGET:
        func = _ON_TARGET[order]
        yield from run_on_cpu(dst, lambda c: func(c, si), func.__name__)
    else:
        si.set_status(SIGP_STAT_INVALID_ORDER)
    return si.cc


def handle_sigp(cpu: CPUState, order: int, dst_index: int, param: int) -> Generator[Effect, Any, tuple[int, int]]:
    """sigp.c handle_sigp: (condition code, status) for the initiating CPU's registers."""
    machine = cpu.machine
    s390 = machine.s390
    assert s390 is not None
    dst = machine.cpus[dst_index] if 0 <= dst_index < len(machine.cpus) else None
    si = SigpInfo(param)
    name = ORDER_NAMES.get(order, hex(order))
    locked = machine.settings.sigp_lock
    if locked and s390.sigp_mutex is not None:  # qemu_mutex_trylock(&qemu_sigp_mutex) failed
        cc = SIGP_CC_BUSY
        machine.trace("sigp_busy", cpu=cpu.cpu_index, order=name, dst=dst_index, holder=s390.sigp_mutex)
    else:
        if locked:
            s390.sigp_mutex = cpu.name
        machine.trace("sigp_handle", cpu=cpu.cpu_index, order=name, dst=dst_index)
        cc = yield from handle_sigp_single_dst(cpu, dst, order, si)
        if locked:
            s390.sigp_mutex = None
    machine.trace("sigp_finished", cpu=cpu.cpu_index, order=name, dst=dst_index, cc=cc)
    return cc, si.status
