# The GPU tier (src/gpu). Its logic is always built (the tests run it on a
# simulated device); the CUDA runtime behind it only with LAYERCACHE_CUDA:
#   AUTO (default): on when the CUDA toolkit is found, off otherwise;
#   ON: the toolkit is required; OFF: never (device='cuda:N' then says so).
# cudart is linked statically: the library and its programs need no CUDA
# library at run time, only the driver where a GPU is used.
set(LAYERCACHE_CUDA "AUTO" CACHE STRING "GPU tier on CUDA: AUTO, ON or OFF")
set(LAYERCACHE_CUDA_ARCH "90" CACHE STRING "GPU architecture of the benchmark's kernel (90: H100/H200)")

target_sources(layercache PRIVATE
  src/disk/entry_open.cc
  src/gpu/device_runtime.cc
  src/gpu/device_layer.cc
  src/gpu/staging_pool.cc
  src/gpu/gpu_tier.cc
  src/gpu/gpu_front.cc
  src/gpu/device_runtime_default.cc
  src/layer_cache_gpu.cc)

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
  set(PC_CUDA_LIBS " -L${CUDAToolkit_LIBRARY_DIR} -lcudart_static -ldl -lrt")  # layercache.pc
else()
  message(STATUS "layercache: GPU tier without CUDA (device='cuda:N' reports that)")
  target_sources(layercache PRIVATE src/gpu/no_cuda_runtime.cc)
  set(PC_CUDA_LIBS "")
endif()

# bench/gpu_bench (docs/PERFORMANCE.md): its compute kernel is compiled by
# nvcc for LAYERCACHE_CUDA_ARCH (sm_90 covers H100 and H200; PTX is embedded
# for newer GPUs), the rest by the C++ compiler.
if(LAYERCACHE_HAVE_CUDA AND LAYERCACHE_BUILD_BENCH AND CUDAToolkit_NVCC_EXECUTABLE)
  set(_spin_obj ${CMAKE_CURRENT_BINARY_DIR}/gpu_spin.o)
  add_custom_command(OUTPUT ${_spin_obj}
    COMMAND ${CUDAToolkit_NVCC_EXECUTABLE} -O2 -ccbin ${CMAKE_CXX_COMPILER} -Xcompiler -fPIC
            -gencode arch=compute_${LAYERCACHE_CUDA_ARCH},code=[sm_${LAYERCACHE_CUDA_ARCH},compute_${LAYERCACHE_CUDA_ARCH}]
            -c ${CMAKE_CURRENT_SOURCE_DIR}/bench/gpu_spin.cu -o ${_spin_obj}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/bench/gpu_spin.cu
    COMMENT "nvcc bench/gpu_spin.cu (sm_${LAYERCACHE_CUDA_ARCH})"
    VERBATIM)
  add_executable(gpu_bench bench/gpu_bench.cc ${_spin_obj})
  target_include_directories(gpu_bench PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/bench)
  target_link_libraries(gpu_bench PRIVATE layercache CUDA::cudart_static)
endif()
