"""CPU hotplug on pseries: `device_add <cpu>-spapr-cpu-core,core-id=N` (DLPAR).

Mirrors hw/ppc/spapr.c `spapr_core_pre_plug` (the checks, in QEMU 7.2's words) and `spapr_core_plug`
(the DRC is attached and the guest hears of it: `spapr_hotplug_req_add_by_index`), hw/ppc/spapr_cpu_core.c
`spapr_cpu_core_realize` -> `spapr_realize_vcpu` (`qemu_init_vcpu` starts the vCPU's thread), and
hw/core/cpu-common.c `cpu_common_realizefn`, which for a hotplugged CPU puts its state into KVM
(`cpu_synchronize_post_init`) and resumes it; the hotplugged device's reset is `spapr_cpu_core_reset`
(-> `spapr_reset_vcpu`): the new CPU is RTAS-stopped, as every secondary after a reset.

Departures: cores are plugged in core-id order (the model indexes CPUs by position); the guest hears of
the new core through a word of guest memory instead of the hotplug interrupt and RTAS event log.
"""

from __future__ import annotations

import functools
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from .cpus import cpu_resume, run_on_cpu
from .effects import Effect
from .kvm import KvmVcpu, Vcore, do_kvm_cpu_synchronize_post_init, kvm_vcpu_thread_fn, kvmppc_core_init_vm_hv
from .ppc import CPU_MODELS, CPUPPCState
from .qmp_cmds import QmpError, core_type
from .tcg import mttcg_cpu_thread_fn

if TYPE_CHECKING:
    from .machine import Machine

DLPAR_WORD = "dlpar:added"  # the guest's view of the hotplug event: the first new CPU's index


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
    for index in range(core_id, core_id + threads):
        cpu = machine.add_cpu(index, CPUPPCState(model))
        if kvm is not None and vcore is not None:
            kvm.vcpus.append(KvmVcpu(vcore))
        machine.trace("spapr_core_plug", cpu=index, core_id=core_id)
        machine.spapr.spapr_reset_vcpu(cpu)  # the hotplugged device's reset: RTAS-stopped
        machine.start_thread(cpu.name, functools.partial(vcpu_fn, cpu))  # qemu_init_vcpu
        added.append(cpu)
    for cpu in added:  # cpu_common_realizefn, hotplugged
        if kvm is not None:
            yield from run_on_cpu(cpu, do_kvm_cpu_synchronize_post_init, "do_kvm_cpu_synchronize_post_init")
        cpu_resume(cpu)
    mem = machine.guest_memory  # spapr_hotplug_req_add_by_index
    mem.words[DLPAR_WORD] = core_id
    mem.changed.broadcast()
