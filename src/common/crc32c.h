// CRC-32C (Castagnoli), as iSCSI and RocksDB use it: a checksum of bytes
// that travel between nodes (snapshot images), checked before anything
// parses them, and of every record RocksDB writes to its WAL
// (storage/rocksdb_crc.cc hands RocksDB's own CRC-32C to this one).
#pragma once

#include <cstdint>
#include <string_view>

namespace shoal {

// The CRC-32C of `data`, continuing from `crc` (0 to start).
// With the CPU's CRC instruction where it has one (SSE 4.2).
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);
// The same from tables, whatever the CPU (for tests).
uint32_t Crc32cPortable(std::string_view data, uint32_t crc = 0);

}  // namespace shoal
