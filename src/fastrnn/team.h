/* A team of threads sharing one call's work without waiting on a descheduled member.
 *
 * Why: another runtime in the process (an ONNX Runtime or OpenBLAS pool spinning after its op)
 * can hold one of the cores fastrnn's threads run on. A thread that shares its core runs in
 * slices of about a millisecond; with a barrier per step every step then waits for it, and a
 * 2-thread call became 2-5x slower than one thread (bench --suite pipeline).
 *
 * How: the work is cut into parts (one per thread: a block of rows or of hidden units) and each
 * part into units (the prelude, then the steps), run in order. A part's state is one atomic
 * word: its next unit, its owner and whether that unit is being run. The owner claims a unit
 * (busy), runs it and releases it (next unit). A thread with nothing to run watches the other
 * parts: a part whose thread has not started yet gets its units run for it, one at a time,
 * until the thread arrives; one whose next unit could run but has not been claimed for longer
 * than the patience (its owner is not running) is taken over; one whose unit has been running
 * that long is asked to hand itself over when that unit ends; in a row split, one advancing
 * much slower than we do is asked too. A part's units compute the same bits whichever thread
 * runs them, so outputs do not depend on who ran what. The caller learns how many parts moved
 * (fr_team.taken, and lent units) and uses fewer threads for the next calls (fastrnn.c).
 *
 * Memory order: a unit's writes are published by the release store (or RMW) that ends it and
 * read after the acquire that starts the next unit of the part (claim) or of any part (the
 * finished count). */
#ifndef FASTRNN_TEAM_H
#define FASTRNN_TEAM_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>
#include "internal.h"

#define FR_TEAM_MAX FR_MAX_THREADS /* parts (threads) of one call */
#define FR_TEAM_NOBODY 127      /* owner of a part handed over and not yet taken */
#define FR_TEAM_TIMED_UNITS 9   /* units timed for the expected unit time (the rest are alike) */

typedef struct {
    _Alignas(64) _Atomic int64_t word; /* next unit << 8 | owner << 1 | busy */
    _Atomic int want;                  /* another thread waits on this part: hand it over */
    _Atomic int arrived;               /* its first owner has started (fr_team_run) */
} fr_team_part;

typedef struct {
    _Alignas(64) _Atomic int64_t finished; /* units finished: all (lockstep) or preludes */
    _Alignas(64) _Atomic int taken;        /* parts that changed thread during the call */
    _Atomic int lent;                      /* units run for an owner not started yet */
    /* the shortest run of a prelude / step unit so far: the expected time of one (a unit whose
     * thread was descheduled takes longer, so the shortest is the one to trust) */
    _Atomic int64_t unit_ns[2];
    int nparts, nunits;
    int lockstep;     /* unit u of any part needs unit u - 1 of every part (hidden-unit split) */
    int sync_prelude; /* unit 1 of any part needs unit 0 of every part */
    fr_team_part part[FR_TEAM_MAX];
} fr_team;

typedef void (*fr_team_unit_fn)(void *ctx, int thread, int part, int unit);

static inline int64_t fr_team_word(int unit, int owner, int busy)
{
    return ((int64_t)unit << 8) | ((int64_t)owner << 1) | busy;
}
static inline int fr_team_unit(int64_t w) { return (int)(w >> 8); }
static inline int fr_team_owner(int64_t w) { return (int)((w >> 1) & 127); }
static inline int fr_team_busy(int64_t w) { return (int)(w & 1); }

static inline int64_t fr_team_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void fr_team_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && defined(__ARM_ARCH) && __ARM_ARCH >= 7)
    __asm__ __volatile__("yield");
#endif
}

/* Called by one thread before the team starts; part p is first owned by thread p. */
static inline void fr_team_init(fr_team *t, int nparts, int nunits, int lockstep,
                                int sync_prelude)
{
    atomic_init(&t->finished, 0);
    atomic_init(&t->taken, 0);
    atomic_init(&t->lent, 0);
    atomic_init(&t->unit_ns[0], 0);
    atomic_init(&t->unit_ns[1], 0);
    t->nparts = nparts;
    t->nunits = nunits;
    t->lockstep = lockstep;
    t->sync_prelude = sync_prelude;
    for (int p = 0; p < nparts; p++) {
        atomic_init(&t->part[p].word, fr_team_word(0, p, 0));
        atomic_init(&t->part[p].want, 0);
        atomic_init(&t->part[p].arrived, 0);
    }
}

/* Whether every part has run all its units. */
static inline int fr_team_done(fr_team *t)
{
    for (int p = 0; p < t->nparts; p++)
        if (fr_team_unit(atomic_load_explicit(&t->part[p].word, memory_order_acquire))
            < t->nunits)
            return 0;
    return 1;
}

/* Whether every unit unit u depends on is finished. */
static inline int fr_team_ready(fr_team *t, int u)
{
    if (u == 0 || (!t->lockstep && !(u == 1 && t->sync_prelude))) return 1;
    const int64_t need = t->lockstep ? (int64_t)u * t->nparts : t->nparts;
    return atomic_load_explicit(&t->finished, memory_order_acquire) >= need;
}

static inline void fr_team_sleep_us(int us)
{
    struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0) {}
}

/* Without lockstep (a row split) parts advance independently: one whose thread shares its
 * core runs every step slower, without ever stopping long. Whether part q (at unit u) has
 * advanced at under 2/3 of our own pace (`unit`: ns per step unit, from our own part's steps
 * run back to back; parts are alike) over the last observation window (8 units and the
 * patience); starts a new window when one ends. */
static inline int fr_team_slow(int q, int u, int64_t now, int64_t floor_ns, int64_t unit,
                               int *rate_unit, int64_t *rate_since)
{
    if (rate_unit[q] < 0 || u < rate_unit[q] || unit <= 0) {
        rate_unit[q] = u;
        rate_since[q] = now;
        return 0;
    }
    const int64_t elapsed = now - rate_since[q];
    if (elapsed < floor_ns || elapsed < 8 * unit) return 0;
    const int slow = (int64_t)(u - rate_unit[q]) * unit * 3 < elapsed * 2;
    rate_unit[q] = u;
    rate_since[q] = now;
    return slow;
}

/* For a thread with no part of its own: whether any part is orphaned (it must be picked up)
 * or waits for its owner (who is not running: a running owner claims its next unit at once),
 * or, in a row split, has enough left to be worth watching (at our pace, twice the patience;
 * a part whose owner was descheduled mid-unit comes back only when the owner runs again). */
static inline int fr_team_worth_staying(fr_team *t, int64_t pace_ns, int64_t floor_ns)
{
    for (int q = 0; q < t->nparts; q++) {
        const int64_t w = atomic_load_explicit(&t->part[q].word, memory_order_acquire);
        const int left = t->nunits - fr_team_unit(w);
        if (left <= 0) continue;
        if (fr_team_owner(w) == FR_TEAM_NOBODY || !fr_team_busy(w)) return 1;
        if (!t->lockstep && pace_ns > 0 && (int64_t)left * pace_ns >= 2 * floor_ns) return 1;
    }
    return 0;
}

/* End unit u of a part: publish its writes, with the part's next owner. */
static inline void fr_team_release(fr_team *t, fr_team_part *part, int u, int owner)
{
    atomic_store_explicit(&part->word, fr_team_word(u + 1, owner, 0), memory_order_release);
    if (t->lockstep || u == 0)  /* what fr_team_ready counts */
        atomic_fetch_add_explicit(&t->finished, 1, memory_order_acq_rel);
}

/* Make an idle part (word w, next unit u) ours; 0 if its word changed meanwhile. */
static inline int fr_team_take(fr_team *t, fr_team_part *part, int64_t w, int u, int me)
{
    if (!atomic_compare_exchange_strong_explicit(&part->word, &w, fr_team_word(u, me, 0),
                                                 memory_order_acquire, memory_order_relaxed))
        return 0;
    atomic_store_explicit(&part->want, 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&t->taken, 1, memory_order_relaxed);
    return 1;
}

/* Run the team's units on this thread until every part is finished. */
static inline void fr_team_run(fr_team *t, int me, int nthreads, fr_team_unit_fn run, void *ctx)
{
    int delay = fr_debug_delay_for(me, -1, 0);
    if (delay) fr_team_sleep_us(delay);  /* started late */
    uint64_t owned = 0, lending = 0;
    if (me < t->nparts) {
        owned = (uint64_t)1 << me;
        atomic_store_explicit(&t->part[me].arrived, 1, memory_order_relaxed);
    }
    int64_t seen_word[FR_TEAM_MAX], seen_since[FR_TEAM_MAX];
    int64_t rate_since[FR_TEAM_MAX];
    int rate_unit[FR_TEAM_MAX];
    for (int p = 0; p < t->nparts; p++) seen_word[p] = -1, seen_since[p] = 0, rate_unit[p] = -1;
    int64_t steps_start = 0, pace_ns = -1; /* our own pace: ns per step unit (rows) */
    int steps_run = 0, asked = 0;          /* asked: we wait for a part to be handed over */

    for (;;) {
        int progressed = 0;
        for (uint64_t m = owned; m; m &= m - 1) {
            const int p = __builtin_ctzll(m);
            fr_team_part *part = &t->part[p];
            int64_t w = atomic_load_explicit(&part->word, memory_order_acquire);
            const int u = fr_team_unit(w);
            if (fr_team_owner(w) != me || u >= t->nunits) {
                owned &= ~((uint64_t)1 << p);
                continue;
            }
            /* busy: another thread runs a unit of it for us (we had not started) */
            if (fr_team_busy(w) || !fr_team_ready(t, u)) continue;
            delay = fr_debug_delay_for(me, u, 0);
            if (delay) {
                fr_team_sleep_us(delay);
                continue;  /* look again: the part may have been taken meanwhile */
            }
            if (!atomic_compare_exchange_strong_explicit(&part->word, &w, w | 1,
                                                         memory_order_acquire,
                                                         memory_order_relaxed))
                continue;
            if ((delay = fr_debug_delay_for(me, u, 1))) fr_team_sleep_us(delay);
            if (u < FR_TEAM_TIMED_UNITS) {  /* the expected unit time: from the first units */
                const int64_t t0 = fr_team_now_ns();
                if (u == 1 && steps_run == 0) steps_start = t0;
                run(ctx, me, p, u);
                const int64_t took = fr_team_now_ns() - t0;
                int64_t best = atomic_load_explicit(&t->unit_ns[u > 0], memory_order_relaxed);
                while ((best == 0 || took < best)
                       && !atomic_compare_exchange_weak_explicit(&t->unit_ns[u > 0], &best,
                                                                 took, memory_order_relaxed,
                                                                 memory_order_relaxed)) {}
            } else {
                run(ctx, me, p, u);
            }
            /* Hand the part over if another thread asked while this unit ran long. */
            const int handover =
                atomic_load_explicit(&part->want, memory_order_relaxed)
                && atomic_exchange_explicit(&part->want, 0, memory_order_relaxed);
            fr_team_release(t, part, u, handover ? FR_TEAM_NOBODY : me);
            if (u > 0 && pace_ns < 0) steps_run++;
            if (handover) owned &= ~((uint64_t)1 << p);
            progressed = 1;
        }
        if (progressed) continue;
        if (fr_team_done(t)) break;

        /* Nothing of ours can run: look at the other parts. */
        const int64_t now = fr_team_now_ns();
        if (pace_ns < 0 && steps_run > 0)  /* idle for the first time since our steps began */
            pace_ns = (now - steps_start) / steps_run;
        const int64_t floor_ns = fr_team_patience_ns();
        /* With no part left, stay only to pick up or watch work worth taking over: a thread
         * that lingers may be descheduled, and the call's end waits until it runs again. */
        if (!owned && !asked && !fr_team_worth_staying(t, pace_ns, floor_ns)) break;
        for (int q = 0; q < t->nparts; q++) {
            if (owned >> q & 1) continue;
            fr_team_part *part = &t->part[q];
            int64_t w = atomic_load_explicit(&part->word, memory_order_acquire);
            const int u = fr_team_unit(w);
            if (u >= t->nunits) continue;
            /* handed over, or its thread was never started (the runtime gave fewer) */
            const int orphan =
                fr_team_owner(w) == FR_TEAM_NOBODY || fr_team_owner(w) >= nthreads;
            if (!orphan && !fr_team_busy(w) && fr_team_ready(t, u)
                && !atomic_load_explicit(&part->arrived, memory_order_relaxed)) {
                /* Its thread has not started (woken late, or its core busy): run its units
                 * for it, one at a time, until it arrives; the part stays its own. */
                if (!(lending >> q & 1) && (w != seen_word[q] || now - seen_since[q] < floor_ns)) {
                    if (w != seen_word[q]) seen_word[q] = w, seen_since[q] = now;
                    continue;
                }
                if (!atomic_compare_exchange_strong_explicit(&part->word, &w, w | 1,
                                                             memory_order_acquire,
                                                             memory_order_relaxed))
                    continue;
                lending |= (uint64_t)1 << q;
                run(ctx, me, q, u);
                fr_team_release(t, part, u, fr_team_owner(w));
                atomic_fetch_add_explicit(&t->lent, 1, memory_order_relaxed);
                break;  /* our own parts may be ready now */
            }
            if (!orphan && !t->lockstep && u > 0 && fr_team_slow(q, u, now, floor_ns, pace_ns,
                                                               rate_unit, rate_since)) {
                /* rows: a part that advances at under 2/3 of our pace is ours to finish */
                if (fr_team_busy(w)) {
                    atomic_store_explicit(&part->want, 1, memory_order_relaxed);
                    asked = 1;
                } else if (fr_team_take(t, part, w, u, me)) {
                    owned |= (uint64_t)1 << q;
                }
                continue;
            }
            if (!orphan && w != seen_word[q]) {
                seen_word[q] = w;
                seen_since[q] = now;
                continue;
            }
            /* Patience: as long as such a unit takes (an idle part: running it ourselves costs
             * no more than waiting longer), twice that for a running one. */
            int64_t patience = atomic_load_explicit(&t->unit_ns[u > 0], memory_order_relaxed);
            if (fr_team_busy(w)) patience *= 2;
            if (patience < floor_ns) patience = floor_ns;
            if (!orphan && now - seen_since[q] < patience) continue;
            if (fr_team_busy(w)) {
                atomic_store_explicit(&part->want, 1, memory_order_relaxed);
                asked = 1;
            } else if ((orphan || fr_team_ready(t, u)) && fr_team_take(t, part, w, u, me)) {
                owned |= (uint64_t)1 << q;
            }
        }
        /* Spin: yielding would hand a shared core to the other runtime's thread for a whole
         * scheduler tick (4 ms measured), and the call cannot end without this thread. */
        fr_team_relax();
    }
}

#endif
