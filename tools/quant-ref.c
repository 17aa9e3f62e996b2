// quant-ref: llama.cpp's own quantizers as the outside reference for ferrite's goldens.
// Links the reference build's libggml-base (see scripts/goldens/quant.sh, which builds and
// runs it). Nothing here is copied from llama.cpp: it only calls ggml's public API.
//
//   quant-ref goldens DIR ROWS FULL_ROWS
//       Generates ROWS x 256 deterministic f32 inputs (the generator below; the Rust test
//       kernels/tests/quantize_golden.rs has a bit-identical twin), quantizes them with
//       ggml_quantize_chunk (no importance matrix: the path llama-quantize takes) for each
//       type, and writes into DIR:
//         TYPE.blocks   the blocks of the first FULL_ROWS rows, as ggml wrote them
//         TYPE.hashes   one u32 (LE) per row: FNV-1a 64 of the row's bytes, folded to 32 bits
//         summary.txt   the input's FNV-1a 64, and per type and row kind the sum of squared
//                       round-trip errors of ggml's own dequantization (to_float), in f64
//   quant-ref quant TYPE ROWS COLS IN OUT
//       Quantizes ROWS x COLS f32 from file IN into file OUT with ggml_quantize_chunk
//       (TYPE as ggml names it: q4_0, q4_K, iq4_nl, f16, bf16, ...).
#include "ggml.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COLS 256
#define KINDS 16

// ---- deterministic input generator (twin: kernels/tests/quantize_golden.rs) ----
// Only integer ops and exactly-sequenced f32 + - * (no libm), so C and Rust agree to the bit.

static uint64_t rng_state = 0x5EED0F3E221E5EEDull;

static uint64_t next_u64(void) { // splitmix64
    rng_state += 0x9E3779B97F4A7C15ull;
    uint64_t z = rng_state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float unif(void) { // [0, 1), 24 bits
    return (float)(next_u64() >> 40) * (1.0f / 16777216.0f);
}

static float sym(void) { // [-1, 1)
    return 2.0f * unif() - 1.0f;
}

static float gauss(void) { // Irwin-Hall(4), scaled to unit variance
    float s = unif();
    s += unif();
    s += unif();
    s += unif();
    return (s - 2.0f) * 1.7320508f;
}

static void gen_row(int row, float * x) {
    const float p2m20 = ldexpf(1.0f, -20), p2m64 = ldexpf(1.0f, -64);
    switch (row % KINDS) {
        case 0: for (int i = 0; i < COLS; i++) x[i] = gauss(); break;                 // normal
        case 1: for (int i = 0; i < COLS; i++) x[i] = sym(); break;                   // uniform
        case 2: for (int i = 0; i < COLS; i++) x[i] = gauss() * 0.02f; break;         // weight-like
        case 3:                                                                        // rare outliers
            for (int i = 0; i < COLS; i++) {
                float g = gauss() * 0.05f;
                if (next_u64() % 64 == 0) g *= 20.0f;
                x[i] = g;
            }
            break;
        case 4: for (int i = 0; i < COLS; i++) x[i] = 0.0f; break;                    // all zeros
        case 5: for (int i = 0; i < COLS; i++) x[i] = gauss() * p2m20; break;         // tiny
        case 6: for (int i = 0; i < COLS; i++) x[i] = gauss() * p2m64; break;         // below GROUP_MAX_EPS
        case 7: {                                                                      // constant
            const float c = sym() * 4.0f;
            for (int i = 0; i < COLS; i++) x[i] = c;
            break;
        }
        case 8: {                                                                      // one big value
            for (int i = 0; i < COLS; i++) x[i] = gauss() * 0.01f;
            const int p = (int)(next_u64() % COLS);
            x[p] = (next_u64() & 1) ? -64.0f : 64.0f;
            break;
        }
        case 9: for (int i = 0; i < COLS; i++) x[i] = unif() * 3.0f + 1.0f; break;    // all positive
        case 10: for (int i = 0; i < COLS; i++) x[i] = -(unif() * 2.0f); break;       // all <= 0
        case 11: for (int i = 0; i < COLS; i++) x[i] = gauss() * 1000.0f; break;     // large
        case 12: for (int i = 0; i < COLS; i++) x[i] = (float)(int)(next_u64() % 16) - 8.0f; break; // on a grid
        case 13:                                   // a 1/64 grid with -1 in each 16: exact ties
            for (int i = 0; i < COLS; i++) {
                x[i] = ((float)(int)(next_u64() % 128) - 64.0f) * 0.015625f;
                if (i % 16 == 0) x[i] = -1.0f;
            }
            break;
        case 14:                                                                       // sparse
            for (int i = 0; i < COLS; i++) {
                if (next_u64() % 10 < 9) {
                    x[i] = 0.0f;
                } else {
                    x[i] = gauss();
                }
            }
            break;
        case 15:                                                                       // heavy tails
            for (int i = 0; i < COLS; i++) {
                const float a = gauss();
                const float b = gauss();
                const float c = gauss();
                x[i] = a * b * c * 0.1f;
            }
            break;
    }
}

// ---- helpers ----

static uint64_t fnv1a64(const void * data, size_t n, uint64_t h) {
    const uint8_t * p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001B3ull;
    }
    return h;
}
#define FNV_OFFSET 0xCBF29CE484222325ull

static void die(const char * msg, const char * arg) {
    fprintf(stderr, "quant-ref: %s%s\n", msg, arg ? arg : "");
    exit(1);
}

static FILE * open_or_die(const char * dir, const char * name, const char * ext, const char * mode) {
    char path[4096];
    if (dir) {
        snprintf(path, sizeof path, "%s/%s%s", dir, name, ext);
    } else {
        snprintf(path, sizeof path, "%s", name);
    }
    FILE * f = fopen(path, mode);
    if (!f) die("cannot open ", path);
    return f;
}

static void write_or_die(FILE * f, const void * p, size_t n) {
    if (n && fwrite(p, 1, n, f) != n) die("write failed", NULL);
}

static enum ggml_type type_by_name(const char * name) {
    for (int t = 0; t < GGML_TYPE_COUNT; t++) {
        const char * n = ggml_type_name((enum ggml_type)t);
        if (n && strcmp(n, name) == 0) return (enum ggml_type)t;
    }
    die("unknown type ", name);
    return GGML_TYPE_COUNT;
}

// ---- commands ----

static int cmd_goldens(const char * dir, int rows, int full_rows) {
    static const struct { enum ggml_type type; const char * name; } types[] = {
        {GGML_TYPE_Q4_0, "Q4_0"}, {GGML_TYPE_Q4_1, "Q4_1"}, {GGML_TYPE_Q5_0, "Q5_0"},
        {GGML_TYPE_Q5_1, "Q5_1"}, {GGML_TYPE_Q8_0, "Q8_0"}, {GGML_TYPE_Q4_K, "Q4_K"},
        {GGML_TYPE_Q5_K, "Q5_K"}, {GGML_TYPE_Q6_K, "Q6_K"},
    };
    if (rows < 1 || full_rows < 0 || full_rows > rows) die("bad row counts", NULL);
    float * x = malloc(sizeof(float) * (size_t)rows * COLS);
    float * y = malloc(sizeof(float) * COLS);
    if (!x || !y) die("out of memory", NULL);
    for (int r = 0; r < rows; r++) gen_row(r, x + (size_t)r * COLS);

    FILE * summary = open_or_die(dir, "summary", ".txt", "w");
    fprintf(summary, "# written by tools/quant-ref.c (scripts/goldens/quant.sh); do not edit\n");
    fprintf(summary, "rows %d\ncols %d\nfull_rows %d\nkinds %d\n", rows, COLS, full_rows, KINDS);
    fprintf(summary, "input_fnv64 %016llx\n",
            (unsigned long long)fnv1a64(x, sizeof(float) * (size_t)rows * COLS, FNV_OFFSET));

    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        const enum ggml_type type = types[t].type;
        const size_t rs = ggml_row_size(type, COLS);
        uint8_t * q = malloc(rs * (size_t)rows);
        if (!q) die("out of memory", NULL);
        const size_t written = ggml_quantize_chunk(type, x, q, 0, rows, COLS, NULL);
        if (written != rs * (size_t)rows) die("unexpected size from ggml_quantize_chunk for ", types[t].name);

        FILE * fb = open_or_die(dir, types[t].name, ".blocks", "wb");
        write_or_die(fb, q, rs * (size_t)full_rows);
        fclose(fb);

        FILE * fh = open_or_die(dir, types[t].name, ".hashes", "wb");
        double sse[KINDS] = {0};
        const struct ggml_type_traits * tr = ggml_get_type_traits(type);
        for (int r = 0; r < rows; r++) {
            const uint64_t h = fnv1a64(q + rs * (size_t)r, rs, FNV_OFFSET);
            const uint32_t h32 = (uint32_t)(h ^ (h >> 32));
            const uint8_t le[4] = {h32 & 255, (h32 >> 8) & 255, (h32 >> 16) & 255, h32 >> 24};
            write_or_die(fh, le, 4);
            tr->to_float(q + rs * (size_t)r, y, COLS);
            for (int i = 0; i < COLS; i++) {
                const double e = (double)x[(size_t)r * COLS + i] - (double)y[i];
                sse[r % KINDS] += e * e;
            }
        }
        fclose(fh);
        for (int k = 0; k < KINDS; k++) fprintf(summary, "sse %s %d %.17g\n", types[t].name, k, sse[k]);
        free(q);
    }
    fclose(summary);
    free(x);
    free(y);
    return 0;
}

static int cmd_quant(const char * tname, long rows, long cols, const char * in, const char * out) {
    const enum ggml_type type = type_by_name(tname);
    if (rows < 1 || cols < 1 || cols % ggml_blck_size(type) != 0) die("bad shape for ", tname);
    float * x = malloc(sizeof(float) * (size_t)rows * (size_t)cols);
    const size_t rs = ggml_row_size(type, cols);
    uint8_t * q = malloc(rs * (size_t)rows);
    if (!x || !q) die("out of memory", NULL);
    FILE * fi = open_or_die(NULL, in, "", "rb");
    if (fread(x, sizeof(float), (size_t)rows * (size_t)cols, fi) != (size_t)rows * (size_t)cols) die("short input ", in);
    fclose(fi);
    const size_t written = ggml_quantize_chunk(type, x, q, 0, rows, cols, NULL);
    if (written != rs * (size_t)rows) die("unexpected size from ggml_quantize_chunk for ", tname);
    FILE * fo = open_or_die(NULL, out, "", "wb");
    write_or_die(fo, q, written);
    fclose(fo);
    free(x);
    free(q);
    return 0;
}

int main(int argc, char ** argv) {
    if (argc == 5 && strcmp(argv[1], "goldens") == 0) {
        return cmd_goldens(argv[2], atoi(argv[3]), atoi(argv[4]));
    }
    if (argc == 7 && strcmp(argv[1], "quant") == 0) {
        return cmd_quant(argv[2], atol(argv[3]), atol(argv[4]), argv[5], argv[6]);
    }
    fprintf(stderr,
            "usage: quant-ref goldens DIR ROWS FULL_ROWS\n"
            "       quant-ref quant TYPE ROWS COLS IN.f32 OUT\n");
    return 2;
}
