// FaultEngine: an Engine that passes everything to another one, except the
// writes and syncs it is told to fail (tests only: the failures a disk can
// produce, so that the code's answer to them can be checked).
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "storage/engine.h"

namespace shoal::storage {

class FaultEngine final : public Engine {
 public:
  explicit FaultEngine(Engine* inner) : inner_(inner) {}

  // The next n calls of Write (or Sync) fail with an IOError.
  void FailNextWrites(int n) { fail_writes_.store(n); }
  void FailNextSyncs(int n) { fail_syncs_.store(n); }
  int writes_failed() const { return writes_failed_.load(); }

  Status Get(Cf cf, std::string_view key, std::string* value, const Snapshot* snapshot = nullptr) override {
    return inner_->Get(cf, key, value, snapshot);
  }
  Result<uint64_t> Write(WriteBatch& batch) override {
    if (Take(fail_writes_)) {
      writes_failed_.fetch_add(1);
      return Status::IOError("injected write failure");
    }
    auto seq = inner_->Write(batch);
    write_seq_.store(inner_->write_seq());
    return seq;
  }
  std::unique_ptr<WriteBatch> NewBatch() override { return inner_->NewBatch(); }
  Result<uint64_t> Sync() override {
    if (Take(fail_syncs_)) return Status::IOError("injected fsync failure");
    auto seq = inner_->Sync();
    durable_seq_.store(inner_->durable_seq());
    return seq;
  }
  std::unique_ptr<Iterator> NewIterator(Cf cf, const Snapshot* snapshot = nullptr) override {
    return inner_->NewIterator(cf, snapshot);
  }
  std::unique_ptr<Iterator> NewScanIterator(Cf cf, const Snapshot* snapshot = nullptr) override {
    return inner_->NewScanIterator(cf, snapshot);
  }
  std::unique_ptr<SstWriter> NewSstWriter(Cf cf, const std::string& path) override {
    return inner_->NewSstWriter(cf, path);
  }
  Status IngestSst(Cf cf, const std::string& path) override { return inner_->IngestSst(cf, path); }
  const std::string& dir() const override { return inner_->dir(); }
  std::unique_ptr<Snapshot> NewSnapshot() override { return inner_->NewSnapshot(); }
  MemoryUsage Memory() override { return inner_->Memory(); }
  int64_t DiskBytes() override { return inner_->DiskBytes(); }
  uint64_t ApproximateSize(Cf cf, std::string_view begin, std::string_view end) override {
    return inner_->ApproximateSize(cf, begin, end);
  }

 private:
  static bool Take(std::atomic<int>& n) {
    int v = n.load();
    while (v > 0) {
      if (n.compare_exchange_weak(v, v - 1)) return true;
    }
    return false;
  }
  Engine* inner_;
  std::atomic<int> fail_writes_{0}, fail_syncs_{0}, writes_failed_{0};
};

}  // namespace shoal::storage
