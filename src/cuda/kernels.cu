// GPT-2 forward kernels, compiled at run time with NVRTC (see src/cuda/kernels.rs).
//
// Conventions: activations are f32, row-major; `n` counts rows, `c` the row width.
// Half-precision values travel as their raw 16-bit patterns (`u16`), converted with
// the helpers below, so the source needs no CUDA headers (NVRTC has no include path
// here). Every kernel is `extern "C"` so its name is not mangled; the Rust side
// checks at compile time of the crate's tests that each name it loads appears here.
// Indices that can exceed 2^31 (rows * width) are computed in 64 bits.

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define INF __int_as_float(0x7f800000)

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ float bf16_to_f32(u16 h) {
    return __uint_as_float(((u32)h) << 16);
}

// Round to nearest even, NaN stays a (quiet) NaN: the same rule as half::bf16::from_f32.
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

__device__ __forceinline__ float f32_id(float f) { return f; }

// Sum of `v` over the block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. `sh` holds 33 floats; the leading barrier makes back-to-back calls safe.
__device__ float block_sum(float v, float* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? sh[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) sh[32] = v;
    }
    __syncthreads();
    return sh[32];
}

// Maximum of `v` over the block; same contract as block_sum.
__device__ float block_max(float v, float* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nwarps ? sh[lane] : -INF;
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        if (lane == 0) sh[32] = v;
    }
    __syncthreads();
    return sh[32];
}

// x[n, c] = wte[tok[r], :] + wpe[pos[r], :]. One thread per element.
#define EMBED(NAME, T, LOAD)                                                              \
    extern "C" __global__ void NAME(float* __restrict__ x, const u32* __restrict__ tok,   \
                                    const u32* __restrict__ pos, const T* __restrict__ wte, \
                                    const float* __restrict__ wpe, u32 n, u32 c) {        \
        u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;                               \
        if (i >= (u64)n * c) return;                                                      \
        u64 r = i / c, j = i % c;                                                         \
        x[i] = LOAD(wte[(u64)tok[r] * c + j]) + wpe[(u64)pos[r] * c + j];                 \
    }
EMBED(embed_f32, float, f32_id)
EMBED(embed_f16, u16, f16_to_f32)
EMBED(embed_bf16, u16, bf16_to_f32)

// out[n, c] = (x - mean) / sqrt(var + eps) * w + b, biased variance, two passes.
// One block per row.
extern "C" __global__ void layernorm(float* __restrict__ out, const float* __restrict__ x,
                                     const float* __restrict__ w, const float* __restrict__ b,
                                     u32 c, float eps) {
    __shared__ float sh[33];
    const float* xr = x + (u64)blockIdx.x * c;
    float* o = out + (u64)blockIdx.x * c;
    float s = 0.0f;
    for (u32 j = threadIdx.x; j < c; j += blockDim.x) s += xr[j];
    const float mean = block_sum(s, sh) / (float)c;
    float v = 0.0f;
    for (u32 j = threadIdx.x; j < c; j += blockDim.x) {
        float d = xr[j] - mean;
        v += d * d;
    }
    const float rstd = 1.0f / sqrtf(block_sum(v, sh) / (float)c + eps);
    for (u32 j = threadIdx.x; j < c; j += blockDim.x) o[j] = (xr[j] - mean) * rstd * w[j] + b[j];
}

// GELU, tanh form, in place: 0.5 x (1 + tanh(u)) written as x / (1 + exp(-2u)),
// which has no cancellation for negative u. u = sqrt(2/pi) (x + 0.044715 x^3).
extern "C" __global__ void gelu_tanh(float* __restrict__ x, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    const float v = x[i];
    const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
    x[i] = v / (1.0f + expf(-2.0f * u));
}

// y[rows, m] += bias[m].
extern "C" __global__ void add_bias(float* __restrict__ y, const float* __restrict__ bias, u64 rows, u32 m) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * m) return;
    y[i] += bias[i % m];
}

// x[n] += y[n] (residual connection).
extern "C" __global__ void add_inplace(float* __restrict__ x, const float* __restrict__ y, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    x[i] += y[i];
}

// out[n] = half(in[n]) (activations fed to f16/bf16 GEMMs).
extern "C" __global__ void cast_f16(u16* __restrict__ out, const float* __restrict__ in, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f32_to_f16(in[i]);
}
extern "C" __global__ void cast_bf16(u16* __restrict__ out, const float* __restrict__ in, u64 n) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f32_to_bf16(in[i]);
}

// Copies the k and v parts of fused qkv[b, t, 3c] into the caches kc/vc[b, nh, cap, hd]
// at positions past .. past + t. One thread per (b, t, channel).
extern "C" __global__ void kv_scatter(float* __restrict__ kc, float* __restrict__ vc,
                                      const float* __restrict__ qkv, u32 b, u32 t, u32 nh,
                                      u32 hd, u32 cap, u32 past) {
    const u64 c = (u64)nh * hd;
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (u64)b * t * c) return;
    const u64 bi = i / (t * c), rem = i % (t * c), ti = rem / c, ch = rem % c;
    const u64 h = ch / hd, d = ch % hd;
    const float* row = qkv + (bi * t + ti) * 3 * c;
    const u64 dst = ((bi * nh + h) * cap + past + ti) * hd + d;
    kc[dst] = row[c + ch];
    vc[dst] = row[2 * c + ch];
}

// Causal attention for one (query i, head h, row b) per block.
// q from fused qkv[b, t, 3c]; keys/values from kc/vc[b, nh, cap, hd] (positions
// 0 .. past + t already written). Query i sits at past + i and sees keys 0 ..= past + i,
// minus those with mask[b, j] == 0 (mask is [b, past + t] or null). A query that sees
// no key gets zeros (as the CPU kernel). out[b, t, c]. Dynamic shared memory:
// (hd + past + t) floats.
extern "C" __global__ void attention(float* __restrict__ out, const float* __restrict__ qkv,
                                     const float* __restrict__ kc, const float* __restrict__ vc,
                                     const unsigned char* __restrict__ mask, u32 t, u32 nh,
                                     u32 hd, u32 cap, u32 past, float scale) {
    extern __shared__ float smem[];
    __shared__ float red[33];
    const u32 i = blockIdx.x, h = blockIdx.y, bi = blockIdx.z;
    const u64 c = (u64)nh * hd;
    const u32 tk = past + t, nk = past + i + 1;
    float* q = smem;
    float* p = smem + hd;
    const float* qrow = qkv + ((u64)bi * t + i) * 3 * c + (u64)h * hd;
    for (u32 d = threadIdx.x; d < hd; d += blockDim.x) q[d] = qrow[d];
    __syncthreads();
    const float* kb = kc + ((u64)bi * nh + h) * cap * hd;
    const float* vb = vc + ((u64)bi * nh + h) * cap * hd;
    const unsigned char* m = mask ? mask + (u64)bi * tk : 0;
    float mx = -INF;
    for (u32 j = threadIdx.x; j < nk; j += blockDim.x) {
        float s = -INF;
        if (!m || m[j]) {
            const float* kr = kb + (u64)j * hd;
            float acc = 0.0f;
            for (u32 d = 0; d < hd; ++d) acc += q[d] * kr[d];
            s = acc * scale;
        }
        p[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, red);
    float* orow = out + ((u64)bi * t + i) * c + (u64)h * hd;
    if (mx == -INF) {  // uniform across the block: every key is masked
        for (u32 d = threadIdx.x; d < hd; d += blockDim.x) orow[d] = 0.0f;
        return;
    }
    float sum = 0.0f;
    for (u32 j = threadIdx.x; j < nk; j += blockDim.x) {
        const float e = expf(p[j] - mx);  // exp(-inf) = 0 for masked keys
        p[j] = e;
        sum += e;
    }
    const float inv = 1.0f / block_sum(sum, red);  // block_sum's barriers publish p
    for (u32 d = threadIdx.x; d < hd; d += blockDim.x) {
        float acc = 0.0f;
        for (u32 j = 0; j < nk; ++j) acc += p[j] * vb[(u64)j * hd + d];
        orow[d] = acc * inv;
    }
}

// nll[r] = logsumexp(logits[r, :]) - logits[r, target[r]]. One block per row.
extern "C" __global__ void nll_rows(float* __restrict__ nll, const float* __restrict__ logits,
                                    const u32* __restrict__ target, u32 v) {
    __shared__ float sh[33];
    const float* row = logits + (u64)blockIdx.x * v;
    float mx = -INF;
    for (u32 j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, sh);
    float s = 0.0f;
    for (u32 j = threadIdx.x; j < v; j += blockDim.x) s += expf(row[j] - mx);
    s = block_sum(s, sh);
    if (threadIdx.x == 0) nll[blockIdx.x] = mx + logf(s) - row[target[blockIdx.x]];
}
