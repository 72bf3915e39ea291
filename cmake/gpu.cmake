# The GPU tier (src/gpu). Its logic is always built (the tests run it on a
# simulated device); the CUDA runtime behind it only with LAYERCACHE_CUDA:
#   AUTO (default): on when the CUDA toolkit is found, off otherwise;
#   ON: the toolkit is required; OFF: never (device='cuda:N' then says so).
# cudart is linked statically: the library and its programs need no CUDA
# library at run time, only the driver where a GPU is used.
set(LAYERCACHE_CUDA "AUTO" CACHE STRING "GPU tier on CUDA: AUTO, ON or OFF")
set(LAYERCACHE_CUDA_ARCH "90" CACHE STRING "GPU architecture of the benchmark's kernel (90: H100/H200)")

target_sources(layercache PRIVATE
  src/disk/entry_reader.cc
  src/gpu/device_runtime.cc
  src/gpu/device_layer.cc
  src/gpu/staging_pool.cc
  src/gpu/gpu_tier.cc)

set(LAYERCACHE_HAVE_CUDA OFF)
if(LAYERCACHE_CUDA STREQUAL "AUTO")
  find_package(CUDAToolkit QUIET)
  set(LAYERCACHE_HAVE_CUDA ${CUDAToolkit_FOUND})
elseif(LAYERCACHE_CUDA)
  find_package(CUDAToolkit REQUIRED)
  set(LAYERCACHE_HAVE_CUDA ON)
endif()

if(LAYERCACHE_HAVE_CUDA)
  message(STATUS "layercache: GPU tier on CUDA ${CUDAToolkit_VERSION} (${CUDAToolkit_BIN_DIR})")
  target_sources(layercache PRIVATE src/gpu/cuda_runtime.cc)
  target_link_libraries(layercache PRIVATE CUDA::cudart_static)
else()
  message(STATUS "layercache: GPU tier without CUDA (device='cuda:N' reports that)")
  target_sources(layercache PRIVATE src/gpu/no_cuda_runtime.cc)
endif()
