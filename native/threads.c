/*
 * Kernel threads: the helpers that split one product between cores (`--kernel-threads`).
 * Each JS thread that asks for them has a pool of its own; a product inside another (a
 * convolution's sgemm on a part of its batch) runs on its caller alone. Which part a thread computes
 * never changes an element's arithmetic (see sgemm.c), so any thread count gives the same bits.
 * Idle helpers spin briefly, then sleep on a condition variable (OpenMP's passive policy
 * after a short active one), so cores that other actors need are not held for long.
 */
#include "kernels.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define MAX_THREADS 64

static _Thread_local int wanted = 1;

void cr_set_threads(int n) { wanted = n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n; }
int cr_threads(void) { return wanted; }

/* One pool per JS thread that asks for helpers (each worker thread has its own, so thread
 * actors do not queue for one another's), freed with its thread (cr_threads_release). */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t wake, done;
  int helpers; /* started so far */
  pthread_t threads[MAX_THREADS];
  _Atomic unsigned long generation;
  cr_part_fn job_fn;
  void *job_arg;
  int job_parts;
  _Atomic int pending;
  _Atomic int closing;
  int busy; /* a product of this thread is using it: one inside it (a conv's sgemm) runs alone */
} pool_t;

static _Thread_local pool_t *mine;
static _Atomic unsigned long splits; /* products run on more than one thread, for tests and reports */

unsigned long cr_split_products(void) { return atomic_load(&splits); }

/*
 * How long a helper, or a caller waiting for its helpers, spins before it sleeps. A sleeping
 * thread takes 50-100 µs to wake on a virtual machine, the time a whole layer's product takes
 * at the default MLP's sizes; the products of one step come a few µs to tens of µs apart.
 */
static long spin_ns = 200000;

static long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

static inline void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* Spins until *p differs from `from` or spin_ns pass; whether it changed. */
static int spin_until_changed(_Atomic unsigned long *p, unsigned long from) {
  long end = now_ns() + spin_ns;
  for (int i = 0;; i++) {
    if (atomic_load_explicit(p, memory_order_acquire) != from) return 1;
    if ((i & 63) == 63 && now_ns() > end) return 0;
    relax();
  }
}

typedef struct { pool_t *pool; int id; } helper_arg;

static void *helper(void *p) {
  helper_arg a = *(helper_arg *)p;
  free(p);
  pool_t *pool = a.pool;
  unsigned long seen = 0;
  for (;;) {
    if (!spin_until_changed(&pool->generation, seen)) {
      pthread_mutex_lock(&pool->lock);
      while (atomic_load(&pool->generation) == seen) pthread_cond_wait(&pool->wake, &pool->lock);
      pthread_mutex_unlock(&pool->lock);
    }
    /* The job and its generation together, under the lock the caller publishes them under: a
     * helper that sat out a job (its id beyond that job's parts) may wake only when the next
     * is being written, and must not read half of each. (A job that needs this helper cannot
     * be followed by another before the helper has done its part.) */
    pthread_mutex_lock(&pool->lock);
    seen = atomic_load(&pool->generation);
    cr_part_fn fn = pool->job_fn;
    void *arg = pool->job_arg;
    int parts = pool->job_parts;
    pthread_mutex_unlock(&pool->lock);
    if (atomic_load(&pool->closing)) return NULL;
    if (a.id < parts) {
      fn(arg, a.id, parts);
      if (atomic_fetch_sub_explicit(&pool->pending, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_lock(&pool->lock);
        pthread_cond_signal(&pool->done);
        pthread_mutex_unlock(&pool->lock);
      }
    }
  }
}

static pool_t *pool_of_this_thread(void) {
  if (mine) return mine;
  pool_t *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->done, NULL);
  const char *env = getenv("CHAINRULE_KERNEL_SPIN_US");
  if (env && *env) spin_ns = atol(env) * 1000L;
  return mine = p;
}

int cr_run_parts(cr_part_fn fn, void *arg, int parts) {
  if (parts > MAX_THREADS) parts = MAX_THREADS;
  pool_t *pool = parts > 1 ? pool_of_this_thread() : NULL;
  if (!pool || pool->busy) {
    fn(arg, 0, 1);
    return 1;
  }
  pool->busy = 1;
  pthread_mutex_lock(&pool->lock);
  while (pool->helpers < parts - 1) {
    helper_arg *a = malloc(sizeof *a);
    if (!a) break;
    *a = (helper_arg){ pool, pool->helpers + 1 };
    if (pthread_create(&pool->threads[pool->helpers], NULL, helper, a)) { free(a); break; }
    pool->helpers++;
  }
  if (parts > pool->helpers + 1) parts = pool->helpers + 1;
  if (parts > 1) {
    atomic_fetch_add(&splits, 1);
    pool->job_fn = fn;
    pool->job_arg = arg;
    pool->job_parts = parts;
    atomic_store(&pool->pending, parts - 1);
    /* Under the lock, so a helper about to sleep sees it; spinning helpers see it at once. */
    atomic_fetch_add_explicit(&pool->generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool->wake);
  }
  pthread_mutex_unlock(&pool->lock);
  fn(arg, 0, parts);
  if (parts > 1) {
    long end = now_ns() + spin_ns;
    for (int i = 0; atomic_load_explicit(&pool->pending, memory_order_acquire) > 0; i++) {
      if ((i & 63) == 63 && now_ns() > end) {
        pthread_mutex_lock(&pool->lock);
        while (atomic_load(&pool->pending) > 0) pthread_cond_wait(&pool->done, &pool->lock);
        pthread_mutex_unlock(&pool->lock);
        break;
      }
      relax();
    }
  }
  pool->busy = 0;
  return parts;
}

void cr_threads_release(void) {
  pool_t *pool = mine;
  if (!pool) return;
  mine = NULL;
  pthread_mutex_lock(&pool->lock);
  atomic_store(&pool->closing, 1);
  atomic_fetch_add(&pool->generation, 1);
  pthread_cond_broadcast(&pool->wake);
  pthread_mutex_unlock(&pool->lock);
  for (int i = 0; i < pool->helpers; i++) pthread_join(pool->threads[i], NULL);
  pthread_cond_destroy(&pool->wake);
  pthread_cond_destroy(&pool->done);
  pthread_mutex_destroy(&pool->lock);
  free(pool);
}
