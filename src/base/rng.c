/* Seeded random numbers: xoshiro256** with a splitmix64 seeder. Every random
 * choice in mllm4rec goes through one of these so a seed reproduces a run. */
#include "mllm4rec/base.h"

#include <math.h>

#define GOLDEN 0x9e3779b97f4a7c15ull

uint64_t mr_hash2(uint64_t a, uint64_t b) { return mr_mix64_finalize(a * GOLDEN + b + 0x632be59bd9b4e019ull); }

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = *x;
    *x += GOLDEN;
    return mr_mix64(z);
}

void mr_rng_seed(mr_rng *r, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t mr_rng_u64(mr_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t mr_rng_below(mr_rng *r, uint64_t n) {
    if (n == 0) return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* reject the biased tail */
    uint64_t x;
    do x = mr_rng_u64(r);
    while (x >= limit);
    return x % n;
}

double mr_rng_uniform(mr_rng *r) { return (double)(mr_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

double mr_rng_normal(mr_rng *r) {
    double u1 = mr_rng_uniform(r), u2 = mr_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
