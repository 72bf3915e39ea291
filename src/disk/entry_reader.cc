#include "disk/entry_reader.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "util/parallel.h"

namespace layercache {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kChunk = EntryDigest::kChunkBytes;

// Pages overlapping [off, off + len).
uint64_t PagesIn(uint64_t off, uint64_t len) {
  return (off + len + kPage - 1) / kPage - off / kPage;
}

enum class Way : uint8_t { kCopy, kDirect, kBuffered };

unsigned Cores() { return std::max(1u, std::thread::hardware_concurrency()); }

}  // namespace

Status ReadEntryData(RandomAccessFile& f, uint64_t base, uint64_t n, DiskReadMode mode,
                     EntryDigest* digest, AlignedBuffer* out, EntryReadReport* report) {
  EntryReadReport local;
  EntryReadReport& rep = report != nullptr ? *report : local;
  const bool small = n < kEntrySmallRead;
  if (small) {
    // One read() through the page cache: O_DIRECT, mappings and threads
    // cost more than they save at this size.
    AlignedBuffer buffer(n);
    if (n > 0) {
      if (Status s = f.Read(base, n, buffer.data()); !s.ok()) return s;
    }
    if (digest != nullptr && n > 0) {
      const std::span<const std::byte> bytes(buffer.data(), n);
      if (digest->chunked()) {
        digest->AddChunk(0, bytes);
      } else {
        digest->Update(bytes);
      }
    }
    rep.buffered += n;
    *out = std::move(buffer);
    return Status::OK();
  }

  const size_t chunks = static_cast<size_t>((n + kChunk - 1) / kChunk);
  auto chunk_len = [&](size_t i) { return std::min(kChunk, n - i * kChunk); };

  // Which chunks are wholly in the page cache. One question for the whole
  // range settles the usual cases (all or nothing); a mixed answer is asked
  // again chunk by chunk.
  std::vector<uint8_t> cached(chunks, 0);
  bool all_cached = false;
  if (mode != DiskReadMode::kDirect) {
    const int64_t total = f.CachedPages(base, n);
    if (total >= 0 && static_cast<uint64_t>(total) >= PagesIn(base, n)) {
      all_cached = true;
      std::fill(cached.begin(), cached.end(), 1);
    } else if (total >= static_cast<int64_t>(kChunk / kPage)) {  // a chunk may be cached
      for (size_t i = 0; i < chunks; ++i) {
        const uint64_t off = base + i * kChunk;
        const int64_t c = f.CachedPages(off, chunk_len(i));
        cached[i] = c >= 0 && static_cast<uint64_t>(c) >= PagesIn(off, chunk_len(i));
      }
    }
  }

  // Wholly cached and large: serve the file's pages themselves.
  const bool zero_copy_mode = mode == DiskReadMode::kAuto || mode == DiskReadMode::kMapped;
  if (all_cached && zero_copy_mode && n >= kEntryMapThreshold) {
    AlignedBuffer mapping;
    if (f.MapPrivate(base, n, &mapping)) {
      if (digest != nullptr) {
        const std::byte* p = mapping.data();
        if (digest->chunked()) {
          ParallelFor(chunks, Cores(), [&](size_t i) {
            digest->AddChunk(i, {p + i * kChunk, static_cast<size_t>(chunk_len(i))});
          });
        } else {
          digest->Update({p, static_cast<size_t>(n)});
        }
      }
      rep.mapped += n;
      *out = std::move(mapping);
      return Status::OK();
    }
  }

  AlignedBuffer buffer(n);
  std::byte* dst = buffer.data();
  AlignedBuffer mapping;  // the source of chunks copied out of the page cache
  const bool any_cached = std::find(cached.begin(), cached.end(), 1) != cached.end();
  const bool have_mapping = any_cached && f.MapPrivate(base, n, &mapping);
  const bool direct_possible = base % kPage == 0 && buffer.alignment() >= kPage;
  std::vector<Way> way(chunks);
  bool io = false;
  for (size_t i = 0; i < chunks; ++i) {
    if (cached[i] && have_mapping) {
      way[i] = Way::kCopy;
    } else if (direct_possible && (mode == DiskReadMode::kAuto || mode == DiskReadMode::kDirect)) {
      way[i] = Way::kDirect;
      io = true;
    } else {
      way[i] = Way::kBuffered;
      io = true;
    }
  }

  std::atomic<bool> direct_ok{true};
  std::atomic<uint64_t> copied{0}, direct{0}, buffered{0};
  auto fetch = [&](size_t i) -> Status {
    const uint64_t off = i * kChunk;
    const uint64_t len = chunk_len(i);
    switch (way[i]) {
      case Way::kCopy:
        std::memcpy(dst + off, mapping.data() + off, len);
        copied.fetch_add(len, std::memory_order_relaxed);
        return Status::OK();
      case Way::kDirect:
        if (direct_ok.load(std::memory_order_relaxed)) {
          const uint64_t padded = (len + kPage - 1) / kPage * kPage;  // the buffer is page-rounded
          auto got = f.ReadDirect(base + off, padded, dst + off);
          if (got.ok()) {
            if (*got < len) {
              return Status::IOError("file ends at byte " + std::to_string(base + off + *got) +
                                     ", expected " + std::to_string(base + n));
            }
            direct.fetch_add(len, std::memory_order_relaxed);
            return Status::OK();
          }
          if (got.status().code() != StatusCode::kUnsupported) return got.status();
          direct_ok = false;  // no O_DIRECT on this file system: through the page cache
        }
        [[fallthrough]];
      case Way::kBuffered:
        if (Status s = f.Read(base + off, len, dst + off); !s.ok()) return s;
        buffered.fetch_add(len, std::memory_order_relaxed);
        return Status::OK();
    }
    return Status::OK();
  };

  // Workers fetch chunks in file order from a shared counter (I/O-bound
  // ones keep several requests in flight; copies use every core) and hash
  // their own chunk while it is in cache. MD5 and SHA-256 must see the bytes
  // in order: then this thread hashes chunks in order as they land.
  const bool in_order = digest != nullptr && !digest->chunked();
  const unsigned threads =
      static_cast<unsigned>(std::min<size_t>(chunks, io ? std::max(4u, Cores()) : Cores()));
  std::mutex mu;
  std::condition_variable cv;
  Status first_error;
  std::atomic<bool> failed{false};
  std::vector<uint8_t> done(chunks, 0);
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i; !failed.load(std::memory_order_relaxed) && (i = next.fetch_add(1)) < chunks;) {
      Status s = fetch(i);
      if (s.ok() && digest != nullptr && !in_order) {
        digest->AddChunk(i, {dst + i * kChunk, static_cast<size_t>(chunk_len(i))});
      }
      std::lock_guard lock(mu);
      if (!s.ok()) {
        if (first_error.ok()) first_error = s;
        failed = true;
      }
      done[i] = 1;
      cv.notify_all();
    }
  };
  std::vector<std::thread> pool;
  const unsigned helpers = in_order ? threads : threads - 1;
  pool.reserve(helpers);
  for (unsigned t = 0; t < helpers; ++t) pool.emplace_back(work);
  if (in_order) {
    for (size_t i = 0; i < chunks; ++i) {
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return done[i] != 0 || failed.load(); });
        if (failed) break;
      }
      digest->Update({dst + i * kChunk, static_cast<size_t>(chunk_len(i))});
    }
  } else {
    work();
  }
  for (auto& t : pool) t.join();
  if (!first_error.ok()) return first_error;
  rep.copied += copied.load();
  rep.direct += direct.load();
  rep.buffered += buffered.load();
  *out = std::move(buffer);
  return Status::OK();
}

}  // namespace layercache
