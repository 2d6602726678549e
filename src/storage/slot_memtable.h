// A RocksDB memtable: a skiplist per key prefix, found through a directory
// indexed by the prefix's bytes instead of by a search of one big skiplist
// (docs/design/storage.md, "The data memtable"). The data column family's
// prefix is [slot][db] (kDataKeyPrefixBytes). The meta and Raft column
// families use whole record keys as prefixes: each round rewrites the same
// few records, so a bucket holds the versions of one record, and a new
// version, which sorts before the older ones, is placed at its bucket's
// head rather than at the end of a search through every record's versions.
//
// The order it iterates is the comparator's total order, in both directions,
// for prefix and total-order iterators alike: a prefix's keys are one
// contiguous run of that order, because the comparator is bytewise and every
// key of a bucket shares the bucket's leading bytes. RocksDB's hashed
// memtables give that up (their prefix iterators cannot step back from the
// end of a prefix), which reverse scans of sorted sets and lists need.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

namespace rocksdb {
class MemTableRepFactory;
}

namespace shoal::storage {

// `prefix_bytes` (1..32): how many leading bytes of a user key pick its
// bucket. Past 4, buckets are found by a hash of the prefix and kept in order
// by a skiplist of buckets, instead of the directory. The column
// family's comparator must be bytewise.
std::shared_ptr<rocksdb::MemTableRepFactory> NewSlotMemTableFactory(size_t prefix_bytes);

// Starts loading into the CPU's cache what writes of keys with these 4-byte
// prefixes (big-endian in a word) will read first in the newest memtable
// that `factory` made (its column family's active one): their buckets. A
// write's three cache misses there were most of its insert's time. Of the
// user `keys` (those of the same writes) whose buckets hold many keys, it
// also walks the searches their inserts will make, side by side, so that
// their cache misses overlap (a hash-tagged slot's bucket holds a
// memtable's worth of keys: some 35 misses an insert, one after another).
// The walks also leave, for this thread's inserts that follow, where each
// key's search went down at each level: an insert of such a key in that
// memtable starts from there, stepping past what was linked in since.
// Reads the memtable only (the hints are the calling thread's own), any
// thread; nothing for a factory not made above, or with another prefix
// length.
void PrefetchForWrites(rocksdb::MemTableRepFactory* factory, std::span<const uint32_t> prefixes,
                       std::span<const std::string_view> keys = {});

// The inserts on the calling thread that started from a walk, and the
// steps forward they took (tests).
struct WalkedInserts {
  uint64_t inserts = 0;
  uint64_t steps = 0;
};
WalkedInserts WalkedInsertsOnThisThread();

}  // namespace shoal::storage
