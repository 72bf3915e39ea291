// A kernel that keeps the GPU busy for a given number of clock cycles: the
// "compute" of gpu_bench's streaming pass (a stand-in for a layer's forward
// step, which the copies of the next layers must hide behind).
#include <cuda_runtime.h>

namespace {
__global__ void Spin(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}
}  // namespace

extern "C" cudaError_t layercache_bench_spin(cudaStream_t stream, long long cycles, int blocks) {
  Spin<<<blocks, 128, 0, stream>>>(cycles);
  return cudaGetLastError();
}
