// Caches a layer and reads it back through the installed library.
#include <cstdio>
#include <cstring>
#include <layercache/layer_cache.h>
#include <layercache/version.h>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  layercache::LayerCacheOptions options;
  options.cache_dir = argv[1];
  options.max_cache_size_gb = 1;
  layercache::LayerCache cache(options);
  std::vector<layercache::TensorInfo> tensors(1);
  tensors[0].name = "w";
  tensors[0].dtype = layercache::DType::F32;
  tensors[0].shape = {4};
  tensors[0].nbytes = 16;
  layercache::AlignedBuffer data(16);
  const float values[4] = {1, 2, 3, 4};
  std::memcpy(data.data(), values, 16);
  auto layer = layercache::Layer::Create(std::move(tensors), std::move(data), {}).value();
  if (!cache.cache_layer("consumer/model", 0, layer)) return 1;
  auto back = cache.get_layer("consumer/model", 0);
  if (!back || std::memcmp(back->data(), values, 16) != 0) return 1;
  std::printf("layercache %s (headers %s): round trip ok\n", layercache::Version(),
              LAYERCACHE_VERSION);
  return std::strcmp(layercache::Version(), LAYERCACHE_VERSION) == 0 ? 0 : 1;
}
