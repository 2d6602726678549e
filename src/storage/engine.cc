#include "storage/engine.h"
#include "storage/keys.h"
#include "storage/slot_memtable.h"
#include "storage/value_cache.h"
#include "storage/wal_file.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/sst_file_reader.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/write_buffer_manager.h>

#include <algorithm>
#include <array>
#include <mutex>

namespace shoal::storage {
namespace {

constexpr int kCfCount = 4;
const char* const kCfNames[kCfCount] = {"default", "expiry", "meta", "raft"};

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string msg = std::string(what) + ": " + s.ToString();
  if (s.IsNotFound()) return Status::NotFound(msg);
  if (s.IsCorruption()) return Status::Corruption(msg);
  if (s.IsBusy()) return Status::Busy(msg);
  return Status::IOError(msg);
}

rocksdb::Slice ToSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }
std::string_view FromSlice(const rocksdb::Slice& s) { return std::string_view(s.data(), s.size()); }

class RocksIterator final : public Iterator {
 public:
  explicit RocksIterator(rocksdb::Iterator* it) : it_(it) {}
  void Seek(std::string_view target) override { it_->Seek(ToSlice(target)); }
  void SeekToFirst() override { it_->SeekToFirst(); }
  bool Valid() const override { return it_->Valid(); }
  void Next() override { it_->Next(); }
  void SeekForPrev(std::string_view target) override { it_->SeekForPrev(ToSlice(target)); }
  void Prev() override { it_->Prev(); }
  std::string_view key() const override { return FromSlice(it_->key()); }
  std::string_view value() const override { return FromSlice(it_->value()); }
  Status status() const override { return FromRocks(it_->status(), "iterator"); }

 private:
  std::unique_ptr<rocksdb::Iterator> it_;
};

class RocksSnapshot final : public Snapshot {
 public:
  RocksSnapshot(rocksdb::DB* db, const rocksdb::Snapshot* snap) : db_(db), snap_(snap) {}
  ~RocksSnapshot() override { db_->ReleaseSnapshot(snap_); }
  const rocksdb::Snapshot* get() const { return snap_; }

 private:
  rocksdb::DB* db_;
  const rocksdb::Snapshot* snap_;
};

}  // namespace

struct WriteBatch::Impl {
  rocksdb::WriteBatch batch;
  const std::vector<rocksdb::ColumnFamilyHandle*>* handles;
  // Ranges deleted in the data CF: RocksEngine::Write may flush its memtable.
  std::vector<std::pair<std::string, std::string>> data_ranges;
  // The [slot][db] prefix of each data key put: RocksEngine::Write has the
  // memtable's buckets for them fetched into the cache first.
  std::vector<uint32_t> data_prefixes;
  // The data keys put or deleted, back to back, and where each ends: the
  // value cache forgets them around the write. Past ValueCache's
  // kWriteKeysMax, only that there were more (the cache then forgets all).
  std::string data_keys;
  std::vector<uint32_t> data_key_ends;
  bool many_data_keys = false;
  void AddDataKey(std::string_view key) {
    // A collection's elements are never cached: an HSET of thousands of
    // fields does not count as a write of every key.
    if (many_data_keys || ValueCache::IsElementKey(key)) return;
    if (data_key_ends.size() == ValueCache::kWriteKeysMax) {
      many_data_keys = true;
      return;
    }
    data_keys.append(key);
    data_key_ends.push_back(static_cast<uint32_t>(data_keys.size()));
  }
};

WriteBatch::WriteBatch(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WriteBatch::~WriteBatch() = default;
size_t WriteBatch::Count() const { return static_cast<size_t>(impl_->batch.Count()); }
void WriteBatch::Clear() {
  impl_->batch.Clear();
  impl_->data_ranges.clear();
  impl_->data_prefixes.clear();
  if (impl_->data_keys.capacity() > (1 << 20)) std::string().swap(impl_->data_keys);
  impl_->data_keys.clear();
  impl_->data_key_ends.clear();
  impl_->many_data_keys = false;
}

void WriteBatch::Put(Cf cf, std::string_view key, std::string_view value) {
  SHOAL_CHECK(cf != Cf::kData || key.size() >= kDataKeyPrefixBytes);
  if (cf == Cf::kData) {
    static_assert(kDataKeyPrefixBytes == 4);
    const auto* b = reinterpret_cast<const uint8_t*>(key.data());
    impl_->data_prefixes.push_back(uint32_t{b[0]} << 24 | uint32_t{b[1]} << 16 | uint32_t{b[2]} << 8 | b[3]);
    impl_->AddDataKey(key);
  }
  auto s = impl_->batch.Put((*impl_->handles)[static_cast<int>(cf)], ToSlice(key), ToSlice(value));
  SHOAL_CHECK(s.ok());
}

void WriteBatch::Delete(Cf cf, std::string_view key) {
  if (cf == Cf::kData) impl_->AddDataKey(key);
  auto s = impl_->batch.Delete((*impl_->handles)[static_cast<int>(cf)], ToSlice(key));
  SHOAL_CHECK(s.ok());
}

void WriteBatch::DeleteRange(Cf cf, std::string_view begin, std::string_view end) {
  auto s = impl_->batch.DeleteRange((*impl_->handles)[static_cast<int>(cf)], ToSlice(begin),
                                    ToSlice(end));
  SHOAL_CHECK(s.ok());
  if (cf == Cf::kData) impl_->data_ranges.emplace_back(begin, end);
}

void WriteBatch::Visit(Visitor& visitor) const {
  struct Handler final : rocksdb::WriteBatch::Handler {
    const std::vector<rocksdb::ColumnFamilyHandle*>* handles = nullptr;
    Visitor* visitor = nullptr;
    Cf CfOf(uint32_t id) const {
      for (size_t i = 0; i < handles->size(); ++i) {
        if ((*handles)[i]->GetID() == id) return static_cast<Cf>(i);
      }
      SHOAL_CHECK(false && "write batch of an unknown column family");
      return Cf::kData;
    }
    rocksdb::Status PutCF(uint32_t id, const rocksdb::Slice& k, const rocksdb::Slice& v) override {
      visitor->Visit(Op{Op::Kind::kPut, CfOf(id), FromSlice(k), FromSlice(v)});
      return rocksdb::Status::OK();
    }
    rocksdb::Status DeleteCF(uint32_t id, const rocksdb::Slice& k) override {
      visitor->Visit(Op{Op::Kind::kDelete, CfOf(id), FromSlice(k), {}});
      return rocksdb::Status::OK();
    }
    rocksdb::Status DeleteRangeCF(uint32_t id, const rocksdb::Slice& b, const rocksdb::Slice& e) override {
      visitor->Visit(Op{Op::Kind::kDeleteRange, CfOf(id), FromSlice(b), FromSlice(e)});
      return rocksdb::Status::OK();
    }
  } handler;
  handler.handles = impl_->handles;
  handler.visitor = &visitor;
  SHOAL_CHECK(impl_->batch.Iterate(&handler).ok());
}

class RocksEngineAccess {
 public:
  static std::unique_ptr<WriteBatch> Make(const std::vector<rocksdb::ColumnFamilyHandle*>* h) {
    auto impl = std::make_unique<WriteBatch::Impl>();
    impl->handles = h;
    return std::unique_ptr<WriteBatch>(new WriteBatch(std::move(impl)));
  }
  static rocksdb::WriteBatch* Raw(WriteBatch& b) { return &b.impl_->batch; }
  static const std::vector<std::pair<std::string, std::string>>& DataRanges(const WriteBatch& b) {
    return b.impl_->data_ranges;
  }
  static const std::vector<uint32_t>& DataPrefixes(const WriteBatch& b) { return b.impl_->data_prefixes; }
  // Whether the batch has more data keys than DataKeys gives.
  static bool ManyDataKeys(const WriteBatch& b) { return b.impl_->many_data_keys; }
  // The data ranges the batch deletes, as views into it.
  static void DataRangeViews(const WriteBatch& b, std::vector<ValueCache::Range>* out) {
    out->clear();
    for (const auto& [begin, end] : b.impl_->data_ranges) out->push_back(ValueCache::Range{begin, end});
  }
  // The data keys the batch puts or deletes, as views into it.
  static void DataKeys(const WriteBatch& b, std::vector<std::string_view>* out) {
    out->clear();
    uint32_t begin = 0;
    for (uint32_t end : b.impl_->data_key_ends) {
      out->emplace_back(b.impl_->data_keys.data() + begin, end - begin);
      begin = end;
    }
  }
};

namespace {

// Range deletes that cover at least this many entries of the data memtables
// have them flushed (RocksEngine::MaybeFlushAfterRangeDelete).
constexpr uint64_t kFlushAfterRangeDeleteEntries = 64;

class RocksEngine final : public Engine {
 public:
  ~RocksEngine() override {
    if (db_) {
      // A clean close leaves nothing to replay: flush memtables, sync the WAL.
      rocksdb::FlushOptions fo;
      (void)db_->Flush(fo, handles_);
      (void)db_->SyncWAL();
      for (auto* h : handles_) (void)db_->DestroyColumnFamilyHandle(h);
      (void)db_->Close();
    }
  }

  Status OpenDb(const EngineOptions& options);

  Status Get(Cf cf, std::string_view key, std::string* value, const Snapshot* snapshot, ReadVia via) override {
    if (!ViaValueCache(cf, snapshot, via)) return StoreGet(cf, key, value, snapshot);
    bool absent = false;
    if (values_->Find(key, value, &absent)) {
      values_->Count(1, 0);
      return absent ? Status::NotFound("") : Status::Ok();
    }
    values_->Count(0, 1);
    const ValueCache::Ticket ticket = values_->BeginRead(key);
    Status s = StoreGet(cf, key, value, nullptr);
    FillFromStore(ticket, key, s, *value);
    return s;
  }

  void MultiGet(Cf cf, std::span<const std::string_view> keys, std::span<std::string> values,
                std::span<Status> statuses, const Snapshot* snapshot, ReadVia via) override {
    SHOAL_CHECK(values.size() == keys.size() && statuses.size() == keys.size());
    if (!ViaValueCache(cf, snapshot, via)) return StoreMultiGet(cf, keys, values, statuses, snapshot);
    // The keys are read in their order, as a connection's commands run: a
    // later key's answer is never older than an earlier one's. So each key
    // takes a ticket before it is looked up; when some miss, they are read
    // from the store together, and the hits must still be the store's
    // after that read (their tickets Unchanged), or the whole batch is read
    // from the store.
    thread_local std::vector<ValueCache::Ticket> tickets;
    thread_local std::vector<size_t> missed;
    thread_local std::vector<std::string_view> missed_keys;
    thread_local std::vector<std::string> missed_values;
    thread_local std::vector<Status> missed_statuses;
    tickets.clear();
    missed.clear();
    missed_keys.clear();
    // Every ticket is taken before the first lookup (earlier than needed:
    // a write after it can only fail more hits' Unchanged), so that the
    // lookups' cache misses are fetched together first.
    for (size_t i = 0; i < keys.size(); ++i) tickets.push_back(values_->BeginRead(keys[i]));
    if (keys.size() > 1) values_->Prefetch(tickets);
    for (size_t i = 0; i < keys.size(); ++i) {
      bool absent = false;
      if (values_->Find(tickets[i], keys[i], &values[i], &absent)) {
        statuses[i] = absent ? Status::NotFound("") : Status::Ok();
      } else {
        missed.push_back(i);
      }
    }
    values_->Count(keys.size() - missed.size(), missed.size());
    if (missed.empty()) return;
    for (size_t i : missed) missed_keys.push_back(keys[i]);
    if (missed_values.size() < missed.size()) missed_values.resize(missed.size());
    missed_statuses.assign(missed.size(), Status::Ok());
    StoreMultiGet(cf, missed_keys, std::span<std::string>(missed_values.data(), missed.size()), missed_statuses,
                  nullptr);
    bool hits_hold = true;
    for (size_t i = 0, j = 0; i < keys.size() && hits_hold; ++i) {
      if (j < missed.size() && missed[j] == i) {
        ++j;
      } else {
        hits_hold = values_->Unchanged(tickets[i]);
      }
    }
    if (!hits_hold) return StoreMultiGet(cf, keys, values, statuses, nullptr);  // a write raced the batch
    for (size_t j = 0; j < missed.size(); ++j) {
      const size_t i = missed[j];
      values[i].swap(missed_values[j]);
      statuses[i] = std::move(missed_statuses[j]);
      FillFromStore(tickets[i], keys[i], statuses[i], values[i]);
    }
  }

 private:
  // Adds what a read of the store after `ticket` found for key: its value,
  // or its absence (an error adds nothing).
  void FillFromStore(const ValueCache::Ticket& ticket, std::string_view key, const Status& s,
                     std::string_view value) {
    if (s.ok()) {
      values_->Fill(ticket, key, value);
    } else if (s.code() == Code::kNotFound) {
      values_->FillAbsent(ticket, key);
    }
  }

  bool ViaValueCache(Cf cf, const Snapshot* snapshot, ReadVia via) const {
    return via == ReadVia::kCache && cf == Cf::kData && snapshot == nullptr && values_ != nullptr;
  }

  Status StoreGet(Cf cf, std::string_view key, std::string* value, const Snapshot* snapshot) {
    SHOAL_CHECK(cf != Cf::kData || key.size() >= kDataKeyPrefixBytes);
    rocksdb::ReadOptions ro;
    if (snapshot) ro.snapshot = static_cast<const RocksSnapshot*>(snapshot)->get();
    auto s = db_->Get(ro, handles_[static_cast<int>(cf)], ToSlice(key), value);
    if (s.IsNotFound()) return Status::NotFound("");
    return FromRocks(s, "get");
  }

  void StoreMultiGet(Cf cf, std::span<const std::string_view> keys, std::span<std::string> values,
                     std::span<Status> statuses, const Snapshot* snapshot) {
    if (keys.size() == 1) {  // a GET alone (not pipelined): MultiGet's sort and setup would cost it about 10 %
      statuses[0] = StoreGet(cf, keys[0], &values[0], snapshot);
      return;
    }
    rocksdb::ReadOptions ro;
    if (snapshot) ro.snapshot = static_cast<const RocksSnapshot*>(snapshot)->get();
    // RocksDB reads a batch of up to 32 keys together. The pinned values
    // keep their buffers (a value from a memtable is copied into one), up
    // to a small size, for the thread's next batch.
    constexpr size_t kChunk = 32;
    thread_local std::array<rocksdb::PinnableSlice, kChunk> pinned;
    std::array<rocksdb::Slice, kChunk> slices;
    std::array<rocksdb::Status, kChunk> got;
    std::array<size_t, kChunk> order;
    for (size_t at = 0; at < keys.size(); at += kChunk) {
      const size_t n = std::min(kChunk, keys.size() - at);
      // In the column family's (bytewise) order, sorted here: RocksDB's own
      // sort compares through its comparator's virtual calls, a third of
      // a batch's time.
      for (size_t i = 0; i < n; ++i) {
        SHOAL_CHECK(cf != Cf::kData || keys[at + i].size() >= kDataKeyPrefixBytes);
        order[i] = at + i;
      }
      std::sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(n),
                [&](size_t a, size_t b) { return keys[a] < keys[b]; });
      for (size_t i = 0; i < n; ++i) slices[i] = ToSlice(keys[order[i]]);
      db_->MultiGet(ro, handles_[static_cast<int>(cf)], n, slices.data(), pinned.data(), got.data(),
                    /*sorted_input=*/true);
      for (size_t i = 0; i < n; ++i) {
        const size_t k = order[i];
        if (got[i].ok()) {
          values[k].assign(pinned[i].data(), pinned[i].size());
          statuses[k] = Status::Ok();
        } else {
          statuses[k] = got[i].IsNotFound() ? Status::NotFound("") : FromRocks(got[i], "multiget");
        }
        pinned[i].Reset();
        // A large value from a memtable is not kept for the thread's life.
        if (pinned[i].GetSelf()->capacity() > 4096) std::string().swap(*pinned[i].GetSelf());
      }
    }
  }


 public:
  Result<uint64_t> Write(WriteBatch& batch) override {
    rocksdb::WriteOptions wo;
    wo.sync = false;
    thread_local std::vector<std::string_view> data_keys;
    RocksEngineAccess::DataKeys(batch, &data_keys);
    PrefetchForWrites(data_memtables_.get(), RocksEngineAccess::DataPrefixes(batch), data_keys);
    // The value cache forgets the batch's data keys (and those inside its
    // range deletions) before the store changes, and takes no value of them
    // until the write is done (value_cache.h).
    thread_local std::vector<ValueCache::Range> data_ranges;
    thread_local ValueCache::Writing writing;
    if (values_ != nullptr) {
      RocksEngineAccess::DataRangeViews(batch, &data_ranges);
      values_->BeginWrite(data_keys, data_ranges, RocksEngineAccess::ManyDataKeys(batch), &writing);
    }
    auto s = db_->Write(wo, RocksEngineAccess::Raw(batch));
    if (values_ != nullptr) values_->EndWrite(&writing);
    if (!s.ok()) return FromRocks(s, "write");
    MaybeFlushAfterRangeDelete(RocksEngineAccess::DataRanges(batch));
    return write_seq_.fetch_add(1, std::memory_order_acq_rel) + 1;
  }

  // Keys that a range tombstone covers in its own memtable are stepped over
  // one by one by every seek that meets them (RocksDB 7.8 reseeks past a
  // tombstone only for older memtables and files), even past the seek's
  // prefix: a FLUSHALL over a memtable of 20k keys made each of KEYS's 16384
  // seeks walk them all. A flush drops the covered keys. It is scheduled,
  // not waited for, and only when the ranges cover enough of the memtables
  // to matter and no flush is pending already (each flush switches the
  // memtable and adds a file: one per small range delete would stall writes).
  // If it cannot be scheduled (a background error), the next write says so.
  void MaybeFlushAfterRangeDelete(const std::vector<std::pair<std::string, std::string>>& ranges) {
    if (ranges.empty()) return;
    rocksdb::ColumnFamilyHandle* data = handles_[static_cast<int>(Cf::kData)];
    uint64_t pending = 0;
    if (!db_->GetIntProperty(data, rocksdb::DB::Properties::kNumImmutableMemTable, &pending) || pending > 0) {
      return;
    }
    uint64_t covered = 0;
    for (const auto& [begin, end] : ranges) {
      uint64_t count = 0, size = 0;
      db_->GetApproximateMemTableStats(data, rocksdb::Range(ToSlice(begin), ToSlice(end)), &count, &size);
      covered += count;
    }
    if (covered < kFlushAfterRangeDeleteEntries) return;
    rocksdb::FlushOptions fo;
    fo.wait = false;
    fo.allow_write_stall = true;
    (void)db_->Flush(fo, data);
  }

  std::unique_ptr<WriteBatch> NewBatch() override { return RocksEngineAccess::Make(&handles_); }

  Result<uint64_t> Sync() override {
    // Seq first: everything counted before the fsync is covered by it.
    uint64_t covered = write_seq_.load(std::memory_order_acquire);
    std::lock_guard<std::mutex> lock(sync_mu_);
    if (covered <= durable_seq_.load(std::memory_order_acquire)) return durable_seq_.load();
    auto s = db_->SyncWAL();
    if (!s.ok()) return FromRocks(s, "sync wal");
    durable_seq_.store(covered, std::memory_order_release);
    return covered;
  }

  std::unique_ptr<Iterator> NewIterator(Cf cf, const Snapshot* snapshot) override {
    rocksdb::ReadOptions ro;
    if (snapshot) ro.snapshot = static_cast<const RocksSnapshot*>(snapshot)->get();
    // Data iterators are prefix iterators: callers stay within one [slot][db].
    ro.total_order_seek = cf != Cf::kData;
    // ... and the iterator says so: it ends where the prefix of its seek
    // target ends. Without it a seek into a slot with no live key walked on
    // through every deleted key of the slots after it to the next live one,
    // and KEYS or SCAN, which seek each of the 16384 slots, took seconds
    // once many keys had been deleted (14.6 s for KEYS * after 20k DELs).
    ro.prefix_same_as_start = cf == Cf::kData;
    return std::make_unique<RocksIterator>(db_->NewIterator(ro, handles_[static_cast<int>(cf)]));
  }

  std::unique_ptr<Iterator> NewScanIterator(Cf cf, const Snapshot* snapshot) override {
    rocksdb::ReadOptions ro;
    if (snapshot) ro.snapshot = static_cast<const RocksSnapshot*>(snapshot)->get();
    ro.total_order_seek = true;
    ro.fill_cache = false;  // a scan must not evict the working set
    return std::make_unique<RocksIterator>(db_->NewIterator(ro, handles_[static_cast<int>(cf)]));
  }

  std::unique_ptr<SstWriter> NewSstWriter(Cf cf, const std::string& path) override;

  Status IngestSst(Cf cf, const std::string& path, bool verify) override {
    rocksdb::IngestExternalFileOptions io;
    io.move_files = true;
    io.allow_global_seqno = true;
    // The seqno goes into the MANIFEST, not into the file: with move_files
    // the file is a hard link to ours, and writing into it before the
    // ingestion commits left a file that a crash-resumed import could never
    // ingest again.
    io.write_global_seqno = false;
    io.allow_blocking_flush = true;  // overlapping memtable data is flushed first
    io.verify_checksums_before_ingest = verify;
    const bool data = cf == Cf::kData && values_ != nullptr;
    ValueCache::Writing writing;
    if (data) {
      // The cache forgets what lies between the file's first and last keys
      // (everything, if they cannot be read or the file deletes keys: its
      // live keys would not bound what it changes).
      auto bounds = ReadSstBounds(path);
      const bool known = bounds.ok() && bounds.value().deletions == 0;
      std::string end = known ? bounds.value().last + std::string(1, '\0') : std::string();
      const ValueCache::Range range{known ? std::string_view(bounds.value().first) : std::string_view(), end};
      values_->BeginWrite({}, std::span(&range, known ? 1 : 0), /*all=*/!known, &writing);
    }
    auto s = db_->IngestExternalFile(handles_[static_cast<int>(cf)], {path}, io);
    if (data) values_->EndWrite(&writing);
    return FromRocks(s, "ingest " + path);
  }

  const std::string& dir() const override { return dir_; }

  std::unique_ptr<Snapshot> NewSnapshot() override {
    return std::make_unique<RocksSnapshot>(db_.get(), db_->GetSnapshot());
  }

  uint64_t VisibleSeq() override { return db_->GetLatestSequenceNumber(); }

  uint64_t ApproximateSize(Cf cf, std::string_view begin, std::string_view end) override {
    rocksdb::Range r(ToSlice(begin), ToSlice(end));
    rocksdb::SizeApproximationOptions o;
    o.include_memtables = true;
    o.include_files = true;
    uint64_t size = 0;
    if (!db_->GetApproximateSizes(o, handles_[static_cast<int>(cf)], &r, 1, &size).ok()) return 0;
    return size;
  }

  MemoryUsage Memory() override {
    MemoryUsage m;
    m.block_cache_bytes = static_cast<int64_t>(cache_->GetUsage());
    m.cache_capacity_bytes = static_cast<int64_t>(cache_->GetCapacity());
    if (values_ != nullptr) {
      m.value_cache_bytes = static_cast<int64_t>(values_->usage());
      m.value_cache_capacity_bytes = static_cast<int64_t>(values_->capacity());
      m.value_cache_hits = values_->hits();
      m.value_cache_misses = values_->misses();
    }
    uint64_t v = 0;
    for (auto* h : handles_) {
      if (db_->GetIntProperty(h, rocksdb::DB::Properties::kSizeAllMemTables, &v)) {
        m.memtable_bytes += static_cast<int64_t>(v);
      }
      if (db_->GetIntProperty(h, rocksdb::DB::Properties::kEstimateTableReadersMem, &v)) {
        m.table_readers_bytes += static_cast<int64_t>(v);
      }
    }
    return m;
  }

  int64_t DiskBytes() override {
    uint64_t total = 0, v = 0;
    for (auto* h : handles_) {
      if (db_->GetIntProperty(h, rocksdb::DB::Properties::kLiveSstFilesSize, &v)) total += v;
    }
    return static_cast<int64_t>(total);
  }

 private:
  // The data column family's memtable factory (for PrefetchForWrites).
  std::shared_ptr<rocksdb::MemTableRepFactory> data_memtables_;
  // The file system RocksDB writes through (wal_file.h); outlives db_.
  std::unique_ptr<rocksdb::Env> env_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::shared_ptr<rocksdb::Cache> cache_;
  std::shared_ptr<rocksdb::WriteBufferManager> wbm_;
  // Values that clients read (ReadVia::kCache).
  std::unique_ptr<ValueCache> values_;
  std::mutex sync_mu_;
  std::string dir_;
};

class RocksSstWriter final : public SstWriter {
 public:
  // The file is read back soon (sent to a peer, or ingested): keep it in the
  // page cache rather than dropping each MiB as it is written.
  RocksSstWriter(const rocksdb::Options& options, std::string path)
      : writer_(rocksdb::EnvOptions(), options, /*column_family=*/nullptr, /*invalidate_page_cache=*/false),
        path_(std::move(path)) {
    open_ = writer_.Open(path_);
  }
  Status Put(std::string_view key, std::string_view value) override {
    if (!open_.ok()) return FromRocks(open_, "sst open " + path_);
    return FromRocks(writer_.Put(ToSlice(key), ToSlice(value)), "sst put");
  }
  Status Finish() override {
    if (!open_.ok()) return FromRocks(open_, "sst open " + path_);
    return FromRocks(writer_.Finish(), "sst finish " + path_);  // Finish syncs the file
  }

 private:
  rocksdb::SstFileWriter writer_;
  std::string path_;
  rocksdb::Status open_;
};

std::unique_ptr<SstWriter> RocksEngine::NewSstWriter(Cf cf, const std::string& path) {
  rocksdb::Options options(db_->GetDBOptions(), db_->GetOptions(handles_[static_cast<int>(cf)]));
  // An SST writer compresses with the bottommost level's codec when one is
  // set (ZSTD here), which cost a third of an export's CPU. Snapshot files
  // are written on the path of a move: LZ4, as the upper levels use. An
  // ingested file keeps it until a compaction rewrites it (a little more
  // disk for compressible data, none for incompressible).
  options.bottommost_compression = rocksdb::kDisableCompressionOption;
  options.compression_per_level.clear();
  options.compression = rocksdb::kLZ4Compression;
  return std::make_unique<RocksSstWriter>(options, path);
}


Status RocksEngine::OpenDb(const EngineOptions& options) {
  int64_t budget = std::max<int64_t>(options.memory_budget_bytes, 32LL << 20);
  // Half the budget for caches: a sixteenth of it for the values clients
  // read (ValueCache), the rest for RocksDB's cache, memtables included. The
  // other half covers the process itself, compaction buffers and client
  // buffers.
  int64_t value_cache_bytes = budget / 16;
  int64_t cache_bytes = budget / 2 - value_cache_bytes;
  int64_t memtable_bytes = budget / 4;
  values_ = std::make_unique<ValueCache>(static_cast<size_t>(value_cache_bytes));
  // Few cache shards: a shard must hold the largest block we cache (index and
  // filter partitions), or such blocks would be read from disk on every Get.
  int shard_bits = 0;
  while (shard_bits < 6 && (cache_bytes >> (shard_bits + 1)) >= (16LL << 20)) ++shard_bits;
  cache_ = rocksdb::NewLRUCache(static_cast<size_t>(cache_bytes), shard_bits);
  // Memtables are charged to the same cache, so one number bounds both.
  wbm_ = std::make_shared<rocksdb::WriteBufferManager>(static_cast<size_t>(memtable_bytes), cache_);

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache_;
  // 16 bits a key (about 0.1% false positives, 2 bytes a key): the first
  // write of every key looks it up (key counts, NX/XX), and each false
  // positive reads a 16 KiB data block into the cache. With 10 bits, loading
  // 1M new keys pulled every data block of them into the cache (131 MiB).
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(16));
  table.cache_index_and_filter_blocks = true;
  table.cache_index_and_filter_blocks_with_high_priority = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;
  // Partitioned index and filters: a lookup loads small partitions, so data
  // far larger than the cache does not thrash whole multi-MB filter blocks.
  table.index_type = rocksdb::BlockBasedTableOptions::kTwoLevelIndexSearch;
  table.partition_filters = true;
  table.pin_top_level_index_and_filter = true;
  table.metadata_block_size = 4096;
  table.format_version = 5;
  table.block_size = 16 * 1024;

  rocksdb::ColumnFamilyOptions cf;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  cf.write_buffer_size = static_cast<size_t>(std::clamp<int64_t>(memtable_bytes / 3, 4LL << 20, 64LL << 20));
  cf.max_write_buffer_number = 4;
  cf.compression = rocksdb::kLZ4Compression;
  cf.bottommost_compression = rocksdb::kZSTD;
  cf.memtable_whole_key_filtering = true;
  cf.memtable_prefix_bloom_size_ratio = 0.05;
  cf.level_compaction_dynamic_level_bytes = true;

  rocksdb::DBOptions db;
  db.create_if_missing = true;
  db.create_missing_column_families = true;
  // Workers write concurrently (the Raft log of their groups, applies):
  // skiplist memtables take concurrent inserts. A writer that must wait for
  // the write group yields (sched_yield) for a while before it blocks; on
  // this 2-core VM blocking at once measured no better (PERFORMANCE.md,
  // 2026-12-03), nor did one writer at a time (2026-12-02), nor pipelined
  // writes (2026-12-03, last: fewer samples waiting in the write group, the
  // same throughput and CPU in interleaved rounds).
  db.allow_concurrent_memtable_write = true;
  db.enable_write_thread_adaptive_yield = true;
  db.write_buffer_manager = wbm_;
  db.max_background_jobs = 2;
  db.max_open_files = 2048;
  db.avoid_unnecessary_blocking_io = true;
  db.keep_log_file_num = 4;
  if (options.zero_ahead_wal) {
    env_ = NewZeroAheadWalEnv();
    db.env = env_.get();
  }
  // RocksDB keeps a WAL until every column family with writes in it has
  // flushed them; past this total it flushes the families that hold the
  // oldest. The meta family's small memtable fills slowly (a few records a
  // round), so at twice the memtable budget a node kept up to 512 MiB of
  // WAL at the default 1gb, all read again at a restart. Now half the
  // memtable budget (128 MiB at 1gb), at least 64 MiB (a full 16 MiB data
  // memtable spans some 32 MiB of WAL) and never more than before
  // (PERFORMANCE.md, thirty-second session).
  db.max_total_wal_size = static_cast<uint64_t>(
      std::min<int64_t>(memtable_bytes * 2, std::max<int64_t>(memtable_bytes / 2, 64LL << 20)));

  // The data CF has a [slot][db] prefix extractor: every scan of ours stays
  // within one prefix, and the memtable's bloom filter answers most misses.
  // Its memtables flush at a sixteenth of the memtable budget (16 MiB at
  // the default 1 GiB) rather than at up to 64 MiB: written data leaves
  // memory sooner, and reads find it through the block cache (resident
  // memory and write throughput measured: docs/PERFORMANCE.md, 2026-12-02).
  rocksdb::ColumnFamilyOptions data_cf = cf;
  data_cf.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(kDataKeyPrefixBytes));
  // A skiplist per [slot][db] found by the prefix's bytes: a write or a read
  // searches the few keys of its prefix, not one skiplist of every key
  // (slot_memtable.h; PERFORMANCE.md, "2026-12-04 (late)").
  data_cf.memtable_factory = NewSlotMemTableFactory(kDataKeyPrefixBytes);
  data_memtables_ = data_cf.memtable_factory;
  data_cf.write_buffer_size = static_cast<size_t>(std::clamp<int64_t>(memtable_bytes / 16, 4LL << 20, 16LL << 20));
  // Eight level-0 files before a compaction, not RocksDB's four: data that
  // fits the budget all lives in the bottom level, which each compaction
  // rewrites whole, so merging eight flushes into it at once rewrites it
  // half as often. Three nodes under SET
  // -P 16: the data family's compaction CPU -33 %, RocksDB's threads about
  // 0.8 us less a SET over the cluster; reads that miss the memtables and
  // caches check up to four more level-0 filters (pinned), and a node at 1M
  // keys holds 5-15 MiB more (PERFORMANCE.md, thirty-first session).
  data_cf.level0_file_num_compaction_trigger = 8;

  // The expiry index is only scanned, never looked up by key: no memtable
  // bloom filter (its bits are allocated with each memtable, 3 MiB at 64 MiB).
  rocksdb::ColumnFamilyOptions expiry_cf = cf;
  expiry_cf.memtable_prefix_bloom_size_ratio = 0;
  expiry_cf.memtable_whole_key_filtering = false;

  // The Raft log is short-lived (compacted soon after it is applied) and the
  // meta records are rewritten on every apply: small memtables flush them
  // early, so they do not hold memory that the data could use.
  rocksdb::ColumnFamilyOptions small_cf = cf;
  small_cf.write_buffer_size = 4 << 20;
  small_cf.max_write_buffer_number = 2;
  // Every round rewrites a group's hard state and log start, and a shard's
  // applied index and counts: a memtable bucket per record (a group's log
  // is one too) places each new version at its bucket's head, where one
  // skiplist of them all searched through every record's versions
  // (slot_memtable.h; PERFORMANCE.md, "2026-12-04 (last)").
  small_cf.memtable_factory = NewSlotMemTableFactory(kRaftKeyPrefixBytes);
  // The meta records are a few keys per shard, each overwritten on every
  // apply: a flush keeps one version of each, so 1 MiB memtables cost little.
  rocksdb::ColumnFamilyOptions meta_cf = small_cf;
  meta_cf.write_buffer_size = 1 << 20;
  meta_cf.memtable_factory = NewSlotMemTableFactory(kMetaKeyPrefixBytes);

  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  cfs.emplace_back(kCfNames[0], data_cf);
  cfs.emplace_back(kCfNames[1], expiry_cf);
  cfs.emplace_back(kCfNames[2], meta_cf);
  cfs.emplace_back(kCfNames[3], small_cf);
  static_assert(kCfCount == 4);
  // Whether or not this run writes zeros ahead, the last one may have.
  auto trimmed = TrimWalTails(options.dir);
  if (!trimmed.ok()) return trimmed.status();
  if (options.note) {
    for (const std::string& line : trimmed.value()) options.note("WAL " + line);
  }
  rocksdb::DB* raw = nullptr;
  dir_ = options.dir;
  auto s = rocksdb::DB::Open(db, options.dir, cfs, &handles_, &raw);
  if (!s.ok()) return FromRocks(s, "open " + options.dir);
  db_.reset(raw);
  return Status::Ok();
}

}  // namespace

Result<SstBounds> ReadSstBounds(const std::string& path) {
  rocksdb::Options options;
  rocksdb::SstFileReader reader(options);
  auto s = reader.Open(path);
  if (!s.ok()) return FromRocks(s, "open " + path);
  std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(rocksdb::ReadOptions()));
  SstBounds b;
  it->SeekToFirst();
  if (!it->status().ok()) return FromRocks(it->status(), "read " + path);
  if (!it->Valid()) return Status::Corruption(path + " holds no key");
  b.first = it->key().ToString();
  it->SeekToLast();
  if (!it->status().ok()) return FromRocks(it->status(), "read " + path);
  if (!it->Valid()) return Status::Corruption(path + ": no last key");
  b.last = it->key().ToString();
  it->Prev();
  if (!it->status().ok()) return FromRocks(it->status(), "read " + path);
  if (it->Valid()) b.before_last = it->key().ToString();
  if (auto props = reader.GetTableProperties()) b.deletions = props->num_deletions + props->num_range_deletions;
  return b;
}

void Engine::MultiGet(Cf cf, std::span<const std::string_view> keys, std::span<std::string> values,
                      std::span<Status> statuses, const Snapshot* snapshot, ReadVia via) {
  SHOAL_CHECK(values.size() == keys.size() && statuses.size() == keys.size());
  for (size_t i = 0; i < keys.size(); ++i) statuses[i] = Get(cf, keys[i], &values[i], snapshot, via);
}

Result<std::unique_ptr<Engine>> Engine::Open(const EngineOptions& options) {
  auto engine = std::make_unique<RocksEngine>();
  Status s = engine->OpenDb(options);
  if (!s.ok()) return s;
  return std::unique_ptr<Engine>(std::move(engine));
}

}  // namespace shoal::storage
