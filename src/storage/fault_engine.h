// FaultEngine: an Engine that passes everything to another one, except the
// writes and syncs it is told to fail (tests only: the failures a disk can
// produce, so that the code's answer to them can be checked). With
// TrackUnsynced it also models a crash that loses what was not synced, as
// leveldb's fault-injection Env does: every write since the last Sync keeps
// an undo record (the prior values of the keys it touched), and
// LoseUnsynced rolls the newest of them back, as a power loss would drop
// the tail of the WAL. RocksDB recovers a prefix of its WAL (point-in-time
// recovery, WALs synced before a flush), so a lost suffix is the model.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "storage/engine.h"

namespace shoal::storage {

class FaultEngine final : public Engine {
 public:
  explicit FaultEngine(Engine* inner) : inner_(inner) {}

  // The next n calls of Write (or Sync) fail with an IOError.
  void FailNextWrites(int n) { fail_writes_.store(n); }
  void FailNextSyncs(int n) { fail_syncs_.store(n); }
  // Called before each IngestSst reaches the store (a look at the state
  // just before a snapshot's file goes in).
  void BeforeIngest(std::function<void(Cf)> f) { before_ingest_ = std::move(f); }
  // The next IngestSst fails (once).
  void FailNextIngest() { fail_ingests_.store(1); }
  // The next write that changes a key of `cf` fails (once).
  void FailNextWriteTo(Cf cf) { fail_to_cf_.store(static_cast<int>(cf)); }
  // Every read of `key` in `cf` (Get, or its place in a MultiGet) fails with
  // an IOError until ClearFaults.
  void FailReadsOf(Cf cf, std::string key) {
    std::lock_guard<std::mutex> lock(read_mu_);
    failing_read_ = CfKey{cf, std::move(key)};
  }
  // The next n MultiGet calls report an IOError for every key (a batched
  // read that failed: a write hint's lookups, a pipeline's GETs).
  void FailNextMultiGets(int n) { fail_multigets_.store(n); }
  // The next n Get calls fail with an IOError (a key's read for an apply,
  // a client's GET, whether a replica's state is on disk).
  void FailNextGets(int n) { fail_gets_.store(n); }
  // The next n iterators (NewIterator, NewScanIterator) each fail their
  // move number `at` (0: the first seek; seeks and steps count): invalid,
  // with an IOError status, until positioned again (a scan, the Raft log
  // read back, an image's export). One that is not moved that far does
  // not fail.
  void FailNextIterators(int n, int at = 0) {
    fail_iterators_at_.store(at);
    fail_iterators_.store(n);
  }
  // Reads failed on purpose so far: Get calls, iterators' moves.
  uint64_t gets_failed() const { return gets_failed_.load(); }
  uint64_t iterators_failed() const { return iterators_failed_.load(); }
  // Get and MultiGet calls, and the keys they asked for.
  uint64_t read_calls() const { return read_calls_.load(); }
  uint64_t keys_read() const { return keys_read_.load(); }
  void ClearFaults() {
    {
      std::lock_guard<std::mutex> lock(read_mu_);
      failing_read_.reset();
    }
    fail_writes_.store(0);
    fail_syncs_.store(0);
    fail_to_cf_.store(-1);
    fail_ingests_.store(0);
    fail_multigets_.store(0);
    fail_gets_.store(0);
    fail_iterators_.store(0);
  }
  int writes_failed() const { return writes_failed_.load(); }

  // Keeps undo records of unsynced writes from now on; Sync then only marks
  // them durable (no fsync: durability is what the model says it is).
  void TrackUnsynced() { track_ = true; }
  size_t unsynced_writes() const { return undo_.size(); }
  // Of the writes LoseUnsynced undid so far, those that changed Raft state
  // (log, hard state): the losses a crash between a round's write and its
  // sync causes.
  size_t raft_writes_lost() const { return raft_writes_lost_; }
  // As a crash: undoes the newest `n` unsynced writes (all of them if n is
  // larger) and returns how many it undid. Close the engine afterwards.
  size_t LoseUnsynced(size_t n) {
    size_t undone = 0;
    while (n-- > 0 && !undo_.empty()) {
      auto batch = inner_->NewBatch();
      bool raft = false;
      for (const auto& [ck, prior] : undo_.back()) {
        raft = raft || ck.first == Cf::kRaft;
        if (prior) {
          batch->Put(ck.first, ck.second, *prior);
        } else {
          batch->Delete(ck.first, ck.second);
        }
      }
      undo_.pop_back();
      if (batch->Count() > 0) SHOAL_CHECK(inner_->Write(*batch).ok());
      ++undone;
      raft_writes_lost_ += raft;
    }
    undo_.clear();
    SHOAL_CHECK(inner_->Sync().ok());
    return undone;
  }

  Status Get(Cf cf, std::string_view key, std::string* value, const Snapshot* snapshot = nullptr,
             ReadVia via = ReadVia::kStore) override {
    read_calls_.fetch_add(1);
    keys_read_.fetch_add(1);
    if (Take(fail_gets_)) {
      gets_failed_.fetch_add(1);
      return Status::IOError("injected read failure");
    }
    if (FailsRead(cf, key)) return Status::IOError("injected read failure");
    return inner_->Get(cf, key, value, snapshot, via);
  }
  void MultiGet(Cf cf, std::span<const std::string_view> keys, std::span<std::string> values,
                std::span<Status> statuses, const Snapshot* snapshot = nullptr,
                ReadVia via = ReadVia::kStore) override {
    read_calls_.fetch_add(1);
    keys_read_.fetch_add(keys.size());
    inner_->MultiGet(cf, keys, values, statuses, snapshot, via);
    const bool all = Take(fail_multigets_);
    for (size_t i = 0; i < keys.size(); ++i) {
      if (all || FailsRead(cf, keys[i])) statuses[i] = Status::IOError("injected read failure");
    }
  }
  Result<uint64_t> Write(WriteBatch& batch) override {
    if (Take(fail_writes_) || TakeCf(batch)) {
      writes_failed_.fetch_add(1);
      return Status::IOError("injected write failure");
    }
    if (track_) undo_.push_back(PriorValues(batch));
    auto seq = inner_->Write(batch);
    if (!seq.ok() && track_) undo_.pop_back();
    write_seq_.store(inner_->write_seq());
    return seq;
  }
  std::unique_ptr<WriteBatch> NewBatch() override { return inner_->NewBatch(); }
  Result<uint64_t> Sync() override {
    if (Take(fail_syncs_)) return Status::IOError("injected fsync failure");
    if (track_) {
      undo_.clear();
      durable_seq_.store(write_seq_.load());
      return write_seq_.load();
    }
    auto seq = inner_->Sync();
    durable_seq_.store(inner_->durable_seq());
    return seq;
  }
  std::unique_ptr<Iterator> NewIterator(Cf cf, const Snapshot* snapshot = nullptr) override {
    return MaybeFailing(inner_->NewIterator(cf, snapshot));
  }
  std::unique_ptr<Iterator> NewScanIterator(Cf cf, const Snapshot* snapshot = nullptr) override {
    return MaybeFailing(inner_->NewScanIterator(cf, snapshot));
  }
  std::unique_ptr<SstWriter> NewSstWriter(Cf cf, const std::string& path) override {
    return inner_->NewSstWriter(cf, path);
  }
  // Durable at once, but RocksDB does not sync the WAL for it: a crash may
  // still lose earlier unsynced writes, which the undo records (taken before
  // the file's keys came in) cannot model. Callers sync first.
  Status IngestSst(Cf cf, const std::string& path, bool verify) override {
    if (before_ingest_) before_ingest_(cf);
    if (Take(fail_ingests_)) return Status::IOError("injected ingest failure");
    SHOAL_CHECK(undo_.empty() && "an ingest after unsynced writes");
    return inner_->IngestSst(cf, path, verify);
  }
  const std::string& dir() const override { return inner_->dir(); }
  std::unique_ptr<Snapshot> NewSnapshot() override { return inner_->NewSnapshot(); }
  MemoryUsage Memory() override { return inner_->Memory(); }
  int64_t DiskBytes() override { return inner_->DiskBytes(); }
  uint64_t VisibleSeq() override { return inner_->VisibleSeq(); }
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
  bool TakeCf(const WriteBatch& batch) {
    int cf = fail_to_cf_.load();
    if (cf < 0) return false;
    struct Touches final : WriteBatch::Visitor {
      Cf cf;
      bool yes = false;
      void Visit(const WriteBatch::Op& op) override { yes = yes || op.cf == cf; }
    } t;
    t.cf = static_cast<Cf>(cf);
    batch.Visit(t);
    return t.yes && fail_to_cf_.compare_exchange_strong(cf, -1);
  }

  // An iterator whose move number `fail_at` fails (0: its first seek; a
  // seek or a step, Next or Prev, is a move), as one whose read of a block
  // failed: invalid, with an IOError status, until it is positioned again
  // (as RocksDB's: a seek clears the error, and may then succeed).
  class FailingIterator final : public Iterator {
   public:
    FailingIterator(std::unique_ptr<Iterator> inner, int fail_at, std::atomic<uint64_t>* failures)
        : inner_(std::move(inner)), fail_at_(fail_at), failures_(failures) {}
    void Seek(std::string_view target) override {
      if (!Fails()) inner_->Seek(target);
    }
    void SeekToFirst() override {
      if (!Fails()) inner_->SeekToFirst();
    }
    void SeekForPrev(std::string_view target) override {
      if (!Fails()) inner_->SeekForPrev(target);
    }
    bool Valid() const override { return !failed_ && inner_->Valid(); }
    void Next() override {
      SHOAL_CHECK(Valid());
      if (!Fails()) inner_->Next();
    }
    void Prev() override {
      SHOAL_CHECK(Valid());
      if (!Fails()) inner_->Prev();
    }
    std::string_view key() const override {
      SHOAL_CHECK(Valid());
      return inner_->key();
    }
    std::string_view value() const override {
      SHOAL_CHECK(Valid());
      return inner_->value();
    }
    Status status() const override { return failed_ ? Status::IOError("injected read failure") : inner_->status(); }

   private:
    bool Fails() {
      failed_ = moves_++ == fail_at_;
      if (failed_) failures_->fetch_add(1);
      return failed_;
    }
    std::unique_ptr<Iterator> inner_;
    int fail_at_, moves_ = 0;
    std::atomic<uint64_t>* failures_;
    bool failed_ = false;
  };
  std::unique_ptr<Iterator> MaybeFailing(std::unique_ptr<Iterator> it) {
    if (!Take(fail_iterators_)) return it;
    return std::make_unique<FailingIterator>(std::move(it), fail_iterators_at_.load(), &iterators_failed_);
  }

  bool FailsRead(Cf cf, std::string_view key) {
    std::lock_guard<std::mutex> lock(read_mu_);
    return failing_read_ && failing_read_->first == cf && failing_read_->second == key;
  }

  using CfKey = std::pair<Cf, std::string>;
  using Undo = std::map<CfKey, std::optional<std::string>>;  // nullopt: absent before

  // What the keys `batch` touches held before it (each key as first seen).
  Undo PriorValues(const WriteBatch& batch) {
    struct Recorder final : WriteBatch::Visitor {
      Engine* inner;
      Undo undo;
      void Note(Cf cf, std::string_view key) {
        CfKey ck{cf, std::string(key)};
        if (undo.contains(ck)) return;
        std::string v;
        Status s = inner->Get(cf, key, &v);
        SHOAL_CHECK(s.ok() || s.code() == Code::kNotFound);
        undo.emplace(std::move(ck), s.ok() ? std::optional<std::string>(std::move(v)) : std::nullopt);
      }
      void Visit(const WriteBatch::Op& op) override {
        if (op.kind != WriteBatch::Op::Kind::kDeleteRange) return Note(op.cf, op.key);
        auto it = op.cf == Cf::kData ? inner->NewScanIterator(op.cf) : inner->NewIterator(op.cf);
        for (it->Seek(op.key); it->Valid() && it->key() < op.value; it->Next()) {
          undo.try_emplace(CfKey{op.cf, std::string(it->key())}, std::string(it->value()));
        }
        SHOAL_CHECK(it->status().ok());
      }
    } rec;
    rec.inner = inner_;
    batch.Visit(rec);
    return std::move(rec.undo);
  }

  Engine* inner_;
  std::atomic<int> fail_writes_{0}, fail_syncs_{0}, writes_failed_{0}, fail_to_cf_{-1}, fail_ingests_{0},
      fail_multigets_{0}, fail_gets_{0}, fail_iterators_{0}, fail_iterators_at_{0};
  size_t raft_writes_lost_ = 0;
  bool track_ = false;
  std::function<void(Cf)> before_ingest_;
  std::vector<Undo> undo_;  // one per unsynced write, oldest first
  std::mutex read_mu_;  // reads run on any thread
  std::optional<CfKey> failing_read_;
  std::atomic<uint64_t> read_calls_{0}, keys_read_{0}, gets_failed_{0}, iterators_failed_{0};
};

}  // namespace shoal::storage
