"""The in-band QMP commands, run by the main loop with the BQL held (QEMU dispatches them from a bottom half
of the main loop: monitor/qmp.c monitor_qmp_dispatcher_co), so a vCPU that keeps the BQL leaves every one
unanswered.

Mirrors monitor/qmp-cmds.c (`qmp_stop`, `qmp_cont`, `qmp_system_reset`, `qmp_quit`, `qmp_query_name`,
`qmp_query_kvm`), system/runstate.c (`qmp_query_status`, the reset and shutdown requests with their
RESET/SHUTDOWN events), hw/core/machine-qmp-cmds.c (`qmp_query_cpus_fast`, `qmp_query_hotpluggable_cpus`)
and monitor/hmp-cmds.c (`info status`, `info cpus`). Answers take the shapes real QEMU 7.2 gives
(tests/data/qmp-7.2/transcript.jsonl).
"""

from __future__ import annotations

import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ..probe import PACKAGE as PACKAGE  # qmp.py's
from ..probe import PROBE_VERSIONS, greeting_version, recorded, recorded_commands
from ..versions import release_key
from .effects import Effect
from .hotplug import core_type
from .monitor import monitor_command, qmp_device_add
from .qapi import QmpError
from .runstate import runstate_needs_reset

if TYPE_CHECKING:
    from .machine import Machine

QEMU_VERSION = {"major": 10, "minor": 0, "micro": 13}  # the QEMU the model follows
# command -> (required arguments, optional arguments) with their JSON types
COMMANDS: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    "qmp_capabilities": ({}, {"enable": list}),
    "query-status": ({}, {}), "query-cpus-fast": ({}, {}), "query-hotpluggable-cpus": ({}, {}),
    "stop": ({}, {}), "cont": ({}, {}), "system_reset": ({}, {}), "quit": ({}, {}),
    "human-monitor-command": ({"command-line": str}, {"cpu-index": int}),
    "query-version": ({}, {}), "query-name": ({}, {}), "query-kvm": ({}, {}), "query-yank": ({}, {}),
    "query-commands": ({}, {}), "inject-nmi": ({}, {}),
    "device_add": ({}, {"driver": str, "id": str, "bus": str, "core-id": int, "node-id": int}),
    "yank": ({"instances": list}, {}), "migrate-pause": ({}, {}), "migrate-recover": ({"uri": str}, {}),
    "query-migrate-capabilities": ({}, {}), "query-chardev": ({}, {}), "qom-list": ({"path": str}, {}),
    "device_del": ({"id": str}, {}), "system_powerdown": ({}, {}),
    "migrate-set-capabilities": ({"capabilities": list}, {}),
}
# Each machine's migration capabilities that differ from the default (all off): libvirt sets `events` at start.
# Each machine's monitor chardevs, (label, filename), as the command line made them (qemu_command.py).
CHARDEVS: weakref.WeakKeyDictionary[Machine, list[tuple[str, str]]] = weakref.WeakKeyDictionary()
# Each machine's -device lines with an id, (id, driver): not modelled, but QOM names them (qemu_command.py).
PERIPHERALS: weakref.WeakKeyDictionary[Machine, list[tuple[str, str]]] = weakref.WeakKeyDictionary()
# Each machine's cores hot-added over QMP, in order: core index -> its id (/machine/peripheral/ID in QOM), or
# None (/machine/peripheral-anon/device[N], N counting the anonymous devices in the order they came)
_CORE_IDS: weakref.WeakKeyDictionary[Machine, dict[int, str | None]] = weakref.WeakKeyDictionary()
_CAPABILITIES: weakref.WeakKeyDictionary[Machine, dict[str, bool]] = weakref.WeakKeyDictionary()



def qemu_version(machine: Machine) -> dict[str, int]:
    """The version the greeting and query-version give: the recorded binary's for a recorded release
    (--qemu-version 7.2 or 11.1), X.Y.0 for another given release, else the QEMU the model follows."""
    version = machine.settings.qemu_version
    if version in PROBE_VERSIONS:
        return greeting_version(version)
    if version == "10.0":
        return QEMU_VERSION
    major, minor = release_key(version)
    return {"major": major, "minor": minor, "micro": 0}


def drops_singlestep(machine: Machine) -> bool:
    """StatusInfo's deprecated `singlestep` went in 9.0 (fe17522d85, VERSION 8.2.50). A recorded release
    answers as its binary; otherwise query-status keeps 7.2's shape (tests/data/qmp-7.2/transcript.jsonl)."""
    version = machine.settings.qemu_version
    return version in PROBE_VERSIONS and release_key(version) >= (9, 0)


def qom_list(machine: Machine, path: str) -> list[dict[str, str]]:
    """qom/qom-qmp-cmds.c qmp_qom_list, for the one container libvirt lists: /machine/peripheral, the
    devices given an id (on the command line or by device_add)."""
    if path.rstrip("/") != "/machine/peripheral":
        raise QmpError("DeviceNotFound", f"Device '{path}' not found")
    return [{"name": "type", "type": "string"}] + [{"name": dev_id, "type": f"child<{driver}>"}
                                                  for dev_id, driver in PERIPHERALS.get(machine, [])]


def migrate_capabilities(machine: Machine) -> list[dict[str, Any]]:
    """query-migrate-capabilities: the release's capabilities (its recorded list; 11.1's from 9.0 on, else
    7.2's), each off unless migrate-set-capabilities turned it on."""
    version = machine.settings.qemu_version
    if version not in PROBE_VERSIONS:
        version = "11.1" if release_key(version) >= (9, 0) else "7.2"
    answer = recorded(version, "query-migrate-capabilities", {})
    assert answer is not None
    states = _CAPABILITIES.get(machine, {})
    return [{"capability": c["capability"], "state": states.get(c["capability"], c["state"])}
            for c in answer["return"]]


def migrate_set_capabilities(machine: Machine, capabilities: list[Any]) -> None:
    """migration/options.c qmp_migrate_set_capabilities, with the QAPI input visitor's errors."""
    names = {c["capability"] for c in migrate_capabilities(machine)}
    wanted: dict[str, bool] = {}
    for i, item in enumerate(capabilities):
        where = f"capabilities[{i}]"
        if not isinstance(item, dict):
            raise QmpError("GenericError", f"Invalid parameter type for '{where}', expected: object")
        for key in item:
            if key not in ("capability", "state"):
                raise QmpError("GenericError", f"Parameter '{where}.{key}' is unexpected")
        for key, kind, name in (("capability", str, "string"), ("state", bool, "boolean")):
            if key not in item:
                raise QmpError("GenericError", f"Parameter '{where}.{key}' is missing")
            if not isinstance(item[key], kind):
                raise QmpError("GenericError", f"Invalid parameter type for '{where}.{key}', expected: {name}")
        if item["capability"] not in names:
            raise QmpError("GenericError", f"Parameter '{where}.capability' does not accept value "
                                           f"'{item['capability']}'")
        wanted[item["capability"]] = item["state"]
    _CAPABILITIES.setdefault(machine, {}).update(wanted)


def known(machine: Machine, name: str) -> bool:
    """A command this run answers: the model's, or one the real binary of its release answered libvirt."""
    return name in COMMANDS or name in recorded_commands(machine.settings.qemu_version)


# No migration runs in the model: what QEMU answers then (migration/migration.c).
MIGRATE_ERRORS = {"migrate-pause": "migrate-pause is currently only supported during postcopy-active state",
                  "migrate-recover": "Migrate recover can only be run when postcopy is paused."}


def qmp_query_cpus_fast(machine: Machine) -> list[dict[str, Any]]:
    if machine.s390 is not None:
        return s390_query_cpus_fast(machine)
    threads = machine.settings.threads
    # CpuInfoFast's qom-type came in 10.1 (6ca2eba6d3, VERSION 10.0.50): the CPU's type, its core's less
    # "-spapr-cpu-core"; the default (10.0) keeps 7.2's shape, as query-status does
    version = machine.settings.qemu_version
    qom_type = (core_type(machine).removesuffix("-spapr-cpu-core") + "-powerpc64-cpu"
                if version != "10.0" and release_key(version) >= (10, 1) else None)
    out = []
    for cpu in machine.cpus:
        core = cpu.cpu_index // threads
        info: dict[str, Any] = {
            "cpu-index": cpu.cpu_index, "props": {"core-id": core * threads, "node-id": 0},
            "qom-path": f"{core_path(machine, core)}/thread[{cpu.cpu_index % threads}]",
            "target": "ppc64", "thread-id": machine.thread_ids.get(cpu.name, 0)}
        out.append(info if qom_type is None else info | {"qom-type": qom_type})
    return out


def s390_query_cpus_fast(machine: Machine) -> list[dict[str, Any]]:
    """The s390x shape: one CPU a core, and CpuInfoS390's `cpu-state` (qapi/machine.json)."""
    from .s390x.cpu import STATE_NAMES

    return [{"cpu-index": cpu.cpu_index, "props": {"core-id": cpu.cpu_index},
             "qom-path": f"/machine/unattached/device[{cpu.cpu_index + 1}]", "target": "s390x",
             "thread-id": machine.thread_ids.get(cpu.name, 0), "cpu-state": STATE_NAMES[cpu.env.cpu_state].lower()}
            for cpu in machine.cpus]


def qmp_query_hotpluggable_cpus(machine: Machine) -> list[dict[str, Any]]:
    if machine.s390 is not None:  # s390x hotplugs CPUs, not cores: host-s390x-cpu under -cpu host
        return [{"props": {"core-id": cpu.cpu_index}, "qom-path": f"/machine/unattached/device[{cpu.cpu_index + 1}]",
                 "type": "host-s390x-cpu", "vcpus-count": 1} for cpu in reversed(machine.cpus)]
    settings = machine.settings
    threads = settings.threads
    out = []
    for core in reversed(range((settings.maxcpus or settings.smp) // threads)):
        slot: dict[str, Any] = {"props": {"core-id": core * threads, "node-id": 0},
                                "type": core_type(machine), "vcpus-count": threads}
        if core * threads < len(machine.cpus):
            slot["qom-path"] = core_path(machine, core)
        out.append(slot)
    return out


def core_path(machine: Machine, core: int) -> str:
    """A plugged core's QOM path: a booted one's under /machine/unattached, a hot-added one's under
    /machine/peripheral/ID when device_add gave it an id (qdev_set_id), else /machine/peripheral-anon."""
    booted = machine.settings.smp // machine.settings.threads
    if core < booted:
        return f"/machine/unattached/device[{core + 1}]"
    plugged = _CORE_IDS.get(machine, {})
    if core not in plugged:  # plugged by the scenario, not over QMP: in slot order
        return f"/machine/peripheral-anon/device[{core - booted}]"
    if plugged[core] is not None:
        return f"/machine/peripheral/{plugged[core]}"
    anonymous = [c for c, dev_id in plugged.items() if dev_id is None]  # in the order device_add made them
    return f"/machine/peripheral-anon/device[{anonymous.index(core)}]"


def hmp(machine: Machine, command_line: str) -> str:
    words = command_line.split()
    if words[:2] == ["info", "status"]:
        state = machine.runstate
        return "VM status: running\r\n" if state == "running" else (
            f"VM status: paused{f' ({state})' if state != 'paused' else ''}\r\n")
    if words[:2] == ["info", "cpus"]:
        return "".join(f"{'*' if cpu.cpu_index == 0 else ' '} CPU #{cpu.cpu_index}: "
                       f"thread_id={machine.thread_ids.get(cpu.name, 0)}\r\n" for cpu in machine.cpus)
    if words == ["nmi"] and machine.settings.machine == "pseries":
        machine.spapr.spapr_nmi()  # hmp_nmi
        return ""
    return f"unknown command: '{command_line}'\r\n"


def qmp_dispatch(machine: Machine, name: str, args: dict[str, Any]) -> Generator[Effect, Any, Any]:
    """Run one in-band command on the main thread, BQL held: its `return` value, or QmpError."""
    machine.trace("monitor_command", command=f"qmp {name}")
    if name == "qmp_capabilities":
        return {}  # the monitor's mode changes on the I/O side once this answer comes back
    if name == "query-version":
        return {"qemu": qemu_version(machine), "package": PACKAGE}
    if name == "query-commands":
        return [{"name": command} for command in sorted(set(COMMANDS)
                                                        | recorded_commands(machine.settings.qemu_version))]
    if name == "query-yank":
        return [{"id": machine.qmp_chardev, "type": "chardev"}]
    if name == "yank":
        return {}
    if name in MIGRATE_ERRORS:
        raise QmpError("GenericError", MIGRATE_ERRORS[name])
    if name == "query-chardev":  # the monitors only: the model has no other character device
        return [{"filename": filename, "frontend-open": True, "label": label}
                for label, filename in CHARDEVS.get(machine, [])]
    if name == "device_del":  # system/qdev-monitor.c qmp_device_del, find_device_state's words
        dev_id = str(args["id"])
        if dev_id not in {known_id for known_id, _ in PERIPHERALS.get(machine, [])}:
            raise QmpError("DeviceNotFound", f"Device '{dev_id}' not found")
        raise QmpError("GenericError", f"vcpu-sched: device_del {dev_id}: unplugging is not modelled yet (issue 29)")
    if name == "qom-list":
        return qom_list(machine, str(args["path"]))
    if name == "query-migrate-capabilities":
        return migrate_capabilities(machine)
    if name == "migrate-set-capabilities":
        migrate_set_capabilities(machine, args["capabilities"])
        return {}
    if name == "query-status":
        status: dict[str, Any] = {"running": machine.runstate == "running", "status": machine.runstate}
        return status if drops_singlestep(machine) else status | {"singlestep": False}
    if name == "query-cpus-fast":
        return qmp_query_cpus_fast(machine)
    if name == "query-hotpluggable-cpus":
        return qmp_query_hotpluggable_cpus(machine)
    if name == "stop":
        if machine.runstate == "running":
            yield from monitor_command(machine, "stop")
            machine.qmp_event("STOP", None)
        return {}
    if name == "cont":
        if runstate_needs_reset(machine):  # qmp_cont
            raise QmpError("GenericError", "Resetting the Virtual Machine is required")
        if machine.runstate != "running":
            yield from monitor_command(machine, "cont")
            machine.qmp_event("RESUME", None)
        return {}
    if name == "system_reset":
        yield from monitor_command(machine, "system_reset")
        machine.qmp_event("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
        if machine.runstate not in ("running", "inmigrate", "finish-migrate"):  # main_loop_should_exit's reset
            machine.runstate = "prelaunch"
        return {}
    if name == "system_powerdown":  # qemu_system_powerdown: the event, then the powerdown notifiers
        machine.qmp_event("POWERDOWN", None)
        if machine.settings.machine == "pseries":  # spapr's: an EPOW event for the guest (spapr_events.c)
            machine.spapr.spapr_powerdown_req()
        return {}
    if name == "quit":
        machine.qmp_event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        machine.quit_requested = True
        return {}
    if name == "inject-nmi":
        if machine.settings.machine != "pseries":
            raise QmpError("GenericError", "This command is not currently supported")
        yield from monitor_command(machine, "nmi")
        return {}
    if name == "device_add":  # 'gen': false in the schema: qmp_device_add checks the arguments itself
        error = yield from qmp_device_add(machine, args)
        if error is not None:
            raise QmpError("GenericError", error)
        new_id: str | None = args["id"] if isinstance(args.get("id"), str) else None  # qdev_set_id
        _CORE_IDS.setdefault(machine, {})[int(args.get("core-id", 0)) // machine.settings.threads] = new_id
        if new_id is not None:
            PERIPHERALS.setdefault(machine, []).append((new_id, str(args["driver"])))
        return {}
    if name == "human-monitor-command":
        return hmp(machine, str(args["command-line"]))
    if name == "query-name":
        return {"name": machine.name} if machine.name else {}
    if name == "query-kvm":
        kvm = machine.settings.accel == "kvm"
        return {"enabled": kvm, "present": kvm}
    answer = recorded(machine.settings.qemu_version, name, args)  # static: as the real binary answered
    if answer is not None:
        if "error" in answer:
            raise QmpError(answer["error"]["class"], answer["error"]["desc"])
        return answer["return"]
    if name in recorded_commands(machine.settings.qemu_version):
        raise QmpError("GenericError", f"vcpu-sched: {name} with these arguments was not recorded from QEMU "
                                       f"{machine.settings.qemu_version}")
    raise QmpError("CommandNotFound", f"The command {name} has not been found")
