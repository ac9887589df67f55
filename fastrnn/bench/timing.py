"""Interleaved timing of several implementations of the same computation."""
import time

import numpy as np

REWARM_S = 0.02   # untimed calls before each timed block that follows a pause


def interleaved(funcs, *, repeats=7, warmup=1, min_time=0.0, cooldown=0.0, budget=None,
                min_repeats=3):
    """Time each callable `repeats` times, interleaving them round-robin after `warmup` calls
    each, so that machine noise hits all of them alike. Returns {name: array of seconds}.

    cooldown: seconds to sleep (untimed) after each block, or {name: seconds} per callable.
    Thread pools of BLAS and OpenMP runtimes busy-wait after a call (OpenBLAS for ~0.1 s);
    without a pause those spinning threads steal the cores of whichever implementation runs
    next.
    After a pause the cores may have idled (a virtual machine's vCPUs are descheduled, clocks
    drop): each timed block then starts with REWARM_S of untimed calls (at least one), so that it
    measures the steady state, as the blocks of every implementation do alike.
    budget: seconds after which no further round starts once `min_repeats` rounds are done
    (bounds the run time on a slow or busy machine; fewer repeats then).
    A callable with `self_timed = True` (a peer running in another process) is called as
    f(min_time): it repeats its work for at least min_time itself and returns the seconds per
    call it measured, which are recorded instead of the wall time of the request."""
    pause = cooldown if isinstance(cooldown, dict) else {name: cooldown for name in funcs}
    start = time.perf_counter()
    for f in funcs.values():
        for _ in range(warmup):
            f()
    times = {name: [] for name in funcs}
    for rnd in range(repeats):
        if budget is not None and rnd >= min_repeats and time.perf_counter() - start > budget:
            break
        for name, f in funcs.items():
            if any(pause.values()):
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < REWARM_S:
                    f()
            if getattr(f, "self_timed", False):
                times[name].append(float(f(min_time)))
                if pause.get(name):
                    time.sleep(pause[name])
                continue
            n, t0 = 0, time.perf_counter()
            while True:  # loop tiny calls until min_time so the clock resolution does not matter
                f()
                n += 1
                dt = time.perf_counter() - t0
                if dt >= min_time:
                    break
            times[name].append(dt / n)
            if pause.get(name):
                time.sleep(pause[name])
    return {name: np.asarray(v) for name, v in times.items()}


def lstm_gru_flops(cell, B, T, I, H):
    """2*T*B*G*H*(I+H): the multiply-adds of the input and recurrent matmuls, counted twice."""
    G = 4 if cell == "lstm" else 3
    return 2.0 * T * B * G * H * (I + H)


def format_seconds(s):
    """A time for a table: "-" for None, else us / ms / s with three significant digits."""
    if s is None:
        return "-"
    return f"{s * 1e6:.3g} us" if s < 1e-3 else f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"
