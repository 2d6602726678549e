// Write-ahead-log files whose syncs overwrite blocks already on disk.
//
// RocksDB appends to its WAL, so each fdatasync of it also commits the
// file's new size (and its new blocks) through the file system's journal:
// on ext4 that is a second write and flush, and a wait for the journal's
// thread. An fdatasync that only overwrites blocks within the file's size
// needs neither. So the file system given to RocksDB writes zeros ahead
// of each WAL file's end, a MiB at a time, and starts their writeback at
// once; the log's own appends then overwrite those zeros, and only the sync
// after each new MiB of zeros commits metadata. Closing a WAL file cuts the
// zeros off.
//
// A crash can then leave what an append could not: a sync that did not
// finish may have written a later page of the log and not an earlier one,
// and the earlier one reads as zeros within the file. RocksDB's reader
// skips zeros as preallocated space and would replay the records after
// them: a write applied without the ones before it. So before RocksDB opens
// the directory, TrimWalTails cuts the log at such a gap and drops what
// follows it. Nothing dropped was acknowledged: a sync covers every byte
// before it, and RocksDB syncs its WALs oldest first
// (docs/design/storage.md, "The write-ahead log").
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace rocksdb {
class Env;
}  // namespace rocksdb

namespace shoal::storage {

// How far ahead of a WAL file's end zeros are kept, and in what steps.
constexpr uint64_t kWalZeroStep = uint64_t{1} << 20;
constexpr uint64_t kWalZeroAhead = uint64_t{1} << 20;

// An Env over the default one whose WAL files (names ending in ".log") are
// written as above; every other file is the default Env's.
std::unique_ptr<rocksdb::Env> NewZeroAheadWalEnv();

// Cuts the WAL files of the RocksDB directory `dir` as above, under
// RocksDB's lock on it (an error if another opener holds it): the first WAL
// with a gap (a header RocksDB skips as zeros, with anything but zeros
// after it) is cut there, after every later WAL is emptied, newest first;
// each change is fsynced. WALs that end in zeros, or at a damaged record
// (which RocksDB's recovery stops at itself), are left as they are.
// Returns a line for each file it changed, for the log. A directory that
// does not exist has nothing to cut.
Result<std::vector<std::string>> TrimWalTails(const std::string& dir);

// RocksDB's log format: 32 KiB blocks of records, each a 7-byte header
// (masked CRC-32C of its type and payload, length, type) and its payload;
// under 7 bytes left in a block are padding.
constexpr size_t kWalBlockBytes = 32 * 1024;

// Where the records of one block of a WAL stop (a block of kWalBlockBytes,
// or less at the file's end).
struct WalBlockScan {
  enum class Stop {
    kNone,     // whole, intact records (and padding) to the block's end
    kZeros,    // a header of length 0 and type 0 at `intact`: RocksDB's reader
               // skips from there to the next block, silently
    kDamaged,  // a record at `intact` fails its checksum, or its length runs
               // past the block: RocksDB's reader stops or reports there itself
  };
  size_t intact = 0;  // bytes of whole, intact records from the block's start
  Stop stop = Stop::kNone;
};
WalBlockScan ScanWalBlock(std::string_view block);

}  // namespace shoal::storage
