/* C baselines for bench_core.py.
 *   mlock_bench pair N      -> ns per mlock+munlock of one 4 KiB page (1 MiB private anon map)
 *   mlock_bench bulk BYTES  -> ns of one mlock() of BYTES of fresh private anonymous memory
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static double now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    long n = atol(argv[2]);
    if (strcmp(argv[1], "pair") == 0) {
        char *p = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 1;
        memset(p, 1, 1 << 20);
        char *page = p + 4 * 4096;
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            if (mlock(page, 4096) || munlock(page, 4096)) { perror("mlock"); return 1; }
        }
        printf("%.1f\n", (now_ns() - t0) / n);
    } else {
        char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) return 1;
        double t0 = now_ns();
        if (mlock(p, n)) { perror("mlock"); return 1; }
        printf("%.1f\n", now_ns() - t0);
    }
    return 0;
}
