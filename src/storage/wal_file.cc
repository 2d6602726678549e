#include "storage/wal_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

#include "common/crc32c.h"

namespace shoal::storage {
namespace {

using rocksdb::DataVerificationInfo;
using rocksdb::IODebugContext;
using rocksdb::IOOptions;
using rocksdb::IOStatus;
using rocksdb::Slice;

bool IsWal(const std::string& fname) {
  constexpr std::string_view kSuffix = ".log";
  return fname.size() > kSuffix.size() && fname.compare(fname.size() - kSuffix.size(), kSuffix.size(), kSuffix) == 0;
}

// A WAL file: RocksDB's own (appends at its end through its descriptor),
// and a second descriptor of ours that writes zeros ahead of that end.
class ZeroAheadWalFile final : public rocksdb::FSWritableFileOwnerWrapper {
 public:
  ZeroAheadWalFile(std::unique_ptr<rocksdb::FSWritableFile> file, int fd, uint64_t end)
      : FSWritableFileOwnerWrapper(std::move(file)), fd_(fd), end_(end), zeroed_(end) {}
  ~ZeroAheadWalFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  IOStatus Append(const Slice& data, const IOOptions& options, IODebugContext* dbg) override {
    ZeroAhead(end_ + data.size());
    IOStatus s = target()->Append(data, options, dbg);
    if (s.ok()) end_ += data.size();
    return s;
  }
  IOStatus Append(const Slice& data, const IOOptions& options, const DataVerificationInfo& info,
                  IODebugContext* dbg) override {
    ZeroAhead(end_ + data.size());
    IOStatus s = target()->Append(data, options, info, dbg);
    if (s.ok()) end_ += data.size();
    return s;
  }
  IOStatus Truncate(uint64_t size, const IOOptions& options, IODebugContext* dbg) override {
    IOStatus s = target()->Truncate(size, options, dbg);
    if (s.ok()) {
      // The file now ends at `size`: the zeros after it went with the rest.
      end_ = size;
      zeroed_ = size;
    }
    return s;
  }
  IOStatus Close(const IOOptions& options, IODebugContext* dbg) override {
    IOStatus s = target()->Close(options, dbg);
    if (fd_ >= 0) {
      // The zeros past the log's end are no part of it.
      if (s.ok() && zeroed_ > end_ && ::ftruncate(fd_, static_cast<off_t>(end_)) != 0) {
        s = IOStatus::IOError("truncate the zeros after a WAL's end", std::strerror(errno));
      }
      ::close(fd_);
      fd_ = -1;
    }
    return s;
  }

 private:
  // Zeros from the log's end-to-be `upto` to kWalZeroAhead past it, in
  // whole steps; their writeback starts now. Never over the log's bytes:
  // they start at `upto` or at the zeros already there.
  void ZeroAhead(uint64_t upto) {
    if (fd_ < 0 || failed_ || upto + kWalZeroAhead / 2 <= zeroed_) return;
    static const std::string kZeros(64 * 1024, '\0');
    const uint64_t from = std::max(zeroed_, upto);
    const uint64_t to = (upto + kWalZeroAhead + kWalZeroStep - 1) / kWalZeroStep * kWalZeroStep;
    for (uint64_t at = from; at < to;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(kZeros.size(), to - at));
      const ssize_t w = ::pwrite(fd_, kZeros.data(), n, static_cast<off_t>(at));
      if (w <= 0) {
        // Out of space, say: the log goes on appending as RocksDB does
        // alone (what was zeroed is cut off at Close).
        if (w < 0 && errno == EINTR) continue;
        failed_ = true;
        zeroed_ = std::max(zeroed_, at);
        return;
      }
      at += static_cast<uint64_t>(w);
    }
    // Start their writeback (and block allocation) now, not at a sync.
    (void)::sync_file_range(fd_, static_cast<off_t>(from), static_cast<off_t>(to - from), SYNC_FILE_RANGE_WRITE);
    zeroed_ = to;
  }

  int fd_;
  uint64_t end_;     // the log's bytes: [0, end_)
  uint64_t zeroed_;  // zeros (or the log's bytes) up to here
  bool failed_ = false;
};

class ZeroAheadWalFs final : public rocksdb::FileSystemWrapper {
 public:
  explicit ZeroAheadWalFs(const std::shared_ptr<rocksdb::FileSystem>& base) : FileSystemWrapper(base) {}
  const char* Name() const override { return "ShoalZeroAheadWalFs"; }

  IOStatus NewWritableFile(const std::string& fname, const rocksdb::FileOptions& options,
                           std::unique_ptr<rocksdb::FSWritableFile>* result, IODebugContext* dbg) override {
    IOStatus s = target()->NewWritableFile(fname, options, result, dbg);
    if (!s.ok() || !IsWal(fname) || options.use_direct_writes) return s;
    const int fd = ::open(fname.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return s;  // RocksDB's file alone, as without this
    *result = std::make_unique<ZeroAheadWalFile>(std::move(*result), fd, 0);
    return s;
  }
};

}  // namespace

WalBlockScan ScanWalBlock(std::string_view block) {
  constexpr size_t kHeader = 7;
  constexpr uint32_t kMaskDelta = 0xa282ead8u;
  WalBlockScan scan;
  size_t& pos = scan.intact;
  while (block.size() - pos >= kHeader) {
    const auto* h = reinterpret_cast<const unsigned char*>(block.data() + pos);
    const size_t length = size_t{h[4]} | (size_t{h[5]} << 8);
    if (length == 0 && h[6] == 0) {
      scan.stop = WalBlockScan::Stop::kZeros;
      return scan;
    }
    const uint32_t masked = uint32_t{h[0]} | (uint32_t{h[1]} << 8) | (uint32_t{h[2]} << 16) | (uint32_t{h[3]} << 24);
    const uint32_t rot = masked - kMaskDelta;
    if (kHeader + length > block.size() - pos ||
        Crc32c(block.substr(pos + 6, 1 + length)) != ((rot >> 17) | (rot << 15))) {
      scan.stop = WalBlockScan::Stop::kDamaged;
      return scan;
    }
    pos += kHeader + length;
  }
  pos = block.size();  // the rest, under a header's size, is padding
  return scan;
}

namespace {

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

Status Errno(const std::string& what) { return Status::IOError(what + ": " + std::strerror(errno)); }

bool ReadAt(int fd, char* buf, size_t n, uint64_t at) {
  size_t done = 0;
  while (done < n) {
    const ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(at + done));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) errno = EIO;  // shorter than its size said
    if (r <= 0) return false;
    done += static_cast<size_t>(r);
  }
  return true;
}

Result<uint64_t> FileSize(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return Errno("stat " + path);
  return static_cast<uint64_t>(st.st_size);
}

// Where the WAL at `path` has a header RocksDB's reader would skip as
// zeros with something other than zeros after it; nullopt if it has none
// (its records end in zeros or at the file's end, or a damaged record
// comes first: RocksDB's recovery stops at that itself).
Result<std::optional<uint64_t>> FindGap(const std::string& path, std::string& block) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) return Errno("open " + path);
  auto size = FileSize(f.fd, path);
  if (!size.ok()) return size.status();
  std::optional<uint64_t> zeros_at;
  for (uint64_t at = 0; at < *size; at += kWalBlockBytes) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kWalBlockBytes, *size - at));
    if (!ReadAt(f.fd, block.data(), n, at)) return Errno("read " + path);
    const WalBlockScan scan = ScanWalBlock(std::string_view(block.data(), n));
    if (scan.stop == WalBlockScan::Stop::kDamaged) return std::optional<uint64_t>{};
    if (scan.stop == WalBlockScan::Stop::kZeros) {
      zeros_at = at + scan.intact;
      break;
    }
  }
  if (!zeros_at) return std::optional<uint64_t>{};
  for (uint64_t at = *zeros_at; at < *size;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kWalBlockBytes, *size - at));
    if (!ReadAt(f.fd, block.data(), n, at)) return Errno("read " + path);
    if (std::any_of(block.data(), block.data() + n, [](char c) { return c != 0; })) return zeros_at;
    at += n;
  }
  return std::optional<uint64_t>{};  // zeros to the end: where the log ended
}

Status CutAt(const std::string& path, uint64_t at) {
  Fd f;
  f.fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (f.fd < 0) return Errno("open " + path);
  if (::ftruncate(f.fd, static_cast<off_t>(at)) != 0) return Errno("truncate " + path);
  if (::fsync(f.fd) != 0) return Errno("fsync " + path);
  return Status::Ok();
}

// RocksDB's lock on a database directory, held while the WALs are cut: a
// database open in another process (or this one) keeps them as they are.
class DirLock {
 public:
  explicit DirLock(const std::string& dir) : env_(rocksdb::Env::Default()) {
    rocksdb::Status s = env_->LockFile(dir + "/LOCK", &lock_);
    if (!s.ok()) status_ = Status::IOError("lock " + dir + " (is another shoal using it?): " + s.ToString());
  }
  ~DirLock() {
    if (lock_ != nullptr) (void)env_->UnlockFile(lock_);
  }
  const Status& status() const { return status_; }

 private:
  rocksdb::Env* env_;
  rocksdb::FileLock* lock_ = nullptr;
  Status status_;
};

}  // namespace

Result<std::vector<std::string>> TrimWalTails(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return std::vector<std::string>{};
  DirLock lock(dir);
  if (!lock.status().ok()) return lock.status();
  std::vector<std::pair<uint64_t, std::string>> wals;  // by number: the order RocksDB wrote them in
  std::filesystem::directory_iterator it(dir, ec);
  for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!IsWal(name)) continue;
    uint64_t number = 0;
    const char* end = name.data() + name.size() - 4;
    auto [p, err] = std::from_chars(name.data(), end, number);
    if (err != std::errc() || p != end) continue;
    wals.emplace_back(number, it->path().string());
  }
  if (ec) return Status::IOError("list " + dir + ": " + ec.message());
  std::sort(wals.begin(), wals.end());

  std::string block(kWalBlockBytes, '\0');
  std::optional<size_t> torn;  // the first WAL with a gap
  uint64_t gap_at = 0;
  for (size_t i = 0; i < wals.size() && !torn; ++i) {
    auto gap = FindGap(wals[i].second, block);
    if (!gap.ok()) return gap.status();
    if (*gap) {
      torn = i;
      gap_at = **gap;
    }
  }
  std::vector<std::string> changed;
  if (!torn) return changed;
  // The later WALs first, newest first, then the torn one: a crash in
  // between leaves the gap to be found again at the next start.
  for (size_t i = wals.size(); i-- > *torn + 1;) {
    const std::string& path = wals[i].second;
    std::error_code sec;
    const uint64_t size = std::filesystem::file_size(path, sec);
    if (sec) return Status::IOError("stat " + path + ": " + sec.message());
    if (size == 0) continue;
    if (Status s = CutAt(path, 0); !s.ok()) return s;
    changed.push_back(std::filesystem::path(path).filename().string() + ": emptied, " + std::to_string(size) +
                      " bytes written after an earlier WAL's gap (never acknowledged)");
  }
  const std::string& path = wals[*torn].second;
  if (Status s = CutAt(path, gap_at); !s.ok()) return s;
  changed.insert(changed.begin(), std::filesystem::path(path).filename().string() + ": cut at " +
                                      std::to_string(gap_at) +
                                      ", where a sync the crash cut short left zeros before later records");
  return changed;
}

std::unique_ptr<rocksdb::Env> NewZeroAheadWalEnv() {
  return rocksdb::NewCompositeEnv(std::make_shared<ZeroAheadWalFs>(rocksdb::FileSystem::Default()));
}

}  // namespace shoal::storage
