"""The `vcpu-sched` command line. Exit status: 0 booted (or as expected), 1 otherwise, 2 bad input."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from .config import (
    ACCELS,
    CLOCKS,
    CPUS,
    ENGINES,
    FIXES,
    LOG_FORMATS,
    PPC_CPUS,
    QEMU_VERSIONS,
    TIMEBASE_RESETS,
    RunSettings,
    parse_set,
)
from .errors import BadInput, RunKilled, WorkerLost
from .numbers import ascii_numbers
from .verdicts import SUCCESS, VERDICTS

# Worker processes a command may start (--jobs): each is a Python process of ~50 MB that runs one seed or
# row at a time, so more than this is never faster on any host this runs on, only a fork storm. A pool
# is also never larger than its work (sweep: the batches).
MAX_JOBS = 256

# Each command imports what it needs when it runs (a verdict costs little more than starting Trio).


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad input as one line and exit status 2, without the usage block; its numeric
    options read ASCII digits only (numbers.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        ascii_numbers(self)

    def error(self, message: str) -> NoReturn:  # as every other bad input: "vcpu-sched: error: ..."
        self.exit(2, f"vcpu-sched: error: {message}\n")


def _add_scenario_dirs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenarios", action="append", default=[], metavar="DIR", dest="scenario_dirs",
                        help="look for scenario names in DIR too (repeatable; also $VCPU_SCHED_SCENARIOS)")


def _add_variant_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", nargs="?", help="scenario name or .toml path (default: the seed's guest)")
    _add_scenario_dirs(parser)
    parser.add_argument("--smp", type=int)
    parser.add_argument("--accel", choices=ACCELS)
    parser.add_argument("--cpu", choices=CPUS)
    parser.add_argument("--fix", choices=FIXES)
    parser.add_argument("--timebase-reset", choices=TIMEBASE_RESETS)
    parser.add_argument("--qemu-version", choices=QEMU_VERSIONS,
                        help="the model at this QEMU release: its vCPU loop and each modelled fix it contains "
                             "(--fix, --timebase-reset and --set still win)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                        help="any scenario setting (docs/scenario-files.md), e.g. --set loops=3")


def _hex(text: str) -> int:
    """A 64-bit register value in hexadecimal (0x optional), in ASCII digits."""
    import re

    if not re.fullmatch(r"[-+]?(0[xX])?[0-9a-fA-F]{1,400}", text):  # a sign: refused below, by range
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a hexadecimal number")
    value = int(text, 16)
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError(f"{text!r} does not fit a 64-bit register (0 to 0xffffffffffffffff)")
    return value


def _run_options(run: argparse.ArgumentParser) -> None:
    _add_variant_options(run)
    run.add_argument("--qemu", metavar="OPTIONS", help="a qemu-system-ppc64 command line to build the run from")
    run.add_argument("--seed", type=int)
    run.add_argument("--watchdog", type=float, metavar="SECONDS", help="guest seconds before a lockup")
    run.add_argument("--deadline", type=float, metavar="SECONDS", help="guest seconds before giving up")
    run.add_argument("--clock", choices=CLOCKS)
    run.add_argument("--engine", choices=ENGINES,
                     help="trio (default, virtual time), threads (OS threads), explore (one seeded schedule)")
    run.add_argument("--no-fast-forward", action="store_true", help="run every spinning loop turn")
    run.add_argument("--replay", metavar="SCHEDULE", help="replay a schedule file saved by explore (explore engine)")
    run.add_argument("--log", metavar="FILE", help="write the structured event log (JSON lines)")
    run.add_argument("--log-format", choices=LOG_FORMATS, default="jsonl",
                     help="jsonl (default) or qemu-trace: BQL and vCPU events as QEMU's log trace backend")
    run.add_argument("--trace", action="append", default=[], metavar="PATTERN",
                     help="select logged events by glob; -PATTERN excludes (repeatable)")
    run.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    run.add_argument("--expect", choices=VERDICTS, help="exit 0 exactly when the verdict is this")
    run.add_argument("--quiet", action="store_true", help="do not print the guest console")


def _explore_options(explore: argparse.ArgumentParser) -> None:
    _add_variant_options(explore)
    explore.add_argument("--strategy", choices=("random", "pct", "exhaustive", "delay"), default="exhaustive",
                         help="exhaustive: preemption bounding; delay: delay bounding of a round-robin scheduler")
    explore.add_argument("--seeds", type=int, default=100, help="random: how many schedules (seeded from --seed)")
    explore.add_argument("--seed", type=int, default=0, help="random: the first schedule's seed")
    explore.add_argument("--preempt", type=float, default=0.1, help="random: probability of a preemption")
    explore.add_argument("--depth", type=int, default=3, help="pct: the bug depth d (d-1 priority changes)")
    explore.add_argument("--jobs", type=int, default=1, help="random, pct: worker processes (0: one per core)")
    explore.add_argument("--max-steps", type=int,
                         help="steps per schedule (default: twice the steps of a plain run of the scenario - the "
                              "explore engine's non-preemptive schedule - and at least 2000)")
    explore.add_argument("--preemption-bound", type=int, default=2,
                         help="exhaustive: preemptions; delay: delays (default 2)")
    explore.add_argument("--no-prune", action="store_true", help="exhaustive: do not prune visited states")
    explore.add_argument("--symmetry", action="store_true",
                         help="exhaustive: states that differ only by which secondary vCPU is which count as one")
    explore.add_argument("--sleep-sets", action="store_true",
                         help="exhaustive, delay: partial-order reduction - skip reorderings of independent steps")
    explore.add_argument("--save", metavar="FILE", help="where to save the shortest failing schedule")
    explore.add_argument("--wall-limit", type=float, default=300.0, metavar="SECONDS",
                         help="stop the search (and the plain run that sizes the default --max-steps) after this "
                              "many wall seconds, keeping what it found (300)")
    explore.add_argument("--json", action="store_true", help="print the counts, bounds and failure as JSON")
    explore.epilog = ("Exit status: 0 no failure, and every schedule ran to its end; 1 a failure was found; "
                      "2 bad input; 3 inconclusive - no failure, but some schedule stopped at the step bound "
                      "or the wall-clock limit cut the search short, so what it did not reach was not searched.")


def _real_options(real: argparse.ArgumentParser) -> None:
    _add_variant_options(real)
    real.add_argument("--qemu-binary", metavar="PATH",
                      help="the QEMU to run (default: qemu-system-ppc64 on PATH; tools/dev.py real-qemu sets up more)")
    real.add_argument("--seed", type=int, help="draws when the monitor acts and which CPU crashes")
    real.add_argument("--deadline", type=float, default=600.0, metavar="SECONDS",
                      help="wall seconds before the real run is cut short (600)")
    real.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    real.add_argument("--expect", choices=VERDICTS, help="exit 0 exactly when the real verdict is this")
    real.add_argument("--quiet", action="store_true", help="do not print the guest console")
    real.add_argument("--fresh-boot", action="store_true",
                      help="boot the guest even where restoring a saved boot would be faithful")
    real.add_argument("--migrate-to", metavar="PATH",
                      help="the QEMU each migrate loads into (a newer release: cross-version; default the same)")


def _matrix_options(matrix: argparse.ArgumentParser) -> None:
    matrix.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="default: every file in scenarios/")
    matrix.add_argument("--json", action="store_true", help="print the rows as one JSON object")
    matrix.add_argument("--jobs", type=int, help="worker processes (default: one per core)")
    matrix.add_argument("--engine", choices=ENGINES, default="trio", help="the engine of every row that names none")
    matrix.add_argument("--against", choices=("real",),
                        help="real: each row a TCG QEMU can run, on each --qemu-binary, beside the model at its "
                             "release")
    matrix.add_argument("--qemu-binary", action="append", default=[], metavar="PATH",
                        help="with --against real: a QEMU to run the rows on (repeatable; default qemu-system-ppc64)")
    matrix.add_argument("--deadline", type=float, default=600.0, metavar="SECONDS",
                        help="with --against real: wall seconds before one real run is cut short (600)")
    matrix.add_argument("--fresh-boot", action="store_true",
                        help="with --against real: boot each row's guest, restoring no saved boot")
    _add_scenario_dirs(matrix)


def _sweep_options(sweep: argparse.ArgumentParser) -> None:
    _add_variant_options(sweep)
    sweep.add_argument("--seeds", required=True, metavar="A:B", help="the seeds A to B-1 (or one seed)")
    sweep.add_argument("--expect", choices=VERDICTS, help="the verdict every seed should give")
    sweep.add_argument("--db", default="vcpu-sched-seeds.jsonl", metavar="FILE",
                       help="where unexpected seeds are appended (JSON lines; default vcpu-sched-seeds.jsonl)")
    sweep.add_argument("--no-db", action="store_true", help="count only, write no seed database")
    sweep.add_argument("--jobs", type=int, help="local worker processes (default: one per core)")
    sweep.add_argument("--cluster", metavar="tcp://HOST:8786", help="run the batches on this Dask scheduler")
    sweep.add_argument("--batch", type=int, help="seeds per task (default: a few seconds of work each)")
    sweep.add_argument("--json", action="store_true", help="print the counts as one JSON object")


def _analyze_options(analyze: argparse.ArgumentParser) -> None:
    analyze.add_argument("logs", nargs="+", metavar="LOG",
                         help="a vcpu_sched event log, or QEMU trace log(s): one file, or one per thread")
    analyze.add_argument("--format", choices=("auto", "vcpu-sched", "qemu-trace"), default="auto",
                         help="what LOG is (default: told from its first lines)")
    analyze.add_argument("--threshold", type=float, default=1.0, metavar="SECONDS",
                         help="QEMU traces: a BQL hold longer than this while others wait is a lockup (1)")
    analyze.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    analyze.add_argument("--perfetto", metavar="OUT.json", help="write a Chrome trace (Perfetto UI, chrome://tracing)")
    analyze.add_argument("--plot", metavar="OUT.png", help="draw the timeline (needs matplotlib)")


def _irq_options(irq: argparse.ArgumentParser) -> None:
    irq.add_argument("--cpu", choices=PPC_CPUS, default="POWER10")
    irq.add_argument("--lpcr", type=_hex, required=True, metavar="HEX")
    irq.add_argument("--psscr", type=_hex, metavar="HEX", help="whole PSSCR (or use --psscr-ec)")
    for flag in ("halted", "psscr-ec", "msr-ee", "msr-hv", "msr-pr", "no-hv-mode", "quiesced",
                 "resume-as-sreset", "pre-fix", "json"):
        irq.add_argument(f"--{flag}", action="store_true")
    irq.add_argument("--pending", default="", metavar="DEC,EXT,...", help="pending interrupts")


COMMANDS = {
    "run": ("run a scenario to a verdict", _run_options),
    "explore": ("search the schedules of a scenario for a lockup or a failure", _explore_options),
    "matrix": ("every scenario x its variants: expected against actual verdicts", _matrix_options),
    "real": ("run a scenario on a real qemu-system-ppc64 with a real Linux guest, beside the model",
             _real_options),
    "sweep": ("run a range of seeds, count verdicts, keep the unexpected ones in a seed database", _sweep_options),
    "qemu": ("run a qemu-system-ppc64 command line as a process serving QMP (vcpu-sched qemu --help)",
             lambda parser: None),
    "analyze": ("summarise an event log (--log): BQL, vCPUs, RTAS, lockup", _analyze_options),
    "irq": ("would this CPU take an interrupt? (ppc_next_unmasked_interrupt)", _irq_options),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; given the command that runs, only its options are built (the others are
    listed by name and help, which is all `--help` shows of them)."""
    parser = _Parser(prog="vcpu-sched", description="Reproduce QEMU's ppc64 RTAS-stopped vCPU hang.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (text, add_options) in COMMANDS.items():
        subparser = sub.add_parser(name, help=text)
        if command in (None, name):
            add_options(subparser)
    return parser


def _settings(args: argparse.Namespace, extra: dict[str, Any]) -> tuple[RunSettings, RunSettings]:
    """(settings of this run, the scenario's own) from a scenario, --qemu, the options and --set."""
    from .scenario import apply, check_machine, default_scenario, load

    imported = None
    if getattr(args, "qemu", None) is not None:
        from . import qemu_cmdline

        imported = qemu_cmdline.parse(args.qemu)
    scenario = load(args.scenario or default_scenario(imported.machine_type if imported else None))
    overrides: dict[str, Any] = dict(imported.overrides) if imported else {}
    if imported is not None:
        check_machine(scenario, imported.machine_type, "--qemu")
        for key in ("smp", "accel", "cpu"):
            given = getattr(args, key)
            if given is not None and key in overrides and overrides[key] != given:
                raise BadInput(f"--{key} {given} contradicts --qemu, which gives {key}={overrides[key]}")
    if imported and imported.ignored:
        print(f"vcpu-sched: ignored (not modelled): {', '.join(imported.ignored)}", file=sys.stderr)
    if args.qemu_version is not None:  # the model at that release; explicit options below still win
        from .versions import profile

        overrides |= profile(args.qemu_version)
    overrides |= {k: v for k, v in {"qemu_version": args.qemu_version, **extra}.items() if v is not None}
    overrides |= _explicit(args)  # the options, then --set, win
    return apply(scenario.settings, overrides, "command line"), scenario.settings


_REPLAY_FIXES = (("scenario", "SCENARIO"), ("smp", "--smp"), ("accel", "--accel"), ("cpu", "--cpu"),
                 ("fix", "--fix"), ("timebase_reset", "--timebase-reset"), ("qemu_version", "--qemu-version"),
                 ("sets", "--set"), ("qemu", "--qemu"),
                 ("seed", "--seed"), ("watchdog", "--watchdog"), ("deadline", "--deadline"), ("clock", "--clock"),
                 ("engine", "--engine"), ("no_fast_forward", "--no-fast-forward"))


def _explicit(args: argparse.Namespace) -> dict[str, Any]:
    """The settings this command line names itself (options and --set), as a scenario variant."""
    out = {k: v for k, v in {"smp": args.smp, "accel": args.accel, "cpu": args.cpu, "fix": args.fix,
                             "timebase_reset": args.timebase_reset}.items() if v is not None}
    out.update(parse_set(item) for item in args.sets)
    return out


def _real(args: argparse.Namespace) -> int:
    from .real.command import real_main

    settings, _ = _settings(args, {"seed": args.seed})
    return real_main(args, settings, _explicit(args))


def _check_run_options(args: argparse.Namespace) -> None:
    """Options that contradict each other, or do nothing, are bad input rather than silently dropped."""
    if args.replay is not None:
        given = [flag for key, flag in _REPLAY_FIXES if getattr(args, key) not in (None, False, [])]
        if given:
            raise BadInput(f"--replay: the schedule file holds the run's settings; drop {', '.join(given)}")
    for pattern in args.trace:
        if not pattern.strip("-"):
            raise BadInput(f"--trace {pattern!r}: empty pattern")
    if args.trace and args.log is None:
        raise BadInput("--trace selects what --log writes: add --log FILE")
    if args.log_format != "jsonl" and args.log is None:
        raise BadInput(f"--log-format {args.log_format}: add --log FILE")
    if args.log_format != "jsonl" and args.replay is not None:
        raise BadInput(f"--log-format {args.log_format}: a replay writes its log as JSON lines")


def _run(args: argparse.Namespace) -> int:
    from . import runner
    from .report import result_text

    _check_run_options(args)
    if args.replay is not None:
        return _replay(args)
    settings, base = _settings(args, {
        "seed": args.seed, "watchdog_s": args.watchdog, "deadline_s": args.deadline, "clock": args.clock,
        "engine": args.engine, "fast_forward": False if args.no_fast_forward else None})

    def console(t_ns: int, text: str) -> None:
        print(f"[{t_ns / 1e9:12.6f}] {text}", file=sys.stderr if args.json else sys.stdout, flush=True)

    if args.log is not None:
        from .files import check_output

        check_output("--log", args.log, inputs=(args.scenario,) if args.scenario else ())
    try:
        result = runner.run(settings, args.log, tuple(args.trace), None if args.quiet else console, args.log_format)
    except WorkerLost as e:
        print(f"vcpu-sched: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise
    except OSError as e:
        raise BadInput(f"--log {args.log}: {e.strerror}") from None
    if args.json:
        import json

        print(json.dumps(result.to_dict(), sort_keys=True))
    else:
        print(result_text(result, base))
    if args.expect is not None:
        return 0 if result.verdict == args.expect else 1
    return result.exit_status


def _replay(args: argparse.Namespace) -> int:
    import json

    from .events import EventLog
    from .explore import load_schedule, replay, trace_text
    from .files import atomic_output, check_output, open_input

    open_input(f"--replay {args.replay}", args.replay).close()  # a regular file: load_schedule would wait on a FIFO
    try:
        settings, choices, saved = load_schedule(args.replay)
    except RecursionError:
        raise BadInput(f"--replay {args.replay}: not a schedule file (JSON nested too deep)") from None
    except OSError as e:
        raise BadInput(f"--replay {args.replay}: cannot read: {e.strerror}") from None
    max_steps = int(saved.get("steps", 0)) + 1
    if args.log is None:
        outcome = replay(settings, choices, max_steps)
    else:
        check_output("--log", args.log, inputs=(args.replay,))
        # A schedule that does not fit shows only during the replay: the log is renamed into place after.
        with atomic_output("--log", args.log) as stream:
            log = EventLog(stream, tuple(args.trace))
            outcome = replay(settings, choices, max_steps, log)
            log.end(log.last_t_ns, {"verdict": outcome.verdict, "reason": outcome.reason,
                                    "steps": len(outcome.steps)})
    same = outcome.verdict == saved.get("verdict") and len(outcome.steps) == saved.get("steps")
    if args.json:
        print(json.dumps({"verdict": outcome.verdict, "reason": outcome.reason, "steps": len(outcome.steps),
                          "reproduced": same, "settings": settings.to_dict()}, sort_keys=True))
    else:
        print(trace_text(outcome))
        print(f"== {outcome.verdict.upper()}: {outcome.reason} ({len(outcome.steps)} steps; "
              f"{'the same as' if same else 'NOT the same as'} the saved {saved.get('verdict')} in "
              f"{saved.get('steps')} steps) ==")
    if args.expect is not None:
        return 0 if outcome.verdict == args.expect else 1
    return 0 if outcome.verdict in SUCCESS else 1


def _explore(args: argparse.Namespace) -> int:
    import json

    from .explore import (
        EXIT_INCONCLUSIVE,
        ExploreProgress,
        StepBound,
        explore_exhaustive,
        explore_random,
        explore_text,
        plain_run_bound,
        save_schedule,
    )
    from .files import check_output

    for name, value, low in (("--seeds", args.seeds, 1), ("--max-steps", args.max_steps, 1),
                             ("--preemption-bound", args.preemption_bound, 0), ("--depth", args.depth, 1),
                             ("--jobs", args.jobs, 0)):
        if value is not None and value < low:
            raise BadInput(f"{name}: must be at least {low}")
    if not 0.0 <= args.preempt <= 1.0:
        raise BadInput("--preempt: must be between 0 and 1")
    if not 0.1 <= args.wall_limit <= 86400:
        raise BadInput("--wall-limit: must be between 0.1 and 86400 seconds")
    settings, _ = _settings(args, {"seed": args.seed})
    if args.save is not None:
        check_output("--save", args.save)  # before the search, not after it
    # The wall-clock limit covers the plain run that sizes the default step bound too; the search gets at
    # least a moment, so that it reports one schedule, cut short, rather than none.
    deadline = time.monotonic() + args.wall_limit
    bound = StepBound(args.max_steps, "--max-steps") if args.max_steps is not None else \
        plain_run_bound(settings, deadline)
    deadline = max(deadline, time.monotonic() + 0.1)
    progress = ExploreProgress()
    if args.strategy in ("random", "pct"):
        report = explore_random(settings, args.seeds, args.preempt, bound.max_steps, progress.step, args.wall_limit,
                                args.strategy, args.depth, args.jobs or None, plain_steps=bound.plain_steps,
                                wall_deadline=deadline)
    else:
        report = explore_exhaustive(settings, bound.max_steps, args.preemption_bound, not args.no_prune,
                                    progress.step, wall_limit_s=args.wall_limit, symmetry=args.symmetry,
                                    delays=args.strategy == "delay", sleep_sets=args.sleep_sets,
                                    wall_deadline=deadline)
    report.step_bound = bound
    progress.done()
    saved = None
    if report.shortest is not None:
        saved = args.save or f"{settings.scenario}-smp{settings.smp}-{report.shortest.verdict}.schedule.json"
        save_schedule(saved, settings, report.shortest)
    if args.json:
        print(json.dumps({**report.to_dict(), "saved": saved}, sort_keys=True))
    else:
        print(explore_text(report, saved))
    if report.incomplete and report.incomplete.startswith("interrupted"):
        raise KeyboardInterrupt
    if report.shortest is not None:
        return 1
    return EXIT_INCONCLUSIVE if report.inconclusive else 0


def _matrix(args: argparse.Namespace) -> int:
    import json

    from .matrix import matrix_text, run_matrix

    if args.jobs is not None and not 1 <= args.jobs <= MAX_JOBS:
        raise BadInput(f"--jobs: must be 1 to {MAX_JOBS}")
    if args.against == "real":
        if args.engine != "trio":
            raise BadInput("--engine: a matrix against real runs the model on its default engine")
        from .real.against import matrix_against_main

        return matrix_against_main(args)
    if args.qemu_binary or args.fresh_boot:
        raise BadInput(f"{'--qemu-binary' if args.qemu_binary else '--fresh-boot'}: add --against real")
    start = time.perf_counter()
    results = run_matrix(args.scenarios, args.jobs, args.engine)
    wall = time.perf_counter() - start
    mismatches = sum(not r["match"] for r in results)
    if args.json:
        print(json.dumps({"rows": results, "runs": len(results), "mismatches": mismatches, "wall_time_s": wall},
                         sort_keys=True))
    else:
        print(matrix_text(results, wall))
    return 1 if mismatches else 0


def _sweep(args: argparse.Namespace) -> int:
    import contextlib
    import json

    from .files import AppendLater, check_output
    from .sweep import parse_seeds, sweep, sweep_text

    seeds = parse_seeds(args.seeds)
    if args.jobs is not None and not 1 <= args.jobs <= MAX_JOBS:
        raise BadInput(f"--jobs {args.jobs}: must be 1 to {MAX_JOBS}")
    if args.batch is not None and args.batch < 1:
        raise BadInput(f"--batch {args.batch}: at least 1")
    settings, base = _settings(args, {"seed": seeds.start})
    scenario = args.scenario or settings.scenario
    db_path = None if args.no_db else args.db
    if db_path is not None:
        check_output("--db", db_path, inputs=(args.scenario,) if args.scenario else (), regular=True)
    try:
        with contextlib.ExitStack() as stack:
            # Appended, never truncated: a database collects what every sweep found. Opened at the first
            # seed to record, so that a sweep that fails (an unreachable --cluster) creates no file.
            db = stack.enter_context(contextlib.closing(AppendLater(db_path))) if db_path is not None else None
            summary = sweep(scenario, settings, base, seeds, args.expect, db, args.jobs, args.cluster, args.batch)
    except WorkerLost as e:
        print(f"vcpu-sched: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        raise BadInput(f"--db {db_path}: {e.strerror}") from None
    print(json.dumps(summary, sort_keys=True) if args.json else sweep_text(summary, db_path))
    return 1 if summary["unexpected"] else 0


def _trace_values(argv: list[str]) -> list[str]:
    """`--trace -PATTERN` (exclude) as the docs write it: argparse would take -PATTERN for an option."""
    out: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--trace":
            value = next(words, None)
            if value is not None and value.startswith("-") and not value.startswith("--"):
                out.append(f"--trace={value}")
                continue
            out += [word] if value is None else [word, value]
            continue
        out.append(word)
    return out


def main(argv: list[str] | None = None) -> int:
    """The command on `argv`, or on the process's own command line (`vcpu-sched`, `python -m vcpu_sched`),
    which the process ends with: then its objects are left to the process's end (`_ending`)."""
    status = _main(sys.argv[1:] if argv is None else argv)
    if argv is None:
        _ending()
    return status


def _ending() -> None:
    """The interpreter's final collections walk every object still alive, a tenth of a short command's CPU
    time (the seed case: about 25 of 230 ms). Frozen, they are passed over; objects are still freed as
    their references go, and a log is closed before its command returns."""
    import gc

    gc.freeze()


def _main(words: list[str]) -> int:
    from .files import begin_command

    begin_command()
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed, never a traceback
        if hasattr(stream, "reconfigure") and stream.errors == "strict":
            stream.reconfigure(errors="backslashreplace")
    words = _trace_values(words)
    if words[:1] == ["qemu"]:  # QEMU's own single-dash options: not for argparse
        from .qemu_command import qemu_main

        return _guarded(lambda: qemu_main(words[1:]))
    args = build_parser(words[0] if words and words[0] in COMMANDS else None).parse_args(words)
    return _guarded(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "scenario_dirs", None):
        from .scenario import add_scenario_dir

        for directory in args.scenario_dirs:
            add_scenario_dir(directory)
    if args.command == "run":
        return _run(args)
    if args.command == "analyze":
        from .analyze.command import analyze_main

        return analyze_main(args)
    if args.command == "matrix":
        return _matrix(args)
    if args.command == "real":
        return _real(args)
    if args.command == "explore":
        return _explore(args)
    if args.command == "sweep":
        return _sweep(args)
    from .irq import irq_main

    return irq_main(args)


def _guarded(command: Callable[[], int]) -> int:
    try:
        return command()
    except BadInput as e:  # one line, whatever the message quotes (a file name with a newline)
        message = str(e).replace("\n", "\\n").replace("\r", "\\r")
        print(f"vcpu-sched: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vcpu-sched: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): end quietly, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except RunKilled:
        print("vcpu-sched: killed", file=sys.stderr)
        return 143
