// Grouped multi-head attention with the DPB bias table, forward and
// backward, fused per block of query rows (CPU).
//
// The Python side (mmcrossformer/models/native_kernel.py) compiles this file
// on first use; mmcrossformer/models/attention_kernel.py documents what is
// computed and keeps the pure-PyTorch path it must agree with.
//
// Layouts (row-major):
//   qkv       (B * G, N, 3 * C)  channels (q|k|v, head, d), C = heads * d
//   table     (heads, 2Gh-1, 2Gw-1)  bias of the offset (yq-yk, xq-xk)
//   padding   (G, N) additive key mask of each group, or an empty tensor
//   out       (B * G, N, C)
//   lse       (B * G, heads, N)  each row's log-sum-exp, in base 2
//   block_rows  query rows per block; 0 for as many as kBlockElements allow
//
// One tile is one head of one group: an (N, N) attention matrix. Tiles run
// in parallel (at::parallel_for); a tile goes through its query rows in
// blocks of R rows so that the block's logits and their gradient (R x N
// each) stay in a core's L2 cache, from the GEMM that makes them to the
// GEMMs that read them. Q, K, V and their gradients are read and written
// in place in the packed layout (BLAS leading dimension 3C): nothing is
// copied per tile.
//
// Exponentials are powers of two: the logits are carried in base-2 units
// (times log2(e)), folded into the GEMM's alpha and the small operands.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

extern "C" {
// Fortran BLAS, column-major; exported by libtorch_cpu (MKL) on x86.
void sgemm_(const char *transa, const char *transb, const int *m,
            const int *n, const int *k, const float *alpha, const float *a,
            const int *lda, const float *b, const int *ldb, const float *beta,
            float *c, const int *ldc);
void dgemm_(const char *transa, const char *transb, const int *m,
            const int *n, const int *k, const double *alpha, const double *a,
            const int *lda, const double *b, const int *ldb,
            const double *beta, double *c, const int *ldc);
}

namespace {

constexpr double kLog2e = 1.4426950408889634;

// Logits per block of query rows (P and dS each): 2^16 floats = 256 KiB,
// so that both stay in a 1 MiB L2 with the block's operands.
constexpr int64_t kBlockElements = 1 << 16;

// Row-major C (M x N) = alpha * op(A) op(B) + beta * C, where op(X) is X
// or X^T as trans_x is 'N' or 'T', and lda/ldb/ldc are row strides. A
// row-major matrix is its transpose in column-major order, so this is the
// column-major C^T = op(B)^T op(A)^T with the operands swapped.
inline void gemm(char trans_a, char trans_b, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb,
                 float beta, float *c, int ldc) {
  sgemm_(&trans_b, &trans_a, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c,
         &ldc);
}

inline void gemm(char trans_a, char trans_b, int m, int n, int k,
                 double alpha, const double *a, int lda, const double *b,
                 int ldb, double beta, double *c, int ldc) {
  dgemm_(&trans_b, &trans_a, &n, &m, &k, &alpha, b, &ldb, a, &lda, &beta, c,
         &ldc);
}

// 2^x for float (Cephes' exp2f: x = n + f, |f| <= 1/2, 2^f by a degree-6
// polynomial, 2^n in the exponent bits; relative error ~2e-7). 0 below
// 2^-126 (masked keys), which keeps the result a normal float. The rows go
// through exp2_avx2 below where AVX2 is compiled in; this serves their
// tails and other CPUs.
inline float exp2_fast(float x) {
  const float clamped = std::min(std::max(x, -126.f), 127.f);
  // Round to nearest with the 1.5 * 2^23 trick (no floor, no branch).
  const float rounded = (clamped + 12582912.f) - 12582912.f;
  const float f = clamped - rounded;
  float p = 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.f;
  const int32_t bits = (static_cast<int32_t>(rounded) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < -126.f ? 0.f : p * scale;
}

inline double exp2_fast(double x) { return std::exp2(x); }

// The shapes and pointers that every tile of one call shares.
template <typename scalar_t>
struct Problem {
  int64_t batch_groups, groups, heads, length, head_dims, channels;
  int64_t group_h, group_w, table_w;
  int64_t block;  // query rows per block
  scalar_t scale;
  const scalar_t *qkv;
  const scalar_t *table;    // flipped and in base 2, see flipped_table()
  const scalar_t *padding;  // (G, N) in base 2, or nullptr

  // Where a tile's (N, d) head starts in the (B * G, N, C) output and its
  // gradient (row stride C).
  int64_t out_offset(int64_t tile) const {
    return (tile / heads) * length * channels + (tile % heads) * head_dims;
  }
  // q, k or v (which = 0, 1, 2) of a tile, (N, d) with row stride 3C.
  const scalar_t *part(int64_t tile, int which) const {
    return qkv + (tile / heads) * length * 3 * channels +
           which * channels + (tile % heads) * head_dims;
  }
  // Where query `row`'s bias starts in the flipped table (and its
  // gradient): key (yk, xk) is at table_offset(tile, row) + yk * table_w +
  // xk (see flipped_table()).
  int64_t table_offset(int64_t tile, int64_t row) const {
    const int64_t yq = row / group_w, xq = row % group_w;
    return (tile % heads) * (2 * group_h - 1) * table_w +
           (group_h - 1 - yq) * table_w + (group_w - 1 - xq);
  }
  const scalar_t *key_padding(int64_t tile) const {
    return padding ? padding + ((tile / heads) % groups) * length : nullptr;
  }
};

// The table flipped along both offset axes and times log2(e):
// flipped[h, a, b] = log2(e) * table[h, 2Gh-2-a, 2Gw-2-b]. The bias of
// query (yq, xq) and key (yk, xk), table[yq-yk+Gh-1, xq-xk+Gw-1], is then
// flipped[Gh-1-yq+yk, Gw-1-xq+xk]: for a query, Gh runs of Gw contiguous
// entries in key order, read without a gather.
torch::Tensor flipped_table(const torch::Tensor &table) {
  return (table.flip({1, 2}) * kLog2e).contiguous();
}

// The small operands in the kernel's units: the flipped table above and
// the padding times log2(e) (left empty when there is none).
struct Base2Operands {
  torch::Tensor table, padding;
};

Base2Operands base2_operands(const torch::Tensor &table,
                             const torch::Tensor &padding) {
  return {flipped_table(table),
          padding.numel() ? (padding * kLog2e).contiguous() : padding};
}

// logits[j] = bias[j] + padding[j] - shift for the N keys of one query
// row, the bias being Gh runs of Gw entries of the flipped table (row
// stride tw). The GEMM then adds q k^T onto it (beta = 1: no pass of its
// own to clear or scale its output).
template <typename scalar_t>
inline void set_bias_row(scalar_t *__restrict__ logits,
                         const scalar_t *__restrict__ bias,
                         const scalar_t *__restrict__ padding, int64_t gh,
                         int64_t gw, int64_t tw, scalar_t shift) {
  for (int64_t yk = 0; yk < gh; ++yk) {
    scalar_t *__restrict__ out = logits + yk * gw;
    const scalar_t *__restrict__ b = bias + yk * tw;
    if (padding) {
      const scalar_t *__restrict__ p = padding + yk * gw;
      for (int64_t xk = 0; xk < gw; ++xk) out[xk] = b[xk] + p[xk] - shift;
    } else {
      for (int64_t xk = 0; xk < gw; ++xk) out[xk] = b[xk] - shift;
    }
  }
}

// max(s[0..n)), in lanes that the compiler can keep in vector registers
// (a plain loop is one serial chain: float max and sums do not reassociate).
template <typename scalar_t>
inline scalar_t row_max(const scalar_t *__restrict__ s, int64_t n) {
  constexpr int kLanes = 16;
  scalar_t lanes[kLanes];
  for (int i = 0; i < kLanes; ++i)
    lanes[i] = -std::numeric_limits<scalar_t>::infinity();
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int i = 0; i < kLanes; ++i) lanes[i] = std::max(lanes[i], s[j + i]);
  scalar_t peak = -std::numeric_limits<scalar_t>::infinity();
  for (int i = 0; i < kLanes; ++i) peak = std::max(peak, lanes[i]);
  for (; j < n; ++j) peak = std::max(peak, s[j]);
  return peak;
}

// s[j] = 2^(s[j] - shift) for j < n; returns their sum (in lanes, as above).
template <typename scalar_t>
inline scalar_t exp2_row(scalar_t *__restrict__ s, int64_t n,
                         scalar_t shift) {
  constexpr int kLanes = 16;
  scalar_t lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes)
    for (int i = 0; i < kLanes; ++i) {
      s[j + i] = exp2_fast(s[j + i] - shift);
      lanes[i] += s[j + i];
    }
  scalar_t total = 0;
  for (int i = 0; i < kLanes; ++i) total += lanes[i];
  for (; j < n; ++j) {
    s[j] = exp2_fast(s[j] - shift);
    total += s[j];
  }
  return total;
}

#if defined(__AVX2__) && defined(__FMA__)
// The same 2^x, 8 lanes at a time (compilers do not vectorise the scalar
// one's loops: its float min/max and bit cast stay scalar).
inline __m256 exp2_avx2(__m256 x) {
  const __m256 low = _mm256_set1_ps(-126.f);
  const __m256 clamped =
      _mm256_min_ps(_mm256_max_ps(x, low), _mm256_set1_ps(127.f));
  const __m256 rounded = _mm256_round_ps(
      clamped, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(clamped, rounded);
  __m256 p = _mm256_set1_ps(1.535336188319500e-4f);
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339887440266574e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618437357674640e-3f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550332471162809e-2f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402264791363012e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931472028550421e-1f));
  p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.f));
  const __m256i bits = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(rounded), _mm256_set1_epi32(127)),
      23);
  const __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  // 0 below 2^-126, as exp2_fast.
  return _mm256_and_ps(result, _mm256_cmp_ps(x, low, _CMP_GE_OQ));
}

inline float horizontal_sum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

template <>
inline float row_max<float>(const float *__restrict__ s, int64_t n) {
  __m256 a = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), b = a;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    a = _mm256_max_ps(a, _mm256_loadu_ps(s + j));
    b = _mm256_max_ps(b, _mm256_loadu_ps(s + j + 8));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(a, b));
  float peak = lanes[0];
  for (int i = 1; i < 8; ++i) peak = std::max(peak, lanes[i]);
  for (; j < n; ++j) peak = std::max(peak, s[j]);
  return peak;
}

template <>
inline float exp2_row<float>(float *__restrict__ s, int64_t n, float shift) {
  const __m256 offset = _mm256_set1_ps(shift);
  __m256 a = _mm256_setzero_ps(), b = a;
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m256 x = exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j), offset));
    const __m256 y =
        exp2_avx2(_mm256_sub_ps(_mm256_loadu_ps(s + j + 8), offset));
    _mm256_storeu_ps(s + j, x);
    _mm256_storeu_ps(s + j + 8, y);
    a = _mm256_add_ps(a, x);
    b = _mm256_add_ps(b, y);
  }
  float total = horizontal_sum(_mm256_add_ps(a, b));
  for (; j < n; ++j) {
    s[j] = exp2_fast(s[j] - shift);
    total += s[j];
  }
  return total;
}
#endif

// Forward of one tile: out (N, d) at row stride C, lse (N,) in base 2.
template <typename scalar_t>
void forward_tile(const Problem<scalar_t> &pb, int64_t tile, scalar_t *out,
                  scalar_t *lse, scalar_t *probs, scalar_t *totals) {
  const int n = pb.length, d = pb.head_dims, ld = 3 * pb.channels;
  const int ldo = pb.channels;
  const scalar_t *q = pb.part(tile, 0), *k = pb.part(tile, 1),
                 *v = pb.part(tile, 2);
  const scalar_t *padding = pb.key_padding(tile);
  for (int64_t r0 = 0; r0 < n; r0 += pb.block) {
    const int rows = static_cast<int>(std::min<int64_t>(pb.block, n - r0));
    // S = log2(e) * (bias + padding + scale * q k^T)  (rows x N)
    for (int r = 0; r < rows; ++r)
      set_bias_row(probs + static_cast<int64_t>(r) * n,
                   pb.table + pb.table_offset(tile, r0 + r), padding,
                   pb.group_h, pb.group_w, pb.table_w, scalar_t(0));
    gemm('N', 'T', rows, n, d, pb.scale * static_cast<scalar_t>(kLog2e),
         q + r0 * ld, ld, k, ld, scalar_t(1), probs, n);
    for (int r = 0; r < rows; ++r) {
      scalar_t *s = probs + static_cast<int64_t>(r) * n;
      const scalar_t peak = row_max(s, n);
      totals[r] = exp2_row(s, n, peak);
      lse[r0 + r] = peak + std::log2(totals[r]);
    }
    // out = P v, then each row divided by its sum 2^(lse - peak).
    scalar_t *o = out + r0 * ldo;
    gemm('N', 'N', rows, d, n, scalar_t(1), probs, n, v, ld, scalar_t(0), o,
         ldo);
    for (int r = 0; r < rows; ++r) {
      const scalar_t inv = scalar_t(1) / totals[r];
      for (int c = 0; c < d; ++c) o[static_cast<int64_t>(r) * ldo + c] *= inv;
    }
  }
}

// Backward of one tile: the gradients of its q, k, v (written in the packed
// layout of grad_qkv) and of the flipped table (added into grad_table, the
// thread's own; natural units).
template <typename scalar_t>
void backward_tile(const Problem<scalar_t> &pb, int64_t tile,
                   const scalar_t *grad_out, const scalar_t *out,
                   const scalar_t *lse, scalar_t *grad_qkv,
                   scalar_t *grad_table, scalar_t *probs,
                   scalar_t *grad_logits, scalar_t *delta) {
  const int n = pb.length, d = pb.head_dims, ld = 3 * pb.channels;
  const int ldo = pb.channels;
  const int64_t offset = pb.part(tile, 0) - pb.qkv;
  const scalar_t *q = pb.qkv + offset, *k = q + pb.channels,
                 *v = q + 2 * pb.channels;
  scalar_t *grad_q = grad_qkv + offset, *grad_k = grad_q + pb.channels,
           *grad_v = grad_q + 2 * pb.channels;
  const scalar_t *padding = pb.key_padding(tile);
  const scalar_t log2_scale = pb.scale * static_cast<scalar_t>(kLog2e);
  for (int64_t r0 = 0; r0 < n; r0 += pb.block) {
    const int rows = static_cast<int>(std::min<int64_t>(pb.block, n - r0));
    const scalar_t beta = r0 == 0 ? scalar_t(0) : scalar_t(1);
    const scalar_t *grad_o = grad_out + r0 * ldo;
    // delta = rowsum(dO * O)
    for (int r = 0; r < rows; ++r) {
      const scalar_t *go = grad_o + static_cast<int64_t>(r) * ldo;
      const scalar_t *o = out + (r0 + r) * ldo;
      scalar_t sum = 0;
      for (int c = 0; c < d; ++c) sum += go[c] * o[c];
      delta[r] = sum;
    }
    // P = 2^(log2(e) * (bias + padding + scale * q k^T) - lse)
    for (int r = 0; r < rows; ++r)
      set_bias_row(probs + static_cast<int64_t>(r) * n,
                   pb.table + pb.table_offset(tile, r0 + r), padding,
                   pb.group_h, pb.group_w, pb.table_w, lse[r0 + r]);
    gemm('N', 'T', rows, n, d, log2_scale, q + r0 * ld, ld, k, ld,
         scalar_t(1), probs, n);
    for (int r = 0; r < rows; ++r)
      exp2_row(probs + static_cast<int64_t>(r) * n, n, scalar_t(0));
    // dV += P^T dO
    gemm('T', 'N', n, d, rows, scalar_t(1), probs, n, grad_o, ldo, beta,
         grad_v, ld);
    // dP - delta = dO v^T - delta, then dS = P * (dP - delta), summed into
    // the table's gradient along the same runs as the bias was read.
    for (int r = 0; r < rows; ++r)
      std::fill_n(grad_logits + static_cast<int64_t>(r) * n, n, -delta[r]);
    gemm('N', 'T', rows, n, d, scalar_t(1), grad_o, ldo, v, ld, scalar_t(1),
         grad_logits, n);
    for (int r = 0; r < rows; ++r) {
      const scalar_t *p = probs + static_cast<int64_t>(r) * n;
      scalar_t *ds = grad_logits + static_cast<int64_t>(r) * n;
      scalar_t *g = grad_table + pb.table_offset(tile, r0 + r);
      for (int64_t yk = 0; yk < pb.group_h; ++yk) {
        scalar_t *__restrict__ gy = g + yk * pb.table_w;
        const scalar_t *__restrict__ py = p + yk * pb.group_w;
        scalar_t *__restrict__ dsy = ds + yk * pb.group_w;
        for (int64_t xk = 0; xk < pb.group_w; ++xk) {
          const scalar_t value = py[xk] * dsy[xk];
          dsy[xk] = value;
          gy[xk] += value;
        }
      }
    }
    // dQ = scale * dS k;  dK += scale * dS^T q
    gemm('N', 'N', rows, d, n, pb.scale, grad_logits, n, k, ld, scalar_t(0),
         grad_q + r0 * ld, ld);
    gemm('T', 'N', n, d, rows, pb.scale, grad_logits, n, q + r0 * ld, ld,
         beta, grad_k, ld);
  }
}

template <typename scalar_t>
Problem<scalar_t> make_problem(const torch::Tensor &qkv,
                               const Base2Operands &base2,
                               int64_t num_groups, int64_t group_h,
                               int64_t group_w, double scale,
                               int64_t block_rows) {
  Problem<scalar_t> pb;
  pb.batch_groups = qkv.size(0);
  pb.groups = num_groups;
  pb.heads = base2.table.size(0);
  pb.length = group_h * group_w;
  pb.channels = qkv.size(2) / 3;
  pb.head_dims = pb.channels / pb.heads;
  pb.group_h = group_h;
  pb.group_w = group_w;
  pb.table_w = 2 * group_w - 1;
  pb.block = block_rows > 0 ? block_rows
                            : std::max<int64_t>(1, kBlockElements / pb.length);
  pb.block = std::min<int64_t>(pb.block, pb.length);
  pb.scale = static_cast<scalar_t>(scale);
  pb.qkv = qkv.data_ptr<scalar_t>();
  pb.table = base2.table.data_ptr<scalar_t>();
  pb.padding = base2.padding.numel() ? base2.padding.data_ptr<scalar_t>()
                                     : nullptr;
  return pb;
}

void check_inputs(const torch::Tensor &qkv, const torch::Tensor &table,
                  const torch::Tensor &padding, int64_t num_groups,
                  int64_t group_h, int64_t group_w) {
  TORCH_CHECK(qkv.device().is_cpu() && qkv.dim() == 3 && qkv.is_contiguous(),
              "qkv must be a contiguous CPU tensor (B * G, N, 3 * C)");
  TORCH_CHECK(qkv.scalar_type() == at::kFloat ||
                  qkv.scalar_type() == at::kDouble,
              "the CPU attention kernel takes float32 or float64, got ",
              qkv.scalar_type());
  TORCH_CHECK(table.dim() == 3 && table.size(1) == 2 * group_h - 1 &&
                  table.size(2) == 2 * group_w - 1 &&
                  table.scalar_type() == qkv.scalar_type(),
              "table must be (heads, 2Gh-1, 2Gw-1) in qkv's dtype");
  TORCH_CHECK(qkv.size(1) == group_h * group_w &&
                  qkv.size(2) % (3 * table.size(0)) == 0 &&
                  qkv.size(0) % num_groups == 0,
              "qkv (B * G, N, 3 * C) does not fit the group shape, heads "
              "or number of groups");
  if (padding.numel()) {
    TORCH_CHECK(padding.is_contiguous() && padding.size(0) == num_groups &&
                    padding.size(1) == qkv.size(1) &&
                    padding.scalar_type() == qkv.scalar_type(),
                "padding must be a contiguous (G, N) tensor in qkv's dtype");
  }
}

// Returns (out (B * G, N, C), lse (B * G, heads, N) in base 2).
std::vector<torch::Tensor> attention_forward(torch::Tensor qkv,
                                             torch::Tensor table,
                                             torch::Tensor padding,
                                             int64_t num_groups,
                                             int64_t group_h,
                                             int64_t group_w, double scale,
                                             int64_t block_rows) {
  check_inputs(qkv, table, padding, num_groups, group_h, group_w);
  const auto base2 = base2_operands(table, padding);
  const int64_t heads = table.size(0), length = qkv.size(1);
  auto out = torch::empty({qkv.size(0), length, qkv.size(2) / 3},
                          qkv.options());
  auto lse = torch::empty({qkv.size(0), heads, length}, qkv.options());
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "attention_forward", [&] {
    const auto pb = make_problem<scalar_t>(qkv, base2, num_groups, group_h,
                                           group_w, scale, block_rows);
    scalar_t *out_ptr = out.data_ptr<scalar_t>();
    scalar_t *lse_ptr = lse.data_ptr<scalar_t>();
    at::parallel_for(0, pb.batch_groups * heads, 1, [&](int64_t begin,
                                                         int64_t end) {
      std::vector<scalar_t> probs(pb.block * length), totals(pb.block);
      for (int64_t tile = begin; tile < end; ++tile) {
        forward_tile(pb, tile, out_ptr + pb.out_offset(tile),
                     lse_ptr + tile * length, probs.data(), totals.data());
      }
    });
  });
  return {out, lse};
}

// Returns (grad_qkv (B * G, N, 3 * C), grad_table (heads, 2Gh-1, 2Gw-1)).
std::vector<torch::Tensor> attention_backward(
    torch::Tensor grad_out, torch::Tensor qkv, torch::Tensor table,
    torch::Tensor padding, torch::Tensor out, torch::Tensor lse,
    int64_t num_groups, int64_t group_h, int64_t group_w, double scale,
    int64_t block_rows) {
  check_inputs(qkv, table, padding, num_groups, group_h, group_w);
  TORCH_CHECK(grad_out.is_contiguous() && out.is_contiguous() &&
                  lse.is_contiguous() &&
                  grad_out.scalar_type() == qkv.scalar_type() &&
                  grad_out.sizes() == out.sizes(),
              "grad_out, out and lse must be contiguous, in qkv's dtype");
  const auto base2 = base2_operands(table, padding);
  const int64_t heads = table.size(0), length = qkv.size(1);
  const int64_t tiles = qkv.size(0) * heads;
  auto grad_qkv = torch::empty_like(qkv);
  // One flipped-table gradient per thread, summed in thread order after.
  const int64_t threads = std::max<int64_t>(
      1, std::min<int64_t>(at::get_num_threads(), tiles));
  auto grad_tables = torch::zeros({threads, heads, 2 * group_h - 1,
                                   2 * group_w - 1},
                                  qkv.options());
  AT_DISPATCH_FLOATING_TYPES(qkv.scalar_type(), "attention_backward", [&] {
    const auto pb = make_problem<scalar_t>(qkv, base2, num_groups, group_h,
                                           group_w, scale, block_rows);
    const scalar_t *grad_out_ptr = grad_out.data_ptr<scalar_t>();
    const scalar_t *out_ptr = out.data_ptr<scalar_t>();
    const scalar_t *lse_ptr = lse.data_ptr<scalar_t>();
    scalar_t *grad_qkv_ptr = grad_qkv.data_ptr<scalar_t>();
    scalar_t *grad_tables_ptr = grad_tables.data_ptr<scalar_t>();
    const int64_t table_size = base2.table.numel();
    // Tiles split into `threads` contiguous runs, one per chunk, so that
    // each thread adds into its own table gradient whatever thread runs it.
    at::parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> probs(pb.block * length);
      std::vector<scalar_t> grad_logits(pb.block * length);
      std::vector<scalar_t> delta(pb.block);
      for (int64_t part = begin; part < end; ++part) {
        for (int64_t tile = part * tiles / threads;
             tile < (part + 1) * tiles / threads; ++tile) {
          const int64_t head = pb.out_offset(tile);
          backward_tile(pb, tile, grad_out_ptr + head, out_ptr + head,
                        lse_ptr + tile * length, grad_qkv_ptr,
                        grad_tables_ptr + part * table_size, probs.data(),
                        grad_logits.data(), delta.data());
        }
      }
    });
  });
  // Back from the flipped order to the table's.
  auto grad_table = grad_tables.sum(0).flip({1, 2}).contiguous();
  return {grad_qkv, grad_table};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &attention_forward,
        "Grouped attention with the DPB bias table (CPU): (out, lse)",
        py::call_guard<py::gil_scoped_release>());
  m.def("backward", &attention_backward,
        "Gradients of forward: (grad_qkv, grad_table)",
        py::call_guard<py::gil_scoped_release>());
}
