// A RocksDB memtable for the data column family: a skiplist per key prefix
// ([slot][db], kDataKeyPrefixBytes), found through a directory indexed by the
// prefix's bytes instead of by a search of one big skiplist
// (docs/design/storage.md, "The data memtable").
//
// The order it iterates is the comparator's total order, in both directions,
// for prefix and total-order iterators alike: a prefix's keys are one
// contiguous run of that order, because the comparator is bytewise and every
// key of a bucket shares the bucket's leading bytes. RocksDB's hashed
// memtables give that up (their prefix iterators cannot step back from the
// end of a prefix), which reverse scans of sorted sets and lists need.
#pragma once

#include <cstddef>
#include <memory>

namespace rocksdb {
class MemTableRepFactory;
}

namespace shoal::storage {

// `prefix_bytes` (1..4): how many leading bytes of a user key pick its bucket.
// The column family's comparator must be bytewise.
std::shared_ptr<rocksdb::MemTableRepFactory> NewSlotMemTableFactory(size_t prefix_bytes);

}  // namespace shoal::storage
