"""Scenario files: TOML data, validated against a schema, never executed.

A scenario file (scenarios/NAME.toml) has:

    description = "..."              # required, text
    qemu = "qemu-system-ppc64 ..."   # required, the command line it models
    [settings]                       # any RunSettings field (see SCHEMA), all optional
    [[expect]]                       # documented verdicts: a variant (settings) and its verdict
    variant = { fix = "quiesced" }
    verdict = "booted"
    reason = "one line from the reference"
    claim = "..."                    # optional: this row checks a claim of the seed's patch

Errors name the file, the key and the problem; the CLI turns them into exit status 2.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import tomllib
from pathlib import Path
from typing import Any, NamedTuple

from .config import (
    ACCELS,
    CLOCKS,
    CPUS,
    ENGINES,
    FIXES,
    MACHINES,
    MAX_SMP,
    PPC_CPUS,
    QEMU_VERSIONS,
    TIMEBASE_RESETS,
    WORKLOADS,
    RunSettings,
)
from .errors import BadInput, shown
from .files import note_input, open_input
from .model.monitor import COMMANDS
from .verdicts import VERDICTS

ENV_DIRS = "VCPU_SCHED_SCENARIOS"  # more scenario directories, os.pathsep-separated, searched first


def _builtin_dir() -> Path:
    """The scenarios that ship with the package (`vcpu_sched.scenarios`, the repository's `scenarios/`
    mapped in pyproject.toml); from a source tree that is not installed, that directory itself."""
    try:
        spec = importlib.util.find_spec("vcpu_sched.scenarios")
    except ModuleNotFoundError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "scenarios"


SCENARIO_DIR = _builtin_dir()
_extra_dirs: list[Path] = []


def add_scenario_dir(path: str) -> None:
    """`--scenarios DIR`: look for scenario names in DIR too, before the built-in ones."""
    directory = Path(path)
    if not directory.is_dir():
        raise BadInput(f"--scenarios {path}: not a directory")
    _extra_dirs.append(directory)


def scenario_dirs() -> list[Path]:
    """Where scenario names are looked up, in order: --scenarios, $VCPU_SCHED_SCENARIOS, the built-in."""
    from_env = [Path(p) for p in os.environ.get(ENV_DIRS, "").split(os.pathsep) if p]
    for directory in from_env:
        if not directory.is_dir():
            raise BadInput(f"{ENV_DIRS}: {directory} is not a directory")
    return [*_extra_dirs, *from_env, SCENARIO_DIR]


def scenario_names() -> list[str]:
    """Every scenario name on the search path (the first directory that has a name wins)."""
    return sorted({p.stem for d in scenario_dirs() for p in d.glob("*.toml")})


MAX_MONITOR_DELAY_MS = 60_000


class Field(NamedTuple):
    """One setting's type and allowed values."""

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    doc: str = ""

    def check(self, where: str, key: str, value: Any) -> Any:
        out_of_range = f"{where}: {key}: {shown(value)} is out of range [{_num(self.low)}, {_num(self.high)}]"
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:  # an integer beyond any float: out of every range
                raise BadInput(out_of_range) from None
        if (self.kind is not bool and isinstance(value, bool)) or type(value) is not self.kind:
            raise BadInput(f"{where}: {key}: expected {self.kind.__name__}, got {type(value).__name__} {shown(value)}")
        if self.choices and value not in self.choices:
            raise BadInput(f"{where}: {key}: {shown(value)} is not one of {', '.join(self.choices)}")
        number: float = value if isinstance(value, int | float) else 0.0
        if isinstance(value, list):
            return value
        if self.low is not None and self.high is not None and not self.low <= number <= self.high:
            raise BadInput(out_of_range)
        return value


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


SCHEMA: dict[str, Field] = {
    "machine": Field(str, choices=MACHINES, doc="QEMU machine type (powernv: TCG and POWER10 only)"),
    "smp": Field(int, 1, MAX_SMP, doc="number of vCPUs"),
    "sockets": Field(int, 1, MAX_SMP),
    "cores": Field(int, 1, MAX_SMP, doc="cores per socket"),
    "threads": Field(int, 1, 8, doc="threads per core (vCPUs sharing a KVM vcore and its LPCR)"),
    "accel": Field(str, choices=ACCELS),
    "cpu": Field(str, choices=CPUS, doc="-cpu host on a POWER10 host is POWER10"),
    "fix": Field(str, choices=FIXES, doc="none = pre-fix QEMU; quiesced = the seed's patch"),
    "timebase_reset": Field(str, choices=TIMEBASE_RESETS, doc="commit e8291ec16da8 applied or reverted"),
    "host_lpcr": Field(int, 0, 2**64 - 1, doc="the KVM host's own LPCR (the vcore LPCR derives from it)"),
    "radix": Field(bool, doc="radix MMU guest (POWER9/10 under KVM)"),
    "seed": Field(int, 0, 2**63 - 1),
    "watchdog_s": Field(float, 0.001, 3600.0, doc="guest seconds a watched thread may stay blocked"),
    "deadline_s": Field(float, 0.001, 86400.0, doc="guest seconds before the run is cut short"),
    "wall_deadline_s": Field(float, 0.1, 3600.0, doc="wall seconds before the run is cut short"),
    "loop_cost_ns": Field(int, 1, 1_000_000_000, doc="host CPU time of one vCPU thread loop turn"),
    "fast_forward": Field(bool, doc="skip identical spinning loop turns (counting them)"),
    "clock": Field(str, choices=CLOCKS),
    "main_loop_hold_ns": Field(int, 0, 10_000_000_000, doc="BQL hold per main-loop turn"),
    "workload": Field(str, choices=WORKLOADS, doc="what the guest does after booting"),
    "boots": Field(int, 1, 10, doc="boots before the workload (more than 1 needs a system_reset)"),
    "loops": Field(int, 1, 100, doc="rounds of the offline-online workload"),
    "engine": Field(str, choices=ENGINES,
                    doc="trio (virtual time), threads (OS threads, real locking), explore (a seeded schedule)"),
    "time_scale": Field(float, 0.001, 1000.0, doc="threads engine: guest seconds per wall second"),
    "monitor": Field(list, doc="[[console pattern, command], ...], commands: " + ", ".join(COMMANDS)),
    "monitor_delay_ms": Field(list, 0, MAX_MONITOR_DELAY_MS,
                              doc="[low, high] or one number: guest ms from a monitor command's pattern to the "
                                  "command, drawn per command from the seed (0: at the pattern's instant)"),
    "cas_pvrs": Field(str, choices=("logical", "raw"),
                      doc="the guest lists logical PVRs at CAS (Linux: ppc_set_compat_all syncs every vCPU) or not"),
    "psscr_ec_kvm": Field(str, choices=("dropped", "kept"),
                          doc="KVM drops PSSCR[EC] (PSSCR_GUEST_VIS) or, what-if, keeps it"),
    "kvm_ail_filter": Field(bool, doc="the kernel refuses H_SET_MODE AIL=3 itself (POWER9 prefetch-bug hosts)"),
    "guest_endian": Field(str, choices=("le", "be"), doc="le: the guest asks for LE exceptions (H_SET_MODE 4)"),
    "kernel_irqchip": Field(bool, doc="in-kernel XICS under KVM, or QEMU's emulated one (kernel-irqchip=off)"),
    "fwnmi_fix": Field(bool, doc="aef92d87c5 applied: ibm,nmi-register's KVM_ENABLE_CAP on the calling vCPU"),
    "crash_cpu": Field(int, -1, MAX_SMP - 1, doc="kdump workload: the CPU that crashes (-1: drawn from the seed)"),
    "sysreset_fix": Field(bool, doc="a1c2dfee4f applied: H_SIGNAL_SYS_RESET skips quiesced (RTAS-stopped) CPUs"),
    "kdump_cpus": Field(int, 1, MAX_SMP, doc="CPUs the kdump kernel brings up (its maxcpus=; 1: RHEL's default)"),
    "kexec_syscall": Field(str, choices=("kexec_load", "kexec_file_load"),
                           doc="how kexec -p loads the kdump kernel, which orders its CPUs: kexec_load (fs2dt: by "
                               "address) or kexec_file_load (update_cpus_node: the live order reversed)"),
    "nmi_fix": Field(bool, doc="what-if, not upstream: spapr_nmi (inject-nmi), the spapr watchdog's dump-restart and "
                               "the unicast H_SIGNAL_SYS_RESET skip quiesced CPUs too"),
    "infer_fix": Field(bool, doc="what-if, not upstream: cpu_post_load takes a halted CPU for quiesced when PSSCR[EC] "
                                 "is set and no LPCR PM bit is"),
    "rtas_stopped_state": Field(bool, doc="with quiesced+migration: the cpu/rtas_stopped subsection is sent "
                                          "(false: machine types pseries-10.0 and older, streams from < 10.0)"),
    "boot_cpus": Field(int, 0, MAX_SMP, doc="CPUs the guest brings up at boot (0: all; the rest stay stopped)"),
    "maxcpus": Field(int, 0, MAX_SMP, doc="-smp maxcpus: CPU slots device_add can fill (0: smp, no hotplug)"),
    "sigp_jitter_us": Field(int, 0, 1_000_000, doc="sigp-cross: 0-N us of extra guest work before each SIGP (seeded)"),
    "sigp_lock": Field(bool, doc="s390x: f9530c3242 applied: one SIGP at a time, condition code 2 (BUSY) to the loser"),
    "force_rcu": Field(bool, doc="ef149763a8 + dd47a8f654 applied: drain_call_rcu kicks TCG vCPUs out of cpu_exec"),
    "pause_cond_broadcast": Field(bool, doc="96bce6831b applied: a stopping vCPU broadcasts qemu_pause_cond "
                                            "(false: qemu_cond_signal, which wakes one waiter)"),
    "vm_stop_fix": Field(bool, doc="f962cac4c2 applied: do_vm_stop sets the run state before pause_all_vcpus, and "
                                   "resume_all_vcpus does nothing unless the VM runs"),
    "hotplug_compat_fix": Field(bool, doc="b12a4efb76 applied: 2018's hotplugged-CPU reset halts the vCPU before "
                                          "ppc_set_compat's KVM_SET_ONE_REG (false: after, so it may be in KVM_RUN)"),
    "stop_current_fix": Field(bool, doc="0ec7e6779f applied: cpu_stop_current sets stop and kicks, where before it "
                                        "marked the vCPU stopped while its thread was still running"),
    "irqchip_fix": Field(bool, doc="afa63fc0e3 applied: kvm_irqchip_create returns early when the kernel has no "
                                   "irqchip, so ppc64 KVM keeps halt-in-kernel off (false: 11.0-rc1 to rc3)"),
    "hlt_bql_patch": Field(bool, doc="what-if, not upstream: the posted \"BQL lock imbalance\" patch, kvm_cpu_exec "
                                     "drops the BQL on its EXCP_HLT return and kvm_vcpu_thread_fn takes it back"),
    "hv_synic": Field(bool, doc="q35: Hyper-V's SynIC on (hv-synic): its MSR writes exit to QEMU, which updates the "
                                "SynIC in an exclusive section (async_safe_run_on_cpu)"),
    "cpu_list_add_fix": Field(bool, doc="e533f45d7d applied: cpu_list_add no longer ends with finish_safe_work, which "
                                        "waited out an exclusive section on the caller's thread, BQL held"),
    "migration_ram_ms": Field(float, 0.0, 600_000.0,
                              doc="`migrate -d`: guest ms the migration thread copies RAM before it completes"),
    "offline_hold_ns": Field(int, 0, 10_000_000_000,
                             doc="offline-online: guest ns the secondaries stay offline in each loop"),
    "qemu_version": Field(str, choices=QEMU_VERSIONS,
                          doc="10.0: qemu_wait_io_event; 10.2: qemu_process_cpu_events, which clears exit_request"),
}


def _monitor_delay(where: str, value: Any) -> tuple[float, float]:
    """`monitor_delay_ms`: one number (always that delay) or [low, high]."""
    pair = value if isinstance(value, list) else [value]
    if not (1 <= len(pair) <= 2 and all(isinstance(x, int | float) and not isinstance(x, bool) for x in pair)):
        raise BadInput(f"{where}: monitor_delay_ms: expected a number or [low, high] of guest ms, got {shown(value)}")
    low, high = float(pair[0]), float(pair[-1])
    if not 0 <= low <= high <= MAX_MONITOR_DELAY_MS:
        raise BadInput(f"{where}: monitor_delay_ms: {shown(value)} is not 0 <= low <= high <= {MAX_MONITOR_DELAY_MS}")
    return low, high


def _monitor(where: str, value: list[Any]) -> tuple[tuple[str, str], ...]:
    pairs = []
    for i, item in enumerate(value):
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
            raise BadInput(f"{where}: monitor[{i}]: expected [\"console pattern\", \"command\"], got {shown(item)}")
        words = item[1].split()
        if item[1] not in COMMANDS and words[:1] != ["device_add"] and not (words[:2] == ["migrate", "-d"]
                                                                          and len(words) == 3):
            raise BadInput(f"{where}: monitor[{i}]: unknown command {shown(item[1])} (known: {', '.join(COMMANDS)})")
        pairs.append((item[0], item[1]))
    return tuple(pairs)

TOP_KEYS = {"description", "qemu", "settings", "expect"}
EXPECT_KEYS = {"variant", "verdict", "reason", "claim", "derive"}


class Expectation(NamedTuple):
    variant: dict[str, Any]
    verdict: str
    reason: str
    claim: str | None = None
    derive: bool = True  # matrix: the same verdict with the other CPU models and 2 and 256 vCPUs


class Scenario(NamedTuple):
    name: str
    path: Path
    description: str
    qemu: str
    settings: RunSettings
    expect: tuple[Expectation, ...] = ()


def check_settings(where: str, values: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in values.items():
        spec = SCHEMA.get(key)
        if spec is None:
            raise BadInput(f"{where}: unknown key {key!r} (known: {', '.join(sorted(SCHEMA))})")
        if key == "monitor_delay_ms":
            checked[key] = _monitor_delay(where, value)
        elif key == "monitor":
            checked[key] = _monitor(where, spec.check(where, key, value))
        else:
            checked[key] = spec.check(where, key, value)
    return checked


def apply(base: RunSettings, overrides: dict[str, Any], where: str) -> RunSettings:
    """Settings with overrides applied; -smp N alone gives one socket of N single-thread cores, as
    QEMU would, unless the topology is given too. The topology must multiply out to smp."""
    values = check_settings(where, {k: v for k, v in overrides.items() if v is not None})
    merged = dataclasses.replace(base, **values)
    if "smp" in values and not {"sockets", "cores", "threads"} & values.keys():
        merged = dataclasses.replace(merged, sockets=1, cores=values["smp"], threads=1)
    if merged.sockets * merged.cores * merged.threads != merged.smp:
        raise BadInput(f"{where}: smp={merged.smp} does not match sockets={merged.sockets} x "
                       f"cores={merged.cores} x threads={merged.threads}")
    _check_engine(where, values, merged)
    _check_cpu_numbers(where, merged)
    if merged.watchdog_s >= merged.deadline_s:
        raise BadInput(f"{where}: watchdog_s={merged.watchdog_s:g} must be shorter than deadline_s="
                       f"{merged.deadline_s:g}, or the run meets its deadline before the watchdog can fire")
    resets = sum(1 for _, command in merged.monitor if command == "system_reset")
    if merged.boots > resets + 1 and merged.workload != "reboot":
        raise BadInput(f"{where}: boots={merged.boots} needs {merged.boots - 1} monitor system_reset "
                       f"command(s) to boot again, or workload=reboot; the monitor script has {resets}")
    if merged.maxcpus and (merged.maxcpus < merged.smp or merged.maxcpus % merged.threads):
        raise BadInput(f"{where}: maxcpus={merged.maxcpus} must be at least smp={merged.smp} and whole cores of "
                       f"{merged.threads} threads")
    wanted_cpu = {"s390-ccw-virtio": ("z16",), "q35": ("Skylake-Server",)}.get(merged.machine, PPC_CPUS)
    if merged.cpu not in wanted_cpu:
        raise BadInput(f"{where}: cpu: {merged.cpu} does not fit machine {merged.machine} (s390-ccw-virtio takes z16, "
                       "q35 Skylake-Server, the POWER machines POWER8-10)")
    if merged.machine == "q35":
        _check_q35(where, merged)
    if merged.machine == "s390-ccw-virtio" and merged.accel != "kvm":
        raise BadInput(f"{where}: accel: the s390x model has KVM only (its TCG SIGP path is not modelled)")
    if merged.machine == "s390-ccw-virtio" and any(command == "migrate" for _, command in merged.monitor):
        raise BadInput(f"{where}: monitor: migrate is modelled for the POWER machines only")
    if merged.machine != "pseries" and any(command == "nmi" for _, command in merged.monitor):
        raise BadInput(f"{where}: monitor: nmi is modelled for pseries only")
    if merged.machine == "powernv":
        if merged.accel != "tcg":
            raise BadInput(f"{where}: accel: the powernv machine does not support the KVM accelerator")
        if merged.cpu != "POWER10":
            raise BadInput(f"{where}: cpu: the powernv model has the POWER10 core direct controls only")
        if merged.threads < 2:
            raise BadInput(f"{where}: threads: the powernv scenario stops thread 1 of core 0: threads >= 2")
    return merged


def _check_q35(where: str, merged: RunSettings) -> None:
    """What the x86 model has: KVM with the in-kernel irqchip, a boot and CPU hot-add."""
    if merged.accel != "kvm":
        raise BadInput(f"{where}: accel: the q35 model has KVM only")
    if merged.workload not in ("none", "hotplug-online"):
        raise BadInput(f"{where}: workload: {merged.workload} is not modelled on q35 (none, hotplug-online)")
    if merged.threads != 1:
        raise BadInput(f"{where}: threads: the q35 model has one thread a core")
    for _, command in merged.monitor:
        if command.split()[0] not in ("device_add", "stop", "cont"):
            raise BadInput(f"{where}: monitor: {command.split()[0]} is not modelled on q35 (device_add, stop, cont)")


def _check_engine(where: str, values: dict[str, Any], merged: RunSettings) -> None:
    """A clock given with (or after) an engine that has none of that kind: refused from a scenario file,
    --set or --clock alike."""
    if "clock" not in values:
        return
    if merged.engine == "threads" and merged.clock == "virtual":
        raise BadInput(f"{where}: clock: virtual: the threads engine runs in real time "
                       "(guest time = wall time x time_scale)")
    if merged.engine == "explore":
        raise BadInput(f"{where}: clock: {merged.clock}: the explore engine has no clock; its steps take no time")


def _check_cpu_numbers(where: str, merged: RunSettings) -> None:
    """Settings that name a CPU, or count CPUs, within the machine's CPUs (smp, or maxcpus with hotplug)."""
    slots = max(merged.smp, merged.maxcpus)
    if merged.crash_cpu >= slots:
        raise BadInput(f"{where}: crash_cpu={merged.crash_cpu} is not a CPU of this machine (CPUs 0 to {slots - 1}; "
                       "-1: drawn from the seed)")
    if merged.boot_cpus > merged.smp:
        raise BadInput(f"{where}: boot_cpus={merged.boot_cpus} is more than smp={merged.smp}")
    if merged.kdump_cpus > slots:
        raise BadInput(f"{where}: kdump_cpus={merged.kdump_cpus} is more than the machine's {slots} CPUs")


DEFAULT_SCENARIO = "spapr-rtas-stopped"  # the seed's guest
_MACHINE_SCENARIOS = {"powernv": "powernv-core-stop-start", "s390-ccw-virtio": "s390x-sigp-cross"}


def default_scenario(machine_type: str | None = None) -> str:
    """The scenario a command line without one runs: the seed's, or the first of another machine type."""
    return _MACHINE_SCENARIOS.get(machine_type or "", DEFAULT_SCENARIO)


def check_machine(scenario: Scenario, machine_type: str, where: str) -> None:
    """A QEMU command line and the scenario it runs must describe the same machine type."""
    if machine_type != scenario.settings.machine:
        raise BadInput(f"{where} describes a {machine_type} machine, but scenario {scenario.name} is "
                       f"{scenario.settings.machine}")


def resolve(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise BadInput(f"{name_or_path}: no such scenario file")
        return path  # load refuses what is not a regular file (a FIFO is never waited on)
    for directory in scenario_dirs():
        candidate = directory / f"{name_or_path}.toml"
        if candidate.exists():
            return candidate
    known = ", ".join(scenario_names()) or "none"
    raise BadInput(f"unknown scenario {name_or_path!r} (known: {known})")


def parse_toml(where: str, text: str) -> dict[str, Any]:
    """TOML text, with every way tomllib fails as bad input: a syntax error, a number beyond Python's
    int-string limit (a ValueError), arrays or tables nested deeper than the recursion limit."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{where}: not valid TOML: {e}") from None
    except ValueError as e:
        raise BadInput(f"{where}: not valid TOML: a number too long ({str(e).split(';')[0]})") from None
    except RecursionError:
        raise BadInput(f"{where}: not valid TOML: arrays or tables nested too deep") from None


def read_input(where: str, path: Path) -> str:
    """A text input file: a regular file, read without blocking on a FIFO, as UTF-8."""
    try:
        with open_input(where, path) as stream:
            return stream.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadInput(f"{where}: not UTF-8 text: {e.reason} at byte {e.start}") from None
    except OSError as e:
        raise BadInput(f"{where}: cannot read: {e.strerror}") from None


def load(name_or_path: str) -> Scenario:
    path = resolve(name_or_path)
    where = str(path)
    note_input(path)
    data = parse_toml(where, read_input(where, path))
    unknown = data.keys() - TOP_KEYS
    if unknown:
        raise BadInput(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
    for key in ("description", "qemu"):
        if not isinstance(data.get(key), str):
            raise BadInput(f"{where}: {key}: required, must be text")
    table = data.get("settings", {})
    if not isinstance(table, dict):
        raise BadInput(f"{where}: settings: must be a table")
    settings = apply(RunSettings(scenario=path.stem), table, f"{where}: settings")
    expects = []
    raw_expect = data.get("expect", [])
    if not isinstance(raw_expect, list):
        raise BadInput(f"{where}: expect: must be an array of tables ([[expect]])")
    for i, item in enumerate(raw_expect):
        at = f"{where}: expect[{i}]"
        if not isinstance(item, dict):
            raise BadInput(f"{at}: must be a table")
        if item.keys() - EXPECT_KEYS:
            raise BadInput(f"{at}: unknown key {sorted(item.keys() - EXPECT_KEYS)[0]!r}")
        variant = item.get("variant", {})
        if not isinstance(variant, dict):
            raise BadInput(f"{at}: variant: must be a table")
        check_settings(f"{at}: variant", variant)
        if item.get("verdict") not in VERDICTS:
            raise BadInput(f"{at}: verdict: {item.get('verdict')!r} is not one of {', '.join(VERDICTS)}")
        if not isinstance(item.get("reason"), str):
            raise BadInput(f"{at}: reason: required, must be text")
        if not isinstance(item.get("claim", ""), str):
            raise BadInput(f"{at}: claim: must be text")
        if not isinstance(item.get("derive", True), bool):
            raise BadInput(f"{at}: derive: must be true or false")
        expects.append(Expectation(dict(variant), item["verdict"], item["reason"], item.get("claim"),
                                   item.get("derive", True)))
    return Scenario(path.stem, path, data["description"], data["qemu"], settings, tuple(expects))
