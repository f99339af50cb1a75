// Direct sparse convolution for CPU inference (float32, AVX2 + FMA, OpenMP).
//
// Activations are in "CHWN" layout: channel, row, column, batch (batch innermost), so
// that for a stride-1 convolution one output row of (Wo x N) values reads, for each
// non-zero weight, one contiguous run of the input (shifted by the tap's offset).
// The weight is CSR over output channels; each non-zero carries its input pixel
// offset (ci*H*W + dh*W + dw, in pixels) and its tap shift (dh, dw). An output tile
// (up to 64 consecutive values of one output row) lives in AVX registers while the
// non-zeros of one output channel are streamed over it: im2col is never built, and
// each multiply-add is one load + one FMA. Out-of-image taps (zero padding) are
// skipped per tile, or masked per lane at the image border. Strided convolutions are
// rewritten to stride 1 by the caller (polyphase split of the input).
//
// Built by fggp_hub/inference/native.py with g++ and loaded with ctypes; the OpenMP
// runtime is the one torch already loaded (same soname), so both share one pool.
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>
#include <algorithm>

namespace {

constexpr int kMaxVec = 8;  // 64 floats per tile: 8 accumulators, registers to spare for loads

struct Conv {
  const float* x;
  int H, W, N;     // input rows, columns, batch
  int Ho, Wo, Co;  // output rows, columns, channels
  int T;           // taps (distinct (dh, dw) shifts)
  int NB;          // input-channel blocks (cache blocking): block b's non-zeros of all channels come before b+1's
  int64_t bstride;     // seg entries per block (all output channels of the layer: Co_total * T)
  const int32_t* seg;  // (NB * Co * T + 1): non-zeros of block b, output channel co and tap t are
                       // seg[b*bstride + co*T + t] .. seg[b*bstride + co*T + t + 1]
  const int32_t* dh;   // (T,) row shift of each tap
  const int32_t* dw;   // (T,) column shift of each tap
  const int32_t* ci;   // (nnz,) input channel of each non-zero
  const float* val;    // (nnz,)
  const float* bias;
  int64_t xcs, ocs, rcs;  // channel strides (floats) of x, out and res: >= H*W*N, padded so that channels
                          // do not all fall into the same cache sets (a plane of 64 KiB would alias)
  const float* res;  // optional residual (Co, Ho, Wo, N), added before the ReLU; null: none
  float* out;
  int relu;  // flags: bit 0 ReLU, bit 1 non-temporal stores of the output (see tile())
  // Optional (nnz,): each non-zero's input offset (floats) from its output element, ci * xcs + dh * W * N
  // + dw * N. Tiles where every tap is inside the image run one branch-free loop over an output channel's
  // non-zeros of a block with these, instead of the per-tap loop (its bounds checks and short trip counts).
  const int32_t* xoff;
  int dh_min, dh_max, dw_min, dw_max;  // the taps' shift ranges (interior test)
};

static inline __m256i lane_mask(int lo, int hi) {
  // lanes i with lo <= i < hi
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i ge = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(lo - 1));
  __m256i lt = _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), idx);
  return _mm256_and_si256(ge, lt);
}

// One tile: output row oh, elements [e0, e1) of the row (e1 - e0 <= NV * 8), all channels.
// Non-zeros are grouped by tap, so a tap's validity (image border) is decided once per
// group and the inner loop is branch-free: one index load, NV loads and NV FMAs.
template <int NV>
static void tile(const Conv& c, int oh, int e0, int e1) {
  const int64_t N = c.N;
  const int64_t row_len = (int64_t)c.Wo * N;
  const int64_t plane = c.xcs;  // floats between input channels
  const bool full_tile = (e1 - e0) == NV * 8;
  const int T = c.T;
  const int nz = e1 - e0;
  // every tap of every non-zero reads inside the image for the whole tile: the flat loop applies
  const bool interior = c.xoff != nullptr && full_tile && oh + c.dh_min >= 0 && oh + c.dh_max < c.H &&
                        e0 >= (int64_t)std::max(0, -c.dw_min) * N && e1 <= (int64_t)std::min(c.Wo, c.W - c.dw_max) * N;
  const float* tile_base = c.x + (int64_t)oh * c.W * N + e0;
  for (int blk = 0; blk < c.NB; ++blk) {
  const bool first = blk == 0, last = blk == c.NB - 1;
  for (int co = 0; co < c.Co; ++co) {
    __m256 acc[NV];
    float* o = c.out + (int64_t)co * c.ocs + (int64_t)oh * row_len + e0;
    if (first) {
      const __m256 b = _mm256_set1_ps(c.bias ? c.bias[co] : 0.0f);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[v] = b;
    } else if (full_tile) {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[v] = _mm256_loadu_ps(o + 8 * v);
    } else {
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[v] = _mm256_maskload_ps(o + 8 * v, lane_mask(0, nz - 8 * v));
    }
    const int32_t* seg = c.seg + blk * c.bstride + (int64_t)co * T;
    if (interior) {
      const int j1 = seg[T];
      for (int j = seg[0]; j < j1; ++j) {
        const float* p = tile_base + c.xoff[j];
        const __m256 w = _mm256_set1_ps(c.val[j]);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p + 8 * v), acc[v]);
      }
    } else
    for (int t = 0; t < T; ++t) {
      const int j0 = seg[t], j1 = seg[t + 1];
      if (j0 == j1) continue;
      const int r = oh + c.dh[t];
      if ((unsigned)r >= (unsigned)c.H) continue;
      const int d = c.dw[t];
      // valid output columns: 0 <= ow + d < W and ow < Wo
      const int64_t lo = std::max<int64_t>(e0, (int64_t)std::max(0, -d) * N);
      const int64_t hi = std::min<int64_t>(e1, (int64_t)std::min(c.Wo, c.W - d) * N);
      if (lo >= hi) continue;
      // base[k + ci * plane] feeds output element e0 + k
      const float* base = c.x + ((int64_t)r * c.W + d) * N + e0;
      if (full_tile && lo == e0 && hi == e1) {
        for (int j = j0; j < j1; ++j) {
          const float* p = base + (int64_t)c.ci[j] * plane;
          const __m256 w = _mm256_set1_ps(c.val[j]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p + 8 * v), acc[v]);
        }
      } else {
        const int a = (int)(lo - e0), z = (int)(hi - e0);
        __m256i m[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) m[v] = lane_mask(a - 8 * v, z - 8 * v);
        for (int j = j0; j < j1; ++j) {
          const float* p = base + (int64_t)c.ci[j] * plane;
          const __m256 w = _mm256_set1_ps(c.val[j]);
#pragma GCC unroll 8
          for (int v = 0; v < NV; ++v) acc[v] = _mm256_fmadd_ps(w, _mm256_maskload_ps(p + 8 * v, m[v]), acc[v]);
        }
      }
    }
    const __m256 zero = _mm256_setzero_ps();
    const bool relu = last && (c.relu & 1);
    // bit 1 of relu: non-temporal stores of the last block (outputs far larger than the caches: no
    // read-for-ownership of lines the next layer will fetch from memory anyway); 32-byte aligned tiles only
    const bool stream = last && (c.relu & 2) && full_tile && ((reinterpret_cast<uintptr_t>(o) & 31) == 0);
    if (last && c.res) {  // fused residual add (ResNet blocks): out = relu(conv + bias + res)
      const float* r = c.res + (int64_t)co * c.rcs + (int64_t)oh * row_len + e0;
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) {
        if (full_tile) {
          acc[v] = _mm256_add_ps(acc[v], _mm256_loadu_ps(r + 8 * v));
        } else if (8 * v < nz) {
          acc[v] = _mm256_add_ps(acc[v], _mm256_maskload_ps(r + 8 * v, lane_mask(0, nz - 8 * v)));
        }
      }
    }
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) {
      __m256 y = relu ? _mm256_max_ps(acc[v], zero) : acc[v];
      if (full_tile) {
        if (stream) {
          _mm256_stream_ps(o + 8 * v, y);
        } else {
          _mm256_storeu_ps(o + 8 * v, y);
        }
      } else {
        if (8 * v >= nz) break;
        _mm256_maskstore_ps(o + 8 * v, lane_mask(0, nz - 8 * v), y);
      }
    }
  }
  }
}

typedef void (*TileFn)(const Conv&, int, int, int);
static const TileFn kTiles[kMaxVec + 1] = {nullptr,  tile<1>, tile<2>, tile<3>, tile<4>,
                                            tile<5>, tile<6>, tile<7>, tile<8>};

// 8 x 8 transpose: dst row i, column j = src row j, column i (row strides ss, ds in floats).
static inline void transpose8x8(const float* src, int64_t ss, float* dst, int64_t ds) {
  const __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ss), r2 = _mm256_loadu_ps(src + 2 * ss),
               r3 = _mm256_loadu_ps(src + 3 * ss), r4 = _mm256_loadu_ps(src + 4 * ss), r5 = _mm256_loadu_ps(src + 5 * ss),
               r6 = _mm256_loadu_ps(src + 6 * ss), r7 = _mm256_loadu_ps(src + 7 * ss);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
               t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
               t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
               s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)),
               s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2)),
               s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(s0, s4, 0x20));
  _mm256_storeu_ps(dst + ds, _mm256_permute2f128_ps(s1, s5, 0x20));
  _mm256_storeu_ps(dst + 2 * ds, _mm256_permute2f128_ps(s2, s6, 0x20));
  _mm256_storeu_ps(dst + 3 * ds, _mm256_permute2f128_ps(s3, s7, 0x20));
  _mm256_storeu_ps(dst + 4 * ds, _mm256_permute2f128_ps(s0, s4, 0x31));
  _mm256_storeu_ps(dst + 5 * ds, _mm256_permute2f128_ps(s1, s5, 0x31));
  _mm256_storeu_ps(dst + 6 * ds, _mm256_permute2f128_ps(s2, s6, 0x31));
  _mm256_storeu_ps(dst + 7 * ds, _mm256_permute2f128_ps(s3, s7, 0x31));
}

// dst (P x R, row stride ds) = transpose of src (R x P, row stride ss): 8 x 8 blocks, scalar edges.
static void transpose_plane(const float* src, int64_t ss, int R, int P, float* dst, int64_t ds) {
  const int R8 = R & ~7, P8 = P & ~7;
  for (int p0 = 0; p0 < P8; p0 += 8) {
    for (int r0 = 0; r0 < R8; r0 += 8) transpose8x8(src + (int64_t)r0 * ss + p0, ss, dst + (int64_t)p0 * ds + r0, ds);
    for (int r = R8; r < R; ++r)
      for (int p = p0; p < p0 + 8; ++p) dst[(int64_t)p * ds + r] = src[(int64_t)r * ss + p];
  }
  for (int p = P8; p < P; ++p)
    for (int r = 0; r < R; ++r) dst[(int64_t)p * ds + r] = src[(int64_t)r * ss + p];
}

}  // namespace

extern "C" {

// Layout changes between NCHW and the kernel's CHWN, one (N x H*W) <-> (H*W x N) transpose per channel
// in 8 x 8 AVX blocks: torch's strided copy of the permuted view moved 64 MiB in ~40 ms on the 2-core
// benchmark machine, this in a few ms.
// x (N, C, HW) with batch stride xns and channel stride xcs (planes dense) -> out (C, HW, N), channel stride ocs.
void fggp_nchw_to_chwn_f32(const float* x, int N, int C, int HW, int64_t xns, int64_t xcs, float* out, int64_t ocs,
                           int nthreads) {
  const int PB = 256;  // pixels per task: 8 KiB of output per batch-8 block stays in L1
  const int64_t pblocks = (HW + PB - 1) / PB;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t t = 0; t < (int64_t)C * pblocks; ++t) {
    const int64_t c = t / pblocks;
    const int p0 = (int)(t % pblocks) * PB, p1 = std::min(HW, p0 + PB);
    transpose_plane(x + c * xcs + p0, xns, N, p1 - p0, out + c * ocs + (int64_t)p0 * N, N);
  }
}

// x (C, HW, N) with channel stride xcs -> out (N, C, HW) with batch stride ons and channel stride ocs.
void fggp_chwn_to_nchw_f32(const float* x, int N, int C, int HW, int64_t xcs, float* out, int64_t ons, int64_t ocs,
                           int nthreads) {
  const int PB = 256;
  const int64_t pblocks = (HW + PB - 1) / PB;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t t = 0; t < (int64_t)C * pblocks; ++t) {
    const int64_t c = t / pblocks;
    const int p0 = (int)(t % pblocks) * PB, p1 = std::min(HW, p0 + PB);
    transpose_plane(x + c * xcs + (int64_t)p0 * N, N, p1 - p0, N, out + c * ocs + p0, ons);
  }
}

// Polyphase split of a CHWN input for a strided convolution (the caller's stride-1 rewrite): output channel
// c * P + i is phase i (row offset ph[i], column offset pw[i]) of input channel c, out[c*P+i][q][r][:] =
// x[c][q*sh + ph[i]][r*sw + pw[i]][:], zeros past the input's edge. x (C, H, W, N) has channel stride xcs, out
// (C*P, Hp, Wp, N) channel stride ocs. One memcpy of N floats per output pixel (torch's strided copy of the
// same views was 3-10x slower on the 2-core machine).
void fggp_polyphase_chwn_f32(const float* x, int C, int H, int W, int N, int64_t xcs, int sh, int sw,
                             const int32_t* ph, const int32_t* pw, int P, int Hp, int Wp, float* out, int64_t ocs,
                             int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t t = 0; t < (int64_t)C * P * Hp; ++t) {
    const int q = (int)(t % Hp);
    const int64_t ch = t / Hp;  // output channel c * P + i
    const int64_t c = ch / P;
    const int i = (int)(ch % P);
    float* o = out + ch * ocs + (int64_t)q * Wp * N;
    const int row = q * sh + ph[i];
    for (int r = 0; r < Wp; ++r) {
      const int col = r * sw + pw[i];
      if (row < H && col < W) {
        memcpy(o + (int64_t)r * N, x + c * xcs + ((int64_t)row * W + col) * N, sizeof(float) * N);
      } else {
        memset(o + (int64_t)r * N, 0, sizeof(float) * N);
      }
    }
  }
}

// out (NC, Ho, Wo) = max-pool(x (NC, H, W)), contiguous NCHW planes, kernel kh x kw, stride sh x sw, no padding.
// torch's NCHW max-pool took ~15 ms for a 64 x 64 x 32 x 32 batch on the 2-core machine (channels-last: 1 ms).
void fggp_maxpool_nchw_f32(const float* x, int NC, int H, int W, int kh, int kw, int sh, int sw, int Ho, int Wo,
                           float* out, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t t = 0; t < (int64_t)NC * Ho; ++t) {
    const int64_t plane = t / Ho;
    const int oh = (int)(t % Ho);
    const float* src = x + plane * H * W + (int64_t)oh * sh * W;
    float* o = out + plane * Ho * Wo + (int64_t)oh * Wo;
    if (kh == 2 && kw == 2 && sh == 2 && sw == 2) {
      const float* a = src;
      const float* b = src + W;
      for (int ow = 0; ow < Wo; ++ow)
        o[ow] = std::max(std::max(a[2 * ow], a[2 * ow + 1]), std::max(b[2 * ow], b[2 * ow + 1]));
      continue;
    }
    for (int ow = 0; ow < Wo; ++ow) {
      float m = src[(int64_t)ow * sw];
      for (int i = 0; i < kh; ++i)
        for (int k = 0; k < kw; ++k) m = std::max(m, src[(int64_t)i * W + (int64_t)ow * sw + k]);
      o[ow] = m;
    }
  }
}

int fggp_sparse_abi_version() { return 13; }

}  // extern "C"

namespace {

// ---------------------------------------------------------------- Winograd F(4x4, 3x3), dense weights
// For the layers pruned too little for the direct kernel to win (the zoo's FGGP VGG-19 masks keep the
// first eight convolutions 13-72 % dense): Y = A^T [U . V] A per 4 x 4 output tile, with U = G g G^T
// (the transformed weight, 36 x Co x Ci, made once by the caller) and V = B^T d B (36 x Ci per 6 x 6 input patch). The
// 36 (Co x Ci) @ (Ci x tiles) products are one torch.bmm between the two transforms below; 4 x fewer
// multiply-adds than F.conv2d's direct 3 x 3. Matrices of Lavin & Gray (2016), interpolation points
// 0, +-1, +-2: fp32 error about 1e-6 of the output's scale.
// A tile row range [th0, th1) at a time, so that V and M of one chunk stay in cache: the tiles' flat index
// p = ((th - th0) * TW + tw) * N + n, V[a][c][p] at V + (a * C + c) * P + p (P = (th1 - th0) * TW * N).

template <bool kMasked>
static inline __m256 load8(const float* p, __m256i m) {
  return kMasked ? _mm256_maskload_ps(p, m) : _mm256_loadu_ps(p);
}
template <bool kMasked>
static inline void store8(float* p, __m256i m, __m256 v) {
  if (kMasked) {
    _mm256_maskstore_ps(p, m, v);
  } else {
    _mm256_storeu_ps(p, v);
  }
}

// B^T applied to 6 values (a column or a row of the patch)
static inline void bt6(const __m256 d[6], __m256 t[6]) {
  const __m256 four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f), two = _mm256_set1_ps(2.0f);
  t[0] = _mm256_add_ps(_mm256_fnmadd_ps(five, d[2], _mm256_mul_ps(four, d[0])), d[4]);
  const __m256 a = _mm256_fnmadd_ps(four, d[2], d[4]), b = _mm256_fnmadd_ps(four, d[1], d[3]);  // d4-4d2, d3-4d1
  t[1] = _mm256_add_ps(a, b);
  t[2] = _mm256_sub_ps(a, b);
  const __m256 c = _mm256_sub_ps(d[4], d[2]), e = _mm256_mul_ps(two, _mm256_sub_ps(d[3], d[1]));  // d4-d2, 2(d3-d1)
  t[3] = _mm256_add_ps(c, e);
  t[4] = _mm256_sub_ps(c, e);
  t[5] = _mm256_add_ps(_mm256_fnmadd_ps(five, d[3], _mm256_mul_ps(four, d[1])), d[5]);
}

// A^T applied to 6 values: 4 outputs
static inline void at6(const __m256 m[6], __m256 y[4]) {
  const __m256 two = _mm256_set1_ps(2.0f), four = _mm256_set1_ps(4.0f), eight = _mm256_set1_ps(8.0f);
  const __m256 s12 = _mm256_add_ps(m[1], m[2]), d12 = _mm256_sub_ps(m[1], m[2]);
  const __m256 s34 = _mm256_add_ps(m[3], m[4]), d34 = _mm256_sub_ps(m[3], m[4]);
  y[0] = _mm256_add_ps(_mm256_add_ps(m[0], s12), s34);
  y[1] = _mm256_fmadd_ps(two, d34, d12);
  y[2] = _mm256_fmadd_ps(four, s34, s12);
  y[3] = _mm256_add_ps(_mm256_fmadd_ps(eight, d34, d12), m[5]);
}

template <bool kMasked>
static void wino_input_tile(const float* xc, int H, int W, int N, int r0, int c0, int n0, __m256i mask, float* v,
                            int64_t astride) {
  __m256 d[6][6];
  const __m256 zero = _mm256_setzero_ps();
  for (int i = 0; i < 6; ++i) {
    const int r = r0 + i;
    for (int j = 0; j < 6; ++j) {
      const int c = c0 + j;
      d[i][j] = ((unsigned)r < (unsigned)H && (unsigned)c < (unsigned)W)
                    ? load8<kMasked>(xc + ((int64_t)r * W + c) * N + n0, mask)
                    : zero;
    }
  }
  __m256 t[6][6];  // t[i][j] = (B^T d)[i][j]
  for (int j = 0; j < 6; ++j) {
    __m256 col[6], out[6];
    for (int i = 0; i < 6; ++i) col[i] = d[i][j];
    bt6(col, out);
    for (int i = 0; i < 6; ++i) t[i][j] = out[i];
  }
  for (int i = 0; i < 6; ++i) {
    __m256 out[6];
    bt6(t[i], out);
    for (int j = 0; j < 6; ++j) store8<kMasked>(v + (int64_t)(i * 6 + j) * astride, mask, out[j]);
  }
}

template <bool kMasked>
static void wino_output_tile(const float* m, int64_t astride, float bias, const float* rc, float* oc, int Ho, int Wo,
                             int N, int r0, int c0, int n0, __m256i mask, bool relu) {
  __m256 t[4][6];  // (A^T M)[i][j]
  for (int j = 0; j < 6; ++j) {
    __m256 col[6], out[4];
    for (int i = 0; i < 6; ++i) col[i] = load8<kMasked>(m + (int64_t)(i * 6 + j) * astride, mask);  // no read past M
    at6(col, out);
    for (int i = 0; i < 4; ++i) t[i][j] = out[i];
  }
  const __m256 b = _mm256_set1_ps(bias), zero = _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    const int r = r0 + i;
    if (r >= Ho) break;
    __m256 y[4];
    at6(t[i], y);
    for (int j = 0; j < 4; ++j) {
      const int c = c0 + j;
      if (c >= Wo) break;
      const int64_t off = ((int64_t)r * Wo + c) * N + n0;
      __m256 val = _mm256_add_ps(y[j], b);
      if (rc) val = _mm256_add_ps(val, load8<kMasked>(rc + off, mask));
      if (relu) val = _mm256_max_ps(val, zero);
      store8<kMasked>(oc + off, mask, val);
    }
  }
}

// Calls f(channel, tile row in the chunk, tile column, first batch lane) for every 8-lane vector of the tiles
// of tile rows [0, rows), channels split over the threads: the loop both transforms share.
template <typename F>
void for_each_tile_vector(int64_t channels, int rows, int TW, int N, int nthreads, F f) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t task = 0; task < channels * rows; ++task) {
    for (int tw = 0; tw < TW; ++tw) {
      for (int n0 = 0; n0 < N; n0 += 8) f(task / rows, (int)(task % rows), tw, n0);
    }
  }
}

}  // namespace

extern "C" {

// V (36, C, P) = B^T d B of every 6 x 6 patch of x (C, H, W, N; channel stride xcs) for output tile rows
// [th0, th1) of a 3 x 3, stride-1 convolution with padding (pad_h, pad_w); TW tiles per row.
void fggp_winograd_input_f32(const float* x, int C, int H, int W, int N, int64_t xcs, int pad_h, int pad_w, int TW,
                             int th0, int th1, float* v, int nthreads) {
  const int rows = th1 - th0;
  const int64_t P = (int64_t)rows * TW * N;
  for_each_tile_vector(C, rows, TW, N, nthreads, [&](int64_t c, int tr, int tw, int n0) {
    const float* xc = x + c * xcs;
    const int r0 = 4 * (th0 + tr) - pad_h, c0 = 4 * tw - pad_w;
    float* vp = v + c * P + ((int64_t)tr * TW + tw) * N + n0;
    if (n0 + 8 > N) {  // the batch's last, partial vector: masked lanes
      wino_input_tile<true>(xc, H, W, N, r0, c0, n0, lane_mask(0, N - n0), vp, (int64_t)C * P);
    } else {
      wino_input_tile<false>(xc, H, W, N, r0, c0, n0, __m256i(), vp, (int64_t)C * P);
    }
  });
}

// out rows of tile rows [th0, th1) (Co, Ho, Wo, N; channel stride ocs) = relu?(A^T M A + bias + res) from
// M (36, Co, P); bias and res (Co, Ho, Wo, N; channel stride rcs) may be null.
void fggp_winograd_output_f32(const float* m, int Co, int Ho, int Wo, int N, int TW, int th0, int th1,
                              const float* bias, const float* res, int64_t rcs, float* out, int64_t ocs, int relu,
                              int nthreads) {
  const int rows = th1 - th0;
  const int64_t P = (int64_t)rows * TW * N;
  for_each_tile_vector(Co, rows, TW, N, nthreads, [&](int64_t co, int tr, int tw, int n0) {
    const float b = bias ? bias[co] : 0.0f;
    const float* rc = res ? res + co * rcs : nullptr;
    const float* mp = m + co * P + ((int64_t)tr * TW + tw) * N + n0;
    const int r0 = 4 * (th0 + tr), c0 = 4 * tw;
    if (n0 + 8 > N) {
      wino_output_tile<true>(mp, (int64_t)Co * P, b, rc, out + co * ocs, Ho, Wo, N, r0, c0, n0,
                             lane_mask(0, N - n0), relu != 0);
    } else {
      wino_output_tile<false>(mp, (int64_t)Co * P, b, rc, out + co * ocs, Ho, Wo, N, r0, c0, n0, __m256i(),
                              relu != 0);
    }
  });
}

// out (Co, Ho, Wo, N) = relu?(conv(x (C, H, W, N)) + bias + res) for stride 1; see the file comment.
// res (same shape as out) and bias may be null; xcs, ocs, rcs: channel strides of x, out and res; xoff (may be
// null): per non-zero input offsets for interior tiles (see Conv::xoff), computed for this xcs, W and N.
void fggp_sparse_conv_chwn_f32(const float* x, int H, int W, int N, int Ho, int Wo, int Co, int T, int NB,
                               const int32_t* seg, const int32_t* dh, const int32_t* dw, const int32_t* ci,
                               const float* val, const float* bias, const float* res, float* out, int relu,
                               int64_t xcs, int64_t ocs, int64_t rcs, const int32_t* xoff, int nthreads) {
  Conv c{x, H, W, N, Ho, Wo, Co, T, NB, (int64_t)Co * T, seg, dh, dw, ci, val, bias, xcs, ocs, rcs, res, out, relu,
         xoff, 0, 0, 0, 0};
  for (int t = 0; t < T; ++t) {
    c.dh_min = std::min(c.dh_min, dh[t]), c.dh_max = std::max(c.dh_max, dh[t]);
    c.dw_min = std::min(c.dw_min, dw[t]), c.dw_max = std::max(c.dw_max, dw[t]);
  }
  const int64_t row_len = (int64_t)Wo * N;
  const int64_t tile_len = kMaxVec * 8;
  const int64_t tiles_per_row = (row_len + tile_len - 1) / tile_len;
  const int64_t ntasks = tiles_per_row * Ho;
  // Few big tasks (batch 1, small maps): split the channels instead so both cores work.
  const int64_t co_split = (ntasks >= 4 * nthreads || Co < 16) ? 1 : std::min<int64_t>(4 * nthreads, Co / 8);
  const int64_t chunk = (Co + co_split - 1) / co_split;
  // static: each thread takes one run of neighbouring tiles, which share most of their input
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t t = 0; t < ntasks * co_split; ++t) {
    const int64_t task = t / co_split, part = t % co_split;
    const int oh = (int)(task / tiles_per_row);
    const int64_t e0 = (task % tiles_per_row) * tile_len;
    const int64_t e1 = std::min(row_len, e0 + tile_len);
    const int nv = (int)((e1 - e0 + 7) / 8);
    Conv cc = c;
    const int co0 = (int)std::min<int64_t>(Co, part * chunk), co1 = (int)std::min<int64_t>(Co, co0 + chunk);
    if (co0 >= co1) continue;
    cc.seg = c.seg + (int64_t)co0 * c.T;
    cc.Co = co1 - co0;
    cc.bias = c.bias ? c.bias + co0 : nullptr;
    cc.out = c.out + (int64_t)co0 * ocs;
    cc.res = c.res ? c.res + (int64_t)co0 * rcs : nullptr;
    kTiles[nv](cc, oh, (int)e0, (int)e1);
    if (relu & 2) _mm_sfence();  // this task's streaming stores are visible before the next layer reads them
  }
}

// out (C, Ho, Wo, N) = max-pool(x (C, H, W, N)), kernel kh x kw, stride sh x sw, no padding;
// xcs, ocs: channel strides of x and out.
void fggp_maxpool_chwn_f32(const float* x, int C, int H, int W, int N, int kh, int kw, int sh, int sw,
                           int Ho, int Wo, float* out, int64_t xcs, int64_t ocs, int nthreads) {
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t t = 0; t < (int64_t)C * Ho; ++t) {
    const int64_t ch = t / Ho;
    const int oh = (int)(t % Ho);
    for (int ow = 0; ow < Wo; ++ow) {
      float* o = out + ch * ocs + ((int64_t)oh * Wo + ow) * N;
      for (int i = 0; i < kh; ++i) {
        for (int k = 0; k < kw; ++k) {
          const float* p = x + ch * xcs + (((int64_t)oh * sh + i) * W + (int64_t)ow * sw + k) * N;
          if (i == 0 && k == 0) {
            memcpy(o, p, sizeof(float) * N);
          } else {
            for (int n = 0; n < N; ++n) o[n] = std::max(o[n], p[n]);
          }
        }
      }
    }
  }
}

}  // extern "C"

namespace {

// ---------------------------------------------------------------- dense 1x1 GEMM, packed weights
// For the 1x1 convolutions pruning leaves too dense for the direct kernel (random-init global magnitude keeps
// ResNet-50's reducing 1x1s 30-60 % dense): out (Co, P) = W (Co, Ci) @ x (Ci, P) over the P = H*W*N pixels of
// a CHWN activation, BLIS-style. The weight is packed once by the caller into 6-row panels (ceil(Co/6), Ci, 6),
// zero rows past Co; per task (a block of kGemmBlockPx pixels, a run of panels) and per block of <= 512 input
// channels, the input block is copied into 16-pixel strips (contiguous, so no cache-set or TLB misses from
// the channel stride) and every panel runs the 6 x 16 micro-kernel on each strip: 12 accumulators, per input
// channel 2 loads, 6 broadcasts and 12 FMAs. On the 2-core AMD benchmark machine it ran ResNet-50's 1x1
// shapes at batch 64 at 50-90 GMAC/s where F.conv2d (oneDNN) on the same CHWN buffer ran 10-69.

constexpr int kGemmRows = 6;            // output channels per panel
constexpr int kGemmStrip = 16;          // pixels per micro-kernel call (2 vectors)
constexpr int kGemmBlockPx = 128;       // pixels per task: a packed input block of <= 512 x 128 floats is 256 KiB (L2)
constexpr int kGemmMaxDepth = 512;      // input channels per packed block
constexpr int kGemmPackAhead = 4;       // input rows prefetched ahead while packing

// C (R rows of out, 16 pixels) = [C +] A (kc x 6, packed) . B (kc x 16, packed strip), then on the last input
// block bias, residual and ReLU (flags bit 0), with non-temporal stores if flags bit 1 (the output does not stay
// in cache anyway: no read-for-ownership). All 6 rows are computed (the packed rows past Co are zeros); R stored.
template <int R, bool kMasked>
static void gemm_micro(int kc, const float* a, const float* b, float* c, int64_t ocs, bool first, bool last,
                       const float* bias, const float* res, int64_t rcs, int flags, __m256i m0, __m256i m1) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  // named accumulators, not an array: GCC spilled an array's 12 vectors to the stack on every iteration
  for (int k = 0; k < kc; ++k, a += kGemmRows, b += kGemmStrip) {
    const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
    __m256 w = _mm256_broadcast_ss(a);
    c00 = _mm256_fmadd_ps(w, b0, c00), c01 = _mm256_fmadd_ps(w, b1, c01);
    w = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(w, b0, c10), c11 = _mm256_fmadd_ps(w, b1, c11);
    w = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(w, b0, c20), c21 = _mm256_fmadd_ps(w, b1, c21);
    w = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(w, b0, c30), c31 = _mm256_fmadd_ps(w, b1, c31);
    w = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(w, b0, c40), c41 = _mm256_fmadd_ps(w, b1, c41);
    w = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(w, b0, c50), c51 = _mm256_fmadd_ps(w, b1, c51);
  }
  const __m256 acc[kGemmRows][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int r = 0; r < R; ++r) {
    float* o = c + r * ocs;
    __m256 y0 = acc[r][0], y1 = acc[r][1];
    if (!first) y0 = _mm256_add_ps(y0, load8<kMasked>(o, m0)), y1 = _mm256_add_ps(y1, load8<kMasked>(o + 8, m1));
    if (last) {
      if (bias) {
        const __m256 bb = _mm256_set1_ps(bias[r]);
        y0 = _mm256_add_ps(y0, bb), y1 = _mm256_add_ps(y1, bb);
      }
      if (res) {
        const float* q = res + r * rcs;
        y0 = _mm256_add_ps(y0, load8<kMasked>(q, m0)), y1 = _mm256_add_ps(y1, load8<kMasked>(q + 8, m1));
      }
      if (flags & 1) y0 = _mm256_max_ps(y0, _mm256_setzero_ps()), y1 = _mm256_max_ps(y1, _mm256_setzero_ps());
      if (!kMasked && (flags & 2) && (reinterpret_cast<uintptr_t>(o) & 31) == 0) {
        _mm256_stream_ps(o, y0);
        _mm256_stream_ps(o + 8, y1);
        continue;
      }
    }
    store8<kMasked>(o, m0, y0);
    store8<kMasked>(o + 8, m1, y1);
  }
}

using GemmMicro = void (*)(int, const float*, const float*, float*, int64_t, bool, bool, const float*,
                           const float*, int64_t, int, __m256i, __m256i);
static const GemmMicro kGemmMicro[2][kGemmRows + 1] = {
    {nullptr, gemm_micro<1, false>, gemm_micro<2, false>, gemm_micro<3, false>, gemm_micro<4, false>,
     gemm_micro<5, false>, gemm_micro<6, false>},
    {nullptr, gemm_micro<1, true>, gemm_micro<2, true>, gemm_micro<3, true>, gemm_micro<4, true>,
     gemm_micro<5, true>, gemm_micro<6, true>}};

// Copy x[k0 : k0 + kc, p0 : p1) into 16-pixel strips: strip s at buf + s * kc * 16, row k at + k * 16,
// zeros past p1.
static void gemm_pack(const float* x, int64_t xcs, int k0, int kc, int64_t p0, int64_t p1, float* buf) {
  const int strips = (int)((p1 - p0 + kGemmStrip - 1) / kGemmStrip);
  for (int k = 0; k < kc; ++k) {
    const float* row = x + (int64_t)(k0 + k) * xcs + p0;
    if (k + kGemmPackAhead < kc && p1 - p0 == kGemmBlockPx) {  // rows a plane apart: no hardware prefetch
      for (int l = 0; l < kGemmBlockPx; l += 16) {
        _mm_prefetch(reinterpret_cast<const char*>(row + kGemmPackAhead * xcs + l), _MM_HINT_T0);
      }
    }
    for (int s = 0; s < strips; ++s) {
      float* d = buf + ((int64_t)s * kc + k) * kGemmStrip;
      const int n = (int)std::min<int64_t>(kGemmStrip, p1 - p0 - (int64_t)s * kGemmStrip);
      if (n == kGemmStrip) {
        _mm256_store_ps(d, _mm256_loadu_ps(row + s * kGemmStrip));
        _mm256_store_ps(d + 8, _mm256_loadu_ps(row + s * kGemmStrip + 8));
      } else {
        _mm256_store_ps(d, _mm256_maskload_ps(row + s * kGemmStrip, lane_mask(0, n)));
        _mm256_store_ps(d + 8, _mm256_maskload_ps(row + s * kGemmStrip + 8, lane_mask(0, n - 8)));
      }
    }
  }
}

}  // namespace

extern "C" {

// out (Co, P) = relu?(W @ x (Ci, P) + bias + res) with W packed as (ceil(Co/6), Ci, 6) (see above); the P
// pixels of each channel are contiguous, channel strides xcs, ocs and rcs (floats). res and bias may be null.
// flags: bit 0 ReLU, bit 1 non-temporal stores of the output.
void fggp_dense_pointwise_f32(const float* wp, int Co, int Ci, const float* x, int64_t xcs, int64_t P,
                              const float* bias, const float* res, int64_t rcs, float* out, int64_t ocs, int flags,
                              int nthreads) {
  if (Co <= 0 || Ci <= 0 || P <= 0) return;
  const int panels = (Co + kGemmRows - 1) / kGemmRows;
  const int64_t blocks = (P + kGemmBlockPx - 1) / kGemmBlockPx;
  // Few pixel blocks (batch 1, small maps): split the panels as well so that every core works.
  const int64_t split = blocks >= 4 * nthreads ? 1 : std::min<int64_t>(panels, (4 * nthreads + blocks - 1) / blocks);
  const int per_split = (int)((panels + split - 1) / split);
  const int depth_blocks = (Ci + kGemmMaxDepth - 1) / kGemmMaxDepth;
  const int depth = (Ci + depth_blocks - 1) / depth_blocks;  // balanced blocks of <= 512 input channels
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    float* buf = static_cast<float*>(_mm_malloc(sizeof(float) * kGemmMaxDepth * kGemmBlockPx, 64));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < blocks * split; ++t) {
      const int64_t p0 = (t / split) * kGemmBlockPx, p1 = std::min(P, p0 + kGemmBlockPx);
      const int g0 = (int)(t % split) * per_split, g1 = std::min(panels, g0 + per_split);
      if (g0 >= g1) continue;
      const int strips = (int)((p1 - p0 + kGemmStrip - 1) / kGemmStrip);
      for (int k0 = 0; k0 < Ci; k0 += depth) {
        const int kc = std::min(depth, Ci - k0);
        gemm_pack(x, xcs, k0, kc, p0, p1, buf);
        const bool first = k0 == 0, last = k0 + kc >= Ci;
        for (int s = 0; s < strips; ++s) {
          const int64_t q = p0 + (int64_t)s * kGemmStrip;
          const int n = (int)std::min<int64_t>(kGemmStrip, p1 - q);
          const __m256i m0 = lane_mask(0, n), m1 = lane_mask(0, n - 8);
          for (int g = g0; g < g1; ++g) {
            const int co = g * kGemmRows, rows = std::min(kGemmRows, Co - co);
            kGemmMicro[n < kGemmStrip][rows](kc, wp + ((int64_t)g * Ci + k0) * kGemmRows, buf + (int64_t)s * kc * kGemmStrip,
                                             out + co * ocs + q, ocs, first, last, bias ? bias + co : nullptr,
                                             res ? res + co * rcs + q : nullptr, rcs, flags, m0, m1);
          }
        }
      }
      if (flags & 2) _mm_sfence();  // this task's streaming stores are visible before the next layer reads them
    }
    _mm_free(buf);
  }
}

}  // extern "C"

namespace {

// ---------------------------------------------------------------- sparse 1x1, packed input tiles
// The direct kernel reads each non-zero's input row straight from the activation, whose channels are a
// plane (~256 KiB at batch 64) apart: every row of a tile sits on its own page and the rows of a cache
// block are spread over L2. Here each 64-pixel tile's rows of one block of input channels are first copied
// into a contiguous buffer (block x 64 floats, L1-sized for blocks of 64-128 channels); every output
// channel's non-zeros of the block then read that buffer. The copy costs 8 loads and stores per row, paid
// back when the row feeds several output channels (Co x density of them). On ResNet-50's 1x1 shapes at
// batch 64 (53-99.6 % sparse) a prototype of it ran 1.1-1.8x faster than the direct kernel's best block.

constexpr int kPwTile = 64;  // pixels per tile (8 accumulators)
// Software prefetch distances: the rows a tile reads are a channel plane apart, hundreds of interleaved
// streams that the hardware prefetchers do not follow; without these, the residual add alone cost 40 % of
// a 64 -> 256-channel layer at 32 x 32, batch 64 (each of its loads a miss to memory).
constexpr int kPwPackAhead = 8;  // input rows ahead while packing
constexpr int kPwResAhead = 2;   // output channels ahead for the residual

static inline void prefetch_tile(const float* p) {
  for (int l = 0; l < kPwTile; l += 16) _mm_prefetch(reinterpret_cast<const char*>(p + l), _MM_HINT_T0);
}

template <bool kMasked>
static void pointwise_tile(const int32_t* seg, int NB, int KB, const int32_t* ci, const float* val, int co0, int co1,
                           int Co, int Ci, const float* x, int64_t xcs, int64_t p0, int n, const float* bias,
                           const float* res, int64_t rcs, float* out, int64_t ocs, int flags, float* buf) {
  __m256i m[8];
  for (int v = 0; v < 8; ++v) m[v] = lane_mask(0, n - 8 * v);
  for (int b = 0; b < NB; ++b) {
    const int k0 = b * KB, k1 = std::min(Ci, k0 + KB);
    for (int k = k0; k < k1; ++k) {  // pack rows k0..k1 of the tile (zeros past the last pixel)
      const float* src = x + (int64_t)k * xcs + p0;
      if (!kMasked && k + kPwPackAhead < k1) prefetch_tile(src + kPwPackAhead * xcs);
      float* dst = buf + (int64_t)(k - k0) * kPwTile;
#pragma GCC unroll 8
      for (int v = 0; v < 8; ++v) _mm256_store_ps(dst + 8 * v, load8<kMasked>(src + 8 * v, m[v]));
    }
    const float* base = buf - (int64_t)k0 * kPwTile;  // base + ci * 64: row ci of the packed block
    const bool first = b == 0, last = b == NB - 1;
    const int32_t* sg = seg + (int64_t)b * Co;
    for (int co = co0; co < co1; ++co) {
      float* o = out + (int64_t)co * ocs + p0;
      if (!kMasked && last && res && co + kPwResAhead < co1) prefetch_tile(res + (int64_t)(co + kPwResAhead) * rcs + p0);
      __m256 acc[8];
      if (first) {
        const __m256 bb = _mm256_set1_ps(bias ? bias[co] : 0.0f);
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v) acc[v] = bb;
      } else {
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v) acc[v] = load8<kMasked>(o + 8 * v, m[v]);
      }
      const int j1 = sg[co + 1];
      for (int j = sg[co]; j < j1; ++j) {
        const float* p = base + (int64_t)ci[j] * kPwTile;
        const __m256 w = _mm256_broadcast_ss(val + j);
#pragma GCC unroll 8
        for (int v = 0; v < 8; ++v) acc[v] = _mm256_fmadd_ps(w, _mm256_load_ps(p + 8 * v), acc[v]);
      }
      if (last) {
        if (res) {
          const float* r = res + (int64_t)co * rcs + p0;
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) acc[v] = _mm256_add_ps(acc[v], load8<kMasked>(r + 8 * v, m[v]));
        }
        if (flags & 1) {
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) acc[v] = _mm256_max_ps(acc[v], _mm256_setzero_ps());
        }
        if (!kMasked && (flags & 2) && (reinterpret_cast<uintptr_t>(o) & 31) == 0) {
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) _mm256_stream_ps(o + 8 * v, acc[v]);
          continue;
        }
      }
#pragma GCC unroll 8
      for (int v = 0; v < 8; ++v) store8<kMasked>(o + 8 * v, m[v], acc[v]);
    }
  }
}

}  // namespace

extern "C" {

// out (Co, P) = relu?(W @ x (Ci, P) + bias + res) for a sparse W in the direct kernel's form with one tap:
// the non-zeros of input-channel block b (channels b*KB .. b*KB+KB-1) and output channel co are
// seg[b*Co + co] .. seg[b*Co + co + 1], with their input channels ci and values val. Channel strides xcs,
// ocs, rcs (floats); bias, res may be null; flags: bit 0 ReLU, bit 1 non-temporal stores of the output.
void fggp_sparse_pointwise_f32(const int32_t* seg, int NB, int KB, const int32_t* ci, const float* val, int Co,
                               int Ci, const float* x, int64_t xcs, int64_t P, const float* bias, const float* res,
                               int64_t rcs, float* out, int64_t ocs, int flags, int nthreads) {
  if (Co <= 0 || P <= 0) return;
  const int64_t tiles = (P + kPwTile - 1) / kPwTile;
  // Few tiles (batch 1, small maps): split the output channels as well so that every core works.
  const int64_t split = tiles >= 4 * nthreads ? 1 : std::min<int64_t>(std::max(1, Co / 8), (4 * nthreads + tiles - 1) / tiles);
  const int chunk = (int)((Co + split - 1) / split);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    float* buf = static_cast<float*>(_mm_malloc(sizeof(float) * std::max(1, std::min(KB, Ci)) * kPwTile, 64));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles * split; ++t) {
      const int64_t p0 = (t / split) * kPwTile;
      const int n = (int)std::min<int64_t>(kPwTile, P - p0);
      const int co0 = (int)(t % split) * chunk, co1 = std::min(Co, co0 + chunk);
      if (co0 >= co1) continue;
      if (n == kPwTile) {
        pointwise_tile<false>(seg, NB, KB, ci, val, co0, co1, Co, Ci, x, xcs, p0, n, bias, res, rcs, out, ocs, flags, buf);
      } else {
        pointwise_tile<true>(seg, NB, KB, ci, val, co0, co1, Co, Ci, x, xcs, p0, n, bias, res, rcs, out, ocs, flags, buf);
      }
    }
    if (flags & 2) _mm_sfence();  // this thread's streaming stores are visible before the next layer reads them
    _mm_free(buf);
  }
}

}  // extern "C"

namespace {
// ---------------------------------------------------------------- packed-tile direct kernel, any kernel size / stride
// The direct kernel above reads each non-zero's input straight from its channel plane: for a 3 x 3 layer at
// batch 64 a tile's loads walk Cb x 3 rows that are a plane (hundreds of KiB) apart, and every border tile
// takes the masked per-tap loop. This one first copies what a group of G tiles of one output row reads, for
// one block of input channels, into a small buffer: for each (input channel, kernel row i, column phase f) the
// input row oh * sh + i * dil - ph, gathered at columns u * sw + f (the polyphase split of a strided conv done
// while packing, instead of as a copy of the whole input), zeros past the image. Every non-zero then reads
// buffer row ((ci_local * R + i) * F + f), shifted by its column shift q: one precomputed offset, no bounds
// checks and no masks, and a strided conv needs no separate split.
struct Packed {
  const float* x;
  int H, W, N;
  int64_t xcs;
  int Co, Ho, Wo, sh, sw, ph, dil, R, F, qmin, L;  // L: floats per buffer row
  int NB, KB, Ci;
  const int32_t* seg;    // (NB * Co + 1): non-zeros of block b and output channel co
  const int32_t* off;    // (nnz,) buffer offset of each non-zero (row * L + (q - qmin) * N)
  const float* val;      // (nnz,)
  const int32_t* prow;   // (NB + 1): block b's used buffer rows are prows[prow[b] .. prow[b + 1])
  const int32_t* prows;  // (rows, 4): buffer row index, its input channel in the block, kernel row i, phase f
  const float* bias;
  const float* res;
  int64_t rcs;
  float* out;
  int64_t ocs;
  int flags;
};

constexpr int kPkPackAhead = 4;  // buffer rows ahead whose source the packing prefetches

// Buffer row pr[0] (block-local; pr: its prows entry) for output row oh, output elements from g0: phase-image
// elements g0 + qmin * N + l, l < L, of input channel k0 + pr[1], kernel row pr[2], phase pr[3].
static void pack_buffer_row(const Packed& c, int k0, const int32_t* pr, int oh, int64_t g0, float* dst,
                            bool prefetch_only) {
  const int k = k0 + pr[1], i = pr[2], f = pr[3];
  const int ih = oh * c.sh + i * c.dil - c.ph;
  const int64_t N = c.N, v0 = g0 + (int64_t)c.qmin * N;
  if ((unsigned)ih >= (unsigned)c.H) {
    if (!prefetch_only) memset(dst, 0, sizeof(float) * c.L);
    return;
  }
  const float* src = c.x + (int64_t)k * c.xcs + (int64_t)ih * c.W * N;
  if (c.sw == 1) {  // one contiguous run: input elements v0 .. v0 + L of the row (f == 0)
    const int64_t rl = (int64_t)c.W * N;
    const int64_t a = std::min<int64_t>(c.L, std::max<int64_t>(0, -v0)), z = std::max(a, std::min<int64_t>(c.L, rl - v0));
    if (prefetch_only) {
      for (int64_t l = a; l < z; l += 16) _mm_prefetch(reinterpret_cast<const char*>(src + v0 + l), _MM_HINT_T0);
      return;
    }
    if (a > 0) memset(dst, 0, sizeof(float) * a);
    int64_t l = a;
    for (; l + 8 <= z; l += 8) _mm256_storeu_ps(dst + l, _mm256_loadu_ps(src + v0 + l));
    for (; l < z; ++l) dst[l] = src[v0 + l];
    if (z < c.L) memset(dst + z, 0, sizeof(float) * (c.L - z));
    return;
  }
  // strided: phase-image column u is input column u * sw + f, N floats each (the first run may start inside one)
  const int64_t u0 = v0 >= 0 ? v0 / N : -((-v0 + N - 1) / N);
  if (N == 1) {  // batch 1: a strided gather
    if (prefetch_only) return;
    for (int64_t l = 0; l < c.L; ++l) {
      const int64_t col = (u0 + l) * c.sw + f;
      dst[l] = col >= 0 && col < c.W ? src[col] : 0.0f;
    }
    return;
  }
  int64_t l = 0, n0 = v0 - u0 * N;
  for (int64_t col = u0 * c.sw + f; l < c.L; col += c.sw, n0 = 0) {
    const int64_t run = std::min<int64_t>(c.L - l, N - n0);
    float* d = dst + l;
    if (col < 0 || col >= c.W) {
      if (!prefetch_only) memset(d, 0, sizeof(float) * run);
    } else if (prefetch_only) {
      const float* s = src + col * N + n0;
      for (int64_t t = 0; t < run; t += 16) _mm_prefetch(reinterpret_cast<const char*>(s + t), _MM_HINT_T0);
    } else {
      const float* s = src + col * N + n0;
      int64_t t = 0;
      for (; t + 8 <= run; t += 8) _mm256_storeu_ps(d + t, _mm256_loadu_ps(s + t));
      for (; t < run; ++t) d[t] = s[t];
    }
    l += run;
  }
}

// ng tiles of 64 output elements of row oh from g0 (the last one nlast elements), output channels [co0, co1).
template <bool kMasked>
static void packed_group(const Packed& c, int oh, int64_t g0, int ng, int nlast, int co0, int co1, float* buf) {
  const int64_t row_len = (int64_t)c.Wo * c.N;
  __m256i m[8];
  for (int v = 0; v < 8; ++v) m[v] = lane_mask(0, nlast - 8 * v);
  for (int b = 0; b < c.NB; ++b) {
    const int32_t* rows = c.prows + 4 * (int64_t)c.prow[b];
    const int nrows = c.prow[b + 1] - c.prow[b];
    for (int r = 0; r < nrows; ++r) {
      if (r + kPkPackAhead < nrows) pack_buffer_row(c, b * c.KB, rows + 4 * (r + kPkPackAhead), oh, g0, nullptr, true);
      pack_buffer_row(c, b * c.KB, rows + 4 * r, oh, g0, buf + (int64_t)rows[4 * r] * c.L, false);
    }
    const bool first = b == 0, last = b == c.NB - 1;
    const int32_t* sg = c.seg + (int64_t)b * c.Co;
    for (int co = co0; co < co1; ++co) {
      const int j0 = sg[co], j1 = sg[co + 1];
      for (int g = 0; g < ng; ++g) {
        const bool msk = kMasked && g == ng - 1;
        float* o = c.out + (int64_t)co * c.ocs + (int64_t)oh * row_len + g0 + 64 * g;
        const float* base = buf + 64 * g;
        __m256 acc[8];
        if (first) {
          const __m256 bb = _mm256_set1_ps(c.bias ? c.bias[co] : 0.0f);
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) acc[v] = bb;
        } else if (msk) {
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) acc[v] = load8<true>(o + 8 * v, m[v]);
        } else {
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) acc[v] = _mm256_loadu_ps(o + 8 * v);
        }
        for (int j = j0; j < j1; ++j) {
          const float* p = base + c.off[j];
          const __m256 w = _mm256_broadcast_ss(c.val + j);
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) acc[v] = _mm256_fmadd_ps(w, _mm256_loadu_ps(p + 8 * v), acc[v]);
        }
        if (last) {
          if (c.res) {
            const float* r = c.res + (int64_t)co * c.rcs + (int64_t)oh * row_len + g0 + 64 * g;
            if (msk) {
#pragma GCC unroll 8
              for (int v = 0; v < 8; ++v) acc[v] = _mm256_add_ps(acc[v], load8<true>(r + 8 * v, m[v]));
            } else {
#pragma GCC unroll 8
              for (int v = 0; v < 8; ++v) acc[v] = _mm256_add_ps(acc[v], _mm256_loadu_ps(r + 8 * v));
            }
          }
          if (c.flags & 1) {
#pragma GCC unroll 8
            for (int v = 0; v < 8; ++v) acc[v] = _mm256_max_ps(acc[v], _mm256_setzero_ps());
          }
          if (!msk && (c.flags & 2) && (reinterpret_cast<uintptr_t>(o) & 31) == 0) {
#pragma GCC unroll 8
            for (int v = 0; v < 8; ++v) _mm256_stream_ps(o + 8 * v, acc[v]);
            continue;
          }
        }
        if (msk) {
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) store8<true>(o + 8 * v, m[v], acc[v]);
        } else {
#pragma GCC unroll 8
          for (int v = 0; v < 8; ++v) _mm256_storeu_ps(o + 8 * v, acc[v]);
        }
      }
    }
  }
}

}  // namespace

extern "C" {

// out (Co, Ho, Wo, N) = relu?(conv(x) + bias + res) with the packed-tile kernel (see Packed): x (Ci, H, W, N) with
// channel stride xcs, conv stride (sh, sw), row padding ph and row dilation dil (column padding and dilation are in
// the offsets), R kernel rows, F column phases (= sw), column shifts from qmin; G tiles of 64 output elements per
// packed group; weight in NB blocks of KB input channels (seg, off, val, prow, prows: see Packed). bias, res may be
// null; channel strides rcs, ocs; flags: bit 0 ReLU, bit 1 non-temporal stores. Returns 0, or -1 when a thread's
// packing buffer could not be allocated (the output is then incomplete).
int fggp_sparse_conv_packed_f32(const float* x, int Ci, int H, int W, int N, int64_t xcs, int Co, int Ho, int Wo,
                                 int sh, int sw, int ph, int dil, int R, int F, int qmin, int qmax, int G, int NB,
                                 int KB, const int32_t* seg, const int32_t* off, const float* val, const int32_t* prow,
                                 const int32_t* prows, const float* bias, const float* res, int64_t rcs, float* out,
                                 int64_t ocs, int flags, int nthreads) {
  if (Co <= 0 || Ho <= 0 || Wo <= 0 || N <= 0) return 0;
  if (G <= 0) return -1;
  const int64_t glen = (int64_t)G * 64;
  const int L = (int)((glen + (int64_t)(qmax - qmin) * N + 7) / 8 * 8);
  Packed c{x, H, W, N, xcs, Co, Ho, Wo, sh, sw, ph, dil, R, F, qmin, L, NB, KB, Ci,
           seg, off, val, prow, prows, bias, res, rcs, out, ocs, flags};
  const int64_t row_len = (int64_t)Wo * N;
  const int64_t groups = (row_len + glen - 1) / glen;
  const int64_t ntasks = groups * Ho;
  // Few tasks (batch 1, small maps): split the output channels as well so that every core works.
  const int64_t split = ntasks >= 4 * nthreads ? 1 : std::min<int64_t>(std::max(1, Co / 8), (4 * nthreads + ntasks - 1) / ntasks);
  const int chunk = (int)((Co + split - 1) / split);
  const int64_t buf_floats = (int64_t)std::max(1, std::min(KB, Ci)) * R * F * L;
  int failed = 0;
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
  {
    float* buf = static_cast<float*>(_mm_malloc(sizeof(float) * buf_floats, 64));
    if (buf == nullptr) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t t = 0; t < ntasks * split; ++t) {
      if (buf == nullptr) continue;
      const int64_t task = t / split;
      const int oh = (int)(task / groups);
      const int64_t g0 = (task % groups) * glen;
      const int64_t len = std::min(glen, row_len - g0);
      const int ng = (int)((len + 63) / 64);
      const int nlast = (int)(len - 64 * (ng - 1));
      const int co0 = (int)(t % split) * chunk, co1 = std::min(Co, co0 + chunk);
      if (co0 >= co1) continue;
      if (nlast == 64) {
        packed_group<false>(c, oh, g0, ng, nlast, co0, co1, buf);
      } else {
        packed_group<true>(c, oh, g0, ng, nlast, co0, co1, buf);
      }
    }
    if (flags & 2) _mm_sfence();  // this thread's streaming stores are visible before the next layer reads them
    if (buf != nullptr) _mm_free(buf);
  }
  return failed ? -1 : 0;
}

}  // extern "C"
