"""CPU hotplug on pseries: `device_add <cpu>-spapr-cpu-core,core-id=N` (DLPAR).

Mirrors, in upstream's order (read at 77251365ec), hw/core/qdev.c `device_set_realized` for the core:
hw/ppc/spapr.c `spapr_core_pre_plug` (the checks, in QEMU 7.2's words), then the core's realize,
hw/ppc/spapr_cpu_core.c `spapr_cpu_core_realize`, which for each thread in turn runs `spapr_realize_vcpu`
-> `qdev_realize` of the CPU -> target/ppc/cpu_init.c `ppc_cpu_realize` -> system/cpus.c `qemu_init_vcpu`
(the vCPU thread starts; the caller waits, BQL dropped, until it is created) -> hw/core/cpu-common.c
`cpu_common_realizefn`, which for a hotplugged CPU (every device created after machine-ready is:
qdev.c `device_initfn`) puts QEMU's registers into KVM (`cpu_synchronize_post_init`) and resumes it
(`cpu_resume`) - then `device_set_realized` resets the hotplugged CPU itself (`ppc_cpu_reset_hold`).
Once every thread is realized, the hotplugged core is reset: `spapr_cpu_core_reset` -> `spapr_reset_vcpu`
(RTAS-stopped, as every secondary after a reset). Nothing puts that state into KVM. Last,
`hotplug_handler_plug` -> hw/ppc/spapr.c `spapr_core_plug`: the DRC is attached, the guest hears of the
core (`spapr_hotplug_req_add_by_index`), then each new thread gets the boot CPU's compatibility mode with
`ppc_set_compat` - a `cpu_synchronize_state` from the main thread, a run_on_cpu register get, after which
QEMU's env holds KVM's LPCR (the host's PECE bits) and PSSCR (no EC), not the reset's, with no
`ppc_maybe_interrupt` (review of 2026-12, item 7a).

Departures: cores are plugged in core-id order (the model indexes CPUs by position); the guest hears of
the new core through a word of guest memory instead of the hotplug interrupt and RTAS event log; what
realize does besides the above (vhyp, `cpu_ppc_tb_init`'s timers, the interrupt presenter) holds no
state the model keeps.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from .cpus import CPUState, cpu_resume, qemu_init_vcpu_wait, run_on_cpu
from .effects import Effect
from .guest import DLPAR_WORD
from .interrupts import ppc_cpu_reset_hold
from .kvm import KvmVcpu, Vcore, do_kvm_cpu_synchronize_post_init, kvm_vcpu_thread_fn, kvmppc_core_init_vm_hv
from .ppc import CPU_MODELS, CPUPPCState
from .qapi import QmpError
from .tcg import mttcg_cpu_thread_fn

if TYPE_CHECKING:
    from .machine import Machine

CPU_TYPES = {"POWER8": "power8_v2.0", "POWER9": "power9_v2.0", "POWER10": "power10_v2.0"}


def core_type(machine: Machine) -> str:
    """The spapr CPU core device type of this machine's CPUs (`-cpu host` under KVM)."""
    cpu = "host" if machine.settings.accel == "kvm" else CPU_TYPES[machine.settings.cpu]
    return f"{cpu}-spapr-cpu-core"


def device_add_cpu_core(machine: Machine, args: dict[str, Any]) -> Generator[Effect, Any, None]:
    """qdev_device_add of a spapr CPU core, on the main thread with the BQL held; QmpError on bad input."""
    settings = machine.settings
    threads = settings.threads
    if args.get("driver") != core_type(machine):
        raise QmpError("GenericError", f"CPU core type should be {core_type(machine)}")
    core_id = args.get("core-id", 0)
    if not isinstance(core_id, int) or isinstance(core_id, bool):
        raise QmpError("GenericError", "Parameter 'core-id' expects int64")
    slots = (settings.maxcpus or settings.smp) // threads
    if core_id % threads:  # spapr_core_pre_plug
        raise QmpError("GenericError", f"invalid core id {core_id}")
    if not 0 <= core_id // threads < slots:
        raise QmpError("GenericError", f"core id {core_id} out of range")
    if core_id < len(machine.cpus):
        raise QmpError("GenericError", f"core {core_id} already populated")
    if core_id != len(machine.cpus):
        raise QmpError("GenericError", f"core id {core_id}: the model plugs cores in order (next: {len(machine.cpus)})")
    model = CPU_MODELS[settings.cpu]
    kvm = machine.kvm
    vcore = Vcore(kvmppc_core_init_vm_hv(settings.host_lpcr, model, kvm.radix)) if kvm is not None else None
    vcpu_fn = kvm_vcpu_thread_fn if kvm is not None else mttcg_cpu_thread_fn
    added = []
    for index in range(core_id, core_id + threads):  # spapr_cpu_core_realize: one thread after the other
        cpu = machine.add_cpu(index, CPUPPCState(model))
        if kvm is not None and vcore is not None:
            kvm.vcpus.append(KvmVcpu(vcore))
        machine.start_thread(cpu.name, functools.partial(vcpu_fn, cpu))  # ppc_cpu_realize -> qemu_init_vcpu
        yield from qemu_init_vcpu_wait(cpu)
        if kvm is not None:  # cpu_common_realizefn, hotplugged: cpu_synchronize_post_init, then cpu_resume
            yield from run_on_cpu(cpu, do_kvm_cpu_synchronize_post_init, "do_kvm_cpu_synchronize_post_init")
        cpu_resume(cpu)
        ppc_cpu_reset_hold(cpu)  # device_set_realized, hotplugged: the CPU's own reset
        if not settings.hotplug_compat_fix and kvm is not None:
            yield from spapr_cpu_reset_2018(machine, cpu)
        added.append(cpu)
    for cpu in added:  # device_set_realized of the core, hotplugged: spapr_cpu_core_reset
        machine.spapr.spapr_reset_vcpu(cpu)
    mem = machine.guest_memory  # spapr_core_plug: spapr_hotplug_req_add_by_index
    mem.words[DLPAR_WORD] = core_id
    mem.changed.broadcast()
    machine.spapr.spapr_hotplug_req_add_by_index(core_id)  # the event and its interrupt, for an idle guest
    boot_mode = machine.cpus[0].env.compat_pvr  # POWERPC_CPU(first_cpu)->compat_pvr
    for cpu in added:
        machine.trace("spapr_core_plug", cpu=cpu.cpu_index, core_id=core_id)
        yield from machine.spapr.ppc_set_compat(cpu, boot_mode)


def spapr_cpu_reset_2018(machine: Machine, cpu: CPUState) -> Generator[Effect, Any, None]:
    """hw/ppc/spapr_cpu_core.c spapr_cpu_reset before b12a4efb76 ("Fix a deadlock case in the CPU hotplug
    flow", September 2018, QEMU 3.1), called by spapr_realize_vcpu for each new thread once it is realized
    and resumed: cpu_reset - whose cpu_common_reset then set halted = 0 (start_powered_off came in 2020) -
    then ppc_set_compat with the boot CPU's mode (a register get, then KVM_SET_ONE_REG from this thread),
    and only then halted = 1. A running vCPU can enter KVM_RUN, taking its kernel mutex, before the
    KVM_SET_ONE_REG: the main thread then waits for that mutex with the BQL held, for ever. The fix halts
    the vCPU first, so kvm_cpu_exec returns EXCP_HLT before KVM_RUN. (Outside `hotplug_compat_fix = false`
    the model keeps today's order: the CPU reset leaves it halted, start_powered_off, and spapr_core_plug
    sets the mode.)"""
    cpu.halted = False
    machine.trace("spapr_cpu_reset", cpu=cpu.cpu_index, halted=False)
    yield from machine.spapr.ppc_set_compat(cpu, machine.cpus[0].env.compat_pvr)
    cpu.halted = True
