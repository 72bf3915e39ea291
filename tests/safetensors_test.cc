// The safetensors reader and writer against real files from other projects
// (../shared/fixtures) and hand-made hostile ones.
#include "layercache/safetensors.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "format/safetensors_stream.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::FixturePath;
using testing::ReadBytes;
using testing::TempDir;
using testing::WriteBytes;

double HalfToDouble(uint16_t h) {
  const int sign = (h >> 15) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  return sign * std::ldexp(1024 + mant, exp - 25);
}

// Decodes element i of a tensor as a double (for the dtypes in the fixtures).
double ValueAt(const Layer& layer, const TensorInfo& t, size_t i) {
  const std::byte* p = layer.tensor_data(t).data();
  auto load = [&](auto tag) {
    decltype(tag) v;
    std::memcpy(&v, p + i * sizeof v, sizeof v);
    return static_cast<double>(v);
  };
  switch (t.dtype) {
    case DType::U8:
      return load(uint8_t{});
    case DType::I8:
      return load(int8_t{});
    case DType::U16:
      return load(uint16_t{});
    case DType::I16:
      return load(int16_t{});
    case DType::U32:
      return load(uint32_t{});
    case DType::I32:
      return load(int32_t{});
    case DType::I64:
      return load(int64_t{});
    case DType::F32:
      return load(float{});
    case DType::F64:
      return load(double{});
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      return HalfToDouble(h);
    }
    default:
      ADD_FAILURE() << "unexpected dtype";
      return 0;
  }
}

std::vector<double> Expected(DType dtype) {
  std::vector<double> v = {-3, -2, -1, 0, 1, 2};
  if (dtype == DType::U8) return {253, 254, 255, 0, 1, 2};
  if (dtype == DType::U16) return {65533, 65534, 65535, 0, 1, 2};
  if (dtype == DType::U32) return {4294967293.0, 4294967294.0, 4294967295.0, 0, 1, 2};
  return v;
}

TEST(SafetensorsFixtures, EverySingleDtypeSampleLoadsWithTheReferenceValues) {
  LAYERCACHE_REQUIRE_FIXTURES();
  for (const char* name : {"B", "H", "I", "b", "d", "e", "f", "h", "i"}) {
    SCOPED_TRACE(name);
    auto layer = ReadSafetensorsFile(
        FixturePath(std::string("safetensors/samples_") + name + ".safetensors"));
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    ASSERT_EQ((*layer)->num_tensors(), 1u);
    const TensorInfo* t = (*layer)->find(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->shape, std::vector<uint64_t>{6});
    const auto expected = Expected(t->dtype);
    for (size_t i = 0; i < 6; ++i)
      EXPECT_EQ(ValueAt(**layer, *t, i), expected[i]) << "element " << i;
    EXPECT_EQ((*layer)->metadata().at("test"), "a");
  }
}

TEST(SafetensorsFixtures, OverallSampleWithMisalignedDataLoadsEveryDtype) {
  LAYERCACHE_REQUIRE_FIXTURES();
  auto layer = ReadSafetensorsFile(FixturePath("safetensors/samples_overall.safetensors"));
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_EQ((*layer)->num_tensors(), 9u);
  EXPECT_EQ((*layer)->metadata(), (Metadata{{"test", "a"}}));
  const std::map<std::string, DType> dtypes = {
      {"B", DType::U8},  {"H", DType::U16}, {"I", DType::U32}, {"b", DType::I8}, {"d", DType::F64},
      {"e", DType::F16}, {"f", DType::F32}, {"h", DType::I16}, {"i", DType::I32}};
  for (const auto& [name, dtype] : dtypes) {
    const TensorInfo* t = (*layer)->find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, dtype);
    const auto expected = Expected(dtype);
    for (size_t i = 0; i < 6; ++i)
      EXPECT_EQ(ValueAt(**layer, *t, i), expected[i]) << name << "[" << i << "]";
  }
}

TEST(SafetensorsFixtures, PyTorchStateDictWithScalarLoads) {
  LAYERCACHE_REQUIRE_FIXTURES();
  auto layer = ReadSafetensorsFile(FixturePath("safetensors/burn_multi_layer.safetensors"));
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_EQ((*layer)->num_tensors(), 9u);
  const TensorInfo* scalar = (*layer)->find("norm1.num_batches_tracked");
  ASSERT_NE(scalar, nullptr);
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->nbytes, 8u);
  const TensorInfo* bias = (*layer)->find("conv1.bias");
  ASSERT_NE(bias, nullptr);
  const double want[] = {0.13191646337509155, 0.03988170251250267, 0.061896324157714844,
                         0.14375224709510803};
  for (size_t i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(ValueAt(**layer, *bias, i), want[i]);
}

TEST(SafetensorsFixtures, CandleCodesLoad) {
  LAYERCACHE_REQUIRE_FIXTURES();
  auto layer = ReadSafetensorsFile(FixturePath("safetensors/candle_jfk_codes.safetensors"));
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  const TensorInfo* t = (*layer)->find("codes");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, DType::I64);
  EXPECT_EQ(t->shape, (std::vector<uint64_t>{1, 2, 828}));
  EXPECT_TRUE((*layer)->metadata().empty());
}

TEST(SafetensorsWriter, ReproducesFilesWrittenByTheReferenceWriterByteForByte) {
  LAYERCACHE_REQUIRE_FIXTURES();
  for (const char* f :
       {"safetensors/burn_multi_layer.safetensors", "safetensors/candle_jfk_codes.safetensors"}) {
    SCOPED_TRACE(f);
    auto original = ReadBytes(FixturePath(f));
    auto layer = ParseSafetensors(original, f);
    ASSERT_TRUE(layer.ok()) << layer.status().ToString();
    EXPECT_EQ(SerializeSafetensors(**layer), original);
  }
}

TEST(SafetensorsWriter, MatchesTheReferenceUnitTestBytes) {
  // safetensors/src/tensor.rs test_serialization.
  std::vector<float> data = {0, 1, 2, 3, 4, 5};
  auto layer = LayerBuilder().add_tensor("attn.0", DType::F32, {1, 2, 3}, data).build();
  const std::string header = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
  auto bytes = SerializeSafetensors(*layer);
  ASSERT_EQ(bytes.size(), 8u + 64u + 24u);
  EXPECT_EQ(static_cast<uint8_t>(bytes[0]), 64);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.data()) + 8, header.size()), header);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(bytes.data()) + 8 + header.size(),
                        64 - header.size()),
            std::string(64 - header.size(), ' '));
  // test_empty with metadata {"framework": "pt"}.
  auto empty = LayerBuilder().set_metadata("framework", "pt").build();
  auto e = SerializeSafetensors(*empty);
  const std::string want =
      std::string("\x28\0\0\0\0\0\0\0", 8) + R"({"__metadata__":{"framework":"pt"}})" + "     ";
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(e.data()), e.size()), want);
}

TEST(SafetensorsWriter, OrdersTensorsByDescendingDtypeThenName) {
  std::vector<uint8_t> b(4, 1);
  std::vector<double> d(2, 2.0);
  std::vector<float> f(2, 3.0f);
  auto layer = LayerBuilder()
                   .add_tensor("z_u8", DType::U8, {4}, b)
                   .add_tensor("b_f32", DType::F32, {2}, f)
                   .add_tensor("a_f32", DType::F32, {2}, f)
                   .add_tensor("y_f64", DType::F64, {2}, d)
                   .build();
  std::vector<std::string> names;
  for (const auto& t : layer->tensors()) names.push_back(t.name);
  EXPECT_EQ(names, (std::vector<std::string>{"y_f64", "a_f32", "b_f32", "z_u8"}));
  for (const auto& t : layer->tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(layer->tensor_data(t).data()) % (DTypeBits(t.dtype) / 8),
              0u);
  }
}

TEST(SafetensorsRoundTrip, EveryDtypeSurvivesWriteAndRead) {
  TempDir dir;
  LayerBuilder b;
  for (int i = 0; i < kNumDTypes; ++i) {
    const auto dtype = static_cast<DType>(i);
    const std::vector<uint64_t> shape = {2, 4};  // 8 elements fill whole bytes for every width
    const uint64_t nbytes = *TensorByteSize(dtype, shape);
    std::vector<std::byte> bytes(nbytes);
    for (size_t k = 0; k < nbytes; ++k) bytes[k] = static_cast<std::byte>(k * 31 + i);
    b.add_tensor(std::string("t_") + std::string(DTypeName(dtype)), dtype, shape, bytes);
  }
  b.set_metadata("note", "quote \" backslash \\ newline \n tab \t unicode \xC3\xA9");
  auto layer = b.build();
  const std::string path = dir / "all.safetensors";
  ASSERT_TRUE(WriteSafetensorsFile(*layer, path).ok());
  auto back = ReadSafetensorsFile(path);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE((*back)->ContentEquals(*layer));
  EXPECT_EQ((*back)->find("t_F4")->nbytes, 4u);
  EXPECT_EQ((*back)->find("t_F6_E2M3")->nbytes, 6u);
  EXPECT_EQ((*back)->find("t_C64")->nbytes, 64u);
}

// ---- hostile files -----------------------------------------------------------

std::vector<std::byte> FileWithHeader(const std::string& json, size_t data_bytes,
                                      uint64_t declared = UINT64_MAX) {
  const uint64_t n = declared == UINT64_MAX ? json.size() : declared;
  std::vector<std::byte> out(8 + json.size() + data_bytes);
  for (int i = 0; i < 8; ++i)
    out[static_cast<size_t>(i)] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 8, json.data(), json.size());
  return out;
}

struct HostileCase {
  const char* name;
  std::vector<std::byte> bytes;
  const char* expected;  // part of the error message
};

TEST(SafetensorsReader, RejectsHostileFilesNamingTheFileAndTheRule) {
  std::vector<HostileCase> cases = {
      {"short", std::vector<std::byte>(5), "shorter than the 8-byte header length"},
      {"too large", FileWithHeader("{}", 0, 200'000'000), "exceeds the limit"},
      {"past eof", FileWithHeader("{}", 0, 100), "runs past the end of the file"},
      {"not json", FileWithHeader("{nope", 0), "not valid UTF-8 JSON"},
      {"not object", FileWithHeader("[1,2]", 0), "does not start with '{'"},
      {"bad utf8",
       FileWithHeader("{\"\xff\xfe\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
       "not valid UTF-8 JSON"},
      {"unknown dtype",
       FileWithHeader(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,1]}})", 1),
       "unknown dtype \"Q7\""},
      {"negative shape",
       FileWithHeader(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}})", 1),
       "shape is not a list of non-negative integers"},
      {"overflow",
       FileWithHeader(
           R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 4),
       "overflows"},
      {"size mismatch",
       FileWithHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4), "need 8"},
      {"hole", FileWithHeader(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", 2),
       "leave a hole or overlap"},
      {"overlap",
       FileWithHeader(
           R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
           3),
       "leave a hole or overlap"},
      {"trailing bytes",
       FileWithHeader(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 2),
       "must end exactly at the end of the file"},
      {"duplicate",
       FileWithHeader(
           R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
           2),
       "appears twice"},
      {"metadata not strings", FileWithHeader(R"({"__metadata__":{"k":1}})", 0), "is not a string"},
      {"tensor called __metadata__",
       FileWithHeader(R"({"__metadata__":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1),
       "__metadata__"},
      {"missing field", FileWithHeader(R"({"a":{"dtype":"U8","shape":[1]}})", 0), "lacks one of"},
      // Found by safetensors_fuzz: a number too large for a double threw out_of_range, not
      // parse_error.
      {"number overflow", FileWithHeader(R"({"a":333333333e370000000000000})", 0),
       "not valid UTF-8 JSON"},
      {"partial bytes",
       FileWithHeader(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})", 2),
       "do not fill whole bytes"},
  };
  TempDir dir;
  for (const HostileCase& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir / "bad.safetensors";
    WriteBytes(path, c.bytes);
    auto from_file = ReadSafetensorsFile(path);
    ASSERT_FALSE(from_file.ok());
    EXPECT_NE(from_file.status().message().find(path), std::string::npos)
        << from_file.status().message();
    EXPECT_NE(from_file.status().message().find(c.expected), std::string::npos)
        << from_file.status().message();
    auto from_memory = ParseSafetensors(c.bytes, "memory");
    EXPECT_FALSE(from_memory.ok());
  }
}

TEST(SafetensorsReader, RecognisesAGitLfsPointer) {
  LAYERCACHE_REQUIRE_FIXTURES();
  const std::string path = FixturePath("hub/lfs_pointer_model.safetensors");
  auto layer = ReadSafetensorsFile(path);
  ASSERT_FALSE(layer.ok());
  EXPECT_TRUE(layer.status().IsCorruption());
  EXPECT_NE(layer.status().message().find("Git LFS pointer"), std::string::npos)
      << layer.status().message();
  EXPECT_NE(layer.status().message().find(path), std::string::npos);
}

TEST(SafetensorsReader, MissingFileIsNotFound) {
  auto layer = ReadSafetensorsFile("/nonexistent/dir/x.safetensors");
  ASSERT_FALSE(layer.ok());
  EXPECT_TRUE(layer.status().IsNotFound());
}

TEST(SafetensorsReader, HeaderOnlyReadReportsOffsetsInFileOrder) {
  LAYERCACHE_REQUIRE_FIXTURES();
  auto header = ReadSafetensorsHeader(FixturePath("safetensors/samples_overall.safetensors"));
  ASSERT_TRUE(header.ok()) << header.status().ToString();
  EXPECT_EQ(header->header_length, 526u);
  EXPECT_EQ(header->data_offset, 534u);
  ASSERT_EQ(header->tensors.size(), 9u);
  EXPECT_EQ(header->tensors[0].name, "B");
  EXPECT_EQ(header->tensors[4].name, "d");
  EXPECT_EQ(header->tensors[4].offset, 48u);  // file offset 582: not 8-aligned
}

// The cluster tier's reader: a file fed in pieces of any size gives the same
// layer as parsing it whole; short, long and foreign-layout files are errors.
TEST(SafetensorsStream, PiecesOfAnySizeGiveTheSameLayer) {
  const LayerPtr layer = testing::MakeLayer(11, 50'000);
  const std::vector<std::byte> file = SerializeSafetensors(*layer);
  const std::string_view bytes(reinterpret_cast<const char*>(file.data()), file.size());
  for (size_t piece : {size_t{1}, size_t{7}, size_t{4096}, file.size()}) {
    SafetensorsStreamReader reader(file.size(), "stream");
    for (size_t at = 0; at < bytes.size(); at += piece)
      ASSERT_TRUE(reader.Feed(bytes.substr(at, piece)).ok()) << piece;
    auto got = reader.Finish();
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE((*got)->ContentEquals(*layer)) << piece;
  }
  SafetensorsStreamReader short_reader(file.size(), "stream");
  ASSERT_TRUE(short_reader.Feed(bytes.substr(0, bytes.size() - 1)).ok());
  EXPECT_FALSE(short_reader.Finish().ok());
  SafetensorsStreamReader long_reader(file.size() - 1, "stream");
  EXPECT_FALSE(long_reader.Feed(bytes).ok());
}

TEST(SafetensorsStream, FilesNotInTheReferenceLayoutAreRefused) {
  // Two tensors stored in the reverse of the reference order.
  const std::string header =
      R"({"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})";
  std::string file(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(file.data(), &n, 8);
  file += header + "bbaa";
  ASSERT_TRUE(
      ParseSafetensors(std::as_bytes(std::span<const char>(file.data(), file.size())), "x").ok());
  SafetensorsStreamReader reader(file.size(), "foreign");
  Status s = reader.Feed(file);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("reference layout"), std::string::npos) << s.ToString();
}

}  // namespace
}  // namespace layercache
