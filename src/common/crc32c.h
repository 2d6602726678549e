// CRC-32C (Castagnoli), as iSCSI and RocksDB use it: a checksum of bytes
// that travel between nodes (snapshot images), checked before anything
// parses them.
#pragma once

#include <cstdint>
#include <string_view>

namespace shoal {

// The CRC-32C of `data`, continuing from `crc` (0 to start).
uint32_t Crc32c(std::string_view data, uint32_t crc = 0);

}  // namespace shoal
