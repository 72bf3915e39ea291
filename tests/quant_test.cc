// Quantization: NF4 and int8 kernels (scalar and AVX2 alike), layer-level
// quantization, metadata and bad input. Bit-exactness against bitsandbytes
// itself and an independent numpy implementation is in
// python/tests/test_quantization.py.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "layercache/layer_cache.h"
#include "layercache/quantization.h"
#include "quant/kernels.h"
#include "test_support.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace layercache::quant {
namespace {

std::vector<uint16_t> RandomBF16(size_t n, float stddev, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<uint16_t> out(n);
  for (auto& x : out) x = FloatToBF16(d(rng));
  return out;
}

// The reference decision: the number of float32 midpoints of neighbouring
// NF4 values strictly below x (bitsandbytes' CPU backend, torch.bucketize).
uint8_t RefCode(float x) {
  const auto& t = NF4Table();
  uint8_t c = 0;
  for (int k = 0; k < 15; ++k) c += x > (t[k] + t[k + 1]) / 2.0f;
  return c;
}

TEST(QuantKernels, ThresholdsAreTheTableMidpoints) {
  const auto& t = NF4Table();
  for (int k = 0; k < 15; ++k) EXPECT_EQ(detail::kNF4Thresholds[k], (t[k] + t[k + 1]) / 2.0f) << k;
  // Where a float compiler's reading of dQuantizeNF4's literal differs: x equal
  // to the upper neighbour of threshold 12 is code 12 here (as bitsandbytes' CPU).
  const float x = std::nextafter(0.5016634166240692f, 1.0f);
  EXPECT_EQ(x, detail::kNF4Thresholds[12]);
  std::vector<float> block(64, 0.0f);
  block[0] = 1.0f;
  block[1] = x;
  std::vector<uint8_t> p(32);
  std::vector<float> a(1);
  ASSERT_TRUE(QuantizeNF4(DType::F32, block.data(), 64, 64, p.data(), a.data()).ok());
  EXPECT_EQ(p[0], 0xFC);
}

TEST(QuantKernels, NF4KnownBlock) {
  // One block of 64: absmax 2, values hitting known codes.
  std::vector<float> x(64, 0.0f);
  x[0] = 2.0f;    // 1.0 -> 15
  x[1] = -2.0f;   // -1.0 -> 0
  x[2] = 0.0f;    // 7
  x[3] = 0.16f;   // 0.08 -> 8
  x[4] = -0.18f;  // -0.09 -> 6
  x[5] = 1.1f;    // 0.55 -> 13
  std::vector<uint8_t> packed(32);
  std::vector<float> absmax(1);
  ASSERT_TRUE(QuantizeNF4(DType::F32, x.data(), 64, 64, packed.data(), absmax.data()).ok());
  EXPECT_EQ(absmax[0], 2.0f);
  EXPECT_EQ(packed[0], 0xF0);  // first element in the high nibble
  EXPECT_EQ(packed[1], 0x78);
  EXPECT_EQ(packed[2], 0x6D);
  EXPECT_EQ(packed[3], 0x77);
}

TEST(QuantKernels, ScalarAndAvx2AgreeAndMatchReference) {
  const detail::Kernels* avx2 = detail::Avx2Kernels();
  for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
    for (uint64_t n :
         {uint64_t{64}, uint64_t{4096}, uint64_t{4096 + 37}, uint64_t{1001}, uint64_t{1}}) {
      for (int bs : {32, 64, 256}) {
        std::mt19937 rng(static_cast<uint32_t>(n * 7 + bs));
        std::normal_distribution<float> d(0.0f, 0.02f);
        std::vector<std::byte> in(n * (dt == DType::F32 ? 4 : 2));
        std::vector<float> as_float(n);
        for (uint64_t i = 0; i < n; ++i) {
          float v = d(rng);
          if (i % 613 == 5) v = 0.0f;
          if (dt == DType::F32) {
            std::memcpy(&in[4 * i], &v, 4);
          } else {
            const uint16_t h = dt == DType::BF16 ? FloatToBF16(v) : FloatToF16(v);
            std::memcpy(&in[2 * i], &h, 2);
            v = dt == DType::BF16 ? BF16ToFloat(h) : F16ToFloat(h);
          }
          as_float[i] = v;
        }
        const uint64_t blocks = NumBlocks(n, bs);
        std::vector<uint8_t> p1((n + 1) / 2), p2((n + 1) / 2);
        std::vector<float> a1(blocks), a2(blocks);
        ASSERT_EQ(detail::ScalarKernels().nf4_quantize(dt, in.data(), n, bs, 0, blocks, p1.data(),
                                                       a1.data()),
                  detail::kNoBadIndex);
        // Reference, written out here.
        for (uint64_t b = 0; b < blocks; ++b) {
          const uint64_t s = b * bs, e = std::min<uint64_t>(n, s + bs);
          float m = 0;
          for (uint64_t i = s; i < e; ++i) m = std::max(m, std::fabs(as_float[i]));
          ASSERT_EQ(a1[b], m);
          const float div = std::max(m, 1e-38f), inv = 1.0f / div;
          for (uint64_t i = s; i < e; ++i) {
            const float scaled =
                e - s == static_cast<uint64_t>(bs) ? as_float[i] * inv : as_float[i] / div;
            const uint8_t code = (i % 2 == 0) ? p1[i / 2] >> 4 : p1[i / 2] & 15;
            ASSERT_EQ(code, RefCode(scaled)) << "element " << i << " n " << n << " bs " << bs;
          }
        }
        if (n % 2 == 1) {
          EXPECT_EQ(p1.back() & 15, 7) << "odd count padded with code 7";
        }
        if (avx2 != nullptr) {
          ASSERT_EQ(avx2->nf4_quantize(dt, in.data(), n, bs, 0, blocks, p2.data(), a2.data()),
                    detail::kNoBadIndex);
          EXPECT_EQ(p1, p2) << DTypeName(dt) << " n=" << n << " bs=" << bs;
          EXPECT_EQ(a1, a2);
          for (DType out : {DType::BF16, DType::F16, DType::F32}) {
            const size_t w = out == DType::F32 ? 4 : 2;
            std::vector<std::byte> o1(n * w), o2(n * w);
            detail::ScalarKernels().nf4_dequantize(p1.data(), a1.data(), n, bs, 0, blocks, out,
                                                   o1.data());
            avx2->nf4_dequantize(p1.data(), a1.data(), n, bs, 0, blocks, out, o2.data());
            ASSERT_EQ(o1, o2) << "dequantize to " << DTypeName(out) << " n=" << n << " bs=" << bs;
          }
        }
        // Dequantized values: table value times absmax, rounded once.
        std::vector<float> deq(n);
        ASSERT_TRUE(DequantizeNF4(p1.data(), a1.data(), n, bs, DType::F32, deq.data()).ok());
        for (uint64_t i = 0; i < n; ++i) {
          const uint8_t code = (i % 2 == 0) ? p1[i / 2] >> 4 : p1[i / 2] & 15;
          ASSERT_EQ(deq[i], NF4Table()[code] * a1[i / bs]);
        }
      }
    }
  }
}

TEST(QuantKernels, ZeroBlockAndNonFinite) {
  std::vector<float> x(128, 0.0f);
  x[100] = 0.5f;
  std::vector<uint8_t> p(64);
  std::vector<float> a(2);
  ASSERT_TRUE(QuantizeNF4(DType::F32, x.data(), 128, 64, p.data(), a.data()).ok());
  EXPECT_EQ(a[0], 0.0f);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(p[i], 0x77) << "all-zero block -> code 7 (0.0)";
  std::vector<uint16_t> out(128);
  ASSERT_TRUE(DequantizeNF4(p.data(), a.data(), 128, 64, DType::BF16, out.data()).ok());
  for (int i = 0; i < 64; ++i) EXPECT_EQ(out[i], 0) << "+0.0";
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    x[77] = bad;
    Status s = QuantizeNF4(DType::F32, x.data(), 128, 64, p.data(), a.data());
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("element 77"), std::string::npos) << s.message();
    std::vector<int8_t> q(128);
    std::vector<float> scb(2);
    s = QuantizeInt8(DType::F32, x.data(), 2, 64, q.data(), scb.data());
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("element 77"), std::string::npos) << s.message();
  }
  EXPECT_FALSE(QuantizeNF4(DType::I32, x.data(), 128, 64, p.data(), a.data()).ok());
  EXPECT_FALSE(QuantizeNF4(DType::F32, x.data(), 128, 48, p.data(), a.data()).ok());
}

TEST(QuantKernels, Int8RoundsHalfToEvenPerRow) {
  // SCB 127 -> multiplier 1: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -3.5 -> -4.
  std::vector<float> x = {127.0f, 0.5f, 1.5f, 2.5f, -3.5f, 0.0f, 10.0f, -127.0f,
                          0,      0,    0,    0,    0,     0,    0,     0};  // second row all zeros
  std::vector<int8_t> q(16);
  std::vector<float> scb(2);
  for (int pass = 0; pass < 2; ++pass) {
    const detail::Kernels* k = pass == 0 ? &detail::ScalarKernels() : detail::Avx2Kernels();
    if (k == nullptr) continue;
    ASSERT_EQ(k->int8_quantize(DType::F32, x.data(), 8, 0, 2, q.data(), scb.data()),
              detail::kNoBadIndex);
    EXPECT_EQ(scb[0], 127.0f);
    EXPECT_EQ(scb[1], 0.0f);
    EXPECT_EQ(std::vector<int8_t>(q.begin(), q.begin() + 8),
              (std::vector<int8_t>{127, 0, 2, 2, -4, 0, 10, -127}));
    for (int i = 8; i < 16; ++i) EXPECT_EQ(q[i], 0);
  }
  std::vector<float> back(16);
  ASSERT_TRUE(DequantizeInt8(q.data(), scb.data(), 2, 8, DType::F32, back.data()).ok());
  EXPECT_EQ(back[0], (127.0f * 127.0f) * 7.874015718698502e-3f);
  EXPECT_EQ(back[9], 0.0f);
}

TEST(QuantKernels, Int8ScalarAndAvx2Agree) {
  const detail::Kernels* avx2 = detail::Avx2Kernels();
  if (avx2 == nullptr) GTEST_SKIP() << "this CPU has no AVX2: only the scalar kernel runs";
  auto w = RandomBF16(64 * 72, 0.02f, 3);
  std::vector<int8_t> q1(w.size()), q2(w.size());
  std::vector<float> s1(64), s2(64);
  detail::ScalarKernels().int8_quantize(DType::BF16, w.data(), 72, 0, 64, q1.data(), s1.data());
  avx2->int8_quantize(DType::BF16, w.data(), 72, 0, 64, q2.data(), s2.data());
  EXPECT_EQ(q1, q2);
  EXPECT_EQ(s1, s2);
  for (DType out : {DType::BF16, DType::F16, DType::F32}) {
    std::vector<std::byte> o1(w.size() * 4), o2(w.size() * 4);
    detail::ScalarKernels().int8_dequantize(q1.data(), s1.data(), 72, 0, 64, out, o1.data());
    avx2->int8_dequantize(q1.data(), s1.data(), 72, 0, 64, out, o2.data());
    EXPECT_EQ(o1, o2) << DTypeName(out);
  }
}

#if defined(__x86_64__)
__attribute__((target("f16c"))) uint16_t HardwareF16(float f) {
  return static_cast<uint16_t>(
      _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT), 0));
}

TEST(QuantKernels, HalfConversionMatchesF16C) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C on this CPU to compare with";
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 65521) {
    float f;
    const uint32_t b = static_cast<uint32_t>(bits);
    std::memcpy(&f, &b, 4);
    ASSERT_EQ(FloatToF16(f), HardwareF16(f)) << std::hex << b;
  }
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToF16(f), h) << h;
  }
}
#endif

TEST(QuantKernels, PythonFloatRepr) {
  EXPECT_EQ(PythonFloatRepr(2.484375), "2.484375");
  EXPECT_EQ(PythonFloatRepr(1.0), "1.0");
  EXPECT_EQ(PythonFloatRepr(0.0), "0.0");
  EXPECT_EQ(PythonFloatRepr(1e-05), "1e-05");
  EXPECT_EQ(PythonFloatRepr(0.0001), "0.0001");
  EXPECT_EQ(PythonFloatRepr(0.015625), "0.015625");
  EXPECT_EQ(PythonFloatRepr(static_cast<double>(0.1f)), "0.10000000149011612");
  EXPECT_EQ(PythonFloatRepr(1e16), "1e+16");
  EXPECT_EQ(PythonFloatRepr(123456789012345.0), "123456789012345.0");
  EXPECT_EQ(PythonFloatRepr(-3.5e-7), "-3.5e-07");
}

LayerPtr SyntheticLayer(uint64_t hidden, uint64_t inter) {
  LayerBuilder b;
  b.add_tensor("self_attn.q_proj.weight", DType::BF16, {hidden, hidden},
               RandomBF16(hidden * hidden, 0.02f, 1));
  b.add_tensor("self_attn.q_proj.bias", DType::BF16, {hidden}, RandomBF16(hidden, 0.02f, 2));
  b.add_tensor("mlp.down_proj.weight", DType::BF16, {hidden, inter},
               RandomBF16(hidden * inter, 0.02f, 3));
  b.add_tensor("input_layernorm.weight", DType::BF16, {hidden}, RandomBF16(hidden, 1.0f, 4));
  b.add_tensor("small.weight", DType::BF16, {8, 8}, RandomBF16(64, 0.02f, 5));
  b.set_metadata("source", "test");
  return b.build();
}

TEST(QuantLayer, NF4LayoutAsTransformersWritesIt) {
  LayerPtr layer = SyntheticLayer(128, 344);
  auto q = QuantizeLayer(*layer, QuantConfig::NF4());
  ASSERT_TRUE(q.ok()) << q.status().message();
  const Layer& l = **q;
  const TensorInfo* w = l.find("mlp.down_proj.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->dtype, DType::U8);
  EXPECT_EQ(w->shape, (std::vector<uint64_t>{128 * 344 / 2, 1}));
  EXPECT_EQ(l.find("mlp.down_proj.weight.absmax")->shape, (std::vector<uint64_t>{128 * 344 / 64}));
  EXPECT_EQ(l.find("mlp.down_proj.weight.quant_map")->shape, (std::vector<uint64_t>{16}));
  auto st = l.tensor_data("mlp.down_proj.weight.quant_state.bitsandbytes__nf4");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(st.data()), st.size()),
            R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [128, 344]})");
  // Not quantized: bias, norm, small weight.
  EXPECT_EQ(l.find("self_attn.q_proj.bias")->dtype, DType::BF16);
  EXPECT_EQ(l.find("input_layernorm.weight")->dtype, DType::BF16);
  EXPECT_EQ(l.find("small.weight")->dtype, DType::BF16);
  EXPECT_EQ(l.metadata().at("source"), "test");
  auto info = GetQuantInfo(l);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->mode, QuantMode::kNF4);
  EXPECT_EQ(info->blocksize, 64);
  ASSERT_EQ(info->tensors.size(), 2u);
  EXPECT_TRUE(CheckQuantMode(l, "nf4").ok());
  Status wrong = CheckQuantMode(l, "int8");
  EXPECT_FALSE(wrong.ok());
  EXPECT_NE(wrong.message().find("nf4"), std::string::npos) << wrong.message();
  EXPECT_FALSE(CheckQuantMode(*layer, "nf4").ok());
  EXPECT_TRUE(CheckQuantMode(*layer, "").ok());
  // Already quantized: refused.
  auto again = QuantizeLayer(l, QuantConfig::NF4());
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.status().message().find("already quantized"), std::string::npos);
  // Smaller than bf16: 4.5 bits per weight for the quantized ones.
  EXPECT_LT(l.nbytes() * 3, layer->nbytes());
}

TEST(QuantLayer, RoundTripErrorIsBounded) {
  LayerPtr layer = SyntheticLayer(128, 344);
  for (QuantConfig c : {QuantConfig::NF4(false), QuantConfig::NF4(true), QuantConfig::Int8()}) {
    auto q = QuantizeLayer(*layer, c);
    ASSERT_TRUE(q.ok()) << q.status().message();
    auto d = DequantizeLayer(**q);
    ASSERT_TRUE(d.ok()) << d.status().message();
    ASSERT_EQ((*d)->num_tensors(), layer->num_tensors());
    EXPECT_EQ((*d)->metadata().count(kQuantMetadataKey), 0u);
    const TensorInfo* orig = layer->find("mlp.down_proj.weight");
    const TensorInfo* back = (*d)->find("mlp.down_proj.weight");
    ASSERT_EQ(back->dtype, DType::BF16);
    ASSERT_EQ(back->shape, orig->shape);
    auto a = layer->tensor_data(*orig);
    auto b = (*d)->tensor_data(*back);
    const uint16_t* pa = reinterpret_cast<const uint16_t*>(a.data());
    const uint16_t* pb = reinterpret_cast<const uint16_t*>(b.data());
    double err = 0, ref = 0;
    for (uint64_t i = 0; i < orig->num_elements(); ++i) {
      const double x = BF16ToFloat(pa[i]), y = BF16ToFloat(pb[i]);
      err += (x - y) * (x - y);
      ref += x * x;
    }
    const double rel = std::sqrt(err / ref);
    // NF4 of N(0, s) weights: about 10% relative RMS error; int8: about 1%.
    EXPECT_LT(rel, c.mode == QuantMode::kNF4 ? 0.12 : 0.015) << QuantModeName(c.mode);
    // Unquantized tensors are unchanged.
    auto na = layer->tensor_data("input_layernorm.weight");
    auto nb = (*d)->tensor_data("input_layernorm.weight");
    EXPECT_EQ(std::memcmp(na.data(), nb.data(), na.size()), 0);
  }
}

TEST(QuantLayer, NestedMatchesTheBlockwiseStep) {
  LayerPtr layer = SyntheticLayer(256, 1024);
  auto q = QuantizeLayer(*layer, QuantConfig::NF4(true));
  ASSERT_TRUE(q.ok());
  const Layer& l = **q;
  EXPECT_EQ(l.find("mlp.down_proj.weight.absmax")->dtype, DType::U8);
  EXPECT_EQ(l.find("mlp.down_proj.weight.nested_absmax")->shape, (std::vector<uint64_t>{16}));
  EXPECT_EQ(l.find("mlp.down_proj.weight.nested_quant_map")->shape, (std::vector<uint64_t>{256}));
  auto st = l.tensor_data("mlp.down_proj.weight.quant_state.bitsandbytes__nf4");
  const std::string s(reinterpret_cast<const char*>(st.data()), st.size());
  EXPECT_NE(s.find(R"("nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": )"),
            std::string::npos)
      << s;
  // The dynamic map is sorted, in [-1, 1], with 0 and 1.
  const auto& m = DynamicMap();
  EXPECT_TRUE(std::is_sorted(m.begin(), m.end()));
  EXPECT_EQ(m.front(), -0x1.fc6666p-1f);
  EXPECT_EQ(m.back(), 1.0f);
}

TEST(QuantLayer, Int8Layout) {
  LayerPtr layer = SyntheticLayer(128, 344);
  auto q = QuantizeLayer(*layer, QuantConfig::Int8());
  ASSERT_TRUE(q.ok());
  const Layer& l = **q;
  EXPECT_EQ(l.find("mlp.down_proj.weight")->dtype, DType::I8);
  EXPECT_EQ(l.find("mlp.down_proj.weight")->shape, (std::vector<uint64_t>{128, 344}));
  EXPECT_EQ(l.find("mlp.down_proj.SCB")->shape, (std::vector<uint64_t>{128}));
  EXPECT_EQ(l.find("mlp.down_proj.weight_format")->shape, (std::vector<uint64_t>{}));
  EXPECT_TRUE(CheckQuantMode(l, "int8").ok());
  EXPECT_FALSE(CheckQuantMode(l, "nf4").ok());
}

TEST(QuantLayer, BadInputIsRefusedNamingTheTensor) {
  std::vector<uint16_t> w = RandomBF16(128 * 128, 0.02f, 9);
  w[5000] = 0x7fc0;  // NaN
  LayerBuilder b;
  b.add_tensor("q_proj.weight", DType::BF16, {128, 128}, w);
  LayerPtr layer = b.build();
  for (QuantConfig c : {QuantConfig::NF4(), QuantConfig::Int8()}) {
    auto q = QuantizeLayer(*layer, c);
    ASSERT_FALSE(q.ok());
    EXPECT_NE(q.status().message().find("q_proj.weight"), std::string::npos)
        << q.status().message();
    EXPECT_NE(q.status().message().find("5000"), std::string::npos) << q.status().message();
  }
  QuantConfig bad = QuantConfig::NF4();
  bad.blocksize = 100;
  EXPECT_FALSE(QuantizeLayer(*layer, bad).ok());
  // Integer weights are never selected.
  LayerBuilder ib;
  ib.add_tensor("x.weight", DType::I32, {128, 128}, std::vector<int32_t>(128 * 128, 1));
  auto iq = QuantizeLayer(*ib.build(), QuantConfig::NF4());
  ASSERT_TRUE(iq.ok());
  EXPECT_EQ((*iq)->find("x.weight")->dtype, DType::I32);
  // Malformed metadata is an error, not a guess.
  LayerBuilder mb;
  mb.add_tensor("x.weight", DType::U8, {4}, std::vector<uint8_t>(4, 0));
  mb.set_metadata(kQuantMetadataKey, "{not json");
  LayerPtr m = mb.build();
  EXPECT_FALSE(GetQuantInfo(*m).ok());
  EXPECT_FALSE(DequantizeLayer(*m).ok());
  // A record whose shape does not match the stored tensor (or is absurd) is an error, not a
  // huge allocation.
  for (const char* shape : {"[1099511627776, 1024]", "[18446744073709551615, 2]", "[16, 16]"}) {
    LayerBuilder hb;
    hb.add_tensor("x.weight", DType::U8, {64, 1}, std::vector<uint8_t>(64, 0x77));
    hb.add_tensor("x.weight.absmax", DType::F32, {2}, std::vector<float>{1.0f, 1.0f});
    hb.set_metadata(
        kQuantMetadataKey,
        std::string(
            R"({"mode":"nf4","blocksize":64,"nested":false,"tensors":{"x.weight":{"dtype":"BF16","shape":)") +
            shape + "}}}");
    auto d = DequantizeLayer(*hb.build());
    ASSERT_FALSE(d.ok()) << shape;
    EXPECT_NE(d.status().message().find("recorded shape"), std::string::npos)
        << d.status().message();
  }
}

TEST(QuantLayer, ParallelQuantizationIsDeterministic) {
  auto w = RandomBF16(4096 * 1024, 0.02f, 11);
  const uint64_t n = w.size();
  std::vector<uint8_t> p1(n / 2), p2(n / 2);
  std::vector<float> a1(n / 64), a2(n / 64);
  ASSERT_TRUE(QuantizeNF4(DType::BF16, w.data(), n, 64, p1.data(), a1.data(), 1).ok());
  ASSERT_TRUE(QuantizeNF4(DType::BF16, w.data(), n, 64, p2.data(), a2.data(), 4).ok());
  EXPECT_EQ(p1, p2);
  EXPECT_EQ(a1, a2);
}

TEST(QuantCache, TheCacheKnowsTheMode) {
  testing::TempDir dir;
  LayerCacheOptions o;
  o.cache_dir = dir.path();
  LayerCache cache(o);
  LayerPtr plain = SyntheticLayer(128, 344);
  LayerPtr q = QuantizeLayer(*plain, QuantConfig::NF4()).value();
  // A plain layer under "nf4", an nf4 layer under "int8" or under no mode: refused, saying why.
  Status s = cache.cache_layer_status({"m", 0, "nf4", ""}, plain);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not quantized"), std::string::npos) << s.message();
  EXPECT_FALSE(cache.cache_layer_status({"m", 0, "int8", ""}, q).ok());
  EXPECT_FALSE(cache.cache_layer_status({"m", 0, "", ""}, q).ok());
  EXPECT_EQ(cache.get_stats().disk_cache_entries, 0u);
  // Under its own mode it is cached, and comes back with its record.
  ASSERT_TRUE(cache.cache_layer_status({"m", 0, "nf4", ""}, q).ok());
  LayerPtr got = cache.get_layer("m", 0, "nf4");
  ASSERT_NE(got, nullptr);
  EXPECT_TRUE(CheckQuantMode(*got, "nf4").ok());
  auto back = DequantizeLayer(*got);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ((*back)->find("mlp.down_proj.weight")->dtype, DType::BF16);
  // Other labels stay labels for plain layers.
  EXPECT_TRUE(cache.cache_layer_status({"m", 0, "awq-label", ""}, plain).ok());
}

}  // namespace
}  // namespace layercache::quant
