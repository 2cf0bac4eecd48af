// Fused CPU kernels for axsa.models.approx (see models/_native.py, docs/emulation.md).
//
// One call computes a whole approximate GEMM, C[g, m, n] = sum_k lut[code(a), code(b)],
// from the operands' own memory (float or integer values, any strides): operand check
// and code conversion, then one of two exact engines, then the int64 result. On the
// models' small GEMMs the per-call cost of a chain of torch operations dominates; here
// there is one call.
//
// Engine 0, low rank: lut[a, b] == sum_grp scale * (F[a] . G[b]) + row[a] + col[b], with
// F (int8 digits + 128, so unsigned) and G (int8 digits) per code (models/_lowrank.py;
// the +128 shift is compensated in col by the caller). The digits of every operand
// element go along K (K' = K * width): side by side per element (the scalar front end),
// or as one plane per digit (AVX512-VBMI byte permutations, 64 codes at a time; see
// "digit planes" below). The GEMM runs on AVX512-VNNI dot products (u8 x s8 -> s32; 64
// multiply-adds per instruction), or on a portable loop elsewhere. Every partial sum is
// exact in int32 (K' chunks of at most 65536: 65536 * 255 * 128 < 2^31) and added into
// int64.
//
// Engine 1, gather: the plain table lookup for tables without structure, with int32
// partial sums where K * max|lut| < 2^31, else int64.
//
// Engine 2, pairs: a rank-1 table whose factors need two int8 parts each (so four int8
// products in engine 0), lut[a, b] == u[a] * v[b] with |u|, |v| < 2^15, in int16: pairs
// of k per 32-bit word, 32 multiply-adds an instruction (AVX512-VNNI vpdpwssd), int32
// sums (K * max|u v| < 2^31; else the call runs engine 0). DRUM at 8 bits is one.
//
// Build: g++ -std=c++17 -O3 -march=native -fno-strict-aliasing -ffp-contract=off
// -fno-trapping-math -fopenmp -fPIC -shared
// (models/_native.py); define AXSA_GENERIC to force the portable loops (the tests build
// both).
#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <limits>
#include <type_traits>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512DQ__) && \
    defined(__AVX512VL__) && defined(__AVX512VNNI__) && !defined(AXSA_GENERIC)
#include <immintrin.h>
#define AXSA_VNNI 1
#else
#define AXSA_VNNI 0
#endif
#if AXSA_VNNI && defined(__AVX512VBMI__)
#define AXSA_VBMI 1   // byte permutations: the digit-plane front end
#else
#define AXSA_VBMI 0
#endif

extern "C" {

// One operand: a is (g, m, k), b is (g, k, n); strides in elements (0 = broadcast).
struct AxsaOperand {
    int64_t batch_stride, outer_stride, inner_stride;
    int64_t lo, hi;   // allowed values
    int32_t dtype;    // 0 float32, 1 float64, 2 int64, 3 int32, 4 int16, 5 int8, 6 uint8
    int32_t width;    // code bits
};

struct AxsaGroup {
    const uint8_t* f;  // (2^wa, stride): a's digits + 128, zero padded to the stride
    const int8_t* g;   // (2^wb, stride): b's digits, zero padded
    int64_t width;     // digits per code
    int64_t stride;    // bytes per code in f and g: width when it is 1, 2, 4 or a
                       // multiple of 8, else width rounded up to 4 or to a multiple of 8
    int64_t scale;
    // the digits as planes for the SIMD front end (codes of at most 8 bits), or null:
    const uint8_t* f_planes;  // (width, 256): digit t of a's code c at [t * 256 + c]
    const int8_t* g_planes;   // (width, 256): the same for b
};

// An int64 term per code as byte planes, for the SIMD front end:
// term[c] = offset + sum_j 256^j planes[j * 256 + c].
struct AxsaTerms {
    const uint8_t* planes;   // (count, 256), or null
    int64_t count, offset;
};

struct AxsaPlan {
    int64_t batches, m, k, n;
    AxsaOperand a, b;
    int32_t engine;   // 0 low rank, 1 gather, 2 pairs
    int32_t ngroups;
    const AxsaGroup* groups;
    const int64_t* row;     // per code of a, or null
    const int64_t* col;     // per code of b (constant and shift folded in), or null
    const int32_t* lut32;   // gather: row-major (2^wa, 2^wb), or null
    const int64_t* lut64;   // gather: used when lut32 is null
    int32_t acc32;          // gather: K * max|lut| < 2^31
    AxsaTerms row_terms, col_terms;   // row and col as byte planes (null planes: none)
    int32_t planes;         // 1: the digit-plane front end where the CPU and table allow
    AxsaTerms lut_planes;   // gather: lut[a, b] = offset + sum_j 256^j planes[(a * count
                            // + j) * 256 + b] (codes of at most 8 bits, count <= 4), or
                            // null planes
    AxsaTerms lut_planes_t; // the same for the transposed table (planes[(b * count + j) *
                            // 256 + a], same offset)
    const int16_t* u16;     // pairs: u per code of a (codes of at most 8 bits), or null
    const int16_t* v16;     // pairs: v per code of b
    int64_t pair_bound;     // pairs: max|u| * max|v|
    const uint8_t* u_planes;   // pairs: u's low bytes (256), then its high bytes (256)
    const uint8_t* v_planes;   // pairs: the same for v
};

int32_t axsa_approx_simd(void) { return AXSA_VNNI + AXSA_VBMI; }

}  // extern "C"

namespace {

constexpr int64_t kTileN = 32;         // output columns per micro tile (two 16-lane vectors)
constexpr int64_t kMaxMR = 8;          // output rows per micro tile
constexpr int64_t kMaxK4 = 16384;      // K' / 4 per int32 chunk (K' <= 65536)
constexpr int64_t kRowChunk = 1024;    // most rows whose digits are made at once
constexpr int64_t kChunkBytes = 384 << 10;   // their digits: at most this (in L2)
constexpr int64_t kPackedBytes = 8 << 20;    // b's packed digits, made once per call
constexpr int64_t kGatherRows = 256;   // rows per chunk of the gathers and conversions
constexpr int64_t kL1Bytes = 32 << 10;    // b's packed words per K' chunk of a tile
constexpr int64_t kShortK = 8;    // below, per-code costs outweigh the GEMM: the scalar
                                  // front end, digits at their stored (padded) width

// One row of values at src[c * inner] -> codes; accumulates into `bad` whether a value
// is outside [lo, hi] or not an integer (NaN included). Branch-free, so that it
// vectorises (the clamp keeps the int conversion defined); Unit: inner == 1.
template <typename T, bool Unit, typename D>
void row_codes(const T* src, int64_t inner, int64_t cols, T lo, T hi, int32_t mask, D* dst,
               int& bad) {
    for (int64_t c = 0; c < cols; ++c) {
        T v = src[Unit ? c : c * inner];
        T vc = v >= lo ? (v <= hi ? v : hi) : lo;
        int32_t iv = int32_t(vc);
        bad |= int(vc != v) | int(T(iv) != vc);
        dst[c] = D(iv & mask);
    }
}

#if AXSA_VNNI
// row_codes for a contiguous row of integer values into u8 codes, a vector at a time
// (GCC's vectorization of the generic loop has a long set-up, which short rows pay: the
// models' operands are rows of 1 to 768 values).
template <typename T>
constexpr bool kSimdCodes = std::is_same_v<T, int64_t> || std::is_same_v<T, int32_t> ||
                            std::is_same_v<T, int8_t> || std::is_same_v<T, uint8_t>;

template <typename T>
void simd_row_codes(const T* src, int64_t cols, T lo, T hi, int32_t mask, uint8_t* dst,
                    int& bad) {
    // v is in [lo, hi] iff the unsigned v - lo (wrapping) is at most hi - lo: one vector
    // maximum of those differences a vector, checked once at the end (exact for any
    // value of T while hi - lo < 2^16, which the caller ensures)
    constexpr int64_t L = 64 / sizeof(T);   // values per vector
    using U = std::make_unsigned_t<T>;
    const U span = U(U(hi) - U(lo));
    __m512i top = _mm512_setzero_si512();
    auto step = [&](int64_t c, uint64_t live) {
        if constexpr (sizeof(T) == 8) {
            const __m512i v = _mm512_maskz_loadu_epi64(__mmask8(live), src + c);
            top = _mm512_mask_max_epu64(top, __mmask8(live), top,
                                        _mm512_sub_epi64(v, _mm512_set1_epi64(lo)));
            _mm512_mask_cvtepi64_storeu_epi8(dst + c, __mmask8(live),
                                             _mm512_and_si512(v, _mm512_set1_epi64(mask)));
        } else if constexpr (sizeof(T) == 4) {
            const __m512i v = _mm512_maskz_loadu_epi32(__mmask16(live), src + c);
            top = _mm512_mask_max_epu32(top, __mmask16(live), top,
                                        _mm512_sub_epi32(v, _mm512_set1_epi32(lo)));
            _mm512_mask_cvtepi32_storeu_epi8(dst + c, __mmask16(live),
                                             _mm512_and_si512(v, _mm512_set1_epi32(mask)));
        } else {
            const __m512i v = _mm512_maskz_loadu_epi8(live, src + c);
            top = _mm512_mask_max_epu8(top, live, top,
                                       _mm512_sub_epi8(v, _mm512_set1_epi8(char(lo))));
            _mm512_mask_storeu_epi8(dst + c, live,
                                    _mm512_and_si512(v, _mm512_set1_epi8(char(mask))));
        }
    };
    constexpr uint64_t all = L == 64 ? ~uint64_t(0) : (uint64_t(1) << L) - 1;
    int64_t c = 0;
    for (; c + L <= cols; c += L) step(c, all);
    if (c < cols) step(c, (uint64_t(1) << (cols - c)) - 1);
    alignas(64) U lanes[L];
    _mm512_store_si512(lanes, top);
    U most = 0;
    for (int64_t i = 0; i < L; ++i) most = std::max(most, lanes[i]);
    bad |= int(most > span);
}
#endif

// Values at x[offset + r * outer + c * inner] (r < rows, c < cols) -> codes, row-major
// (D: int32_t, or uint8_t for codes of at most 8 bits). False on a value outside [lo, hi]
// or not an integer.
template <typename T, typename D>
bool to_codes(const void* base, int64_t offset, int64_t outer, int64_t inner, int64_t rows,
              int64_t cols, int64_t lo, int64_t hi, int32_t width, D* out) {
    const T* x = static_cast<const T*>(base) + offset;
    const int32_t mask = (int32_t(1) << width) - 1;
    // the bounds within T's own range (int8 values against a 0..255 table, say)
    const double tmin = double(std::numeric_limits<T>::lowest());
    const double tmax = double(std::numeric_limits<T>::max());
    if (double(lo) > tmax || double(hi) < tmin) return rows * cols == 0;
    const T tlo = double(lo) < tmin ? std::numeric_limits<T>::lowest() : T(lo);
    const T thi = double(hi) > tmax ? std::numeric_limits<T>::max() : T(hi);
    int bad = 0;
    for (int64_t r = 0; r < rows; ++r) {
#if AXSA_VNNI
        if constexpr (std::is_same_v<D, uint8_t> && kSimdCodes<T>)
            if (inner == 1 && double(thi) - double(tlo) < 65536.0) {
                simd_row_codes(x + r * outer, cols, tlo, thi, mask, out + r * cols, bad);
                continue;
            }
#endif
        if (inner == 1)
            row_codes<T, true>(x + r * outer, 1, cols, tlo, thi, mask, out + r * cols, bad);
        else
            row_codes<T, false>(x + r * outer, inner, cols, tlo, thi, mask, out + r * cols,
                                bad);
    }
    return !bad;
}

template <typename D>
using CodesFn = bool (*)(const void*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                         int64_t, int32_t, D*);
// by AxsaOperand::dtype
template <typename D>
const CodesFn<D> kCodes[] = {to_codes<float, D>, to_codes<double, D>, to_codes<int64_t, D>,
                             to_codes<int32_t, D>, to_codes<int16_t, D>, to_codes<int8_t, D>,
                             to_codes<uint8_t, D>};

template <typename D>
bool codes_of(const void* base, int32_t dtype, int64_t offset, int64_t outer, int64_t inner,
              int64_t rows, int64_t cols, int64_t lo, int64_t hi, int32_t width, D* out) {
    if (inner == 1 && outer == cols) {   // contiguous rows: one long run (short rows of
        cols *= rows;                    // K = 1..4 would not vectorise)
        rows = 1;
    }
    if (dtype < 0 || dtype >= 7) return false;
    return kCodes<D>[dtype](base, offset, outer, inner, rows, cols, lo, hi, width, out);
}

// Codes of `rows` consecutive rows of a, starting at global row r0 (row r is batch r / m,
// row r % m; the batch index is taken modulo nothing: the caller passes global rows).
template <typename D>
bool a_codes(const AxsaPlan& p, const void* a, int64_t r0, int64_t rows, D* out) {
    const AxsaOperand& o = p.a;
    // batches laid out back to back: the rows of several batches are one block
    const bool flat = o.batch_stride == p.m * o.outer_stride;
    while (rows > 0) {
        int64_t g = r0 / p.m, i = r0 % p.m;
        int64_t take = flat ? rows : std::min(rows, p.m - i);
        if (!codes_of(a, o.dtype, g * o.batch_stride + i * o.outer_stride, o.outer_stride,
                      o.inner_stride, take, p.k, o.lo, o.hi, o.width, out))
            return false;
        out += take * p.k;
        r0 += take;
        rows -= take;
    }
    return true;
}

template <typename T>
T* scratch(std::vector<T>& v, size_t n) {
    if (v.size() < n) v.resize(n);
    return v.data();
}

// The output: int64 (`out`), or float32 (`outf`, when not null), then optionally
// dequantized: outf[r, j] = float(sum) * scale[j or 0] (+ bias[j]), the very operations
// of `axsa_dequantize` (torch.mul then add_).
struct Out {
    int64_t* out;
    float* outf;
    const float* scale;   // null: the sums as they are
    int64_t s_step;       // 1: a scale per column, 0: one scale
    const float* bias;    // per column, or null
};

// Where a full tile's sums go, straight from the accumulators: dst[i, j] = rs[i] + cs[j]
// + scale * sum (the first group's first K' chunk), else dst[i, j] += scale * sum; on
// the last pass of a float result (fdst not null) that sum goes to fdst[i, j] as float32
// instead, times fs[j or 0] plus fb[j] where given (`Out`'s dequantization; all four
// pointers at the tile's first column). (Storing the int32 tile and reading it back
// costs store-forwarding stalls.)
struct Epi {
    int64_t* dst;
    int64_t ldd;
    const int64_t* rs;
    const int64_t* cs;
    int64_t scale;
    bool first;
    float* fdst = nullptr;
    const float* fs = nullptr;
    int64_t fs_step = 0;
    const float* fb = nullptr;
};

// The finished sum v of tile element (i, c) into its place.
inline void put1(const Epi& e, int64_t i, int64_t c, int64_t v) {
    if (!e.fdst) {
        e.dst[i * e.ldd + c] = v;
        return;
    }
    float f = float(v);
    if (e.fs) {
        f = f * e.fs[e.fs_step ? c : 0];
        if (e.fb) f = f + e.fb[c];
    }
    e.fdst[i * e.ldd + c] = f;
}

#if AXSA_VNNI
// The finished sums v of tile elements (i, c .. c + 7) into their places.
inline void put8(const Epi& e, int64_t i, int64_t c, __m512i v) {
    if (!e.fdst) {
        _mm512_storeu_si512(e.dst + i * e.ldd + c, v);
        return;
    }
    __m256 f = _mm512_cvtepi64_ps(v);
    if (e.fs) {
        f = _mm256_mul_ps(f, e.fs_step ? _mm256_loadu_ps(e.fs + c) : _mm256_set1_ps(e.fs[0]));
        if (e.fb) f = _mm256_add_ps(f, _mm256_loadu_ps(e.fb + c));
    }
    _mm256_storeu_ps(e.fdst + i * e.ldd + c, f);
}
#endif

// ---- int8 micro kernel: C[i, j] = sum_k4 sum_q A[i, 4 k4 + q] * B[k4, j, q] ------------
// A: u8 rows of stride lda; B: packed s8, `ldb` bytes per k4 (4 per column);
// C: int32, kTileN per row.

#if AXSA_VNNI
// acc += dot(a, b) in place: GCC 12 copies the accumulator of the intrinsic through
// another register (and spills) in an 8 x 2 tile, which halved the kernel's rate.
inline void dot_add(__m512i& acc, __m512i a, __m512i b) {
    asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
}

template <int MR, int NV>
void micro(const uint8_t* A, int64_t lda, const int8_t* B, int64_t ldb, int64_t k4n,
           int32_t* C, const Epi* e) {
    __m512i acc[MR][NV];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
        for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_si512();
    for (int64_t k4 = 0; k4 < k4n; ++k4) {
        __m512i b[NV];
#pragma GCC unroll 2
        for (int j = 0; j < NV; ++j) b[j] = _mm512_loadu_si512(B + k4 * ldb + 64 * j);
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            int32_t word;
            std::memcpy(&word, A + i * lda + 4 * k4, 4);
            __m512i av = _mm512_set1_epi32(word);
#pragma GCC unroll 2
            for (int j = 0; j < NV; ++j) dot_add(acc[i][j], av, b[j]);
        }
    }
    if (!e) {
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
            for (int j = 0; j < NV; ++j)
                _mm512_storeu_si512(C + i * kTileN + 16 * j, acc[i][j]);
        return;
    }
    const Epi ep = *e;   // a copy, which the stores below cannot alias (else each store
                         // makes the compiler reload the pointers)
    if (ep.first && ep.scale == 1 && !ep.fdst) {   // one pass (an exact table): rs + cs + sum
#pragma GCC unroll 8
        for (int i = 0; i < MR; ++i) {
            int64_t* d = ep.dst + i * ep.ldd;
            const __m512i rs = _mm512_set1_epi64(ep.rs[i]);
#pragma GCC unroll 2
            for (int j = 0; j < NV; ++j) {
                const __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc[i][j]));
                const __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc[i][j], 1));
                _mm512_storeu_si512(d + 16 * j, _mm512_add_epi64(
                    lo, _mm512_add_epi64(rs, _mm512_loadu_si512(ep.cs + 16 * j))));
                _mm512_storeu_si512(d + 16 * j + 8, _mm512_add_epi64(
                    hi, _mm512_add_epi64(rs, _mm512_loadu_si512(ep.cs + 16 * j + 8))));
            }
        }
        return;
    }
    const __m512i scale = _mm512_set1_epi64(ep.scale);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
        int64_t* d = ep.dst + i * ep.ldd;
        const __m512i rs = _mm512_set1_epi64(ep.first ? ep.rs[i] : 0);
#pragma GCC unroll 2
        for (int j = 0; j < NV; ++j) {
            __m512i half[2] = {_mm512_cvtepi32_epi64(_mm512_castsi512_si256(acc[i][j])),
                               _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(acc[i][j], 1))};
#pragma GCC unroll 2
            for (int h = 0; h < 2; ++h) {
                const int64_t* out = d + 16 * j + 8 * h;
                __m512i v = ep.scale == 1 ? half[h] : _mm512_mullo_epi64(half[h], scale);
                __m512i base = ep.first ? _mm512_add_epi64(rs, _mm512_loadu_si512(
                                                               ep.cs + 16 * j + 8 * h))
                                        : _mm512_loadu_si512(out);
                put8(ep, i, 16 * j + 8 * h, _mm512_add_epi64(base, v));
            }
        }
    }
}

// 8 output columns (the tail of N = 8 mod 16, e.g. 24 = 16 + 8): two K' words at once,
// b's words k4 and k4 + 1 of the 8 columns in one vector against a's two words (one per
// half), so that a dot-product instruction does 64 multiply-adds here too; the halves
// are added at the end, an odd last word by 256-bit dot products.
template <int MR>
void micro8(const uint8_t* A, int64_t lda, const int8_t* B, int64_t ldb, int64_t k4n,
            int32_t* C, const Epi* e) {
    __m512i pair[MR];
    for (int i = 0; i < MR; ++i) pair[i] = _mm512_setzero_si512();
    int64_t k4 = 0;
    for (; k4 + 1 < k4n; k4 += 2) {
        const __m512i b = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                B + k4 * ldb))),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + (k4 + 1) * ldb)), 1);
        for (int i = 0; i < MR; ++i) {
            int32_t w0, w1;
            std::memcpy(&w0, A + i * lda + 4 * k4, 4);
            std::memcpy(&w1, A + i * lda + 4 * k4 + 4, 4);
            pair[i] = _mm512_dpbusd_epi32(
                pair[i], _mm512_mask_set1_epi32(_mm512_set1_epi32(w0), 0xFF00, w1), b);
        }
    }
    __m256i acc[MR];
    for (int i = 0; i < MR; ++i)
        acc[i] = _mm256_add_epi32(_mm512_castsi512_si256(pair[i]),
                                  _mm512_extracti64x4_epi64(pair[i], 1));
    if (k4 < k4n) {
        const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + k4 * ldb));
        for (int i = 0; i < MR; ++i) {
            int32_t word;
            std::memcpy(&word, A + i * lda + 4 * k4, 4);
            acc[i] = _mm256_dpbusd_epi32(acc[i], _mm256_set1_epi32(word), b);
        }
    }
    if (!e) {
        for (int i = 0; i < MR; ++i)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(C + i * kTileN), acc[i]);
        return;
    }
    const Epi ep = *e;   // (a copy, as in micro)
    for (int i = 0; i < MR; ++i) {
        const int64_t* out = ep.dst + i * ep.ldd;
        __m512i v = _mm512_cvtepi32_epi64(acc[i]);
        if (ep.scale != 1) v = _mm512_mullo_epi64(v, _mm512_set1_epi64(ep.scale));
        __m512i base = ep.first ? _mm512_add_epi64(_mm512_set1_epi64(ep.rs[i]),
                                                   _mm512_loadu_si512(ep.cs))
                                : _mm512_loadu_si512(out);
        put8(ep, i, 0, _mm512_add_epi64(base, v));
    }
}
#else
// (Without GCC 12's loop vectorizer: its -O3 code for this loop read far past the
// operands, a crash on mitchell@s8 70x600x24 at 2 threads that -O2 and ASan builds did
// not show; the cause is not understood.)
template <int MR, int NV>
__attribute__((optimize("no-tree-loop-vectorize")))
void micro(const uint8_t* A, int64_t lda, const int8_t* B, int64_t ldb, int64_t k4n,
           int32_t* C, const Epi* e) {
    constexpr int W = NV ? 16 * NV : 8;   // NV = 0: 8 columns
    int32_t acc[MR][W] = {};
    for (int64_t k4 = 0; k4 < k4n; ++k4) {
        const int8_t* b = B + k4 * ldb;
        for (int i = 0; i < MR; ++i) {
            const uint8_t* a = A + i * lda + 4 * k4;
            int32_t a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
            for (int j = 0; j < W; ++j)
                acc[i][j] += a0 * b[4 * j] + a1 * b[4 * j + 1] + a2 * b[4 * j + 2] +
                             a3 * b[4 * j + 3];
        }
    }
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < W; ++j) {
            if (!e) {
                C[i * kTileN + j] = acc[i][j];
                continue;
            }
            const int64_t v = e->scale * int64_t(acc[i][j]);
            put1(*e, i, j, (e->first ? e->rs[i] + e->cs[j] : e->dst[i * e->ldd + j]) + v);
        }
}

template <int MR>
void micro8(const uint8_t* A, int64_t lda, const int8_t* B, int64_t ldb, int64_t k4n,
            int32_t* C, const Epi* e) {
    micro<MR, 0>(A, lda, B, ldb, k4n, C, e);
}
#endif

using MicroFn = void (*)(const uint8_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*,
                        const Epi*);

template <int MR>
MicroFn micro_of(int64_t lanes) {
    return lanes == 32 ? micro<MR, 2> : lanes == 16 ? micro<MR, 1> : micro8<MR>;
}

// The micro kernel for mr rows (1..8) and 8, 16 or 32 columns.
MicroFn micro_for(int64_t mr, int64_t lanes) {
    switch (mr) {
        case 1: return micro_of<1>(lanes);
        case 2: return micro_of<2>(lanes);
        case 3: return micro_of<3>(lanes);
        case 4: return micro_of<4>(lanes);
        case 5: return micro_of<5>(lanes);
        case 6: return micro_of<6>(lanes);
        case 7: return micro_of<7>(lanes);
        default: return micro_of<8>(lanes);
    }
}

// A scratch buffer in 2 MB pages where the kernel grants them (transparent huge pages on
// request): physically contiguous, so that a table of 1 MB that must stay in L2 does not
// lose ways to the placement of 4 KB pages (measured: the same call 1.5-1.7x slower in
// some processes than in others).
struct HugeBuffer {
    void* data = nullptr;
    size_t bytes = 0;
    HugeBuffer() = default;
    HugeBuffer(const HugeBuffer&) = delete;
    HugeBuffer& operator=(const HugeBuffer&) = delete;
    ~HugeBuffer() { std::free(data); }
    template <typename T>
    T* get(size_t n) {
        constexpr size_t kPage = size_t(2) << 20;
        if (n * sizeof(T) > bytes) {
            std::free(data);
            bytes = (n * sizeof(T) + kPage - 1) / kPage * kPage;
            if (posix_memalign(&data, kPage, bytes) != 0) {
                data = nullptr;
                bytes = 0;
                throw std::bad_alloc();
            }
#ifdef MADV_HUGEPAGE
            madvise(data, bytes, MADV_HUGEPAGE);
#endif
        }
        return static_cast<T*>(data);
    }
};

struct Scratch {
    std::vector<int32_t> ca, cb, tile, pair_b;
    std::vector<int16_t> pair_a, pair_v;
    std::vector<uint8_t> ca8, cb8, digits_a, column_digits, lane_codes;
    std::vector<uint64_t> lane_masks;   // packed_rows' quarter masks of b's codes
    std::vector<int8_t> packed_b;
    std::vector<int64_t> rowsum, colsum, acc64, out64, group_kp, group_off;
    HugeBuffer row_tables, row_sums;   // table_rows' tables (V) and 16-bit sums
};

thread_local Scratch tls;

// ---- table lookups (scalar: on the AMD cores measured, AVX-512 gathers were no faster) --

// out[i] = table[idx[i] * mul + add], 32-bit elements.
void gather_u32(const uint32_t* table, const int32_t* idx, int64_t n, int32_t mul,
                int32_t add, uint32_t* out) {
    for (int64_t i = 0; i < n; ++i) out[i] = table[int64_t(idx[i]) * mul + add];
}

// acc[i] += table[idx[i]], int64.
void gather_add_i64(const int64_t* table, const int32_t* idx, int64_t n, int64_t* acc) {
    for (int64_t i = 0; i < n; ++i) acc[i] += table[idx[i]];
}

// sum of table[idx[i]], int64.
int64_t gather_sum_i64(const int64_t* table, const int32_t* idx, int64_t n) {
    int64_t s = 0;
    for (int64_t i = 0; i < n; ++i) s += table[idx[i]];
    return s;
}

// K codes' digits side by side at dst + k * W, with the codes read at codes[k * step]:
// each copy moves P bytes (the code's W digits, then zeros) and overwrites the padding of
// the one before, so the caller zeroes the tail and leaves P bytes of slack. With `sum`,
// also the codes' sum of `terms` (same pass). P = 4 or 8: one word per code; else P is a
// multiple of 8.
template <int64_t P>
void spread_digits(const uint8_t* table, int64_t stride, const int32_t* codes, int64_t step,
                   int64_t K, int64_t W, uint8_t* dst, const int64_t* terms, int64_t* sum) {
    const int64_t bytes = P ? P : stride;
    int64_t s = 0;
    for (int64_t k = 0; k < K; ++k, dst += W) {
        const int32_t c = codes[k * step];
        const uint8_t* src = table + int64_t(c) * bytes;
        if (P)
            std::memcpy(dst, src, size_t(P));
        else
            for (int64_t j = 0; j < bytes; j += 8) std::memcpy(dst + j, src + j, 8);
        if (sum) s += terms[c];
    }
    if (sum) *sum = s;
}

using SpreadFn = void (*)(const uint8_t*, int64_t, const int32_t*, int64_t, int64_t, int64_t,
                          uint8_t*, const int64_t*, int64_t*);

SpreadFn spread_for(int64_t stride) {
    return stride == 4 ? spread_digits<4> : stride == 8 ? spread_digits<8> : spread_digits<0>;
}

// b's digits for columns [n0, n0 + np) packed as (k4, column, 4) int8, zero padded:
// the 4 bytes of a (k4, column) word are digits kk = 4 k4 .. 4 k4 + 3 of the K * W
// digits of the column (kk = k * W + t). With `cs` (colsum + n0), also adds each
// column's sum of column terms `col` into cs[c] (same pass over the codes).

// W = 1 or 2 (D holds a code's digits): 4 / W codes per word, each word written once.
template <typename D>
void pack_narrow(const D* g, const int32_t* cb, int64_t K, int64_t N, int64_t n0, int64_t np,
                 int64_t np_pad, int64_t k4n, uint32_t* words, const int64_t* col,
                 int64_t* cs) {
    constexpr int64_t per = 4 / sizeof(D);
    for (int64_t k4 = 0; k4 < k4n; ++k4) {
        uint32_t* dst = words + k4 * np_pad;
        const int32_t* codes = cb + k4 * per * N + n0;
        const int64_t kq = std::min(per, K - k4 * per);
        for (int64_t c = 0; c < np; ++c) {
            uint32_t w = 0;
            int64_t s = 0;
            for (int64_t q = 0; q < per; ++q) {
                if (q < kq) {
                    const int32_t code = codes[q * N + c];
                    w |= uint32_t(g[code]) << (8 * sizeof(D) * q);
                    if (cs) s += col[code];
                }
            }
            dst[c] = w;
            if (cs) cs[c] += s;
        }
        std::memset(dst + np, 0, size_t(np_pad - np) * 4);
    }
}

// W a multiple of 4 stored without padding: W / 4 whole words per code.
void pack_words(const AxsaGroup& grp, const int32_t* cb, int64_t K, int64_t N, int64_t n0,
                int64_t np, int64_t np_pad, uint32_t* words, const int64_t* col,
                int64_t* cs) {
    const uint32_t* g = reinterpret_cast<const uint32_t*>(grp.g);
    const int32_t wpc = int32_t(grp.width / 4);
    for (int64_t k = 0; k < K; ++k) {
        uint32_t* dst = words + k * wpc * np_pad;
        const int32_t* codes = cb + k * N + n0;
        if (wpc <= 2) {   // widths 4 and 8, the common cases: one pass over the codes
            for (int64_t c = 0; c < np; ++c) {
                const int32_t code = codes[c];
                dst[c] = g[code * wpc];
                if (wpc == 2) dst[np_pad + c] = g[2 * code + 1];
                if (cs) cs[c] += col[code];
            }
        } else {
            for (int32_t j = 0; j < wpc; ++j) gather_u32(g, codes, np, wpc, j,
                                                         dst + j * np_pad);
            if (cs) gather_add_i64(col, codes, np, cs);
        }
        for (int32_t j = 0; j < wpc; ++j)
            std::memset(dst + j * np_pad + np, 0, size_t(np_pad - np) * 4);
    }
}

// Any other width (3, 5, 6, 7, 9, ...): each column's digit string, then its words
// transposed into the (k4, column) layout.
void pack_any(const AxsaGroup& grp, const int32_t* cb, int64_t K, int64_t N, int64_t n0,
              int64_t np, int64_t np_pad, int64_t k4n, uint32_t* words, const int64_t* col,
              int64_t* cs) {
    const int64_t W = grp.width, P = grp.stride, kp = 4 * k4n;
    const SpreadFn spread = spread_for(P);
    uint8_t* str = scratch(tls.column_digits, size_t(np * kp + P));
    for (int64_t c = 0; c < np; ++c) {
        int64_t s = 0;
        spread(reinterpret_cast<const uint8_t*>(grp.g), P, cb + n0 + c, N, K, W,
               str + c * kp, col, cs ? &s : nullptr);
        std::memset(str + c * kp + K * W, 0, size_t(kp - K * W));
        if (cs) cs[c] += s;
    }
    for (int64_t k4 = 0; k4 < k4n; ++k4) {
        uint32_t* dst = words + k4 * np_pad;
        for (int64_t c = 0; c < np; ++c) std::memcpy(dst + c, str + c * kp + 4 * k4, 4);
        std::memset(dst + np, 0, size_t(np_pad - np) * 4);
    }
}

void pack_b(const AxsaGroup& grp, const int32_t* cb, int64_t K, int64_t N, int64_t n0,
            int64_t np, int64_t np_pad, int64_t k4n, int8_t* out, const int64_t* col,
            int64_t* colsum) {
    uint32_t* words = reinterpret_cast<uint32_t*>(out);
    int64_t* cs = colsum ? colsum + n0 : nullptr;
    if (grp.width != grp.stride)
        pack_any(grp, cb, K, N, n0, np, np_pad, k4n, words, col, cs);
    else if (grp.width == 1)
        pack_narrow(reinterpret_cast<const uint8_t*>(grp.g), cb, K, N, n0, np, np_pad, k4n,
                    words, col, cs);
    else if (grp.width == 2)
        pack_narrow(reinterpret_cast<const uint16_t*>(grp.g), cb, K, N, n0, np, np_pad, k4n,
                    words, col, cs);
    else
        pack_words(grp, cb, K, N, n0, np, np_pad, words, col, cs);
}

// One row of a's digits: d[k] = f[codes[k]] with D holding a code's W = sizeof(D)
// digits; with `sum`, also the row's sum of row terms (same pass over the codes).
template <typename D>
void copy_digits(const uint8_t* table, const int32_t* codes, int64_t K, uint8_t* dst,
                 const int64_t* row, int64_t* sum) {
    const D* f = reinterpret_cast<const D*>(table);
    D* d = reinterpret_cast<D*>(dst);
    if (sum) {
        int64_t s = 0;
        for (int64_t k = 0; k < K; ++k) {
            const int32_t c = codes[k];
            d[k] = f[c];
            s += row[c];
        }
        *sum = s;
    } else {
        for (int64_t k = 0; k < K; ++k) d[k] = f[codes[k]];
    }
}

// K codes' digits side by side at dst (K * W bytes); with `sum`, their sum of `row`.
void row_digits(const AxsaGroup& grp, const int32_t* codes, int64_t K, uint8_t* dst,
                const int64_t* row, int64_t* sum) {
    const int64_t W = grp.width, P = grp.stride;
    switch (W == P ? W : 0) {
        case 1: copy_digits<uint8_t>(grp.f, codes, K, dst, row, sum); break;
        case 2: copy_digits<uint16_t>(grp.f, codes, K, dst, row, sum); break;
        case 4: copy_digits<uint32_t>(grp.f, codes, K, dst, row, sum); break;
        case 8: copy_digits<uint64_t>(grp.f, codes, K, dst, row, sum); break;
        default:   // stored padded, or a multiple of 8 wider than 8
            spread_for(P)(grp.f, P, codes, 1, K, W, dst, row, sum);
    }
}

// Rows of K * W <= 4 digits as one word each (D holds a code's stored digits).
template <typename D>
void word_rows(const uint8_t* table, const int32_t* ca, int64_t rows, int64_t K, int64_t W,
               uint8_t* out) {
    const D* f = reinterpret_cast<const D*>(table);
    for (int64_t r = 0; r < rows; ++r) {
        uint32_t w = 0;
        for (int64_t k = 0; k < K; ++k) w |= uint32_t(f[ca[r * K + k]]) << (8 * W * k);
        std::memcpy(out + 4 * r, &w, 4);
    }
}

// a's digits for `rows` rows of codes, (rows, kp) u8, zero padded to kp (the buffer has
// `stride` bytes of slack); with `rowsum`, also each row's sum of row terms `row` (or 0
// without them).
void digits_a(const AxsaGroup& grp, const int32_t* ca, int64_t rows, int64_t K, int64_t kp,
              uint8_t* out, const int64_t* row, int64_t* rowsum) {
    const int64_t W = grp.width, P = grp.stride;
    // short rows (K = 1: an outer product, the input projection): a word each, or back to
    // back without padding; one pass over all codes, then the row sums
    const bool word = kp == 4 && P <= 4 && (W == P || K == 1);
    if (word || (kp == K * W && K < kShortK)) {
        if (!word)
            row_digits(grp, ca, rows * K, out, nullptr, nullptr);
        else if (P == 1)
            word_rows<uint8_t>(grp.f, ca, rows, K, W, out);
        else if (P == 2)
            word_rows<uint16_t>(grp.f, ca, rows, K, W, out);
        else
            word_rows<uint32_t>(grp.f, ca, rows, K, W, out);
        if (rowsum)
            for (int64_t r = 0; r < rows; ++r)
                rowsum[r] = row ? gather_sum_i64(row, ca + r * K, K) : 0;
        return;
    }
    for (int64_t r = 0; r < rows; ++r) {
        uint8_t* dst = out + r * kp;
        if (rowsum && !row) rowsum[r] = 0;
        row_digits(grp, ca + r * K, K, dst, row, rowsum && row ? rowsum + r : nullptr);
        if (kp > K * W) std::memset(dst + K * W, 0, size_t(kp - K * W));
    }
}

#if AXSA_VBMI
// ---- digit planes (AVX512-VBMI) ------------------------------------------------------
// With codes of at most 8 bits, one digit of 64 codes is two byte permutations of a
// 256-byte table (vpermi2b). The digits then lie in planes: row r of a holds digit t of
// its K codes at t * Kp + k (Kp = K rounded up to 4), and b's packed word
// (t * Kp / 4 + k4, column) holds digit t of rows 4 k4 .. 4 k4 + 3: the GEMM sums the
// same (k, t) products as the interleaved layout, in another order. The row and column
// terms are summed from byte planes too (vpsadbw, vpdpbusd with ones).

constexpr int64_t kPlanesMaxK = 1 << 22;   // int32 column-term sums stay exact

// t[codes] for 64 codes of a 256-byte table held in four registers t[0..3] (`high`: the
// codes' top bits, _mm512_movepi8_mask(codes)): two byte permutations and a blend.
inline __m512i lookup_regs(const __m512i* t, __m512i codes, __mmask64 high) {
    return _mm512_mask_blend_epi8(high, _mm512_permutex2var_epi8(t[0], codes, t[1]),
                                  _mm512_permutex2var_epi8(t[2], codes, t[3]));
}

// table[codes] for 64 codes (table: 256 bytes).
inline __m512i lookup256(__m512i codes, const uint8_t* table) {
    const __m512i t[4] = {_mm512_loadu_si512(table), _mm512_loadu_si512(table + 64),
                          _mm512_loadu_si512(table + 128), _mm512_loadu_si512(table + 192)};
    return lookup_regs(t, codes, _mm512_movepi8_mask(codes));
}

inline __mmask64 low_bytes(int64_t n) {
    return n >= 64 ? ~__mmask64(0) : n <= 0 ? __mmask64(0) : (__mmask64(1) << n) - 1;
}

// sum_j (v_j << 8 j): the term sums of the byte planes, per 64-bit lane
inline __m512i weigh_planes(const __m512i* v, int64_t count) {
    __m512i s = _mm512_setzero_si512();
    for (int64_t j = 0; j < count; ++j)
        s = _mm512_add_epi64(s, _mm512_sll_epi64(v[j], _mm_cvtsi64_si128(8 * j)));
    return s;
}

// Rows of at most 64 / G codes, G rows per vector (row i in bytes 64 / G * i ..): the
// models' short rows (K = 16, 24, 32) would leave most of a vector idle.

// The codes of rows r .. r + g - 1 (g <= G), zero elsewhere; `valid` marks their codes.
template <int G>
__m512i short_rows(const uint8_t* ca, int64_t r, int64_t g, int64_t K, __mmask64* valid) {
    constexpr int L = 64 / G;
    const __mmask64 lane = low_bytes(K);
    *valid = 0;
    for (int i = 0; i < g; ++i) *valid |= lane << (L * i);
    if constexpr (G == 4) {
        const __mmask16 m = __mmask16(lane);
        __m512i c = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(m, ca + r * K));
        if (g > 1) c = _mm512_inserti32x4(c, _mm_maskz_loadu_epi8(m, ca + (r + 1) * K), 1);
        if (g > 2) c = _mm512_inserti32x4(c, _mm_maskz_loadu_epi8(m, ca + (r + 2) * K), 2);
        if (g > 3) c = _mm512_inserti32x4(c, _mm_maskz_loadu_epi8(m, ca + (r + 3) * K), 3);
        return c;
    } else {
        const __mmask32 m = __mmask32(lane);
        __m512i c = _mm512_castsi256_si512(_mm256_maskz_loadu_epi8(m, ca + r * K));
        if (g > 1) c = _mm512_inserti64x4(c, _mm256_maskz_loadu_epi8(m, ca + (r + 1) * K), 1);
        return c;
    }
}

// rowsum[i] = the sum of row terms of row i of a group of g short rows (0 without terms).
template <int G>
void short_term_sums(__m512i c, __mmask64 valid, int64_t g, int64_t K,
                     const AxsaTerms& terms, int64_t* rowsum) {
    if (!terms.planes) {
        for (int i = 0; i < g; ++i) rowsum[i] = 0;
        return;
    }
    __m512i v[8];
    for (int64_t j = 0; j < terms.count; ++j)
        v[j] = _mm512_sad_epu8(_mm512_maskz_mov_epi8(valid, lookup256(
                                   c, terms.planes + 256 * j)), _mm512_setzero_si512());
    alignas(64) int64_t lanes[8];
    _mm512_store_si512(lanes, weigh_planes(v, terms.count));
    for (int i = 0; i < g; ++i) {
        int64_t sum = K * terms.offset;
        for (int q = 0; q < 8 / G; ++q) sum += lanes[8 / G * i + q];
        rowsum[i] = sum;
    }
}

template <int G>
void digits_short(const uint8_t* table, int64_t W, const uint8_t* ca, int64_t rows, int64_t K,
                  int64_t Kp, uint8_t* out, const AxsaTerms& terms, int64_t* rowsum) {
    const int64_t kp = W * Kp;
    const __mmask64 store = low_bytes(Kp);
    for (int64_t r = 0; r < rows; r += G) {
        const int64_t g = std::min<int64_t>(G, rows - r);
        __mmask64 valid;
        const __m512i c = short_rows<G>(ca, r, g, K, &valid);
        for (int64_t t = 0; t < W; ++t) {
            const __m512i d = _mm512_maskz_mov_epi8(valid, lookup256(c, table + 256 * t));
            uint8_t* dst = out + r * kp + t * Kp;
            if constexpr (G == 4) {
                const __mmask16 m = __mmask16(store);
                _mm_mask_storeu_epi8(dst, m, _mm512_castsi512_si128(d));
                if (g > 1) _mm_mask_storeu_epi8(dst + kp, m, _mm512_extracti32x4_epi32(d, 1));
                if (g > 2) _mm_mask_storeu_epi8(dst + 2 * kp, m, _mm512_extracti32x4_epi32(d, 2));
                if (g > 3) _mm_mask_storeu_epi8(dst + 3 * kp, m, _mm512_extracti32x4_epi32(d, 3));
            } else {
                const __mmask32 m = __mmask32(store);
                _mm256_mask_storeu_epi8(dst, m, _mm512_castsi512_si256(d));
                if (g > 1) _mm256_mask_storeu_epi8(dst + kp, m, _mm512_extracti64x4_epi64(d, 1));
            }
        }
        if (rowsum) short_term_sums<G>(c, valid, g, K, terms, rowsum + r);
    }
}

// Digits in planes for `rows` rows of u8 codes (digit t of code c at table[t * 256 + c]):
// (rows, W * Kp), zero padded; with `rowsum`, each row's sum of terms (0 without them).
// a's rows, and b's single column when N = 1.
void digits_planes(const uint8_t* table, int64_t W, const uint8_t* ca, int64_t rows,
                   int64_t K, int64_t Kp, uint8_t* out, const AxsaTerms& terms,
                   int64_t* rowsum) {
    if (Kp <= 16) return digits_short<4>(table, W, ca, rows, K, Kp, out, terms, rowsum);
    if (Kp <= 32) return digits_short<2>(table, W, ca, rows, K, Kp, out, terms, rowsum);
    const int64_t kp = W * Kp;
    const bool sums = rowsum && terms.planes;
    for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* codes = ca + r * K;
        uint8_t* dst = out + r * kp;
        __m512i acc[8];
        for (int64_t j = 0; j < terms.count; ++j) acc[j] = _mm512_setzero_si512();
        for (int64_t k0 = 0; k0 < Kp; k0 += 64) {
            const __mmask64 valid = low_bytes(K - k0), store = low_bytes(Kp - k0);
            const __m512i c = _mm512_maskz_loadu_epi8(valid, codes + k0);
            for (int64_t t = 0; t < W; ++t)
                _mm512_mask_storeu_epi8(dst + t * Kp + k0, store, _mm512_maskz_mov_epi8(
                    valid, lookup256(c, table + 256 * t)));
            if (sums)
                for (int64_t j = 0; j < terms.count; ++j)
                    acc[j] = _mm512_add_epi64(acc[j], _mm512_sad_epu8(
                        _mm512_maskz_mov_epi8(valid, lookup256(c, terms.planes + 256 * j)),
                        _mm512_setzero_si512()));
        }
        if (rowsum)
            rowsum[r] = sums ? K * terms.offset +
                                   _mm512_reduce_add_epi64(weigh_planes(acc, terms.count))
                             : 0;
    }
}

// N = 1 (a model's output head): out[r] (+)= scale * sum_t f_t(a[r, :]) . g_t(b), the
// first group adding the row and column terms. a's digits are looked up and multiplied
// in registers (a tile of 8 columns would leave 7 idle); short rows G to a vector.
// W * Kp <= 65536: exact int32 sums.
template <int G>
void dot_rows(const AxsaGroup& grp, const uint8_t* ca, const uint8_t* col, int64_t rows,
              int64_t K, int64_t Kp, const AxsaTerms& row_terms, int64_t colsum, bool first,
              int64_t* out) {
    const int64_t W = grp.width;
    for (int64_t r = 0; r < rows; r += G) {
        const int64_t g = G == 1 ? 1 : std::min<int64_t>(G, rows - r);
        __m512i acc = _mm512_setzero_si512(), terms[8];
        for (int64_t j = 0; j < row_terms.count; ++j) terms[j] = _mm512_setzero_si512();
        __mmask64 valid = 0;
        __m512i c = _mm512_setzero_si512();
        for (int64_t k0 = 0; k0 < (G == 1 ? Kp : 1); k0 += 64) {
            if constexpr (G == 1) {
                valid = low_bytes(K - k0);
                c = _mm512_maskz_loadu_epi8(valid, ca + r * K + k0);
                if (first && row_terms.planes)   // the row's term sums, chunk by chunk
                    for (int64_t j = 0; j < row_terms.count; ++j)
                        terms[j] = _mm512_add_epi64(terms[j], _mm512_sad_epu8(
                            _mm512_maskz_mov_epi8(valid, lookup256(
                                c, row_terms.planes + 256 * j)), _mm512_setzero_si512()));
            } else {
                c = short_rows<G>(ca, r, g, K, &valid);
            }
            for (int64_t t = 0; t < W; ++t) {
                const uint8_t* bt = col + t * Kp + k0;   // b's digits t, in every row's lane
                const __m512i b = G == 4 ? _mm512_broadcast_i32x4(_mm_loadu_si128(
                                               reinterpret_cast<const __m128i*>(bt)))
                                  : G == 2 ? _mm512_broadcast_i64x4(_mm256_loadu_si256(
                                                 reinterpret_cast<const __m256i*>(bt)))
                                           : _mm512_loadu_si512(bt);
                acc = _mm512_dpbusd_epi32(acc, _mm512_maskz_mov_epi8(valid, lookup256(
                                                   c, grp.f_planes + 256 * t)), b);
            }
        }
        int64_t rs[G] = {};
        if (first) {
            if constexpr (G == 1)
                rs[0] = row_terms.planes ? K * row_terms.offset + _mm512_reduce_add_epi64(
                                               weigh_planes(terms, row_terms.count))
                                         : 0;
            else
                short_term_sums<G>(c, valid, g, K, row_terms, rs);
        }
        alignas(64) int32_t lanes[16];
        _mm512_store_si512(lanes, acc);
        for (int i = 0; i < g; ++i) {
            int64_t dot = 0;
            for (int q = 0; q < 16 / G; ++q) dot += lanes[16 / G * i + q];
            const int64_t v = grp.scale * dot;
            out[r + i] = first ? rs[i] + colsum + v : out[r + i] + v;
        }
    }
}

// b's single column's digits (W * Kp bytes and 64 of slack) and its sum of column terms,
// then dot_rows for G.
void matrix_vector(const AxsaGroup& grp, const uint8_t* ca, const uint8_t* cb, int64_t rows,
                   int64_t K, int64_t Kp, const AxsaTerms& row_terms,
                   const AxsaTerms& col_terms, bool first, int64_t* out) {
    uint8_t* col = scratch(tls.column_digits, size_t(grp.width * Kp + 64));
    int64_t colsum = 0;
    digits_planes(reinterpret_cast<const uint8_t*>(grp.g_planes), grp.width, cb, 1, K, Kp,
                  col, col_terms, &colsum);
    if (Kp <= 16)
        dot_rows<4>(grp, ca, col, rows, K, Kp, row_terms, colsum, first, out);
    else if (Kp <= 32)
        dot_rows<2>(grp, ca, col, rows, K, Kp, row_terms, colsum, first, out);
    else
        dot_rows<1>(grp, ca, col, rows, K, Kp, row_terms, colsum, first, out);
}

// b's digits in planes for columns [n0, n0 + np) of the u8 codes cb (K x N), packed as
// (W * Kp / 4, np_pad, 4), zero padded; with `cs` (colsum + n0), adds each column's sum
// of column terms into cs[c].
void pack_b_planes(const AxsaGroup& grp, const uint8_t* cb, int64_t K, int64_t N,
                   int64_t n0, int64_t np, int64_t np_pad, int64_t Kp, int8_t* out,
                   const AxsaTerms& terms, int64_t* cs) {
    const int64_t W = grp.width, k4p = Kp / 4;
    // byte 4 c + q of a transposed vector is byte 16 q + c: column c's 4 rows side by side
    alignas(64) uint8_t order[64];
    for (int i = 0; i < 64; ++i) order[i] = uint8_t(16 * (i % 4) + i / 4);
    const __m512i transpose = _mm512_load_si512(order);
    const __m512i ones = _mm512_set1_epi8(1);
    const uint8_t* g = reinterpret_cast<const uint8_t*>(grp.g_planes);
    for (int64_t c0 = 0; c0 < np_pad; c0 += 16) {
        const int64_t nc = std::max<int64_t>(0, std::min<int64_t>(16, np - c0));
        const __mmask16 cols = __mmask16((1u << nc) - 1);
        const __mmask64 store = low_bytes(4 * std::min<int64_t>(16, np_pad - c0));
        __m512i acc[8];
        for (int64_t j = 0; j < terms.count; ++j) acc[j] = _mm512_setzero_si512();
        for (int64_t k4 = 0; k4 < k4p; ++k4) {
            // 16 columns of rows 4 k4 .. 4 k4 + 3, row q in bytes 16 q ..
            const uint8_t* src = cb + 4 * k4 * N + n0 + c0;
            const int64_t left = K - 4 * k4;
            auto row = [&](int q) {
                return q < left ? _mm_maskz_loadu_epi8(cols, src + q * N) : _mm_setzero_si128();
            };
            __m512i c = _mm512_castsi128_si512(row(0));
            c = _mm512_inserti32x4(c, row(1), 1);
            c = _mm512_inserti32x4(c, row(2), 2);
            c = _mm512_inserti32x4(c, row(3), 3);
            const __mmask64 valid = uint64_t(cols) * ((left >= 4 ? 0x0001000100010001ull :
                                                       left == 3 ? 0x0000000100010001ull :
                                                       left == 2 ? 0x0000000000010001ull :
                                                                   0x0000000000000001ull));
            for (int64_t t = 0; t < W; ++t)
                _mm512_mask_storeu_epi8(out + ((t * k4p + k4) * np_pad + c0) * 4, store,
                                        _mm512_permutexvar_epi8(transpose, _mm512_maskz_mov_epi8(
                                            valid, lookup256(c, g + 256 * t))));
            if (cs && terms.planes)
                for (int64_t j = 0; j < terms.count; ++j)
                    acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_permutexvar_epi8(
                        transpose, _mm512_maskz_mov_epi8(valid, lookup256(
                            c, terms.planes + 256 * j))), ones);
        }
        if (cs && terms.planes) {
            alignas(64) int32_t sums[8][16];
            for (int64_t j = 0; j < terms.count; ++j) _mm512_store_si512(sums[j], acc[j]);
            for (int64_t c = 0; c < nc; ++c) {
                int64_t s = K * terms.offset;
                for (int64_t j = 0; j < terms.count; ++j) s += int64_t(sums[j][c]) << (8 * j);
                cs[c0 + c] += s;
            }
        }
    }
}
#endif

// Row i of a partial tile's int32 sums src (full tiles are written by the micro kernel
// itself), its `valid` columns, where `e` puts them.
inline void store_tile(const Epi& e, int64_t i, const int32_t* src, int64_t valid) {
#if AXSA_VNNI
    if (!e.fdst) {   // 8 columns at a time, masked (the heads' 10 columns, say)
        int64_t* d = e.dst + i * e.ldd;
        const __m512i rs = _mm512_set1_epi64(e.first ? e.rs[i] : 0);
        const __m512i scale = _mm512_set1_epi64(e.scale);
        for (int64_t j = 0; j < valid; j += 8) {
            const __mmask8 m = valid - j >= 8 ? 0xFF : __mmask8((1u << (valid - j)) - 1);
            __m512i v = _mm512_cvtepi32_epi64(_mm256_maskz_loadu_epi32(m, src + j));
            if (e.scale != 1) v = _mm512_mullo_epi64(v, scale);
            const __m512i base = e.first
                ? _mm512_add_epi64(rs, _mm512_maskz_loadu_epi64(m, e.cs + j))
                : _mm512_maskz_loadu_epi64(m, d + j);
            _mm512_mask_storeu_epi64(d + j, m, _mm512_add_epi64(base, v));
        }
        return;
    }
#endif
    for (int64_t j = 0; j < valid; ++j)
        put1(e, i, j, (e.first ? e.rs[i] + e.cs[j] : e.dst[i * e.ldd + j]) +
                          e.scale * int64_t(src[j]));
}

// Low rank: `rows` rows of a (global rows r0..) against columns [n_lo, n_hi) of b's
// codes cb (K x N), into out (rows x N); with `fout` (rows x N float32; needs N > 1 and
// groups), the last pass writes there instead, as `stage` says (`out` then holds only
// the partial sums of earlier passes). Code: int32_t for the scalar front end (digits
// interleaved), uint8_t for the digit planes.
template <typename Code>
bool lowrank_rows(const AxsaPlan& p, const void* a, int64_t r0, int64_t rows,
                  const Code* cb, int64_t n_lo, int64_t n_hi, int64_t* out, float* fout,
                  const Out& stage) {
    constexpr bool planes = sizeof(Code) == 1;
    const int64_t K = p.k, N = p.n, Kp = (K + 3) / 4 * 4, cols = n_hi - n_lo;
    int64_t* colsum = scratch(tls.colsum, size_t(N));
    for (int64_t n = 0; n < N; ++n) colsum[n] = 0;
    if constexpr (!planes)
        if (p.col && p.ngroups == 0)   // (else summed while the first group's b is packed)
            for (int64_t k = 0; k < K; ++k)
                gather_add_i64(p.col, cb + k * N + n_lo, cols, colsum + n_lo);
    // each group's K' digits per row, and b's words of every column tile: packed once
    // for all the rows when they fit kPackedBytes (else again for each chunk of rows)
    const bool mv = planes && AXSA_VBMI && N == 1;   // matrix-vector products: no packing
    int64_t* kps = scratch(tls.group_kp, size_t(std::max(1, p.ngroups)));
    int64_t* offs = scratch(tls.group_off, size_t(std::max(1, p.ngroups)));
    int64_t kp_max = 4, packed_bytes = 0;
    const int64_t cols_pad = cols / kTileN * kTileN + (cols % kTileN + 7) / 8 * 8;
    for (int gi = 0; gi < p.ngroups; ++gi) {
        const AxsaGroup& g = p.groups[gi];
        const int64_t w = !planes && K < kShortK ? g.stride : g.width;
        kps[gi] = planes ? Kp * w : (K * w + 3) / 4 * 4;
        kp_max = std::max(kp_max, kps[gi]);
        offs[gi] = packed_bytes;
        packed_bytes += kps[gi] * cols_pad;
    }
    const bool pack_once = !mv && packed_bytes <= kPackedBytes;
    // rows per chunk: their digits stay in L2 while each column tile sweeps them
    const int64_t step = std::max<int64_t>(kMaxMR, std::min<int64_t>(
        kRowChunk, kChunkBytes / kp_max / kMaxMR * kMaxMR));
    const int64_t chunk = std::min(rows, step);
    Code* ca;
    if constexpr (planes)
        ca = scratch(tls.ca8, size_t(chunk * K));
    else
        ca = scratch(tls.ca, size_t(chunk * K));
    int64_t* rowsum = scratch(tls.rowsum, size_t(chunk));
    int32_t* tile = scratch(tls.tile, size_t(kMaxMR * kTileN));
    // b's digits of group gi for the tile of columns [n0, n0 + kTileN) into pb; with cs,
    // adds the column terms into colsum
    auto pack = [&](const AxsaGroup& grp, int64_t kp, int64_t n0, int8_t* pb, bool cs) {
        const int64_t np = std::min(kTileN, n_hi - n0), np_pad = (np + 7) / 8 * 8;
        int64_t* sums = p.col && cs ? colsum : nullptr;
        if constexpr (planes) {
#if AXSA_VBMI
            pack_b_planes(grp, cb, K, N, n0, np, np_pad, Kp, pb, p.col_terms,
                          sums ? sums + n0 : nullptr);
#endif
        } else {
            pack_b(grp, cb, K, N, n0, np, np_pad, kp / 4, pb, p.col, sums);
        }
    };
    int8_t* packed = nullptr;
    if (pack_once) {
        packed = scratch(tls.packed_b, size_t(std::max<int64_t>(1, packed_bytes)));
        for (int gi = 0; gi < p.ngroups; ++gi) {
            AxsaGroup grp = p.groups[gi];
            if (!planes && K < kShortK) grp.width = grp.stride;
            for (int64_t n0 = n_lo; n0 < n_hi; n0 += kTileN)
                pack(grp, kps[gi], n0, packed + offs[gi] + (n0 - n_lo) * kps[gi], gi == 0);
        }
    }
    for (int64_t c0 = 0; c0 < rows; c0 += step) {
        const int64_t rc = std::min(step, rows - c0);
        if (!a_codes(p, a, r0 + c0, rc, ca)) return false;
        // a float result's partial sums (of results in several passes) live per chunk
        int64_t* o = fout ? scratch(tls.out64, size_t(chunk * N)) : out + c0 * N;
        float* fo = fout ? fout + c0 * N : nullptr;
        if constexpr (!planes)
            if (p.ngroups == 0) {   // (else the first group's tiles write row + col terms)
                for (int64_t r = 0; r < rc; ++r)
                    rowsum[r] = p.row ? gather_sum_i64(p.row, ca + r * K, K) : 0;
                for (int64_t r = 0; r < rc; ++r)
                    for (int64_t n = n_lo; n < n_hi; ++n) o[r * N + n] = rowsum[r] + colsum[n];
            }
        for (int gi = 0; gi < p.ngroups; ++gi) {
            AxsaGroup grp = p.groups[gi];
            if (!planes && K < kShortK) grp.width = grp.stride;   // zero digits padded in
            const int64_t kp = kps[gi];
            const int64_t k4n = kp / 4;
#if AXSA_VBMI
            if constexpr (planes)
                if (mv && kp <= 4 * kMaxK4) {   // a matrix-vector product: no digit rows
                    matrix_vector(grp, ca, cb, rc, K, Kp, p.row_terms, p.col_terms, gi == 0, o);
                    continue;
                }
#endif
            uint8_t* da = scratch(tls.digits_a, size_t(rc * kp + grp.stride));
            if constexpr (planes) {
#if AXSA_VBMI
                digits_planes(grp.f_planes, grp.width, ca, rc, K, Kp, da, p.row_terms,
                              gi == 0 ? rowsum : nullptr);
#endif
            } else {
                digits_a(grp, ca, rc, K, kp, da, p.row, gi == 0 ? rowsum : nullptr);
            }
            for (int64_t n0 = n_lo; n0 < n_hi; n0 += kTileN) {
                const int64_t np = std::min(kTileN, n_hi - n0);
                const int64_t np_pad = (np + 7) / 8 * 8;
                int8_t* pb;
                if (pack_once) {
                    pb = packed + offs[gi] + (n0 - n_lo) * kp;
                } else {
                    pb = scratch(tls.packed_b, size_t(k4n * np_pad * 4));
                    pack(grp, kp, n0, pb, gi == 0 && c0 == 0);
                }
                for (int64_t t0 = 0, tw = 0; t0 < np_pad; t0 += tw) {
                    const int64_t rest = np_pad - t0;   // tiles of 32, then 16, then 8
                    tw = rest >= 32 ? 32 : rest >= 16 ? 16 : 8;
                    const int64_t valid = std::min(tw, np - t0);
                    // K' in (even) chunks whose b words stay in L1 across all the rows
                    const int64_t chunks = (k4n + kL1Bytes / (4 * tw) - 1) /
                                           (kL1Bytes / (4 * tw));
                    const int64_t qstep = std::min(kMaxK4, (k4n + chunks - 1) / chunks);
                    const int64_t c = n0 + t0;   // the tile's first column
                    for (int64_t q0 = 0; q0 < k4n; q0 += qstep) {
                        const int64_t qn = std::min(qstep, k4n - q0);
                        const bool first = gi == 0 && q0 == 0;
                        const bool last = fout && gi + 1 == p.ngroups && q0 + qn == k4n;
                        for (int64_t i0 = 0; i0 < rc; i0 += kMaxMR) {
                            const int64_t mr = std::min(kMaxMR, rc - i0);
                            Epi epi{o + i0 * N + c, N, rowsum + i0, colsum + c, grp.scale,
                                    first};
                            if (last) {
                                epi.fdst = fo + i0 * N + c;
                                epi.fs = stage.scale ? stage.scale + (stage.s_step ? c : 0)
                                                     : nullptr;
                                epi.fs_step = stage.s_step;
                                epi.fb = stage.bias ? stage.bias + c : nullptr;
                            }
                            const bool full = valid == tw;   // else via the int32 tile
                            micro_for(mr, tw)(da + i0 * kp + 4 * q0, kp,
                                              pb + (q0 * np_pad + t0) * 4, np_pad * 4, qn,
                                              tile, full ? &epi : nullptr);
                            if (!full)
                                for (int64_t i = 0; i < mr; ++i)
                                    store_tile(epi, i, tile + i * kTileN, valid);
                        }
                    }
                }
            }
        }
    }
    return true;
}

// ---- engine 2, pairs -------------------------------------------------------------------
// The factor f (u or v) of `n` u8 codes into int16 dst: f[codes[i]] for i < n, zeros up
// to `pad` (AVX512-VBMI: 64 a time from f's byte planes, `planes`).
void factors16(const int16_t* f, const uint8_t* planes, const uint8_t* codes, int64_t n,
               int64_t pad, int16_t* dst) {
    int64_t i = 0;
#if AXSA_VBMI
    // words 0..31 and 32..63 from the bytes' 128-bit lanes, unpacked lane by lane
    const __m512i first = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    const __m512i second = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    for (; i < n; i += 64) {
        const __m512i c = _mm512_maskz_loadu_epi8(low_bytes(n - i), codes + i);
        const __m512i lo = lookup256(c, planes), hi = lookup256(c, planes + 256);
        const __m512i a = _mm512_unpacklo_epi8(lo, hi), b = _mm512_unpackhi_epi8(lo, hi);
        const int64_t left = std::min<int64_t>(64, pad - i);
        _mm512_mask_storeu_epi16(dst + i, __mmask32(low_bytes(left)),
                                 _mm512_maskz_mov_epi16(__mmask32(low_bytes(n - i)),
                                     _mm512_permutex2var_epi64(a, first, b)));
        if (left > 32)
            _mm512_mask_storeu_epi16(dst + i + 32, __mmask32(low_bytes(left - 32)),
                                     _mm512_maskz_mov_epi16(__mmask32(low_bytes(n - i - 32)),
                                         _mm512_permutex2var_epi64(a, second, b)));
    }
    for (int64_t j = std::max(i, n); j < pad; ++j) dst[j] = 0;   // (pad beyond the loop)
#else
    (void)planes;
    for (; i < n; ++i) dst[i] = f[codes[i]];
    for (; i < pad; ++i) dst[i] = 0;
#endif
}

// b's factors vb (K rows of ld int16) of columns [n0, n0 + np) in pairs of k: word (q, c)
// of out (K2 x np_pad) holds vb[2q, n0 + c] and vb[2q + 1, n0 + c] (zero beyond K and np).
void pack_pairs_b(const int16_t* vb, int64_t K, int64_t ld, int64_t n0, int64_t np,
                  int64_t np_pad, int32_t* out) {
    const int64_t K2 = (K + 1) / 2;
    for (int64_t q = 0; q < K2; ++q) {
        const int16_t* r0 = vb + 2 * q * ld + n0;
        const int16_t* r1 = 2 * q + 1 < K ? r0 + ld : nullptr;
        int32_t* o = out + q * np_pad;
        for (int64_t c = 0; c < np; ++c)
            o[c] = int32_t(uint32_t(uint16_t(r0[c])) |
                           (r1 ? uint32_t(uint16_t(r1[c])) << 16 : 0u));
        for (int64_t c = np; c < np_pad; ++c) o[c] = 0;
    }
}

#if AXSA_VNNI
// A tile of MR rows x 16 NV columns: acc = sum_q a's pair q . b's pair q, 32 products an
// instruction; the int32 sums into int64 dst (row stride ldd), their first `valid`
// columns.
template <int MR, int NV>
void micro_pairs(const int32_t* A, int64_t lda, const int32_t* B, int64_t ldb, int64_t K2,
                 int64_t* dst, int64_t ldd, int64_t valid) {
    __m512i acc[MR][NV];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_setzero_si512();
    for (int64_t q = 0; q < K2; ++q) {
        __m512i b[NV];
        for (int j = 0; j < NV; ++j) b[j] = _mm512_loadu_si512(B + q * ldb + 16 * j);
        for (int i = 0; i < MR; ++i) {
            const __m512i av = _mm512_set1_epi32(A[i * lda + q]);
            for (int j = 0; j < NV; ++j) acc[i][j] = _mm512_dpwssd_epi32(acc[i][j], av, b[j]);
        }
    }
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j)
            for (int h = 0; h < 2; ++h) {
                const int64_t c = 16 * j + 8 * h;
                const __m512i w = _mm512_cvtepi32_epi64(
                    h ? _mm512_extracti64x4_epi64(acc[i][j], 1)
                      : _mm512_castsi512_si256(acc[i][j]));
                if (valid - c >= 8)
                    _mm512_storeu_si512(dst + i * ldd + c, w);
                else if (valid > c)
                    _mm512_mask_storeu_epi64(dst + i * ldd + c,
                                             __mmask8((1u << (valid - c)) - 1), w);
            }
}

using PairsFn = void (*)(const int32_t*, int64_t, const int32_t*, int64_t, int64_t, int64_t*,
                         int64_t, int64_t);
template <int NV>
PairsFn pairs_for_rows(int64_t mr) {
    switch (mr) {
        case 1: return micro_pairs<1, NV>;
        case 2: return micro_pairs<2, NV>;
        case 3: return micro_pairs<3, NV>;
        case 4: return micro_pairs<4, NV>;
        case 5: return micro_pairs<5, NV>;
        case 6: return micro_pairs<6, NV>;
        case 7: return micro_pairs<7, NV>;
        default: return micro_pairs<8, NV>;
    }
}
#endif

// Engine 2: `rows` rows of a (global rows r0..) against columns [n_lo, n_hi) of b's u8
// codes cb (K x N), into out (rows x N).
bool pair_rows(const AxsaPlan& p, const void* a, int64_t r0, int64_t rows, const uint8_t* cb,
               int64_t n_lo, int64_t n_hi, int64_t* out) {
    const int64_t K = p.k, N = p.n, K2 = (K + 1) / 2, cols = n_hi - n_lo;
    const int64_t cols_pad = (cols + 15) / 16 * 16;
    // b's factors of this block's columns (K x cols: one run when it has all of them)
    int16_t* vb = scratch(tls.pair_v, size_t(K * cols));
    if (cols == N)
        factors16(p.v16, p.v_planes, cb, K * N, K * N, vb);
    else
        for (int64_t k = 0; k < K; ++k)
            factors16(p.v16, p.v_planes, cb + k * N + n_lo, cols, cols, vb + k * cols);
    int32_t* pb = scratch(tls.pair_b, size_t(K2 * cols_pad));   // tile after tile
    for (int64_t n0 = n_lo; n0 < n_hi; n0 += kTileN) {
        const int64_t np = std::min(kTileN, n_hi - n0), np_pad = (np + 15) / 16 * 16;
        pack_pairs_b(vb, K, cols, n0 - n_lo, np, np_pad, pb + (n0 - n_lo) * K2);
    }
    const int64_t chunk = std::min(rows, kGatherRows);
    uint8_t* ca = scratch(tls.ca8, size_t(chunk * K));
    int16_t* pa16 = scratch(tls.pair_a, size_t(chunk * 2 * K2));
    const int32_t* pa = reinterpret_cast<const int32_t*>(pa16);   // (word q: k = 2q, 2q + 1)
    for (int64_t c0 = 0; c0 < rows; c0 += kGatherRows) {
        const int64_t rc = std::min(kGatherRows, rows - c0);
        if (!a_codes(p, a, r0 + c0, rc, ca)) return false;
        if (K % 2 == 0)   // a's factors, each row padded to pairs (even K: none)
            factors16(p.u16, p.u_planes, ca, rc * K, rc * K, pa16);
        else
            for (int64_t r = 0; r < rc; ++r)
                factors16(p.u16, p.u_planes, ca + r * K, K, 2 * K2, pa16 + r * 2 * K2);
        int64_t* o = out + c0 * N;
        for (int64_t n0 = n_lo; n0 < n_hi; n0 += kTileN) {
            const int64_t np = std::min(kTileN, n_hi - n0), np_pad = (np + 15) / 16 * 16;
            const int32_t* bt = pb + (n0 - n_lo) * K2;
#if AXSA_VNNI
            for (int64_t i0 = 0; i0 < rc; i0 += kMaxMR) {
                const int64_t mr = std::min(kMaxMR, rc - i0);
                (np_pad > 16 ? pairs_for_rows<2>(mr) : pairs_for_rows<1>(mr))(
                    pa + i0 * K2, K2, bt, np_pad, K2, o + i0 * N + n0, N, np);
            }
#else
            for (int64_t r = 0; r < rc; ++r)
                for (int64_t c = 0; c < np; ++c) {
                    int64_t sum = 0;
                    for (int64_t q = 0; q < K2; ++q) {
                        const uint32_t x = uint32_t(pa[r * K2 + q]);
                        const uint32_t y = uint32_t(bt[q * np_pad + c]);
                        sum += int64_t(int16_t(x & 0xFFFF)) * int16_t(y & 0xFFFF) +
                               int64_t(int16_t(x >> 16)) * int16_t(y >> 16);
                    }
                    o[r * N + n0 + c] = sum;
                }
#endif
        }
    }
    return true;
}

// Whether this call can use the digit planes (CPU, table, shape).
bool use_planes(const AxsaPlan& p) {
#if AXSA_VBMI
    if (!p.planes || p.engine != 0 || p.ngroups == 0 || p.a.width > 8 || p.b.width > 8 ||
        p.k < kShortK || p.k > kPlanesMaxK)
        return false;
    if ((p.row && !p.row_terms.planes) || (p.col && !p.col_terms.planes)) return false;
    for (int gi = 0; gi < p.ngroups; ++gi)
        if (!p.groups[gi].f_planes || !p.groups[gi].g_planes) return false;
    return true;
#else
    (void)p;
    return false;
#endif
}

// Gather: out[r, n] = sum_k lut[ca[r, k], cb[k, n]] for columns [n_lo, n_hi) of b's
// codes cb (K x N); out has N columns. (Not inlined: inside gather_block, with the plane
// gathers around it, gcc 12 compiled its outer-product loop 1.6-1.9x slower.)
template <typename L, typename Acc>
[[gnu::noinline]] void gather_rows(const L* lut, int64_t nb, const int32_t* ca, int64_t rows,
                                   int64_t K, const int32_t* cb, int64_t N, int64_t n_lo,
                                   int64_t n_hi, Acc* acc, int64_t* out) {
    if (N == 1) {   // a matrix-vector product (a model's output head): one sum per row
        for (int64_t r = 0; r < rows; ++r) {
            const int32_t* codes = ca + r * K;
            Acc s = 0;
            for (int64_t k = 0; k < K; ++k) s += Acc(lut[int64_t(codes[k]) * nb + cb[k]]);
            out[r] = int64_t(s);
        }
        return;
    }
    const int64_t nn = n_hi - n_lo;
    if (K == 1) {   // an outer product (the ts model's input projection): one lookup each
        for (int64_t r = 0; r < rows; ++r) {
            const L* row = lut + int64_t(ca[r]) * nb;
            const int32_t* idx = cb + n_lo;
            int64_t* dst = out + r * N + n_lo;
            for (int64_t n = 0; n < nn; ++n) dst[n] = int64_t(row[idx[n]]);
        }
        return;
    }
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t n = 0; n < nn; ++n) acc[n] = 0;
        for (int64_t k = 0; k < K; ++k) {
            const L* row = lut + int64_t(ca[r * K + k]) * nb;
            const int32_t* idx = cb + k * N + n_lo;
            for (int64_t n = 0; n < nn; ++n) acc[n] += Acc(row[idx[n]]);
        }
        for (int64_t n = 0; n < nn; ++n) out[r * N + n_lo + n] = int64_t(acc[n]);
    }
}

#if AXSA_VBMI
// ---- the plane gather (AVX512-VBMI) ---------------------------------------------------
// lut[a, b] = offset + sum_j 256^j P_j[a, b] with bytes P_j. For one code a, row P_j[a, :]
// is 256 bytes, four registers: two byte permutations and a blend look up 64 of b's codes
// at once (64 products per plane in ~6 instructions, against one load and one add per
// product in the plain loop). The bytes are summed over k in 16-bit lanes, no shuffles:
// the lanes' 16-bit values (mod 2^16) and their high bytes apart (a shift), whence the
// low bytes' sums; exact for up to 257 k. Every 256 k they go into int64 sums. The 64
// lanes run along a row of the output (64 columns, b's codes selecting in the row of a's
// code; 2 or 4 rows a vector for blocks of at most 32 or 16 columns, `packed_rows`) or
// down a column (64 rows' codes of a selecting in the transposed table's row of b's
// code), whichever takes fewer vector operations (`lanes_down`); or by row tables
// (`table_rows`, where the cost model `use_table_rows` says they cost less).

constexpr int64_t kPlaneK = 256;   // k per 16-bit partial sum (256 * 255 < 2^16)

// The weighed sums of one vector's planes (P <= 2) as int64, 8 lanes at a time:
// ``sink(i, sums of lanes i .. i + 8)`` for i = 0, 8, .. 56 (0 .. 24 for `width` <= 32).
// even[j] and odd[j] hold plane j's 16-bit sums of all its bytes (mod 2^16) and of its
// odd bytes (even is changed).
template <int P, class Sink>
inline void plane_sums_by8(__m512i* even, const __m512i* odd, int64_t width, Sink sink) {
    static_assert(P <= 2, "planes weighed in int32");
    for (int j = 0; j < P; ++j)   // the even bytes' sums: all sums - 256 * odd ones
        even[j] = _mm512_sub_epi16(even[j], _mm512_slli_epi16(odd[j], 8));
    // planes weighed in int32 (< 2^16 + 2^24), in order
    alignas(64) static const int32_t order[32] = {
        0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
        8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i lo_idx = _mm512_load_si512(order);
    const __m512i hi_idx = _mm512_load_si512(order + 16);
    for (int h = 0; h < (width > 32 ? 2 : 1); ++h) {
        auto half = [h](__m512i x) {
            return _mm512_cvtepu16_epi32(h ? _mm512_extracti64x4_epi64(x, 1)
                                           : _mm512_castsi512_si256(x));
        };
        __m512i E = half(even[0]), O = half(odd[0]);
        if constexpr (P == 2) {
            E = _mm512_add_epi32(E, _mm512_slli_epi32(half(even[1]), 8));
            O = _mm512_add_epi32(O, _mm512_slli_epi32(half(odd[1]), 8));
        }
        const __m512i cols[2] = {_mm512_permutex2var_epi32(E, lo_idx, O),
                                 _mm512_permutex2var_epi32(E, hi_idx, O)};
        for (int q = 0; q < 4; ++q) {
            const __m512i c = cols[q / 2];
            sink(32 * h + 8 * q, _mm512_cvtepi32_epi64(
                q % 2 ? _mm512_extracti64x4_epi64(c, 1) : _mm512_castsi512_si256(c)));
        }
    }
}

// The low min(n, 8) of 8 int64 lanes (n >= 1).
inline __mmask8 low_lanes8(int64_t n) { return n >= 8 ? 0xFF : __mmask8((1u << n) - 1); }

// o[0 .. width) = base + (or, with `add`, +=) the weighed sums of one vector's planes
// (`plane_sums_by8`), stored straight into a row of the output.
template <int P>
inline void store_plane_sums(__m512i* even, const __m512i* odd, int64_t* o, int64_t width,
                             int64_t base, bool add) {
    const __m512i b = _mm512_set1_epi64(base);
    plane_sums_by8<P>(even, odd, width, [&](int i, __m512i w) {
        if (i >= width) return;
        const __mmask8 m = low_lanes8(width - i);
        const __m512i prev = add ? _mm512_maskz_loadu_epi64(m, o + i) : b;
        _mm512_mask_storeu_epi64(o + i, m, _mm512_add_epi64(prev, w));
    });
}

// t[0 .. 64) (64-byte aligned) += the weighed sums of one vector's planes: even[j] and
// odd[j] hold plane j's 16-bit sums of all its bytes (mod 2^16) and of its odd bytes;
// `width`: the lanes wanted (the first 32 only, below 33: the rest of t is left).
template <int P>
inline void add_plane_sums(__m512i* even, const __m512i* odd, int64_t* tot,
                           int64_t width = 64) {
    if constexpr (P <= 2) {
        plane_sums_by8<P>(even, odd, width, [tot](int i, __m512i w) {
            _mm512_store_si512(tot + i, _mm512_add_epi64(_mm512_load_si512(tot + i), w));
        });
        return;
    }
    for (int j = 0; j < P; ++j)   // the even bytes' sums: all sums - 256 * odd ones
        even[j] = _mm512_sub_epi16(even[j], _mm512_slli_epi16(odd[j], 8));
    alignas(64) uint16_t e[32], o[32];
    for (int j = 0; j < P; ++j) {
        _mm512_store_si512(e, even[j]);
        _mm512_store_si512(o, odd[j]);
        for (int i = 0; i < 32; ++i) {
            tot[2 * i] += int64_t(e[i]) << (8 * j);
            tot[2 * i + 1] += int64_t(o[i]) << (8 * j);
        }
    }
}

// tot[0 .. 64 NV) += the sums over k of sum_j 256^j P_j[sel[k * step], lanes[k * ld + i]]
// (i < width: the lanes; planes: (256, P, 256) bytes, P_j of code c at c * P * 256 + j).
template <int P, int NV>
void plane_block(const uint8_t* planes, const uint8_t* sel, int64_t step, int64_t K,
                 const uint8_t* lanes, int64_t ld, int64_t width, int64_t* tot) {
    __mmask64 live[NV];
    for (int v = 0; v < NV; ++v) live[v] = low_bytes(width - 64 * v);
    for (int64_t k0 = 0; k0 < K; k0 += kPlaneK) {
        const int64_t k1 = std::min(K, k0 + kPlaneK);
        __m512i even[NV][P], odd[NV][P];
        for (int v = 0; v < NV; ++v)
            for (int j = 0; j < P; ++j) even[v][j] = odd[v][j] = _mm512_setzero_si512();
        for (int64_t k = k0; k < k1; ++k) {
            const uint8_t* T = planes + size_t(sel[k * step]) * (P * 256);
            __m512i c[NV];
            __mmask64 hi[NV];
            for (int v = 0; v < NV; ++v) {
                c[v] = _mm512_maskz_loadu_epi8(live[v], lanes + k * ld + 64 * v);
                hi[v] = _mm512_movepi8_mask(c[v]);
            }
            for (int j = 0; j < P; ++j) {
                const __m512i t[4] = {
                    _mm512_loadu_si512(T + 256 * j), _mm512_loadu_si512(T + 256 * j + 64),
                    _mm512_loadu_si512(T + 256 * j + 128), _mm512_loadu_si512(T + 256 * j + 192)};
                for (int v = 0; v < NV; ++v) {
                    const __m512i x = lookup_regs(t, c[v], hi[v]);
                    even[v][j] = _mm512_add_epi16(even[v][j], x);   // both bytes, mod 2^16
                    odd[v][j] = _mm512_add_epi16(odd[v][j], _mm512_srli_epi16(x, 8));
                }
            }
        }
        for (int v = 0; v < NV; ++v)
            add_plane_sums<P>(even[v], odd[v], tot + 64 * v, width - 64 * v);
    }
}

// plane_block with as many vectors as `width` lanes need (at most NV).
template <int P, int NV>
void plane_lanes(const uint8_t* planes, const uint8_t* sel, int64_t step, int64_t K,
                 const uint8_t* lanes, int64_t ld, int64_t width, int64_t* tot) {
    switch ((width + 63) / 64) {
        case 1: return plane_block<P, 1>(planes, sel, step, K, lanes, ld, width, tot);
        case 2: return plane_block<P, 2>(planes, sel, step, K, lanes, ld, width, tot);
        case 3: return plane_block<P, NV == 4 ? 3 : 2>(planes, sel, step, K, lanes, ld, width,
                                                       tot);
        default: return plane_block<P, NV>(planes, sel, step, K, lanes, ld, width, tot);
    }
}

// b's codes of a block of w <= W columns (row `src`), repeated in every W-lane group
template <int W>
inline __m512i group_codes(const uint8_t* src, int64_t w) {
    const __mmask64 live = low_bytes(w);
    if constexpr (W == 64) return _mm512_maskz_loadu_epi8(live, src);
    else if constexpr (W == 32)
        return _mm512_broadcast_i64x4(_mm256_maskz_loadu_epi8(__mmask32(live), src));
    else
        return _mm512_broadcast_i32x4(_mm_maskz_loadu_epi8(__mmask16(live), src));
}

// The row-wise plane gather for a block of at most G columns (G = 16 or 32): R = 64 / G
// rows share each vector, G lanes a row, b's codes of the block repeated in every group.
// Every row still permutes its own table rows, but the 16-bit sums, their weighing, b's
// codes and the loop serve R rows at once (a narrow block alone fills G of 64 lanes).
template <int P, int G>
void packed_rows(const uint8_t* planes, const uint8_t* ca, int64_t rows, int64_t K,
                 const uint8_t* cb, int64_t N, int64_t n0, int64_t w, int64_t base,
                 int64_t* out) {
    constexpr int R = 64 / G;
    uint8_t* raw = scratch(tls.lane_codes, size_t(K * 64 + 64));
    uint8_t* C = raw + ((64 - (reinterpret_cast<uintptr_t>(raw) & 63)) & 63);
    // M[k][q]: the lanes whose code of row k is in quarter q (q * 64 .. q * 64 + 63): one
    // byte permutation of the quarter's 64 table bytes each, merged, takes the place of
    // two 128-byte permutations and a blend
    uint64_t* M = scratch(tls.lane_masks, size_t(K * 4));
    __mmask64 group[R];
    for (int i = 0; i < R; ++i) group[i] = low_bytes(G) << (G * i);
    for (int64_t k = 0; k < K; ++k) {   // b's codes of row k in every group, their masks
        const __m512i c = group_codes<G>(cb + k * N + n0, w);
        _mm512_store_si512(C + 64 * k, c);
        const __mmask64 b7 = _mm512_movepi8_mask(c);
        const __mmask64 b6 = _mm512_test_epi8_mask(c, _mm512_set1_epi8(0x40));
        M[4 * k] = ~b7 & ~b6;
        M[4 * k + 1] = ~b7 & b6;
        M[4 * k + 2] = b7 & ~b6;
        M[4 * k + 3] = b7 & b6;
    }
    alignas(64) int64_t tot[64];
    // one weighing of 1-2 planes: the sums go straight into out's rows, else through tot
    const bool direct = P <= 2 && K <= kPlaneK;
    for (int64_t r0 = 0; r0 < rows; r0 += R) {
        const int64_t nr = std::min<int64_t>(R, rows - r0);
        const uint8_t* sel[R];   // (a short last group repeats its last row)
        for (int i = 0; i < R; ++i) sel[i] = ca + (r0 + std::min<int64_t>(i, nr - 1)) * K;
        if (!direct)
            for (int i = 0; i < 64; ++i) tot[i] = base;
        for (int64_t k0 = 0; k0 < K; k0 += kPlaneK) {
            const int64_t k1 = std::min(K, k0 + kPlaneK);
            __m512i even[P], odd[P];
            for (int j = 0; j < P; ++j) even[j] = odd[j] = _mm512_setzero_si512();
            for (int64_t k = k0; k < k1; ++k) {
                const __m512i c = _mm512_load_si512(C + 64 * k);
                const __mmask64 m[4] = {M[4 * k], M[4 * k + 1], M[4 * k + 2], M[4 * k + 3]};
                const uint8_t* T[R];
                for (int i = 0; i < R; ++i) T[i] = planes + size_t(sel[i][k]) * (P * 256);
                for (int j = 0; j < P; ++j) {
                    __m512i v;
                    for (int i = 0; i < R; ++i) {
                        const uint8_t* t = T[i] + 256 * j;
                        __m512i x = _mm512_maskz_permutexvar_epi8(m[0], c, _mm512_loadu_si512(t));
                        for (int q = 1; q < 4; ++q)
                            x = _mm512_mask_permutexvar_epi8(x, m[q], c,
                                                             _mm512_loadu_si512(t + 64 * q));
                        v = i ? _mm512_mask_blend_epi8(group[i], v, x) : x;
                    }
                    even[j] = _mm512_add_epi16(even[j], v);   // both bytes, mod 2^16
                    odd[j] = _mm512_add_epi16(odd[j], _mm512_srli_epi16(v, 8));
                }
            }
            if constexpr (P <= 2) {
                if (direct) {   // lane i: row i / G of the group, column i % G
                    const __m512i b = _mm512_set1_epi64(base);
                    plane_sums_by8<P>(even, odd, 64, [&](int i, __m512i v) {
                        const int64_t row = i / G, col = i % G;
                        if (row >= nr || col >= w) return;
                        _mm512_mask_storeu_epi64(out + (r0 + row) * N + n0 + col,
                                                 low_lanes8(w - col), _mm512_add_epi64(b, v));
                    });
                    continue;
                }
            }
            add_plane_sums<P>(even, odd, tot);
        }
        if (direct) continue;
        for (int64_t i = 0; i < nr; ++i)
            std::memcpy(out + (r0 + i) * N + n0, tot + G * i, size_t(w) * 8);
    }
}

// The plane gather for `rows` rows of u8 codes ca (rows x K) against columns [n_lo, n_hi)
// of cb (K x N), into out (rows x N); `at`: the same codes transposed (K x rows), or
// null, for lanes down the columns with the transposed table's planes `lpt`.
template <int P>
void plane_rows(const AxsaTerms& lp, const AxsaTerms& lpt, const uint8_t* ca,
                const uint8_t* at, int64_t rows, int64_t K, const uint8_t* cb, int64_t N,
                int64_t n_lo, int64_t n_hi, int64_t* out) {
    constexpr int NV = P <= 2 ? 4 : 2;   // 64-lane vectors per block (registers)
    constexpr int64_t L = 64 * NV;
    alignas(64) int64_t tot[L];
    const int64_t base = K * lp.offset;
    if (at) {
        for (int64_t r0 = 0; r0 < rows; r0 += L) {
            const int64_t w = std::min(L, rows - r0);
            for (int64_t n = n_lo; n < n_hi; ++n) {
                for (int64_t i = 0; i < (w + 63) / 64 * 64; ++i) tot[i] = base;
                plane_lanes<P, NV>(lpt.planes, cb + n, N, K, at + r0, rows, w, tot);
                for (int64_t i = 0; i < w; ++i) out[(r0 + i) * N + n] = tot[i];
            }
        }
        return;
    }
    if (n_hi - n_lo <= 16)
        return packed_rows<P, 16>(lp.planes, ca, rows, K, cb, N, n_lo, n_hi - n_lo, base, out);
    if (n_hi - n_lo <= 32)
        return packed_rows<P, 32>(lp.planes, ca, rows, K, cb, N, n_lo, n_hi - n_lo, base, out);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t n0 = n_lo; n0 < n_hi; n0 += L) {
            const int64_t w = std::min(L, n_hi - n0);
            for (int64_t i = 0; i < (w + 63) / 64 * 64; ++i) tot[i] = base;
            plane_lanes<P, NV>(lp.planes, ca + r * K, 1, K, cb + n0, N, w, tot);
            std::memcpy(out + r * N + n0, tot, size_t(w) * 8);
        }
    }
}

// The plane gather by row tables, for many rows. For a block of columns and a chunk of
// k, each code's table row is looked up at b's codes once, V[k][c] = P_j[c, b[k, n0 +
// i]] (the permutations above, 256 lookups a k), rather than once a row; every row then
// adds its codes' entries V[k][a[r, k]] (a load where the row-wise gather loads a table
// row and permutes) into the same 16-bit sums, weighed into int64 every 256 k. An entry
// holds plane j's W lanes (W = 16, 32 or 64: the block's columns) at byte W j, in whole
// vectors: a block of 32 columns with two planes is one vector an entry, one load a
// (row, k). The tables cost 256 rows' lookups a k: they pay on many rows
// (`use_table_rows`).
constexpr int64_t kTableBytes = 1 << 20;   // V of one chunk of k (L2)

// plane j of packed entry sums v (W lanes at byte W j) in lanes 0 .. W of a vector
template <int W>
inline __m512i plane_of(const __m512i* v, int j) {
    if constexpr (W == 64) return v[j];
    else if constexpr (W == 32) {
        const __m512i x = v[j / 2];
        return _mm512_zextsi256_si512(j % 2 ? _mm512_extracti64x4_epi64(x, 1)
                                            : _mm512_castsi512_si256(x));
    } else {
        const __m512i x = v[j / 4];
        __m128i q;
        switch (j % 4) {
            case 0: q = _mm512_castsi512_si128(x); break;
            case 1: q = _mm512_extracti32x4_epi32(x, 1); break;
            case 2: q = _mm512_extracti32x4_epi32(x, 2); break;
            default: q = _mm512_extracti32x4_epi32(x, 3);
        }
        return _mm512_zextsi128_si512(q);
    }
}

template <int P, int W>
void table_rows(const AxsaTerms& lp, const uint8_t* ca, int64_t rows, int64_t K,
                const uint8_t* cb, int64_t N, int64_t n_lo, int64_t n_hi, int64_t* out) {
    constexpr int NE = (P * W + 63) / 64;   // vectors an entry
    constexpr int64_t E = 64 * NE;          // bytes an entry
    // k per chunk, a power of two (so no chunk straddles a weighing): V within kTableBytes
    constexpr int64_t kc = E <= 64 ? 64 : E <= 128 ? 32 : 16;
    static_assert(kc * 256 * E <= kTableBytes, "V must stay in L2");
    static_assert(kPlaneK % kc == 0, "a chunk of k must not straddle a weighing");
    uint8_t* V = tls.row_tables.get<uint8_t>(size_t(kc * 256 * E));
    // each row's even and odd 16-bit sums of its entries: 2 NE vectors
    __m512i* S = tls.row_sums.get<__m512i>(size_t(rows * 2 * NE));
    const int64_t base = K * lp.offset;
    alignas(64) int64_t tot[64];
    for (int64_t n0 = n_lo; n0 < n_hi; n0 += W) {
        const int64_t w = std::min<int64_t>(W, n_hi - n0);
        const __mmask64 live = low_bytes(w);
        __mmask64 lanes[NE][P];   // the lanes of plane j in vector e
        for (int e = 0; e < NE; ++e)
            for (int j = 0; j < P; ++j)
                lanes[e][j] = (W * j) / 64 == e ? live << ((W * j) % 64) : 0;
        for (int64_t k0 = 0; k0 < K; k0 += kc) {
            const int64_t kn = std::min(kc, K - k0);
            for (int64_t c = 0; c < 256; ++c) {   // V[kk][c] for this chunk's k
                const uint8_t* T = lp.planes + size_t(c) * (P * 256);
                __m512i t[P][4];
                for (int j = 0; j < P; ++j)
                    for (int q = 0; q < 4; ++q) t[j][q] = _mm512_loadu_si512(T + 256 * j + 64 * q);
                for (int64_t kk = 0; kk < kn; ++kk) {
                    const __m512i codes = group_codes<W>(cb + (k0 + kk) * N + n0, w);
                    const __mmask64 hi = _mm512_movepi8_mask(codes);
                    uint8_t* dst = V + (kk * 256 + c) * E;
                    for (int e = 0; e < NE; ++e) {
                        __m512i x = _mm512_setzero_si512();
                        for (int j = 0; j < P; ++j)
                            if (lanes[e][j])
                                x = _mm512_mask_mov_epi8(x, lanes[e][j],
                                                         lookup_regs(t[j], codes, hi));
                        _mm512_store_si512(dst + 64 * e, x);
                    }
                }
            }
            const bool fresh = k0 % kPlaneK == 0;
            const bool flush = (k0 + kn) % kPlaneK == 0 || k0 + kn == K;
            for (int64_t r = 0; r < rows; ++r) {
                __m512i* s = S + r * 2 * NE;   // even[0..NE), then odd[0..NE)
                __m512i even[NE], odd[NE];
                for (int e = 0; e < NE; ++e) {
                    even[e] = fresh ? _mm512_setzero_si512() : _mm512_load_si512(s + e);
                    odd[e] = fresh ? _mm512_setzero_si512() : _mm512_load_si512(s + NE + e);
                }
                const uint8_t* ar = ca + r * K + k0;
                for (int64_t kk = 0; kk < kn; ++kk) {
                    const uint8_t* v = V + (kk * 256 + ar[kk]) * E;
                    for (int e = 0; e < NE; ++e) {
                        const __m512i x = _mm512_load_si512(v + 64 * e);
                        even[e] = _mm512_add_epi16(even[e], x);
                        odd[e] = _mm512_add_epi16(odd[e], _mm512_srli_epi16(x, 8));
                    }
                }
                if (flush) {   // (the first weighing of the row writes base + its sums)
                    const bool first = k0 < kPlaneK;
                    __m512i pe[P], po[P];
                    for (int j = 0; j < P; ++j) {
                        pe[j] = plane_of<W>(even, j);
                        po[j] = plane_of<W>(odd, j);
                    }
                    int64_t* o = out + r * N + n0;
                    if constexpr (P <= 2) {
                        store_plane_sums<P>(pe, po, o, w, base, !first);
                    } else {
                        for (int64_t i = 0; i < 64; ++i) tot[i] = first ? base : 0;
                        add_plane_sums<P>(pe, po, tot, w);
                        if (first)
                            std::memcpy(o, tot, size_t(w) * 8);
                        else
                            for (int64_t i = 0; i < w; ++i) o[i] += tot[i];
                    }
                } else {
                    for (int e = 0; e < NE; ++e) {
                        _mm512_store_si512(s + e, even[e]);
                        _mm512_store_si512(s + NE + e, odd[e]);
                    }
                }
            }
        }
    }
}

// The lanes of a row table's entry for a block of `cols` columns.
inline int64_t entry_lanes(int64_t cols) { return cols <= 16 ? 16 : cols <= 32 ? 32 : 64; }

// table_rows with entries as wide as the block's columns need.
template <int P>
void table_rows_for(const AxsaTerms& lp, const uint8_t* ca, int64_t rows, int64_t K,
                    const uint8_t* cb, int64_t N, int64_t n_lo, int64_t n_hi, int64_t* out) {
    switch (entry_lanes(n_hi - n_lo)) {
        case 16: return table_rows<P, 16>(lp, ca, rows, K, cb, N, n_lo, n_hi, out);
        case 32: return table_rows<P, 32>(lp, ca, rows, K, cb, N, n_lo, n_hi, out);
        default: return table_rows<P, 64>(lp, ca, rows, K, cb, N, n_lo, n_hi, out);
    }
}

#endif

// Whether the gather runs on the lut's byte planes (CPU, table, shape).
bool use_lut_planes(const AxsaPlan& p) {
#if AXSA_VBMI
    // (K < 4: the planes' per-row set-up outweighs the products; an outer product, the
    // ts model's input projection, ran at half the plain loop's speed)
    return p.engine == 1 && p.lut_planes.planes && p.lut_planes_t.planes &&
           p.lut_planes.count >= 1 && p.lut_planes.count <= 4 && p.a.width <= 8 &&
           p.b.width <= 8 && p.n >= 8 && p.k >= 4;
#else
    (void)p;
    return false;
#endif
}

// Whether the plane gather's lanes run down the columns: when that takes fewer vector
// operations. Along a row, each (row, k) loads a table row (4 registers a plane) and
// permutes once per 64 columns; down a column, each (column, k) loads one and permutes
// once per 64 rows, after a's codes are transposed (counted as a fifth more).
inline bool lanes_down(int64_t cols, int64_t rows) {
    const int64_t along = rows * (4 + 2 * ((cols + 63) / 64));
    const int64_t down = cols * (4 + 2 * ((rows + 63) / 64));
    return 6 * down < 5 * along;
}

#if AXSA_VBMI
// The plane gather's cost per k, in ns, by a model of its vector operations (each timed
// in a loop of its own on this project's Xeon, family 6 model 207): a 256-byte lookup of
// 64 codes (two permutations and a blend) 1.8 ns and its 16-bit sums 0.8, loading a
// table row's four registers 1.0, writing a row table's entry 0.2, adding one to a row's
// sums 1.0; transposing a's codes is put at 0.5 a row (not timed apart); the row tables'
// total is weighed by 1.3, as measured against the model on seven shapes of 520 to 4096
// rows and 9 to 100 columns. Each way's writing of the int64 results, spread over the k:
// 2.2 ns a result down the columns (strided stores), 0.45 along the rows, 0.25 from the
// row tables (fitted to each way's time, forced, on 256 to 1024 rows of 32 and 64 columns
// at K = 4, less the model's lookups; down the columns it matched 512 x 64 x 10 within
// 1%): at small K it outweighs the lookups.
inline double along_ns(int64_t cols, int64_t rows, int64_t K, int P) {
    const double blocks = double((cols + 63) / 64);
    return double(rows) * P * (1.0 + 2.6 * blocks) + 0.45 * double(rows * cols) / double(K);
}

inline double down_ns(int64_t cols, int64_t rows, int64_t K, int P) {
    double t = 0.5 * double(rows);   // a's codes transposed
    for (int64_t r0 = 0; r0 < rows; r0 += kGatherRows) {   // (in chunks of rows)
        const int64_t blocks = (std::min(kGatherRows, rows - r0) + 63) / 64;
        t += double(cols) * P * (1.0 + 2.6 * double(blocks));
    }
    return t + 2.2 * double(rows * cols) / double(K);
}

inline double table_ns(int64_t cols, int64_t rows, int64_t K, int P) {
    const int64_t W = entry_lanes(cols), NE = (P * W + 63) / 64, blocks = (cols + W - 1) / W;
    const double kn = double(std::min<int64_t>(K, 16));
    return 1.3 * double(blocks) * (256.0 * P * (2.0 + 1.0 / kn) + double(rows * NE) * 1.0) +
           0.25 * double(rows * cols) / double(K);
}

// Whether the plane gather runs by row tables on these rows, columns and k (P planes):
// when the model says they cost less than the row-wise gather.
inline bool use_table_rows(int64_t cols, int64_t rows, int64_t K, int P) {
    const double rowwise = lanes_down(cols, std::min(rows, kGatherRows))
                               ? down_ns(cols, rows, K, P) : along_ns(cols, rows, K, P);
    return table_ns(cols, rows, K, P) < rowwise;
}
#endif

// Gather rows r0 .. r0 + rows of a against columns [n_lo, n_hi): int32 codes cb, or u8
// codes cb8 for the plane gather.
bool gather_block(const AxsaPlan& p, const void* a, int64_t r0, int64_t rows,
                  const int32_t* cb, const uint8_t* cb8, int64_t n_lo, int64_t n_hi,
                  int64_t* out) {
    const int64_t K = p.k, N = p.n, nb = int64_t(1) << p.b.width;
    const int64_t chunk = std::min(rows, kGatherRows);
#if AXSA_VBMI
    if (cb8 && use_table_rows(n_hi - n_lo, rows, K, int(p.lut_planes.count))) {
        uint8_t* ca = scratch(tls.ca8, size_t(rows * K));
        if (!a_codes(p, a, r0, rows, ca)) return false;
        const AxsaTerms& lp = p.lut_planes;
        switch (lp.count) {
            case 1: table_rows_for<1>(lp, ca, rows, K, cb8, N, n_lo, n_hi, out); break;
            case 2: table_rows_for<2>(lp, ca, rows, K, cb8, N, n_lo, n_hi, out); break;
            case 3: table_rows_for<3>(lp, ca, rows, K, cb8, N, n_lo, n_hi, out); break;
            default: table_rows_for<4>(lp, ca, rows, K, cb8, N, n_lo, n_hi, out);
        }
        return true;
    }
    if (cb8) {
        uint8_t* ca = scratch(tls.ca8, size_t(chunk * K));
        uint8_t* at = nullptr;
        for (int64_t c0 = 0; c0 < rows; c0 += kGatherRows) {
            const int64_t rc = std::min(kGatherRows, rows - c0);
            if (!a_codes(p, a, r0 + c0, rc, ca)) return false;
            if (lanes_down(n_hi - n_lo, rc)) {   // a's codes transposed: 64 rows' codes of a k
                at = scratch(tls.digits_a, size_t(chunk * K));
                for (int64_t r = 0; r < rc; ++r)
                    for (int64_t k = 0; k < K; ++k) at[k * rc + r] = ca[r * K + k];
            } else {
                at = nullptr;
            }
            int64_t* o = out + c0 * N;
            const AxsaTerms &lp = p.lut_planes, &lpt = p.lut_planes_t;
            switch (lp.count) {
                case 1: plane_rows<1>(lp, lpt, ca, at, rc, K, cb8, N, n_lo, n_hi, o); break;
                case 2: plane_rows<2>(lp, lpt, ca, at, rc, K, cb8, N, n_lo, n_hi, o); break;
                case 3: plane_rows<3>(lp, lpt, ca, at, rc, K, cb8, N, n_lo, n_hi, o); break;
                default: plane_rows<4>(lp, lpt, ca, at, rc, K, cb8, N, n_lo, n_hi, o);
            }
        }
        return true;
    }
#else
    (void)cb8;
#endif
    int32_t* ca = scratch(tls.ca, size_t(chunk * K));
    for (int64_t c0 = 0; c0 < rows; c0 += kGatherRows) {
        const int64_t rc = std::min(kGatherRows, rows - c0);
        if (!a_codes(p, a, r0 + c0, rc, ca)) return false;
        int64_t* o = out + c0 * N;
        int64_t* acc = scratch(tls.acc64, size_t(N));
        if (p.lut32 && p.acc32)
            gather_rows(p.lut32, nb, ca, rc, K, cb, N, n_lo, n_hi,
                        reinterpret_cast<int32_t*>(acc), o);
        else if (p.lut32)
            gather_rows(p.lut32, nb, ca, rc, K, cb, N, n_lo, n_hi, acc, o);
        else
            gather_rows(p.lut64, nb, ca, rc, K, cb, N, n_lo, n_hi, acc, o);
    }
    return true;
}

// Below this much work per call (products, plus one for each output: an outer
// product's work is its outputs) the kernels stay on one thread (waking the others costs
// more than they save on the models' smallest GEMMs).
constexpr int64_t kMinParallelWork = 1 << 16;

// One block of output: rows [r0, r0 + rows) (global rows, see a_codes) of pass `g`
// against columns [n_lo, n_hi), b's codes already made (cb or cb8).
// Whether the low-rank kernel writes a float result itself (`lowrank_rows`' fout).
bool writes_floats(const AxsaPlan& p) { return p.engine == 0 && p.ngroups > 0 && p.n > 1; }

// The int64 sums of that block into dst (its first row's); with fout (writes_floats),
// the finished sums there instead, as `stage` says.
bool block_sums(const AxsaPlan& p, bool planes, bool lut_planes, const void* a, int64_t r0,
                int64_t rows, const int32_t* cb, const uint8_t* cb8, int64_t n_lo,
                int64_t n_hi, int64_t* dst, float* fout = nullptr, const Out& stage = {}) {
    if (p.engine == 2) return pair_rows(p, a, r0, rows, cb8, n_lo, n_hi, dst);
    if (p.engine != 0) return gather_block(p, a, r0, rows, cb, lut_planes ? cb8 : nullptr,
                                           n_lo, n_hi, dst);
    return planes ? lowrank_rows(p, a, r0, rows, cb8, n_lo, n_hi, dst, fout, stage)
                  : lowrank_rows(p, a, r0, rows, cb, n_lo, n_hi, dst, fout, stage);
}

// out[r, j] = T(acc[r, j]) * s[j or 0] (+ b[j]): torch.mul then add_, two roundings
template <typename A, typename T>
void dequantize_rows(const A* __restrict acc, int64_t r0, int64_t r1, int64_t n,
                     const T* __restrict s, int64_t s_step, const T* __restrict b,
                     T* __restrict out) {
    for (int64_t r = r0; r < r1; ++r) {
        const A* src = acc + r * n;
        T* dst = out + r * n;
        if (b && s_step) {
            for (int64_t j = 0; j < n; ++j) {
                const T y = T(src[j]) * s[j];
                dst[j] = y + b[j];
            }
        } else if (s_step) {
            for (int64_t j = 0; j < n; ++j) dst[j] = T(src[j]) * s[j];
        } else {
            const T s0 = s[0];
            if (b) {
                for (int64_t j = 0; j < n; ++j) {
                    const T y = T(src[j]) * s0;
                    dst[j] = y + b[j];
                }
            } else {
                for (int64_t j = 0; j < n; ++j) dst[j] = T(src[j]) * s0;
            }
        }
    }
}

// Columns [n0, n0 + n) of one row of sums into float32 (rounded to nearest, as torch's
// .to(float32): exact below 2^24), dequantized as `o` says (without a scale, times 1:
// exact).
void to_float(const int64_t* src, float* dst, int64_t n0, int64_t n, const Out& o) {
    static const float one = 1.0f;
    const bool scaled = o.scale != nullptr;
    dequantize_rows(src + n0, 0, 1, n, scaled ? o.scale + (o.s_step ? n0 : 0) : &one,
                    scaled ? o.s_step : 0, scaled && o.bias ? o.bias + n0 : nullptr,
                    dst + n0);
}

bool run_block(const AxsaPlan& p, bool planes, bool lut_planes, const void* a, int64_t r0,
               int64_t rows, const int32_t* cb, const uint8_t* cb8, int64_t n_lo,
               int64_t n_hi, Out out) {
    const int64_t N = p.n;
    if (!out.outf)
        return block_sums(p, planes, lut_planes, a, r0, rows, cb, cb8, n_lo, n_hi,
                          out.out + r0 * N);
    if (writes_floats(p))   // the kernel writes the floats itself
        return block_sums(p, planes, lut_planes, a, r0, rows, cb, cb8, n_lo, n_hi, nullptr,
                          out.outf + r0 * N, out);
    for (int64_t c0 = 0; c0 < rows; c0 += kGatherRows) {
        const int64_t rc = std::min(kGatherRows, rows - c0);
        int64_t* sums = scratch(tls.out64, size_t(rc * N));
        float* rows_f = out.outf + (r0 + c0) * N;
        if (!block_sums(p, planes, lut_planes, a, r0 + c0, rc, cb, cb8, n_lo, n_hi, sums))
            return false;
        for (int64_t r = 0; r < rc; ++r)   // (while the chunk's sums are in cache)
            to_float(sums + r * N, rows_f + r * N, n_lo, n_hi - n_lo, out);
    }
    return true;
}

// b's codes of pass g into the calling thread's scratch (cb or cb8, the other null).
bool b_codes(const AxsaPlan& p, const void* b, int64_t g, bool bytes, int32_t** cb,
             uint8_t** cb8) {
    const AxsaOperand& o = p.b;
    const int64_t K = p.k, N = p.n, off = g * o.batch_stride;
    if (bytes) {
        *cb = nullptr;
        *cb8 = scratch(tls.cb8, size_t(K * N));
        return codes_of(b, o.dtype, off, o.outer_stride, o.inner_stride, K, N, o.lo, o.hi,
                        o.width, *cb8);
    }
    *cb8 = nullptr;
    *cb = scratch(tls.cb, size_t(K * N));
    return codes_of(b, o.dtype, off, o.outer_stride, o.inner_stride, K, N, o.lo, o.hi,
                    o.width, *cb);
}

int32_t approx_gemm(const AxsaPlan* plan, const void* a, const void* b, Out out,
                    int32_t threads) {
    if (plan->engine == 2 && (plan->k * plan->pair_bound >= (int64_t(1) << 31) ||
                              plan->k < 4 || plan->n == 1)) {
        // the int8 digits: where int32 pair sums would not be exact, and on the shapes
        // where their front end is the faster (an outer product, a matrix-vector product)
        AxsaPlan digits = *plan;
        digits.engine = 0;
        return approx_gemm(&digits, a, b, out, threads);
    }
    const AxsaPlan& p = *plan;
    const int64_t K = p.k, N = p.n;
    const bool planes = use_planes(p), lut_planes = use_lut_planes(p);
    const bool bytes = planes || lut_planes || p.engine == 2;   // (pairs: u8 codes)
    // b shared by every batch: one pass over all batches' rows
    const bool shared = p.b.batch_stride == 0;
    const int64_t passes = shared ? 1 : p.batches;
    const int64_t rows = shared ? p.batches * p.m : p.m;
    int nt = threads < 1 ? 1 : threads;
#ifndef _OPENMP
    nt = 1;
#endif
    if (p.batches * p.m * (K + 1) * N < kMinParallelWork) nt = 1;
    if (nt > 1 && passes >= nt) {   // batched on both sides: whole passes per thread
        std::atomic<int32_t> err{0};
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t g = 0; g < passes; ++g) {
            if (err.load(std::memory_order_relaxed)) continue;
            int32_t* cb;
            uint8_t* cb8;
            if (!b_codes(p, b, g, bytes, &cb, &cb8))
                err.store(2);
            else if (!run_block(p, planes, lut_planes, a, g * p.m, rows, cb, cb8, 0, N, out))
                err.store(1);
        }
        return err.load();
    }
    for (int64_t g = 0; g < passes; ++g) {
        int32_t* cb;
        uint8_t* cb8;
        if (!b_codes(p, b, g, bytes, &cb, &cb8)) return 2;
        const int64_t r0 = g * p.m;
        // split the columns when a's per-row work (duplicated by a column split) is
        // smaller than b's packing (duplicated by a row split); the gather duplicates
        // nothing either way and splits rows
        const bool by_cols = nt > 1 && N >= 32 * nt &&
                             ((p.engine != 1 && rows <= N) || rows < 8 * nt);
        const bool by_rows = nt > 1 && !by_cols && rows >= 8 * nt;
        if (!by_cols && !by_rows) {
            if (!run_block(p, planes, lut_planes, a, r0, rows, cb, cb8, 0, N, out)) return 1;
            continue;
        }
        // (the plane gather's blocks: 64 rows)
        const int64_t extent = by_cols ? N : rows;
        const int64_t unit = by_cols ? kTileN : p.engine == 1 ? 64 : kMaxMR;
        const int64_t step = (extent + nt * unit - 1) / (nt * unit) * unit;
        const int64_t parts = (extent + step - 1) / step;
        std::atomic<int32_t> err{0};
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t t = 0; t < parts; ++t) {
            const int64_t lo = t * step, hi = std::min(extent, lo + step);
            const bool ok = by_cols
                ? run_block(p, planes, lut_planes, a, r0, rows, cb, cb8, lo, hi, out)
                : run_block(p, planes, lut_planes, a, r0 + lo, hi - lo, cb, cb8, 0, N, out);
            if (!ok) err.store(1);
        }
        if (err.load()) return 1;
    }
    return 0;
}

}  // namespace

extern "C" {

// C = approx(a, b) into `out` ((batches, m, n) int64, contiguous), on up to `threads`
// threads (OpenMP; one without it). Every output element is one thread's integer sum,
// so the result is the same whatever the thread count.
// Returns 0, or 1 / 2 when operand a / b holds a value outside its range or not an
// integer (the caller finds and names it).
int32_t axsa_approx_gemm(const AxsaPlan* plan, const void* a, const void* b, int64_t* out,
                         int32_t threads) {
    return approx_gemm(plan, a, b, Out{out, nullptr, nullptr, 0, nullptr}, threads);
}

// The same as float32 values (`out`: (batches, m, n) float32, contiguous), without an
// int64 result in memory; with `scale` (n floats if s_step, else one), dequantized:
// out = float(C) * scale (+ bias, n floats, when not null).
int32_t axsa_approx_gemm_f32(const AxsaPlan* plan, const void* a, const void* b, float* out,
                             int32_t threads, const float* scale, int64_t s_step,
                             const float* bias) {
    return approx_gemm(plan, a, b, Out{nullptr, out, scale, s_step, bias}, threads);
}

// --- elementwise kernels of the quantized paths (models/_native.py `quantize`, `codes`,
// `dequantize`): each one pass over memory where torch takes a chain of 2 to 5 passes,
// with the very same float operations (no FMA contraction: -ffp-contract=off), so the
// results are bit for bit those of the torch expressions they replace.
}  // extern "C"

namespace {

constexpr int64_t kMinParallelElements = 1 << 15;

int elementwise_threads(int64_t n, int32_t threads) {
#ifdef _OPENMP
    return n < kMinParallelElements || threads < 1 ? 1 : threads;
#else
    (void)n;
    (void)threads;
    return 1;
#endif
}

// Run body(lo, hi) over [0, n) in nt contiguous chunks (one per thread): the loops stay
// plain serial loops the compiler vectorizes.
template <typename F>
void chunks(int64_t n, int nt, F body) {
    if (nt <= 1) {
        body(int64_t(0), n);
        return;
    }
    const int64_t step = (n + nt - 1) / nt;
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int t = 0; t < nt; ++t) body(std::min(n, t * step), std::min(n, (t + 1) * step));
}

// q = clamp(floor(x / s + 0.5), qmin, qmax) in T (torch.div, add_, floor_, clamp_); a NaN
// stays NaN (as in clamp_: std::max / std::min return their first argument on NaN), which
// the GEMM's operand check then names.
template <typename T>
void quantize_loop(const T* __restrict x, int64_t lo, int64_t hi, T s, T qmin, T qmax,
                   T* __restrict out) {
    for (int64_t i = lo; i < hi; ++i)
        out[i] = std::min(std::max(std::floor(x[i] / s + T(0.5)), qmin), qmax);
}

// emit(i, code) for the code (v & mask) of every integer value v in [lo, hi]; false when
// some x is not such a value
// (C: the code's type, int32 where lo..hi fits it, so that a table lookup vectorizes)
template <typename C, typename T, typename Emit>
bool codes_loop(const T* __restrict x, int64_t i0, int64_t i1, int64_t lo, int64_t hi,
                int64_t mask, Emit emit) {
    C bad = 0;
    for (int64_t i = i0; i < i1; ++i) {
        const T v = x[i];
        C c;
        if constexpr (std::is_floating_point_v<T>) {
            // (clamped first: a NaN or a huge float never reaches the conversion)
            const T w = std::min(std::max(v, T(lo)), T(hi));
            c = C(w);
            bad |= T(c) != v;           // outside the range, fractional or NaN
        } else {
            const int64_t u = int64_t(v);
            bad |= (u < lo) | (u > hi);
            c = C(u);
        }
        emit(i, C(c & C(mask)));
    }
    return !bad;
}

template <typename T>
void quantize_all(const T* x, int64_t n, T s, T qmin, T qmax, T* out, int nt) {
    chunks(n, nt, [&](int64_t lo, int64_t hi) { quantize_loop(x, lo, hi, s, qmin, qmax, out); });
}

// The same values as int8 (qmin..qmax within -128..127); false when some x is NaN (a NaN
// has no int8 code: the caller quantizes in floats, and the GEMM names the value).
template <typename T>
bool quantize_i8_loop(const T* __restrict x, int64_t lo, int64_t hi, T s, T qmin, T qmax,
                      int8_t* __restrict out) {
    using I = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;   // (vectorizes)
    I nan = 0;
    for (int64_t i = lo; i < hi; ++i) {
        const T q = std::min(std::max(std::floor(x[i] / s + T(0.5)), qmin), qmax);
        nan += q != q;
        out[i] = int8_t(I(q == q ? q : T(0)));
    }
    return nan == 0;
}

template <typename T>
bool quantize_i8_all(const T* x, int64_t n, T s, T qmin, T qmax, int8_t* out, int nt) {
    std::atomic<bool> ok{true};
    chunks(n, nt, [&](int64_t lo, int64_t hi) {
        if (!quantize_i8_loop(x, lo, hi, s, qmin, qmax, out)) ok.store(false);
    });
    return ok.load();
}

// what codes_loop emits: the code, or a table's value at the code (plain structs, not
// lambdas capturing the pointers by reference, so that the loops vectorize)
struct CodeOut {
    int64_t* __restrict out;
    void operator()(int64_t i, int64_t c) const { out[i] = c; }
};
struct TableOut {
    const float* __restrict table;
    float* __restrict out;
    void operator()(int64_t i, int32_t c) const { out[i] = table[c]; }
};

// codes (table null) or table[code] of n values of dtype 0..6 into out (int64 / float)
template <typename T>
bool codes_all(const T* x, int64_t n, int64_t lo, int64_t hi, int64_t mask,
               const float* __restrict table, void* out, int nt) {
    std::atomic<bool> ok{true};
    chunks(n, nt, [&](int64_t i0, int64_t i1) {
        bool fine;
        if (table)     // (a table has at most 2^16 codes: int32 ones)
            fine = codes_loop<int32_t>(x, i0, i1, lo, hi, mask, TableOut{table,
                                       static_cast<float*>(out)});
        else
            fine = codes_loop<int64_t>(x, i0, i1, lo, hi, mask,
                                       CodeOut{static_cast<int64_t*>(out)});
        if (!fine) ok.store(false);
    });
    return ok.load();
}

template <typename A, typename T>
void dequantize_all(const A* acc, int64_t rows, int64_t n, const T* s, int64_t s_step,
                    const T* b, T* out, int nt) {
    chunks(rows, nt, [&](int64_t r0, int64_t r1) {
        dequantize_rows(acc, r0, r1, n, s, s_step, b, out);
    });
}

}  // namespace

extern "C" {

// Quantize n contiguous values of dtype 0 (float32) / 1 (float64) into out (same dtype).
// Returns 0, or 3 for an unsupported dtype.
int32_t axsa_quantize(const void* x, int32_t dtype, int64_t n, double scale, double qmin,
                      double qmax, void* out, int32_t threads) {
    const int nt = elementwise_threads(n, threads);
    if (dtype == 0) {
        quantize_all(static_cast<const float*>(x), n, float(scale), float(qmin), float(qmax),
                     static_cast<float*>(out), nt);
    } else if (dtype == 1) {
        quantize_all(static_cast<const double*>(x), n, scale, qmin, qmax,
                     static_cast<double*>(out), nt);
    } else {
        return 3;
    }
    return 0;
}

// The same as int8 values (qmin, qmax within -128..127) into out (n int8).
// Returns 0, 1 when some value is NaN (out is then incomplete), 3 for a bad dtype.
int32_t axsa_quantize_i8(const void* x, int32_t dtype, int64_t n, double scale, double qmin,
                         double qmax, int8_t* out, int32_t threads) {
    const int nt = elementwise_threads(n, threads);
    if (dtype == 0)
        return quantize_i8_all(static_cast<const float*>(x), n, float(scale), float(qmin),
                               float(qmax), out, nt) ? 0 : 1;
    if (dtype == 1)
        return quantize_i8_all(static_cast<const double*>(x), n, scale, qmin, qmax, out, nt)
                   ? 0 : 1;
    return 3;
}

// Codes (low `width` bits) of n values of dtype 0..6 (AxsaOperand's codes) into out
// (int64), or with `table` (2^width floats) table[code] into out (float32).
// Returns 0, 1 when some value is outside lo..hi or not an integer, 3 for a bad dtype.
int32_t axsa_codes(const void* x, int32_t dtype, int64_t n, int64_t lo, int64_t hi,
                   int32_t width, const float* table, void* out, int32_t threads) {
    const int nt = elementwise_threads(n, threads);
    const int64_t mask = width >= 63 ? -1 : (int64_t(1) << width) - 1;
    bool ok;
    switch (dtype) {
    case 0: ok = codes_all(static_cast<const float*>(x), n, lo, hi, mask, table, out, nt); break;
    case 1: ok = codes_all(static_cast<const double*>(x), n, lo, hi, mask, table, out, nt); break;
    case 2: ok = codes_all(static_cast<const int64_t*>(x), n, lo, hi, mask, table, out, nt); break;
    case 3: ok = codes_all(static_cast<const int32_t*>(x), n, lo, hi, mask, table, out, nt); break;
    case 4: ok = codes_all(static_cast<const int16_t*>(x), n, lo, hi, mask, table, out, nt); break;
    case 5: ok = codes_all(static_cast<const int8_t*>(x), n, lo, hi, mask, table, out, nt); break;
    case 6: ok = codes_all(static_cast<const uint8_t*>(x), n, lo, hi, mask, table, out, nt); break;
    default: return 3;
    }
    return ok ? 0 : 1;
}

// Dequantize (rows, n) contiguous accumulators of dtype 0 / 1 / 2 (float32, float64,
// int64) into out of dtype 0 / 1, times s (n values, or one when s_step is 0), plus b
// (n values, or null). Returns 0, or 3 for an unsupported dtype pair.
int32_t axsa_dequantize(const void* acc, int32_t acc_dtype, int64_t rows, int64_t n,
                        const void* s, int64_t s_step, const void* b, int32_t dtype,
                        void* out, int32_t threads) {
    const int nt = elementwise_threads(rows * n, threads);
    if (dtype == 0) {
        const float *fs = static_cast<const float*>(s), *fb = static_cast<const float*>(b);
        float* fo = static_cast<float*>(out);
        if (acc_dtype == 0)
            dequantize_all(static_cast<const float*>(acc), rows, n, fs, s_step, fb, fo, nt);
        else if (acc_dtype == 2)
            dequantize_all(static_cast<const int64_t*>(acc), rows, n, fs, s_step, fb, fo, nt);
        else
            return 3;
    } else if (dtype == 1) {
        const double *ds = static_cast<const double*>(s), *db = static_cast<const double*>(b);
        double* dout = static_cast<double*>(out);
        if (acc_dtype == 1)
            dequantize_all(static_cast<const double*>(acc), rows, n, ds, s_step, db, dout, nt);
        else if (acc_dtype == 2)
            dequantize_all(static_cast<const int64_t*>(acc), rows, n, ds, s_step, db, dout,
                            nt);
        else
            return 3;
    } else {
        return 3;
    }
    return 0;
}

// 1 when the kernels were built with OpenMP (they thread), else 0.
int32_t axsa_approx_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

}  // extern "C"
