#include "fault_env.h"

namespace layercache::testing {
namespace {

class FaultReadFile final : public RandomAccessFile {
 public:
  FaultReadFile(std::unique_ptr<RandomAccessFile> base, FaultInjectionEnv* env, std::string path)
      : base_(std::move(base)), env_(env), path_(std::move(path)) {}
  Status Read(uint64_t offset, size_t n, std::byte* dst) override {
    if (env_->Failing(FaultOp::kRead))
      return ErrnoStatus("injected fault: read " + path_, env_->fail_errno());
    return base_->Read(offset, n, dst);
  }
  uint64_t size() const override { return base_->size(); }
  uint64_t inode() const override { return base_->inode(); }

 private:
  std::unique_ptr<RandomAccessFile> base_;
  FaultInjectionEnv* env_;
  std::string path_;
};

class FaultWritableFile final : public WritableFile {
 public:
  FaultWritableFile(std::unique_ptr<WritableFile> base, FaultInjectionEnv* env, std::string path)
      : base_(std::move(base)), env_(env), path_(std::move(path)) {}
  Status Append(std::span<const std::byte> data) override {
    if (env_->Failing(FaultOp::kShortAppend) && data.size() > 1) {
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
  auto f = base_->OpenForRead(path);
  if (!f.ok()) return f.status();
  return std::unique_ptr<RandomAccessFile>(
      std::make_unique<FaultReadFile>(std::move(*f), this, path));
}

Result<std::unique_ptr<WritableFile>> FaultInjectionEnv::CreateNew(const std::string& path) {
  if (Status s = Mutate(FaultOp::kCreate, "create " + path); !s.ok()) return s;
  auto f = base_->CreateNew(path);
  if (!f.ok()) return f.status();
  return std::unique_ptr<WritableFile>(
      std::make_unique<FaultWritableFile>(std::move(*f), this, path));
}

}  // namespace layercache::testing
