/* The team protocol of team.h on its own, with POSIX threads: every unit runs exactly once,
 * never before the units it depends on (its part's previous unit; with lockstep, every part's
 * previous unit; with sync_prelude, every prelude before any unit 1), whichever thread runs
 * it, while threads are delayed as if descheduled (before they start, so that their units are
 * run for them; in the middle of a unit, so that the part is handed over), and when fewer
 * threads start than there are parts. Built with -fsanitize=thread by tools/sanitize.sh: the
 * unit bodies' plain reads and writes are ordered only by the team's atomics, so a missing
 * acquire or release is a reported data race. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "team.h"

static int passed = 0, failed = 0;

static void check(int ok, const char *what)
{
    if (ok) passed++;
    else { failed++; printf("FAIL: %s\n", what); }
}

#define MAXU 160

typedef struct {
    fr_team team;
    int nthreads, lockstep, sync_prelude;
    /* plain memory, as the kernels' buffers: ordered only by the team */
    int runs[FR_TEAM_MAX][MAXU];
    int ran_by[FR_TEAM_MAX][MAXU];
    int order_ok;
    /* a running sum per part, double-buffered as the recurrence's state: unit u reads the
     * previous unit's values (all parts' with lockstep) and writes its part's */
    int value[2][FR_TEAM_MAX];
    int delay_thread, delay_every;  /* this thread sleeps in some of its units */
    pthread_mutex_t lock;           /* for order_ok only */
} world;

static void sleep_us(int us)
{
    struct timespec ts = {0, (long)us * 1000};
    nanosleep(&ts, NULL);
}

static void unit(void *ctx, int thread, int p, int u)
{
    world *w = ctx;
    int ok = 1;
    if (u > 0 && w->runs[p][u - 1] != 1) ok = 0;
    if (w->lockstep && u > 0)
        for (int q = 0; q < w->team.nparts; q++)
            if (w->runs[q][u - 1] != 1) ok = 0;
    if (w->sync_prelude && u == 1)
        for (int q = 0; q < w->team.nparts; q++)
            if (w->runs[q][0] != 1) ok = 0;
    if (thread == w->delay_thread && w->delay_every && u % w->delay_every == 1)
        sleep_us(1500 + 300 * (u % 3));  /* descheduled mid-unit: about a slice */
    const int prev = (u + 1) & 1;
    if (w->lockstep && u > 0) {  /* read every part's previous state, as a step does */
        int sum = 0;
        for (int q = 0; q < w->team.nparts; q++) sum += w->value[prev][q];
        if (sum < 0) ok = 0;
    }
    w->value[u & 1][p] = (u > 0 ? w->value[prev][p] : 0) + u;
    w->runs[p][u]++;
    w->ran_by[p][u] = thread;
    if (!ok) {
        pthread_mutex_lock(&w->lock);
        w->order_ok = 0;
        pthread_mutex_unlock(&w->lock);
    }
}

typedef struct {
    world *w;
    int me, start_late_us;
} worker;

static void *run_worker(void *arg)
{
    worker *k = arg;
    if (k->start_late_us) sleep_us(k->start_late_us);  /* a thread whose core is taken */
    fr_team_run(&k->w->team, k->me, k->w->nthreads, unit, k->w);
    return NULL;
}

static void run_case(int nparts, int nthreads, int nunits, int lockstep, int sync_prelude,
                     int late_thread, int late_us, int delay_thread, int delay_every)
{
    world *w = calloc(1, sizeof *w);
    pthread_mutex_init(&w->lock, NULL);
    fr_team_init(&w->team, nparts, nunits, lockstep, sync_prelude);
    w->nthreads = nthreads;
    w->lockstep = lockstep;
    w->sync_prelude = sync_prelude;
    w->order_ok = 1;
    w->delay_thread = delay_thread;
    w->delay_every = delay_every;
    pthread_t th[FR_TEAM_MAX];
    worker k[FR_TEAM_MAX];
    for (int i = 0; i < nthreads; i++) {
        k[i] = (worker){w, i, i == late_thread ? late_us : 0};
        pthread_create(&th[i], NULL, run_worker, &k[i]);
    }
    for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);

    char what[200];
    int once = 1, moved = 0;
    for (int p = 0; p < nparts; p++)
        for (int u = 0; u < nunits; u++) {
            once &= w->runs[p][u] == 1;
            moved += w->ran_by[p][u] != p;
        }
    int sums = 1;
    for (int p = 0; p < nparts; p++)
        sums &= w->value[(nunits - 1) & 1][p] == nunits * (nunits - 1) / 2;
    snprintf(what, sizeof what, "parts %d threads %d units %d lockstep %d sync %d late %d/%dus "
             "delay %d/%d", nparts, nthreads, nunits, lockstep, sync_prelude, late_thread,
             late_us, delay_thread, delay_every);
    check(once, what);
    check(w->order_ok, what);
    check(sums, what);
    const int taken = atomic_load(&w->team.taken), lent = atomic_load(&w->team.lent);
    /* work can only have moved to another thread through a take-over or a lent unit, counted */
    check(moved == 0 || taken > 0 || lent > 0, what);
    check(lent <= moved, what);
    /* a thread that never started lost its part; one that started late had units run for it */
    if (nthreads < nparts) check(taken > 0 && moved > 0, what);
    if (late_us >= 20000) check(lent > 0 && moved > 0, what);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

int main(void)
{
    for (int lockstep = 0; lockstep <= 1; lockstep++)
        for (int sync = 0; sync <= 1; sync++) {
            /* healthy teams */
            run_case(2, 2, MAXU, lockstep, sync, -1, 0, -1, 0);
            run_case(4, 4, 60, lockstep, sync, -1, 0, -1, 0);
            /* a thread that starts late (its core busy): taken over, then rejoins or not */
            run_case(2, 2, MAXU, lockstep, sync, 1, 20000, -1, 0);
            run_case(3, 3, 60, lockstep, sync, 0, 2000, -1, 0);
            /* a thread descheduled in the middle of units: handed over */
            run_case(2, 2, MAXU, lockstep, sync, -1, 0, 1, 40);
            run_case(4, 4, 60, lockstep, sync, -1, 0, 2, 9);
            /* fewer threads than parts (the runtime gave fewer) */
            run_case(4, 2, 60, lockstep, sync, -1, 0, -1, 0);
            run_case(3, 1, 60, lockstep, sync, -1, 0, -1, 0);
        }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
