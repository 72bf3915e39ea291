// _core.get_device_layer: a layer in GPU memory as DLPack capsules (one per
// tensor), which torch.from_dlpack turns into CUDA tensors without a copy.
// Each capsule keeps the layer's device memory alive until torch releases
// the tensor. The GPU tier waited for the layer's copies before returning
// it, so the tensors may be used on any stream.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "layercache/layer_cache.h"

namespace py = pybind11;

namespace layercache {
namespace {

// The DLPack ABI (dlpack.h, v0.8; the legacy "dltensor" capsule every torch
// accepts), declared here to need no header.
struct DLDevice {
  int32_t device_type;  // kDLCUDA = 2
  int32_t device_id;
};
struct DLDataType {
  uint8_t code;  // kDLInt 0, kDLUInt 1, kDLFloat 2, kDLBfloat 4, kDLBool 6
  uint8_t bits;
  uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // null: compact, row-major
  uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

struct Holder {
  DeviceLayerPtr layer;
  std::vector<int64_t> shape;
  DLManagedTensor managed{};
};

// DLPack's code for a dtype; false for those torch cannot take as such
// (sub-byte and 8-bit floats travel as uint8 bytes, and Python views them).
bool DLType(DType t, DLDataType* out) {
  const uint8_t bits = static_cast<uint8_t>(DTypeBits(t));
  switch (t) {
    case DType::BOOL:
      *out = {6, 8, 1};
      return true;
    case DType::U8:
    case DType::U16:
    case DType::U32:
    case DType::U64:
      *out = {1, bits, 1};
      return true;
    case DType::I8:
    case DType::I16:
    case DType::I32:
    case DType::I64:
      *out = {0, bits, 1};
      return true;
    case DType::F16:
    case DType::F32:
    case DType::F64:
      *out = {2, bits, 1};
      return true;
    case DType::BF16:
      *out = {4, 16, 1};
      return true;
    default:
      return false;
  }
}

void DeleteHolder(DLManagedTensor* self) { delete static_cast<Holder*>(self->manager_ctx); }

void CapsuleDestructor(PyObject* capsule) {
  // Still named "dltensor": no consumer took it, so it is ours to free.
  if (PyCapsule_IsValid(capsule, "dltensor")) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(capsule, "dltensor"));
    m->deleter(m);
  }
}

py::object Capsule(const DeviceLayerPtr& layer, const TensorInfo& t) {
  auto holder = std::make_unique<Holder>();
  holder->layer = layer;
  DLDataType dtype{};
  if (DLType(t.dtype, &dtype)) {
    for (uint64_t d : t.shape) holder->shape.push_back(static_cast<int64_t>(d));
  } else {
    dtype = {1, 8, 1};  // raw bytes
    holder->shape.push_back(static_cast<int64_t>(t.nbytes));
  }
  DLTensor& x = holder->managed.dl_tensor;
  x.data = layer->tensor_data(t);
  x.device = {2, layer->device()};
  x.ndim = static_cast<int32_t>(holder->shape.size());
  x.dtype = dtype;
  x.shape = holder->shape.empty() ? nullptr : holder->shape.data();
  x.strides = nullptr;
  x.byte_offset = 0;
  holder->managed.manager_ctx = holder.get();
  holder->managed.deleter = DeleteHolder;
  PyObject* cap = PyCapsule_New(&holder->managed, "dltensor", CapsuleDestructor);
  if (cap == nullptr) throw py::error_already_set();
  holder.release();  // the capsule (or its consumer) owns it now
  return py::reinterpret_steal<py::object>(cap);
}

}  // namespace

void BindGpu(py::module_& m) {
  m.def(
      "parse_device",
      [](const std::string& device) {
        auto d = ParseDevice(device);
        if (!d.ok()) throw Error(d.status());
        return *d;
      },
      py::arg("device"),
      "layercache::ParseDevice: 'cuda' -> 0, 'cuda:N' -> N, 'cpu' -> -1; ValueError otherwise.");
  m.def(
      "get_device_layer",
      [](LayerCache& c, const std::string& model_id, int64_t layer_index, const std::string& quant,
         const std::string& revision, const std::string& device) -> py::object {
        DeviceLayerPtr layer;
        {
          py::gil_scoped_release release;
          layer = c.get_layer(LayerKey{model_id, layer_index, quant, revision}, device);
        }
        if (!layer) return py::none();
        py::list tensors;
        for (const TensorInfo& t : layer->tensors()) {
          tensors.append(
              py::make_tuple(t.name, std::string(DTypeName(t.dtype)), t.shape, Capsule(layer, t)));
        }
        return py::make_tuple(tensors, layer->metadata());
      },
      py::arg("cache"), py::arg("model_id"), py::arg("layer_index"), py::arg("quantization_mode"),
      py::arg("revision"), py::arg("device"),
      "A cached layer in GPU memory: ([(name, dtype, shape, DLPack capsule)], metadata), or None.");
}

}  // namespace layercache
