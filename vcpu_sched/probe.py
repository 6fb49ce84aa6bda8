"""What a real QEMU answers to libvirt's capability probe, recorded by tools/record_probe.py (issue 29).

vcpu_sched/probe_data/X.Y.json.gz holds, for each QEMU release the model can claim to be, the greeting and
the answer to every command libvirt 9.0 sends while it probes a qemu-system-ppc64 binary: the static ones
(query-qmp-schema, query-machines, query-cpu-definitions, qom-list-types, device-list-properties, ...),
answered from here as the real binary answered them.
"""

from __future__ import annotations

import functools
import json
from typing import Any

PROBE_VERSIONS = ("7.2", "11.1")
PACKAGE = "vcpu_sched model"  # the `package` of the greeting and query-version


def probe_key(name: str, args: dict[str, Any]) -> str:
    """One command with its arguments, as a key of the recorded answers."""
    return name if not args else f"{name} {json.dumps(args, sort_keys=True, separators=(',', ':'))}"


@functools.cache
def probe_data(version: str) -> dict[str, Any]:
    """{"greeting": the real binary's, "answers": {probe_key: {"return": ...} or {"error": ...}}}."""
    import gzip  # here: every run imports this module (QMP's commands), few read the recording
    from importlib import resources

    blob = resources.files("vcpu_sched").joinpath("probe_data", f"{version}.json.gz").read_bytes()
    data: dict[str, Any] = json.loads(gzip.decompress(blob))
    return data


def recorded(version: str | None, name: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """The real answer to this command, if the probe recorded it for the version the run models."""
    if version not in PROBE_VERSIONS:
        return None
    answer: dict[str, Any] | None = probe_data(version)["answers"].get(probe_key(name, args))
    return answer


@functools.cache
def recorded_commands(version: str | None) -> frozenset[str]:
    """The commands whose real answers were recorded for this release (none for another)."""
    if version not in PROBE_VERSIONS:
        return frozenset()
    return frozenset(key.split(" ", 1)[0] for key in probe_data(version)["answers"])


def greeting_version(version: str) -> dict[str, int]:
    """The `qemu` version triple of the real binary recorded for this release."""
    triple: dict[str, int] = probe_data(version)["greeting"]["QMP"]["version"]["qemu"]
    return triple


def probe_answer(version: str, name: str, args: dict[str, Any], chardevs: list[tuple[str, str]]) -> dict[str, Any]:
    """The answer of `-machine none` (no guest: every answer is static) to one negotiated in-band command."""
    if name == "query-version":
        return {"return": {"qemu": greeting_version(version), "package": PACKAGE}}
    if name == "query-chardev":
        return {"return": [{"filename": f"unix:{path},server=on", "frontend-open": i == len(chardevs) - 1,
                            "label": label} for i, (label, path) in enumerate(chardevs)]}
    answer = recorded(version, name, args)
    if answer is not None:
        return answer
    if name in recorded_commands(version):
        return {"error": {"class": "GenericError",
                          "desc": f"vcpu-sched: {name} with these arguments was not recorded from QEMU {version}"}}
    return {"error": {"class": "CommandNotFound", "desc": f"The command {name} has not been found"}}
