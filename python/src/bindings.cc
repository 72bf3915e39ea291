// The `layercache._core` extension: a thin pybind11 layer over the C++
// library. Python-side conversions (torch, numpy, modules) live in
// layercache/__init__.py. The GIL is released during I/O and loads.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <optional>
#include <unordered_map>

#include "layercache/copy_on_write.h"
#include "layercache/layer_cache.h"
#include "layercache/status.h"
#include "layercache/version.h"

namespace py = pybind11;
using namespace layercache;

void RegisterQuantBindings(py::module_& m);  // quant_bindings.cc
namespace layercache {
void RegisterLogBindings(py::module_& m);       // log_bindings.cc
void RegisterSettingsBindings(py::module_& m);  // settings_bindings.cc
}  // namespace layercache

namespace {

// How a layercache::Error reaches Python (include/layercache/status.h): a bad
// argument (kInvalidArgument) is a ValueError with the message alone, as it
// says how to fix the call; every other code is an OSError whose text starts
// with the code's name ("corruption: ...", "io_error: ...").
void SetPythonErrorFor(const Error& e) {
  if (e.code() == StatusCode::kInvalidArgument) {
    PyErr_SetString(PyExc_ValueError, e.status().message().c_str());
  } else {
    PyErr_SetString(PyExc_OSError, e.what());
  }
}

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
    if (!dtype)
      throw Error(Status::InvalidArgument("unsupported dtype " + t[1].cast<std::string>()));
    py::buffer buf = t[3].cast<py::buffer>();
    keep.push_back(buf.request());
    const py::buffer_info& info = keep.back();
    TensorSpec spec{t[0].cast<std::string>(), *dtype, t[2].cast<std::vector<uint64_t>>()};
    inputs.push_back({spec, static_cast<const std::byte*>(info.ptr),
                      static_cast<size_t>(info.size * info.itemsize)});
    specs.push_back(spec);
  }
  auto plan = PlanLayout(specs);
  if (!plan.ok()) throw Error(Status::InvalidArgument(plan.status().message()));
  std::map<std::string, const Input*> by_name;
  for (const Input& in : inputs) by_name[in.spec.name] = &in;
  const uint64_t total = plan->empty() ? 0 : plan->back().offset + plan->back().nbytes;
  for (const TensorInfo& t : *plan) {
    if (by_name[t.name]->size != t.nbytes) {
      throw Error(Status::InvalidArgument(
          "tensor \"" + t.name + "\" has " + std::to_string(by_name[t.name]->size) +
          " bytes but its dtype and shape need " + std::to_string(t.nbytes)));
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
  std::shared_ptr<const void> owner;  // the layer, or a private copy of its bytes
  const std::byte* data;
  size_t size;
  bool writable;
};

// [(name, dtype, shape, buffer, None)], the buffers pointing into the layer.
py::list Tensors(const std::shared_ptr<PyLayer>& holder) {
  py::list out;
  for (const TensorInfo& t : holder->layer->tensors()) {
    auto bytes = holder->layer->tensor_data(t);
    auto buffer = std::make_shared<TensorBuffer>(
        TensorBuffer{holder->layer, bytes.data(), bytes.size(), /*writable=*/false});
    out.append(py::make_tuple(t.name, std::string(DTypeName(t.dtype)), t.shape, py::cast(buffer),
                              py::none()));
  }
  return out;
}

// (buffer, [(name, dtype, shape, offset, nbytes)], how): private, writable
// bytes of the layer (one buffer) and where each tensor lies in them. What
// Python hands out views them: writes to them (torch in-place ops, numpy)
// reach neither the cache's bytes nor any other holder (docs/PYTHON.md,
// "writes"). `how` is "mapped" for a copy-on-write mapping of the file behind
// the layer's buffer (a memory file, or the entry file; copy_on_write.h): no
// copy, a write costs a page copy where it happens; "copied" for a copy made
// here without the GIL: layers under `min_mapped` bytes (a copy of them costs
// less than the page faults of a mapping; docs/PYTHON.md) or with no file
// behind them.
py::tuple PrivateTensors(const std::shared_ptr<PyLayer>& holder, uint64_t min_mapped) {
  const Layer& layer = *holder->layer;
  std::shared_ptr<TensorBuffer> whole;
  const char* how = "mapped";
  std::shared_ptr<CopyOnWriteView> view;
  if (layer.nbytes() >= std::max<uint64_t>(min_mapped, 1)) view = MapCopyOnWrite(holder->layer);
  if (view) {
    std::byte* data = view->data();
    const size_t size = view->size();
    whole = std::make_shared<TensorBuffer>(TensorBuffer{std::move(view), data, size, true});
  } else {
    how = "copied";
    auto copy = std::make_shared<AlignedBuffer>(std::max<size_t>(layer.nbytes(), 1));
    {
      py::gil_scoped_release release;
      if (layer.nbytes() != 0) std::memcpy(copy->data(), layer.data(), layer.nbytes());
    }
    whole = std::make_shared<TensorBuffer>(
        TensorBuffer{copy, copy->data(), static_cast<size_t>(layer.nbytes()), /*writable=*/true});
  }
  py::list out;
  for (const TensorInfo& t : layer.tensors()) {
    out.append(
        py::make_tuple(t.name, std::string(DTypeName(t.dtype)), t.shape, t.offset, t.nbytes));
  }
  return py::make_tuple(py::cast(whole), out, how);
}

py::object Wrap(LayerPtr layer) {
  if (!layer) return py::none();
  return py::cast(std::make_shared<PyLayer>(PyLayer{std::move(layer)}));
}

// ---- the memory-hit path of LayerCache.get_layer --------------------------
//
// A hit must cost about what a dict lookup does (docs/PYTHON.md, "hit cost"),
// so get_layer is a vectorcall C function, not a pybind11 method: it looks up
// the objects Python built for the key last time, asks the cache for the
// layer (counted, LRU-touched, the GIL released), and hands the same objects
// out again when the cache returned the very layer they were built from and
// torch's version counters say nobody changed them in place. Anything else
// (a miss of the memo, module=, a device) goes to Python.
class HitPath {
 public:
  HitPath(std::shared_ptr<LayerCache> cache, py::object build, py::object slow, uint64_t budget)
      : cache_(std::move(cache)),
        build_(std::move(build)),
        slow_(std::move(slow)),
        budget_(budget) {}

  // serve(key parts, fetch): the object for the layer `fetch` returns.
  template <typename Fetch>
  PyObject* Serve(std::string_view model, int64_t index, std::string_view quant,
                  std::string_view rev, const Fetch& fetch) {
    std::string k = Key(model, index, quant, rev);
    const Layer* known = nullptr;
    if (auto it = memo_.find(k); it != memo_.end()) {
      int64_t v = Versions(it->second.tensors);
      if (v == -1 && PyErr_Occurred()) return nullptr;
      if (v == it->second.versions) known = it->second.layer.get();
    }
    LayerKey key{std::string(model), index, std::string(quant), std::string(rev)};
    LayerPtr layer;
    try {
      py::gil_scoped_release release;
      layer = fetch(key);
    } catch (...) {
      SetPythonError(std::current_exception());
      return nullptr;
    }
    auto it = memo_.find(k);
    if (!layer) {
      if (it != memo_.end()) Erase(it);
      Py_RETURN_NONE;
    }
    if (layer.get() == known && it != memo_.end() && it->second.layer == layer) {
      return py::object(it->second.obj).release().ptr();
    }
    // Build (Python), then remember.
    try {
      const uint64_t nbytes = layer->nbytes();
      py::tuple built =
          build_(Wrap(layer), py::str(model.data(), model.size()), index,
                 py::str(quant.data(), quant.size()), py::str(rev.data(), rev.size()));
      Entry e;
      e.layer = std::move(layer);
      e.obj = built[0];
      for (py::handle t : built[1].cast<py::list>())
        e.tensors.push_back(py::reinterpret_borrow<py::object>(t));
      e.versions = Versions(e.tensors);
      if (e.versions == -1 && PyErr_Occurred()) throw py::error_already_set();
      e.nbytes = nbytes;
      e.model = std::string(model);
      e.index = index;
      e.seq = ++seq_;
      py::object obj = e.obj;
      if (auto old = memo_.find(k); old != memo_.end()) Erase(old);
      order_.emplace(e.seq, k);
      bytes_ += e.nbytes;
      memo_.emplace(std::move(k), std::move(e));
      while (bytes_ > budget_ && memo_.size() > 1) Erase(memo_.find(order_.begin()->second));
      return obj.release().ptr();
    } catch (py::error_already_set& e) {
      e.restore();
      return nullptr;
    } catch (...) {
      SetPythonError(std::current_exception());
      return nullptr;
    }
  }

  void Forget(const std::optional<std::string>& model, std::optional<int64_t> index) {
    for (auto it = memo_.begin(); it != memo_.end();) {
      auto next = std::next(it);
      if (!model || (it->second.model == *model && (!index || it->second.index == *index)))
        Erase(it);
      it = next;
    }
  }

  size_t size() const { return memo_.size(); }
  uint64_t bytes() const { return bytes_; }

  // get_layer(model_id, layer_index, quantization_mode=None, device="cpu",
  //           module=None, revision=None)
  static PyObject* GetLayer(PyObject* capsule, PyObject* const* args, Py_ssize_t nargs,
                            PyObject* kwnames) {
    auto* self = static_cast<HitPath*>(PyCapsule_GetPointer(capsule, "layercache.HitPath"));
    if (self == nullptr) return nullptr;
    static const char* const kNames[] = {"model_id", "layer_index", "quantization_mode",
                                         "device",   "module",      "revision"};
    PyObject* slot[6] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
    bool simple = nargs <= 6;
    for (Py_ssize_t i = 0; simple && i < nargs; ++i) slot[i] = args[i];
    const Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    for (Py_ssize_t j = 0; simple && j < nkw; ++j) {
      PyObject* name = PyTuple_GET_ITEM(kwnames, j);
      int found = -1;
      for (int n = 0; n < 6; ++n) {
        if (PyUnicode_CompareWithASCIIString(name, kNames[n]) == 0) found = n;
      }
      if (found < 0 || slot[found] != nullptr) {
        simple = false;
      } else {
        slot[found] = args[nargs + j];
      }
    }
    std::string_view model, quant, rev;
    Py_ssize_t len = 0;
    const char* s = nullptr;
    simple = simple && slot[0] && PyUnicode_CheckExact(slot[0]) && slot[1] &&
             PyLong_CheckExact(slot[1]) && (!slot[4] || slot[4] == Py_None) &&
             (!slot[3] || (PyUnicode_CheckExact(slot[3]) &&
                           PyUnicode_CompareWithASCIIString(slot[3], "cpu") == 0));
    if (simple && (s = PyUnicode_AsUTF8AndSize(slot[0], &len)) != nullptr) {
      model = std::string_view(s, len);
    } else {
      simple = false;
    }
    for (int n : {2, 5}) {
      if (!simple || !slot[n] || slot[n] == Py_None) continue;
      if (!PyUnicode_CheckExact(slot[n]) ||
          (s = PyUnicode_AsUTF8AndSize(slot[n], &len)) == nullptr) {
        simple = false;
      } else {
        (n == 2 ? quant : rev) = std::string_view(s, len);
      }
    }
    int64_t index = simple ? PyLong_AsLongLong(slot[1]) : 0;
    if (!simple || (index == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      return PyObject_Vectorcall(self->slow_.ptr(), args, nargs, kwnames);
    }
    return self->Serve(model, index, quant, rev,
                       [self](const LayerKey& key) { return self->cache_->get_layer(key); });
  }

  const std::shared_ptr<LayerCache>& cache() const { return cache_; }

 private:
  struct Entry {
    LayerPtr layer;
    py::object obj;
    std::vector<py::object> tensors;
    int64_t versions = 0;
    uint64_t nbytes = 0;
    std::string model;
    int64_t index = 0;
    uint64_t seq = 0;
  };

  static std::string Key(std::string_view model, int64_t index, std::string_view quant,
                         std::string_view rev) {
    std::string k;
    k.reserve(model.size() + quant.size() + rev.size() + 3 + sizeof index);
    k.append(model).push_back('\0');
    k.append(quant).push_back('\0');
    k.append(rev).push_back('\0');
    k.append(reinterpret_cast<const char*>(&index), sizeof index);
    return k;
  }

  // The sum of the tensors' torch version counters; -1 with an error set.
  static int64_t Versions(const std::vector<py::object>& tensors) {
    static PyObject* name = PyUnicode_InternFromString("_version");
    int64_t sum = 0;
    for (const py::object& t : tensors) {
      PyObject* v = PyObject_GetAttr(t.ptr(), name);
      if (v == nullptr) return -1;
      sum += PyLong_AsLongLong(v);
      Py_DECREF(v);
    }
    return sum;
  }

  void Erase(std::unordered_map<std::string, Entry>::iterator it) {
    bytes_ -= it->second.nbytes;
    order_.erase(it->second.seq);
    memo_.erase(it);
  }

  static void SetPythonError(std::exception_ptr p) {
    try {
      std::rethrow_exception(p);
    } catch (const Error& e) {
      SetPythonErrorFor(e);
    } catch (const std::bad_alloc&) {
      PyErr_NoMemory();
    } catch (const std::exception& e) {
      PyErr_SetString(PyExc_RuntimeError, e.what());
    }
  }

  std::shared_ptr<LayerCache> cache_;
  py::object build_;
  py::object slow_;
  uint64_t budget_;
  uint64_t bytes_ = 0;
  uint64_t seq_ = 0;
  std::unordered_map<std::string, Entry> memo_;
  std::map<uint64_t, std::string> order_;  // oldest first out
};

PyMethodDef kGetLayerDef = {
    "get_layer", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(&HitPath::GetLayer)),
    METH_FASTCALL | METH_KEYWORDS,
    "get_layer(model_id, layer_index, quantization_mode=None, device='cpu', module=None, "
    "revision=None)\n--\n\nThe cached layer, or None (LayerCache.get_layer)."};

}  // namespace

namespace layercache {
void BindGpu(py::module_& m);  // gpu_bindings.cc
}  // namespace layercache

PYBIND11_MODULE(_core, m) {
  m.doc() = "layercache C++ core";
  m.attr("__version__") = LAYERCACHE_VERSION;
  layercache::BindGpu(m);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Error& e) {
      SetPythonErrorFor(e);
    }
  });

  py::class_<TensorBuffer, std::shared_ptr<TensorBuffer>>(m, "TensorBuffer", py::buffer_protocol())
      .def_buffer([](TensorBuffer& b) {
        return py::buffer_info(const_cast<std::byte*>(b.data), 1,
                               py::format_descriptor<uint8_t>::format(), 1,
                               {static_cast<ssize_t>(b.size)}, {1}, /*readonly=*/!b.writable);
      });

  py::class_<PyLayer, std::shared_ptr<PyLayer>>(m, "Layer")
      .def("tensors", &Tensors)
      .def("private_tensors", &PrivateTensors)
      .def_property_readonly("nbytes", [](const PyLayer& l) { return l.layer->nbytes(); })
      .def_property_readonly("metadata", [](const PyLayer& l) { return l.layer->metadata(); })
      .def_property_readonly(
          "id", [](const PyLayer& l) { return reinterpret_cast<uintptr_t>(l.layer.get()); })
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

  // Large layer buffers in a memory file, so that Python's private tensors
  // are copy-on-write mappings (layercache/copy_on_write.h).
  m.def("set_file_backed_buffers", &SetFileBackedBuffers);
  m.def("file_backed_buffers", &FileBackedBuffers);

  m.def("build_layer",
        [](const py::list& tensors, const std::map<std::string, std::string>& metadata) {
          return Wrap(BuildLayer(tensors, metadata));
        });

  // Every LayerCacheOptions field, under its C++ (= the seed's keyword) name;
  // the enums as their names ("xxh3-128", "scan-resistant", "auto", ...).
  py::class_<LayerCacheOptions>(m, "Options")
      .def(py::init<>())
      .def_readwrite("cache_dir", &LayerCacheOptions::cache_dir)
      .def_readwrite("max_cache_size_gb", &LayerCacheOptions::max_cache_size_gb)
      .def_readwrite("max_memory_cache_size_gb", &LayerCacheOptions::max_memory_cache_size_gb)
      .def_readwrite("enable_compression", &LayerCacheOptions::enable_compression)
      .def_readwrite("compression_level", &LayerCacheOptions::compression_level)
      .def_readwrite("persist_metadata", &LayerCacheOptions::persist_metadata)
      .def_property(
          "checksum_algorithm",
          [](const LayerCacheOptions& o) {
            return std::string(ChecksumAlgorithmName(o.checksum_algorithm));
          },
          [](LayerCacheOptions& o, const std::string& v) {
            o.checksum_algorithm = ParseChecksumAlgorithm(v);
          })
      .def_property(
          "eviction_policy",
          [](const LayerCacheOptions& o) {
            return std::string(EvictionPolicyName(o.eviction_policy));
          },
          [](LayerCacheOptions& o, const std::string& v) {
            o.eviction_policy = ParseEvictionPolicy(v);
          })
      .def_property(
          "disk_read_mode",
          [](const LayerCacheOptions& o) {
            return std::string(DiskReadModeName(o.disk_read_mode));
          },
          [](LayerCacheOptions& o, const std::string& v) {
            o.disk_read_mode = ParseDiskReadMode(v);
          })
      .def_readwrite("prefetch_threads", &LayerCacheOptions::prefetch_threads)
      .def_readwrite("worker_threads", &LayerCacheOptions::worker_threads)
      .def_readwrite("remote_urls", &LayerCacheOptions::remote_urls)
      .def_readwrite("remote_timeout_ms", &LayerCacheOptions::remote_timeout_ms)
      .def_readwrite("remote_chunk_mb", &LayerCacheOptions::remote_chunk_mb)
      .def_readwrite("remote_lease_ms", &LayerCacheOptions::remote_lease_ms)
      .def_readwrite("remote_wait_ms", &LayerCacheOptions::remote_wait_ms)
      .def_readwrite("remote_ttl_s", &LayerCacheOptions::remote_ttl_s)
      .def_readwrite("max_gpu_cache_size_gb", &LayerCacheOptions::max_gpu_cache_size_gb)
      .def_readwrite("pin_memory_layers", &LayerCacheOptions::pin_memory_layers)
      .def("validate", &LayerCacheOptions::Validate);

  py::class_<LayerCache, std::shared_ptr<LayerCache>>(m, "Cache")
      .def(py::init([](const LayerCacheOptions& o) {
        py::gil_scoped_release release;
        return std::make_shared<LayerCache>(o);
      }))
      .def("get_layer",
           [](LayerCache& c, const std::string& model_id, int64_t layer_index,
              const std::string& quant, const std::string& revision, const std::string& device) {
             LayerPtr layer;
             {
               py::gil_scoped_release release;
               if (device != "cpu") {  // the facade's device check
                 layer = c.get_layer(model_id, layer_index,
                                     quant.empty() ? std::nullopt : std::optional(quant), device);
               }
               layer = c.get_layer(LayerKey{model_id, layer_index, quant, revision});
             }
             return Wrap(std::move(layer));
           })
      // get_layer for Python's reuse of the objects it built: `known` is the
      // identity of the layer those objects view; when the cache still
      // holds that very layer, its identity (an int) comes back and no
      // wrapper is made; otherwise the layer (or None on a miss). The
      // objects keep their layer alive, so its address is not reused
      // while they exist.
      .def(
          "lookup",
          [](LayerCache& c, const std::string& model_id, int64_t layer_index,
             const std::string& quant, const std::string& revision, uintptr_t known) -> py::object {
            LayerPtr layer;
            {
              py::gil_scoped_release release;
              layer = c.get_layer(LayerKey{model_id, layer_index, quant, revision});
            }
            if (!layer) return py::none();
            const auto id = reinterpret_cast<uintptr_t>(layer.get());
            if (id == known) return py::int_(id);
            return Wrap(std::move(layer));
          })
      .def("get_layer_with_prefetch",
           [](LayerCache& c, const std::string& model_id, int64_t layer_index, int64_t num_layers,
              int lookahead, const std::string& quant, const std::string& revision,
              uintptr_t known) -> py::object {
             LayerPtr layer;
             {
               py::gil_scoped_release release;
               layer = c.get_layer_with_prefetch(
                   model_id, layer_index, num_layers, lookahead,
                   quant.empty() ? std::nullopt : std::optional(quant), nullptr, revision);
             }
             if (!layer) return py::none();
             const auto id = reinterpret_cast<uintptr_t>(layer.get());
             if (id == known) return py::int_(id);
             return Wrap(std::move(layer));
           })
      .def("options", &LayerCache::options, py::return_value_policy::copy)
      // Removes the entries of (model, layer or all, revision or a 7+ character
      // prefix of it), all quantization modes; returns how many.
      .def("invalidate_revision",
           [](LayerCache& c, const std::string& model_id, std::optional<int64_t> layer_index,
              const std::string& revision) {
             if (revision.size() < 7) {
               throw Error(Status::InvalidArgument(
                   "revision must be a commit or a prefix of at least 7 characters, got \"" +
                   revision + "\""));
             }
             py::gil_scoped_release release;
             size_t n = 0;
             for (const EntryInfo& e : c.list_entries()) {
               if (e.key.model_id != model_id ||
                   (layer_index && e.key.layer_index != *layer_index) ||
                   e.key.revision.rfind(revision, 0) != 0) {
                 continue;
               }
               n += c.remove_entry(e.key) ? 1 : 0;
             }
             return n;
           })
      .def("default_revision", &LayerCache::default_revision,
           py::call_guard<py::gil_scoped_release>())
      .def("model_config", &LayerCache::model_config, py::call_guard<py::gil_scoped_release>())
      .def("save_model_config",
           [](LayerCache& c, const std::string& model_id, const std::string& revision,
              const std::string& json) { c.save_model_config(model_id, revision, json); })
      .def("cache_layer",
           [](LayerCache& c, const std::string& model_id, int64_t layer_index,
              const std::shared_ptr<PyLayer>& layer, const std::string& quant,
              const std::string& revision) {
             py::gil_scoped_release release;
             return c.cache_layer(LayerKey{model_id, layer_index, quant, revision}, layer->layer);
           })
      .def("download_and_cache",
           [](LayerCache& c, const std::string& model_id, int64_t layer_index,
              const std::string& repo_id, const std::string& filename, const DownloadOptions& o,
              bool non_layer) {
             // The library draws nothing: like the CLI, Python shows the
             // terminal bar (ProgressBarCallback draws on a terminal only).
             DownloadOptions with_bar = o;
             if (!with_bar.quiet && !with_bar.progress) with_bar.progress = ProgressBarCallback();
             LayerPtr layer;
             {
               py::gil_scoped_release release;
               layer =
                   non_layer
                       ? c.download_non_layer_tensors(model_id, repo_id, filename, with_bar)
                       : c.download_and_cache(model_id, layer_index, repo_id, filename, with_bar);
             }
             return Wrap(std::move(layer));
           })
      .def("import_checkpoint",
           [](LayerCache& c, const std::string& dir, const std::string& model_id,
              const std::vector<int64_t>& layers, const std::string& pattern,
              bool include_non_layer, const std::string& revision, bool quiet) {
             ProgressCallback bar = quiet ? ProgressCallback() : ProgressBarCallback();
             py::gil_scoped_release release;
             return c.import_checkpoint(dir, model_id, layers, pattern, include_non_layer, revision,
                                        bar);
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
              const std::string& quant, const std::string& revision) {
             py::gil_scoped_release release;
             return c.prefetch(model_id, indices,
                               quant.empty() ? std::nullopt : std::optional<std::string>(quant),
                               nullptr, revision);
           })
      .def("stats_json", [](LayerCache& c) { return c.get_stats().ToJson(); })
      .def("metrics_text", &LayerCache::metrics_text, py::call_guard<py::gil_scoped_release>())
      .def("stats_text", [](LayerCache& c) { return c.get_stats().ToText(); })
      .def_property_readonly("cache_dir", &LayerCache::cache_dir);

  py::class_<HitPath>(m, "HitPath")
      .def(py::init<std::shared_ptr<LayerCache>, py::object, py::object, uint64_t>())
      // The get_layer function (a vectorcall builtin) bound to this memo.
      .def("get_layer_function",
           [](py::object self) {
             auto* hp = self.cast<HitPath*>();
             PyObject* capsule = PyCapsule_New(hp, "layercache.HitPath", [](PyObject* c) {
               Py_XDECREF(static_cast<PyObject*>(PyCapsule_GetContext(c)));
             });
             if (capsule == nullptr) throw py::error_already_set();
             PyCapsule_SetContext(capsule, self.inc_ref().ptr());  // keeps the HitPath alive
             PyObject* fn = PyCFunction_NewEx(&kGetLayerDef, capsule, nullptr);
             Py_DECREF(capsule);
             if (fn == nullptr) throw py::error_already_set();
             return py::reinterpret_steal<py::object>(fn);
           })
      .def("get_layer_with_prefetch",
           [](HitPath& h, const std::string& model_id, int64_t layer_index, int64_t num_layers,
              int lookahead, const std::string& quant, const std::string& revision) {
             PyObject* r = h.Serve(model_id, layer_index, quant, revision, [&](const LayerKey&) {
               return h.cache()->get_layer_with_prefetch(
                   model_id, layer_index, num_layers, lookahead,
                   quant.empty() ? std::nullopt : std::optional(quant), nullptr, revision);
             });
             if (r == nullptr) throw py::error_already_set();
             return py::reinterpret_steal<py::object>(r);
           })
      .def("forget", &HitPath::Forget, py::arg("model_id") = py::none(),
           py::arg("layer_index") = py::none())
      .def_property_readonly("size", &HitPath::size)
      .def_property_readonly("bytes", &HitPath::bytes);

  // The process-wide instance (layercache::get_layer_cache).
  m.def(
      "get_layer_cache",
      [](std::optional<LayerCacheOptions> o) {
        py::gil_scoped_release release;
        return get_layer_cache(std::move(o));
      },
      py::arg("options") = py::none());
  m.def("reset_layer_cache", &reset_layer_cache);

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

  RegisterQuantBindings(m);
  layercache::RegisterLogBindings(m);
  layercache::RegisterSettingsBindings(m);
}
