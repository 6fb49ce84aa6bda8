"""Hyper-V's SynIC under KVM: the MSR-write exit and the work it queues.

Mirrors target/i386/kvm/hyperv.c at upstream 77251365ec: `kvm_hv_handle_exit` stores the written MSR in
env and queues `async_synic_update` with `async_safe_run_on_cpu` - it changes the memory map (the SynIC's
message and event pages are memory regions, hw/hyperv/hyperv.c `synic_update`), so it runs on the vCPU's
own thread while no vCPU executes - and returns EXCP_INTERRUPT, so the thread reaches its queued work at
once. `async_synic_update` takes the BQL for the update: inside the exclusive section, which is what
e533f45d7d's deadlock needs. (In 2019 kvm_hv_handle_exit returned 0 and the queued work's kick brought
the thread out of KVM_RUN; the model keeps today's return.)
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from ..cpus import EXCP_INTERRUPT, CPUState
from ..effects import BqlLock, BqlUnlock, Effect
from ..exclusive import async_safe_run_on_cpu
from .cpu import (
    HV_SIEFP_ENABLE,
    HV_SIMP_ENABLE,
    HV_SYNIC_ENABLE,
    HV_X64_MSR_SCONTROL,
    HV_X64_MSR_SIEFP,
    HV_X64_MSR_SIMP,
    TARGET_PAGE_MASK,
)


def hyperv_x86_synic_update(cpu: CPUState) -> None:
    """target/i386/kvm/hyperv.c hyperv_x86_synic_update -> hw/hyperv/hyperv.c synic_update: the SynIC's
    pages mapped where the MSRs say (the memory map itself is not modelled)."""
    env = cpu.env
    msg = env.msr_hv_synic_msg_page & TARGET_PAGE_MASK if env.msr_hv_synic_msg_page & HV_SIMP_ENABLE else 0
    evt = env.msr_hv_synic_evt_page & TARGET_PAGE_MASK if env.msr_hv_synic_evt_page & HV_SIEFP_ENABLE else 0
    cpu.machine.trace("synic_update", cpu=cpu.cpu_index, enabled=bool(env.msr_hv_synic_control & HV_SYNIC_ENABLE),
                      msg_page=hex(msg), evt_page=hex(evt))


def async_synic_update(cpu: CPUState) -> Generator[Effect, Any, None]:
    """target/i386/kvm/hyperv.c async_synic_update: the update, with the BQL."""
    yield BqlLock("async_synic_update")
    hyperv_x86_synic_update(cpu)
    yield BqlUnlock("async_synic_update")


def kvm_hv_handle_exit(cpu: CPUState, op: Any) -> int:
    """target/i386/kvm/hyperv.c kvm_hv_handle_exit, KVM_EXIT_HYPERV_SYNIC: store the MSR, queue the update."""
    env = cpu.env
    if op.msr == HV_X64_MSR_SCONTROL:
        env.msr_hv_synic_control = op.value
    elif op.msr == HV_X64_MSR_SIMP:
        env.msr_hv_synic_msg_page = op.value
    elif op.msr == HV_X64_MSR_SIEFP:
        env.msr_hv_synic_evt_page = op.value
    async_safe_run_on_cpu(cpu, async_synic_update, "async_synic_update")
    return EXCP_INTERRUPT
