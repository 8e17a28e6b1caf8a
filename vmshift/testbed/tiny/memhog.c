/* vmshift tiny guest: fill memory with random data, then dirty it at a set rate.
 *
 * usage: memhog FILL_MIB DIRTY_MIB_PER_S
 * Prints "FILLED <MiB>" once the fill is done (the guest's ready marker waits
 * for it), then writes one word into successive 4 KiB pages so that exactly
 * DIRTY_MIB_PER_S MiB of distinct pages change per second. The walk is
 * sequential over the whole buffer, so a measurement window shorter than
 * buffer/rate seconds sees every write as a distinct dirty page.
 * Random data (xorshift, not zeros) makes a migration move real bytes:
 * QEMU sends zero pages as a flag only.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MIB (1024UL * 1024UL)
#define DIRTY_MIN_BUFFER_MIB 64UL

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static uint64_t next_random(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void idle_forever(void) {
    for (;;)
        pause();
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: memhog FILL_MIB DIRTY_MIB_PER_S\n");
        return 2;
    }
    unsigned long fill = strtoul(argv[1], NULL, 10);
    double dirty = strtod(argv[2], NULL);
    unsigned long mib = fill;
    if (dirty > 0 && mib < DIRTY_MIN_BUFFER_MIB)
        mib = DIRTY_MIN_BUFFER_MIB;
    if (mib == 0) {
        printf("FILLED 0\n");
        fflush(stdout);
        idle_forever();
    }
    size_t size = mib * MIB;
    uint64_t *buf = mmap(NULL, size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    rng ^= (uint64_t)getpid() << 32 ^ (uint64_t)(now() * 1e9);
    for (size_t i = 0; i < size / sizeof(uint64_t); i++)
        buf[i] = next_random();
    printf("FILLED %lu\n", fill);
    fflush(stdout);
    if (dirty <= 0)
        idle_forever();

    size_t pages = size / PAGE, words_per_page = PAGE / sizeof(uint64_t);
    double pages_per_s = dirty * MIB / PAGE, start = now();
    uint64_t done = 0, next_report = 0;
    size_t page = 0;
    struct timespec tick = {0, 2000000}; /* 2 ms: smooth enough for a 1 s window */
    for (;;) {
        double elapsed = now() - start;
        uint64_t target = (uint64_t)(elapsed * pages_per_s);
        while (done < target) {
            /* An odd constant always changes the word: the page's hash changes too. */
            buf[page * words_per_page] += 0x9E3779B97F4A7C15ULL;
            page = (page + 1) % pages;
            done++;
        }
        if (done >= next_report) {
            printf("DIRTIED %.1f MiB in %.1f s\n", done * (double)PAGE / MIB, elapsed);
            fflush(stdout);
            next_report = done + (uint64_t)(pages_per_s * 10) + 1;
        }
        nanosleep(&tick, NULL);
    }
}
