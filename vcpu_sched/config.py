"""The settings of one run: a frozen record built from a scenario file and CLI overrides."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from .errors import BadInput
from .versions import RELEASES

# The vCPU loop of a release (versions.py): before 10.2 (the seed's Tested-by is 9.2.90 / 10.0),
# qemu_wait_io_event; from 10.2, after 871de7078f (rename to qemu_process_cpu_events, September 2025) and
# 9a191d3782 (it clears exit_request first; kvm_cpu_exec and tcg_cpu_exec no longer do).
QEMU_VERSIONS = RELEASES
FIXES = ("none", "quiesced", "quiesced+migration", "lpcr-sync", "quiesced+lpcr-sync")
WORKLOADS = ("none", "ipi-check", "offline-online", "smt-off-on", "offline-kdump", "smt-off-kdump", "kdump",
             "online-rest", "busy-loop", "hotplug-online", "hotplug-kdump", "idle", "sigp-cross", "watchdog-dump",
             "sysreset-kdump", "reboot")
MACHINES = ("pseries", "powernv", "s390-ccw-virtio", "q35")
TIMEBASE_RESETS = ("applied", "reverted")
ACCELS = ("kvm", "tcg")
PPC_CPUS = ("POWER8", "POWER9", "POWER10")
CPUS = (*PPC_CPUS, "z16", "Skylake-Server")  # z16: the s390-ccw-virtio machine; Skylake-Server: q35
CLOCKS = ("virtual", "real")
LOG_FORMATS = ("jsonl", "qemu-trace")
# The names of engine.ENGINES (a test keeps the two equal): the settings sit below the engines and must not
# import them.
ENGINES = ("trio", "threads", "explore")
MAX_SMP = 2048

# A KVM-HV host's own LPCR on POWER9/10: Linux sets PECE0-2 (= EEE|DEE|OEE) in init_LPCR_ISA300 and
# PECEDH (HDEE) and HVEE in the POWER9/10 set-up; LPES0|LPES1. kvmppc_core_init_vm_hv keeps PECE and LPES,
# which gives the vcore LPCR 0x54f41f (low 32 bits) of the reference's vectors.
DEFAULT_HOST_LPCR = 0x0000400000000000 | 0xF000 | 0x8 | 0x4


@dataclass(frozen=True)
class RunSettings:
    """Everything a run depends on. A run is a function of these (and nothing else)."""

    scenario: str = "spapr-rtas-stopped"
    machine: str = "pseries"
    smp: int = 32
    sockets: int = 1
    cores: int = 32
    threads: int = 1
    accel: str = "kvm"
    cpu: str = "POWER10"
    fix: str = "none"
    timebase_reset: str = "applied"
    host_lpcr: int = DEFAULT_HOST_LPCR
    radix: bool = True
    seed: int = 0
    watchdog_s: float = 20.0
    deadline_s: float = 600.0
    wall_deadline_s: float = 60.0
    loop_cost_ns: int = 1000
    fast_forward: bool = True
    clock: str = "virtual"
    main_loop_hold_ns: int = 0
    workload: str = "none"
    boots: int = 1
    loops: int = 1
    monitor: tuple[tuple[str, str], ...] = ()
    # After a monitor command's console pattern shows, the command comes this long later (guest ms): drawn for
    # each command from the seed within [low, high]. A management tool or a person acts a moment after what
    # they see, most often while the guest idles; (0, 0) acts at the pattern's instant. `vcpu-sched real`
    # waits the same delay before it sends the command.
    monitor_delay_ms: tuple[float, float] = (0.0, 500.0)
    engine: str = "trio"
    time_scale: float = 20.0  # threads engine: guest seconds per wall second
    # The open questions only hardware can settle (review section 5), as switches; defaults are the code's.
    cas_pvrs: str = "logical"  # the guest lists logical PVRs at CAS (Linux) or only the raw one
    psscr_ec_kvm: str = "dropped"  # KVM stores PSSCR masked with PSSCR_GUEST_VIS (no EC) or keeps EC
    kvm_ail_filter: bool = False  # the kernel refuses AIL=3 itself (POWER9 radix prefetch-bug hosts)
    guest_endian: str = "le"  # a little-endian kernel asks for LE exceptions (H_SET_MODE resource 4)
    kernel_irqchip: bool = True  # in-kernel XICS (H_IPI/H_EOI never reach QEMU) or QEMU's emulated one
    qemu_version: str = "10.0"  # the vCPU loop of this QEMU: see QEMU_VERSIONS
    fwnmi_fix: bool = True  # aef92d87c5 (2020): ibm,nmi-register's KVM ioctl on the calling vCPU
    crash_cpu: int = -1  # the kdump workload: the CPU that crashes (-1: drawn from the seed)
    sysreset_fix: bool = True  # a1c2dfee4f (2026): H_SIGNAL_SYS_RESET skips quiesced (RTAS-stopped) CPUs
    kdump_cpus: int = 1  # CPUs the kdump kernel brings up (its maxcpus=; 1 is RHEL's kdump default)
    # How `kexec -p` loads the kdump kernel, which decides the CPU order of its device tree (kdump.kdump_fdt_cpus):
    # kexec_load (kexec-tools fs2dt, by unit address; bookworm's 2.0.25 default) or kexec_file_load.
    kexec_syscall: str = "kexec_load"
    nmi_fix: bool = False  # what-if: spapr_nmi, watchdog dump-restart, unicast H_SIGNAL_SYS_RESET skip quiesced CPUs
    infer_fix: bool = False  # what-if, not upstream: cpu_post_load infers quiesced with no LPCR PM bit set
    rtas_stopped_state: bool = True  # quiesced+migration: the CPU property (false for pseries-10.0 types)
    boot_cpus: int = 0  # CPUs the guest brings up at boot (0: all); the others stay RTAS-stopped
    offline_hold_ns: int = 0  # offline-online workload: how long the secondaries stay offline each loop
    maxcpus: int = 0  # -smp maxcpus: CPU slots a device_add can fill (0: smp, no hotplug)
    sigp_jitter_us: int = 0  # sigp-cross workload: extra guest work before each SIGP, 0-N us from the seed
    sigp_lock: bool = True  # f9530c3242 (2016): s390x SIGPs one at a time, BUSY on contention
    force_rcu: bool = True  # ef149763a8 + dd47a8f654 (2021): drain_call_rcu kicks TCG vCPUs out of cpu_exec
    pause_cond_broadcast: bool = True  # 96bce6831b (2016): a stopping vCPU broadcasts qemu_pause_cond, not signals
    vm_stop_fix: bool = True  # f962cac4c2 (2020): do_vm_stop sets the run state first; resume_all_vcpus checks it
    hotplug_compat_fix: bool = True  # b12a4efb76 (2018): a hotplugged vCPU is halted before ppc_set_compat
    stop_current_fix: bool = True  # 0ec7e6779f (2019): cpu_stop_current asks the vCPU to stop, not marks it stopped
    irqchip_fix: bool = True  # afa63fc0e3 (April 2026, 11.0-rc4): no irqchip created, no halt-in-kernel on ppc
    hlt_bql_patch: bool = False  # what-if: the April 2026 posted patch dropping the BQL on kvm_cpu_exec's EXCP_HLT
    hv_synic: bool = True  # q35: -cpu ...,hv-synic (KVM_CAP_HYPERV_SYNIC): SynIC MSR writes reach QEMU
    cpu_list_add_fix: bool = True  # e533f45d7d (2019): cpu_list_add no longer ends with finish_safe_work
    migration_ram_ms: float = 5.0  # `migrate -d`: guest ms the migration thread copies RAM before it completes

    @property
    def plain_boot(self) -> bool:
        """A scenario that is one pseries boot and nothing else: success is called "booted"."""
        return self.machine != "powernv" and self.workload == "none" and self.boots == 1 and not self.monitor

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["monitor"] = [list(pair) for pair in self.monitor]
        values["monitor_delay_ms"] = list(self.monitor_delay_ms)
        return values

    def monitor_delay_ns(self, entry: int) -> int:
        """How long after its pattern shows the monitor script's command number `entry` comes (the seed's draw)."""
        low, high = self.monitor_delay_ms
        if low == high:
            return round(low * 1e6)
        return round(random.Random(f"monitor-delay:{self.seed}:{entry}").uniform(low, high) * 1e6)


def parse_set(item: str) -> tuple[str, Any]:
    """`KEY=VALUE` with VALUE in TOML syntax (42, 2.5, true, 0x8); anything else is taken as text."""
    import tomllib

    key, sep, text = item.partition("=")
    if not sep or not key:
        raise BadInput(f"--set {item!r}: expected KEY=VALUE")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    except ValueError:  # an integer beyond Python's int-string limit
        raise BadInput(f"--set {key.strip()}: a number too long") from None
    except RecursionError:
        raise BadInput(f"--set {key.strip()}: arrays or tables nested too deep") from None
    return key.strip(), value
