// The `layercache._core` extension: a thin pybind11 layer over the C++
// library. Python-side conversions (torch, numpy, modules) live in
// layercache/__init__.py. The GIL is released during I/O and loads.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstring>
#include <future>

#include "layercache/layer_cache.h"

namespace py = pybind11;
using namespace layercache;

namespace {

// A cached layer, kept alive by every buffer handed out from it.
struct PyLayer {
  LayerPtr layer;
};

// (name, dtype, shape, buffer) -> one Layer, with a single copy per tensor.
LayerPtr BuildLayer(const py::list& tensors, const std::map<std::string, std::string>& metadata) {
  struct Input {
    TensorSpec spec;
    const std::byte* data;
    size_t size;
  };
  std::vector<Input> inputs;
  std::vector<py::buffer_info> keep;  // the buffers stay valid while we copy
  std::vector<TensorSpec> specs;
  for (const py::handle& item : tensors) {
    auto t = item.cast<py::tuple>();
    auto dtype = ParseDType(t[1].cast<std::string>());
    if (!dtype) throw std::invalid_argument("unsupported dtype " + t[1].cast<std::string>());
    py::buffer buf = t[3].cast<py::buffer>();
    keep.push_back(buf.request());
    const py::buffer_info& info = keep.back();
    TensorSpec spec{t[0].cast<std::string>(), *dtype, t[2].cast<std::vector<uint64_t>>()};
    inputs.push_back({spec, static_cast<const std::byte*>(info.ptr),
                      static_cast<size_t>(info.size * info.itemsize)});
    specs.push_back(spec);
  }
  auto plan = PlanLayout(specs);
  if (!plan.ok()) throw std::invalid_argument(plan.status().message());
  std::map<std::string, const Input*> by_name;
  for (const Input& in : inputs) by_name[in.spec.name] = &in;
  const uint64_t total = plan->empty() ? 0 : plan->back().offset + plan->back().nbytes;
  for (const TensorInfo& t : *plan) {
    if (by_name[t.name]->size != t.nbytes) {
      throw std::invalid_argument(
          "tensor \"" + t.name + "\" has " + std::to_string(by_name[t.name]->size) +
          " bytes but its dtype and shape need " + std::to_string(t.nbytes));
    }
  }
  AlignedBuffer buffer(total);
  {
    py::gil_scoped_release release;
    for (const TensorInfo& t : *plan) {
      if (t.nbytes != 0) std::memcpy(buffer.data() + t.offset, by_name[t.name]->data, t.nbytes);
    }
  }
  Metadata m(metadata.begin(), metadata.end());
  return Layer::Create(std::move(*plan), std::move(buffer), std::move(m)).value();
}

// One tensor's bytes, exported through the buffer protocol. Every view
// (memoryview, numpy array, torch tensor) made from it references this
// object, which holds the layer: the bytes live as long as any view does.
struct TensorBuffer {
  LayerPtr layer;
  const std::byte* data;
  size_t size;
};

// [(name, dtype, shape, buffer, None)], the buffers pointing into the layer.
py::list Tensors(const std::shared_ptr<PyLayer>& holder) {
  py::list out;
  for (const TensorInfo& t : holder->layer->tensors()) {
    auto bytes = holder->layer->tensor_data(t);
    auto buffer =
        std::make_shared<TensorBuffer>(TensorBuffer{holder->layer, bytes.data(), bytes.size()});
    out.append(py::make_tuple(t.name, std::string(DTypeName(t.dtype)), t.shape, py::cast(buffer),
                              py::none()));
  }
  return out;
}

py::object Wrap(LayerPtr layer) {
  if (!layer) return py::none();
  return py::cast(std::make_shared<PyLayer>(PyLayer{std::move(layer)}));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "layercache C++ core";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      if (e.status().code() == StatusCode::kInvalidArgument) {
        PyErr_SetString(PyExc_ValueError, e.what());
      } else {
        PyErr_SetString(PyExc_OSError, e.what());
      }
    }
  });

  py::class_<TensorBuffer, std::shared_ptr<TensorBuffer>>(m, "TensorBuffer", py::buffer_protocol())
      .def_buffer([](TensorBuffer& b) {
        return py::buffer_info(const_cast<std::byte*>(b.data), 1,
                               py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<ssize_t>(b.size)}, {1}, /*readonly=*/true);
      });

  py::class_<PyLayer, std::shared_ptr<PyLayer>>(m, "Layer")
      .def("tensors", &Tensors)
      .def_property_readonly("nbytes", [](const PyLayer& l) { return l.layer->nbytes(); })
      .def_property_readonly("metadata", [](const PyLayer& l) { return l.layer->metadata(); })
      .def("data_address",
           [](const PyLayer& l) { return reinterpret_cast<uintptr_t>(l.layer->data()); });

  py::class_<std::shared_future<LayerPtr>>(m, "LayerFuture")
      .def("result",
           [](const std::shared_future<LayerPtr>& f) {
             LayerPtr layer;
             {
               py::gil_scoped_release release;
               layer = f.get();
             }
             return Wrap(std::move(layer));
           })
      .def("done", [](const std::shared_future<LayerPtr>& f) {
        return f.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
      });

  m.def("build_layer",
        [](const py::list& tensors, const std::map<std::string, std::string>& metadata) {
          return Wrap(BuildLayer(tensors, metadata));
        });

  py::class_<LayerCache>(m, "Cache")
      .def(py::init([](const std::string& cache_dir, double max_cache_size_gb,
                       double max_memory_cache_size_gb, bool enable_compression,
                       int compression_level, bool persist_metadata,
                       const std::string& checksum_algorithm, const std::string& eviction_policy,
                       const std::string& disk_read_mode, int prefetch_threads,
                       const std::vector<std::string>& remote_urls, int remote_timeout_ms) {
        LayerCacheOptions o;
        o.cache_dir = cache_dir;
        o.max_cache_size_gb = max_cache_size_gb;
        o.max_memory_cache_size_gb = max_memory_cache_size_gb;
        o.enable_compression = enable_compression;
        o.compression_level = compression_level;
        o.persist_metadata = persist_metadata;
        o.checksum_algorithm = ParseChecksumAlgorithm(checksum_algorithm);
        o.eviction_policy = ParseEvictionPolicy(eviction_policy);
        if (disk_read_mode == "buffered") {
          o.disk_read_mode = DiskReadMode::kBuffered;
        } else if (disk_read_mode == "direct") {
          o.disk_read_mode = DiskReadMode::kDirect;
        } else if (disk_read_mode == "mapped") {
          o.disk_read_mode = DiskReadMode::kMapped;
        } else {
          throw std::invalid_argument(
              "disk_read_mode must be \"buffered\", \"direct\" or \"mapped\", got \"" +
              disk_read_mode + "\"");
        }
        o.prefetch_threads = prefetch_threads;
        o.remote_urls = remote_urls;
        o.remote_timeout_ms = remote_timeout_ms;
        py::gil_scoped_release release;
        return std::make_unique<LayerCache>(o);
      }))
      .def("get_layer",
           [](LayerCache& c, const std::string& model_id, int64_t layer_index,
              const std::string& quant, const std::string& revision) {
             LayerPtr layer;
             {
               py::gil_scoped_release release;
               layer = c.get_layer(LayerKey{model_id, layer_index, quant, revision});
             }
             return Wrap(std::move(layer));
           })
      .def("cache_layer",
           [](LayerCache& c, const std::string& model_id, int64_t layer_index,
              const std::shared_ptr<PyLayer>& layer, const std::string& quant) {
             py::gil_scoped_release release;
             return c.cache_layer(LayerKey{model_id, layer_index, quant, ""}, layer->layer);
           })
      .def("download_and_cache",
           [](LayerCache& c, const std::string& model_id, int64_t layer_index,
              const std::string& repo_id, const std::string& filename, const DownloadOptions& o,
              bool non_layer) {
             LayerPtr layer;
             {
               py::gil_scoped_release release;
               layer = non_layer
                           ? c.download_non_layer_tensors(model_id, repo_id, filename, o)
                           : c.download_and_cache(model_id, layer_index, repo_id, filename, o);
             }
             return Wrap(std::move(layer));
           })
      .def("import_checkpoint",
           [](LayerCache& c, const std::string& dir, const std::string& model_id,
              const std::vector<int64_t>& layers, const std::string& pattern) {
             py::gil_scoped_release release;
             return c.import_checkpoint(dir, model_id, layers, pattern);
           })
      .def("invalidate_cache",
           [](LayerCache& c, std::optional<std::string> model_id,
              std::optional<int64_t> layer_index) {
             py::gil_scoped_release release;
             return c.invalidate_cache(model_id, layer_index);
           })
      .def("clear_cache", &LayerCache::clear_cache, py::call_guard<py::gil_scoped_release>())
      .def("verify_cache_integrity",
           [](LayerCache& c) {
             std::vector<CorruptEntry> corrupt;
             {
               py::gil_scoped_release release;
               corrupt = c.verify_cache_integrity();
             }
             py::list out;
             for (const CorruptEntry& e : corrupt) {
               py::dict d;
               d["model_id"] = e.key.model_id;
               d["layer_index"] = e.key.layer_index;
               d["quantization_mode"] = e.key.quantization_mode.empty()
                                            ? py::object(py::none())
                                            : py::cast(e.key.quantization_mode);
               d["path"] = e.path;
               d["reason"] = e.reason;
               out.append(d);
             }
             return out;
           })
      .def("flush",
           [](LayerCache& c) {
             py::gil_scoped_release release;
             c.flush();
           })
      .def("optimize_cache",
           [](LayerCache& c) {
             OptimizeReport r;
             {
               py::gil_scoped_release release;
               r = c.optimize_cache();
             }
             py::dict d;
             d["corrupted_removed"] = r.corrupted_removed;
             d["temp_files_removed"] = r.temp_files_removed;
             d["orphans_adopted"] = r.orphans_adopted;
             d["orphans_removed"] = r.orphans_removed;
             d["rows_dropped"] = r.rows_dropped;
             d["evicted"] = r.evicted;
             return d;
           })
      .def("prefetch",
           [](LayerCache& c, const std::string& model_id, const std::vector<int64_t>& indices,
              const std::string& quant) {
             py::gil_scoped_release release;
             return c.prefetch(model_id, indices,
                               quant.empty() ? std::nullopt : std::optional<std::string>(quant));
           })
      .def("stats_json", [](LayerCache& c) { return c.get_stats().ToJson(); })
      .def("stats_text", [](LayerCache& c) { return c.get_stats().ToText(); })
      .def_property_readonly("cache_dir", &LayerCache::cache_dir);

  py::class_<DownloadOptions>(m, "DownloadOptions")
      .def(py::init<>())
      .def_readwrite("revision", &DownloadOptions::revision)
      .def_readwrite("connections", &DownloadOptions::connections)
      .def_readwrite("quiet", &DownloadOptions::quiet)
      .def_readwrite("layer_pattern", &DownloadOptions::layer_pattern)
      .def_readwrite("endpoint", &DownloadOptions::endpoint)
      .def_readwrite("token", &DownloadOptions::token)
      .def_readwrite("offline", &DownloadOptions::offline)
      .def_readwrite("verify_tls", &DownloadOptions::verify_tls)
      .def_readwrite("ca_bundle", &DownloadOptions::ca_bundle)
      .def_readwrite("max_retries", &DownloadOptions::max_retries);
}
