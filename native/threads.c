/*
 * Kernel threads: the helpers that split one product between cores (`--kernel-threads`).
 * One pool serves the whole process; a JS thread asks for it per product, and a product that
 * finds it busy (another JS thread's) runs on its caller alone. Which part a thread computes
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

static pthread_mutex_t in_use = PTHREAD_MUTEX_INITIALIZER; /* held by the product using the pool */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER, done = PTHREAD_COND_INITIALIZER;
static int helpers;          /* started so far; they never exit */
static _Atomic unsigned long generation;
static cr_part_fn job_fn;
static void *job_arg;
static int job_parts;
static _Atomic int pending;
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

static void *helper(void *p) {
  int id = (int)(intptr_t)p;
  unsigned long seen = 0;
  for (;;) {
    if (!spin_until_changed(&generation, seen)) {
      pthread_mutex_lock(&lock);
      while (atomic_load(&generation) == seen) pthread_cond_wait(&wake, &lock);
      pthread_mutex_unlock(&lock);
    }
    seen = atomic_load_explicit(&generation, memory_order_acquire);
    cr_part_fn fn = job_fn;
    void *arg = job_arg;
    int parts = job_parts;
    if (id < parts) {
      fn(arg, id, parts);
      if (atomic_fetch_sub_explicit(&pending, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_lock(&lock);
        pthread_cond_signal(&done);
        pthread_mutex_unlock(&lock);
      }
    }
  }
  return NULL;
}

int cr_run_parts(cr_part_fn fn, void *arg, int parts) {
  if (parts > MAX_THREADS) parts = MAX_THREADS;
  if (parts <= 1 || pthread_mutex_trylock(&in_use) != 0) {
    fn(arg, 0, 1);
    return 1;
  }
  pthread_mutex_lock(&lock);
  if (helpers == 0) {
    const char *env = getenv("CHAINRULE_KERNEL_SPIN_US");
    if (env && *env) spin_ns = atol(env) * 1000L;
  }
  while (helpers < parts - 1) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int failed = pthread_create(&t, &attr, helper, (void *)(intptr_t)(helpers + 1));
    pthread_attr_destroy(&attr);
    if (failed) break;
    helpers++;
  }
  if (parts > helpers + 1) parts = helpers + 1;
  if (parts > 1) {
    atomic_fetch_add(&splits, 1);
    job_fn = fn;
    job_arg = arg;
    job_parts = parts;
    atomic_store(&pending, parts - 1);
    /* Under the lock, so a helper about to sleep sees it; spinning helpers see it at once. */
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    pthread_cond_broadcast(&wake);
  }
  pthread_mutex_unlock(&lock);
  fn(arg, 0, parts);
  if (parts > 1) {
    long end = now_ns() + spin_ns;
    for (int i = 0; atomic_load_explicit(&pending, memory_order_acquire) > 0; i++) {
      if ((i & 63) == 63 && now_ns() > end) {
        pthread_mutex_lock(&lock);
        while (atomic_load(&pending) > 0) pthread_cond_wait(&done, &lock);
        pthread_mutex_unlock(&lock);
        break;
      }
      relax();
    }
  }
  pthread_mutex_unlock(&in_use);
  return parts;
}
