#include "disk/entry_reader.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
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

enum class Way : uint8_t { kCopy, kDirect, kBuffered, kPopulate };

unsigned Cores() { return HardwareThreads(); }

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

  // Large and not wholly cached, in auto or mapped mode: the same private
  // mapping, its pages brought in by kDirectQueueDepth requests in flight
  // (MADV_POPULATE_READ of kPopulateRequest each). No copy, and no fresh
  // memory to zero: the page cache's pages are filled by the device (in a
  // new process, zeroing and faulting in a fresh buffer for O_DIRECT cost
  // as much as the read; measured in docs/PERFORMANCE.md).
  AlignedBuffer mapping;  // the layer (populate), or the source of copied chunks
  bool populate = false;
  if (zero_copy_mode && n >= kEntryMapThreshold && f.MapPrivate(base, n, &mapping)) {
    const Status first = f.Populate(mapping, 0, std::min<uint64_t>(n, kPopulateRequest));
    // Unsupported: the kernel lacks it, read as below (another error comes
    // back when the request is made again).
    populate = first.code() != StatusCode::kUnsupported;
    if (!populate) mapping = AlignedBuffer();
  }

  AlignedBuffer buffer = populate ? AlignedBuffer() : AlignedBuffer(n);
  std::byte* dst = populate ? mapping.data() : buffer.data();
  const bool any_cached = std::find(cached.begin(), cached.end(), 1) != cached.end();
  const bool have_mapping = populate || (any_cached && f.MapPrivate(base, n, &mapping));
  const bool direct_possible = !populate && base % kPage == 0 && buffer.alignment() >= kPage;
  std::vector<Way> way(chunks);
  bool io = false;
  for (size_t i = 0; i < chunks; ++i) {
    if (populate) {
      way[i] = Way::kPopulate;
      io = true;
    } else if (cached[i] && have_mapping) {
      way[i] = Way::kCopy;
    } else if (direct_possible && (mode == DiskReadMode::kAuto || mode == DiskReadMode::kDirect)) {
      way[i] = Way::kDirect;
      io = true;
    } else {
      way[i] = Way::kBuffered;
      io = true;
    }
  }

  // The work, in file order: a chunk read with O_DIRECT is split into
  // kDirectRequest-sized requests so that many are in flight at once (a
  // virtual or NVMe disk gives its bandwidth to a deep queue, not to a few
  // large requests); other chunks are one unit each.
  struct Unit {
    uint32_t chunk;
    uint64_t off;  // from the start of the data section
    uint64_t len;
  };
  std::vector<Unit> units;
  units.reserve(chunks);
  for (size_t i = 0; i < chunks; ++i) {
    const uint64_t start = i * kChunk, len = chunk_len(i);
    const uint64_t step = way[i] == Way::kDirect     ? kDirectRequest
                          : way[i] == Way::kPopulate ? kPopulateRequest
                                                     : len;
    for (uint64_t o = 0; o < len; o += step) {
      units.push_back({static_cast<uint32_t>(i), start + o, std::min(step, len - o)});
    }
  }
  std::vector<std::atomic<uint32_t>> pending(chunks);  // units of each chunk not yet fetched
  for (const Unit& u : units) pending[u.chunk].fetch_add(1, std::memory_order_relaxed);

  std::atomic<bool> direct_ok{true};
  std::atomic<uint64_t> copied{0}, direct{0}, buffered{0}, mapped{0};
  auto fetch = [&](const Unit& u) -> Status {
    switch (way[u.chunk]) {
      case Way::kPopulate:
        if (Status s = f.Populate(mapping, u.off, u.len); !s.ok()) {
          return Status::IOError("cannot read bytes " + std::to_string(base + u.off) + "-" +
                                 std::to_string(base + u.off + u.len) +
                                 " of the entry: " + s.message());
        }
        mapped.fetch_add(u.len, std::memory_order_relaxed);
        return Status::OK();
      case Way::kCopy:
        std::memcpy(dst + u.off, mapping.data() + u.off, u.len);
        copied.fetch_add(u.len, std::memory_order_relaxed);
        return Status::OK();
      case Way::kDirect:
        if (direct_ok.load(std::memory_order_relaxed)) {
          const uint64_t padded =
              (u.len + kPage - 1) / kPage * kPage;  // the buffer is page-rounded
          auto got = f.ReadDirect(base + u.off, padded, dst + u.off);
          if (got.ok()) {
            if (*got < u.len) {
              return Status::IOError("file ends at byte " + std::to_string(base + u.off + *got) +
                                     ", expected " + std::to_string(base + n));
            }
            direct.fetch_add(u.len, std::memory_order_relaxed);
            return Status::OK();
          }
          if (got.status().code() != StatusCode::kUnsupported) return got.status();
          direct_ok = false;  // no O_DIRECT on this file system: through the page cache
        }
        [[fallthrough]];
      case Way::kBuffered:
        if (Status s = f.Read(base + u.off, u.len, dst + u.off); !s.ok()) return s;
        buffered.fetch_add(u.len, std::memory_order_relaxed);
        return Status::OK();
    }
    return Status::OK();
  };

  // Workers take units in file order from a shared counter (I/O-bound ones
  // keep kDirectQueueDepth requests in flight; copies use every core); the
  // worker that completes a chunk hashes it while it is in cache. MD5 and
  // SHA-256 must see the bytes in order: then this thread hashes chunks in
  // order as they land.
  const bool in_order = digest != nullptr && !digest->chunked();
  bool any_direct = false;
  for (Way w : way) any_direct = any_direct || w == Way::kDirect;
  const unsigned wanted = any_direct || populate ? std::max(kDirectQueueDepth, Cores())
                          : io                   ? std::max(4u, Cores())
                                                 : Cores();
  const unsigned threads = static_cast<unsigned>(std::min<size_t>(units.size(), wanted));
  std::mutex mu;
  std::condition_variable cv;
  Status first_error;
  std::atomic<bool> failed{false};
  std::vector<uint8_t> done(chunks, 0);
  std::atomic<size_t> next{0};
  // Fetches unit k; the thread that completes a chunk hashes it (unless in order).
  auto fetch_unit = [&](size_t k) {
    const Unit& u = units[k];
    Status s = fetch(u);
    if (s.ok() && pending[u.chunk].fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    const size_t i = u.chunk;
    if (s.ok() && digest != nullptr && !in_order) {
      digest->AddChunk(i, {dst + i * kChunk, static_cast<size_t>(chunk_len(i))});
    }
    std::lock_guard lock(mu);
    if (!s.ok()) {
      if (first_error.ok()) first_error = s;
      failed = true;
    } else {
      done[i] = 1;
    }
    cv.notify_all();
  };
  auto work = [&] {
    for (size_t k;
         !failed.load(std::memory_order_relaxed) && (k = next.fetch_add(1)) < units.size();) {
      fetch_unit(k);
    }
  };
  // In order, one of the threads (part 0) hashes chunk after chunk, fetching
  // units itself while the next chunk is not in (so it never waits for
  // helpers that a busy executor has not started).
  auto hash_in_order = [&] {
    for (size_t i = 0; i < chunks; ++i) {
      for (;;) {
        {
          std::unique_lock lock(mu);
          if (done[i] != 0 || failed.load()) break;
        }
        size_t k;
        if (!failed.load(std::memory_order_relaxed) && (k = next.fetch_add(1)) < units.size()) {
          fetch_unit(k);
          continue;
        }
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return done[i] != 0 || failed.load(); });
      }
      if (failed) break;
      digest->Update({dst + i * kChunk, static_cast<size_t>(chunk_len(i))});
    }
  };
  // On the current executor; this thread is one of the `threads` fetching
  // (and, in order, one more hashes).
  const unsigned parts = in_order ? threads + 1 : threads;
  Executor::Current().ParallelFor(parts, parts, [&](size_t part) {
    if (in_order && part == 0) {
      hash_in_order();
    } else {
      work();
    }
  });
  if (!first_error.ok()) return first_error;
  rep.copied += copied.load();
  rep.direct += direct.load();
  rep.buffered += buffered.load();
  rep.mapped += mapped.load();
  *out = populate ? std::move(mapping) : std::move(buffer);
  return Status::OK();
}

}  // namespace layercache
