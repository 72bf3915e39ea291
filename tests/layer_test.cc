#include "layercache/layer.h"

#include <gtest/gtest.h>

#include <cstring>

#include "test_support.h"

namespace layercache {
namespace {

TEST(LayerBuilder, BuildsOneAlignedBufferWithTensorsFindableByName) {
  std::vector<float> a(1000, 1.5f);
  std::vector<uint16_t> b(300000, 7);  // > 1 MiB total: page-aligned buffer
  auto layer = LayerBuilder()
                   .add_tensor("a", DType::F32, {10, 100}, a)
                   .add_tensor("b", DType::BF16, {300000}, b)
                   .set_metadata("k", "v")
                   .build();
  EXPECT_EQ(layer->num_tensors(), 2u);
  EXPECT_EQ(layer->nbytes(), 4000u + 600000u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(layer->data()) % 64, 0u);
  ASSERT_NE(layer->find("a"), nullptr);
  EXPECT_EQ(layer->find("a")->shape, (std::vector<uint64_t>{10, 100}));
  EXPECT_EQ(layer->find("missing"), nullptr);
  float first;
  std::memcpy(&first, layer->tensor_data("a").data(), 4);
  EXPECT_EQ(first, 1.5f);
  EXPECT_ERROR_CODE(layer->tensor_data("missing"), StatusCode::kNotFound);
  EXPECT_EQ(layer->metadata().at("k"), "v");
}

TEST(LayerBuilder, LargeLayersArePageAlignedForDirectIo) {
  std::vector<uint8_t> big(2 << 20, 1);
  auto layer = LayerBuilder().add_tensor("w", DType::U8, {big.size()}, big).build();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(layer->data()) % 4096, 0u);
}

TEST(LayerBuilder, RejectsWrongSizesDuplicatesAndReservedNames) {
  std::vector<float> v(4);
  LayerBuilder b;
  EXPECT_INVALID_ARGUMENT(b.add_tensor("x", DType::F32, {5}, v));
  b.add_tensor("x", DType::F32, {4}, v);
  EXPECT_INVALID_ARGUMENT(b.add_tensor("x", DType::F32, {4}, v));
  LayerBuilder c;
  c.add_tensor("__metadata__", DType::F32, {4}, v);
  EXPECT_INVALID_ARGUMENT(c.build());
}

// A layer is stored as safetensors, whose header is UTF-8 JSON: a name that
// is not UTF-8 used to be cached, written, and then dropped as a corrupt
// entry when read back. It is refused when the layer is made.
TEST(LayerBuilder, RejectsNamesAndMetadataThatAreNotUtf8) {
  std::vector<float> v(4);
  try {
    LayerBuilder().add_tensor("w\xff", DType::F32, {4}, v).build();
    ADD_FAILURE() << "a tensor name that is not UTF-8 was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument) << e.what();
    EXPECT_NE(e.status().message().find("\"w\\xff\""), std::string::npos) << e.what();
  }
  EXPECT_INVALID_ARGUMENT(
      LayerBuilder().add_tensor("w", DType::F32, {4}, v).set_metadata("k\xfe", "v").build());
  EXPECT_INVALID_ARGUMENT(
      LayerBuilder().add_tensor("w", DType::F32, {4}, v).set_metadata("k", "\xc0\xaf").build());
  std::vector<TensorInfo> surrogate = {{"\xed\xa0\x80", DType::F32, {4}, 0, 16}};
  auto r = Layer::Create(surrogate, AlignedBuffer(16), {});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
  // UTF-8 beyond ASCII is fine.
  auto ok = LayerBuilder()
                .add_tensor("gewicht.\xc3\xa4", DType::F32, {4}, v)
                .set_metadata("\xe5\x90\x8d", "\xf0\x9f\x98\x80")
                .build();
  EXPECT_NE(ok->find("gewicht.\xc3\xa4"), nullptr);
}

TEST(Layer, ContentEqualsComparesNamesShapesBytesAndMetadata) {
  auto a = testing::MakeLayer(1);
  auto b = testing::MakeLayer(1);
  auto c = testing::MakeLayer(2);
  EXPECT_TRUE(a->ContentEquals(*b));
  EXPECT_FALSE(a->ContentEquals(*c));
}

TEST(Layer, CreateRejectsTensorsOutsideTheBuffer) {
  std::vector<TensorInfo> tensors = {{"a", DType::F32, {4}, 0, 16}};
  auto bad = Layer::Create(tensors, AlignedBuffer(8), {});
  EXPECT_FALSE(bad.ok());
  std::vector<TensorInfo> gap = {{"a", DType::F32, {1}, 4, 4}};
  EXPECT_FALSE(Layer::Create(gap, AlignedBuffer(8), {}).ok());
}

TEST(TensorByteSize, HandlesSubByteDtypesAndOverflow) {
  EXPECT_EQ(*TensorByteSize(DType::F4, {4}), 2u);
  EXPECT_FALSE(TensorByteSize(DType::F4, {3}).ok());
  EXPECT_EQ(*TensorByteSize(DType::F6_E3M2, {4}), 3u);
  EXPECT_EQ(*TensorByteSize(DType::C64, {2}), 16u);
  EXPECT_EQ(*TensorByteSize(DType::BOOL, {}), 1u);
  EXPECT_FALSE(TensorByteSize(DType::U64, {uint64_t{1} << 62, 8}).ok());
}

TEST(DType, NamesRoundTripForEveryDtype) {
  for (int i = 0; i < kNumDTypes; ++i) {
    const auto d = static_cast<DType>(i);
    EXPECT_EQ(ParseDType(DTypeName(d)), d);
  }
  EXPECT_FALSE(ParseDType("F128").has_value());
}

}  // namespace
}  // namespace layercache
