// The disk tier's read path (src/disk/entry_reader.h): every mode, from a
// cold, a warm and a partly cached file, gives the same bytes and checksum;
// the default maps a large entry privately (its missing pages brought in
// with MADV_POPULATE_READ) and reads a smaller one's cold chunks with
// O_DIRECT; writes to a mapped layer never reach the file.
#include "disk/entry_reader.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <random>

#include "fault_env.h"
#include "test_support.h"

namespace layercache {
namespace {

using testing::TempDir;

constexpr uint64_t kBase = 4096;  // data sections start page-aligned, as in entries

struct File {
  std::string path;
  std::vector<std::byte> data;  // the data section
};

File MakeFile(const TempDir& dir, uint64_t n, uint64_t seed) {
  File f{dir / ("entry-" + std::to_string(seed)), std::vector<std::byte>(n)};
  std::mt19937_64 rng(seed);
  for (auto& b : f.data) b = static_cast<std::byte>(rng());
  std::vector<std::byte> all(kBase + n, std::byte{0});
  if (n > 0) std::memcpy(all.data() + kBase, f.data.data(), n);
  testing::WriteBytes(f.path, all);
  return f;
}

// Drops the file from the page cache (clean pages go on every local file system).
void DropFromPageCache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// Reads [off, off + n) through the page cache (and no more: no readahead).
void Touch(const std::string& path, uint64_t off, uint64_t n) {
  int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
  std::vector<char> buf(1 << 20);
  for (uint64_t done = 0; done < n;) {
    ssize_t r = ::pread(fd, buf.data(), std::min<uint64_t>(buf.size(), n - done),
                        static_cast<off_t>(off + done));
    ASSERT_GT(r, 0);
    done += static_cast<uint64_t>(r);
  }
  ::close(fd);
}

bool DirectIoWorks(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0) return false;
  void* p = nullptr;
  if (::posix_memalign(&p, 4096, 4096) != 0) return false;
  const bool ok = ::pread(fd, p, 4096, 0) == 4096;
  std::free(p);
  ::close(fd);
  return ok;
}

std::string Expected(ChecksumAlgorithm a, const std::vector<std::byte>& data) {
  EntryDigest d(a, "description", data.size());
  if (d.chunked()) {
    for (size_t i = 0; i * EntryDigest::kChunkBytes < data.size(); ++i) {
      const size_t off = i * EntryDigest::kChunkBytes;
      d.AddChunk(
          i, {data.data() + off, std::min<size_t>(EntryDigest::kChunkBytes, data.size() - off)});
    }
  } else {
    d.Update(data);
  }
  return d.FinalHex();
}

struct Read {
  AlignedBuffer buffer;
  EntryReadReport report;
  std::string checksum;
};

Read ReadIt(const File& f, DiskReadMode mode, ChecksumAlgorithm a, Env* env = Env::Default()) {
  Read r;
  auto file = env->OpenForRead(f.path);
  EXPECT_TRUE(file.ok()) << file.status().ToString();
  if (!file.ok()) return r;
  EntryDigest digest(a, "description", f.data.size());
  Status s = ReadEntryData(**file, kBase, f.data.size(), mode, &digest, &r.buffer, &r.report);
  EXPECT_TRUE(s.ok()) << s.ToString();
  r.checksum = digest.FinalHex();
  return r;
}

void ExpectSame(const Read& r, const File& f, ChecksumAlgorithm a, const std::string& what) {
  ASSERT_EQ(r.buffer.size(), f.data.size()) << what;
  EXPECT_EQ(std::memcmp(r.buffer.data(), f.data.data(), f.data.size()), 0) << what;
  EXPECT_EQ(r.checksum, Expected(a, f.data)) << what;
  const EntryReadReport& p = r.report;
  EXPECT_EQ(p.mapped + p.copied + p.direct + p.buffered, f.data.size()) << what;
}

TEST(EntryReader, EveryModeAndStateGivesTheSameBytesAndChecksum) {
  TempDir dir;
  for (uint64_t n : {uint64_t{100}, uint64_t{3} << 20, (uint64_t{20} << 20) + 6}) {
    const File f = MakeFile(dir, n, n);
    for (ChecksumAlgorithm a : {ChecksumAlgorithm::kXXH3_128, ChecksumAlgorithm::kMD5}) {
      for (DiskReadMode mode : {DiskReadMode::kAuto, DiskReadMode::kBuffered, DiskReadMode::kDirect,
                                DiskReadMode::kMapped}) {
        for (int state = 0; state < 3; ++state) {  // cold, warm, first half cached
          DropFromPageCache(f.path);
          if (state == 1) Touch(f.path, 0, kBase + n);
          if (state == 2) Touch(f.path, 0, kBase + n / 2);
          const std::string what = std::string(DiskReadModeName(mode)) + " " +
                                   ChecksumAlgorithmName(a) + " n=" + std::to_string(n) +
                                   " state " + std::to_string(state);
          ExpectSame(ReadIt(f, mode, a), f, a, what);
        }
      }
    }
  }
}

// Whether this kernel has MADV_POPULATE_READ (5.14 and later).
bool PopulateWorks(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return false;
  void* p = ::mmap(nullptr, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) return false;
  const bool ok = ::madvise(p, 4096, 22 /* MADV_POPULATE_READ */) == 0;
  ::munmap(p, 4096);
  return ok;
}

TEST(EntryReader, DefaultMapsLargeEntriesInAnyStateWithoutACopy) {
  TempDir dir;
  const uint64_t n = (uint64_t{40} << 20) + 123;  // 5 chunks, the last one short
  const File f = MakeFile(dir, n, 7);
  const auto a = ChecksumAlgorithm::kXXH3_128;
  const bool populate = PopulateWorks(f.path);
  if (!populate) {
    std::printf("note: this kernel lacks MADV_POPULATE_READ; cold large entries use O_DIRECT\n");
  }
  for (int state = 0; state < 3; ++state) {  // cold, warm, first two chunks cached
    DropFromPageCache(f.path);
    if (state == 1) Touch(f.path, 0, kBase + n);
    if (state == 2) Touch(f.path, 0, kBase + 2 * EntryDigest::kChunkBytes);
    Read r = ReadIt(f, DiskReadMode::kAuto, a);
    ExpectSame(r, f, a, "state " + std::to_string(state));
    if (populate || state == 1) {
      EXPECT_EQ(r.report.mapped, n) << "state " << state << ": served from the page cache";
      EXPECT_TRUE(r.buffer.is_mapping());
    }
  }  // unmapped: the pages can be dropped again
}

TEST(EntryReader, DefaultReadsSmallerColdChunksWithODirectAndCachedOnesWithoutIo) {
  TempDir dir;
  const uint64_t n = (uint64_t{12} << 20) + 123;  // under kEntryMapThreshold: 2 chunks
  static_assert((uint64_t{12} << 20) + 123 < kEntryMapThreshold);
  const File f = MakeFile(dir, n, 8);
  const bool direct = DirectIoWorks(f.path);
  const auto a = ChecksumAlgorithm::kXXH3_128;

  DropFromPageCache(f.path);
  Read cold = ReadIt(f, DiskReadMode::kAuto, a);
  ExpectSame(cold, f, a, "cold");
  EXPECT_EQ(cold.report.mapped, 0u);
  if (direct) {
    EXPECT_EQ(cold.report.direct, n) << "a cold entry is read with O_DIRECT";
  } else {
    std::printf("note: no O_DIRECT on %s; cold reads go through the page cache\n",
                dir.path().c_str());
    EXPECT_EQ(cold.report.buffered, n);
  }
  EXPECT_FALSE(cold.buffer.is_mapping());

  // The first chunk cached: copied out; the rest read from the device.
  DropFromPageCache(f.path);
  Touch(f.path, 0, kBase + EntryDigest::kChunkBytes);
  Read part = ReadIt(f, DiskReadMode::kAuto, a);
  ExpectSame(part, f, a, "partly cached");
  EXPECT_EQ(part.report.mapped, 0u);
  EXPECT_GE(part.report.copied, EntryDigest::kChunkBytes);
  if (direct) {
    EXPECT_GT(part.report.direct, 0u);
  }
}

TEST(EntryReader, ForcedModesKeepToTheirWay) {
  TempDir dir;
  const uint64_t n = (uint64_t{40} << 20) + 123;
  const File f = MakeFile(dir, n, 9);
  const bool direct = DirectIoWorks(f.path);
  const auto a = ChecksumAlgorithm::kXXH3_128;
  DropFromPageCache(f.path);
  Read buffered = ReadIt(f, DiskReadMode::kBuffered, a);
  ExpectSame(buffered, f, a, "buffered");
  EXPECT_EQ(buffered.report.buffered, n);
  // Now cached: copied, never mapped nor read around the page cache. (What
  // the page cache still holds is the kernel's choice: under memory pressure
  // some chunks are read again, so only the way is asserted.)
  Read warm_buffered = ReadIt(f, DiskReadMode::kBuffered, a);
  ExpectSame(warm_buffered, f, a, "warm buffered");
  EXPECT_EQ(warm_buffered.report.copied + warm_buffered.report.buffered, n);
  EXPECT_EQ(warm_buffered.report.mapped + warm_buffered.report.direct, 0u);
  EXPECT_FALSE(warm_buffered.buffer.is_mapping());
  DropFromPageCache(f.path);
  Read forced_direct = ReadIt(f, DiskReadMode::kDirect, a);
  ExpectSame(forced_direct, f, a, "direct");
  EXPECT_EQ(forced_direct.report.mapped + forced_direct.report.copied, 0u);
  if (direct) {
    EXPECT_EQ(forced_direct.report.direct, n);
  }
  EXPECT_FALSE(forced_direct.buffer.is_mapping());
}

TEST(EntryReader, WritesToAMappedLayerNeverReachTheFile) {
  TempDir dir;
  const uint64_t n = uint64_t{17} << 20;
  const File f = MakeFile(dir, n, 3);
  Touch(f.path, 0, kBase + n);
  Read r = ReadIt(f, DiskReadMode::kAuto, ChecksumAlgorithm::kXXH3_128);
  ASSERT_TRUE(r.buffer.is_mapping());
  std::memset(r.buffer.data() + 5, 0xAB, 3u << 20);  // no crash: a private copy of those pages
  EXPECT_EQ(static_cast<uint8_t>(r.buffer.data()[6]), 0xAB);
  auto on_disk = testing::ReadBytes(f.path);
  EXPECT_EQ(std::memcmp(on_disk.data() + kBase, f.data.data(), n), 0);
  Read again = ReadIt(f, DiskReadMode::kAuto, ChecksumAlgorithm::kXXH3_128);
  EXPECT_EQ(std::memcmp(again.buffer.data(), f.data.data(), n), 0);
}

TEST(EntryReader, ErrorsAndShortFilesAreReported) {
  TempDir dir;
  const uint64_t n = uint64_t{12} << 20;
  const File f = MakeFile(dir, n, 9);
  for (DiskReadMode mode : {DiskReadMode::kAuto, DiskReadMode::kBuffered, DiskReadMode::kDirect}) {
    DropFromPageCache(f.path);
    auto file = Env::Default()->OpenForRead(f.path);
    ASSERT_TRUE(file.ok());
    AlignedBuffer out;
    // The header promises more data than the file holds.
    Status s = ReadEntryData(**file, kBase, n + (5u << 20), mode, nullptr, &out);
    EXPECT_FALSE(s.ok()) << DiskReadModeName(mode);
  }
  // An Env that cannot tell residency nor read directly nor map (the
  // fault-injecting one, so restricted) is read with read(), and its errors
  // come back.
  testing::FaultInjectionEnv env;
  env.PlainReadsOnly(true);
  Read ok = ReadIt(f, DiskReadMode::kAuto, ChecksumAlgorithm::kXXH3_128, &env);
  ExpectSame(ok, f, ChecksumAlgorithm::kXXH3_128, "fault env");
  EXPECT_EQ(ok.report.buffered, n);
  env.FailOn(testing::FaultOp::kRead, EIO);
  auto file = env.OpenForRead(f.path);
  ASSERT_TRUE(file.ok());
  AlignedBuffer out;
  EntryDigest digest(ChecksumAlgorithm::kMD5, "d", n);
  Status s = ReadEntryData(**file, kBase, n, DiskReadMode::kAuto, &digest, &out);
  EXPECT_FALSE(s.ok());
}

}  // namespace
}  // namespace layercache
