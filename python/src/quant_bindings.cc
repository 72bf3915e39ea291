// `layercache._core.quant`: the C++ NF4 / int8 kernels for
// layercache/quantization.py. Functions take Python buffers (numpy arrays,
// torch tensors via .numpy(), bytearrays) for their inputs and outputs, check
// their sizes, and run with the GIL released.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "layercache/download.h"
#include "layercache/quantization.h"
#include "layercache/status.h"

namespace py = pybind11;
using namespace layercache;
using namespace layercache::quant;

namespace {

DType ParseFloatDType(const std::string& name) {
  auto d = ParseDType(name);
  if (!d || (*d != DType::BF16 && *d != DType::F16 && *d != DType::F32)) {
    throw Error(Status::InvalidArgument("dtype must be BF16, F16 or F32, got \"" + name + "\""));
  }
  return *d;
}

size_t Width(DType d) { return d == DType::F32 ? 4 : 2; }

// A buffer's bytes, checked to hold at least `need` bytes.
struct Buf {
  py::buffer_info info;
  void* ptr;
  Buf(const py::buffer& b, uint64_t need, bool writable, const char* what) {
    info = b.request(writable);
    const uint64_t have = static_cast<uint64_t>(info.size) * static_cast<uint64_t>(info.itemsize);
    if (have < need) {
      throw Error(Status::InvalidArgument(std::string(what) + " holds " + std::to_string(have) +
                                          " bytes but " + std::to_string(need) + " are needed"));
    }
    ptr = info.ptr;
  }
};

void Check(const Status& s) {
  if (!s.ok()) throw Error(Status::InvalidArgument(s.message()));
}

}  // namespace

void RegisterQuantBindings(py::module_& parent) {
  py::module_ m = parent.def_submodule("quant", "NF4 and int8 kernels (bitsandbytes-compatible)");

  m.def("kernel_name", [] { return std::string(KernelName()); });
  m.def("nf4_table", [] {
    const auto& t = NF4Table();
    return std::vector<float>(t.begin(), t.end());
  });
  m.def("dynamic_map", [] {
    const auto& t = DynamicMap();
    return std::vector<float>(t.begin(), t.end());
  });

  m.def(
      "quantize_nf4",
      [](const py::buffer& src, const std::string& dtype, uint64_t n, int blocksize,
         const py::buffer& packed, const py::buffer& absmax, int threads) {
        const DType d = ParseFloatDType(dtype);
        if (blocksize <= 0) throw Error(Status::InvalidArgument("blocksize must be positive"));
        Buf in(src, n * Width(d), false, "the input");
        Buf p(packed, (n + 1) / 2, true, "the packed output");
        Buf a(absmax, 4 * NumBlocks(n, static_cast<uint64_t>(blocksize)), true,
              "the absmax output");
        Status s;
        {
          py::gil_scoped_release release;
          s = QuantizeNF4(d, in.ptr, n, blocksize, static_cast<uint8_t*>(p.ptr),
                          static_cast<float*>(a.ptr), threads);
        }
        Check(s);
      },
      py::arg("src"), py::arg("dtype"), py::arg("n"), py::arg("blocksize"), py::arg("packed"),
      py::arg("absmax"), py::arg("threads") = 0);

  m.def(
      "dequantize_nf4",
      [](const py::buffer& packed, const py::buffer& absmax, uint64_t n, int blocksize,
         const std::string& out_dtype, const py::buffer& out, int threads) {
        const DType d = ParseFloatDType(out_dtype);
        if (blocksize <= 0) throw Error(Status::InvalidArgument("blocksize must be positive"));
        Buf p(packed, (n + 1) / 2, false, "the packed codes");
        Buf a(absmax, 4 * NumBlocks(n, static_cast<uint64_t>(blocksize)), false, "absmax");
        Buf o(out, n * Width(d), true, "the output");
        Status s;
        {
          py::gil_scoped_release release;
          s = DequantizeNF4(static_cast<const uint8_t*>(p.ptr), static_cast<const float*>(a.ptr), n,
                            blocksize, d, o.ptr, threads);
        }
        Check(s);
      },
      py::arg("packed"), py::arg("absmax"), py::arg("n"), py::arg("blocksize"),
      py::arg("out_dtype"), py::arg("out"), py::arg("threads") = 0);

  m.def("quantize_blockwise8", [](const py::buffer& src, uint64_t n, int blocksize,
                                  const py::buffer& codes, const py::buffer& absmax) {
    if (blocksize <= 0) throw Error(Status::InvalidArgument("blocksize must be positive"));
    Buf in(src, 4 * n, false, "the input");
    Buf c(codes, n, true, "the codes output");
    Buf a(absmax, 4 * NumBlocks(n, static_cast<uint64_t>(blocksize)), true, "the absmax output");
    Status s;
    {
      py::gil_scoped_release release;
      s = QuantizeBlockwise8(static_cast<const float*>(in.ptr), n, blocksize,
                             static_cast<uint8_t*>(c.ptr), static_cast<float*>(a.ptr));
    }
    Check(s);
  });

  m.def("dequantize_blockwise8", [](const py::buffer& codes, const py::buffer& absmax, uint64_t n,
                                    int blocksize, const py::buffer& out) {
    if (blocksize <= 0) throw Error(Status::InvalidArgument("blocksize must be positive"));
    Buf c(codes, n, false, "the codes");
    Buf a(absmax, 4 * NumBlocks(n, static_cast<uint64_t>(blocksize)), false, "absmax");
    Buf o(out, 4 * n, true, "the output");
    py::gil_scoped_release release;
    DequantizeBlockwise8(static_cast<const uint8_t*>(c.ptr), static_cast<const float*>(a.ptr), n,
                         blocksize, static_cast<float*>(o.ptr));
  });

  m.def(
      "nested_offset",
      [](const py::buffer& absmax, uint64_t n, int threads) {
        if (threads < 0) throw Error(Status::InvalidArgument("threads must be >= 0"));
        Buf a(absmax, 4 * n, false, "absmax");
        return NestedOffset(static_cast<const float*>(a.ptr), n, threads);
      },
      py::arg("absmax"), py::arg("n"), py::arg("threads") = 0);
  m.def("torch_default_threads", &TorchDefaultThreads);

  m.def(
      "quantize_int8",
      [](const py::buffer& src, const std::string& dtype, uint64_t rows, uint64_t cols,
         const py::buffer& out, const py::buffer& scb, int threads) {
        const DType d = ParseFloatDType(dtype);
        Buf in(src, rows * cols * Width(d), false, "the input");
        Buf o(out, rows * cols, true, "the int8 output");
        Buf s_(scb, 4 * rows, true, "the SCB output");
        Status s;
        {
          py::gil_scoped_release release;
          s = QuantizeInt8(d, in.ptr, rows, cols, static_cast<int8_t*>(o.ptr),
                           static_cast<float*>(s_.ptr), threads);
        }
        Check(s);
      },
      py::arg("src"), py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("out"),
      py::arg("scb"), py::arg("threads") = 0);

  m.def(
      "dequantize_int8",
      [](const py::buffer& q, const py::buffer& scb, uint64_t rows, uint64_t cols,
         const std::string& out_dtype, const py::buffer& out, int threads) {
        const DType d = ParseFloatDType(out_dtype);
        Buf in(q, rows * cols, false, "the int8 codes");
        Buf s_(scb, 4 * rows, false, "SCB");
        Buf o(out, rows * cols * Width(d), true, "the output");
        Status s;
        {
          py::gil_scoped_release release;
          s = DequantizeInt8(static_cast<const int8_t*>(in.ptr), static_cast<const float*>(s_.ptr),
                             rows, cols, d, o.ptr, threads);
        }
        Check(s);
      },
      py::arg("q"), py::arg("scb"), py::arg("rows"), py::arg("cols"), py::arg("out_dtype"),
      py::arg("out"), py::arg("threads") = 0);

  m.def("should_quantize",
        [](const std::string& name, const std::string& dtype, const std::vector<uint64_t>& shape,
           uint64_t min_elements, bool quantize_embeddings) {
          auto d = ParseDType(dtype);
          if (!d) return false;
          TensorInfo t;
          t.name = name;
          t.dtype = *d;
          t.shape = shape;
          QuantConfig c;
          c.min_elements = min_elements;
          c.quantize_embeddings = quantize_embeddings;
          return ShouldQuantize(t, c);
        });

  m.def("nf4_quant_state_json", [](int blocksize, const std::string& dtype,
                                   const std::vector<uint64_t>& shape, bool nested, float offset) {
    return NF4QuantStateJson(blocksize, ParseFloatDType(dtype), shape, nested, offset);
  });
  m.def("python_float_repr", &PythonFloatRepr);

  // DownloadOptions.set_quantize(mode, blocksize, nested, min_elements, quantize_embeddings):
  // download_and_cache quantizes each layer before caching it (mode "" clears it).
  if (py::hasattr(parent, "DownloadOptions")) {
    auto cls = py::reinterpret_borrow<py::class_<DownloadOptions>>(parent.attr("DownloadOptions"));
    cls.def(
        "set_quantize",
        [](DownloadOptions& o, const std::string& mode, int blocksize, bool nested,
           uint64_t min_elements, bool quantize_embeddings) {
          if (mode.empty()) {
            o.quantize.reset();
            return;
          }
          auto parsed = ParseQuantMode(mode);
          if (!parsed || *parsed == QuantMode::kNone) {
            throw Error(Status::InvalidArgument(
                "quantization_mode must be \"nf4\" or \"int8\" to quantize, got \"" + mode + "\""));
          }
          QuantConfig c;
          c.mode = *parsed;
          c.blocksize = blocksize;
          c.nested = nested;
          c.min_elements = min_elements;
          c.quantize_embeddings = quantize_embeddings;
          c.Validate();
          o.quantize = c;
        },
        py::arg("mode"), py::arg("blocksize") = 64, py::arg("nested") = false,
        py::arg("min_elements") = 4096, py::arg("quantize_embeddings") = false);
  }
}
