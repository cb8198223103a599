"""Where the slots engine's thread spends its time, kept cheaply (two clock reads per phase).

The engine adds to `stats` as it runs (only its own thread writes it); a caller takes
`SlotEngine.snapshot()` before and after a run and `summarize(before, after, wall_s, cpu_s)` turns
the difference into the split a reader needs:

- prefill, decode: wall time, of which `launch` is the host issuing work up to the one host
  sync (`.tolist()`), the rest waiting for the device; `cpu` is the engine thread's own CPU time.
- emit: handing tokens and chunks to the request queues (`_emit`).
- idle: waiting for work with no slot active.
- other: the rest of the run's wall time (admission bookkeeping, the loop).

Off-CPU time outside `idle` is time the thread could run but did not. CUDA spin-waits for the
device by default (one context per process), so that time is waiting for the GIL, or for a CPU.
(On the CPU it also holds the waits for torch's intra-op threads, which do the maths there.)
A prefill paid per prompt (host launch overhead) shows as prefill groups of about one prompt,
each taking its launch time; GIL contention shows as off-CPU time in prefill, decode or emit.
"""
from __future__ import annotations

import time

COUNTS = ("prefill_tokens", "prefill_groups", "prefill_prompts", "decode_steps", "admit_deferred")
TIMES = ("prefill_s", "prefill_launch_s", "prefill_cpu_s", "decode_s", "decode_launch_s", "decode_cpu_s",
         "emit_s", "emit_cpu_s", "idle_s", "admit_wait_s")


def new_stats() -> dict:
    """admit_wait_s: summed time from submit() to the start of each request's prefill;
    admit_deferred: admissions put off by option prefill_wait_ms."""
    return {**{k: 0.0 for k in TIMES}, **{k: 0 for k in COUNTS}}


def tick() -> tuple[float, float]:
    """(wall clock, this thread's CPU time)."""
    return time.perf_counter(), time.thread_time()


def add(stats: dict, phase: str, start: tuple[float, float]) -> None:
    """Add the wall and CPU time since `start` to the phase's totals."""
    wall, cpu = tick()
    stats[f"{phase}_s"] += wall - start[0]
    stats[f"{phase}_cpu_s"] += cpu - start[1]


def thread_cpu_s(thread) -> float | None:
    """CPU time used so far by `thread` (another thread's clock; None where the OS has none)."""
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError, TypeError):
        return None


def summarize(before: dict, after: dict, wall_s: float, cpu_s: float | None = None) -> dict:
    """The engine's split over a run: the stats' differences plus derived figures. wall_s: the
    run's wall time; cpu_s: the engine thread's CPU time over it (thread_cpu_s at both ends)."""
    d = {k: after[k] - before[k] for k in after}
    rest = wall_s - d["prefill_s"] - d["decode_s"] - d["emit_s"] - d["idle_s"]
    out = {"wall_s": wall_s, **d, "other_s": rest,
           "share": {k: v / wall_s if wall_s > 0 else None for k, v in
                     (("prefill", d["prefill_s"]), ("decode", d["decode_s"]), ("emit", d["emit_s"]),
                      ("idle", d["idle_s"]), ("other", rest))},
           "prompts_per_group": d["prefill_prompts"] / d["prefill_groups"] if d["prefill_groups"] else None,
           "prefill_ms_per_group": 1000 * d["prefill_s"] / d["prefill_groups"] if d["prefill_groups"] else None,
           "admit_wait_ms_mean": 1000 * d["admit_wait_s"] / d["prefill_prompts"] if d["prefill_prompts"] else None,
           "decode_ms_per_step": 1000 * d["decode_s"] / d["decode_steps"] if d["decode_steps"] else None,
           "steps_per_s": d["decode_steps"] / wall_s if wall_s > 0 else None,
           "thread_cpu_s": cpu_s,
           # time the thread neither waited for work nor ran: GIL (or CPU) waits, see above
           "off_cpu_busy_s": wall_s - d["idle_s"] - cpu_s if cpu_s is not None else None}
    for phase in ("prefill", "decode", "emit"):
        out[f"{phase}_off_cpu_s"] = d[f"{phase}_s"] - d[f"{phase}_cpu_s"]
    return out


def line(s: dict) -> str:
    """One line for a log: the split in seconds and shares, groups, steps."""
    def pct(k):
        v = s["share"][k]
        return f"{100 * v:.0f}%" if v is not None else "-"

    def num(v, fmt):
        return format(v, fmt) if v is not None else "-"

    return (f"wall {s['wall_s']:.1f} s: prefill {s['prefill_s']:.1f} s {pct('prefill')} "
            f"({s['prefill_prompts']} prompts in {s['prefill_groups']} groups, "
            f"{num(s['prompts_per_group'], '.2f')}/group, {num(s['prefill_ms_per_group'], '.1f')} ms/group, "
            f"launch {s['prefill_launch_s']:.1f} s, off-CPU {s['prefill_off_cpu_s']:.1f} s) | "
            f"decode {s['decode_s']:.1f} s {pct('decode')} ({s['decode_steps']} steps, "
            f"{num(s['decode_ms_per_step'], '.2f')} ms/step, {num(s['steps_per_s'], '.1f')} steps/s, "
            f"off-CPU {s['decode_off_cpu_s']:.1f} s) | emit {s['emit_s']:.2f} s {pct('emit')} | "
            f"idle {s['idle_s']:.1f} s {pct('idle')} | other {s['other_s']:.2f} s {pct('other')} | "
            f"engine thread off-CPU while busy {num(s['off_cpu_busy_s'], '.1f')} s | "
            f"admission wait {num(s['admit_wait_ms_mean'], '.1f')} ms mean, {s['admit_deferred']} deferred")
