#include "fault_env.h"

#include <algorithm>

namespace layercache::testing {
namespace {

constexpr uint64_t kPage = 4096;

class FaultReadFile final : public RandomAccessFile {
 public:
  FaultReadFile(std::unique_ptr<RandomAccessFile> base, FaultInjectionEnv* env, std::string path)
      : base_(std::move(base)), env_(env), path_(std::move(path)) {}

  Status Read(uint64_t offset, size_t n, std::byte* dst) override {
    if (Status s = env_->Inject(FaultOp::kRead, "read " + path_); !s.ok()) return s;
    if (env_->Failing(FaultOp::kShortRead, path_) && offset + n > FakeEnd()) {
      env_->CountInjected();
      return Status::IOError("injected fault: cannot read " + path_ + ": file ends at byte " +
                             std::to_string(std::max(offset, FakeEnd())) + ", expected " +
                             std::to_string(offset + n));
    }
    env_->CountPlainRead();
    return base_->Read(offset, n, dst);
  }
  uint64_t size() const override { return base_->size(); }
  uint64_t inode() const override { return base_->inode(); }

  Result<uint64_t> ReadDirect(uint64_t offset, uint64_t n, std::byte* dst) override {
    if (env_->plain_only()) return RandomAccessFile::ReadDirect(offset, n, dst);
    if (Status s = env_->Inject(FaultOp::kDirectRead, "direct read " + path_); !s.ok()) return s;
    if (env_->Failing(FaultOp::kShortRead, path_)) {
      // The file ends halfway: what lies before the end, then nothing.
      env_->CountInjected();
      env_->CountDirectRead();
      const uint64_t end = std::min(offset + n, std::max(offset, FakeEnd()));
      if (end > offset) {
        if (Status s = base_->Read(offset, end - offset, dst); !s.ok()) return s;
      }
      return end - offset;
    }
    env_->CountDirectRead();
    return base_->ReadDirect(offset, n, dst);
  }
  bool IsResident(uint64_t offset, uint64_t n) override {
    if (env_->plain_only()) return false;
    switch (env_->residency()) {
      case Residency::kAll:
        return true;
      case Residency::kNone:
      case Residency::kUnknown:
        return false;
      case Residency::kReal:
        break;
    }
    return base_->IsResident(offset, n);
  }
  bool MapIfResident(uint64_t offset, uint64_t n, AlignedBuffer* out) override {
    if (env_->plain_only() || env_->residency() == Residency::kNone ||
        env_->residency() == Residency::kUnknown) {
      return false;
    }
    if (!env_->Inject(FaultOp::kMapRefused, "map " + path_).ok()) return false;
    // A read-only mapping cannot be corrupted here: refuse it instead.
    if (env_->Failing(FaultOp::kMapCorrupt, path_)) return false;
    if (env_->residency() == Residency::kAll) return MapPrivate(offset, n, out);
    if (!base_->MapIfResident(offset, n, out)) return false;
    env_->CountMapping();
    return true;
  }
  int64_t CachedPages(uint64_t offset, uint64_t n) override {
    if (env_->plain_only()) return -1;
    switch (env_->residency()) {
      case Residency::kAll:
        return static_cast<int64_t>((offset + n + kPage - 1) / kPage - offset / kPage);
      case Residency::kNone:
        return 0;
      case Residency::kUnknown:
        return -1;
      case Residency::kReal:
        break;
    }
    return base_->CachedPages(offset, n);
  }
  bool MapPrivate(uint64_t offset, uint64_t n, AlignedBuffer* out) override {
    if (env_->plain_only()) return false;
    if (!env_->Inject(FaultOp::kMapRefused, "map " + path_).ok()) return false;
    if (!base_->MapPrivate(offset, n, out)) return false;
    env_->CountMapping();
    {
      std::lock_guard lock(mu_);
      map_offsets_[out->data()] = offset;
    }
    if (env_->Failing(FaultOp::kMapCorrupt, path_) && out->size() > 0) {
      // The mapping is private and writable: the flip never reaches the file.
      env_->CountInjected();
      out->data()[out->size() / 2] ^= std::byte{0x5a};
    }
    return true;
  }
  Status Populate(const AlignedBuffer& mapping, uint64_t offset, uint64_t n) override {
    if (env_->plain_only()) return RandomAccessFile::Populate(mapping, offset, n);
    if (Status s = env_->Inject(FaultOp::kMapRead, "read into a mapping of " + path_); !s.ok()) {
      return s;
    }
    if (env_->Failing(FaultOp::kShortRead, path_)) {
      uint64_t file_offset = 0;
      {
        std::lock_guard lock(mu_);
        auto it = map_offsets_.find(mapping.data());
        if (it != map_offsets_.end()) file_offset = it->second;
      }
      if (file_offset + offset + n > FakeEnd()) {
        env_->CountInjected();
        return Status::IOError("injected fault: " + path_ + " ends before them");
      }
    }
    env_->CountMapRead();
    return base_->Populate(mapping, offset, n);
  }

 private:
  uint64_t FakeEnd() const { return base_->size() / 2; }

  std::mutex mu_;
  std::map<const std::byte*, uint64_t> map_offsets_;  // mapping -> its file offset

  std::unique_ptr<RandomAccessFile> base_;
  FaultInjectionEnv* env_;
  std::string path_;
};

class FaultWritableFile final : public WritableFile {
 public:
  FaultWritableFile(std::unique_ptr<WritableFile> base, FaultInjectionEnv* env, std::string path)
      : base_(std::move(base)), env_(env), path_(std::move(path)) {}
  Status Append(std::span<const std::byte> data) override {
    if (env_->Failing(FaultOp::kShortAppend, path_) && data.size() > 1) {
      // Half the bytes reach the file, then the disk is full.
      if (Status s = base_->Append(data.first(data.size() / 2)); !s.ok()) return s;
      return env_->Mutate(FaultOp::kShortAppend, "short write to " + path_);
    }
    if (Status s = env_->Mutate(FaultOp::kAppend, "write " + path_); !s.ok()) return s;
    return base_->Append(data);
  }
  Status Sync() override {
    if (Status s = env_->Mutate(FaultOp::kSync, "fsync " + path_); !s.ok()) return s;
    return base_->Sync();
  }
  Status Close() override { return base_->Close(); }

 private:
  std::unique_ptr<WritableFile> base_;
  FaultInjectionEnv* env_;
  std::string path_;
};

}  // namespace

Result<std::unique_ptr<RandomAccessFile>> FaultInjectionEnv::OpenForRead(const std::string& path) {
  auto f = target()->OpenForRead(path);
  if (!f.ok()) return f.status();
  return std::unique_ptr<RandomAccessFile>(
      std::make_unique<FaultReadFile>(std::move(*f), this, path));
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::CreateNew(const std::string& path) {
  if (Status s = Mutate(FaultOp::kCreate, "create " + path); !s.ok()) return s;
  auto f = target()->CreateNew(path);
  if (!f.ok()) return f.status();
  return std::unique_ptr<WritableFile>(
      std::make_unique<FaultWritableFile>(std::move(*f), this, path));
}

Result<std::unique_ptr<FileLockHandle>> FaultInjectionEnv::LockFile(const std::string& path,
                                                                    uint64_t offset,
                                                                    uint64_t length, bool wait,
                                                                    bool create) {
  // Not counted as mutating operations: the crash test's points stay those
  // of the writes.
  if (Status s = Inject(FaultOp::kLockOpen, "cannot open lock file " + path); !s.ok()) return s;
  if (Status s = Inject(FaultOp::kLock, "cannot lock " + path); !s.ok()) return s;
  ++locks_;
  return target()->LockFile(path, offset, length, wait, create);
}

}  // namespace layercache::testing
