"""`vcpu-sched run --qemu "<qemu-system-ppc64 options>"`: settings from a QEMU command line.

Understood: `-machine`/`-M` TYPE[,accel=kvm|tcg,...] (pseries, pseries-X.Y, powernv, powernv10, and
qemu-system-s390x's s390-ccw-virtio, s390-ccw-virtio-X.Y, which the model runs under KVM with `-cpu host`
a z16),
`-accel` kvm|tcg, `-enable-kvm`, `-smp` N[,sockets=,cores=,threads=,maxcpus=] (missing topology values
are filled as QEMU does, preferring cores), `-cpu` host|POWER8|POWER9|POWER10 (with QEMU's spellings,
e.g. power10, POWER10_v2.0). `-cpu host` means the host's CPU and needs KVM; the model takes the seed's
POWER10 host. QEMU's default accelerator is TCG. Everything else does not matter to the model and is
reported as ignored. Contradictions (two accelerators, a topology that does not multiply out, `-cpu
host` under TCG, powernv with KVM) are bad input.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import BadInput
from .numbers import is_digits

_NO_ARGUMENT = {"-nographic", "-enable-kvm", "-S", "-no-reboot", "-no-shutdown", "-snapshot", "-daemonize",
                "-no-user-config", "-nodefaults", "-full-screen", "-no-hpet"}
_CPU_NAMES = {"power8": "POWER8", "power9": "POWER9", "power10": "POWER10"}


def option_words(words: list[str], where: str,
                 no_argument: frozenset[str] | set[str] = frozenset()) -> Iterator[tuple[str, str | None]]:
    """QEMU's options in order, each as (-option, its value or None): the next word is the value unless it
    starts with '-' or the option is one of `no_argument`. `where` prefixes the error for a stray word."""
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("-"):
            raise BadInput(f"{where}unexpected argument {word!r}")
        option = "-" + word.lstrip("-")
        value = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("-") else None
        if option in no_argument:
            value = None
        yield option, value
        i += 1 if value is None else 2


@dataclass
class QemuCommandLine:
    overrides: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    machine_type: str = "pseries"
    other: list[tuple[str, str | None]] = field(default_factory=list)  # the ignored options, parsed


def _accel(current: str | None, new: str, where: str) -> str:
    if new not in ("kvm", "tcg"):
        raise BadInput(f"--qemu: {where}: accelerator {new!r} is not modelled (kvm or tcg)")
    if current is not None and current != new:
        raise BadInput(f"--qemu: {where}: accel={new} contradicts accel={current} given earlier")
    return new


def _cpu(value: str) -> str:
    if value == "host":
        return "host"
    if re.fullmatch(r"z16(\.\d+)?(-base)?|gen16[ab](-base)?", value):
        return "z16"
    name = _CPU_NAMES.get(re.sub(r"_v\d+(\.\d+)*$", "", value).lower())
    if name is None:
        raise BadInput(f"--qemu: -cpu {value}: not modelled (host, POWER8, POWER9, POWER10, z16)")
    return name


def _int(text: str, what: str) -> int:
    if not is_digits(text) or len(text) > 9 or int(text) < 1:  # ASCII digits: "²".isdigit() is true
        raise BadInput(f"--qemu: -smp: {what}={text[:40]!r} is not a positive number")
    return int(text)


def _smp(value: str) -> dict[str, int]:
    parts = value.split(",")
    given: dict[str, int] = {}
    for part in parts:
        key, sep, val = part.partition("=")
        if not sep:
            key, val = "cpus", key
        if key not in ("cpus", "sockets", "cores", "threads", "maxcpus", "dies", "clusters"):
            raise BadInput(f"--qemu: -smp: unknown parameter {key!r}")
        given[key] = _int(val, key)
    threads = given.get("threads", 1)
    sockets = given.get("sockets", 1)
    cpus = given.get("cpus")
    cores = given.get("cores")
    limit = given.get("maxcpus")  # the topology multiplies out to maxcpus when given (machine-smp.c)
    if cores is None:
        if cpus is None and limit is None:
            cpus = sockets * threads
        cores = max((limit or cpus or 0) // (sockets * threads), 1)
    if cpus is None:
        cpus = limit or sockets * cores * threads
    if sockets * cores * threads != (limit or cpus):
        raise BadInput(f"--qemu: -smp {value}: sockets ({sockets}) x cores ({cores}) x threads ({threads}) "
                       f"!= {f'maxcpus ({limit})' if limit else f'{cpus} CPUs'}")
    for unsupported in ("dies", "clusters"):
        if given.get(unsupported, 1) > 1:
            raise BadInput(f"--qemu: -smp {value}: {unsupported} not supported by this machine's CPU topology")
    maxcpus = given.get("maxcpus", cpus)
    if maxcpus < cpus:
        raise BadInput(f"--qemu: -smp {value}: maxcpus ({maxcpus}) is below the number of CPUs ({cpus})")
    # the model's topology is the booted one (scenario.apply: sockets x cores x threads = smp), the rest hotplug slots
    out = {"smp": cpus, "sockets": sockets, "cores": max(cpus // (sockets * threads), 1), "threads": threads}
    return out | {"maxcpus": maxcpus} if maxcpus != cpus else out


def parse(command_line: str) -> QemuCommandLine:
    try:
        words = shlex.split(command_line, comments=True)
    except ValueError as e:
        raise BadInput(f"--qemu: cannot split the command line: {e}") from None
    return parse_words(words)


def parse_words(words: list[str]) -> QemuCommandLine:
    if words and not words[0].startswith("-"):
        words = words[1:]  # the binary
    out = QemuCommandLine()
    accel: str | None = None
    cpu: str | None = None
    for option, value in option_words(words, "--qemu: ", _NO_ARGUMENT):
        if option in ("-machine", "-M", "-accel", "-smp", "-cpu") and value is None:
            raise BadInput(f"--qemu: {option} needs a value")
        if option in ("-machine", "-M"):
            assert value is not None
            kind, *props = value.split(",")
            if kind.startswith("pseries"):
                out.machine_type = "pseries"
            elif kind in ("powernv", "powernv10"):
                out.machine_type = "powernv"
            elif kind.startswith("s390-ccw-virtio"):
                out.machine_type = "s390-ccw-virtio"
            else:
                raise BadInput(f"--qemu: -machine {kind}: not modelled (pseries, powernv, powernv10, s390-ccw-virtio)")
            for prop in props:
                key, _, val = prop.partition("=")
                if key == "accel":
                    accel = _accel(accel, val, f"-machine {value}")
                else:
                    out.ignored.append(f"-machine {prop}")
        elif option == "-accel":
            assert value is not None
            accel = _accel(accel, value.split(",")[0], f"-accel {value}")
        elif option == "-enable-kvm":
            accel = _accel(accel, "kvm", "-enable-kvm")
        elif option == "-smp":
            assert value is not None
            out.overrides.update(_smp(value))
        elif option == "-cpu":
            assert value is not None
            cpu = _cpu(value.split(",")[0])
        elif value is None:
            out.ignored.append(option)
            out.other.append((option, None))
        else:
            out.ignored.append(f"{option} {value}")
            out.other.append((option, value))
    accel = accel or "tcg"
    s390 = out.machine_type == "s390-ccw-virtio"
    if cpu == "host":
        if accel != "kvm":
            raise BadInput("--qemu: -cpu host needs KVM (-machine ...,accel=kvm or -enable-kvm)")
        cpu = "z16" if s390 else "POWER10"
    if s390:
        if accel != "kvm":
            raise BadInput("--qemu: the s390x model has KVM only (-machine s390-ccw-virtio,accel=kvm)")
        if cpu not in (None, "z16"):
            raise BadInput(f"--qemu: -cpu {cpu} is not an s390x CPU (host, z16)")
        cpu = "z16"
    elif cpu == "z16":
        raise BadInput(f"--qemu: -cpu z16 does not fit -machine {out.machine_type}")
    if out.machine_type == "powernv" and accel == "kvm":
        raise BadInput("--qemu: the powernv machine does not support the KVM accelerator")
    out.overrides.update({"machine": out.machine_type, "accel": accel})
    if cpu is not None:
        out.overrides["cpu"] = cpu
    return out
